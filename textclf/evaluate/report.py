"""The model report: one self-contained HTML page of a version's evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textclf.evaluate.explain import WORD_RE
from textclf.evaluate.label_errors import CONFIDENTLY_WRONG
from textclf.evaluate.maps import (
    PROJECTOR_CONFIG,
    PROJECTOR_DIR,
    PROJECTOR_METADATA,
    PROJECTOR_TENSORS,
    probability_correlation,
)
from textclf.evaluate.predictions import EvaluationInput
from textclf.report.figures import curves_figure, map_figure, matrix_figure, method_name, reliability_figure
from textclf.report.render import config_tree, render
from textclf.textstats import LOW_CONFIDENCE, MIN_RELIABLE_ROWS

SECTIONS = (
    ("summary", "Summary"), ("per-class", "Per-class scores"), ("linear-reference", "Linear reference"),
    ("confusion-matrix", "Confusion matrix"), ("training-curves", "Training curves"), ("calibration", "Calibration"),
    ("probability-correlation", "Correlation of class probabilities"), ("probability-map", "Probability map"),
    ("projector", "Embedding Projector"), ("explanations", "Explained predictions"),
    ("label-errors", "Suspected label errors"),
)

SECTION_IDS = tuple(sid for sid, _ in SECTIONS)

# Shown only when the training record holds candidates, right after the training curves.
MODEL_SELECTION = ("model-selection", "Model selection")


def highlighted_spans(text: str, words: Sequence[Mapping[str, Any]]) -> list[tuple[str, float | None]]:
    """The text cut into (text, weight) spans: each explained word with its LIME weight, the rest with None."""
    weight_of = {str(w["word"]).casefold(): float(w["weight"]) for w in words}
    spans: list[tuple[str, float | None]] = []
    end = 0
    for m in WORD_RE.finditer(text):
        weight = weight_of.get(m.group().casefold())
        if weight is None:
            continue
        if m.start() > end:
            spans.append((text[end: m.start()], None))
        spans.append((m.group(), weight))
        end = m.end()
    if end < len(text):
        spans.append((text[end:], None))
    return spans


def restored_epoch(history: Mapping[str, Sequence[float]], monitor: str) -> int | None:
    """The 1-based epoch early stopping restored: lowest val_loss when monitored, else highest val_accuracy."""
    names = ("val_loss",) if monitor == "val_loss" else ("val_accuracy", "val_acc")
    series = next((history[n] for n in names if history.get(n)), None)
    if not series:
        return None
    values = np.asarray(series, dtype=np.float64)
    if not np.isfinite(values).any():
        return None
    # The first best, as Keras keeps it: a later equal value is no improvement.
    best = np.nanargmin(values) if monitor == "val_loss" else np.nanargmax(values)
    return int(best) + 1


def _summary(inp: EvaluationInput, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers, the small-sample and unknown-label warnings, lineage and training config."""
    headline = [
        ("model version", inp.version), ("architecture", inp.architecture), ("classes", ", ".join(inp.classes)),
        ("test rows", metrics.get("n")), ("accuracy", metrics.get("accuracy")), ("macro-F1", metrics.get("macro_f1")),
        ("weighted-F1", metrics.get("weighted_f1")),
        ("expected calibration error", metrics.get("expected_calibration_error")),
        ("log loss", metrics.get("log_loss")),
        (f"share with confidence < {LOW_CONFIDENCE}", metrics.get("low_confidence_share")),
        ("rows with labels unknown to the model", metrics.get("unknown_label_count")),
    ]
    training = inp.training or {}
    if training.get("model_bytes"):
        headline.append(("model file (MB)", round(float(training["model_bytes"]) / 2**20, 1)))
    if training.get("seconds") is not None:
        headline.append(("training seconds", training.get("seconds")))
    n = int(metrics.get("n") or 0)
    unknown = metrics.get("unknown_labels") or {}
    return {
        "headline": headline,
        "rows": n, "small_sample": n < MIN_RELIABLE_ROWS, "min_rows": MIN_RELIABLE_ROWS,
        "accuracy": metrics.get("accuracy"),
        "unknown_labels": ", ".join(f"{k} ({v})" for k, v in unknown.items()), "unknown_count": len(unknown),
        "lineage": config_tree(inp.lineage) if inp.lineage else None,
        "config": config_tree(inp.config) if inp.config else None,
    }


