"""A run is never lost or poisoned: broken checkpoints, NaN, a full disk, SIGTERM, finished runs.

Most tests start from copies of one finished 6-step run (checkpoints at steps 2, 4, 6).
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from n2s_tf import checkpoints
from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError, ImageFileError
from n2s_tf.run import TrainingStopped, train

TINY = dict(model="n2s", network="unet", network_args={"depth": 1, "base_filters": 4}, patch_size=(16, 16),
            batch_size=2, checkpoint_every=2, lr=1e-3)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    np.save(folder / "img.npy", np.random.default_rng(0).normal(100, 20, (32, 40)).astype(np.float32))
    return folder


def _config(model_dir, data, **overrides):
    values = dict(TINY, model_dir=str(model_dir), data=str(data), steps=6)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """A 6-step run with ckpt-2, ckpt-4, ckpt-6 and no export."""
    model_dir = tmp_path_factory.mktemp("finished") / "run"
    train(_config(model_dir, data), export=False)
    return model_dir


def _copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run", tmp_path / "run" / "checkpoints"


def _checkpoint_files(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("ckpt-"))


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def test_complete_checkpoints_need_their_index_and_every_data_shard(tmp_path):
    names = ["ckpt-2.index", "ckpt-2.data-00000-of-00002", "ckpt-2.data-00001-of-00002",
             "ckpt-4.index", "ckpt-4.data-00000-of-00002",  # a shard missing
             "ckpt-6.index", "ckpt-6.data-00000-of-00001", "ckpt-6.data-stray",
             "ckpt-8.index",  # no data
             "ckpt-10.data-00000-of-00001"]  # no index
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "ckpt-12.index").write_bytes(b"")  # empty
    (tmp_path / "ckpt-12.data-00000-of-00001").write_bytes(b"x")
    assert checkpoints.complete_checkpoints(str(tmp_path)) == [str(tmp_path / "ckpt-6"), str(tmp_path / "ckpt-2")]


def test_a_garbage_index_resumes_from_the_checkpoint_files(tmp_path, finished, data, capsys):
    run_dir, folder = _copy(finished, tmp_path)
    (folder / "checkpoint").write_bytes(b"\x00 not a checkpoint state {{")
    result = train(_config(run_dir, data, steps=8, resume=True), export=False)
    err = capsys.readouterr().err
    assert "index" in err and "unreadable" in err and "resuming at step 6 of 8" in err
    assert int(result["model"].optimizer.iterations) == 8
    # The rewritten index let the manager prune as usual: the three newest are kept.
    assert _checkpoint_files(folder) == [f"ckpt-{s}.{e}" for s in (4, 6, 8) for e in ("data-00000-of-00001", "index")]
    assert tf.train.latest_checkpoint(str(folder)).endswith("ckpt-8")


def test_a_garbage_index_without_checkpoint_files_is_refused(tmp_path, finished, data):
    run_dir, folder = _copy(finished, tmp_path)
    for name in _checkpoint_files(folder):
        os.remove(folder / name)
    (folder / "checkpoint").write_text("garbage")
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        train(_config(run_dir, data, resume=True), export=False)
    assert (folder / "checkpoint").read_text() == "garbage"


def test_broken_newest_checkpoints_fall_back_and_temp_folders_go(tmp_path, finished, data, capsys):
    run_dir, folder = _copy(finished, tmp_path)
    _truncate(folder / "ckpt-6.data-00000-of-00001", 1000)  # short data: IndexError in TF
    _truncate(folder / "ckpt-4.index", 100)  # bad index: OpError in TF
    (folder / "ckpt-8_temp").mkdir()  # what a kill during a save leaves
    (folder / "ckpt-8_temp" / "part-00000-of-00001.index").write_bytes(b"x")
    result = train(_config(run_dir, data, resume=True), export=False)
    err = capsys.readouterr().err
    assert "ckpt-6 does not restore" in err and "ckpt-4 does not restore" in err
    assert "resuming from ckpt-2" in err and "resuming at step 2 of 6" in err and "removed ckpt-8_temp" in err
    assert int(result["model"].optimizer.iterations) == 6 and not (folder / "ckpt-8_temp").exists()
    # Training on overwrote the broken ones with good checkpoints.
    assert checkpoints.complete_checkpoints(str(folder))[0].endswith("ckpt-6")
    for name in ("ckpt-2", "ckpt-4"):
        _truncate(folder / f"{name}.index", 10)
    _truncate(folder / "ckpt-6.data-00000-of-00001", 10)
    with pytest.raises(ConfigError, match="no checkpoint in .* restores"):
        train(_config(run_dir, data, resume=True), export=False)


def test_nan_pixels_in_the_training_data_are_refused(tmp_path, data):
    image = np.load(data / "img.npy")
    image[3, 4] = np.nan
    image[5, 6] = np.inf
    (tmp_path / "bad").mkdir()
    np.save(tmp_path / "bad" / "img.npy", image)
    with pytest.raises(ImageFileError, match=r"img\.npy: 2 of 1280 pixels are not finite"):
        train(_config(tmp_path / "run", tmp_path / "bad"), export=False)


@pytest.mark.parametrize("field,value", [("lr", float("nan")), ("lr", float("inf")), ("lmbd", float("nan")),
                                         ("lmbd", -1.0), ("mask_fraction", float("nan")),
                                         ("lr_decay_steps", 0), ("seed", -1), ("cpu_devices", -1),
                                         ("mask_span", -1)])
def test_non_finite_and_negative_numbers_are_refused(tmp_path, data, field, value):
    with pytest.raises(ConfigError, match=f"--{field} must"):
        _config(tmp_path, data, **{field: value}).validate()


def test_mask_span_needs_a_blind_spot_method(tmp_path, data):
    with pytest.raises(ConfigError, match="--mask_span must be >= 0 and needs a blind-spot --model"):
        _config(tmp_path, data, model="n2n", mask_span=1).validate()


def test_non_finite_noise_range_is_refused(tmp_path, data):
    with pytest.raises(ConfigError, match="--noise needs two positive fractions"):
        _config(tmp_path, data, model="n2t", noise=(0.1, float("inf"))).validate()


def test_a_non_finite_loss_stops_the_run_and_the_last_checkpoint_resumes(tmp_path, data, monkeypatch):
    from n2s_tf.training import Denoiser

    original = Denoiser.compute_method_loss

    def poisoned(self, batch, training):  # the 4th step's loss (and so its gradients) is NaN
        loss, parts = original(self, batch, training)
        return tf.where(self.optimizer.iterations >= 3, tf.constant(np.nan, tf.float32), loss), parts

    monkeypatch.setattr(Denoiser, "compute_method_loss", poisoned)
    with pytest.raises(TrainingStopped, match=r"the loss became nan at step 4; the last complete checkpoint is "
                                              r".*ckpt-2 \(step 2\): continue with --resume"):
        train(_config(tmp_path / "run", data, steps=4))
    assert not (tmp_path / "run" / "export").exists()
    assert checkpoints.complete_checkpoints(str(tmp_path / "run" / "checkpoints"))[0].endswith("ckpt-2")
    monkeypatch.undo()
    result = train(_config(tmp_path / "run", data, steps=4, resume=True))
    assert result["export_dir"] and all(np.isfinite(w).all() for w in result["model"].network.get_weights())


def test_non_finite_weights_are_never_exported(tmp_path):
    from n2s_tf.networks import build_network
    from n2s_tf.run import _export

    network = build_network("unet", depth=1, base_filters=4)
    weights = network.get_weights()
    weights[0][0] = np.nan
    network.set_weights(weights)
    with pytest.raises(TrainingStopped, match="not finite: no export written"):
        _export(network, {"steps": 3}, str(tmp_path / "export"), manager=None)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("error", [
    tf.errors.ResourceExhaustedError(None, None, "ckpt-4_temp/part-00000-of-00001.data; No space left on device"),
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
])
def test_a_full_disk_names_the_last_complete_checkpoint(tmp_path, data, monkeypatch, error):
    original = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 4:
            os.makedirs(os.path.join(self.directory, "ckpt-4_temp"))  # what the failed write leaves
            raise error
        return original(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    with pytest.raises(TrainingStopped, match=r"could not write the checkpoint of step 4 .*No space left on device.*; "
                                              r"the last complete checkpoint is .*ckpt-2 \(step 2\)"):
        train(_config(tmp_path / "run", data, steps=4))
    folder = tmp_path / "run" / "checkpoints"
    assert not (folder / "ckpt-4_temp").exists() and not (tmp_path / "run" / "export").exists()
    assert tf.train.latest_checkpoint(str(folder)).endswith("ckpt-2")


def test_resuming_a_finished_run(tmp_path, finished, data, capsys):
    run_dir, _ = _copy(finished, tmp_path)
    with pytest.raises(ConfigError, match="--steps=4 is below step 6, which the run in .* already reached"):
        train(_config(run_dir, data, steps=4, resume=True))
    assert TrainConfig.from_json((run_dir / "config.json").read_text()).steps == 6
    # At --steps: nothing to train; exported once (it had no export), then never again.
    first = train(_config(run_dir, data, resume=True))
    second = train(_config(run_dir, data, resume=True))
    err = capsys.readouterr().err
    assert err.count("already at step 6 of 6: nothing to train") == 2 and "its export is in" in err
    assert first["export_dir"] and second["export_dir"] is None
    assert os.listdir(run_dir / "export" / "denoiser") == ["1"]


def test_adapt_names_its_own_arguments():
    from n2s_tf.adapt import adapt
    from n2s_tf.networks import build_network

    network = build_network("unet", depth=1, base_filters=4)
    image = np.zeros((16, 16, 1), np.float32)
    with pytest.raises(ConfigError, match=r"^adapt_method='foo' is not one of: n2s, n2sp, n2v, n2v2"):
        adapt(network, [image], method="foo")
    with pytest.raises(ConfigError, match=r"^adapt_steps must be .*got -3"):
        adapt(network, [image], steps=-3)
    residual = build_network("unet", depth=1, base_filters=4, residual=True)
    with pytest.raises(ConfigError, match="adds its input to its output"):
        adapt(residual, [image], steps=1)


def test_sigterm_stops_training_cleanly_and_resumably(tmp_path, data):
    model_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), "--model=n2s", f"--data={data}", "--patch_size=16",
         "--batch_size=2", "--steps=100000", "--checkpoint_every=2", "--network_args=depth=1,base_filters=4",
         f"--model_dir={model_dir}"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    # The index is written last, once the first checkpoint is complete.
    while not (model_dir / "checkpoints" / "checkpoint").exists() and time.time() < deadline:
        assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("terminated: at step ")], err[-2000:]
    assert "the last complete checkpoint is" in err and "continue with --resume" in err
    assert checkpoints.complete_checkpoints(str(model_dir / "checkpoints"))
