"""The benchmark scripts refuse bad input with one line and exit code 2 (their figures are
measured by running them, not by tests), and the peers' environment is never built over a
folder that is not a virtual environment."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


@pytest.mark.parametrize("script, flag, message", [
    ("quality.py", "--methods=n2s,bogus", "--methods: bogus"),
    ("quality.py", "--steps=0", "--steps must be at least 1"),
    ("cryo.py", "--snrs=0.1,abc", "--snrs="),
    ("cryo.py", "--methods=topaz,nonsense", "--methods: nonsense"),
    ("speed.py", "--micrograph=/no/such/file.mrc", "--micrograph=/no/such/file.mrc: no such file"),
    ("simulate_micrographs.py", "--snrs=x", "--snrs="),
])
def test_bench_scripts_reject_bad_flags_in_one_line(script, flag, message):
    result = subprocess.run([sys.executable, os.path.join(BENCH, script), flag], capture_output=True,
                            text=True, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_peers_venv_is_not_built_over_a_foreign_folder(tmp_path):
    sys.path.insert(0, BENCH)
    try:
        import peers
    finally:
        sys.path.remove(BENCH)
    from n2s_tf.errors import ConfigError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a virtual environment"):
        peers.ensure_peers_venv(str(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_general_models_training_set_holds_none_of_the_benchmark_images(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, check=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).stdout

    run(os.path.join(BENCH, "natural_training_set.py"), f"--out={tmp_path}")
    written = {name[:-len(".tif")].removesuffix("_half") for name in os.listdir(tmp_path)}
    benchmark = run("-c", f"import sys; sys.path.insert(0, {BENCH!r}); import quality; "
                          f"print(*quality.IMAGES, *quality.TEXTURES)").split()
    assert len(written) == 17 and set(benchmark) >= {"brick", "gravel"} and len(set(benchmark)) == 9
    assert not written & set(benchmark) and "cat" not in written  # cat is chelsea
