"""Tests of whitening / re-colouring: white noise untouched, correlated noise made white,
exact inversion, and tiled prediction equal to whole-image prediction through it."""

import numpy as np
import pytest
from scipy import ndimage
from test_inference import RF_2D, STRIDE_2D, tiny_unet_2d

from n2s_tf import noise, synthetic, whitening
from n2s_tf.inference import denoise_array


def test_white_noise_gets_a_flat_filter():
    x = np.random.default_rng(0).normal(size=(512, 256))
    gain = whitening.whitening_filter(noise.noise_spectrum(x), x.shape)
    assert gain.shape == (512, 129)
    low, high = np.percentile(gain, [1, 99])  # a spectrum estimated from 32 tiles
    assert 0.75 < low and high < 1.25
    assert np.median(gain) == pytest.approx(1.0, abs=0.02)


def test_known_spectrum_is_embedded_exactly():
    """A spectrum whose autocovariance is 1 at lag 0 and 0.3 at lags +-1 along X: 1 + 0.6 cos(2 pi fx)."""
    spectrum = np.ones((16, 16)) + 0.6 * np.cos(2 * np.pi * np.fft.fftfreq(16))[None, :]
    full = whitening.embed_spectrum(spectrum, (40, 50))
    taper = np.cos(np.pi / 16) ** 2  # the Hann taper at lag 1 of a 16-px tile
    expected = 1 + 0.6 * taper * np.cos(2 * np.pi * np.fft.rfftfreq(50))[None, :]
    assert np.allclose(full, np.broadcast_to(expected, (40, 26)), atol=1e-9)


@pytest.mark.parametrize("lag1", [0.3, 0.6])
def test_correlated_noise_comes_out_white(lag1):
    x = synthetic.correlated_noise((512, 512), lag1, rng=1)
    gain = whitening.whitening_filter(noise.noise_spectrum(x), x.shape)
    white = whitening.apply_filter(x, gain)
    assert noise.noise_report(x)["lag1"] > lag1 - 0.05
    # At lag 1 0.6 the noise power near Nyquist lies under the floor, which keeps some correlation.
    assert noise.noise_report(white)["lag1"] < (0.05 if lag1 < 0.5 else 0.15)
    assert white.std() == pytest.approx(x.std(), rel=0.1)


def test_recolouring_inverts_whitening_and_floor_bounds_the_gain():
    x = synthetic.correlated_noise((96, 80), 0.6, rng=2).astype(np.float32)
    spectrum = noise.noise_spectrum(x)
    gain = whitening.whitening_filter(spectrum, x.shape)
    assert gain.max() <= np.sqrt(1 / whitening.FLOOR) + 1e-5
    back = whitening.apply_filter(whitening.apply_filter(x, gain), gain, inverse=True)
    assert np.allclose(back, x, atol=1e-4)


def test_tiled_equals_whole_through_whitening():
    net = tiny_unet_2d(1)
    predict = lambda batch: net(batch, training=False).numpy()  # noqa: E731
    image = (synthetic.correlated_noise((100, 120), 0.5, rng=3)[..., None] * 3 + 7).astype(np.float32)
    whole = whitening.denoise_whitened(
        lambda x: denoise_array(predict, x, STRIDE_2D, RF_2D, tile=256), image, ndim=2)
    tiled = whitening.denoise_whitened(
        lambda x: denoise_array(predict, x, STRIDE_2D, RF_2D, tile=32), image, ndim=2)
    assert whole.shape == image.shape
    assert np.allclose(tiled, whole, atol=1e-4)
    # Identity denoiser: whitening then re-colouring gives the input back.
    same = whitening.denoise_whitened(lambda x: x, image, ndim=2)
    assert np.allclose(same, image, atol=1e-3)


