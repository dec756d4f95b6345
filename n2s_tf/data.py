"""Training data: per-image standardization, the demo set, and a stream of random patches.

Whole images are kept in memory once (standardized float32); patches are cut on the
fly, so memory does not grow with the number of patches. Each batch is a pure
function of (seed, worker, step): a resumed run sees exactly the batches that the
uninterrupted run would have seen, and workers of a multi-machine run see different
ones.
"""

import warnings
from typing import Sequence

import numpy as np

from n2s_tf.errors import ConfigError, ImageFileError, UserError
from n2s_tf.io import slabs

DEMO_SIGMA = 25.0  # Gaussian noise on the 0-255 scale, as the Noise2Same BSD68 benchmark
DEMO_SEED = 1234
# Grayscale images that ship inside scikit-image (no download). Held-out images are
# never trained on; they measure PSNR.
DEMO_TRAIN = ("brick", "grass", "gravel", "moon", "page", "text", "clock", "cell",
              "chelsea", "coffee", "rocket", "hubble_deep_field")
DEMO_HELDOUT = ("camera", "coins", "astronaut")


# Non-finite pixels take the median of the finite ones in this window (per spatial axis);
# holes wider than the window fill from their rim inwards for this many rounds.
REPAIR_WINDOW = 5
REPAIR_ROUNDS = 4


def channel_stats(image: np.ndarray):
    """Per-channel (mean, std), float64, of the finite pixels of a channels-last image.

    Accumulated slab by slab in float64, two passes (mean, then squared deviations), so any
    size fits in memory; NaN and Inf pixels are left out; a std of 0 becomes 1. Raises
    UserError when a channel has no finite pixel.
    """
    channels = image.shape[-1]
    count, total = np.zeros(channels), np.zeros(channels)
    for rows in slabs(image):
        x = np.asarray(image[rows], np.float64).reshape(-1, channels)
        finite = np.isfinite(x)
        count += finite.sum(axis=0)
        total += np.where(finite, x, 0.0).sum(axis=0)
    if not count.all():
        where = "the image" if channels == 1 else f"channel {int(np.argmin(count))} of the image"
        raise UserError(f"{where} has no finite pixel (all {image.size // channels} are NaN or Inf)")
    mean = total / count
    squares = np.zeros(channels)
    for rows in slabs(image):
        x = np.asarray(image[rows], np.float64).reshape(-1, channels) - mean
        squares += np.where(np.isfinite(x), x * x, 0.0).sum(axis=0)
    std = np.sqrt(squares / count)
    return mean, np.where(std > 0, std, 1.0)


def all_finite(image: np.ndarray) -> bool:
    """Whether every pixel is finite, slab by slab (no full-size boolean temporary)."""
    return all(np.isfinite(image[rows]).all() for rows in slabs(image))


def standardize(image: np.ndarray, stats=None, out=None):
    """(image - mean) / std per channel, as float32; returns (standardized, (mean, std)).

    The statistics are `channel_stats` (finite pixels only) unless `stats` reuses another
    image's (a target is put in its input's units). `out` is a float32 array of the image's
    shape to write into (may be `image` itself); computed slab by slab in float64.
    """
    mean, std = stats = channel_stats(image) if stats is None else stats
    out = np.empty(image.shape, np.float32) if out is None else out
    for rows in slabs(image):
        out[rows] = (np.asarray(image[rows], np.float64) - mean) / std
    return out, stats


