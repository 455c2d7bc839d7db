"""The nightly scoring report: drift between the training data and the documents being scored.

The scoring stage accumulates bounded statistics while it scores (class counts, a confidence
histogram, word-count bins, out-of-vocabulary counts, per-batch signals) and hands them over
as a ``ScoringReportInput``. ``build_scoring_report`` turns them into drift signals, a
JSON-ready report and one self-contained HTML page; nothing here touches storage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from textclf.evaluation import (
    LOW_CONFIDENCE,
    _e,
    _img,
    _jsonable,
    _new_figure,
    _num,
    _plot_text,
    _png_uri,
    _table_html,
    render_page,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)

SECTION_IDS = ("summary", "warnings", "class-mix", "confidence", "drift", "batches", "about")
PSI_EPS = 1e-4
# Beyond this many batches the table shows only its two ends: the page stays readable and small.
MAX_BATCH_ROWS = 200
BATCH_EDGE_ROWS = 100
BATCH_COLUMNS = ("batch", "rows", "oov_rate", "mean_words", "max_words", "mean_confidence", "low_confidence_share")
COUNT_LABELS = {"input_rows": "input rows", "rows": "scored rows", "quarantined_rows": "quarantined rows",
                "duplicates_removed": "duplicates removed"}
SIGNAL_LABELS = {
    "predicted_class_mix_psi": "Predicted class mix (PSI)",
    "length_psi": "Document length (PSI)",
    "oov_rate": "Out-of-vocabulary token share",
    "low_confidence_share": f"Share with confidence < {LOW_CONFIDENCE}",
}
# Links are made only for these schemes (no scheme: a path); anything else, javascript: included, is shown as text.
LINK_SCHEMES = frozenset({"", "http", "https", "file", "s3", "s3a", "gs", "abfs", "abfss", "hdfs"})
_EXTRA_CSS = """
.box { padding: 0.6em 1em; margin: 0.6em 0; border-radius: 6px; border-left: 6px solid; }
.box.warning { background: #fff4e0; border-color: #e09000; }
.box.alert { background: #fde8e8; border-color: #c62828; }
.box.note { background: #eef3fb; border-color: #4a7bd0; }
.status-ok { color: #2a7a2a; }
.status-warning { color: #a66a00; font-weight: bold; }
.status-alert { color: #c62828; font-weight: bold; }
.ok { color: #2a7a2a; }
"""


@dataclass(frozen=True)
class DriftThresholds:
    """When a drift signal turns into a warning or an alert."""

    psi_warning: float = 0.10  # population stability index: 0.1-0.25 moderate shift
    psi_alert: float = 0.25  # above: major shift
    oov_increase: float = 0.05  # absolute rise of the out-of-vocabulary token share over training
    low_confidence_share: float = 0.20  # share of predictions with confidence < 0.5
    min_rows: int = 100  # fewer scored rows: drift figures are shown but flagged as unreliable

    def __post_init__(self) -> None:
        values = (self.psi_warning, self.psi_alert, self.oov_increase, self.low_confidence_share)
        if not all(math.isfinite(v) and v >= 0 for v in values) or self.min_rows < 0:
            raise ValueError(f"drift thresholds must be finite and non-negative, got {self}")
        if self.psi_warning > self.psi_alert:
            raise ValueError(f"psi_warning ({self.psi_warning}) must not exceed psi_alert ({self.psi_alert})")


@dataclass(frozen=True)
class ScoringReportInput:
    """Statistics of one day's scoring run and the training baseline they are compared with."""

    run_date: str
    model_version: str
    classes: tuple[str, ...]
    counts: dict[str, int]  # input_rows, rows (scored), quarantined_rows, duplicates_removed
    predicted_counts: dict[str, int]  # scored docs per predicted class
    training_class_counts: dict[str, int]  # labeled training rows per class (from the model's lineage)
    confidence_hist: list[int]  # equal-width bins of the top probability on [0, 1] (20 from the scoring stage)
    length_bins: dict[str, int]  # scored docs per word-count bin
    training_length_bins: dict[str, int] | None  # same bins for the training data (None for old models)
    oov_rate: float | None  # share of scored tokens not in the model's vocabulary
    training_oov_rate: float | None  # the same measured on the model's validation split at training time
    batch_signals: list[dict[str, Any]]  # per batch: batch, rows, oov_rate, mean_words, max_words, ...
    predictions_uri: str
    validation_docs_uri: str | None  # the day's Great Expectations Data Docs (index.html) if any
    model_report_uri: str | None
    thresholds: DriftThresholds = DriftThresholds()


# -- signals -------------------------------------------------------------------------------------------------------


def _total(counts: Mapping[str, float], name: str) -> float:
    """Sum of a distribution's values, or a ValueError naming a negative or non-finite one."""
    total = 0.0
    for key, value in counts.items():
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} distribution has value {value!r} for {key!r}; counts must be finite and >= 0")
        total += v
    return total


def _shares(counts: Mapping[str, float]) -> dict[str, float]:
    """Each key's share of the total (all 0 when the total is 0)."""
    total = _total(counts, "a")
    return {str(k): float(v) / total if total else 0.0 for k, v in counts.items()}


def psi(expected: Mapping[str, float], actual: Mapping[str, float], eps: float = PSI_EPS) -> float:
    """Population stability index of ``actual`` against ``expected`` over the union of their keys.

    Shares (value / total) are floored at ``eps`` so a bin empty on one side stays finite.
    Either side empty or all zero: 0.0, as there is nothing to compare.
    """
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    e_total, a_total = _total(expected, "expected"), _total(actual, "actual")
    if e_total <= 0 or a_total <= 0:
        return 0.0
    value = 0.0
    for key in dict.fromkeys([*expected, *actual]):
        e = max(float(expected.get(key, 0.0)) / e_total, eps)
        a = max(float(actual.get(key, 0.0)) / a_total, eps)
        value += (a - e) * math.log(a / e)
    return float(value)


def _pair(value: float, limit: float, scale: float = 1.0, suffix: str = "", digits: int = 2) -> tuple[str, str]:
    """``value`` and ``limit`` (times ``scale``) with the fewest digits, from ``digits`` to 6, that tell them apart."""
    # "PSI 0.10 > 0.10" would read as a bug: add digits until the two numbers differ on the page.
    while digits < 6 and value != limit and f"{value * scale:.{digits}f}" == f"{limit * scale:.{digits}f}":
        digits += 1
    return f"{value * scale:.{digits}f}{suffix}", f"{limit * scale:.{digits}f}{suffix}"


def _largest_change(baseline: Mapping[str, float], current: Mapping[str, float]) -> tuple[str, float, float] | None:
    """The key whose share moved most between two share maps, with both shares."""
    keys = list(dict.fromkeys([*baseline, *current]))
    if not keys:
        return None
    key = max(keys, key=lambda k: abs(current.get(k, 0.0) - baseline.get(k, 0.0)))
    return key, baseline.get(key, 0.0), current.get(key, 0.0)


def _signal(name: str, value: float | None, baseline: float | None, threshold: dict[str, float], status: str,
            message: str, *, skipped: bool = False) -> dict[str, Any]:
    """One drift signal as a JSON-ready dict."""
    return {"name": name, "label": SIGNAL_LABELS[name], "value": value, "baseline": baseline,
            "threshold": threshold, "status": status, "message": message, "skipped": skipped}


def _psi_signal(name: str, what: str, baseline: Mapping[str, float], current: Mapping[str, float],
                t: DriftThresholds, key_text: str) -> dict[str, Any]:
    """A PSI signal: ok up to psi_warning, warning up to psi_alert, alert above; names the largest move."""
    threshold = {"warning": t.psi_warning, "alert": t.psi_alert}
    value = psi(baseline, current)
    base_shares, shares = _shares(baseline), _shares(current)
    if value > t.psi_alert:
        status, verb, (v, lim), sign = "alert", "moved away from", _pair(value, t.psi_alert), ">"
    elif value > t.psi_warning:
        status, verb, (v, lim), sign = "warning", "shifted moderately from", _pair(value, t.psi_warning), ">"
    else:
        status, verb, (v, lim), sign = "ok", "is close to", _pair(value, t.psi_warning), "\u2264"
    message = f"{what} {verb} training (PSI {v} {sign} {lim})"
    change = _largest_change(base_shares, shares)
    if status != "ok" and change is not None:
        key, before, after = change
        message += f"; largest change: {key_text.format(key)}, {before:.1%} of training vs {after:.1%} of this run"
    return _signal(name, value, None, threshold, status, message + ".")


def _class_mix_signal(inp: ScoringReportInput) -> dict[str, Any]:
    """Training class shares vs predicted class shares."""
    name = "predicted_class_mix_psi"
    threshold = {"warning": inp.thresholds.psi_warning, "alert": inp.thresholds.psi_alert}
    if not _total(inp.training_class_counts, "training class"):
        return _signal(name, None, None, threshold, "ok", "Class mix drift not checked: this model version "
                       "records no training class counts.", skipped=True)
    if not _total(inp.predicted_counts, "predicted class"):
        return _signal(name, None, None, threshold, "ok", "Class mix drift not checked: no documents were scored.",
                       skipped=True)
    return _psi_signal(name, "Predicted class mix", inp.training_class_counts, inp.predicted_counts, inp.thresholds,
                       "class {}")


def _length_signal(inp: ScoringReportInput) -> dict[str, Any]:
    """Training vs scored word-count bins; skipped for models without training bins."""
    name = "length_psi"
    threshold = {"warning": inp.thresholds.psi_warning, "alert": inp.thresholds.psi_alert}
    if not inp.training_length_bins or not _total(inp.training_length_bins, "training length"):
        return _signal(name, None, None, threshold, "ok", "Length drift not checked: this model version records "
                       "no training length bins (models trained before they were kept).", skipped=True)
    if not _total(inp.length_bins, "length"):
        return _signal(name, None, None, threshold, "ok", "Length drift not checked: no documents were scored.",
                       skipped=True)
    return _psi_signal(name, "Document length distribution", inp.training_length_bins, inp.length_bins,
                       inp.thresholds, "{} words")


def _oov_signal(inp: ScoringReportInput) -> dict[str, Any]:
    """Scored vs training out-of-vocabulary share; a warning when it rose by more than oov_increase."""
    name, limit = "oov_rate", inp.thresholds.oov_increase
    threshold = {"warning": limit}
    rate, base = inp.oov_rate, inp.training_oov_rate
    if rate is None or not math.isfinite(rate):
        return _signal(name, None, base, threshold, "ok", "Out-of-vocabulary share not measured for this run.",
                       skipped=True)
    if base is None or not math.isfinite(base):
        return _signal(name, rate, None, threshold, "ok", f"Out-of-vocabulary token share is {rate:.1%}; not "
                       "compared, as this model version records no training-time rate.", skipped=True)
    rise = rate - base
    if rise > limit:
        r, lim = _pair(rise, limit, 100, digits=1)
        message = (f"Out-of-vocabulary token share rose from {base:.1%} in training to {rate:.1%} "
                   f"(+{r} points > {lim}).")
        return _signal(name, rate, base, threshold, "warning", message)
    r, lim = _pair(abs(rise), limit, 100, digits=1)
    direction = "above" if rise >= 0 else "below"
    return _signal(name, rate, base, threshold, "ok", f"Out-of-vocabulary token share is {rate:.1%}, {r} points "
                   f"{direction} training's {base:.1%} (a rise of at most {lim} points is expected).")


def _low_confidence(hist: Sequence[int]) -> float | None:
    """Share of predictions in the histogram bins that lie wholly below LOW_CONFIDENCE (None when empty)."""
    counts = np.asarray(hist, dtype=np.float64)
    total = counts.sum() if counts.size else 0.0
    if not total:
        return None
    upper = (np.arange(counts.size) + 1) / counts.size
    return float(counts[upper <= LOW_CONFIDENCE + 1e-12].sum() / total)


def _mean_confidence(hist: Sequence[int]) -> float | None:
    """Mean confidence estimated from the histogram's bin midpoints (None when empty)."""
    counts = np.asarray(hist, dtype=np.float64)
    total = counts.sum() if counts.size else 0.0
    if not total:
        return None
    return float((counts * (np.arange(counts.size) + 0.5) / counts.size).sum() / total)


def _low_confidence_signal(inp: ScoringReportInput) -> dict[str, Any]:
    """Share of predictions with confidence below 0.5; a warning above the threshold."""
    name, limit = "low_confidence_share", inp.thresholds.low_confidence_share
    threshold = {"warning": limit}
    share = _low_confidence(inp.confidence_hist)
    if share is None:
        return _signal(name, None, None, threshold, "ok", "Low-confidence share not measured: the confidence "
                       "histogram is empty.", skipped=True)
    if share > limit:
        s, lim = _pair(share, limit, 100, "%", digits=1)
        return _signal(name, share, None, threshold, "warning", f"Many predictions are unsure: the share with "
                       f"confidence below {LOW_CONFIDENCE} is {s} (> {lim}).")
    s, lim = _pair(share, limit, 100, "%", digits=1)
    return _signal(name, share, None, threshold, "ok", f"{s} of predictions have confidence below "
                   f"{LOW_CONFIDENCE} (at most {lim} expected).")


def _scored_rows(inp: ScoringReportInput) -> int:
    """Scored rows as counted by the caller, else the sum of the predicted counts."""
    rows = inp.counts.get("rows")
    return int(rows) if rows is not None else int(_total(inp.predicted_counts, "predicted class"))


def drift_signals(inp: ScoringReportInput) -> list[dict[str, Any]]:
    """The drift signals of a run: class mix, length, out-of-vocabulary share and low-confidence share."""
    rows, min_rows = _scored_rows(inp), inp.thresholds.min_rows
    reliable = rows >= min_rows
    signals = [_class_mix_signal(inp), _length_signal(inp), _oov_signal(inp), _low_confidence_signal(inp)]
    for s in signals:
        s["reliable"] = reliable
        if not reliable:
            # Shares of a handful of rows swing widely: say so, and never page anyone over them.
            capped = s["status"] == "alert"
            s["message"] += (f" Only {rows:,} rows were scored (fewer than {min_rows:,}), so this figure "
                             f"is unreliable{' and shown as a warning, not an alert' if capped else ''}.")
            if capped:
                s["status"] = "warning"
    return signals


# -- report dict ---------------------------------------------------------------------------------------------------


def _class_names(inp: ScoringReportInput) -> list[str]:
    """The model's classes, then any other class seen in the predicted or training counts."""
    return [str(c) for c in dict.fromkeys([*inp.classes, *inp.predicted_counts, *inp.training_class_counts])]


def _counts_consistent(counts: Mapping[str, int]) -> bool | None:
    """Whether rows + quarantined_rows == input_rows (None when a count is missing)."""
    if any(counts.get(k) is None for k in ("rows", "quarantined_rows", "input_rows")):
        return None
    return int(counts["rows"]) + int(counts["quarantined_rows"]) == int(counts["input_rows"])


def _report_dict(inp: ScoringReportInput, signals: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready report."""
    names = _class_names(inp)
    predicted = {c: int(inp.predicted_counts.get(c, 0)) for c in names}
    training = {c: int(inp.training_class_counts.get(c, 0)) for c in names}
    return _jsonable({
        "run_date": inp.run_date,
        "model_version": inp.model_version,
        "counts": dict(inp.counts),
        "counts_consistent": _counts_consistent(inp.counts),
        "reliable": _scored_rows(inp) >= inp.thresholds.min_rows,
        "classes": list(inp.classes),
        "predicted_counts": predicted,
        "predicted_shares": _shares(predicted),
        "training_class_counts": training,
        "training_shares": _shares(training),
        "confidence_hist": [int(c) for c in inp.confidence_hist],
        "low_confidence_threshold": LOW_CONFIDENCE,
        "low_confidence_share": _low_confidence(inp.confidence_hist),
        "mean_confidence_estimate": _mean_confidence(inp.confidence_hist),
        "length_bins": dict(inp.length_bins),
        "training_length_bins": dict(inp.training_length_bins) if inp.training_length_bins is not None else None,
        "oov_rate": inp.oov_rate,
        "training_oov_rate": inp.training_oov_rate,
        "signals": signals,
        "warnings": [s for s in signals if s["status"] != "ok"],
        "batch_signals": inp.batch_signals,
        "links": {"predictions": inp.predictions_uri, "data_docs": inp.validation_docs_uri,
                  "model_report": inp.model_report_uri},
        "thresholds": asdict(inp.thresholds),
    })


# -- report: figures -----------------------------------------------------------------------------------------------


def _finish_axes(ax: Axes, names: Sequence[str], xlabel: str, ylabel: str, title: str) -> None:
    """Category ticks (rotated when many), labels, grid and legend."""
    many = len(names) > 6
    ax.set_xticks(range(len(names)), [_plot_text(n, 20) for n in names], rotation=45 if many else 0,
                  ha="right" if many else "center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _paired_bars_figure(names: Sequence[str], baseline: Sequence[float], current: Sequence[float], *,
                        current_label: str, xlabel: str, title: str) -> str:
    """Grouped bars: training share and this run's share per category."""
    fig = _new_figure(min(max(5.5, 0.55 * len(names) + 2), 16), 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x - 0.2, baseline, 0.4, label="training", color="#9a9a9a")
    ax.bar(x + 0.2, current, 0.4, label=current_label, color="#4a7bd0")
    _finish_axes(ax, names, xlabel, "share of documents", title)
    return _png_uri(fig)


def _confidence_figure(hist: Sequence[int]) -> str:
    """Histogram of the top probability, bins below LOW_CONFIDENCE in orange."""
    fig = _new_figure(6.5, 3.4)
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
    return _png_uri(fig)


def _batch_value(batch: Mapping[str, Any], key: str) -> float:
    """A batch's numeric signal, NaN when missing (a gap in the line)."""
    value = batch.get(key)
    return float(value) if isinstance(value, int | float | np.number) and not isinstance(value, bool) else math.nan


def _batch_figure(batches: Sequence[Mapping[str, Any]], training_oov_rate: float | None) -> str:
    """Out-of-vocabulary share and mean confidence per batch, in scoring order, with training's OOV share."""
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(8, 2.8)
    ax = fig.add_subplot()
    x = np.arange(1, len(batches) + 1)
    marker = "o" if len(batches) <= 50 else None
    for key, label, color in (("oov_rate", "out-of-vocabulary share", "#e09000"),
                              ("mean_confidence", "mean confidence", "#4a7bd0")):
        ax.plot(x, [_batch_value(b, key) for b in batches], marker=marker, ms=3, lw=1.2, label=label, color=color)
    if training_oov_rate is not None and math.isfinite(training_oov_rate):
        ax.axhline(training_oov_rate, color="#e09000", ls=":", lw=1, label="out-of-vocabulary share in training")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("batch (scoring order)")
    ax.set_title("Per-batch signals")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    return _png_uri(fig)


# -- report: HTML --------------------------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    """A share as a percentage; a dash when missing."""
    if value is None or not isinstance(value, int | float | np.number) or not math.isfinite(value):
        return "\u2013"
    return f"{float(value):.1%}"


def _link(uri: str | None, missing: str) -> str:
    """An escaped link to ``uri``; plain text for unsafe schemes, ``missing`` when there is none."""
    if not uri:
        return f'<span class="note">{_e(missing)}</span>'
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        scheme = "?"
    if scheme not in LINK_SCHEMES:
        return f"<code>{_e(uri)}</code>"
    return f'<a href="{_e(uri)}">{_e(uri)}</a>'


def _count_check_html(counts: Mapping[str, int]) -> str:
    """The rows + quarantined_rows == input_rows check, spelled out."""
    ok = _counts_consistent(counts)
    if ok is None:
        return ('<p class="note">Row accounting not checked: the counts lack one of rows, quarantined_rows '
                "and input_rows.</p>")
    rows, quarantined, total = (int(counts[k]) for k in ("rows", "quarantined_rows", "input_rows"))
    sums = f"scored rows + quarantined rows = {rows:,} + {quarantined:,} = {rows + quarantined:,}"
    if ok:
        return f'<p class="ok">\u2713 {sums} = input rows. Every input row is accounted for.</p>'
    return (f'<p class="warn">\u2717 {sums}, but input rows = {total:,}: {abs(total - rows - quarantined):,} rows '
            "are unaccounted for.</p>")


def _summary_body(inp: ScoringReportInput, report: Mapping[str, Any]) -> str:
    """Run, model, counts with the row accounting check, and links."""
    rows = [["run date", _e(inp.run_date)], ["model version", f"<code>{_e(inp.model_version)}</code>"]]
    rows += [[_e(COUNT_LABELS.get(k, str(k).replace("_", " "))), _num(v)] for k, v in report["counts"].items()]
    rows += [["mean confidence (estimate)", _num(report["mean_confidence_estimate"], 3)],
             [f"share with confidence &lt; {LOW_CONFIDENCE}", _pct(report["low_confidence_share"])]]
    links = (f"<ul><li>Predictions: {_link(inp.predictions_uri, 'none')}</li>"
             f"<li>Validation Data Docs: {_link(inp.validation_docs_uri, 'no Data Docs for this run')}</li>"
             f"<li>Model report: {_link(inp.model_report_uri, 'no model report recorded')}</li></ul>")
    return _table_html(["", "value"], rows, numeric=(1,)) + _count_check_html(report["counts"]) + links


def _unreliable_note(inp: ScoringReportInput) -> str:
    """A note box when too few rows were scored for the drift figures to mean much."""
    rows, min_rows = _scored_rows(inp), inp.thresholds.min_rows
    if rows >= min_rows:
        return ""
    return (f'<div class="box note"><b>unreliable</b> Only {rows:,} rows were scored (fewer than {min_rows:,}): '
            "the drift figures are shown but may swing widely, and none raises more than a warning.</div>")


def _warnings_body(inp: ScoringReportInput, report: Mapping[str, Any]) -> str:
    """One coloured box per warning, or an explicit all-clear line."""
    parts = [f'<div class="box {_e(w["status"])}"><b>{_e(w["status"])}</b> {_e(w["label"])}: {_e(w["message"])}'
             "</div>" for w in report["warnings"]]
    if report["counts_consistent"] is False:
        parts.append('<div class="box alert"><b>row accounting</b> Scored and quarantined rows do not add up to '
                     "the input rows (see the summary).</div>")
    if not report["warnings"]:
        parts.append('<p class="ok">\u2713 No drift warnings: every signal is within its thresholds.</p>')
    parts.append(_unreliable_note(inp))
    return "\n".join(p for p in parts if p)


def _class_mix_body(report: Mapping[str, Any]) -> str:
    """Grouped bars of training vs predicted share per class, and the table."""
    names = list(report["predicted_counts"])
    if not names:
        return "<p>No classes.</p>"
    training, predicted = report["training_shares"], report["predicted_shares"]
    image = _paired_bars_figure(names, [training[c] for c in names], [predicted[c] for c in names],
                                current_label="predicted", xlabel="class",
                                title="Class shares: training labels vs predictions")
    rows = [[_e(c), _num(report["training_class_counts"][c]), _pct(training[c]), _num(report["predicted_counts"][c]),
             _pct(predicted[c]), f"{(predicted[c] - training[c]) * 100:+.1f}"] for c in names]
    table = _table_html(["class", "training rows", "training share", "predicted", "predicted share",
                         "change (points)"], rows, numeric=(1, 2, 3, 4, 5))
    return _img(image, "training share and predicted share per class") + table


def _confidence_body(report: Mapping[str, Any]) -> str:
    """Confidence histogram and the low-confidence share."""
    hist = report["confidence_hist"]
    if not sum(hist):
        return "<p>No predictions: the confidence histogram is empty.</p>"
    return (_img(_confidence_figure(hist), "histogram of prediction confidence")
            + f"<p>{_pct(report['low_confidence_share'])} of predictions have confidence below {LOW_CONFIDENCE} "
            f"(warning above {_pct(report['thresholds']['low_confidence_share'])}); mean confidence about "
            f"{_num(report['mean_confidence_estimate'], 3)} (estimated from the {len(hist)} histogram bins' "
            "midpoints).</p>")


def _value_cell(signal: Mapping[str, Any], key: str) -> str:
    """A signal's value or baseline: PSI as a number, shares as percentages."""
    value = signal.get(key)
    return _num(value) if signal["name"].endswith("_psi") else _pct(value)


def _threshold_text(signal: Mapping[str, Any]) -> str:
    """A signal's thresholds in words."""
    t = signal["threshold"]
    if signal["name"].endswith("_psi"):
        return f"warning &gt; {t['warning']:.2f}, alert &gt; {t['alert']:.2f}"
    if signal["name"] == "oov_rate":
        return f"warning if it rises &gt; {t['warning'] * 100:.1f} points"
    return f"warning &gt; {_pct(t['warning'])}"


def _drift_body(inp: ScoringReportInput, report: Mapping[str, Any]) -> str:
    """Signal table with statuses and thresholds, and the length bins of training vs this run."""
    rows = [[_e(s["label"]), _value_cell(s, "value"), _value_cell(s, "baseline"), _threshold_text(s),
             f'<span class="status-{_e(s["status"])}">{_e(s["status"])}{" (not checked)" if s["skipped"] else ""}'
             f"</span>", _e(s["message"])] for s in report["signals"]]
    parts = [_unreliable_note(inp),
             _table_html(["signal", "value", "training", "thresholds", "status", "message"], rows, numeric=(1, 2))]
    scored, training = report["length_bins"], report["training_length_bins"]
    names = list(dict.fromkeys([*(training or {}), *scored]))
    if not names:
        parts.append("<p>No length bins recorded.</p>")
        return "\n".join(p for p in parts if p)
    scored_shares, training_shares = _shares(scored), _shares(training or {})
    if training is None:
        parts.append('<p class="note">This model version records no training length bins: only this run\'s '
                     "lengths are shown.</p>")
    parts.append(_img(_paired_bars_figure(names, [training_shares.get(n, 0.0) for n in names],
                                          [scored_shares.get(n, 0.0) for n in names], current_label="scored",
                                          xlabel="words per document", title="Document lengths: training vs scored"),
                      "share of documents per word-count bin, training and scored"))
    parts.append(_table_html(["words", "training docs", "training share", "scored docs", "scored share"],
                             [[_e(n), _num((training or {}).get(n)), _pct(training_shares.get(n)) if training else
                               "\u2013", _num(scored.get(n, 0)), _pct(scored_shares.get(n, 0.0))] for n in names],
                             numeric=(1, 2, 3, 4)))
    return "\n".join(parts)


def _batch_cell(batch: Mapping[str, Any], key: str, inp: ScoringReportInput) -> str:
    """One per-batch value, highlighted when it alone would cross its run-level threshold."""
    value = batch.get(key)
    if key in ("oov_rate", "mean_confidence", "low_confidence_share"):
        text = _num(value, 4)
    elif key == "mean_words":
        text = _num(value, 1)
    else:
        text = _num(value)  # strings (batch ids) come back escaped
    number = _batch_value(batch, key)
    t = inp.thresholds
    high = ((key == "oov_rate" and inp.training_oov_rate is not None
             and number - inp.training_oov_rate > t.oov_increase)
            or (key == "low_confidence_share" and number > t.low_confidence_share))
    return f'<span class="warn">{text}</span>' if high else text


def _batches_body(inp: ScoringReportInput, report: Mapping[str, Any]) -> str:
    """Per-batch signal table (both ends only when long) and the per-batch line plot."""
    batches = report["batch_signals"]
    if not batches:
        return "<p>No batch signals recorded.</p>"
    columns = list(dict.fromkeys([*BATCH_COLUMNS, *(k for b in batches for k in b)]))
    numeric = tuple(range(1, len(columns)))
    rows = [[_batch_cell(b, k, inp) for k in columns] for b in batches]
    note = ""
    if len(rows) > MAX_BATCH_ROWS:
        hidden = len(rows) - 2 * BATCH_EDGE_ROWS
        rows = [*rows[:BATCH_EDGE_ROWS], [f"\u2026 {hidden:,} batches not shown \u2026", *[""] * (len(columns) - 1)],
                *rows[-BATCH_EDGE_ROWS:]]
        note = (f'<p class="note">{len(batches):,} batches: the table shows the first and last {BATCH_EDGE_ROWS} '
                "(the plot shows all).</p>")
    image = _batch_figure(batches, inp.training_oov_rate)
    return (_img(image, "out-of-vocabulary share and mean confidence per batch") + note
            + _table_html([_e(c.replace("_", " ")) for c in columns], rows, numeric=numeric))


def _about_body(inp: ScoringReportInput) -> str:
    """How the signals are computed."""
    t = inp.thresholds
    return (f"<p>The population stability index (PSI) compares two distributions bin by bin as the sum of "
            f"(current share \u2212 training share) \u00d7 ln(current share / training share), shares floored at "
            f"{PSI_EPS:g}; up to {t.psi_warning:.2f} is stable, up to {t.psi_alert:.2f} a moderate shift, above "
            f"it a major one. It is computed for the predicted classes against the labeled training rows per class, "
            f"and for the word-count bins of the scored documents against the training documents. The "
            f"out-of-vocabulary share (scored tokens missing from the model's vocabulary) is compared with the "
            f"same share on the model's validation split at training time and warns when it rises by more than "
            f"{t.oov_increase * 100:.1f} points, and the low-confidence share counts predictions whose highest "
            f"probability is below {LOW_CONFIDENCE}, warning above {t.low_confidence_share:.0%}; with fewer than "
            f"{t.min_rows:,} scored rows every figure is flagged as unreliable and none goes beyond a warning.</p>")


def render_scoring_report(inp: ScoringReportInput, report: Mapping[str, Any]) -> str:
    """One self-contained HTML page of a scoring run; every data-derived text escaped."""
    bodies = {
        "summary": ("Summary", _summary_body(inp, report)),
        "warnings": ("Warnings", _warnings_body(inp, report)),
        "class-mix": ("Class mix", _class_mix_body(report)),
        "confidence": ("Confidence", _confidence_body(report)),
        "drift": ("Drift signals", _drift_body(inp, report)),
        "batches": ("Batches", _batches_body(inp, report)),
        "about": ("About these signals", _about_body(inp)),
    }
    return render_page(f"Scoring report {inp.run_date}: model {inp.model_version}", bodies, SECTION_IDS,
                       extra_css=_EXTRA_CSS)


def build_scoring_report(inp: ScoringReportInput) -> tuple[dict[str, Any], str]:
    """The scoring report of a run: (JSON-ready report dict, self-contained HTML page)."""
    signals = drift_signals(inp)
    report = _report_dict(inp, signals)
    for w in report["warnings"]:
        log.warning("scoring report %s (model %s): %s %s", inp.run_date, inp.model_version, w["status"],
                    w["message"])
    page = render_scoring_report(inp, report)
    log.info("scoring report %s (model %s): %d of %d signals flagged, page %.2f MB", inp.run_date,
             inp.model_version, len(report["warnings"]), len(signals), len(page) / 1e6)
    return report, page
