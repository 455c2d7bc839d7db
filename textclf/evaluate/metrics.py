"""Metrics of a model on its test split: accuracy, F1s, log loss, confusion matrix, calibration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from textclf.common import UNKNOWN_ROW
from textclf.evaluate.predictions import checked_probs
from textclf.model.data import LabeledData, label_indices, split_fingerprint
from textclf.textstats import LOW_CONFIDENCE

CALIBRATION_BINS = 15

# Keras clips probabilities with this epsilon in its crossentropy, so the test log loss
# is comparable with the val_loss of the training curves.
LOG_LOSS_EPS = 1e-7


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Equal-width confidence bins (right-closed), each with its count, mean confidence and accuracy."""
    # Not sklearn.calibration.calibration_curve: it drops empty bins and returns no counts, and the
    # reliability table and its figure show all 15 bins with their counts (the ECE weights).
    # Right-closed bins (lo, hi], as the usual ECE definition; confidence 0 falls into the first bin.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        in_bin = which == b
        count = int(in_bin.sum())
        rows.append({
            "lower": b / bins, "upper": (b + 1) / bins, "count": count,
            "mean_confidence": float(confidence[in_bin].mean()) if count else None,
            "accuracy": float(correct[in_bin].mean()) if count else None,
        })
    return rows


def expected_calibration_error(bins: list[dict[str, Any]]) -> float | None:
    """Count-weighted mean gap between accuracy and confidence over the bins (None without rows)."""
    total = sum(b["count"] for b in bins)
    if not total:
        return None
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["count"]))


def compute_metrics(classes: Sequence[str], labels: Sequence[str], probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, F1s, log loss, per-class scores, confusion matrix and calibration, as JSON-ready values.

    Labels unknown to the model are always errors: they never match a prediction, add an
    ``(unknown)`` confusion-matrix row, count as false positives of the predicted class, and
    get probability ``LOG_LOSS_EPS`` in the log loss. Macro and weighted F1 average over the
    model's classes that occur in the labels or the predictions (as sklearn does by default).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    classes = [str(c) for c in classes]
    k = len(classes)
    arr = checked_probs(probs, k)
    if len(labels) != arr.shape[0]:
        raise ValueError(f"{len(labels)} labels for {arr.shape[0]} probability rows")
    n = arr.shape[0]
    y = label_indices(classes, labels)
    known = y >= 0
    # An unknown label becomes class k, which no prediction (0..k-1) equals; leaving k out of
    # ``labels`` makes its rows false positives of whatever was predicted for them.
    y_true = np.where(known, y, k)
    unknown_counts = Counter(str(labels[int(i)]) for i in np.flatnonzero(~known))
    model_labels = np.arange(k)
    if n:
        pred = arr.argmax(axis=1)
        confidence = arr.max(axis=1)
        cm = confusion_matrix(y_true, pred, labels=np.arange(k + 1))[: k + bool(unknown_counts), :k]
        precision, recall, f1s, support = precision_recall_fscore_support(y_true, pred, labels=model_labels,
                                                                          zero_division=0)
    else:  # sklearn refuses empty inputs
        pred, confidence = np.zeros(0, dtype=np.int64), np.zeros(0)
        cm = np.zeros((k, k), dtype=np.int64)
        precision = recall = f1s = np.zeros(k)
        support = np.zeros(k, dtype=np.int64)
    predicted = cm.sum(axis=0)
    # sklearn's default ``labels`` (those in y_true or y_pred) would count the unknown class k: name the others.
    active = np.flatnonzero((support > 0) | (predicted > 0))
    per_class = {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1s[c]),
                        "support": int(support[c]), "predicted": int(predicted[c])}
                 for c, name in enumerate(classes)}

    # Not sklearn's log_loss: it clips at float64 eps (a confident miss costs 36, not Keras's 16.1),
    # warns on float32 softmax rows that sum to 1 only within 1e-7, and has no place for unknown labels.
    p_true = np.where(known, arr[np.arange(n), np.where(known, y, 0)], 0.0) if n else np.zeros(0)
    bins = calibration_bins(confidence, pred == y_true)
    return {
        "n": int(n),
        "classes": classes,
        "accuracy": float(accuracy_score(y_true, pred)) if n else None,
        "macro_f1": float(f1_score(y_true, pred, labels=active, average="macro", zero_division=0))
        if active.size else None,
        "weighted_f1": float(f1_score(y_true, pred, labels=model_labels, average="weighted", zero_division=0))
        if support.sum() else None,
        "log_loss": float(-np.log(np.clip(p_true, LOG_LOSS_EPS, 1.0)).mean()) if n else None,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_rows": classes + ([UNKNOWN_ROW] if unknown_counts else []),
        "confusion_matrix_columns": classes,
        "unknown_labels": dict(sorted(unknown_counts.items())),
        "unknown_label_count": int((~known).sum()),
        "expected_calibration_error": expected_calibration_error(bins),
        "calibration_bins": CALIBRATION_BINS,
        "reliability_bins": bins,
        "low_confidence_threshold": LOW_CONFIDENCE,
        "low_confidence_share": float((confidence < LOW_CONFIDENCE).mean()) if n else None,
        "predicted_class_distribution": {name: int(predicted[c]) for c, name in enumerate(classes)},
    }


def metrics_on(model_predict: Callable[[Sequence[str]], np.ndarray], classes: Sequence[str],
               test: LabeledData) -> dict[str, Any]:
    """Accuracy and macro-F1 of a model on a given test split (used by the promotion gate)."""

    metrics = compute_metrics(tuple(classes), test.labels.tolist(), model_predict(test.texts.tolist()))
    metrics["test_split"] = {"fingerprint": split_fingerprint(test.doc_ids.tolist(), test.labels.tolist()),
                             "rows": len(test)}
    return metrics
