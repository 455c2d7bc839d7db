"""Figures of the reports, drawn with matplotlib into inline PNG data URIs (no GUI backend, no global state)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from textclf.common import UNKNOWN_ROW, truncate
from textclf.textstats import LOW_CONFIDENCE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure



PLOT_DPI = 90


def png_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_text(value: Any, limit: int = 30) -> str:
    """A label safe for matplotlib: short, and with ``$`` escaped so it is not read as mathtext."""
    return truncate(str(value), limit).replace("$", r"\$")


def new_figure(width: float, height: float) -> Figure:
    """A figure detached from pyplot, so rendering needs no GUI backend and leaves no global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def matrix_figure(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], *, title: str, cmap: str,
                   vmin: float | None, vmax: float | None, fmt: str, xlabel: str, ylabel: str) -> str:
    """Heatmap PNG of a matrix, values written in the cells when there are few enough."""
    size = min(4.0 + 0.45 * max(len(rows), len(cols)), 16.0)
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(len(cols)), [plot_text(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [plot_text(r) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if max(len(rows), len(cols)) <= 20 and matrix.size:
        mid = (np.nanmax(matrix) + np.nanmin(matrix)) / 2 if vmin is None or vmax is None else (vmin + vmax) / 2
        for (r, c), value in np.ndenumerate(matrix):
            ax.text(c, r, format(value, fmt), ha="center", va="center", fontsize=8,
                    color="white" if (value > mid if vmin is None else abs(value) > 0.6) else "black")
    return png_uri(fig)


def _history_series(history: Mapping[str, Sequence[float]], *names: str) -> list[float]:
    """The first series of ``history`` found under one of ``names`` (Keras renamed acc to accuracy)."""
    for name in names:
        if history.get(name):
            return [float(v) for v in history[name]]
    return []


def curves_figure(history: Mapping[str, Sequence[float]], restored_epoch: int | None = None) -> str:
    """Loss and accuracy per epoch, training and validation, side by side; the restored epoch marked."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(10, 3.6)
    for ax, (title, train, val) in zip(fig.subplots(1, 2), (
            ("loss", ("loss",), ("val_loss",)), ("accuracy", ("accuracy", "acc"), ("val_accuracy", "val_acc"))),
            strict=True):
        for series, label, style in ((_history_series(history, *train), "training", "o-"),
                                     (_history_series(history, *val), "validation", "s--")):
            if series:
                ax.plot(range(1, len(series) + 1), series, style, label=label)
        if restored_epoch is not None:
            ax.axvline(restored_epoch, color="#2a7a2a", ls=":", lw=1.5, label=f"restored epoch {restored_epoch}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return png_uri(fig)


def reliability_figure(bins: list[dict[str, Any]], ece: float | None) -> str:
    """Reliability diagram (accuracy vs confidence per bin) over a histogram of confidences."""
    fig = new_figure(5.5, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = 1 / len(bins)
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    top.bar(centers, [b["accuracy"] or 0.0 for b in bins], width=width * 0.95, color="#4a7bd0",
            edgecolor="#2a4b90", label="accuracy")
    # The gap runs from accuracy to mean confidence: above the bar when over-confident, inside it when under.
    top.bar(centers, [(b["mean_confidence"] or 0.0) - (b["accuracy"] or 0.0) if b["count"] else 0.0 for b in bins],
            bottom=[b["accuracy"] or 0.0 for b in bins], width=width * 0.95, fill=False, hatch="//",
            edgecolor="#d03030", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE {ece:.3f})" if ece is not None else "Reliability")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.95, color="#888")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (highest probability)")
    bottom.set_ylabel("rows")
    return png_uri(fig)


def class_colors(k: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]
    return [cmap(i if k <= 20 else i / max(k - 1, 1)) for i in range(k)]


def method_name(prob_map: Mapping[str, Any]) -> str:
    """How a probability map's method is written for readers."""
    method = str(prob_map.get("method"))
    return {"tsne": "t-SNE", "pca": "PCA"}.get(method, method)


def map_figure(prob_map: dict[str, Any]) -> str:
    """Scatter of the probability map by true class, with the class anchors and means marked."""
    classes = prob_map.get("classes", [])
    colors = class_colors(len(classes))
    points = np.asarray(prob_map.get("points", []), dtype=np.float64).reshape(-1, 2)
    point_class = np.asarray(prob_map.get("point_class", []), dtype=np.int64)
    fig = new_figure(8, 7)
    ax = fig.add_subplot()
    unknown = point_class < 0
    if unknown.any():
        ax.scatter(points[unknown, 0], points[unknown, 1], s=6, c="#999", alpha=0.5, label=UNKNOWN_ROW)
    for c, name in enumerate(classes):
        mine = point_class == c
        if mine.any():
            ax.scatter(points[mine, 0], points[mine, 1], s=6, color=colors[c], alpha=0.5,
                       label=plot_text(name) if len(classes) <= 20 else None)
    for c, (x, y) in enumerate(prob_map.get("anchors", [])):
        ax.scatter([x], [y], s=260, marker="*", color=colors[c], edgecolors="black", linewidths=1, zorder=3)
        ax.annotate(plot_text(classes[c], 20), (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8,
                    fontweight="bold")
    for c, (x, y) in zip(prob_map.get("mean_class", []), prob_map.get("means", []), strict=True):
        ax.scatter([x], [y], s=120, marker="X", color=colors[c], edgecolors="black", linewidths=1, zorder=3)
    method = method_name(prob_map)
    ax.set_title(f"{plot_text(method)} map of predicted probabilities "
                 f"(\u2605 one-hot anchor, \u2716 class mean)")
    ax.set_xticks([])
    ax.set_yticks([])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    return png_uri(fig)


def _finish_axes(ax: Axes, names: Sequence[str], xlabel: str, ylabel: str, title: str) -> None:
    """Category ticks (rotated when many), labels, grid and legend."""
    many = len(names) > 6
    ax.set_xticks(range(len(names)), [plot_text(n, 20) for n in names], rotation=45 if many else 0,
                  ha="right" if many else "center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def paired_bars_figure(names: Sequence[str], baseline: Sequence[float], current: Sequence[float], *,
                        current_label: str, xlabel: str, title: str) -> str:
    """Grouped bars: training share and this run's share per category."""
    fig = new_figure(min(max(5.5, 0.55 * len(names) + 2), 16), 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x - 0.2, baseline, 0.4, label="training", color="#9a9a9a")
    ax.bar(x + 0.2, current, 0.4, label=current_label, color="#4a7bd0")
    _finish_axes(ax, names, xlabel, "share of documents", title)
    return png_uri(fig)


def confidence_figure(hist: Sequence[int]) -> str:
    """Histogram of the top probability, bins below LOW_CONFIDENCE in orange."""
    fig = new_figure(6.5, 3.4)
    ax = fig.add_subplot()
    n = len(hist)
    lower = np.arange(n) / n
    colors = ["#e09000" if (i + 1) / n <= LOW_CONFIDENCE + 1e-12 else "#4a7bd0" for i in range(n)]
    ax.bar(lower, list(hist), width=1 / n, align="edge", color=colors, edgecolor="white")
    ax.axvline(LOW_CONFIDENCE, color="#c62828", ls="--", lw=1, label=f"confidence {LOW_CONFIDENCE}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (highest probability)")
    ax.set_ylabel("documents")
    ax.set_title("Confidence of the predictions")
    ax.legend(fontsize=8)
    return png_uri(fig)


def batch_value(batch: Mapping[str, Any], key: str) -> float:
    """A batch's numeric signal, NaN when missing (a gap in the line)."""
    value = batch.get(key)
    return float(value) if isinstance(value, int | float | np.number) and not isinstance(value, bool) else math.nan


def batch_figure(batches: Sequence[Mapping[str, Any]], training_oov_rate: float | None) -> str:
    """Out-of-vocabulary share and mean confidence per batch, in scoring order, with training's OOV share."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(8, 2.8)
    ax = fig.add_subplot()
    x = np.arange(1, len(batches) + 1)
    marker = "o" if len(batches) <= 50 else None
    for key, label, color in (("oov_rate", "out-of-vocabulary share", "#e09000"),
                              ("mean_confidence", "mean confidence", "#4a7bd0")):
        ax.plot(x, [batch_value(b, key) for b in batches], marker=marker, ms=3, lw=1.2, label=label, color=color)
    if training_oov_rate is not None and math.isfinite(training_oov_rate):
        ax.axhline(training_oov_rate, color="#e09000", ls=":", lw=1, label="out-of-vocabulary share in training")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("batch (scoring order)")
    ax.set_title("Per-batch signals")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    return png_uri(fig)
