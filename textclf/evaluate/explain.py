"""LIME explanations of single predictions: which words pushed the model towards its answer."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PredictFn = Callable[[list[str]], np.ndarray]

# LIME's text defaults: kernel width 25 on cosine distance x 100.
LIME_KERNEL_WIDTH = 25.0

MAX_EXPLAINED_WORDS = 1000

WORD_RE = re.compile(r"\w+")


def _predict(predict_fn: PredictFn, texts: list[str], k: int) -> np.ndarray:
    """predict_fn's output as a checked (len(texts), k) float array."""
    out = np.asarray(predict_fn(texts), dtype=np.float64)
    if out.shape != (len(texts), k):
        raise ValueError(f"predict_fn returned shape {out.shape} for {len(texts)} texts, expected ({len(texts)}, {k})")
    return out


def _explain_one(predict_fn: PredictFn, text: str, classes: Sequence[str], num_samples: int, num_features: int,
                 seed: int) -> dict[str, Any]:
    """LIME explanation of one text's predicted class (see ``explain_predictions``)."""
    from sklearn.linear_model import Ridge

    tokens = list(WORD_RE.finditer(text))
    words_total = len(tokens)
    truncated = words_total > MAX_EXPLAINED_WORDS
    if truncated:
        text = text[: tokens[MAX_EXPLAINED_WORDS - 1].end()]
        tokens = tokens[:MAX_EXPLAINED_WORDS]
    # A feature is a distinct word (case-insensitive); removing it removes every occurrence, as LIME's bag of words.
    keys = [m.group().casefold() for m in tokens]
    feature_of = {key: j for j, key in enumerate(dict.fromkeys(keys))}
    display: dict[str, str] = {}
    for m, key in zip(tokens, keys, strict=True):
        display.setdefault(key, m.group())
    words = list(display.values())
    d = len(words)
    result: dict[str, Any] = {
        "text": text, "words_total": words_total, "words_explained": len(tokens), "truncated": truncated,
        "note": f"explained the first {MAX_EXPLAINED_WORDS:,} of {words_total:,} words" if truncated else "",
    }
    if d == 0:
        probs = _predict(predict_fn, [text], len(classes))[0]
        target = int(probs.argmax())
        return {**result, "predicted_label": classes[target], "predicted_index": target,
                "confidence": float(probs[target]), "words": [], "intercept": None, "score": None,
                "local_prediction": None, "num_samples": 1}

    rng = np.random.default_rng([seed, zlib.crc32(text.encode("utf-8"))])
    masks = np.ones((num_samples, d), dtype=bool)  # row 0 keeps every word: the original text
    for i, size in enumerate(rng.integers(1, d + 1, size=num_samples - 1), start=1):
        masks[i, rng.choice(d, size=int(size), replace=False)] = False
    token_feature = np.array([feature_of[key] for key in keys])
    gaps = [text[(tokens[j - 1].end() if j else 0): tokens[j].start()] for j in range(len(tokens))]
    tail = text[tokens[-1].end():]
    pieces = [m.group() for m in tokens]
    perturbed = [text]
    for mask in masks[1:]:
        keep = mask[token_feature]
        perturbed.append("".join(g + (p if kept else "") for g, p, kept in zip(gaps, pieces, keep, strict=True))
                         + tail)
    probs = _predict(predict_fn, perturbed, len(classes))
    target = int(probs[0].argmax())
    y = probs[:, target]

    x = masks.astype(np.float64)
    # Cosine distance of each binary mask to the all-ones original: 1 - sqrt(active / d).
    distance = (1.0 - np.sqrt(x.sum(axis=1) / d)) * 100.0
    weights = np.sqrt(np.exp(-(distance**2) / LIME_KERNEL_WIDTH**2))
    selected = np.arange(d)
    if d > num_features:
        # LIME's "highest_weights" selection: a lightly regularised fit on every word, keep the largest |coef|.
        coef = Ridge(alpha=0.01).fit(x, y, sample_weight=weights).coef_
        selected = np.sort(np.argsort(-np.abs(coef), kind="stable")[:num_features])
    model = Ridge(alpha=1.0).fit(x[:, selected], y, sample_weight=weights)
    score = float(model.score(x[:, selected], y, sample_weight=weights))
    order = np.argsort(-np.abs(model.coef_), kind="stable")
    return {
        **result,
        "predicted_label": classes[target], "predicted_index": target, "confidence": float(probs[0, target]),
        "words": [{"word": words[selected[j]], "weight": float(model.coef_[j])} for j in order],
        "intercept": float(model.intercept_),
        "score": score if math.isfinite(score) else None,
        "local_prediction": float(model.predict(x[:1, selected])[0]),
        "num_samples": num_samples,
    }


def explain_predictions(predict_fn: PredictFn, texts: Sequence[str], classes: Sequence[str], *,
                        num_samples: int = 300, num_features: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """LIME explanations of the predicted class of each text: its words' signed weights (positive = towards it).

    Per text: ``num_samples`` perturbations removing random subsets of its distinct words (the
    first is the text itself), one batched ``predict_fn`` call, an exponential kernel on cosine
    distance x 100 (width 25), and a weighted Ridge(alpha=1) on word presence for the predicted
    class's probability. Texts over 1,000 words are explained on their first 1,000 (``truncated``).
    Deterministic for a seed and a text, wherever the text sits in ``texts``.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    if num_features < 1:
        raise ValueError(f"num_features must be at least 1, got {num_features}")
    classes = [str(c) for c in classes]
    return [_explain_one(predict_fn, str(text), classes, num_samples, num_features, seed) for text in texts]
