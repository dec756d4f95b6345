"""train.py and test_single.py as a user runs them: results, and one-line errors with exit 2."""

import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from n2s_tf import io
from n2s_tf.export import export_model
from n2s_tf.networks import build_network

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, cwd=None):
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True,
                            text=True, cwd=cwd or ROOT, timeout=300)
    return result


def assert_user_error(result, words):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr[-2000:]


@pytest.mark.parametrize("args,words", [
    (["--model=n3s"], "--model='n3s' is not one of"),
    (["--network=vgg"], "--network='vgg' is not one of"),
    (["--masking=zeros"], "--masking='zeros' is not one of"),
    (["--patch_size=30"], "multiple of the network's stride"),
    (["--patch_size=1024"], "is smaller than --patch_size 1024,1024"),
    (["--bogus=1"], "bogus"),
    (["--model=n2n", "--data=/nonexistent_dir", "--patch_size=64"], "needs --target"),
    (["--data=/nonexistent_dir/*.mrc"], "nonexistent_dir"),
    (["--strategy=tpu"], "--strategy='tpu' is not one of"),
    (["--network_args=colour=1"], "--network_args"),
    (["--network_args=depth=-1"], "--network_args"),
    (["--model=n2t", "--noise=0.1,high"], "--noise='0.1,high' must be positive numbers"),
    (["--model=n2s", "--noise=0.1,1"], "needs --model=n2t"),
    (["--init=/nonexistent_dir"], "--init: no exported n2s_tf model"),
    (["--init=n2s_tf/models/general", "--network_args=depth=3"], "pass its --network and --network_args"),
    (["--batch_size=0"], "--batch_size must be at least 1, got 0"),
    (["--lr=nan"], "--lr must be a positive number, got nan"),
])
def test_train_rejects_bad_flags_in_one_line(tmp_path, args, words):
    assert_user_error(run("train.py", f"--model_dir={tmp_path / 'run'}", "--steps=2", *args), words)