def repair_nonfinite(image: np.ndarray, fallback=0.0) -> int:
    """Replace each NaN or Inf of a channels-last float array in place; returns how many.

    A bad pixel takes the median of the finite pixels of its channel in the REPAIR_WINDOW box
    around it (cut at the image's edges). Pixels with no finite neighbour (inside a hole) wait for the next round, so
    holes fill from the rim inwards; after REPAIR_ROUNDS rounds what is left takes `fallback`
    (for a standardized image, 0: the channel's mean). Memory grows with the number of bad
    pixels, not with the image.
    """
    bad = [np.argwhere(~np.isfinite(image[rows])) + ([rows.start] + [0] * (image.ndim - 1))
           for rows in slabs(image)]
    bad = np.concatenate(bad) if bad else np.zeros((0, image.ndim), np.intp)
    repaired = len(bad)
    spatial = np.array(image.shape[:-1])
    radius = REPAIR_WINDOW // 2
    offsets = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * len(spatial), indexing="ij"), axis=-1)
    offsets = offsets.reshape(-1, len(spatial))
    batch = max(1, 2**22 // len(offsets))  # bounds the (pixels, neighbours) temporaries
    for _ in range(REPAIR_ROUNDS):
        if not len(bad):
            break
        values = np.empty(len(bad), np.float64)
        for start in range(0, len(bad), batch):
            pixels = bad[start:start + batch]
            where = pixels[:, None, :-1] + offsets
            outside = ((where < 0) | (where >= spatial)).any(axis=-1)  # the box is cut at the image's edge
            where = np.clip(where, 0, spatial - 1)
            neighbours = image[(*np.moveaxis(where, -1, 0), pixels[:, None, -1])].astype(np.float64)
            neighbours[outside | ~np.isfinite(neighbours)] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": a hole, next round
                values[start:start + batch] = np.nanmedian(neighbours, axis=1)
        image[tuple(bad.T)] = values  # all of a round's medians from the image before the round
        bad = bad[~np.isfinite(values)]
    image[tuple(bad.T)] = fallback
    return repaired


def sample_image(name: str) -> np.ndarray:
    """A grayscale sample image that ships with a dependency (no download), float32 (H, W) on
    the 0-255 scale, by name: scikit-image's by its function name ("camera"; "motorcycle" is
    the left view of stereo_motorcycle, "chessboard" its photograph chessboard_GRAY.png),
    PyWavelets' as "pywt:ascent", matplotlib's sample data as "matplotlib:grace_hopper.jpg"
    (and its MRI slice, "matplotlib:s1045.ima.gz").
    Binary and [0, 1] images are scaled to 0-255."""
    import skimage.color

    source, _, item = name.rpartition(":")
    if source == "pywt":
        import pywt.data

        image = getattr(pywt.data, item)().astype(np.float64)
    elif source == "matplotlib":
        import gzip
        import os

        import matplotlib
        import matplotlib.image

        path = os.path.join(matplotlib.get_data_path(), "sample_data", item)
        if item == "s1045.ima.gz":
            with gzip.open(path) as f:
                image = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float64)
        else:
            image = matplotlib.image.imread(path)
    elif source == "":
        import skimage.data

        if item == "motorcycle":
            image = skimage.data.stereo_motorcycle()[0]
        elif item == "chessboard":  # a photograph of a chessboard, a file with no loader function
            import os

            import skimage.io

            image = skimage.io.imread(os.path.join(os.path.dirname(skimage.data.__file__), "chessboard_GRAY.png"))
        else:
            image = getattr(skimage.data, item)()
    else:
        raise ValueError(f"unknown source {source!r}")
    image = np.asarray(image, np.float64)
    if image.ndim == 3:  # RGB(A) on 0-255 or 0-1: its luminance on 0-1
        rgb = image[..., :3]
        image = skimage.color.rgb2gray(rgb / 255.0 if rgb.max() > 1 else rgb)
    if image.max() <= 1.0:  # luminance, binary and [0, 1] images
        image = image * 255.0
    elif item == "s1045.ima.gz":  # 16-bit counts
        image = image * (255.0 / image.max())
    return image.astype(np.float32)


