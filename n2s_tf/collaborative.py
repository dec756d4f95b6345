"""Collaborative filtering after a network: the repeated detail it smoothed away, found again
among similar blocks of the noisy image (BM3D's grouping, guided by the network's output).

A network trained on a few dozen photographs erases fine periodic texture (woven cloth, tiled
motifs, dense gratings) it never saw, and it does so even where every period of the pattern
repeats the evidence. Block matching sees that repetition. `refine` does, for white Gaussian
noise of std `sigma`:

1. groups: for reference blocks on a grid (`stride`), the `group` most similar blocks within
   `radius` pixels, by squared distance on the network's output (nearly noise-free, so the
   groups follow the image, not the noise);
2. what the network left in the residual (noisy - network): hard thresholding of each
   group's 3D transform (2D DCT of the blocks, DCT along the group) at `threshold` * sigma,
   then a Wiener filter of the residual's groups with that estimate as the pilot. Where the
   residual is noise, little survives; where the network erased a pattern, its periods add up
   in the group and it comes back. It is added to the network's output through a gate that
   opens with its local energy (`gate`, `window`): residual noise that passed the threshold by
   chance stays out of flat regions;
3. a Wiener filter of the noisy image's groups, matched again on that sum, with the sum as the
   pilot (BM3D's second stage), and the mean of the two: the network's and the filter's errors
   differ, so the mean beats either on textured photographs.

The filters assume white Gaussian noise of one level: on counting noise, whose level follows
the brightness, they lose (docs/benchmarks.md), so the refinement is asked for, not a default.
2D images only (per channel for multi-channel ones); blocks are never taken from outside the
image. Numpy only; threads share the work (numpy releases the GIL in its loops).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

BLOCK = 8
STRIDE = 4
RADIUS = 12
GROUP = 16
THRESHOLD = 2.7  # hard threshold in noise stds (BM3D's value)
GATE = 0.1  # the residual's estimate counts half where its local energy is GATE * sigma^2
WINDOW = 15  # px: the side of the window of that local energy
CHUNK = 2048  # reference blocks filtered at a time (bounds the memory of their groups)
TILE = 512  # px: images larger than this are refined in windows of TILE + 2 * MARGIN
# Reach of one output pixel: three rounds of filtering in groups (a block and the search
# radius each; the second matching reads the pilot within the last round's reach) and half
# the gate's window; a multiple of STRIDE, so windows keep the reference grid.
MARGIN = 3 * (RADIUS + BLOCK) + 12


def dct_matrix(n):
    """Orthonormal DCT-II matrix (n, n): rows are the basis vectors (scipy's DCT of the identity)."""
    return scipy.fft.dct(np.eye(n), norm="ortho", axis=0).astype(np.float32)


def _workers():
    """Threads for the block matching and the filters: the CPUs this process may use, at most 4."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, usable)


def _map(function, items):
    """[function(item) for item in items], in _workers() threads."""
    items = list(items)
    with ThreadPoolExecutor(_workers()) as pool:
        return list(pool.map(function, items))


def reference_axes(shape, block=BLOCK, stride=STRIDE):
    """The reference blocks' corner rows and columns: every `stride` px and the last block
    flush with the far edge, so every pixel is covered."""
    def axis(n):
        corners = list(range(0, n - block + 1, stride))
        if corners[-1] != n - block:
            corners.append(n - block)
        return np.array(corners)
    return axis(shape[0]), axis(shape[1])


def match_blocks(guide, block=BLOCK, stride=STRIDE, radius=RADIUS, group=GROUP):
    """(rows, cols), each (references, group): the corners of the `group` blocks of `guide`
    nearest (squared distance) to each reference block, within `radius` px, itself included."""
    guide = np.asarray(guide, np.float32)
    height, width = guide.shape
    if block % stride:
        raise ValueError(f"the block ({block} px) must be a whole number of strides ({stride} px)")
    if min(height, width) < block:
        raise ValueError(f"collaborative filtering needs images of at least {block} px, got {guide.shape}")
    ref_rows, ref_cols = reference_axes(guide.shape, block, stride)
    framed = np.pad(guide, radius)
    offsets = [(a, b) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)]

    def distances(chunk):
        out = np.empty((len(chunk), ref_rows.size, ref_cols.size), np.float32)
        for k, (a, b) in enumerate(chunk):
            shifted = framed[radius + a:radius + a + height, radius + b:radius + b + width]
            bands = _block_sums((guide - shifted) ** 2, ref_rows, block, stride, axis=0)
            out[k] = _block_sums(bands, ref_cols, block, stride, axis=1)
            # Candidates reaching past the image (into the zero margin) never match.
            out[k, (ref_rows + a < 0) | (ref_rows + a > height - block)] = np.inf
            out[k, :, (ref_cols + b < 0) | (ref_cols + b > width - block)] = np.inf
        return out.reshape(len(chunk), -1)

    chunks = np.array_split(np.arange(len(offsets)), _workers())
    table = np.concatenate(_map(lambda c: distances([offsets[i] for i in c]), chunks))  # (offsets, refs)
    # The reference itself always joins its group, even among ties (flat or clipped regions),
    # so that every pixel is covered.
    table[offsets.index((0, 0))] = -1.0
    best = np.argpartition(table, group - 1, axis=0)[:group].T  # (refs, group)
    chosen = np.take_along_axis(table.T, best, axis=1)
    order = np.argsort(chosen, axis=1)  # nearest first: the reference leads its group
    best, chosen = np.take_along_axis(best, order, axis=1), np.take_along_axis(chosen, order, axis=1)
    steps = np.array(offsets)[best]
    # On images barely larger than a block a reference may have fewer candidates than the
    # group holds: the missing ones repeat the reference itself.
    steps[~np.isfinite(chosen)] = 0
    rows, cols = (g.ravel() for g in np.meshgrid(ref_rows, ref_cols, indexing="ij"))
    return rows[:, None] + steps[..., 0], cols[:, None] + steps[..., 1]


def _block_sums(values, corners, block, stride, axis):
    """Sums of `block` consecutive entries along `axis` starting at each corner (multiples of
    `stride`, and possibly the last one, flush with the end): sums of stride-long runs added up,
    much faster than cumulative sums along the slow axis."""
    values = np.moveaxis(values, axis, 0)
    whole = values.shape[0] // stride * stride
    runs = values[:whole].reshape((whole // stride, stride) + values.shape[1:]).sum(axis=1)
    per_block = block // stride
    on_grid = corners[corners % stride == 0] // stride
    sums = sum(runs[on_grid + j] for j in range(per_block))
    if len(on_grid) < len(corners):  # the last corner, off the grid
        sums = np.concatenate([sums, values[corners[-1]:corners[-1] + block].sum(axis=0)[None]])
    return np.moveaxis(sums, 0, axis)


def collaborative_filter(noisy, groups, sigma, pilot=None, threshold=THRESHOLD, block=BLOCK):
    """Filter `noisy` (H, W) in the groups of `match_blocks` and put the blocks back.

    Without a pilot: hard thresholding of each group's 3D DCT at threshold * sigma (the DC
    coefficient always kept), groups weighted by 1 / (coefficients kept). With a pilot: the
    Wiener gain |P|^2 / (|P|^2 + sigma^2) of the pilot's coefficients, groups weighted by
    1 / (sigma^2 * sum of squared gains). Blocks are put back under a Kaiser window.
    """
    noisy = np.asarray(noisy, np.float32)
    pilot = None if pilot is None else np.asarray(pilot, np.float32)
    height, width = noisy.shape
    rows, cols = groups
    size = rows.shape[1]
    block_dct = np.kron(dct_matrix(block), dct_matrix(block)).T  # (pixels, coefficients)
    group_dct = dct_matrix(size)
    variance = np.float32(sigma) ** 2
    window = np.outer(np.kaiser(block, 2.0), np.kaiser(block, 2.0)).astype(np.float32).ravel()
    within = (np.arange(block)[:, None] * width + np.arange(block)[None, :]).ravel()

    def forward(image, r, c):
        blocks = sliding_window_view(image, (block, block))[r, c].reshape(len(r), size, block * block)
        return np.matmul(group_dct, blocks @ block_dct)  # (refs, group, coefficients)

    def chunk_sums(index):
        r, c = rows[index], cols[index]
        coefficients = forward(noisy, r, c)
        if pilot is None:
            gain = (np.abs(coefficients) > threshold * sigma).astype(np.float32)
            gain[:, 0, 0] = 1.0
            weight = 1.0 / np.maximum(gain.sum(axis=(1, 2)), 1.0)
        else:
            guide = forward(pilot, r, c) ** 2
            gain = guide / (guide + variance)
            weight = 1.0 / (variance * np.maximum((gain**2).sum(axis=(1, 2)), 1e-6))
        blocks = np.matmul(group_dct.T, gain * coefficients) @ block_dct.T
        pixel = ((r * width + c)[..., None] + within).ravel()
        weights = weight[:, None, None] * window
        total = np.bincount(pixel, (blocks * weights).ravel(), minlength=height * width)
        norm = np.bincount(pixel, np.broadcast_to(weights, blocks.shape).ravel(), minlength=height * width)
        return total, norm

    chunks = np.array_split(np.arange(rows.shape[0]), max(1, -(-rows.shape[0] // CHUNK)))
    sums = _map(chunk_sums, chunks)
    total, norm = sum(t for t, _ in sums), sum(n for _, n in sums)
    return (total / np.maximum(norm, 1e-30)).reshape(height, width).astype(np.float32)


def refine_window(noisy, denoised, sigma, gate=GATE, window=WINDOW):
    """The module's three steps on one 2D window (float32 arrays of one shape)."""
    groups = match_blocks(denoised)
    residual = noisy - denoised
    found = collaborative_filter(residual, groups, sigma)
    found = collaborative_filter(residual, groups, sigma, pilot=found)
    energy = ndimage.uniform_filter(found**2, window)
    pilot = denoised + found * energy / (energy + gate * sigma**2)
    # Matched again on the pilot, which now holds the texture the network had erased.
    return 0.5 * (pilot + collaborative_filter(noisy, match_blocks(pilot), sigma, pilot=pilot))