def test_denoise_png_and_refuse_overwrites(tmp_path, tiny_export):
    noisy = (np.random.default_rng(0).normal(128, 20, (45, 61))).clip(0, 255).astype(np.uint8)
    io.write_image(str(tmp_path / "in.png"), noisy[..., None].astype(np.float32))
    result = run("test_single.py", f"--input={tmp_path / 'in.png'}", f"--output={tmp_path / 'out.tif'}",
                 f"--model={tiny_export}", f"--preview={tmp_path / 'view.png'}")
    assert result.returncode == 0, result.stderr[-2000:]
    out = io.read_image(str(tmp_path / "out.tif")).data
    assert out.shape == (45, 61, 1) and out.dtype == np.float32
    assert os.path.exists(tmp_path / "view.png")
    # Adaptation fine-tunes a copy of the model on the input first: a different result.
    result = run("test_single.py", f"--input={tmp_path / 'in.png'}", f"--output={tmp_path / 'adapted.tif'}",
                 f"--model={tiny_export}", "--adapt_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    adapted = io.read_image(str(tmp_path / "adapted.tif")).data
    assert adapted.shape == out.shape and not np.allclose(adapted, out)
    # Calibration mixes prediction and input per Fourier ring: another, finite result.
    result = run("test_single.py", f"--input={tmp_path / 'in.png'}", f"--output={tmp_path / 'calibrated.tif'}",
                 f"--model={tiny_export}", "--calibrate")
    assert result.returncode == 0, result.stderr[-2000:]
    calibrated = io.read_image(str(tmp_path / "calibrated.tif")).data
    assert calibrated.shape == out.shape and np.isfinite(calibrated).all() and not np.allclose(calibrated, out)
    assert_user_error(run("test_single.py", f"--input={tmp_path / 'in.png'}", f"--output={tmp_path / 'out.tif'}",
                          f"--model={tiny_export}"), "exists")
    assert_user_error(run("test_single.py", f"--input={tmp_path / 'in.png'}", f"--output={tmp_path / 'in.png'}",
                          f"--model={tiny_export}"), "overwrite its input")
    assert_user_error(run("test_single.py", f"--input={tmp_path / 'missing.png'}", f"--model={tiny_export}"),
                      "missing.png")
    assert_user_error(run("test_single.py", f"--input={tmp_path / 'in.png'}", f"--model={tmp_path}"),
                      "no exported n2s_tf model")


def test_denoise_many_mrc_keeps_headers(tmp_path, tiny_export):
    (tmp_path / "mics").mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.mrc", "b.mrc"):
        with mrcfile.new(str(tmp_path / "mics" / name)) as mrc:
            mrc.set_data(rng.integers(0, 4000, (40, 52)).astype(np.uint16))
            mrc.voxel_size = 0.854
            mrc.header.origin = (1.0, 2.0, 3.0)
    result = run("test_single.py", f"--input={tmp_path / 'mics' / '*.mrc'}", f"--output={tmp_path / 'out'}/",
                 f"--model={tiny_export}", "--tta")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("a.mrc", "b.mrc"):
        with mrcfile.open(str(tmp_path / "out" / name)) as mrc:
            assert mrc.data.dtype == np.float32 and mrc.data.shape == (40, 52)
            np.testing.assert_allclose(mrc.voxel_size.x, 0.854, rtol=1e-6)
            assert tuple(mrc.header.origin.item()) == (1.0, 2.0, 3.0)
            assert abs(float(mrc.header.dmean) - float(mrc.data.mean())) < 1e-3 * float(mrc.data.std())
        assert mrcfile.validate(str(tmp_path / "out" / name), print_file=open(os.devnull, "w"))


def test_default_run_denoises_the_shipped_example(tmp_path):
    """With no flags, test_single.py denoises the shipped example with the shipped model."""
    if not os.path.isdir(os.path.join(ROOT, "n2s_tf", "models", "general")):
        pytest.fail("n2s_tf/models/general is missing: the package must ship a default model")
    result = run("test_single.py", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "noisy_camera_denoised.png"
    assert out.exists() and str(out) in result.stdout
    # The example is camera at sigma 25, clipped to 8 bits; the threshold sits under the shipped
    # general model's score on it (its card in trained_models/README.md) and far above the noisy input.
    from skimage import data as skdata
    from skimage import io as skio

    from n2s_tf.metrics import psnr
    assert psnr(skdata.camera().astype(float), skio.imread(out).astype(float), data_range=255) > 28.8


def test_collaborative_filtering_lifts_the_shipped_example(tmp_path):
    """--collaborative runs the collaborative filtering after the general model: on the shipped
    example (its default output about 29.4 dB, trained_models/README.md) it adds about 0.25 dB."""
    result = run("test_single.py", "--collaborative", f"--output={tmp_path / 'out.png'}", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    from skimage import data as skdata
    from skimage import io as skio

    from n2s_tf.metrics import psnr
    assert psnr(skdata.camera().astype(float), skio.imread(tmp_path / "out.png").astype(float), data_range=255) > 29.5


def _supervised_export(tmp_path, residual):
    network = build_network("unet", depth=1, base_filters=4, residual=residual)
    meta = {"ndim": 2, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
            "method": "n2t", "network": "unet", "steps": 0}
    return export_model(network, meta, str(tmp_path / f"residual_{residual}"))


@pytest.mark.parametrize("residual", [False, True])
def test_adapting_a_supervised_model_warns_and_a_residual_one_is_refused(tmp_path, residual):
    image = tmp_path / "noise.png"
    from skimage import io as skio
    skio.imsave(image, np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8), check_contrast=False)
    model = _supervised_export(tmp_path, residual)
    result = run("test_single.py", f"--input={image}", f"--model={model}", "--adapt_steps=1", cwd=str(tmp_path))
    if residual:
        assert_user_error(result, "adds its input to its output")
        assert not (tmp_path / "noise_denoised.png").exists()
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert "warning: --adapt_steps fine-tunes self-supervised" in result.stderr


def test_3d_noise2noise_from_even_odd_halves_end_to_end(tmp_path):
    """Volumes: n2n trained on even/odd halves paired by name, then both halves denoised and averaged."""
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:12, :24, :28]
    for half in ("even", "odd"):
        (tmp_path / half).mkdir()
    for name in ("t1", "t2"):
        clean = np.sin(xx / 3.0) + np.cos(yy / 4.0) + zz / 6.0
        for half in ("even", "odd"):
            with mrcfile.new(str(tmp_path / half / f"{name}.rec")) as mrc:
                mrc.set_data((clean + rng.normal(0, 1, clean.shape)).astype(np.float32))
                mrc.voxel_size = 5.0
    result = run("train.py", "--model=n2n", f"--data={tmp_path / 'even'}", f"--target={tmp_path / 'odd'}",
                 "--patch_size=8,16,16", "--batch_size=2", "--steps=3", "--checkpoint_every=3",
                 "--network_args=depth=1,base_filters=4", f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run("test_single.py", f"--input={tmp_path / 'even'}", f"--input_b={tmp_path / 'odd'}",
                 f"--output={tmp_path / 'out'}/", f"--model={tmp_path / 'run'}", "--tile=16")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("t1", "t2"):
        with mrcfile.open(str(tmp_path / "out" / f"{name}.rec")) as mrc:
            assert mrc.data.shape == (12, 24, 28) and mrc.header.ispg == 1
            np.testing.assert_allclose(mrc.voxel_size.x, 5.0)
            assert np.all(np.isfinite(mrc.data))
    # The halves are calibrated against each other by default, as n2s_tf.denoise_halves does.
    import n2s_tf

    halves = [mrcfile.read(str(tmp_path / half / "t1.rec")) for half in ("even", "odd")]
    model = n2s_tf.load_model(str(tmp_path / "run"))
    calibrated = n2s_tf.denoise_halves(*halves, model, tile=16)
    plain = n2s_tf.denoise_halves(*halves, model, tile=16, calibrate=False)
    np.testing.assert_allclose(mrcfile.read(str(tmp_path / "out" / "t1.rec")), calibrated, atol=1e-4)
    assert not np.allclose(calibrated, plain, atol=1e-3)
    result = run("test_single.py", f"--input={tmp_path / 'even' / 't1.rec'}", f"--input_b={tmp_path / 'odd'}",
                 f"--output={tmp_path / 'plain.rec'}", f"--model={tmp_path / 'run'}", "--tile=16",
                 "--nocalibrate_halves")
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(mrcfile.read(str(tmp_path / "plain.rec")), plain, atol=1e-4)


def test_training_on_an_image_stack(tmp_path):
    with mrcfile.new(str(tmp_path / "stack.mrcs")) as mrc:
        mrc.set_data(np.random.default_rng(4).normal(size=(3, 32, 40)).astype(np.float32))
    result = run("train.py", "--model=n2v", f"--data={tmp_path / 'stack.mrcs'}", "--patch_size=16",
                 "--batch_size=2", "--steps=2", "--network_args=depth=1,base_filters=4",
                 f"--model_dir={tmp_path / 'run'}", "--export=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 training image(s)" in result.stderr


def test_mrc_halves_get_the_shipped_noise2noise_model(tmp_path):
    rng = np.random.default_rng(8)
    clean = rng.normal(0, 1, (64, 72)).astype(np.float32)
    for half in ("even", "odd"):
        (tmp_path / half).mkdir()
        with mrcfile.new(str(tmp_path / half / "m.mrc")) as mrc:
            mrc.set_data(clean + rng.normal(0, 2, clean.shape).astype(np.float32))
    result = run("test_single.py", f"--input={tmp_path / 'even' / 'm.mrc'}", f"--input_b={tmp_path / 'odd'}",
                 f"--output={tmp_path / 'm_dn.mrc'}")
    assert result.returncode == 0, result.stderr[-3000:]
    model_line = next(line for line in result.stderr.splitlines() if line.startswith("model:"))
    assert os.sep + "cryoem_n2n" + os.sep in model_line, model_line
    assert mrcfile.read(str(tmp_path / "m_dn.mrc")).shape == (64, 72)


def test_mrc_volumes_get_the_shipped_tomogram_model(tmp_path):
    from n2s_tf import api

    rng = np.random.default_rng(9)
    volume = rng.normal(0, 1, (16, 48, 40)).astype(np.float32)
    with mrcfile.new(str(tmp_path / "t.mrc")) as mrc:
        mrc.set_data(volume)
        mrc.set_volume()
        mrc.voxel_size = 7.5
    with mrcfile.new(str(tmp_path / "stack.mrc")) as mrc:
        mrc.set_data(volume)
        mrc.set_image_stack()
    tomogram = os.path.join("models", "cryoet_n2n")
    assert api.default_model_path(str(tmp_path / "t.mrc")).endswith(tomogram)
    micrograph = os.path.join("models", "cryoem_n2n")
    assert api.default_model_path(str(tmp_path / "stack.mrc")).endswith(micrograph)
    assert api.default_model_path(str(tmp_path / "missing.rec")).endswith(micrograph)

    # The single-tomogram route as the README gives it: no halves, no --model.
    result = run("test_single.py", f"--input={tmp_path / 't.mrc'}", f"--output={tmp_path / 't_dn.rec'}")
    assert result.returncode == 0, result.stderr[-3000:]
    model_line = next(line for line in result.stderr.splitlines() if line.startswith("model:"))
    assert os.sep + "cryoet_n2n" + os.sep in model_line, model_line
    with mrcfile.open(str(tmp_path / "t_dn.rec")) as mrc:
        assert mrc.data.shape == volume.shape and mrc.is_volume()
        assert float(mrc.voxel_size.x) == pytest.approx(7.5)