def demo_images(split: str = "heldout"):
    """[(noisy, clean)] of the built-in demo set, (H, W, 1) float32 on the 0-255 scale.

    The noise is Gaussian, sigma 25, from a fixed seed per image, and not clipped.
    """
    names = {"train": DEMO_TRAIN, "heldout": DEMO_HELDOUT}[split]
    pairs = []
    for index, name in enumerate(names):
        clean = sample_image(name)[..., None]
        rng = np.random.default_rng([DEMO_SEED, index, split == "heldout"])
        noisy = clean + rng.normal(0.0, DEMO_SIGMA, clean.shape).astype(np.float32)
        pairs.append((noisy, clean))
    return pairs


def _random_patch(rng, arrays: Sequence[np.ndarray], patch_size, augment: bool):
    """The same random crop (and rot90/flip) of every array in `arrays`."""
    spatial = arrays[0].shape[:-1]
    start = [rng.integers(0, s - p + 1) for s, p in zip(spatial, patch_size)]
    window = tuple(slice(a, a + p) for a, p in zip(start, patch_size))
    patches = [a[window] for a in arrays]
    if augment:
        # Rotate and flip in the last two spatial axes (the image plane of a volume).
        h, w = len(spatial) - 2, len(spatial) - 1
        square = patch_size[-1] == patch_size[-2]
        k = rng.integers(0, 4) if square else 2 * rng.integers(0, 2)
        flip = rng.integers(0, 2)
        patches = [np.rot90(p, k, axes=(h, w)) for p in patches]
        if flip:
            patches = [np.flip(p, axis=w) for p in patches]
    return patches


def add_synthetic_noise(rng, clean, noise):
    """(noisy, target) from a patch of a standardized clean image: Gaussian noise whose std is
    drawn log-uniformly in noise = (low, high) (fractions of the image's std, which is 1), both
    divided by the noisy image's std sqrt(1 + r^2), as standardizing the noisy image would at
    prediction time."""
    r = float(np.exp(rng.uniform(np.log(noise[0]), np.log(noise[1]))))
    scale = np.float32(1.0 / np.sqrt(1.0 + r * r))
    noisy = clean + np.float32(r) * rng.standard_normal(clean.shape, dtype=np.float32)
    return noisy * scale, clean * scale


def check_patch_fits(inputs, patch_size):
    """Refuse an image smaller than the patch, before training starts: inside tf.data the
    error would surface as a traceback of the iterator, not as a one-line user error."""
    for image in inputs:
        if any(s < p for s, p in zip(image.shape[:-1], patch_size)):
            raise ConfigError(
                f"an image of size {'x'.join(map(str, image.shape[:-1]))} is smaller than "
                f"--patch_size {','.join(map(str, patch_size))}"
            )


def patch_batches(inputs, targets=None, *, patch_size, batch_size, seed=0, worker=0,
                  start_step=0, augment=True, swap_pairs=False, noise=()):
    """Yield batches x (N, *patch, C), or (x, y) when targets are given or noise is added,
    forever.

    Images are drawn in proportion to their number of pixels. `swap_pairs` swaps
    input and target at random (Noise2Noise halves are interchangeable). `noise` (low, high)
    makes each (x, y) from a clean patch (see add_synthetic_noise). Every image must hold a
    patch: `patch_dataset` checks that (check_patch_fits) before the stream starts.
    """
    weights = np.array([image.size for image in inputs], dtype=np.float64)
    weights /= weights.sum()
    step = start_step
    while True:
        rng = np.random.default_rng([seed, worker, step])
        xs, ys = [], []
        for _ in range(batch_size):
            i = rng.choice(len(inputs), p=weights)
            arrays = [inputs[i]] if targets is None else [inputs[i], targets[i]]
            patches = _random_patch(rng, arrays, patch_size, augment)
            if swap_pairs and rng.integers(0, 2):
                patches.reverse()
            if noise:
                patches = list(add_synthetic_noise(rng, patches[0], noise))
            xs.append(patches[0])
            if len(patches) > 1:
                ys.append(patches[1])
        x = np.ascontiguousarray(np.stack(xs))
        yield (x, np.ascontiguousarray(np.stack(ys))) if ys else x
        step += 1


