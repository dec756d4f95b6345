"""Run the benchmark's peers (CAREamics Noise2Void, Topaz-Denoise, cryoCARE) in their own virtual environments.

The peers need PyTorch, which must never enter n2s_tf's environment, so each peer is a script in
bench/peer_runners/ run by the python of <repo>/.peers-venv; it reports a JSON file.
ensure_peers_venv() builds that environment on first use:
- torch 2.13.0, a CPU build that lies on this machine's disk (PyPI's default build is multi-GB CUDA);
- careamics 0.3.5 and topaz-em 0.3.20 without their declared requirements, then those requirements
  minus torch and torchvision, with torch pinned. careamics caps torchvision at 0.26 (torch 2.11,
  CUDA builds only), and PyPI's torchvision for torch 2.13 cannot load against a CPU torch. Neither
  Noise2Void nor Topaz's denoiser uses torchvision (careamics_n2v.py explains its stand-in).
ensure_cryocare_venv() builds <repo>/.cryocare-venv for cryoCARE 0.3.0, which pins numpy 1.19 and
csbdeep < 0.8 (no install on Python 3.11 as declared): TensorFlow 2.15 (the last with Keras 2, which
csbdeep needs), numpy < 2 and csbdeep 0.7.4, then cryoCARE without its pins.
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
CRYOCARE_VENV = os.path.join(ROOT, ".cryocare-venv")
CRYOCARE = ["tensorflow-cpu==2.15.1", "numpy<2", "csbdeep==0.7.4", "mrcfile", "tifffile", "tqdm", "psutil",
            "scipy", "matplotlib"]
CRYOCARE_CHECK = "import cryocare, csbdeep, tensorflow, mrcfile"
# Importing both runners imports everything they need; the torch build must be the pinned one.
CHECK = (f"import sys; sys.path.insert(0, {RUNNERS!r}); import careamics_n2v, topaz_denoise, torch; "
         f"sys.exit(torch.__version__.split('+')[0] != {TORCH!r})")


@functools.cache
def ensure_peers_venv(path=PEERS_VENV):
    """The peers venv's python; (re)builds the venv at `path` from scratch if it is missing or fails CHECK."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as pin:
        pin.write(f"torch=={TORCH}\n")
        pin.flush()
        return _ensure_venv(path, CHECK, [
            (f"install torch {TORCH} (CPU)", ["-c", pin.name, f"torch=={TORCH}"]),
            ("install " + ", ".join(PEERS), ["--no-deps"] + PEERS),
            ("install their requirements", ["-c", pin.name] + REQUIREMENTS)])


@functools.cache
def ensure_cryocare_venv(path=CRYOCARE_VENV):
    """The cryoCARE venv's python; (re)builds it at `path` if it is missing or fails CRYOCARE_CHECK."""
    return _ensure_venv(path, CRYOCARE_CHECK, [("install TensorFlow 2.15 and csbdeep 0.7.4", CRYOCARE),
                                               ("install cryoCARE 0.3.0", ["--no-deps", "cryoCARE==0.3.0"])])


def _ensure_venv(path, check, installs):
    """A venv at `path` whose python passes `check`: kept if it does, else made anew by the pip
    `installs` ([(what, pip arguments)]); one line per step, the full log in a temporary file."""
    python = os.path.join(path, "bin", "python")
    if os.path.exists(python) and subprocess.run([python, "-c", check], capture_output=True).returncode == 0:
        return python
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, "pyvenv.cfg")):
        raise ConfigError(f"{path} exists and is not a virtual environment; move it away")
    name = os.path.basename(path).lstrip(".")
    log = os.path.join(tempfile.gettempdir(), f"n2s_tf_{name}.log")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    steps = ([("create the venv", [sys.executable, "-m", "venv", "--clear", path])]
             + [(what, pip + args) for what, args in installs] + [("check the imports", [python, "-c", check])])
    with open(log, "w") as log_file:
        for i, (what, command) in enumerate(steps, 1):
            print(f"{name} {path}: step {i}/{len(steps)}: {what}", file=sys.stderr, flush=True)
            log_file.write(f"\n$ {' '.join(command)}\n")
            log_file.flush()
            if subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT).returncode:
                raise ConfigError(f"{name}: could not {what}; see {log}")
    return python


def run_peer(runner, venv="peers", **kwargs):
    """Run bench/peer_runners/<runner>.py in the peers (or "cryocare") venv with --key=value args;
    its result JSON.

    The runner's output streams to stderr. kwargs["result"] is the JSON's path (a temporary file
    if not given). Torch gets one thread per CPU core.
    """
    python = ensure_cryocare_venv() if venv == "cryocare" else ensure_peers_venv()
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
