"""Two local worker processes (MultiWorkerMirroredStrategy over 127.0.0.1): train, a kill
after the first checkpoint, resume, and exactly one export, written by the chief."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(args, timeout=240):
    """Start both workers with their TF_CONFIG; return their (returncode, stderr)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        task = {"type": "worker", "index": index}
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": task}))
        command = [sys.executable, os.path.join(ROOT, "train.py"), "--strategy=multi_worker", *args]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, err))
    finally:
        for proc in procs:
            proc.kill()
    return results


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mw")
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for i in range(2):
        np.save(root / "data" / f"img{i}.npy", rng.normal(size=(48, 48, 1)).astype(np.float32))
    return root


def test_two_workers_train_resume_and_export_once(data_dir):
    model_dir = data_dir / "run"
    common = [f"--data={data_dir / 'data'}", "--model=n2s", "--patch_size=16", "--batch_size=4",
              "--network_args=depth=1,base_filters=4", "--checkpoint_every=2", f"--model_dir={model_dir}"]
    # First run stops after step 2 (as if killed right after its checkpoint), without export.
    for code, err in run_workers(common + ["--steps=2", "--export=false"]):
        assert code == 0, err[-3000:]
    assert os.path.exists(model_dir / "checkpoints" / "checkpoint")
    results = run_workers(common + ["--steps=4", "--resume"])
    for code, err in results:
        assert code == 0, err[-3000:]
    chief_log = results[0][1]
    assert "resuming at step 2 of 4" in chief_log and "2 replica(s)" in chief_log
    assert "step 4/4" in chief_log
    assert "resuming at" not in results[1][1]  # only the chief reports
    exports = os.listdir(model_dir / "export" / "denoiser")
    assert exports == ["1"]
    meta = json.load(open(model_dir / "export" / "denoiser" / "1" / "assets" / "n2s_tf.json"))
    assert meta["steps"] == 4
