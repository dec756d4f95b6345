"""n2s_tf.evaluate and its command line: scores on known cases, tables, plots, CLI errors."""

import csv
import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from n2s_tf import evaluate, reports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smooth_image(shape=(64, 64), seed=0):
    """A smooth random image (a sum of a few low-frequency waves), about unit variance."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    image = sum(np.sin(2 * np.pi * (rng.integers(1, 4) * rows / shape[0] + rng.integers(1, 4) * cols / shape[1])
                       + rng.uniform(0, 2 * np.pi)) for _ in range(4))
    return image.astype(np.float32)


def noisy_pair(seed=0, sigma=1.0):
    clean = smooth_image(seed=seed)
    noisy = clean + np.random.default_rng(seed + 100).normal(0, sigma, clean.shape).astype(np.float32)
    return noisy, clean


# ----------------------------------------------------------------------------- score


def test_identical_images_score_perfectly():
    clean = smooth_image()
    s = evaluate.score(clean, clean.copy(), pixel_size=1.5)
    assert s["psnr"] == math.inf
    assert s["ssim"] == pytest.approx(1.0)
    assert s["cc"] == pytest.approx(1.0)
    assert s["mean_frc"] == pytest.approx(1.0)
    assert s["res_0143"] is None and s["res_halfbit"] is None  # never falls below
    assert len(s["frc"]["freq"]) == len(s["frc"]["values"]) == 64 // 2 + 1


def test_independent_noise_scores_near_zero():
    rng = np.random.default_rng(1)
    s = evaluate.score(rng.normal(size=(128, 128)), rng.normal(size=(128, 128)))
    assert abs(s["cc"]) < 0.03  # std of a correlation of 16384 pairs: 1/128
    assert abs(s["mean_frc"]) < 0.03
    assert s["res_0143"] == pytest.approx(128.0)  # ring 1 is already below: 1 / (1/128) pixels


def test_standardized_ignores_scale_and_offset_while_0_255_does_not():
    clean = np.linspace(0, 255, 64 * 64).reshape(64, 64)
    assert evaluate.score(clean, 0.5 * clean + 7, standardized=True)["psnr"] > 200  # equal up to rounding
    shifted = evaluate.score(clean, clean + 5, standardized=False)
    assert shifted["psnr"] == pytest.approx(10 * math.log10(255.0**2 / 25.0))  # mse = 5^2
    assert shifted["cc"] == pytest.approx(1.0)


def test_resolution_of_a_sign_flip_in_angstrom():
    # Flip the sign of every ring beyond k0: the FRC is +1 up to ring k0 and -1 beyond, so
    # the 0.143 crossing lies at (k0 + (1 - 0.143) / 2) / N cycles/pixel by linear interpolation.
    n, k0, pixel_size = 64, 8, 2.0
    clean = np.random.default_rng(2).normal(size=(n, n))
    f = np.fft.fftfreq(n)
    ring = np.floor(np.hypot(f[:, None], f[None, :]) * n + 0.5)
    flipped = np.fft.ifft2(np.fft.fft2(clean) * np.where(ring <= k0, 1, -1)).real
    s = evaluate.score(clean, flipped, pixel_size=pixel_size)
    assert s["res_unit"] == "A"
    assert s["res_0143"] == pytest.approx(pixel_size * n / (k0 + 0.4285))
    in_pixels = evaluate.score(clean, flipped)
    assert in_pixels["res_unit"] == "px" and in_pixels["res_0143"] == pytest.approx(n / (k0 + 0.4285))
    # The 1/2-bit curve lies above 0.143, so it is crossed no later.
    assert in_pixels["res_halfbit"] >= in_pixels["res_0143"]


def test_a_constant_output_has_zero_correlation_without_warnings():
    clean = smooth_image()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = evaluate.score(clean, np.full_like(clean, 3.0))
    assert s["cc"] == 0 and s["mean_frc"] == 0
    # Standardized, the constant becomes 0, the clean image's mean: the mse is its variance, 1.
    assert s["psnr"] == pytest.approx(20 * math.log10(np.ptp(clean) / clean.std()))


def test_score_rejects_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate.score(np.zeros((8, 8)), np.zeros((8, 9)))


# ----------------------------------------------------------------------------- evaluate, tables, plots


@pytest.fixture(scope="module")
def rows():
    pairs = [("a", *noisy_pair(0)), ("b", *noisy_pair(1))]
    denoisers = [evaluate.baseline_denoiser("gaussian", sigma=2.0),
                 evaluate.baseline_denoiser("fourier_lowpass", name="lp", cutoff=0.1)]
    return evaluate.evaluate(pairs, denoisers, standardized=True, keep_outputs=True)


def test_evaluate_scores_noisy_and_every_denoiser(rows):
    assert [(r["image"], r["method"]) for r in rows] == [
        (image, method) for image in "ab" for method in ("noisy", "gaussian(sigma=2.0)", "lp")]
    noisy, clean = noisy_pair(0)
    assert rows[0]["psnr"] == pytest.approx(evaluate.score(clean, noisy)["psnr"])
    np.testing.assert_array_equal(rows[0]["output"], noisy)
    # A smooth image in white noise: both filters must beat the noisy input.
    for row in rows[1:3]:
        assert row["cc"] > rows[0]["cc"] + 0.05 and row["psnr"] > rows[0]["psnr"] + 3


def test_baselines_see_the_standardized_image_and_answer_in_input_units(monkeypatch):
    from n2s_tf import baselines

    seen = []
    monkeypatch.setattr(baselines, "run_baseline", lambda name, x, **params: seen.append(x) or 2 * x)
    image = 10 + 3 * noisy_pair()[0]
    out = evaluate.baseline_denoiser("gaussian")(image)
    assert seen[0].mean() == pytest.approx(0, abs=1e-5) and seen[0].std() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(out, image.mean() + 2 * (image - image.mean()), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown baseline 'median7'"):
        evaluate.baseline_denoiser("median7")


def test_summarize_means_per_method(rows):
    summary = evaluate.summarize(rows)
    assert [s["method"] for s in summary] == ["noisy", "gaussian(sigma=2.0)", "lp"]
    assert summary[0]["n"] == 2
    assert summary[1]["psnr"] == pytest.approx((rows[1]["psnr"] + rows[4]["psnr"]) / 2)
    table = reports.format_table(summary)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and lines[0].split()[:3] == ["method", "psnr", "ssim"]
    assert len({len(line) for line in lines}) == 1  # numbers right-aligned in fixed widths
    assert f"{summary[2]['psnr']:.2f}" in lines[4].split()


def test_tables_round_trip_and_leave_no_temporary_files(tmp_path, rows):
    rows = rows + [dict(rows[0], image="same", psnr=math.inf, res_0143=None)]
    reports.write_table(rows, tmp_path / "m.csv")
    reports.write_table(rows, tmp_path / "m.json")
    assert sorted(os.listdir(tmp_path)) == ["m.csv", "m.json"]
    with open(tmp_path / "m.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and "frc" not in table[0] and "output" not in table[0]
    assert float(table[1]["psnr"]) == pytest.approx(rows[1]["psnr"])
    assert float(table[-1]["psnr"]) == math.inf and table[-1]["res_0143"] == ""
    loaded = json.loads((tmp_path / "m.json").read_text())  # strict JSON: inf written as null
    assert loaded[1]["method"] == rows[1]["method"] and loaded[-1]["psnr"] is None
    assert loaded[1]["frc"]["values"] == pytest.approx(rows[1]["frc"]["values"])
    with pytest.raises(ValueError, match=".csv or .json"):
        reports.write_table(rows, tmp_path / "m.txt")


def test_plots_are_written(tmp_path, rows):
    first = [r for r in rows if r["image"] == "a"]
    reports.plot_frc(evaluate.frc_curves(rows), tmp_path / "frc.png")
    reports.plot_panels(first[0]["output"], {r["method"]: r["output"] for r in first[1:]},
                         noisy_pair(0)[1], tmp_path / "panels.png", crop=32)
    results = [dict(r, snr=snr) for snr, r in zip([0.1, 0.1, 0.1, 1.0, 1.0, 1.0], rows)]
    reports.plot_metric_vs_snr(results, "cc", tmp_path / "cc.png")
    for name in ("frc.png", "panels.png", "cc.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_model_denoiser_runs_an_exported_model(tmp_path):
    from n2s_tf import api
    from n2s_tf.export import export_model
    from n2s_tf.networks import build_network

    network = build_network("unet", depth=1, base_filters=4)
    meta = {"ndim": 2, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
            "method": "n2s", "network": "unet", "steps": 0}
    path = export_model(network, meta, str(tmp_path / "run"))
    denoiser = evaluate.model_denoiser(str(tmp_path / "run"))
    noisy = noisy_pair()[0]
    assert denoiser.name == "run"
    np.testing.assert_allclose(denoiser(noisy), api.denoise(noisy, path), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- command line


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "n2s_tf.cli.evaluate", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.fixture()
def folders(tmp_path):
    for folder in ("noisy", "clean"):
        (tmp_path / folder).mkdir()
    for seed in (0, 1):
        noisy, clean = noisy_pair(seed)
        np.save(tmp_path / "noisy" / f"im{seed}.npy", noisy)
        np.save(tmp_path / "clean" / f"im{seed}.npy", clean)
    return tmp_path


def test_cli_with_a_baseline_writes_tables_and_plots(folders):
    out = folders / "results"
    result = run_cli(f"--noisy={folders / 'noisy'}", f"--clean={folders / 'clean'}",
                     "--baselines=gaussian:sigma=1.5", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gaussian(sigma=1.5)" in result.stdout and "noisy" in result.stdout
    assert sorted(os.listdir(out)) == ["frc.png", "metrics.csv", "metrics.json", "panels.png"]
    with open(out / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["image"], r["method"]) for r in table] == [
        (f"im{i}.npy", m) for i in (0, 1) for m in ("noisy", "gaussian(sigma=1.5)")]
    noisy, clean = noisy_pair(1)
    assert float(table[2]["psnr"]) == pytest.approx(evaluate.score(clean, noisy)["psnr"], rel=1e-5)


def test_cli_missing_clean_file_is_one_line_exit_2(folders):
    os.remove(folders / "clean" / "im1.npy")
    result = run_cli(f"--noisy={folders / 'noisy'}", f"--clean={folders / 'clean'}",
                     "--baselines=gaussian", f"--out={folders / 'results'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "im1.npy" in result.stderr, result.stderr
    assert not (folders / "results").exists()


@pytest.mark.parametrize("spec,words", [("gaussian:sigma=abc", "sigma='abc' is not a number"),
                                        ("gaussian:sgma=1", "gaussian has no parameter 'sgma'")])
def test_cli_bad_baseline_parameter_is_one_line_exit_2(folders, spec, words):
    result = run_cli(f"--noisy={folders / 'noisy'}", f"--clean={folders / 'clean'}",
                     f"--baselines={spec}", f"--out={folders / 'results'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and words in result.stderr, result.stderr
