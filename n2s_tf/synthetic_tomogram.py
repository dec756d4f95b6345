"""Synthetic cryo-electron tomograms with a known noiseless reconstruction.

Particles (atomic models, random orientations) sit in a slab of ice. A single-axis tilt
series (about the Y axis, e.g. -60..+60 degrees in 3-degree steps, acquired dose-symmetric)
is imaged at a total dose in e/A^2: each tilt is projected, modulated by the CTF (with a
B-factor that grows with the dose already received), and counted as Poisson electrons.
Each tilt's counts are split at random into two halves (binomial thinning: two independent
Poisson images of half the dose, like the even and odd frames of each tilt's movie), and
each half, and their sum, is reconstructed by weighted (ramp-filtered) back-projection,
slice by slice. The noiseless reconstruction of the same tilt series is the reference:
it has the same missing wedge as the noisy ones, so a denoiser is scored on what the
data can show. Numpy, scipy and scikit-image only.

Axes are (Z, Y, X) = (depth, height, width), Z along the beam at zero tilt, as IMOD and
MRC files order a reconstruction.
"""

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from n2s_tf.synthetic import ctf, read_atoms


def density_volume(atoms, pixel_size, sigma_A=None, rotation=None, rng=None):
    """The Coulomb-potential-like density of one molecule on a cubic grid: atoms weighted by
    their atomic number, trilinearly splatted at `pixel_size` A/voxel and blurred by a
    Gaussian of `sigma_A` (default one voxel). Returns a float32 (n, n, n) box whose centre
    is the molecule's centroid, `rotation` applied (a random one from `rng` when None)."""
    coords, z = read_atoms(atoms) if isinstance(atoms, str) else atoms
    coords = np.asarray(coords, np.float64)
    if rotation is None:
        rotation = Rotation.random(rng=np.random.default_rng(rng))
    sigma = (pixel_size if sigma_A is None else sigma_A) / pixel_size
    xyz = rotation.apply(coords - coords.mean(axis=0)) / pixel_size
    n = 2 * int(np.ceil(np.abs(xyz).max() + 3 * sigma)) + 3
    # (z, y, x) voxel coordinates; the model's own x, y, z map onto the volume's X, Y, Z.
    position = xyz[:, ::-1] + n // 2
    base = np.floor(position).astype(np.int64)
    frac = position - base
    box = np.zeros(n**3)
    for corner in np.ndindex(2, 2, 2):
        offset = np.array(corner)
        weight = np.prod(np.where(offset, frac, 1 - frac), axis=1) * z
        index = base + offset
        flat = np.ravel_multi_index(index.T, (n, n, n), mode="clip")
        box += np.bincount(flat, weight, n**3)
    box = box.reshape(n, n, n)
    return ndimage.gaussian_filter(box, sigma, mode="constant").astype(np.float32) if sigma > 0 else box


def dose_symmetric_order(tilts):
    """Acquisition order of a dose-symmetric scheme (Hagen): zero first, then alternating
    pairs of increasing |tilt|. Returns indices into `tilts`."""
    tilts = np.asarray(tilts, np.float64)
    return np.array(sorted(range(len(tilts)), key=lambda i: (abs(tilts[i]), tilts[i] < 0)))


def project_slab(volume, tilts):
    """Line integrals of a (Z, Y, X) volume along the beam at each tilt about Y: a tilt
    series (n_tilts, Y, detector) whose detector axis spans the diagonal of the XZ plane."""
    from skimage.transform import radon

    depth, height, width = volume.shape
    side = max(depth, width)
    series = None
    for y in range(height):
        square = np.zeros((side, side), np.float64)
        z0, x0 = (side - depth) // 2, (side - width) // 2
        square[z0:z0 + depth, x0:x0 + width] = volume[:, y, :]
        sinogram = radon(square, theta=np.asarray(tilts, np.float64), circle=False)  # (detector, tilts)
        if series is None:
            series = np.zeros((len(tilts), height, sinogram.shape[0]), np.float64)
        series[:, y, :] = sinogram.T
    return series


