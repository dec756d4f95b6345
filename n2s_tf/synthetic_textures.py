"""Procedural clean textures for training a general denoiser that keeps periodic detail.

Natural-image training sets hold few large areas of fine periodic texture (cloth, stripes,
brickwork, mesh), so a network trained on them learns to smooth such areas away, while a
block-matching filter (BM3D) keeps them. These generators make such images on demand:
gratings of random frequency, orientation, phase and profile; the same warped by a smooth
displacement field; woven (over-under) and tiled patterns; each optionally occluded by
shapes of other textures or blended into a natural image. Values are float32 on 0..255.
Numpy and scipy only; every function is a pure function of its random generator.
"""

import numpy as np
from scipy import ndimage

KINDS = ("grating", "warped", "woven", "tiled")


def grating(rng, shape, frequency=None, angle=None, phase=None, sharpness=None):
    """A sinusoidal grating (cycles/px in (0.03, 0.45)) whose profile goes from sine to
    near-square with `sharpness` (0 = sine); values in [-1, 1]."""
    frequency = rng.uniform(0.03, 0.45) if frequency is None else frequency
    angle = rng.uniform(0, np.pi) if angle is None else angle
    phase = rng.uniform(0, 2 * np.pi) if phase is None else phase
    sharpness = rng.choice([0.0, rng.uniform(1, 8)]) if sharpness is None else sharpness
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    wave = np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    return np.tanh(sharpness * wave) / np.tanh(sharpness) if sharpness > 0 else wave


def warp(rng, image, amplitude=None, smoothness=None):
    """`image` resampled through a smooth random displacement field (`amplitude` px, correlated
    over `smoothness` px): bent stripes, as folds of cloth or curved surfaces make them."""
    amplitude = rng.uniform(1, 6) if amplitude is None else amplitude
    smoothness = rng.uniform(8, 40) if smoothness is None else smoothness
    fields = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.normal(size=image.shape), smoothness, mode="wrap")
        fields.append(field * amplitude / (np.abs(field).max() or 1.0))
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float64)
    return ndimage.map_coordinates(image, [yy + fields[0], xx + fields[1]], order=1, mode="reflect")


def woven(rng, shape):
    """An over-under weave: warp and weft threads (near-square gratings at right angles) that
    alternate on a checkerboard of thread crossings; values in [-1, 1]."""
    period = rng.uniform(3, 16)
    angle = rng.uniform(0, np.pi / 2)
    warp_threads = grating(rng, shape, 1 / period, angle, rng.uniform(0, 2 * np.pi), rng.uniform(1, 4))
    weft_threads = grating(rng, shape, 1 / period, angle + np.pi / 2, rng.uniform(0, 2 * np.pi), rng.uniform(1, 4))
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / period
    over = (np.floor(u).astype(np.int64) + np.floor(v).astype(np.int64)) % 2 == 0
    return np.where(over, warp_threads, weft_threads)


def tiled(rng, shape):
    """A small random motif (blobs and edges, 4-24 px) repeated over the image, as bricks,
    tiles or mesh repeat; values in [-1, 1]."""
    motif = rng.integers(4, 25, size=2)
    cell = ndimage.gaussian_filter(rng.normal(size=motif), rng.uniform(0.5, 2.0), mode="wrap")
    if rng.random() < 0.5:
        cell = np.sign(cell)  # sharp-edged motifs
    reps = (-(-shape[0] // motif[0]), -(-shape[1] // motif[1]))
    image = np.tile(cell, reps)[: shape[0], : shape[1]]
    return image / (np.abs(image).max() or 1.0)


def texture(rng, shape, kind=None):
    """One texture of `kind` (default: a random one of KINDS); values in [-1, 1]."""
    kind = rng.choice(KINDS) if kind is None else kind
    if kind == "grating":
        image = grating(rng, shape)
        if rng.random() < 0.3:  # a second grating crossing the first (mesh, plaid)
            image = 0.5 * (image + grating(rng, shape))
    elif kind == "warped":
        image = warp(rng, grating(rng, shape))
    elif kind == "woven":
        image = woven(rng, shape)
    elif kind == "tiled":
        image = tiled(rng, shape)
    else:
        raise ValueError(f"unknown texture kind {kind!r}; one of {', '.join(KINDS)}")
    return np.clip(image, -1, 1)


def occlude(rng, image, n_shapes=None):
    """Paste ellipses filled with other textures or flat grey over `image`: texture boundaries
    and flat regions next to periodic ones."""
    n_shapes = rng.integers(1, 5) if n_shapes is None else n_shapes
    out = image.copy()
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float64)
    for _ in range(n_shapes):
        cy, cx = rng.uniform(0, image.shape[0]), rng.uniform(0, image.shape[1])
        ry, rx = rng.uniform(0.1, 0.4, size=2) * np.array(image.shape)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        inside = u**2 + v**2 <= 1
        fill = texture(rng, image.shape) if rng.random() < 0.7 else np.full(image.shape, rng.uniform(-1, 1))
        out[inside] = fill[inside]
    return out


def texture_image(rng, shape=(256, 256), natural=None):
    """A clean training image on 0..255: a texture of random kind, contrast and mean, occluded
    half of the time, and blended into the `natural` image (same shape, 0..255) through a smooth
    random mask when one is given."""
    image = texture(rng, shape)
    if rng.random() < 0.5:
        image = occlude(rng, image)
    contrast, mean = rng.uniform(20, 110), rng.uniform(60, 190)
    image = mean + contrast * image
    if natural is not None:
        mask = ndimage.gaussian_filter(rng.normal(size=shape), rng.uniform(10, 40))
        mask = 1 / (1 + np.exp(-mask / (mask.std() or 1.0) * 4))
        image = mask * image + (1 - mask) * np.asarray(natural, np.float64)
    return np.clip(image, 0, 255).astype(np.float32)
