"""Run the benchmark's peers (CAREamics Noise2Void, Topaz-Denoise) in their own virtual environment.

The peers need PyTorch, which must never enter n2s_tf's environment, so each peer is a script in
bench/peer_runners/ run by the python of <repo>/.peers-venv; it reports a JSON file.
ensure_peers_venv() builds that environment on first use:
- torch 2.13.0, a CPU build that lies on this machine's disk (PyPI's default build is multi-GB CUDA);
- careamics 0.3.5 and topaz-em 0.3.20 without their declared requirements, then those requirements
  minus torch and torchvision, with torch pinned. careamics caps torchvision at 0.26 (torch 2.11,
  CUDA builds only), and PyPI's torchvision for torch 2.13 cannot load against a CPU torch. Neither
  Noise2Void nor Topaz's denoiser uses torchvision (careamics_n2v.py explains its stand-in).
"""

import functools
import json
import os
import subprocess
import sys
import tempfile

from n2s_tf.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_VENV = os.path.join(ROOT, ".peers-venv")
RUNNERS = os.path.join(ROOT, "bench", "peer_runners")
TORCH = "2.13.0"
PEERS = ["careamics==0.3.5", "topaz-em==0.3.20"]
# careamics 0.3.5's requirements without torch and torchvision, then topaz-em's denoising ones.
REQUIREMENTS = [
    "bioimageio-core>=0.9.0,<=0.11.0", "lightning>=2.2,<=2.6.6,!=2.6.2,!=2.6.3", "matplotlib<=3.11.2",
    "microssim<=0.0.5", "numpy>=1.21,<=2.4.6", "pillow<=13.0.0", "psutil<=7.2.2", "pydantic>=2.11,<=2.14.1",
    "pyyaml<=6.0.3,!=6.0.0", "scikit-image<=0.26.0", "tifffile<=2026.3.3", "torchmetrics>0.7.0,<1.9.0",
    "zarr>=3.0.0,<4.0.0",
    "tqdm", "h5py", "pandas", "scikit-learn", "scipy", "future",
    "setuptools<82",  # topaz loads its pretrained weights with pkg_resources; setuptools 84 has none
]
# Importing both runners imports everything they need; the torch build must be the pinned one.
CHECK = (f"import sys; sys.path.insert(0, {RUNNERS!r}); import careamics_n2v, topaz_denoise, torch; "
         f"sys.exit(torch.__version__.split('+')[0] != {TORCH!r})")


@functools.cache
def ensure_peers_venv(path=PEERS_VENV):
    """The peers venv's python; (re)builds the venv at `path` from scratch if it is missing or fails CHECK."""
    python = os.path.join(path, "bin", "python")
    if os.path.exists(python) and subprocess.run([python, "-c", CHECK], capture_output=True).returncode == 0:
        return python
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, "pyvenv.cfg")):
        raise ConfigError(f"{path} exists and is not a virtual environment; move it away")
    log = os.path.join(tempfile.gettempdir(), "n2s_tf_peers_venv.log")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as pin, open(log, "w") as log_file:
        pin.write(f"torch=={TORCH}\n")
        pin.flush()
        steps = [("create the venv", [sys.executable, "-m", "venv", "--clear", path]),
                 (f"install torch {TORCH} (CPU)", pip + ["-c", pin.name, f"torch=={TORCH}"]),
                 ("install " + ", ".join(PEERS), pip + ["--no-deps"] + PEERS),
                 ("install their requirements", pip + ["-c", pin.name] + REQUIREMENTS),
                 ("check the imports", [python, "-c", CHECK])]
        for i, (name, command) in enumerate(steps, 1):
            print(f"peers venv {path}: step {i}/{len(steps)}: {name}", file=sys.stderr, flush=True)
            log_file.write(f"\n$ {' '.join(command)}\n")
            log_file.flush()
            if subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT).returncode:
                raise ConfigError(f"peers venv: could not {name}; see {log}")
    return python


def run_peer(runner, **kwargs):
    """Run bench/peer_runners/<runner>.py in the peers venv with --key=value args; its result JSON.

    The runner's output streams to stderr. kwargs["result"] is the JSON's path (a temporary file
    if not given). Torch gets one thread per CPU core.
    """
    python = ensure_peers_venv()
    threads = str(len(os.sched_getaffinity(0)))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with tempfile.TemporaryDirectory(prefix="peer_") as work:
        kwargs.setdefault("result", os.path.join(work, "result.json"))
        command = [python, os.path.join(RUNNERS, f"{runner}.py")] + [f"--{k}={v}" for k, v in kwargs.items()]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        last = ""
        for line in process.stdout:
            sys.stderr.write(line)
            last = line.strip() or last
        if process.wait():
            raise ConfigError(f"peer {runner} failed (exit {process.returncode}): {last}")
        with open(kwargs["result"]) as f:
            return json.load(f)
