"""Score denoisers against clean references: metrics per image and method.

A `Denoiser` is a name and a function image -> denoised image, made from an exported
model (`model_denoiser`) or a classical filter (`baseline_denoiser`). `evaluate` runs
every denoiser on every (noisy, clean) pair and `score`s the result; the noisy input is
scored too, as the row "noisy", so each table shows what a method gained. Tables and
plots of the rows are in `reports.py`.

Two conventions, chosen by `standardized`:
- cryo-EM (MRC and other non-8-bit data, standardized=True): a CTF-modulated clean
  image has no meaningful scale or offset, so clean and denoised are both standardized
  (zero mean, unit std) before scoring, and PSNR/SSIM use the range of the standardized
  clean image. Correlation and FRC do not depend on scale either way.
- natural 8-bit images (standardized=False): values are compared as they are, PSNR and
  SSIM on the 0-255 scale (data_range=255).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Iterable, Optional

import numpy as np

from n2s_tf import metrics
from n2s_tf.data import standardize
from n2s_tf.errors import ConfigError

SCALAR_METRICS = ("psnr", "ssim", "cc", "mean_frc", "frc_soft", "res_0143", "res_halfbit", "seconds")
TABLE_COLUMNS = ("psnr", "ssim", "cc", "mean_frc", "res_0143", "res_halfbit")
NOISY = "noisy"


# ----------------------------------------------------------------------------- denoisers


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """A named function from a noisy image (channels-last, input units) to its denoised version."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(image), dtype=np.float32)


def model_denoiser(model, name: Optional[str] = None, **options) -> Denoiser:
    """An exported model (path, or an `api.load_model` result) as a Denoiser; `options` go to
    `api.denoise` (tta, calibrate, tile, adapt_steps, ...). Its name defaults to the last
    component of the path, or the model's method."""
    from n2s_tf import api

    if isinstance(model, (str, os.PathLike)):
        name = name or os.path.basename(os.path.normpath(model))
        model = api.load_model(model)
    name = name or model.metadata["method"]
    return Denoiser(name, lambda image: api.denoise(image, model, **options))


def baseline_denoiser(baseline: str, name: Optional[str] = None, **params) -> Denoiser:
    """A classical filter of `n2s_tf.baselines` as a Denoiser.

    The filter sees the image standardized by its own mean and std (per channel), and its
    output is put back in the input's units, exactly as the models work; so parameters
    such as a Gaussian's sigma or NLM's h mean the same on any input scale. The name
    defaults to e.g. "fourier_lowpass(cutoff=0.05)".
    """
    from n2s_tf import baselines

    if baseline not in baselines.BASELINES:
        raise ConfigError(f"unknown baseline {baseline!r}; choose from: {', '.join(baselines.BASELINES)}")
    if name is None:
        name = baseline + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")

    def run(image):
        image = np.asarray(image, dtype=np.float32)
        x = image[..., None] if image.ndim == 2 else image  # baselines take channels-last arrays
        standardized, (mean, std) = standardize(x)  # per channel, as the models see it
        out = baselines.run_baseline(baseline, standardized, **params) * std + mean
        return out.astype(np.float32).reshape(image.shape)

    return Denoiser(name, run)


# ----------------------------------------------------------------------------- scoring