def back_project(series, tilts, shape):
    """Weighted (ramp-filtered) back-projection of a tilt series (n_tilts, Y, detector) into a
    (Z, Y, X) volume of `shape`, one XZ slice per Y row."""
    from skimage.transform import iradon

    depth, height, width = shape
    side = max(depth, width)
    out = np.zeros(shape, np.float32)
    z0, x0 = (side - depth) // 2, (side - width) // 2
    for y in range(height):
        square = iradon(series[:, y, :].T, theta=np.asarray(tilts, np.float64), circle=False,
                        filter_name="ramp", output_size=side)
        out[:, y, :] = square[z0:z0 + depth, x0:x0 + width]
    return out


def simulate_tomogram(atoms_list, shape=(64, 256, 256), pixel_size=8.0, n_particles=30,
                      tilt_range=60.0, tilt_step=3.0, total_dose=100.0, defocus_um=3.0,
                      ice_fraction=0.75, contrast=0.1, b_per_dose=4.0, seed=0):
    """Simulate a tomogram and its even/odd halves with a known noiseless reconstruction.

    atoms_list: PDB/mmCIF paths or (coords, atomic_numbers) pairs; particles of each kind
    are drawn in turn at random positions inside the ice slab (`ice_fraction` of the depth)
    and random orientations. Every tilt gets total_dose / n_tilts e/A^2; its projection
    (scaled to unit std over the series) modulates the expected counts by `contrast` through
    the CTF at `defocus_um`, with a B-factor of `b_per_dose` A^2 per e/A^2 received before it.

    Returns a dict of float32 (Z, Y, X) volumes: "clean" (noiseless reconstruction, same
    missing wedge), "noisy" (all counts), "even" and "odd" (independent halves), "density"
    (the ground-truth volume), and "tilts" (degrees). Same seed, same output.
    """
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    kinds = [read_atoms(a) if isinstance(a, str) else a for a in atoms_list]
    density = np.zeros(shape, np.float32)
    slab = int(round(depth * ice_fraction))
    top = (depth - slab) // 2
    for i in range(n_particles):
        box = density_volume(kinds[i % len(kinds)], pixel_size, rng=rng)
        n = box.shape[0]
        if n > min(slab, height, width):
            raise ValueError(f"a particle needs {n} voxels, more than the slab ({slab}) or the image")
        z = top + rng.integers(0, slab - n + 1)
        y, x = rng.integers(0, height - n + 1), rng.integers(0, width - n + 1)
        density[z:z + n, y:y + n, x:x + n] += box
    # Ice: a uniform background in the slab whose mean matches the particles' so that they
    # show as denser than their surroundings, not as holes.
    density[top:top + slab] += 0.25 * density.mean() * depth / max(slab, 1)

    tilts = np.arange(-tilt_range, tilt_range + tilt_step / 2, tilt_step)
    order = dose_symmetric_order(tilts)
    projections = project_slab(density, tilts)
    projections = (projections - projections.mean()) / (projections.std() or 1.0)
    dose_per_tilt = total_dose / len(tilts)
    counts_per_pixel = dose_per_tilt * pixel_size**2
    received = np.empty(len(tilts))
    received[order] = np.arange(len(tilts)) * dose_per_tilt
    expected = np.empty_like(projections)
    for t in range(len(tilts)):
        transfer = ctf(projections.shape[1:], pixel_size, defocus_um, b_factor=b_per_dose * received[t])
        image = np.fft.ifft2(np.fft.fft2(projections[t]) * transfer).real
        expected[t] = counts_per_pixel * np.clip(1 + contrast * image, 0, None)
    counts = rng.poisson(expected)
    even = rng.binomial(counts, 0.5)
    odd = counts - even

    def reconstruct(series_counts, dose_fraction):
        # Back to projection units: the weak-phase image the counts estimate.
        series = (series_counts / (counts_per_pixel * dose_fraction) - 1) / contrast
        return back_project(series, tilts, shape)

    return {"clean": reconstruct(expected, 1.0), "noisy": reconstruct(counts, 1.0),
            "even": reconstruct(even, 0.5), "odd": reconstruct(odd, 0.5),
            "density": density, "tilts": tilts.astype(np.float32)}
