"""Drift signals between the training data and the documents being scored: PSI, OOV rise, low confidence."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from textclf.common import jsonable
from textclf.textstats import LOW_CONFIDENCE, MIN_RELIABLE_ROWS

PSI_EPS = 1e-4

SIGNAL_LABELS = {
    "predicted_class_mix_psi": "Predicted class mix (PSI)",
    "length_psi": "Document length (PSI)",
    "oov_rate": "Out-of-vocabulary token share",
    "low_confidence_share": f"Share with confidence < {LOW_CONFIDENCE}",
}


@dataclass(frozen=True)
class DriftThresholds:
    """When a drift signal turns into a warning or an alert."""

    psi_warning: float = 0.10  # population stability index: 0.1-0.25 moderate shift
    psi_alert: float = 0.25  # above: major shift
    oov_increase: float = 0.05  # absolute rise of the out-of-vocabulary token share over training
    low_confidence_share: float = 0.20  # share of predictions with confidence < 0.5
    min_rows: int = MIN_RELIABLE_ROWS  # fewer scored rows: drift figures are shown but flagged as unreliable

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


def _total(counts: Mapping[str, float], name: str) -> float:
    """Sum of a distribution's values, or a ValueError naming a negative or non-finite one."""
    total = 0.0
    for key, value in counts.items():
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} distribution has value {value!r} for {key!r}; counts must be finite and >= 0")
        total += v
    return total


def shares_of(counts: Mapping[str, float]) -> dict[str, float]:
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
    base_shares, shares = shares_of(baseline), shares_of(current)
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


def scored_rows(inp: ScoringReportInput) -> int:
    """Scored rows as counted by the caller, else the sum of the predicted counts."""
    rows = inp.counts.get("rows")
    return int(rows) if rows is not None else int(_total(inp.predicted_counts, "predicted class"))


def drift_signals(inp: ScoringReportInput) -> list[dict[str, Any]]:
    """The drift signals of a run: class mix, length, out-of-vocabulary share and low-confidence share."""
    rows, min_rows = scored_rows(inp), inp.thresholds.min_rows
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


def _class_names(inp: ScoringReportInput) -> list[str]:
    """The model's classes, then any other class seen in the predicted or training counts."""
    return [str(c) for c in dict.fromkeys([*inp.classes, *inp.predicted_counts, *inp.training_class_counts])]


def counts_consistent(counts: Mapping[str, int]) -> bool | None:
    """Whether rows + quarantined_rows == input_rows (None when a count is missing)."""
    if any(counts.get(k) is None for k in ("rows", "quarantined_rows", "input_rows")):
        return None
    return int(counts["rows"]) + int(counts["quarantined_rows"]) == int(counts["input_rows"])


def report_dict(inp: ScoringReportInput, signals: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready report."""
    names = _class_names(inp)
    predicted = {c: int(inp.predicted_counts.get(c, 0)) for c in names}
    training = {c: int(inp.training_class_counts.get(c, 0)) for c in names}
    return jsonable({
        "run_date": inp.run_date,
        "model_version": inp.model_version,
        "counts": dict(inp.counts),
        "counts_consistent": counts_consistent(inp.counts),
        "reliable": scored_rows(inp) >= inp.thresholds.min_rows,
        "classes": list(inp.classes),
        "predicted_counts": predicted,
        "predicted_shares": shares_of(predicted),
        "training_class_counts": training,
        "training_shares": shares_of(training),
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