def _linear_reference(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """This model against the linear reference recorded in the metrics, or None when it was not computed."""
    ref = metrics.get("linear_reference")
    if not ref:
        return None

    def gain(key: str, scale: float) -> float | None:
        mine, theirs = metrics.get(key), ref.get(key)
        return None if mine is None or theirs is None else (float(mine) - float(theirs)) * scale

    return {"description": ref.get("description") or "", "seconds": ref.get("seconds"),
            "accuracy_points": gain("accuracy", 100.0), "macro_f1_gain": gain("macro_f1", 1.0),
            "rows": [["accuracy", metrics.get("accuracy"), ref.get("accuracy"), gain("accuracy", 1.0)],
                     ["macro-F1", metrics.get("macro_f1"), ref.get("macro_f1"), gain("macro_f1", 1.0)]]}


def _per_class(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Precision, recall, F1, support and predicted count per class."""
    rows = [[name, s["precision"], s["recall"], s["f1"], s["support"], s.get("predicted")]
            for name, s in metrics.get("per_class", {}).items()]
    dist = metrics.get("predicted_class_distribution", {})
    return {"rows": rows, "distribution": ", ".join(f"{k} {v}" for k, v in dist.items())}


def _confusion(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """Confusion-matrix heatmap and table (rows true, columns predicted); None without test rows."""
    cm = np.asarray(metrics.get("confusion_matrix", []), dtype=np.int64)
    rows = metrics.get("confusion_matrix_rows", [])
    cols = metrics.get("confusion_matrix_columns", [])
    if not cm.size:
        return None
    image = matrix_figure(cm, rows, cols, title="Confusion matrix (counts)", cmap="Blues", vmin=None, vmax=None,
                          fmt="d", xlabel="predicted", ylabel="true")
    return {"image": image, "columns": [("true \\ predicted", "head"), *((c, "num") for c in cols)],
            "rows": [[r, *(int(v) for v in cm[i])] for i, r in enumerate(rows)]}


def _curves(history: Mapping[str, Sequence[float]], monitor: str) -> dict[str, Any] | None:
    """Training curves and per-epoch values with the restored epoch marked; None without history."""
    series = {k: v for k, v in (history or {}).items() if isinstance(v, list | tuple) and len(v)}
    if not series:
        return None
    best = restored_epoch(series, monitor)
    epochs = max(len(v) for v in series.values())
    rows = [[e + 1, *(float(v[e]) if e < len(v) else None for v in series.values()),
             "restored" if e + 1 == best else ""] for e in range(epochs)]
    return {"image": curves_figure(series, restored_epoch=best), "rows": rows, "restored": best, "monitor": monitor,
            "columns": [("epoch", "num"), *((k, "num") for k in series), ("", "text")],
            "marked": [] if best is None else [best - 1]}


def _calibration(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Reliability diagram, ECE and the bin table."""
    bins = metrics.get("reliability_bins", [])
    ece = metrics.get("expected_calibration_error")
    rows = [[f"{b['lower']:.3f}\u2013{b['upper']:.3f}", b["count"], b["mean_confidence"], b["accuracy"]] for b in bins]
    return {"image": reliability_figure(bins, ece), "ece": ece, "bins": len(bins), "rows": rows}


def _correlation(inp: EvaluationInput) -> str | None:
    """Heatmap of the correlation between class-probability columns; None without classes."""
    corr = probability_correlation(inp.probs)
    if not corr.size:
        return None
    return matrix_figure(corr, inp.classes, inp.classes, title="Correlation of predicted class probabilities",
                         cmap="RdBu_r", vmin=-1.0, vmax=1.0, fmt=".2f", xlabel="class", ylabel="class")


def _probability_map(prob_map: Mapping[str, Any]) -> dict[str, Any]:
    """The probability map scatter and how it was made."""
    shown = len(prob_map.get("points", []))
    return {"image": map_figure(dict(prob_map)), "method": method_name(prob_map), "shown": shown,
            "rows": prob_map.get("n_rows", shown)}


def _explanation(ex: Mapping[str, Any]) -> dict[str, Any]:
    """One explained prediction: its heading facts, the highlighted text spans, the word weights and the fit."""
    label = ex.get("label")
    verdict = None if label is None else ("correct" if label == ex.get("predicted_label") else "wrong")
    words = ex.get("words", [])
    return {"doc_id": ex.get("doc_id", ""), "predicted": ex.get("predicted_label"), "confidence": ex.get("confidence"),
            "label": label, "verdict": verdict, "note": ex.get("note") or "",
            "spans": highlighted_spans(str(ex.get("text", "")), words),
            "words": [[w["word"], float(w["weight"])] for w in words],
            "intercept": ex.get("intercept"), "local_prediction": ex.get("local_prediction"), "score": ex.get("score"),
            "num_samples": ex.get("num_samples")}


def _label_error_rows(label_errors: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows of the suspected label-error table."""
    return [[r["doc_id"], r["label"], r["predicted"], r["confidence"], r.get("label_probability"),
             r["reason"].replace("_", " "), r["score"], r["text"]] for r in label_errors]


def _candidates(training: Mapping[str, Any]) -> list[list[Any]] | None:
    """Rows of the model-selection table from the training record's candidates; None when it has none."""
    candidates = training.get("candidates")
    if not candidates:
        return None
    return [[c.get("name"), ", ".join(f"{k}={v}" for k, v in (c.get("params") or {}).items()),
             c.get("validation_accuracy"), c.get("validation_macro_f1"), c.get("cv_accuracy"), c.get("seconds"),
             "selected" if c.get("selected") else (f"skipped: {c['skipped']}" if c.get("skipped") else "")]
            for c in candidates]


def render_report(inp: EvaluationInput, metrics: dict[str, Any], *, explanations: list[dict[str, Any]],
                  label_errors: list[dict[str, Any]], prob_map: dict[str, Any]) -> str:
    """One self-contained HTML page of a model version's evaluation; every data-derived text escaped."""
    candidates = _candidates(inp.training or {})
    sections = list(SECTIONS)
    if candidates is not None:
        sections.insert(SECTION_IDS.index("training-curves") + 1, MODEL_SELECTION)
    return render(
        "model_report.html",
        title=f"Model {inp.version} ({inp.architecture}): evaluation", sections=sections,
        summary=_summary(inp, metrics), linear_reference=_linear_reference(metrics), per_class=_per_class(metrics),
        confusion=_confusion(metrics), curves=_curves(inp.history, str(inp.config.get("monitor", "val_loss"))),
        candidates=candidates, selected=[i for i, c in enumerate(candidates or []) if c[-1] == "selected"],
        calibration=_calibration(metrics), correlation=_correlation(inp), probability_map=_probability_map(prob_map),
        projector_files=(PROJECTOR_TENSORS, PROJECTOR_METADATA, PROJECTOR_CONFIG), projector_dir=PROJECTOR_DIR,
        explanations=[_explanation(ex) for ex in explanations], label_errors=_label_error_rows(label_errors),
        confidently_wrong=CONFIDENTLY_WRONG, low_confidence=LOW_CONFIDENCE,
    )
