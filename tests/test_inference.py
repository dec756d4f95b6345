"""Tests of tiled prediction: tiled == whole, padding, tile choice, TTA, scale restoring."""

import io

import keras
import numpy as np
import pytest

from n2s_tf.inference import (
    StandardizedWindows,
    _Progress,
    choose_tile,
    context_size,
    crop,
    denoise_array,
    estimate_bytes_per_pixel,
    pad_to_multiple,
    predict_tiled,
    predict_whole,
)

# Reach (farthest input pixel on one side an output pixel depends on) of the tiny
# networks below, bounded by hand: a k-wide conv at pixel spacing J reaches (k // 2) * J;
# a 2x pooling or 2x upsampling between spacings J and 2J adds at most J (alignment).
# 2D: conv3 J1 (1) + pool J1 (1) + conv3 J2 (2) + pool J2 (2) + conv3 J4 (4)
#     + upsample to J2 (2) + conv3 J2 (2) + transposed conv to J1 (1) + conv3 J1 (1) = 16
# 3D: conv3 J1 (1) + pool J1 (1) + conv3 J2 (2) + upsample to J1 (1) + conv3 J1 (1) = 6
# Receptive field = 2 * reach + 1.
RF_2D, STRIDE_2D = 33, 4
RF_3D, STRIDE_3D = 13, 2


def _randomize_batchnorm(model, rng):
    """Give BatchNorm layers non-trivial statistics so that training=False matters."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)])


def tiny_unet_2d(channels, seed=0):
    """Two poolings (stride 4), nearest upsampling, a transposed conv, skips, BatchNorm."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = keras.Input((None, None, channels))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 3, padding="same")(x)))
    b = L.Conv2D(8, 3, padding="same", activation="relu")(L.MaxPooling2D()(a))
    c = L.Conv2D(8, 3, padding="same", activation="relu")(L.MaxPooling2D()(b))
    u = L.Conv2D(8, 3, padding="same", activation="relu")(L.UpSampling2D(interpolation="nearest")(c))
    v = L.Conv2DTranspose(6, 2, strides=2)(L.Concatenate()([u, b]))
    v = L.BatchNormalization()(L.Concatenate()([v, a]))
    y = L.Conv2D(channels, 1)(L.Conv2D(6, 3, padding="same", activation="relu")(v))
    model = keras.Model(x, y)
    _randomize_batchnorm(model, np.random.default_rng(seed))
    return model


