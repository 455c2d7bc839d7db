"""Text signals shared by the data profile, training baselines and scoring drift: word bins, OOV counts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Right-closed word-count bins: "0-100" holds 0..100 words, ">800" holds 801 and more.
WORD_BINS: tuple[tuple[str, float], ...] = (
    ("0-100", 100), ("100-300", 300), ("300-500", 500), ("500-800", 800), (">800", float("inf")),
)


def word_bin_counts(words: Any) -> dict[str, int]:
    """Documents per word-count bin (``WORD_BINS``); shared by the data profile and the scoring drift signals."""
    import numpy as np

    edges = [edge for _, edge in WORD_BINS[:-1]]
    counts = np.bincount(np.searchsorted(edges, words, side="left"), minlength=len(WORD_BINS))
    return {name: int(n) for (name, _), n in zip(WORD_BINS, counts, strict=True)}


_TOKEN_RE = re.compile(r"\w+(?:'\w+)*")


def word_tokens(text: str) -> list[str]:
    """The lower-cased word tokens the OOV signal counts."""
    return _TOKEN_RE.findall(text.lower())


def oov_counts(texts: Iterable[str], vocabulary: frozenset[str]) -> tuple[int, int]:
    """(word tokens not in the vocabulary, word tokens) over some texts; lower-cased word tokens only."""
    oov = total = 0
    for text in texts:
        tokens = _TOKEN_RE.findall(text.lower())
        total += len(tokens)
        oov += sum(1 for t in tokens if t not in vocabulary)
    return oov, total


LOW_CONFIDENCE = 0.5

# Below this many rows a report's shares and scores swing widely from sample to sample: the scoring
# report flags its drift figures as unreliable and the model report warns about its test split.
MIN_RELIABLE_ROWS = 100
