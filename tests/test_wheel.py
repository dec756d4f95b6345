"""A wheel carries the shipped models: built, installed in a fresh venv outside the checkout, run there.

The venv borrows the running environment's installed dependencies (TensorFlow and the rest)
through a .pth file instead of downloading them; n2s_tf itself comes only from the wheel.
"""

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import venv

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a wheel is built from; a copy, so that the build leaves no build/ or egg-info in the checkout.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "n2s_tf")


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin folder, an environment without the checkout on any path)."""
    for module in ("pip", "setuptools", "wheel"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed here: no wheel can be built or installed offline")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(os.path.join(ROOT, name), source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(work / "dist"), str(source)])
    (wheel,) = (work / "dist").glob("n2s_tf-*.whl")

    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # The running environment's packages, after the venv's own (plain paths: their .pth files,
    # an editable n2s_tf's among them, are not processed).
    borrowed = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    with open(os.path.join(purelib, "borrowed_dependencies.pth"), "w") as f:
        f.write("\n".join(borrowed) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], env=env)
    return python, env_dir / "bin", env, work


def test_the_wheel_carries_the_shipped_models(installed):
    python, _, env, work = installed
    result = _run([str(python), "-c", "import n2s_tf, n2s_tf.api as a; print(n2s_tf.__file__); "
                   "print(a.default_model_path()); print(a.default_model_path('x.mrc')); "
                   "print(','.join(sorted(p.name for p in a.SHIPPED_MODELS.iterdir() "
                   "if any(p.glob('*/saved_model.pb')))))"],
                  env=env, cwd=work)
    package, general, cryo, shipped = result.stdout.split()
    venv_dir = str(work / "venv")
    assert package.startswith(venv_dir) and not package.startswith(ROOT), package
    assert general.startswith(venv_dir) and general.endswith(os.path.join("models", "general"))
    assert cryo.startswith(venv_dir) and cryo.endswith(os.path.join("models", "cryoem_n2n"))
    assert shipped.split(",") == ["cryoem", "cryoem_n2n", "cryoet_n2n", "general"], shipped


def test_n2s_denoise_runs_from_the_wheel_outside_the_checkout(installed):
    import mrcfile

    python, bin_dir, env, work = installed
    cwd = work / "run"
    cwd.mkdir()
    result = _run([str(bin_dir / "n2s-denoise")], env=env, cwd=cwd)
    assert (cwd / "noisy_camera_denoised.png").exists(), result.stdout
    model_line = next(line for line in result.stderr.splitlines() if line.startswith("model:"))
    assert str(work / "venv") in model_line and os.sep + "general" + os.sep in model_line, model_line

    rng = np.random.default_rng(0)
    with mrcfile.new(str(cwd / "tiny.mrc")) as mrc:
        mrc.set_data(rng.normal(100, 10, (48, 56)).astype(np.float32))
    result = _run([str(bin_dir / "n2s-denoise"), "--input=tiny.mrc"], env=env, cwd=cwd)
    model_line = next(line for line in result.stderr.splitlines() if line.startswith("model:"))
    assert str(work / "venv") in model_line and os.sep + "cryoem_n2n" + os.sep in model_line, model_line
    with mrcfile.open(str(cwd / "tiny_denoised.mrc")) as mrc:
        assert mrc.data.shape == (48, 56)
