"""Suspected label errors: test rows whose given label looks wrong."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from textclf.common import truncate
from textclf.evaluate.predictions import EvaluationInput, checked_probs
from textclf.model.data import label_indices

CONFIDENTLY_WRONG = 0.9

FAR_PERCENTILE = 99.0

# Below this Euclidean distance from its class mean a row is not "far", whatever its rank:
# without a floor every class of a near-perfect model would flag its least typical row.
FAR_MIN_DISTANCE = 0.2

ERROR_TEXT_CHARS = 300


def suspected_label_errors(inp: EvaluationInput, limit: int = 50) -> list[dict[str, Any]]:
    """Rows whose given label looks wrong: confidently predicted otherwise, or far from their class's mean.

    ``confidently_wrong``: another class predicted with confidence >= 0.9 (score = that confidence).
    ``far_from_class``: Euclidean distance of the probability vector from its true class's mean
    vector above that class's 99th percentile and at least ``FAR_MIN_DISTANCE`` (score = distance
    / sqrt(2), the largest possible distance, so both scores lie in [0, 1]). Highest score first.
    """
    if limit <= 0 or not inp.doc_ids:
        return []
    probs = checked_probs(inp.probs, len(inp.classes))
    y = label_indices(inp.classes, inp.labels)
    pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    distance = np.full(len(y), np.nan)
    far = np.zeros(len(y), dtype=bool)
    for c in range(len(inp.classes)):
        rows = np.flatnonzero(y == c)
        if rows.size < 2:
            continue
        d = np.linalg.norm(probs[rows] - probs[rows].mean(axis=0), axis=1)
        distance[rows] = d
        far[rows] = (d > np.percentile(d, FAR_PERCENTILE)) & (d >= FAR_MIN_DISTANCE)
    wrong = (pred != y) & (confidence >= CONFIDENTLY_WRONG)

    found = []
    for i in np.flatnonzero(wrong | far).tolist():
        reason, score = (("confidently_wrong", confidence[i]) if wrong[i]
                         else ("far_from_class", distance[i] / math.sqrt(2)))
        found.append({
            "doc_id": str(inp.doc_ids[i]),
            "text": truncate(str(inp.texts[i]), ERROR_TEXT_CHARS),
            "label": str(inp.labels[i]),
            "predicted": inp.classes[pred[i]],
            "confidence": float(confidence[i]),
            "label_probability": float(probs[i, y[i]]) if y[i] >= 0 else None,
            "reason": reason,
            "score": float(score),
            "distance_from_class": None if np.isnan(distance[i]) else float(distance[i]),
        })
    # Stable sort: equal scores keep test-split order, so the list is deterministic.
    found.sort(key=lambda row: -row["score"])
    return found[:limit]