def test_correlated_noise_has_the_asked_lags():
    x = synthetic.correlated_noise((256, 256), 0.6, rng=0)
    a = (1 - np.sqrt(1 - 2 * 0.36)) / 1.2  # kernel [a, 1, a]
    lags = noise.noise_report(x, low_cut=0)["lags"]
    for axis in (0, 1):
        assert lags[axis][0] == pytest.approx(0.6, abs=0.03)
        assert lags[axis][1] == pytest.approx(a**2 / (1 + 2 * a**2), abs=0.03)
    assert x.std() == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="lag1"):
        synthetic.correlated_noise((8, 8), 0.8)


@pytest.fixture(scope="module")
def blind_spot_export(tmp_path_factory):
    from n2s_tf.export import export_model
    from n2s_tf.networks import build_network

    network = build_network("unet", depth=1, base_filters=4)
    meta = {"ndim": 2, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
            "method": "n2s", "network": "unet", "steps": 0}
    base = str(tmp_path_factory.mktemp("export"))
    return export_model(network, meta, base), export_model(network, dict(meta, method="n2t"), base)


def test_api_whitens_correlated_noise_for_blind_spot_models_only(blind_spot_export):
    import n2s_tf
    from n2s_tf.errors import ConfigError

    blind, supervised = (n2s_tf.load_model(p) for p in blind_spot_export)
    correlated = (synthetic.correlated_noise((128, 128), 0.6, rng=4) * 5 + 100).astype(np.float32)
    white = (np.random.default_rng(5).normal(100, 5, (128, 128))).astype(np.float32)
    auto = n2s_tf.denoise(correlated, blind)
    assert np.array_equal(auto, n2s_tf.denoise(correlated, blind, whiten=True))
    assert not np.allclose(auto, n2s_tf.denoise(correlated, blind, whiten=False), atol=1e-3)
    assert np.array_equal(n2s_tf.denoise(white, blind), n2s_tf.denoise(white, blind, whiten=False))
    assert np.array_equal(n2s_tf.denoise(correlated, supervised), n2s_tf.denoise(correlated, supervised,
                                                                                 whiten=False))
    assert n2s_tf.denoise(np.ones((5, 5), np.float32), blind).shape == (5, 5)  # too small to measure
    small = correlated[:64, :100]  # verdict "unknown": not whitened
    assert np.array_equal(n2s_tf.denoise(small, blind), n2s_tf.denoise(small, blind, whiten=False))
    with pytest.raises(ConfigError, match="whiten"):
        n2s_tf.denoise(white, blind, whiten="yes")


def test_api_calibrates_blind_spot_models_on_white_noise_of_one_level(blind_spot_export):
    """calibrate="auto" (the default): a blind-spot model on white Gaussian noise is calibrated;
    not on counting noise over a dark background, on whitened correlated noise, on an image too
    small for a verdict, nor a supervised model."""
    import n2s_tf
    from n2s_tf.errors import ConfigError

    blind, supervised = (n2s_tf.load_model(p) for p in blind_spot_export)
    white = (np.random.default_rng(5).normal(100, 5, (128, 128))).astype(np.float32)
    assert np.array_equal(n2s_tf.denoise(white, blind), n2s_tf.denoise(white, blind, calibrate=True))
    assert not np.allclose(n2s_tf.denoise(white, blind), n2s_tf.denoise(white, blind, calibrate=False), atol=1e-3)
    assert np.array_equal(n2s_tf.denoise(white, supervised), n2s_tf.denoise(white, supervised, calibrate=False))
    spots = np.zeros((128, 128), np.float32)
    spots[16::32, 16::32] = 2000.0
    counts = np.random.default_rng(6).poisson(ndimage.gaussian_filter(spots, 3) + 0.05).astype(np.float32)
    assert noise.noise_report(counts)["verdict"] == "white" and not noise.homoscedastic(counts[..., None], 2)
    assert np.array_equal(n2s_tf.denoise(counts, blind), n2s_tf.denoise(counts, blind, calibrate=False))
    correlated = (synthetic.correlated_noise((128, 128), 0.6, rng=4) * 5 + 100).astype(np.float32)
    assert np.array_equal(n2s_tf.denoise(correlated, blind), n2s_tf.denoise(correlated, blind, calibrate=False))
    small = white[:64, :100]  # verdict "unknown"
    assert np.array_equal(n2s_tf.denoise(small, blind), n2s_tf.denoise(small, blind, calibrate=False))
    with pytest.raises(ConfigError, match="calibrate"):
        n2s_tf.denoise(white, blind, calibrate="yes")