def refine(noisy, denoised, sigma, tile=TILE):
    """`denoised` (a network's output for the 2D `noisy`) refined by the module's three steps,
    for white noise of std `sigma` (noise.white_noise_level measures it). Large images go in
    windows of `tile` px plus MARGIN on each side, their origins on the reference grid, so
    that each output pixel sees what it would see in one pass over the whole image."""
    noisy = np.asarray(noisy, np.float32)
    denoised = np.asarray(denoised, np.float32)
    if noisy.ndim != 2 or noisy.shape != denoised.shape:
        raise ValueError(f"collaborative filtering takes two 2D images of one shape, got {noisy.shape} "
                         f"and {denoised.shape}")
    if not sigma > 0:
        return denoised.copy()  # no noise measured: nothing to filter
    out = np.empty_like(denoised)
    height, width = noisy.shape
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            rows = slice(max(0, top - MARGIN), min(height, top + tile + MARGIN))
            cols = slice(max(0, left - MARGIN), min(width, left + tile + MARGIN))
            part = refine_window(noisy[rows, cols], denoised[rows, cols], sigma)
            core = (slice(top, min(height, top + tile)), slice(left, min(width, left + tile)))
            out[core] = part[core[0].start - rows.start:core[0].stop - rows.start,
                             core[1].start - cols.start:core[1].stop - cols.start]
    return out
