"""The benchmark scripts refuse bad input with one line and exit code 2 (their figures are
measured by running them, not by tests), and the peers' environment is never built over a
folder that is not a virtual environment."""

import os
import subprocess
import sys

import numpy as np
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
    ("simulate_tomograms.py", "--doses=0,50", "--doses"),
    ("tomo.py", "--methods=gaussian,bogus", "--methods: bogus"),
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
    assert len(written) == 17 and set(benchmark) >= {"brick", "gravel", "chessboard"} and len(set(benchmark)) == 10
    assert not written & set(benchmark) and "cat" not in written  # cat is chelsea


def test_the_chessboard_photograph_loads_whole():
    from n2s_tf.data import sample_image

    image = sample_image("chessboard")  # scikit-image's chessboard_GRAY.png, no loader function
    assert image.shape == (200, 200) and image.dtype == np.float32
    assert image.min() < 30 and image.max() > 220


def test_the_tomogram_bench_scores_volumes_as_volumes(tmp_path):
    # A volume handed to evaluate without its channel axis would be read as a 2D image whose
    # channels are X: its "FSC" the ring correlation of the X average, its Gaussian a 2D filter.
    import csv

    import numpy as np
    from scipy import ndimage

    from n2s_tf import metrics

    rng = np.random.default_rng(0)
    pdb = tmp_path / "blob.pdb"
    atoms = rng.normal(0, 8, (60, 3))
    pdb.write_text("".join(f"ATOM  {i:5d}  CA  ALA A{i:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           C\n"
                           for i, (x, y, z) in enumerate(atoms, 1)))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, os.path.join(BENCH, "tomo.py"), f"--models={pdb}", "--size=24,40,40",
                             "--particles=3", "--doses=60", "--methods=gaussian", "--save_outputs", f"--out={out}"],
                            capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out / "metrics.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["method"] == "gaussian")
    clean, gaussian, noisy = (np.load(out / f"dose60_{name}.npy") for name in ("clean", "gaussian", "noisy"))
    assert gaussian.shape == clean.shape == (24, 40, 40)

    def standardized(x):
        return (x - x.mean()) / x.std()

    expected = ndimage.gaussian_filter(standardized(noisy), 1.5) * noisy.std() + noisy.mean()  # a 3D filter
    np.testing.assert_allclose(gaussian, expected, atol=1e-4 * noisy.std())
    curve = metrics.fourier_shell_correlation(standardized(clean), standardized(gaussian))[1]
    assert float(row["mean_frc"]) == pytest.approx(np.nanmean(curve[1:]), abs=1e-6)
