"""The one trainer: every method trains, resumes exactly, and exports a usable model."""

import dataclasses
import json

import numpy as np
import pytest

from n2s_tf import data as data_lib
from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError
from n2s_tf.export import LoadedModel
from n2s_tf.finetune import load_initial_weights
from n2s_tf.networks import build_network
from n2s_tf.run import train

TINY = dict(network="unet", network_args={"depth": 1, "base_filters": 4}, patch_size=(16, 16),
            batch_size=2, checkpoint_every=2, lr=1e-3)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two small noisy halves of the same smooth images, plus their clean version."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "clean"):
        (root / name).mkdir()
    yy, xx = np.mgrid[:40, :48]
    for i in range(2):
        clean = (np.sin(xx / (4 + i)) + np.cos(yy / 5)).astype(np.float32)[..., None] * 50 + 100
        np.save(root / "clean" / f"img{i}.npy", clean)
        for half in ("a", "b"):
            np.save(root / half / f"img{i}.npy", clean + rng.normal(0, 20, clean.shape).astype(np.float32))
    return root


def _config(tmp_path, folders, **overrides):
    values = dict(TINY, model_dir=str(tmp_path / "run"), data=str(folders / "a"), steps=4)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("model", ["n2s", "n2sp", "n2v", "n2v2", "n2n", "n2t"])
def test_every_method_trains_and_exports(tmp_path, folders, model):
    target = {"n2n": folders / "b", "n2t": folders / "clean"}.get(model)
    config = _config(tmp_path, folders, model=model, target=str(target) if target else None,
                     clean=str(folders / "clean"), pro_steps=2)
    result = train(config)
    losses = [h["loss"] for h in result["history"] if "loss" in h]
    assert losses and np.all(np.isfinite(losses))
    assert any("val_psnr" in h for h in result["history"])
    loaded = LoadedModel(result["export_dir"])
    assert loaded.metadata["method"] == model and loaded.metadata["steps"] == 4
    image = np.load(folders / "a" / "img0.npy")[None, :37, :45]
    out = loaded.serve(image)
    assert out.shape == image.shape and np.all(np.isfinite(out))


@pytest.mark.parametrize("model", ["n2v", "n2s"])
def test_structured_blind_spots_train(tmp_path, folders, model):
    result = train(_config(tmp_path, folders, model=model, mask_span=1))
    losses = [h["loss"] for h in result["history"] if "loss" in h]
    assert losses and np.all(np.isfinite(losses))
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["mask_span"] == 1
    # It learned to leave the correlated neighbours out, so nothing whitens its input.
    assert LoadedModel(result["export_dir"]).metadata["serving_whiten"] == "off"


def test_n2t_learns_from_clean_images_with_synthetic_noise(tmp_path, folders):
    config = _config(tmp_path, folders, model="n2t", data=str(folders / "clean"), noise=(0.1, 2.0))
    result = train(config)
    losses = [h["loss"] for h in result["history"] if "loss" in h]
    assert losses and np.all(np.isfinite(losses))
    assert LoadedModel(result["export_dir"]).metadata["method"] == "n2t"
    saved = TrainConfig.from_json(open(tmp_path / "run" / "config.json").read())
    assert saved.noise == (0.1, 2.0)
    # Every network option is recorded, the defaults too: a later default does not change it.
    assert saved.network_args == dict(TINY["network_args"], kernel_size=3, batch_norm=False, n2v2=False,
                                      residual=False, nonlocal_window=0, nonlocal_level=2)


def test_synthetic_noise_against_a_hand_computed_patch():
    clean = np.array([[[1.0], [-1.0]], [[0.5], [-0.5]]], np.float32)
    noisy, target = data_lib.add_synthetic_noise(np.random.default_rng(5), clean, (0.3, 0.3))
    # One std, r = 0.3: both are divided by the noisy image's std sqrt(1 + 0.09).
    draws = np.random.default_rng(5)
    draws.uniform()  # the log-uniform draw of r, fixed here since low == high
    expected_noise = 0.3 * draws.standard_normal(clean.shape, dtype=np.float32)
    np.testing.assert_allclose(target, clean / np.sqrt(1.09), rtol=1e-6)
    np.testing.assert_allclose(noisy, (clean + expected_noise) / np.sqrt(1.09), rtol=1e-5)


def test_synthetic_noise_levels_span_the_range_log_uniformly():
    rng = np.random.default_rng(0)
    clean = np.where(np.indices((8, 8)).sum(0) % 2, 1.0, -1.0).astype(np.float32)[..., None]
    levels = []
    for _ in range(400):
        noisy, target = data_lib.add_synthetic_noise(rng, clean, (0.1, 10.0))
        scale = float(np.abs(target).max())  # 1 / sqrt(1 + r^2)
        levels.append(np.sqrt(1 / scale**2 - 1))
        np.testing.assert_allclose(np.std((noisy - target) / scale), levels[-1], rtol=0.5)
    logs = np.log10(levels)
    assert -1.05 < logs.min() < -0.85 and 0.85 < logs.max() < 1.05
    assert abs(np.median(logs)) < 0.15  # log-uniform: the median of r is sqrt(low * high) = 1


