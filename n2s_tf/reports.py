"""Tables and plots of evaluation rows (`evaluate.evaluate`): CSV/JSON, aligned text, FRC
curves, image panels and metric-vs-SNR plots. Every file is written atomically."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Iterable, Optional

import numpy as np

from n2s_tf import metrics
from n2s_tf.errors import ConfigError
from n2s_tf.evaluate import NOISY, TABLE_COLUMNS
from n2s_tf.files import atomic_path

# ----------------------------------------------------------------------------- tables


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
    with atomic_path(path, make_folder=True) as temporary, open(temporary, "w", newline="") as f:
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

    with atomic_path(path, make_folder=True) as temporary:
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