def test_api_refines_collaboratively_when_asked_on_white_noise(blind_spot_export):
    """collaborative=True refines the prediction by collaborative filtering (n2s_tf.collaborative)
    with the noise level measured on the image, with a warning where the noise reads as
    correlated; off by default."""
    import n2s_tf
    from n2s_tf.api import refine_collaboratively
    from n2s_tf.errors import ConfigError

    supervised = n2s_tf.load_model(blind_spot_export[1])
    white = (np.random.default_rng(5).normal(100, 5, (128, 128))).astype(np.float32)
    plain = n2s_tf.denoise(white, supervised)
    assert np.array_equal(plain, n2s_tf.denoise(white, supervised, collaborative=False))
    refined = n2s_tf.denoise(white, supervised, collaborative=True)
    assert not np.allclose(refined, plain, atol=1e-3)
    reports = noise.channel_reports(white[..., None], 2)
    np.testing.assert_allclose(refined, refine_collaboratively(white[..., None], plain[..., None], reports)[..., 0],
                               atol=1e-4)
    correlated = (synthetic.correlated_noise((128, 128), 0.6, rng=4) * 5 + 100).astype(np.float32)
    with pytest.warns(UserWarning, match="collaborative filtering assumes white noise, and the noise verdict"):
        warned = n2s_tf.denoise(correlated, supervised, collaborative=True)
    assert not np.allclose(warned, n2s_tf.denoise(correlated, supervised), atol=1e-3)  # done all the same
    with pytest.raises(ConfigError, match="collaborative"):
        n2s_tf.denoise(white, supervised, collaborative="yes")


def test_collaborative_filtering_of_volumes_is_refused(tmp_path):
    import n2s_tf
    from n2s_tf.errors import ConfigError
    from n2s_tf.export import export_model
    from n2s_tf.networks import build_network

    network = build_network("unet", ndim=3, depth=1, base_filters=2)
    meta = {"ndim": 3, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
            "method": "n2t", "network": "unet", "steps": 0}
    model = n2s_tf.load_model(export_model(network, meta, str(tmp_path)))
    volume = np.random.default_rng(8).normal(100, 5, (16, 16, 16)).astype(np.float32)
    assert n2s_tf.denoise(volume, model).shape == volume.shape
    with pytest.raises(ConfigError, match="collaborative filtering works on 2D images"):
        n2s_tf.denoise(volume, model, collaborative=True)


def test_calibration_is_skipped_with_a_warning_on_correlated_noise_it_does_not_whiten(blind_spot_export):
    import warnings

    import n2s_tf

    supervised = n2s_tf.load_model(blind_spot_export[1])
    correlated = (synthetic.correlated_noise((128, 128), 0.6, rng=4) * 5 + 100).astype(np.float32)
    white = (np.random.default_rng(5).normal(100, 5, (128, 128))).astype(np.float32)
    with pytest.warns(UserWarning, match="calibration skipped: the noise is correlated"):
        skipped = n2s_tf.denoise(correlated, supervised, calibrate=True)
    assert np.array_equal(skipped, n2s_tf.denoise(correlated, supervised))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # white noise: calibrated, no warning
        calibrated = n2s_tf.denoise(white, supervised, calibrate=True)
    assert not np.allclose(calibrated, n2s_tf.denoise(white, supervised), atol=1e-3)


