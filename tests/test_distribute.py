"""One device and two logical CPU devices make the same update on the same global batch.

Each case runs in a fresh process: the CPU must be split into logical devices before
TensorFlow initializes, which a shared pytest process has already done.
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from n2s_tf import distribute
    from n2s_tf.config import TrainConfig
    from n2s_tf.training import build_denoiser, make_optimizer

    distribute.split_cpu(2)
    model_name, network = sys.argv[1], sys.argv[2]
    config = TrainConfig(model=model_name, network=network, steps=10, pro_steps=10,
                         network_args={"base_filters": 4, "depth": 1} if network == "unet" else {"base_filters": 4},
                         patch_size=(16, 16), batch_size=4, lr=1e-2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 16, 1)).astype(np.float32)
    y = (x + rng.normal(size=x.shape)).astype(np.float32)
    batch = (x, y) if config.method.target else x
    results = {}
    for name in ("one_device", "mirrored"):
        strategy = distribute.make_strategy(name)
        tf.keras.utils.set_random_seed(1)
        with strategy.scope():
            model = build_denoiser(config, channels=1)
            model.compile(optimizer=make_optimizer(config))
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
        history = model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
        results[name] = dict(replicas=strategy.num_replicas_in_sync, loss=float(history.history["loss"][-1]),
                             weights=[w.tolist() for w in model.network.get_weights()])
    print("RESULT" + json.dumps(results))
""")


@pytest.mark.parametrize("model,network", [("n2s", "unet"), ("n2sp", "unet"), ("n2v", "unet"),
                                           ("n2t", "encoder_decoder")])
def test_one_and_two_devices_make_the_same_update(model, network):
    run = subprocess.run([sys.executable, "-c", SCRIPT, model, network], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(s for s in run.stdout.splitlines() if s.startswith("RESULT"))
    results = json.loads(line[len("RESULT"):])
    one, two = results["one_device"], results["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert abs(one["loss"] - two["loss"]) <= 1e-4 * max(1.0, abs(one["loss"]))
    import numpy as np

    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)