def test_n2sp_switches_to_learned_sigma(tmp_path, folders):
    """Before switch_step the loss is Noise2Same's rec + lmbd sqrt(inv); from it on,
    Noise2SamePro's rec + 2 sqrt(rec) sqrt(inv). lmbd = 5 makes the two differ."""
    import tensorflow as tf

    from n2s_tf.training import build_denoiser, make_optimizer

    config = _config(tmp_path, folders, model="n2sp", steps=10, pro_steps=4, lmbd=5.0)
    assert config.switch_step == 6
    model = build_denoiser(config, channels=1)
    model.compile(optimizer=make_optimizer(config))
    model.optimizer.build(model.network.trainable_variables)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 16, 16, 1)), tf.float32)
    for step, learned in [(0, False), (5, False), (6, True), (9, True)]:
        model.optimizer.iterations.assign(step)
        loss, parts = model.compute_method_loss(x, training=False)
        rec, inv = float(parts["rec"]), float(parts["inv"])
        assert inv > 0
        expected = rec + (2 * np.sqrt(rec) if learned else 5.0) * np.sqrt(inv)
        assert float(loss) == pytest.approx(expected, rel=1e-5), step
        assert float(parts["sigma"]) == pytest.approx(np.sqrt(rec), rel=1e-5)
    history = train(_config(tmp_path, folders, model="n2sp", steps=4, pro_steps=2), export=False)["history"]
    assert all(np.isfinite(h["sigma"]) for h in history if "sigma" in h)


