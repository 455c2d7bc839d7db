"""A model version's test-split predictions, as every evaluation step sees them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EvaluationInput:
    """A model version's test-split predictions and the context its report shows."""

    version: str
    architecture: str
    classes: tuple[str, ...]  # the model's classes, in probability-column order
    doc_ids: Sequence[str]
    texts: Sequence[str]
    labels: Sequence[str]  # true labels; may hold labels the model does not know
    probs: np.ndarray  # (n, k) predicted probabilities
    history: dict[str, list[float]]  # keras History.history; may be empty
    config: dict[str, Any]
    lineage: dict[str, Any]
    embeddings: np.ndarray | None = None  # (n, d) penultimate-layer features for the projector
    training: dict[str, Any] | None = None  # the training record (training.json), for its model-selection candidates

    def __post_init__(self) -> None:
        n = len(self.doc_ids)
        shape = np.shape(self.probs)
        if len(self.texts) != n or len(self.labels) != n:
            raise ValueError(f"evaluation input of version {self.version}: {n} doc_ids, {len(self.texts)} texts "
                             f"and {len(self.labels)} labels; they must have the same length")
        if len(shape) != 2 or shape[0] != n or shape[1] != len(self.classes):
            raise ValueError(f"evaluation input of version {self.version}: probs has shape {shape}, "
                             f"expected ({n}, {len(self.classes)}) for {n} rows and {len(self.classes)} classes")
        if self.embeddings is not None and (np.ndim(self.embeddings) != 2 or np.shape(self.embeddings)[0] != n):
            raise ValueError(f"evaluation input of version {self.version}: embeddings has shape "
                             f"{np.shape(self.embeddings)}, expected ({n}, d)")



def checked_probs(probs: np.ndarray, k: int) -> np.ndarray:
    """Probabilities as a finite float64 (n, k) array, or a ValueError naming the problem."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(f"probabilities have shape {arr.shape}, expected (n, {k})")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise ValueError(f"probabilities of row {int(bad[0])} are not finite ({bad.size} such rows)")
    return arr