def patch_dataset(inputs, targets=None, *, patch_size, batch_size, noise=(), **kwargs):
    """A tf.data stream of `patch_batches`, prefetched so the trainer never waits on numpy."""
    import tensorflow as tf  # here only: standardize() above serves TensorFlow-free callers too

    check_patch_fits(inputs, patch_size)
    channels = inputs[0].shape[-1]
    spec = tf.TensorSpec((batch_size, *patch_size, channels), tf.float32)
    signature = spec if targets is None and not noise else (spec, spec)
    dataset = tf.data.Dataset.from_generator(
        lambda: patch_batches(inputs, targets, patch_size=patch_size, batch_size=batch_size, noise=noise,
                              **kwargs),
        output_signature=signature,
    )
    options = tf.data.Options()
    # Every worker makes its own batches from its own seed; tf.data must not shard them.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(2)


def load_training_data(config):
    """Standardized training inputs, targets (or None) and validation pairs for `config`.

    Validation pairs are (noisy, clean) in original units; they come from the demo
    set's held-out images, or from --clean (same file names as --data). With --noise the
    inputs are the clean images and there are no targets: batches add the noise.
    """
    from n2s_tf import io

    if config.data is None:
        train = demo_images("train")
        if config.method.target == "noisy":
            raise ConfigError("--model=n2n needs --data and --target (two noisy halves); the demo set has one")
        inputs, targets = [], [] if config.method.target and not config.noise else None
        for noisy, clean in train:
            x, stats = standardize(clean if config.noise else noisy)
            inputs.append(x)
            if targets is not None:
                targets.append(standardize(clean, stats)[0])
        return inputs, targets, demo_images("heldout")

    if config.target:
        pairs = io.paired_files(config.data, config.target)
        files = [a for a, _ in pairs]
    else:
        pairs, files = None, io.list_inputs(config.data)
    inputs, targets = [], ([] if pairs else None)
    for index, path in enumerate(files):
        images = _training_images(io.read_image(path), config)
        others = _training_images(io.read_image(pairs[index][1]), config) if pairs else [None] * len(images)
        for image, target in zip(images, others):
            x, stats = standardize(image)
            inputs.append(x)
            if target is not None:
                if target.shape != image.shape:
                    raise ConfigError(f"{pairs[index][1]} has shape {target.shape}, its pair {path} {image.shape}")
                targets.append(standardize(target, stats)[0])
    validation = []
    if config.clean:
        for noisy_path, clean_path in io.paired_files(config.data, config.clean):
            noisy, clean = io.read_image(noisy_path), io.read_image(clean_path)
            for image in (noisy, clean):
                check_finite(image.data, image.source)
            validation.append((noisy.data, clean.data))
    return inputs, targets, validation


def _training_images(image, config) -> list:
    """The arrays of an io.Image (one per plane of a stack), checked against the configured
    dimensionality; each is standardized on its own, as at prediction time."""
    if image.ndim != config.ndim:
        raise ConfigError(
            f"{image.source} is {image.ndim}D but --patch_size is {config.ndim}D "
            f"({','.join(map(str, config.patch_size))})"
        )
    check_finite(image.data, image.source)
    arrays = list(image.data) if image.kind == "stack" else [image.data]
    if config.whiten != "off":
        from n2s_tf.noise import channel_reports, correlated_spectra
        from n2s_tf.whitening import whiten

        def whitened(array):  # "auto": only where the verdict is correlated, with its spectra
            if config.whiten == "on":
                return whiten(array, config.ndim)
            spectra = correlated_spectra(channel_reports(array, config.ndim))
            return array if spectra is None else whiten(array, config.ndim, spectra)

        arrays = [whitened(array) for array in arrays]
    return arrays


def check_finite(array: np.ndarray, source: str) -> None:
    """Refuse NaN or Inf pixels: one of them makes the loss, then every weight, NaN."""
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ImageFileError(f"{source}: {bad} of {array.size} pixels are not finite (NaN or Inf); "
                             f"training needs finite pixels")
