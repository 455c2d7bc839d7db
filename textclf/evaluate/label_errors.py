"""Suspected label errors: test rows whose given label looks wrong."""

from __future__ import annotations

from typing import Any

import numpy as np

from textclf.common import truncate
from textclf.evaluate.predictions import EvaluationInput, checked_probs
from textclf.model.data import label_indices

# A prediction for another class counts as confident at or above its class's own average confidence
# (the mean probability the model gives class k on the rows labeled k: a per-class threshold, as in
# confident learning), clipped to [MIN_CONFIDENT, CONFIDENTLY_WRONG]: 0.9 always counts, < 0.5 never.
CONFIDENTLY_WRONG = 0.9
MIN_CONFIDENT = 0.5

FAR_PERCENTILE = 99.0

# Below this Euclidean distance from its class mean a row is not "far", whatever its rank:
# without a floor every class of a near-perfect model would flag its least typical row.
FAR_MIN_DISTANCE = 0.2

ERROR_TEXT_CHARS = 300


def suspected_label_errors(inp: EvaluationInput, limit: int = 50) -> list[dict[str, Any]]:
    """Test rows whose given label the model's probabilities argue against, most doubtful first.

    With ``p`` a row's probability vector, ``y`` its given label and ``c_y`` the centroid of its class
    (the mean probability vector of the test rows labeled ``y``), a row is suspected when

    - ``confidently_wrong``: another class ``k`` is predicted, and confidently: ``p[k] >= t_k``, where
      ``t_k`` is class ``k``'s average self-confidence (the mean ``p[k]`` of the rows labeled ``k``)
      clipped to [``MIN_CONFIDENT``, ``CONFIDENTLY_WRONG``] = [0.5, 0.9]; or
    - ``far_from_class``: it sits far from its class's centroid *on the side of doubt*: its distance
      ``||p - c_y||`` is above the class's ``FAR_PERCENTILE`` (99th) percentile and at least
      ``FAR_MIN_DISTANCE``, and ``p[y]`` is below ``c_y[y]``. A row more confident in its label than
      its class on average is never "far", however atypical its vector (it used to be: a row labeled
      and predicted ``cooking`` at p = 0.919 was listed).

    Both kinds are scored the same way, ``score = 1 - p[y]``: how much probability the model puts on
    other labels, in [0, 1]. A planted label error that the model classifies correctly scores close to
    1 and comes first (tests/test_evaluation.py measures it on the demo corpus's planted noise). Rows
    whose label the model does not know are left out (nothing to compare).
    """
    if limit <= 0 or not inp.doc_ids:
        return []
    probs = checked_probs(inp.probs, len(inp.classes))
    y = label_indices(inp.classes, inp.labels)
    pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    known = y >= 0
    p_label = np.where(known, probs[np.arange(len(y)), np.maximum(y, 0)], np.nan)
    distance = np.full(len(y), np.nan)
    far = np.zeros(len(y), dtype=bool)
    for c in range(len(inp.classes)):
        rows = np.flatnonzero(y == c)
        if rows.size < 2:
            continue
        centroid = probs[rows].mean(axis=0)
        d = np.linalg.norm(probs[rows] - centroid, axis=1)
        distance[rows] = d
        doubtful = probs[rows, c] < centroid[c]
        far[rows] = (d > np.percentile(d, FAR_PERCENTILE)) & (d >= FAR_MIN_DISTANCE) & doubtful
    thresholds = np.full(len(inp.classes), CONFIDENTLY_WRONG)
    for c in range(len(inp.classes)):
        if (y == c).any():
            thresholds[c] = np.clip(probs[y == c, c].mean(), MIN_CONFIDENT, CONFIDENTLY_WRONG)
    wrong = known & (pred != y) & (confidence >= thresholds[pred])

    found = []
    for i in np.flatnonzero(wrong | far).tolist():
        found.append({
            "doc_id": str(inp.doc_ids[i]),
            "text": truncate(str(inp.texts[i]), ERROR_TEXT_CHARS),
            "label": str(inp.labels[i]),
            "predicted": inp.classes[pred[i]],
            "confidence": float(confidence[i]),
            "label_probability": float(p_label[i]),
            "reason": "confidently_wrong" if wrong[i] else "far_from_class",
            "score": float(1.0 - p_label[i]),
            "distance_from_class": None if np.isnan(distance[i]) else float(distance[i]),
        })
    # Stable sort: equal scores keep test-split order, so the list is deterministic.
    found.sort(key=lambda row: -row["score"])
    return found[:limit]