def tiny_unet_3d(channels, seed=0):
    """One pooling (stride 2), nearest upsampling, a skip, BatchNorm."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = keras.Input((None, None, None, channels))
    a = L.ReLU()(L.BatchNormalization()(L.Conv3D(4, 3, padding="same")(x)))
    b = L.Conv3D(6, 3, padding="same", activation="relu")(L.MaxPooling3D()(a))
    u = L.Concatenate()([L.UpSampling3D()(b), a])
    y = L.Conv3D(channels, 3, padding="same")(u)
    model = keras.Model(x, y)
    _randomize_batchnorm(model, np.random.default_rng(seed))
    return model


def as_predict_fn(model):
    return lambda batch: model(batch, training=False)


def max_error(a, b):
    return float(np.max(np.abs(a - b)))


class ShapeRecorder:
    """A predict_fn wrapper that records the shape of every batch it sees."""

    def __init__(self, predict_fn):
        self.predict_fn, self.shapes = predict_fn, []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        return self.predict_fn(batch)


@pytest.fixture(scope="module")
def net1():
    return as_predict_fn(tiny_unet_2d(1))


# --- padding ---------------------------------------------------------------------------


def test_pad_reflects_high_end_and_crop_undoes_it():
    image = np.arange(5 * 7 * 2, dtype=np.float32).reshape(5, 7, 2)
    padded, shape = pad_to_multiple(image, 4)
    assert padded.shape == (8, 8, 2) and shape == (5, 7)
    np.testing.assert_array_equal(padded[5:, :7], image[[3, 2, 1], :])  # reflection without the edge row
    np.testing.assert_array_equal(padded[:5, 7], image[:, 5])
    np.testing.assert_array_equal(crop(padded, shape), image)


def test_pad_falls_back_to_edge_on_short_axes_and_leaves_multiples_alone():
    image = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)[..., None]  # 1 x 3
    padded, _ = pad_to_multiple(image, 4)
    expected = np.array([[1, 2, 3, 2]] * 4, dtype=np.float32)[..., None]  # rows: edge; columns: reflect
    np.testing.assert_array_equal(padded, expected)
    volume = np.ones((4, 8, 12, 1), np.float32)
    assert pad_to_multiple(volume, 4)[0] is volume


# --- tiled == whole ----------------------------------------------------------------------


@pytest.mark.parametrize("shape, tile", [((75, 93, 1), 16), ((70, 61, 2), 24)])
def test_tiled_equals_whole_2d(shape, tile):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32)
    predict_fn = ShapeRecorder(as_predict_fn(tiny_unet_2d(shape[-1])))
    whole = predict_whole(predict_fn, image, STRIDE_2D)
    tiled = predict_tiled(predict_fn, image, STRIDE_2D, RF_2D, tile=tile)
    assert tiled.shape == image.shape and tiled.dtype == np.float32
    assert max_error(tiled, whole) < 1e-4
    assert len(predict_fn.shapes) > 9  # genuinely tiled, with seams in both axes


def test_tiled_equals_whole_3d():
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(20, 40, 36, 1)).astype(np.float32)
    predict_fn = as_predict_fn(tiny_unet_3d(1))
    whole = predict_whole(predict_fn, volume, STRIDE_3D)
    tiled = predict_tiled(predict_fn, volume, STRIDE_3D, RF_3D, tile=16)
    assert tiled.shape == volume.shape
    assert max_error(tiled, whole) < 1e-4


def test_too_small_context_breaks_agreement(net1):
    image = np.random.default_rng(3).normal(size=(75, 93, 1)).astype(np.float32)
    whole = predict_whole(net1, image, STRIDE_2D)
    assert max_error(predict_tiled(net1, image, STRIDE_2D, receptive_field=1, tile=16), whole) > 1e-3


def test_image_smaller_than_tile_is_one_whole_image_call(net1):
    image = np.random.default_rng(4).normal(size=(75, 93, 1)).astype(np.float32)
    recorder = ShapeRecorder(net1)
    tiled = predict_tiled(recorder, image, STRIDE_2D, RF_2D, tile=256)
    assert recorder.shapes == [(1, 76, 96, 1)]
    assert max_error(tiled, predict_whole(net1, image, STRIDE_2D)) < 1e-4


def test_large_image_uses_one_window_shape():
    calls = ShapeRecorder(lambda batch: batch)
    image = np.zeros((300, 300, 1), np.float32)
    predict_tiled(calls, image, STRIDE_2D, RF_2D, tile=64)
    # ceil(300 / 64) = 5 tiles per axis share the 300 px evenly: 60 px cores (not 64, which
    # would compute 20 px twice), each with 20 px of context per side.
    window = 60 + 2 * context_size(RF_2D, STRIDE_2D)
    assert len(calls.shapes) == 25
    assert set(calls.shapes) == {(1, window, window, 1)}  # at most 9 allowed; all windows share one


# --- tile size ---------------------------------------------------------------------------


def test_tile_from_memory_budget():
    # At stride 8, context = ceil(33 / 2) = 17 -> 24: a window of 560^2 pixels holds a 512 px tile.
    assert context_size(RF_2D, 8) == 24
    assert choose_tile((4096, 4096), 8, RF_2D, max_memory=1000 * 560**2, bytes_per_pixel=1000) == 512
    assert choose_tile((4096, 4096), 8, RF_2D, max_memory=1000 * 300**2, bytes_per_pixel=1000) == 248
    assert choose_tile((4096, 4096), 8, RF_2D, max_memory=1000, bytes_per_pixel=1000) == 16  # floor 2 * stride
    assert choose_tile((300, 300), 8, RF_2D, max_memory=10**12, bytes_per_pixel=1000) == 304  # whole image
    # A thin volume: the window's Z is clipped to 16, so 16 * 104^2 voxels hold a 56 px tile (56 + 48).
    assert choose_tile((16, 512, 512), 8, RF_2D, max_memory=16 * 104**2, bytes_per_pixel=1) == 56


def test_tile_from_memory_drives_predict_tiled():
    calls = ShapeRecorder(lambda batch: batch)
    predict_tiled(calls, np.zeros((300, 300, 1), np.float32), STRIDE_2D, RF_2D,
                  max_memory=4 * 120**2, bytes_per_pixel=4)
    # The budget allows tile 80 + 2 * 20 context; 4 such tiles cover 300 px with 76 px cores.
    assert set(calls.shapes) == {(1, 116, 116, 1)}


def test_tile_defaults_and_errors():
    assert choose_tile((4096, 4096), 8, RF_2D) == 1024
    assert choose_tile((200, 4096, 4096), 8, RF_2D) == 128
    assert choose_tile((4096, 4096), 8, RF_2D, tile=1000) == 1000
    assert choose_tile((4096, 4096), 16, RF_2D, tile=1000) == 1008  # rounded up to the stride grid
    with pytest.raises(ValueError, match="not both"):
        choose_tile((64, 64), 4, RF_2D, tile=32, max_memory=10**9, bytes_per_pixel=4)
    with pytest.raises(ValueError, match="bytes_per_pixel"):
        choose_tile((64, 64), 4, RF_2D, max_memory=10**9)
    with pytest.raises(ValueError, match="image"):
        predict_tiled(lambda b: b, np.zeros((64, 64), np.float32), 4, RF_2D)
    with pytest.raises(ValueError, match="returned shape"):
        predict_tiled(lambda b: b[..., :1], np.zeros((64, 64, 2), np.float32), 4, RF_2D)


def test_estimate_bytes_per_pixel_by_hand():
    L = keras.layers
    x = keras.Input((None, None, 1))
    model = keras.Model(x, L.Conv2D(16, 3, padding="same")(L.MaxPooling2D()(L.Conv2D(8, 3, padding="same")(x))))
    # Elements per input pixel: input 1 + conv 8 + pool 8/4 + conv 16/4 = 15; float32, safety 2.
    assert estimate_bytes_per_pixel(model) == pytest.approx(15 * 4 * 2)
    x = keras.Input((None, None, None, 1))
    model = keras.Model(x, L.Conv3D(16, 3, padding="same")(L.MaxPooling3D()(L.Conv3D(8, 3, padding="same")(x))))
    assert estimate_bytes_per_pixel(model) == pytest.approx((1 + 8 + 8 / 8 + 16 / 8) * 4 * 2)


def test_estimate_bytes_per_pixel_counts_the_attention_windows():
    from n2s_tf.networks.neighbourhood_attention import NeighbourhoodAttention

    x = keras.Input((None, None, 1))
    features = keras.layers.Conv2D(8, 3, padding="same")(keras.layers.MaxPooling2D()(x))
    model = keras.Model(x, NeighbourhoodAttention(3, key_dim=2, value_dim=4)(features))
    # Per input pixel: input 1 + pool 1/4 + conv 8/4 + attention 8/4 output and, at a quarter of
    # the pixels, 9 offsets x (2 keys + 4 values + logits, mask, weights) + q, k, v, mean (2+2+4+4).
    windows = 9 * (2 + 4 + 3) + 12
    assert estimate_bytes_per_pixel(model) == pytest.approx((1 + 1 / 4 + 2 + 2 + windows / 4) * 4 * 2)


# --- test-time augmentation --------------------------------------------------------------


def test_tta_is_exact_for_identity_and_pointwise_functions():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(37, 50, 2)).astype(np.float32)
    np.testing.assert_array_equal(predict_tiled(lambda b: b, image, 4, 9, tile=16, tta=True), image)
    np.testing.assert_array_equal(predict_tiled(np.square, image, 4, 9, tile=16, tta=True), image**2)
    volume = rng.normal(size=(6, 20, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(predict_tiled(lambda b: b, volume, 2, 5, tile=8, tta=True), volume)


def test_tta_tiled_equals_averaged_whole_predictions(net1):
    # 76 x 92 is a multiple of the stride, so no padding: rotating the image is rotating the input.
    image = np.random.default_rng(6).normal(size=(76, 92, 1)).astype(np.float32)
    expected = np.zeros_like(image)
    for k in range(4):
        for flip in (False, True):
            view = image[:, ::-1] if flip else image
            out = np.rot90(predict_whole(net1, np.rot90(view, k), STRIDE_2D), -k)
            expected += (out[:, ::-1] if flip else out) / 8
    tta = predict_tiled(net1, image, STRIDE_2D, RF_2D, tile=16, tta=True)
    plain = predict_tiled(net1, image, STRIDE_2D, RF_2D, tile=16)
    assert tta.shape == image.shape
    assert max_error(tta, expected) < 1e-4
    assert max_error(tta, plain) > 1e-3  # the random net is not rotation invariant


# --- user-level path ---------------------------------------------------------------------


def test_denoise_array_restores_scale():
    rng = np.random.default_rng(7)
    image = np.concatenate([rng.normal(1000, 50, (64, 48, 1)), np.full((64, 48, 1), 3.0)], axis=-1)
    seen = []
    out = denoise_array(lambda b: seen.append(b) or b, image.astype(np.float32), 4, RF_2D, tile=32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-5)
    batch = seen[0][0]  # the first window: standardized per channel, constant channel -> 0
    assert abs(batch[..., 0].mean()) < 0.5 and 0.5 < batch[..., 0].std() < 1.5
    np.testing.assert_array_equal(batch[..., 1], 0.0)
    volume = rng.normal(-5, 2, (8, 12, 10, 1)).astype(np.float32)
    np.testing.assert_allclose(denoise_array(lambda b: b, volume, 2, 5), volume, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, stride", [((75, 93, 2), 8), ((3, 70, 61, 1), 4), ((9, 10, 7, 1), 16)])
def test_standardized_windows_equal_the_padded_copy(shape, stride):
    # Every window predict_tiled can ask for (the whole axis, or at least two strides long),
    # also those reaching into the padding and axes shorter than the pad (which repeat the
    # edge), is exactly the window of the standardized copy padded as a whole.
    from n2s_tf.data import channel_stats, standardize

    image = np.random.default_rng(8).normal(3, 2, shape).astype(np.float32)
    stats = channel_stats(image)
    copy, _ = pad_to_multiple(standardize(image, stats)[0], stride)
    windows = StandardizedWindows(image, stride, stats)
    assert windows.shape == copy.shape
    rng = np.random.default_rng(9)
    for _ in range(20):
        window = []
        for n in copy.shape[:-1]:
            length = int(rng.integers(min(n, 2 * stride), n + 1))
            start = int(rng.integers(0, n - length + 1))
            window.append(slice(start, start + length))
        np.testing.assert_array_equal(windows[tuple(window)], copy[tuple(window)])
    np.testing.assert_array_equal(windows[tuple(slice(0, n) for n in copy.shape[:-1])], copy)


def test_denoise_array_without_a_copy_equals_the_copy_route(net1):
    # All finite: windows are made on the fly; one NaN elsewhere takes the repairing copy. Away
    # from the repaired pixel the two predictions agree.
    image = np.random.default_rng(10).normal(5, 3, (60, 52, 1)).astype(np.float32)
    predict_fn = as_predict_fn(tiny_unet_2d(1))
    direct = denoise_array(predict_fn, image, STRIDE_2D, RF_2D, tile=16)
    damaged = image.copy()
    damaged[0, 0] = np.nan
    with pytest.warns(Warning, match="non-finite"):
        repaired = denoise_array(predict_fn, damaged, STRIDE_2D, RF_2D, tile=16)
    far = (slice(30, None), slice(30, None))  # beyond the receptive field of the repaired pixel
    # The mean and std change a little with the one pixel left out.
    np.testing.assert_allclose(direct[far], repaired[far], rtol=1e-3, atol=1e-2 * image.std())
    whole = predict_whole(predict_fn, (image - image.mean()) / image.std(), STRIDE_2D) * image.std() + image.mean()
    assert max_error(direct, whole) < 1e-3 * image.std()


def test_progress_only_when_asked_and_none_in_a_log_for_a_short_prediction(capsys):
    image = np.zeros((64, 64, 1), np.float32)
    predict_tiled(lambda b: b, image, 4, 9, tile=32)
    assert capsys.readouterr().err == ""
    predict_tiled(lambda b: b, image, 4, 9, tile=32, progress=True)  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


def test_progress_overwrites_on_a_terminal_and_prints_periodic_lines_in_a_log():
    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    now = [0.0]
    terminal = Stream(True)
    meter = _Progress(3, stream=terminal, clock=lambda: now[0])
    for done in (1, 2, 3):
        now[0] += 1
        meter.update(done)
    text = terminal.getvalue()
    assert text.startswith("\rtiles 1/3") and text.endswith("\rtiles 3/3  elapsed 3.0 s  left 0.0 s\n")
    now[0], log = 0.0, Stream(False)
    meter = _Progress(100, every=60, stream=log, clock=lambda: now[0])
    for done in range(1, 101):
        now[0] += 5  # 500 s in all: a line after 60, 120, ... 480 s
        meter.update(done)
    lines = log.getvalue().splitlines()
    assert len(lines) == 8 and lines[0] == "tiles 12/100  elapsed 60.0 s  left 440.0 s"