def _standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean and unit std over the whole array (all channels together), float64."""
    return standardize(np.asarray(x, np.float64).reshape(-1, 1))[0].reshape(x.shape).astype(np.float64)


def _gray(x: np.ndarray) -> np.ndarray:
    """The spatial array of a channels-last image or volume: channels averaged."""
    x = np.asarray(x, np.float64)
    return x if x.ndim == 2 else x.mean(axis=-1)


def score(clean, denoised, pixel_size: Optional[float] = None, standardized: bool = True,
          data_range: float = 255.0) -> dict:
    """Metrics of `denoised` against `clean` (same shape: (H, W), (H, W, C) or (D, H, W, C)).

    Returns psnr (dB), ssim, cc (Pearson), mean_frc (mean over rings 1..Nyquist; rings
    without power left out), frc_soft (the same after metrics.soft_edge, which keeps the
    faces' jump out of the high rings), frc (dict of freq in cycles/pixel and values; a Fourier
    shell correlation for volumes; channels averaged first), and res_0143 / res_halfbit:
    where the FRC falls below 0.143 and the 1/2-bit curve, in Angstrom when pixel_size
    (A/pixel) is given, else in pixels (None when it never falls below). standardized:
    see the module docstring; data_range is the PSNR/SSIM range when standardized=False.
    """
    clean, denoised = np.asarray(clean, np.float64), np.asarray(denoised, np.float64)
    if clean.shape != denoised.shape:
        raise ConfigError(f"clean and denoised differ in shape: {clean.shape} and {denoised.shape}")
    if standardized:
        clean, denoised = _standardize(clean), _standardize(denoised)
        data_range = float(clean.max() - clean.min())
    freq, curve, counts = metrics.fourier_correlation(_gray(clean), _gray(denoised))
    # A constant output (e.g. a low-pass that keeps only the mean) carries no signal:
    # its correlations are 0, not 0/0.
    constant = not denoised.std() > 0
    if constant:
        curve = np.zeros_like(curve)
    scale = pixel_size or 1.0
    gray_clean, gray_denoised = _gray(clean), _gray(denoised)
    window = metrics.soft_edge(gray_clean.shape)
    soft = metrics.fourier_correlation(gray_clean * window, gray_denoised * window)[1]
    return {
        "psnr": metrics.psnr(clean, denoised, data_range=data_range),
        "ssim": metrics.ssim(clean, denoised, data_range=data_range),
        "cc": 0.0 if constant else metrics.pearson_cc(clean, denoised),
        "mean_frc": float(np.nanmean(curve[1:])),
        "frc_soft": 0.0 if constant else float(np.nanmean(soft[1:])),
        "res_0143": metrics.resolution_at(freq, curve, metrics.FSC_0143, scale),
        "res_halfbit": metrics.resolution_at(freq, curve, metrics.half_bit_threshold(counts), scale),
        "res_unit": "A" if pixel_size else "px",
        "frc": {"freq": freq.tolist(), "values": curve.tolist()},
    }


def evaluate(pairs: Iterable, denoisers: Iterable[Denoiser], standardized: bool,
             pixel_size: Optional[float] = None, keep_outputs: bool = False) -> list[dict]:
    """Score every denoiser (and the noisy input itself, as method "noisy") on every pair.

    pairs: (name, noisy, clean) triples of arrays (any iterable, so files can be read
    lazily). Returns one row per image and method: image, method, seconds (denoising
    time) and the `score` fields; with keep_outputs also "output", the denoised array.
    """
    denoisers = list(denoisers)
    rows = []
    for image_name, noisy, clean in pairs:
        noisy = np.asarray(noisy, np.float32)
        if noisy.shape != np.shape(clean):
            raise ConfigError(f"{image_name}: the noisy image {noisy.shape} and the clean one "
                              f"{np.shape(clean)} differ in shape")
        for denoiser in [Denoiser(NOISY, lambda x: x)] + denoisers:
            start = time.perf_counter()
            output = denoiser(noisy)
            seconds = time.perf_counter() - start
            row = {"image": image_name, "method": denoiser.name, "seconds": seconds,
                   **score(clean, output, pixel_size, standardized)}
            if keep_outputs:
                row["output"] = output
            rows.append(row)
    return rows


def summarize(rows: list[dict], by: tuple = ("method",)) -> list[dict]:
    """Mean of each scalar metric over the rows that share the `by` keys (in the order
    first seen), with n, the row count. None values (no FRC crossing) are left out of a
    mean; a mean of none is None."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    summary = []
    for key, group in groups.items():
        entry = dict(zip(by, key), n=len(group))
        for metric in SCALAR_METRICS:
            values = [r[metric] for r in group if r.get(metric) is not None]
            entry[metric] = float(np.mean(values)) if values else None
        if "res_unit" in group[0]:
            entry["res_unit"] = group[0]["res_unit"]
        summary.append(entry)
    return summary


def frc_curves(rows: list[dict], image=None) -> dict:
    """{method: (freq, values)} of one image's rows (default: the first image)."""
    image = rows[0]["image"] if image is None else image
    return {r["method"]: (r["frc"]["freq"], r["frc"]["values"]) for r in rows if r["image"] == image}
