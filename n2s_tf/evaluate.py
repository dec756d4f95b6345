"""Score denoisers against clean references: metrics per image and method, tables, plots.

A `Denoiser` is a name and a function image -> denoised image, made from an exported
model (`model_denoiser`) or a classical filter (`baseline_denoiser`). `evaluate` runs
every denoiser on every (noisy, clean) pair and `score`s the result; the noisy input is
scored too, as the row "noisy", so each table shows what a method gained.

Two conventions, chosen by `standardized`:
- cryo-EM (MRC and other non-8-bit data, standardized=True): a CTF-modulated clean
  image has no meaningful scale or offset, so clean and denoised are both standardized
  (zero mean, unit std) before scoring, and PSNR/SSIM use the range of the standardized
  clean image. Correlation and FRC do not depend on scale either way.
- natural 8-bit images (standardized=False): values are compared as they are, PSNR and
  SSIM on the 0-255 scale (data_range=255).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import secrets
import time
from typing import Callable, Iterable, Optional

import numpy as np

from n2s_tf import metrics
from n2s_tf.errors import ConfigError

SCALAR_METRICS = ("psnr", "ssim", "cc", "mean_frc", "res_0143", "res_halfbit", "seconds")
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
        # Standardized per channel like data.standardize, but with float32 statistics: a baseline
        # is scored in the image's own precision.
        axes = tuple(range(x.ndim - 1))
        mean, std = x.mean(axis=axes), x.std(axis=axes)
        std = np.where(std > 0, std, 1.0)
        return (baselines.run_baseline(baseline, (x - mean) / std, **params) * std + mean).reshape(image.shape)

    return Denoiser(name, run)


# ----------------------------------------------------------------------------- scoring


def _standardize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


def _gray(x: np.ndarray) -> np.ndarray:
    """The spatial array of a channels-last image or volume: channels averaged."""
    x = np.asarray(x, np.float64)
    return x if x.ndim == 2 else x.mean(axis=-1)


def score(clean, denoised, pixel_size: Optional[float] = None, standardized: bool = True,
          data_range: float = 255.0) -> dict:
    """Metrics of `denoised` against `clean` (same shape: (H, W), (H, W, C) or (D, H, W, C)).

    Returns psnr (dB), ssim, cc (Pearson), mean_frc (mean over rings 1..Nyquist; rings
    without power left out), frc (dict of freq in cycles/pixel and values; a Fourier
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
    return {
        "psnr": metrics.psnr(clean, denoised, data_range=data_range),
        "ssim": metrics.ssim(clean, denoised, data_range=data_range),
        "cc": 0.0 if constant else metrics.pearson_cc(clean, denoised),
        "mean_frc": float(np.nanmean(curve[1:])),
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


# ----------------------------------------------------------------------------- tables


@contextlib.contextmanager
def _atomic_path(path):
    """A temporary name next to `path` (same extension), moved onto `path` on success."""
    path = os.fspath(path)
    folder, filename = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(filename)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{stem}.{secrets.token_hex(4)}.part{ext}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def _json_value(value):
    """Plain JSON: non-finite floats become null, arrays are left out by the caller."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def write_table(rows: list[dict], path) -> None:
    """Write rows as CSV (scalar columns only) or JSON (also the FRC curves; infinite or
    undefined values as null), by the extension of `path`; atomically. Arrays are skipped."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".json"):
        raise ConfigError(f"cannot write '{path}': the table must be .csv or .json")
    rows = [{k: v for k, v in row.items() if not isinstance(v, np.ndarray)} for row in rows]
    with _atomic_path(path) as temporary, open(temporary, "w", newline="") as f:
        if ext == ".json":
            json.dump(_json_value(rows), f, indent=1)
        else:
            columns = list(dict.fromkeys(k for row in rows for k, v in row.items()
                                         if not isinstance(v, (dict, list))))
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


# Decimals per column in printed tables; others use 4 significant digits.
FORMATS = {"psnr": ".2f", "ssim": ".4f", "cc": ".4f", "mean_frc": ".4f", "res_0143": ".1f",
           "res_halfbit": ".1f", "seconds": ".2f", "train_seconds": ".0f"}


def _cell(column, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, FORMATS.get(column, ".4g"))
    return str(value)


def format_table(summary: list[dict], columns: Optional[Iterable[str]] = None) -> str:
    """An aligned text table: snr, image and method (where present) first, then
    `columns` (default: psnr, ssim, cc, mean_frc and the resolutions, where present)."""
    if not summary:
        return ""
    first = summary[0]
    keys = [k for k in ("snr", "image", "method") if k in first]
    columns = list(columns) if columns is not None else [c for c in TABLE_COLUMNS if c in first]
    header = keys + [f"{c} ({first['res_unit']})" if c.startswith("res_") and "res_unit" in first else c
                     for c in columns]
    cells = [[_cell(k, row.get(k)) for k in keys + columns] for row in summary]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(values):
        return "  ".join(v.ljust(w) if i < len(keys) else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


# ----------------------------------------------------------------------------- plots


def _figure(path, fig):
    """Save a matplotlib figure as PNG atomically and free it."""
    import matplotlib.pyplot as plt

    with _atomic_path(path) as temporary:
        fig.savefig(temporary, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _style(method, index) -> dict:
    """Line style of a method: the noisy input dashed gray, others by their place in the
    list, so a method keeps its colour from plot to plot."""
    return dict(color="0.5", linestyle="--") if method == NOISY else dict(color=f"C{index % 10}")


def plot_frc(curves: dict, path, title: str = "Fourier ring correlation with the clean image") -> None:
    """FRC curves {method: (freq, values)} with the 0.143 line and the 1/2-bit curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (method, (freq, values)) in enumerate(curves.items()):
        ax.plot(freq[1:], values[1:], label=method, **_style(method, index))
    freq = np.asarray(next(iter(curves.values()))[0], np.float64)
    # The 1/2-bit curve depends on the ring sizes: those of a square image of this size.
    side = 2 * (len(freq) - 1)
    ring_pixels = metrics.fourier_correlation(np.ones((side, side)), np.ones((side, side)))[2]
    ax.axhline(metrics.FSC_0143, color="k", linewidth=0.8, linestyle=":", label="0.143")
    ax.plot(freq[1:], metrics.half_bit_threshold(ring_pixels)[1:], color="k", linewidth=0.8,
            linestyle="-.", label="1/2-bit")
    ax.set(xlabel="spatial frequency (1/pixel)", ylabel="FRC", title=title, xlim=(0, freq[-1]),
           ylim=(min(-0.1, ax.get_ylim()[0]), 1.02))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _figure(path, fig)


def _view(image, crop: int) -> np.ndarray:
    """A 2D (or RGB) view for display: middle slice of a volume, central crop, and the
    mean +- 3 std contrast of cryo-EM viewers mapped onto 0..1."""
    x = np.asarray(image, np.float64)
    if x.ndim == 4:
        x = x[x.shape[0] // 2]
    if x.ndim == 3 and x.shape[-1] != 3:
        x = x[..., 0]
    rows, cols = x.shape[:2]
    r, c = max((rows - crop) // 2, 0), max((cols - crop) // 2, 0)
    x = x[r:r + crop, c:c + crop]
    mean, std = x.mean(), x.std() or 1.0
    return np.clip((x - mean + 3 * std) / (6 * std), 0, 1)


def plot_panels(noisy, denoised_by_method: dict, clean, path, crop: int = 256, titles: Optional[dict] = None) -> None:
    """Noisy, each method's result and clean (unless None) side by side (central crop of at
    most `crop` pixels per side); titles {method: text} add a caption under a method's name."""
    plt = _pyplot()
    panels = [(NOISY, noisy)] + list(denoised_by_method.items()) + ([("clean", clean)] if clean is not None else [])
    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, image) in zip(axes.flat, panels):
        ax.imshow(_view(image, crop), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        caption = (titles or {}).get(name)
        ax.set_title(name + (f"\n{caption}" if caption else ""), fontsize=9)
    _figure(path, fig)


def plot_metric_vs_snr(results: list[dict], metric: str, path) -> None:
    """One line per method of `metric` against the input SNR (log axis); results are rows
    or summaries with "snr", "method" and the metric."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for index, method in enumerate(dict.fromkeys(r["method"] for r in results)):
        points = sorted((r["snr"], r[metric]) for r in results
                        if r["method"] == method and r.get(metric) is not None and math.isfinite(r[metric]))
        if points:
            ax.plot(*zip(*points), marker="o", label=method, **_style(method, index))
    ax.set_xscale("log")
    snrs = sorted({r["snr"] for r in results})
    ax.set_xticks(snrs, [f"{v:.3g}" for v in snrs], rotation=45 if len(snrs) > 5 else 0)
    ax.minorticks_off()
    ax.set(xlabel="input SNR (var signal / var noise)", ylabel=metric, title=f"{metric} against SNR")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _figure(path, fig)
