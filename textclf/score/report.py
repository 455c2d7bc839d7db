"""The nightly scoring report: drift between the training data and the documents being scored.

The scoring stage accumulates bounded statistics while it scores (class counts, a confidence
histogram, word-count bins, out-of-vocabulary counts, per-batch signals) and hands them over
as a ``ScoringReportInput``. ``build_scoring_report`` turns them into drift signals, a
JSON-ready report and one self-contained HTML page; nothing here touches storage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from textclf.report.figures import batch_figure, batch_value, confidence_figure, paired_bars_figure
from textclf.report.render import Cell, render
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


SECTIONS = (("summary", "Summary"), ("warnings", "Warnings"), ("class-mix", "Class mix"),
            ("confidence", "Confidence"), ("drift", "Drift signals"), ("batches", "Batches"),
            ("about", "About these signals"))

SECTION_IDS = tuple(sid for sid, _ in SECTIONS)

# Beyond this many batches the table shows only its two ends: the page stays readable and small.
MAX_BATCH_ROWS = 200

BATCH_EDGE_ROWS = 100

BATCH_COLUMNS = ("batch", "rows", "oov_rate", "mean_words", "max_words", "mean_confidence", "low_confidence_share")

# How each known batch column is written; any other column is written as a plain number.
BATCH_KINDS = {"batch": "text", "oov_rate": "num:4", "mean_words": "num:1", "mean_confidence": "num:4",
               "low_confidence_share": "num:4"}

COUNT_LABELS = {"input_rows": "input rows", "rows": "scored rows", "quarantined_rows": "quarantined rows",
                "duplicates_removed": "duplicates removed"}


def _summary(inp: ScoringReportInput, report: Mapping[str, Any]) -> dict[str, Any]:
    """Run, model, counts with the row accounting check, and links."""
    rows: list[list[Any]] = [["run date", inp.run_date], ["model version", Cell(inp.model_version, kind="code")]]
    rows += [[COUNT_LABELS.get(k, str(k).replace("_", " ")), v] for k, v in report["counts"].items()]
    rows += [["mean confidence (estimate)", Cell(report["mean_confidence_estimate"], kind="num:3")],
             [f"share with confidence < {LOW_CONFIDENCE}", Cell(report["low_confidence_share"], kind="pct")]]
    counts = report["counts"]
    check = None
    if counts_consistent(counts) is not None:
        scored, quarantined, total = (int(counts[k]) for k in ("rows", "quarantined_rows", "input_rows"))
        check = {"ok": counts_consistent(counts), "rows": scored, "quarantined": quarantined, "input": total,
                 "missing": abs(total - scored - quarantined)}
    return {"rows": rows, "check": check, "predictions_uri": inp.predictions_uri,
            "validation_docs_uri": inp.validation_docs_uri, "model_report_uri": inp.model_report_uri}


def _class_mix(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Grouped bars of training vs predicted share per class, and the table; None without classes."""
    names = list(report["predicted_counts"])
    if not names:
        return None
    training, predicted = report["training_shares"], report["predicted_shares"]
    image = paired_bars_figure(names, [training[c] for c in names], [predicted[c] for c in names],
                               current_label="predicted", xlabel="class",
                               title="Class shares: training labels vs predictions")
    rows = [[c, report["training_class_counts"][c], training[c], report["predicted_counts"][c], predicted[c],
             (predicted[c] - training[c]) * 100] for c in names]
    return {"image": image, "rows": rows}


