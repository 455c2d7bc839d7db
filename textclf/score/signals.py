"""Signals accumulated batch by batch while scoring, bounded whatever the row count."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textclf.textstats import LOW_CONFIDENCE, word_bin_counts

if TYPE_CHECKING:
    import numpy as np



CONFIDENCE_BINS = 20

OOV_SAMPLE_PER_BATCH = 128  # documents per batch whose tokens are checked (Python regex: the costliest signal)


@dataclass
class ScoringStats:
    """Signals accumulated batch by batch while scoring (bounded size, whatever the row count)."""

    rows: int = 0
    predicted: Counter = field(default_factory=Counter)
    confidence_hist: list[int] = field(default_factory=lambda: [0] * CONFIDENCE_BINS)
    length_bins: Counter = field(default_factory=Counter)
    oov_tokens: int = 0
    sampled_tokens: int = 0
    batches: list[dict[str, Any]] = field(default_factory=list)

    def add_batch(self, labels: Sequence[str], confidence: np.ndarray, words: np.ndarray,
                  oov: tuple[int, int]) -> None:
        import numpy as np

        n = len(labels)
        self.rows += n
        self.predicted.update(labels)
        bins = np.minimum((confidence * CONFIDENCE_BINS).astype(int), CONFIDENCE_BINS - 1)
        for i, count in enumerate(np.bincount(bins, minlength=CONFIDENCE_BINS)):
            self.confidence_hist[i] += int(count)
        self.length_bins.update(word_bin_counts(words))
        self.oov_tokens += oov[0]
        self.sampled_tokens += oov[1]
        self.batches.append({
            "batch": len(self.batches), "rows": n,
            "oov_rate": oov[0] / oov[1] if oov[1] else None,
            "mean_words": float(words.mean()) if n else None, "max_words": int(words.max()) if n else None,
            "mean_confidence": float(confidence.mean()) if n else None,
            "low_confidence_share": float((confidence < LOW_CONFIDENCE).mean()) if n else None,
        })

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "predicted": dict(self.predicted), "confidence_hist": self.confidence_hist,
                "length_bins": dict(self.length_bins), "oov_tokens": self.oov_tokens,
                "sampled_tokens": self.sampled_tokens, "batches": self.batches}

    @classmethod
    def merge(cls, parts: Iterable[dict[str, Any]]) -> ScoringStats:
        """Combine the stats of several shards (batches renumbered in shard order)."""
        total = cls()
        for part in parts:
            total.rows += part["rows"]
            total.predicted.update(part["predicted"])
            total.confidence_hist = [a + b for a, b in zip(total.confidence_hist, part["confidence_hist"],
                                                           strict=True)]
            total.length_bins.update(part["length_bins"])
            total.oov_tokens += part["oov_tokens"]
            total.sampled_tokens += part["sampled_tokens"]
            total.batches += [{**b, "batch": len(total.batches) + i} for i, b in enumerate(part["batches"])]
        return total