def test_cli_reports_noise_and_warns_when_whitening_is_off(tmp_path, blind_spot_export):
    from test_cli import run

    from n2s_tf import io

    image = (synthetic.correlated_noise((128, 128), 0.6, rng=6) * 5 + 100).astype(np.float32)
    io.write_image(str(tmp_path / "mic.tif"), image[..., None])
    result = run("test_single.py", f"--input={tmp_path / 'mic.tif'}", f"--output={tmp_path / 'out.tif'}",
                 f"--model={blind_spot_export[0]}", "--report_noise")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "noise correlated" in line or "noise white" in line]
    assert len(lines) == 2 and "mic.tif: noise correlated" in lines[0] and "residual: noise" in lines[1]
    result = run("test_single.py", f"--input={tmp_path / 'mic.tif'}", f"--output={tmp_path / 'off.tif'}",
                 f"--model={blind_spot_export[0]}", "--whiten=off")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "correlated noise (lag 1 0." in result.stderr and "--whiten=off" in result.stderr
    on, off = (io.read_image(str(tmp_path / f)).data for f in ("out.tif", "off.tif"))
    assert not np.allclose(on, off, atol=1e-3)


@pytest.mark.parametrize("shape", [(96, 80), (130, 200), (6, 40)])
def test_graph_gain_equals_numpy(shape):
    x = (synthetic.correlated_noise(shape, 0.6, rng=7) * 4 + 10).astype(np.float32)
    ones = np.ones((shape[0], shape[1] // 2 + 1))
    correlated = noise.noise_report(x)["verdict"] == "correlated" if min(shape) >= noise.MIN_TILE else False
    assert np.array_equal(whitening.graph_gain(x).numpy(), ones) != correlated  # auto follows the verdict
    if min(shape) < noise.MIN_TILE:
        return
    graph = whitening.graph_gain(x, auto=False).numpy()
    expected = whitening.whitening_filter(noise.noise_spectrum(x), shape)
    assert np.allclose(graph, expected, rtol=1e-3, atol=1e-4)
    white = np.random.default_rng(8).normal(size=shape).astype(np.float32)
    assert np.array_equal(whitening.graph_gain(white).numpy(), ones)  # auto: left alone
    back = whitening.graph_filter(whitening.graph_filter(x, graph, 10.0), graph, 10.0, inverse=True).numpy()
    assert np.allclose(back, x, atol=1e-3)


def test_graph_verdict_reads_the_spectrum_above_the_verdict_cut():
    """A photograph with white noise, whose edges make the whole spectrum's lag 1 look correlated:
    left alone in the graph as by noise_report's verdict."""
    import skimage.data

    clean = skimage.data.camera()[128:384, 128:384].astype(np.float32)
    x = clean + np.random.default_rng(7).normal(0, 15, clean.shape).astype(np.float32)
    report = noise.noise_report(x)
    assert report["lag1"] > noise.CORRELATED_LAG1 and report["verdict"] == "white"
    assert np.array_equal(whitening.graph_gain(x).numpy(), np.ones((256, 129)))


def test_serving_signature_whitens_as_api_denoise(blind_spot_export):
    import n2s_tf

    # float32: the graph TF Serving runs (on a CPU with native bfloat16 "auto" differs by its round-off).
    blind, supervised = (n2s_tf.load_model(p, precision="float32") for p in blind_spot_export)
    assert blind.metadata["serving_whiten"] == "auto" and supervised.metadata["serving_whiten"] == "off"
    image = (synthetic.correlated_noise((128, 144), 0.6, rng=9) * 5 + 100).astype(np.float32)
    served = blind.serve(image[None, ..., None])[0, ..., 0]
    assert np.allclose(served, n2s_tf.denoise(image, blind), atol=2e-3 * image.std())
    assert not np.allclose(served, n2s_tf.denoise(image, blind, whiten=False), atol=2e-3 * image.std())
    white = np.random.default_rng(10).normal(100, 5, (64, 64)).astype(np.float32)
    assert np.allclose(blind.serve(white[None, ..., None])[0, ..., 0], n2s_tf.denoise(white, blind), atol=1e-2)


def test_volumes_whiten_in_3d():
    volume = (synthetic.correlated_noise((40, 48, 56), 0.5, rng=11) + 3)[..., None].astype(np.float32)
    seen = []
    out = whitening.denoise_whitened(lambda x: seen.append(x) or x, volume, ndim=3)
    assert np.allclose(out, volume, atol=1e-3)
    assert noise.noise_report(seen[0][..., 0], low_cut=0)["lag1"] < 0.1 < noise.noise_report(volume[..., 0])["lag1"]


def test_training_on_whitened_images(tmp_path):
    # train.py --whiten=on: each --data image is whitened by its own spectrum, a 3D volume too;
    # --whiten=auto only those whose noise is correlated.
    from n2s_tf.config import TrainConfig
    from n2s_tf.data import load_training_data, standardize
    from n2s_tf.errors import ConfigError

    volume = synthetic.correlated_noise((32, 64, 64), 0.5, rng=6).astype(np.float32) * 4 + 10
    np.save(tmp_path / "tomo.npy", volume[..., None])
    config = TrainConfig(model="n2s", data=str(tmp_path / "tomo.npy"), ndim=3, patch_size=(16, 32, 32), whiten="on")
    (trained,), _, _ = load_training_data(config.validate())
    plain = load_training_data(TrainConfig(**dict(config.__dict__, whiten="off")))[0][0]
    assert noise.noise_report(plain[..., 0], 3)["lag1"] > 0.4
    assert noise.noise_report(trained[..., 0], 3)["lag1"] < 0.1
    # The same filter as denoising uses (whitening commutes with the standardization up to its scale).
    np.testing.assert_allclose(trained, standardize(whitening.whiten(plain, 3))[0], atol=1e-4)
    white = np.random.default_rng(3).normal(10, 2, (32, 64, 64)).astype(np.float32)
    np.save(tmp_path / "white.npy", white[..., None])
    auto = TrainConfig(**dict(config.__dict__, data=str(tmp_path), whiten="auto")).validate()
    (correlated_seen, white_seen), _, _ = load_training_data(auto)  # tomo.npy, white.npy
    np.testing.assert_array_equal(white_seen, standardize(white[..., None])[0])  # white: left alone
    np.testing.assert_allclose(correlated_seen, trained, atol=1e-6)
    with pytest.raises(ConfigError, match="blind-spot"):
        TrainConfig(model="n2n", data="a", target="b", whiten="on").validate()
    with pytest.raises(ConfigError, match="demo set"):
        TrainConfig(model="n2s", whiten="on").validate()
    with pytest.raises(ConfigError, match="whiten"):
        TrainConfig(model="n2s", data="a", whiten="yes").validate()


@pytest.mark.parametrize("trained", ["on", "auto"])
def test_a_model_trained_whitened_always_denoises_whitened(tmp_path, trained):
    import n2s_tf
    from n2s_tf.export import export_model
    from n2s_tf.networks import build_network

    network = build_network("unet", depth=1, base_filters=4)
    meta = {"ndim": 2, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
            "method": "n2s", "network": "unet", "steps": 0, "config": {"whiten": trained}}
    model = n2s_tf.load_model(export_model(network, meta, str(tmp_path)), precision="float32")  # as served
    white = np.random.default_rng(7).normal(100, 5, (128, 128)).astype(np.float32)  # verdict: white
    api = n2s_tf.denoise(white, model, calibrate=False)  # the serving graph does not calibrate
    # A model trained on every image whitened whitens every image (the serving graph too);
    # one trained with "auto" follows the verdict, as a model trained on raw images does.
    assert np.array_equal(api, n2s_tf.denoise(white, model, whiten=trained == "on", calibrate=False))
    assert np.array_equal(api, n2s_tf.denoise(white, model, whiten=False, calibrate=False)) == (trained == "auto")
    served = model.serve(white[None, ..., None])[0, ..., 0]
    np.testing.assert_allclose(served, api, atol=1e-3 * white.std())