def _confidence(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Confidence histogram and the low-confidence share; None when nothing was predicted."""
    hist = report["confidence_hist"]
    if not sum(hist):
        return None
    return {"image": confidence_figure(hist), "share": report["low_confidence_share"],
            "warning": report["thresholds"]["low_confidence_share"], "mean": report["mean_confidence_estimate"],
            "bins": len(hist)}


def _threshold_text(signal: Mapping[str, Any]) -> str:
    """A signal's thresholds in words."""
    t = signal["threshold"]
    if signal["name"].endswith("_psi"):
        return f"warning > {t['warning']:.2f}, alert > {t['alert']:.2f}"
    if signal["name"] == "oov_rate":
        return f"warning if it rises > {t['warning'] * 100:.1f} points"
    return f"warning > {t['warning']:.1%}"


def _drift(report: Mapping[str, Any]) -> dict[str, Any]:
    """Signal rows with statuses and thresholds, and the length bins of training vs this run."""
    signals = []
    for s in report["signals"]:
        kind = "num" if s["name"].endswith("_psi") else "pct"  # PSI is a number, the other signals are shares
        signals.append([s["label"], Cell(s.get("value"), kind=kind), Cell(s.get("baseline"), kind=kind),
                        _threshold_text(s),
                        Cell(s["status"] + (" (not checked)" if s["skipped"] else ""), css=f"status-{s['status']}"),
                        s["message"]])
    scored, training = report["length_bins"], report["training_length_bins"]
    names = list(dict.fromkeys([*(training or {}), *scored]))
    lengths = None
    if names:
        scored_shares, training_shares = shares_of(scored), shares_of(training or {})
        image = paired_bars_figure(names, [training_shares.get(n, 0.0) for n in names],
                                   [scored_shares.get(n, 0.0) for n in names], current_label="scored",
                                   xlabel="words per document", title="Document lengths: training vs scored")
        lengths = {"image": image, "has_training": training is not None,
                   "rows": [[n, (training or {}).get(n), training_shares.get(n) if training else None,
                             scored.get(n, 0), scored_shares.get(n, 0.0)] for n in names]}
    return {"signals": signals, "lengths": lengths}


def _batch_row(number: int, batch: Mapping[str, Any], columns: list[str], inp: ScoringReportInput) -> list[Any]:
    """One batch's table row, values that alone would cross their run-level threshold flagged."""
    t = inp.thresholds
    row: list[Any] = []
    for key in columns:
        if key == "batch":
            row.append(number)
            continue
        value, number_value = batch.get(key), batch_value(batch, key)
        high = ((key == "oov_rate" and inp.training_oov_rate is not None
                 and number_value - inp.training_oov_rate > t.oov_increase)
                or (key == "low_confidence_share" and number_value > t.low_confidence_share))
        row.append(Cell(value, css="warn") if high else value)
    return row


def _batches(inp: ScoringReportInput, report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per-batch rows (both ends only when long) and the per-batch line plot; None without batches."""
    batches = report["batch_signals"]
    if not batches:
        return None
    columns = list(dict.fromkeys([*BATCH_COLUMNS, *(k for b in batches for k in b)]))
    # Numbered from 1 in scoring order, as on the figure's x axis (report.json's `batch` counts from 0).
    rows = [_batch_row(i + 1, b, columns, inp) for i, b in enumerate(batches)]
    head, tail, gap = rows, [], None
    if len(rows) > MAX_BATCH_ROWS:
        head, tail = rows[:BATCH_EDGE_ROWS], rows[-BATCH_EDGE_ROWS:]
        gap = f"\u2026 {len(rows) - 2 * BATCH_EDGE_ROWS:,} batches not shown \u2026"
    return {"image": batch_figure(batches, inp.training_oov_rate), "count": len(batches), "edge": BATCH_EDGE_ROWS,
            "columns": [(c.replace("_", " "), BATCH_KINDS.get(c, "num")) for c in columns],
            "rows": head, "tail": tail, "gap": gap}


def render_scoring_report(inp: ScoringReportInput, report: Mapping[str, Any]) -> str:
    """One self-contained HTML page of a scoring run; every data-derived text escaped."""
    rows = scored_rows(inp)
    return render(
        "scoring_report.html",
        title=f"Scoring report {inp.run_date}: model {inp.model_version}", sections=SECTIONS,
        summary=_summary(inp, report), warnings=report["warnings"],
        counts_consistent=report["counts_consistent"],
        unreliable={"rows": rows, "min_rows": inp.thresholds.min_rows} if rows < inp.thresholds.min_rows else None,
        class_mix=_class_mix(report), confidence=_confidence(report), drift=_drift(report),
        batches=_batches(inp, report), thresholds=inp.thresholds, psi_eps=PSI_EPS, low_confidence=LOW_CONFIDENCE,
    )


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
