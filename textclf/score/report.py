"""The nightly scoring report: drift between the training data and the documents being scored.

The scoring stage accumulates bounded statistics while it scores (class counts, a confidence
histogram, word-count bins, out-of-vocabulary counts, per-batch signals) and hands them over
as a ``ScoringReportInput``. ``build_scoring_report`` turns them into drift signals, a
JSON-ready report and one self-contained HTML page; nothing here touches storage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from textclf.report.figures import batch_figure, batch_value, confidence_figure, paired_bars_figure
from textclf.report.html import _e, _img, _num, _table_html, render_page
from textclf.score.drift import (
    PSI_EPS,
    ScoringReportInput,
    counts_consistent,
    drift_signals,
    report_dict,
    scored_rows,
    shares_of,
)
from textclf.textstats import LOW_CONFIDENCE

log = logging.getLogger(__name__)


SECTION_IDS = ("summary", "warnings", "class-mix", "confidence", "drift", "batches", "about")

# Beyond this many batches the table shows only its two ends: the page stays readable and small.
MAX_BATCH_ROWS = 200

BATCH_EDGE_ROWS = 100

BATCH_COLUMNS = ("batch", "rows", "oov_rate", "mean_words", "max_words", "mean_confidence", "low_confidence_share")

COUNT_LABELS = {"input_rows": "input rows", "rows": "scored rows", "quarantined_rows": "quarantined rows",
                "duplicates_removed": "duplicates removed"}

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
    ok = counts_consistent(counts)
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
    rows, min_rows = scored_rows(inp), inp.thresholds.min_rows
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
    image = paired_bars_figure(names, [training[c] for c in names], [predicted[c] for c in names],
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
    return (_img(confidence_figure(hist), "histogram of prediction confidence")
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
    scored_shares, training_shares = shares_of(scored), shares_of(training or {})
    if training is None:
        parts.append('<p class="note">This model version records no training length bins: only this run\'s '
                     "lengths are shown.</p>")
    parts.append(_img(paired_bars_figure(names, [training_shares.get(n, 0.0) for n in names],
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
    number = batch_value(batch, key)
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
    image = batch_figure(batches, inp.training_oov_rate)
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
    report = report_dict(inp, signals)
    for w in report["warnings"]:
        log.warning("scoring report %s (model %s): %s %s", inp.run_date, inp.model_version, w["status"],
                    w["message"])
    page = render_scoring_report(inp, report)
    log.info("scoring report %s (model %s): %d of %d signals flagged, page %.2f MB", inp.run_date,
             inp.model_version, len(report["warnings"]), len(signals), len(page) / 1e6)
    return report, page