def test_resume_repeats_the_uninterrupted_run(tmp_path, folders):
    whole = train(_config(tmp_path / "whole", folders, model="n2s", steps=4), export=False)["model"]
    # A run "killed" after its step-2 checkpoint, then resumed with the same flags.
    train(_config(tmp_path / "split", folders, model="n2s", steps=2), export=False)
    resumed = train(_config(tmp_path / "split", folders, model="n2s", steps=4, resume=True), export=False)
    assert int(resumed["model"].optimizer.iterations) == 4
    for a, b in zip(whole.network.get_weights(), resumed["model"].network.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    saved = json.load(open(tmp_path / "split" / "run" / "config.json"))
    assert saved["model"] == "n2s" and saved["steps"] == 4


def test_resume_refuses_other_flags_and_fresh_runs_refuse_old_dirs(tmp_path, folders):
    train(_config(tmp_path, folders, model="n2s", steps=2), export=False)
    with pytest.raises(ConfigError, match="flags differ"):
        train(_config(tmp_path, folders, model="n2v", steps=4, resume=True), export=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_config(tmp_path, folders, model="n2s", steps=4), export=False)


def test_init_starts_from_an_exported_models_weights(tmp_path, folders):
    first = train(_config(tmp_path / "first", folders, model="n2s", steps=2))
    trained = LoadedModel(first["export_dir"]).keras_network().trainable_weights
    # A tiny rate: after one step the weights are still the exported ones, not random ones.
    second = train(_config(tmp_path / "second", folders, model="n2t", data=str(folders / "clean"),
                           noise=(0.1, 1.0), steps=1, lr=1e-12, init=first["model_dir"]), export=False)
    for a, b in zip(trained, second["model"].network.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # More base filters: the exported network is copied into the wider one, same function.
    wider = dict(TINY["network_args"], base_filters=6)
    grown = build_network("unet", **wider)
    load_initial_weights(grown, _config(tmp_path / "wider", folders, model="n2s", network_args=wider,
                                        init=first["model_dir"]))
    x = np.load(folders / "a" / "img0.npy")[None, :32, :32]
    np.testing.assert_allclose(grown(x), LoadedModel(first["export_dir"]).keras_network()(x), atol=1e-4)
    # An added attention block starts as the identity: the same function again.
    attending = dict(TINY["network_args"], nonlocal_window=3, nonlocal_level=1)
    grown = build_network("unet", **attending)
    load_initial_weights(grown, _config(tmp_path / "attending", folders, model="n2s", network_args=attending,
                                        init=first["model_dir"]))
    np.testing.assert_allclose(grown(x), LoadedModel(first["export_dir"]).keras_network()(x), atol=1e-4)
    other = dict(TINY["network_args"], depth=2)
    with pytest.raises(ConfigError, match="pass its --network and --network_args"):
        train(_config(tmp_path / "third", folders, model="n2s", network_args=other, init=first["model_dir"]))
    with pytest.raises(ConfigError, match="base_filters may be larger"):  # narrower: no
        train(_config(tmp_path / "fifth", folders, model="n2s", network_args=dict(TINY["network_args"], base_filters=2),
                      init=first["model_dir"]))
    with pytest.raises(ConfigError, match="--init: no exported n2s_tf model"):
        train(_config(tmp_path / "fourth", folders, model="n2s", init=str(tmp_path / "none")))


def test_the_shipped_models_start_a_run_with_default_flags():
    # --init=n2s_tf/models/<name> without --network_args: the run takes the model's own network
    # options (defaults that changed since its export included), and its weights load.
    from n2s_tf import api
    from n2s_tf.finetune import init_network_args

    for name in ("cryoem", "cryoem_n2n", "cryoet_n2n", "general"):
        model = LoadedModel(str(api.SHIPPED_MODELS / name))
        spatial = (16, 32, 32) if model.metadata["ndim"] == 3 else (64, 64)
        config = TrainConfig(model=model.metadata["method"], network=model.metadata["network"], init=model.path,
                             ndim=len(spatial), patch_size=spatial)
        args = init_network_args(config)
        assert args == model.keras_network().network_args
        network = build_network(model.metadata["network"], ndim=config.ndim, **args)
        load_initial_weights(network, dataclasses.replace(config, network_args=args))
        x = np.random.default_rng(0).normal(size=(1, *spatial, 1)).astype(np.float32)
        np.testing.assert_allclose(network(x), model.keras_network()(x), atol=1e-5)
    # Another kind of network inherits nothing, and --init then says what is wrong.
    assert init_network_args(dataclasses.replace(config, network="resunet")) == {}


def test_impossible_combinations_are_config_errors(tmp_path, folders):
    with pytest.raises(ConfigError, match="needs --target"):
        _config(tmp_path, folders, model="n2n").validate()
    with pytest.raises(ConfigError, match="multiple of the network's stride"):
        _config(tmp_path, folders, patch_size=(18, 18)).validate(stride=4)
    with pytest.raises(ConfigError, match="not one of"):
        _config(tmp_path, folders, model="n3s").validate()
    with pytest.raises(ConfigError, match="needs --model=n2t"):
        _config(tmp_path, folders, model="n2s", noise=(0.1, 1.0)).validate()
    with pytest.raises(ConfigError, match="low <= high"):
        _config(tmp_path, folders, model="n2t", noise=(1.0, 0.1)).validate()
    with pytest.raises(ConfigError, match="drop --target and --clean"):
        _config(tmp_path, folders, model="n2t", noise=(0.1, 1.0), target=str(folders / "b")).validate()
    with pytest.raises(ConfigError, match="residual=true needs an unmasked method"):
        _config(tmp_path, folders, model="n2v", network_args={"residual": True}).validate()
    _config(tmp_path, folders, model="n2t", noise=(0.1, 1.0), network_args={"residual": True}).validate()


def test_patch_batches_are_a_function_of_seed_and_step():
    rng = np.random.default_rng(1)
    images = [rng.normal(size=(30, 40, 1)).astype(np.float32), rng.normal(size=(50, 20, 1)).astype(np.float32)]
    kwargs = dict(patch_size=(16, 16), batch_size=3, seed=7)
    first = data_lib.patch_batches(images, **kwargs)
    batches = [next(first) for _ in range(3)]
    later = next(data_lib.patch_batches(images, start_step=2, **kwargs))
    np.testing.assert_array_equal(batches[2], later)
    other_worker = next(data_lib.patch_batches(images, worker=1, **kwargs))
    assert not np.array_equal(batches[0], other_worker)
    assert batches[0].shape == (3, 16, 16, 1)


def test_pairs_share_crop_and_augmentation():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 40, 1)).astype(np.float32)
    x, y = next(data_lib.patch_batches([a], [a * 2], patch_size=(16, 16), batch_size=4, seed=3))
    np.testing.assert_allclose(y, 2 * x)


def test_standardize_uses_per_channel_stats():
    image = np.stack([np.arange(12.0).reshape(3, 4), 100 + 3 * np.arange(12.0).reshape(3, 4)], -1)
    x, (mean, std) = data_lib.standardize(image)
    np.testing.assert_allclose(x.mean(axis=(0, 1)), 0, atol=1e-6)
    np.testing.assert_allclose(x.std(axis=(0, 1)), 1, atol=1e-6)
    np.testing.assert_allclose(mean, [5.5, 116.5])


def test_demo_set_noise_level():
    noisy, clean = data_lib.demo_images("heldout")[0]
    assert noisy.shape == clean.shape and noisy.shape[-1] == 1
    assert abs(float(np.std(noisy - clean)) - 25.0) < 0.5
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((noisy - clean) ** 2))
    assert 19.9 < psnr < 20.4
