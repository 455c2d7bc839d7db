"""Model evaluation: metrics, calibration, suspected label errors, LIME explanations, maps and the HTML report.

A model is seen only through its predictions: ``probs`` for the test split, and a
``predict_fn`` (texts to an ``(n, k)`` array of class probabilities) for the perturbed
texts of the explanations. Nothing here imports TensorFlow or touches storage:
``build_evaluation`` returns ``(metrics, files)`` and the caller writes the files
(``metrics.json``, ``report.html``, ``projector/...``) next to the model version.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

PredictFn = Callable[[list[str]], np.ndarray]

UNKNOWN_ROW = "(unknown)"
CALIBRATION_BINS = 15
LOW_CONFIDENCE = 0.5
# Keras clips probabilities with this epsilon in its crossentropy, so the test log loss
# is comparable with the val_loss of the training curves.
LOG_LOSS_EPS = 1e-7
CONFIDENTLY_WRONG = 0.9
FAR_PERCENTILE = 99.0
# Below this Euclidean distance from its class mean a row is not "far", whatever its rank:
# without a floor every class of a near-perfect model would flag its least typical row.
FAR_MIN_DISTANCE = 0.2
ERROR_TEXT_CHARS = 300
METADATA_TEXT_CHARS = 200
# LIME's text defaults: kernel width 25 on cosine distance x 100.
LIME_KERNEL_WIDTH = 25.0
MAX_EXPLAINED_WORDS = 1000
MIN_TSNE_POINTS = 10
PLOT_DPI = 90
PROJECTOR_DIR = "projector"
PROJECTOR_TENSORS = f"{PROJECTOR_DIR}/tensors.tsv"
PROJECTOR_METADATA = f"{PROJECTOR_DIR}/metadata.tsv"
PROJECTOR_CONFIG = f"{PROJECTOR_DIR}/projector_config.pbtxt"
METADATA_HEADER = ("doc_id", "label", "predicted", "confidence", "text")
SECTION_IDS = ("summary", "per-class", "confusion-matrix", "training-curves", "calibration",
               "probability-correlation", "probability-map", "projector", "explanations", "label-errors")
_WORD = re.compile(r"\w+")
_WHITESPACE = re.compile(r"\s")


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


# -- metrics -------------------------------------------------------------------------------------------------------


def label_indices(classes: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Index of each label in ``classes``; -1 for labels the model does not know."""
    position = {name: i for i, name in enumerate(classes)}
    return np.fromiter((position.get(str(label), -1) for label in labels), dtype=np.int64, count=len(labels))


def _checked_probs(probs: np.ndarray, k: int) -> np.ndarray:
    """Probabilities as a finite float64 (n, k) array, or a ValueError naming the problem."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(f"probabilities have shape {arr.shape}, expected (n, {k})")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise ValueError(f"probabilities of row {int(bad[0])} are not finite ({bad.size} such rows)")
    return arr


def _ratio(num: float, den: float) -> float:
    """num / den, 0 when den is 0 (sklearn's zero_division=0)."""
    return float(num / den) if den else 0.0


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Equal-width confidence bins (right-closed), each with its count, mean confidence and accuracy."""
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
    classes = [str(c) for c in classes]
    k = len(classes)
    arr = _checked_probs(probs, k)
    if len(labels) != arr.shape[0]:
        raise ValueError(f"{len(labels)} labels for {arr.shape[0]} probability rows")
    n = arr.shape[0]
    y = label_indices(classes, labels)
    known = y >= 0
    pred = arr.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    confidence = arr.max(axis=1) if n else np.zeros(0)
    correct = (pred == y) & known

    unknown_counts: dict[str, int] = {}
    for label in (str(labels[i]) for i in np.flatnonzero(~known)):
        unknown_counts[label] = unknown_counts.get(label, 0) + 1
    rows = k + (1 if unknown_counts else 0)
    cm = np.zeros((rows, k), dtype=np.int64)
    np.add.at(cm, (np.where(known, y, k), pred), 1)

    tp = np.diag(cm[:k])
    predicted = cm.sum(axis=0)
    support = cm[:k].sum(axis=1)
    per_class: dict[str, dict[str, Any]] = {}
    f1s = np.zeros(k)
    for c, name in enumerate(classes):
        precision = _ratio(tp[c], predicted[c])
        recall = _ratio(tp[c], support[c])
        f1s[c] = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": float(f1s[c]),
                           "support": int(support[c]), "predicted": int(predicted[c])}
    active = (support > 0) | (predicted > 0)

    p_true = np.where(known, arr[np.arange(n), np.where(known, y, 0)], 0.0) if n else np.zeros(0)
    bins = calibration_bins(confidence, correct)
    return {
        "n": int(n),
        "classes": classes,
        "accuracy": float(correct.mean()) if n else None,
        "macro_f1": float(f1s[active].mean()) if active.any() else None,
        "weighted_f1": float((f1s * support).sum() / support.sum()) if support.sum() else None,
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


# -- suspected label errors ----------------------------------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def suspected_label_errors(inp: EvaluationInput, limit: int = 50) -> list[dict[str, Any]]:
    """Rows whose given label looks wrong: confidently predicted otherwise, or far from their class's mean.

    ``confidently_wrong``: another class predicted with confidence >= 0.9 (score = that confidence).
    ``far_from_class``: Euclidean distance of the probability vector from its true class's mean
    vector above that class's 99th percentile and at least ``FAR_MIN_DISTANCE`` (score = distance
    / sqrt(2), the largest possible distance, so both scores lie in [0, 1]). Highest score first.
    """
    if limit <= 0 or not inp.doc_ids:
        return []
    probs = _checked_probs(inp.probs, len(inp.classes))
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
    for i in np.flatnonzero(wrong | far):
        reason, score = (("confidently_wrong", confidence[i]) if wrong[i]
                         else ("far_from_class", distance[i] / math.sqrt(2)))
        found.append({
            "doc_id": str(inp.doc_ids[i]),
            "text": _truncate(str(inp.texts[i]), ERROR_TEXT_CHARS),
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


# -- LIME explanations ---------------------------------------------------------------------------------------------


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

    tokens = list(_WORD.finditer(text))
    words_total = len(tokens)
    truncated = words_total > MAX_EXPLAINED_WORDS
    if truncated:
        text = text[: tokens[MAX_EXPLAINED_WORDS - 1].end()]
        tokens = tokens[:MAX_EXPLAINED_WORDS]
    # A feature is a distinct word (case-insensitive); removing it removes every occurrence, as LIME's bag of words.
    keys = [m.group().casefold() for m in tokens]
    feature_of = {key: j for j, key in enumerate(dict.fromkeys(keys))}
    display = {}
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


# -- probability map -----------------------------------------------------------------------------------------------


def _stratified_sample(groups: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of at most ``limit`` rows, each group in proportion (at least one)."""
    n = len(groups)
    if n <= limit:
        return np.arange(n)
    values, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    share = limit * counts / n
    quota = np.minimum(np.maximum(np.floor(share).astype(np.int64), 1), counts)
    while quota.sum() > limit:  # more groups than rows allowed: take from the largest
        quota[int(np.argmax(quota))] -= 1
    # Rows that flooring left over go to the groups furthest below their share that still have rows to give.
    while quota.sum() < limit:
        quota[int(np.argmax(np.where(quota < counts, share - quota, -np.inf)))] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == g), size=int(quota[g]), replace=False) for g in range(len(values))]
    return np.sort(np.concatenate(chosen))


def _embed_2d(data: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(m, 2) coordinates of the rows of ``data`` by t-SNE or PCA (zero-padded when the data has under 2 dims)."""
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = min(30.0, (data.shape[0] - 1) / 3)
        # One OpenMP thread: t-SNE's threads spin-wait, and on a busy worker (other tasks, training) they ran
        # 4x slower than one thread; single-threaded its time is predictable (about 5 s for 2,000 points).
        with threadpool_limits(limits=1, user_api="openmp"):
            return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(data)
    from sklearn.decomposition import PCA

    components = min(2, data.shape[0], data.shape[1])
    coords = PCA(n_components=components, svd_solver="full").fit_transform(data) if components else np.zeros(
        (data.shape[0], 0))
    return np.hstack([coords, np.zeros((data.shape[0], 2 - components))])


def probability_map(probs: np.ndarray, y_index: Sequence[int] | np.ndarray, classes: Sequence[str], *,
                    method: str = "auto", seed: int = 0, max_points: int = 2000) -> dict[str, Any]:
    """2-D map of predicted probability vectors, with each class's one-hot anchor and mean vector placed on it.

    The anchors (k one-hot vectors) and class means are fitted together with a stratified,
    seeded sample of at most ``max_points`` rows, then separated out. ``method``: "tsne",
    "pca" or "auto" (t-SNE unless under 10 rows are mapped). ``y_index`` is each row's true
    class index, -1 for labels the model does not know (mapped, but with no mean).
    """
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"unknown probability map method {method!r}; use 'auto', 'tsne' or 'pca'")
    classes = [str(c) for c in classes]
    k = len(classes)
    arr = _checked_probs(probs, k)
    y = np.asarray(y_index, dtype=np.int64).reshape(-1)
    if len(y) != arr.shape[0]:
        raise ValueError(f"{len(y)} class indices for {arr.shape[0]} probability rows")
    y = np.where((y >= 0) & (y < k), y, -1)
    sample = _stratified_sample(y, max_points, seed)
    mean_class = [c for c in range(k) if (y == c).any()]
    means = np.array([arr[y == c].mean(axis=0) for c in mean_class]).reshape(-1, k)
    data = np.vstack([arr[sample], np.eye(k), means])
    used = ("tsne" if len(sample) >= MIN_TSNE_POINTS else "pca") if method == "auto" else method
    if used == "tsne" and data.shape[0] < 4:
        log.info("probability map: %d points are too few for t-SNE; using PCA", data.shape[0])
        used = "pca"
    coords = np.round(_embed_2d(data, used, seed).astype(np.float64), 4)
    m = len(sample)
    return {
        "method": used,
        "requested_method": method,
        "classes": classes,
        "n_rows": int(arr.shape[0]),
        "points": coords[:m].tolist(),
        "point_class": y[sample].tolist(),
        "point_rows": sample.tolist(),
        "anchors": coords[m: m + k].tolist(),
        "means": coords[m + k:].tolist(),
        "mean_class": mean_class,
    }


# -- projector export ----------------------------------------------------------------------------------------------


def _per_group_sample(groups: Sequence[str], per_group: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of at most ``per_group`` rows of each group."""
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(str(group), []).append(i)
    chosen = [rng.choice(rows, size=min(per_group, len(rows)), replace=False) for _, rows in sorted(by_group.items())]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _tsv_field(value: Any) -> str:
    """A metadata field on one line: tabs, newlines and other whitespace become spaces."""
    return _WHITESPACE.sub(" ", str(value))


def projector_files(inp: EvaluationInput, *, per_class: int = 100, seed: int = 0) -> dict[str, bytes]:
    """TensorBoard Embedding Projector files for a per-class sample: tensors, metadata and config.

    The tensors are ``inp.embeddings`` when given, else the predicted probabilities. Paths in
    ``projector_config.pbtxt`` are relative to its folder, where TensorBoard resolves them.
    """
    probs = _checked_probs(inp.probs, len(inp.classes))
    rows = _per_group_sample(inp.labels, per_class, seed)
    vectors = np.asarray(inp.embeddings if inp.embeddings is not None else probs, dtype=np.float64)
    tensor_name = "embeddings" if inp.embeddings is not None else "probabilities"
    tensors = "".join("\t".join(f"{v:.6g}" for v in vectors[i]) + "\n" for i in rows)
    meta = ["\t".join(METADATA_HEADER)]
    for i in rows:
        c = int(probs[i].argmax()) if probs.shape[1] else 0
        fields = (inp.doc_ids[i], inp.labels[i], inp.classes[c] if probs.shape[1] else "",
                  f"{probs[i, c]:.4f}" if probs.shape[1] else "", _truncate(str(inp.texts[i]), METADATA_TEXT_CHARS))
        meta.append("\t".join(_tsv_field(f) for f in fields))
    config = (f'embeddings {{\n  tensor_name: "{tensor_name}"\n  tensor_path: "tensors.tsv"\n'
              f'  metadata_path: "metadata.tsv"\n}}\n')
    return {PROJECTOR_TENSORS: tensors.encode("utf-8"), PROJECTOR_METADATA: ("\n".join(meta) + "\n").encode("utf-8"),
            PROJECTOR_CONFIG: config.encode("utf-8")}


# -- report: figures -----------------------------------------------------------------------------------------------


def _png_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_text(value: Any, limit: int = 30) -> str:
    """A label safe for matplotlib: short, and with ``$`` escaped so it is not read as mathtext."""
    return _truncate(str(value), limit).replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    """A figure detached from pyplot, so rendering needs no GUI backend and leaves no global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _matrix_figure(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], *, title: str, cmap: str,
                   vmin: float | None, vmax: float | None, fmt: str, xlabel: str, ylabel: str) -> str:
    """Heatmap PNG of a matrix, values written in the cells when there are few enough."""
    size = min(4.0 + 0.45 * max(len(rows), len(cols)), 16.0)
    fig = _new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(len(cols)), [_plot_text(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [_plot_text(r) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if max(len(rows), len(cols)) <= 20 and matrix.size:
        mid = (np.nanmax(matrix) + np.nanmin(matrix)) / 2 if vmin is None else (vmin + vmax) / 2
        for (r, c), value in np.ndenumerate(matrix):
            ax.text(c, r, format(value, fmt), ha="center", va="center", fontsize=8,
                    color="white" if (value > mid if vmin is None else abs(value) > 0.6) else "black")
    return _png_uri(fig)


def _history_series(history: Mapping[str, Sequence[float]], *names: str) -> list[float]:
    """The first series of ``history`` found under one of ``names`` (Keras renamed acc to accuracy)."""
    for name in names:
        if history.get(name):
            return [float(v) for v in history[name]]
    return []


def _curves_figure(history: Mapping[str, Sequence[float]]) -> str:
    """Loss and accuracy per epoch, training and validation, side by side."""
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(10, 3.6)
    for ax, (title, train, val) in zip(fig.subplots(1, 2), (
            ("loss", ("loss",), ("val_loss",)), ("accuracy", ("accuracy", "acc"), ("val_accuracy", "val_acc"))),
            strict=True):
        for series, label, style in ((_history_series(history, *train), "training", "o-"),
                                     (_history_series(history, *val), "validation", "s--")):
            if series:
                ax.plot(range(1, len(series) + 1), series, style, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _png_uri(fig)


def _reliability_figure(bins: list[dict[str, Any]], ece: float | None) -> str:
    """Reliability diagram (accuracy vs confidence per bin) over a histogram of confidences."""
    fig = _new_figure(5.5, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = 1 / len(bins)
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    top.bar(centers, [b["accuracy"] or 0.0 for b in bins], width=width * 0.95, color="#4a7bd0",
            edgecolor="#2a4b90", label="accuracy")
    # The gap runs from accuracy to mean confidence: above the bar when over-confident, inside it when under.
    top.bar(centers, [(b["mean_confidence"] or 0.0) - (b["accuracy"] or 0.0) if b["count"] else 0.0 for b in bins],
            bottom=[b["accuracy"] or 0.0 for b in bins], width=width * 0.95, fill=False, hatch="//",
            edgecolor="#d03030", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE {ece:.3f})" if ece is not None else "Reliability")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.95, color="#888")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (highest probability)")
    bottom.set_ylabel("rows")
    return _png_uri(fig)


def probability_correlation(probs: np.ndarray) -> np.ndarray:
    """Pearson correlation between class-probability columns; 0 off the diagonal for constant columns."""
    arr = np.asarray(probs, dtype=np.float64)
    k = arr.shape[1] if arr.ndim == 2 else 0
    corr = np.eye(k)
    if arr.ndim != 2 or arr.shape[0] < 2:
        return corr
    centered = arr - arr.mean(axis=0)
    norm = np.sqrt((centered**2).sum(axis=0))
    varying = norm > 1e-12 * max(1.0, float(np.abs(arr).max()))
    idx = np.flatnonzero(varying)
    unit = centered[:, idx] / norm[idx]
    corr[np.ix_(idx, idx)] = np.clip(unit.T @ unit, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def _class_colors(k: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]
    return [cmap(i if k <= 20 else i / max(k - 1, 1)) for i in range(k)]


def _method_name(prob_map: Mapping[str, Any]) -> str:
    """How a probability map's method is written for readers."""
    method = str(prob_map.get("method"))
    return {"tsne": "t-SNE", "pca": "PCA"}.get(method, method)


def _map_figure(prob_map: dict[str, Any]) -> str:
    """Scatter of the probability map by true class, with the class anchors and means marked."""
    classes = prob_map.get("classes", [])
    colors = _class_colors(len(classes))
    points = np.asarray(prob_map.get("points", []), dtype=np.float64).reshape(-1, 2)
    point_class = np.asarray(prob_map.get("point_class", []), dtype=np.int64)
    fig = _new_figure(8, 7)
    ax = fig.add_subplot()
    unknown = point_class < 0
    if unknown.any():
        ax.scatter(points[unknown, 0], points[unknown, 1], s=6, c="#999", alpha=0.5, label=UNKNOWN_ROW)
    for c, name in enumerate(classes):
        mine = point_class == c
        if mine.any():
            ax.scatter(points[mine, 0], points[mine, 1], s=6, color=colors[c], alpha=0.5,
                       label=_plot_text(name) if len(classes) <= 20 else None)
    for c, (x, y) in enumerate(prob_map.get("anchors", [])):
        ax.scatter([x], [y], s=260, marker="*", color=colors[c], edgecolors="black", linewidths=1, zorder=3)
        ax.annotate(_plot_text(classes[c], 20), (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8,
                    fontweight="bold")
    for c, (x, y) in zip(prob_map.get("mean_class", []), prob_map.get("means", []), strict=True):
        ax.scatter([x], [y], s=120, marker="X", color=colors[c], edgecolors="black", linewidths=1, zorder=3)
    method = _method_name(prob_map)
    ax.set_title(f"{_plot_text(method)} map of predicted probabilities "
                 f"(\u2605 one-hot anchor, \u2716 class mean)")
    ax.set_xticks([])
    ax.set_yticks([])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    return _png_uri(fig)


# -- report: HTML --------------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escaped text of any value, for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    """A number for a table cell; a dash for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, bool | np.bool_):
        return _e(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return _e(value)


def _value_html(value: Any, depth: int = 0) -> str:
    """Escaped HTML of a config or lineage value: nested tables for mappings, short lists inline."""
    if isinstance(value, Mapping) and value and depth < 3:
        return _table_html(["key", "value"], [[_e(k), _value_html(v, depth + 1)] for k, v in value.items()])
    if isinstance(value, list | tuple) and depth < 3:
        shown = ", ".join(_e(v) if not isinstance(v, Mapping | list | tuple) else _e(json.dumps(_jsonable(v)))
                          for v in value[:50])
        return shown + (f" \u2026 and {len(value) - 50:,} more" if len(value) > 50 else "")
    if isinstance(value, Mapping | list | tuple):
        return _e(json.dumps(_jsonable(value)))
    return _num(value) if isinstance(value, float | int | np.number) and not isinstance(value, bool) else _e(value)


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table from already-escaped header and cell HTML; ``numeric`` columns are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f'<td class="n">{cell}</td>' if j in numeric else f"<td>{cell}</td>"
                                      for j, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _img(uri: str, alt: str) -> str:
    """An inline image."""
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _section(section_id: str, title: str, body: str) -> str:
    """One report section with its anchor id and heading."""
    return f'<section id="{section_id}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _highlighted_text(text: str, words: Sequence[Mapping[str, Any]]) -> str:
    """The escaped text with each explained word in a <mark>, green if it supports the prediction, red if not."""
    weight_of = {str(w["word"]).casefold(): float(w["weight"]) for w in words}
    top = max((abs(w) for w in weight_of.values()), default=0.0) or 1.0
    out, end = [], 0
    for m in _WORD.finditer(text):
        out.append(_e(text[end: m.start()]))
        weight = weight_of.get(m.group().casefold())
        if weight is None:
            out.append(_e(m.group()))
        else:
            alpha = 0.1 + 0.75 * abs(weight) / top
            rgb = "0,160,60" if weight > 0 else "220,40,40"
            out.append(f'<mark style="background:rgba({rgb},{alpha:.2f})" title="{weight:+.4f}">{_e(m.group())}</mark>')
        end = m.end()
    out.append(_e(text[end:]))
    return "".join(out)


def _summary_body(inp: EvaluationInput, metrics: Mapping[str, Any]) -> str:
    """Headline numbers, lineage and training config."""
    headline = [
        ("model version", _e(inp.version)), ("architecture", _e(inp.architecture)),
        ("classes", _e(", ".join(inp.classes))), ("test rows", _num(metrics.get("n"))),
        ("accuracy", _num(metrics.get("accuracy"))), ("macro-F1", _num(metrics.get("macro_f1"))),
        ("weighted-F1", _num(metrics.get("weighted_f1"))),
        ("expected calibration error", _num(metrics.get("expected_calibration_error"))),
        ("log loss", _num(metrics.get("log_loss"))),
        (f"share with confidence &lt; {LOW_CONFIDENCE}", _num(metrics.get("low_confidence_share"))),
        ("rows with labels unknown to the model", _num(metrics.get("unknown_label_count"))),
    ]
    unknown = metrics.get("unknown_labels") or {}
    note = (f'<p class="warn">{len(unknown)} label(s) of the test split are not classes of this model and count '
            f"as errors: {_e(', '.join(f'{k} ({v})' for k, v in unknown.items()))}</p>" if unknown else "")
    lineage = _value_html(inp.lineage) if inp.lineage else "<p>No lineage recorded.</p>"
    config = _value_html(inp.config) if inp.config else "<p>No training config recorded.</p>"
    return (_table_html(["", "value"], [[name, value] for name, value in headline], numeric=(1,)) + note
            + "\n<h3>Training data lineage</h3>\n" + lineage + "\n<h3>Training config</h3>\n" + config)


def _per_class_body(metrics: Mapping[str, Any]) -> str:
    """Precision, recall, F1, support and predicted count per class."""
    rows = [[_e(name), _num(s["precision"]), _num(s["recall"]), _num(s["f1"]), _num(s["support"]),
             _num(s.get("predicted"))] for name, s in metrics.get("per_class", {}).items()]
    dist = metrics.get("predicted_class_distribution", {})
    return (_table_html(["class", "precision", "recall", "F1", "support", "predicted"], rows, numeric=(1, 2, 3, 4, 5))
            + f"<p>Predicted class distribution: {_e(', '.join(f'{k} {v}' for k, v in dist.items()))}.</p>")


def _confusion_body(metrics: Mapping[str, Any]) -> str:
    """Confusion-matrix heatmap and table (rows true, columns predicted)."""
    cm = np.asarray(metrics.get("confusion_matrix", []), dtype=np.int64)
    rows = metrics.get("confusion_matrix_rows", [])
    cols = metrics.get("confusion_matrix_columns", [])
    if not cm.size:
        return "<p>No test rows.</p>"
    image = _matrix_figure(cm, rows, cols, title="Confusion matrix (counts)", cmap="Blues", vmin=None, vmax=None,
                           fmt="d", xlabel="predicted", ylabel="true")
    table = _table_html(["true \\ predicted", *(_e(c) for c in cols)],
                        [[f"<b>{_e(r)}</b>", *(_num(int(v)) for v in cm[i])] for i, r in enumerate(rows)],
                        numeric=tuple(range(1, len(cols) + 1)))
    return _img(image, "confusion matrix heatmap") + table


def _curves_body(history: Mapping[str, Sequence[float]]) -> str:
    """Training curves and the per-epoch values, or a note without history."""
    series = {k: v for k, v in (history or {}).items() if isinstance(v, list | tuple) and len(v)}
    if not series:
        return "<p>No training history was recorded for this version.</p>"
    epochs = max(len(v) for v in series.values())
    rows = [[_num(e + 1), *(_num(float(v[e])) if e < len(v) else "" for v in series.values())] for e in range(epochs)]
    return (_img(_curves_figure(series), "training and validation loss and accuracy per epoch")
            + _table_html(["epoch", *(_e(k) for k in series)], rows, numeric=tuple(range(len(series) + 1))))


def _calibration_body(metrics: Mapping[str, Any]) -> str:
    """Reliability diagram, ECE and the bin table."""
    bins = metrics.get("reliability_bins", [])
    ece = metrics.get("expected_calibration_error")
    rows = [[f"{b['lower']:.3f}\u2013{b['upper']:.3f}", _num(b["count"]), _num(b["mean_confidence"]),
             _num(b["accuracy"])] for b in bins]
    return (_img(_reliability_figure(bins, ece), "reliability diagram")
            + f"<p>Expected calibration error over {len(bins)} equal-width confidence bins: <b>{_num(ece)}</b> "
            f"(0 is perfectly calibrated).</p>"
            + _table_html(["confidence bin", "rows", "mean confidence", "accuracy"], rows, numeric=(1, 2, 3)))


def _correlation_body(inp: EvaluationInput) -> str:
    """Heatmap of the correlation between class-probability columns."""
    corr = probability_correlation(inp.probs)
    if not corr.size:
        return "<p>No classes.</p>"
    image = _matrix_figure(corr, inp.classes, inp.classes, title="Correlation of predicted class probabilities",
                           cmap="RdBu_r", vmin=-1.0, vmax=1.0, fmt=".2f", xlabel="class", ylabel="class")
    return (_img(image, "probability correlation heatmap")
            + "<p>Positively correlated classes tend to be confused with each other; classes whose probability "
            "never varies are shown uncorrelated.</p>")


def _map_body(prob_map: Mapping[str, Any]) -> str:
    """The probability map scatter and how it was made."""
    method = _method_name(prob_map)
    shown = len(prob_map.get("points", []))
    return (_img(_map_figure(dict(prob_map)), "2-D map of predicted probability vectors")
            + f"<p>{_e(method)} of {shown:,} of {_num(prob_map.get('n_rows', shown))} test rows (a stratified "
            f"sample when there are more), coloured by true class. Stars are the one-hot vectors of each class, "
            f"crosses the mean predicted vector of each class's rows, fitted together with the rows.</p>")


def _projector_body() -> str:
    """How to open the exported Embedding Projector files."""
    files = "".join(f"<li><code>{_e(f)}</code></li>" for f in (PROJECTOR_TENSORS, PROJECTOR_METADATA,
                                                                PROJECTOR_CONFIG))
    return (f"<p>A per-class sample of the test rows is exported for the TensorBoard Embedding Projector "
            f"(penultimate-layer features when the model provides them, else the predicted probabilities), "
            f"next to this report:</p><ul>{files}</ul>"
            f"<p>Either run <code>tensorboard --logdir MODEL_VERSION_DIR/{PROJECTOR_DIR}</code> on a local copy "
            f"of this version's folder and open the Projector tab, or open "
            f"<code>https://projector.tensorflow.org</code>, choose <em>Load</em> and upload "
            f"<code>tensors.tsv</code> then <code>metadata.tsv</code>.</p>")


def _explanations_body(explanations: Sequence[Mapping[str, Any]]) -> str:
    """Each explained prediction: the text with its explained words highlighted, and their weights."""
    if not explanations:
        return "<p>No predictions were explained.</p>"
    parts = ["<p>LIME: words are removed at random and a weighted linear model is fitted to the predicted class's "
             "probability. <mark style=\"background:rgba(0,160,60,.5)\">green</mark> words push towards the "
             "predicted class, <mark style=\"background:rgba(220,40,40,.5)\">red</mark> words away from it.</p>"]
    for ex in explanations:
        label = ex.get("label")
        verdict = ""
        if label is not None:
            verdict = " (correct)" if label == ex.get("predicted_label") else " (wrong)"
        head = (f"<h3>{_e(ex.get('doc_id', ''))}: predicted <b>{_e(ex.get('predicted_label'))}</b> "
                f"({_num(ex.get('confidence'), 3)})"
                + (f", labelled <b>{_e(label)}</b>{verdict}" if label is not None else "") + "</h3>")
        note = f"<p class=\"note\">{_e(ex['note'])}</p>" if ex.get("note") else ""
        words = ex.get("words", [])
        if not words:
            parts.append(f"<article>{head}{note}<p class=\"note\">No words to explain.</p></article>")
            continue
        table = _table_html(["word", "weight"], [[_e(w["word"]), f"{float(w['weight']):+.4f}"] for w in words],
                            numeric=(1,))
        fit = (f"<p class=\"note\">intercept {_num(ex.get('intercept'))}, local prediction "
               f"{_num(ex.get('local_prediction'))}, weighted R\u00b2 {_num(ex.get('score'))}, "
               f"{_num(ex.get('num_samples'))} samples</p>")
        parts.append(f"<article>{head}{note}<div class=\"text\">{_highlighted_text(str(ex.get('text', '')), words)}"
                     f"</div>{table}{fit}</article>")
    return "\n".join(parts)


def _label_errors_body(label_errors: Sequence[Mapping[str, Any]]) -> str:
    """Table of suspected label errors."""
    if not label_errors:
        return "<p>No suspected label errors.</p>"
    rows = [[_e(r["doc_id"]), _e(r["label"]), _e(r["predicted"]), _num(r["confidence"], 3),
             _num(r.get("label_probability"), 3), _e(r["reason"].replace("_", " ")), _num(r["score"], 3),
             f'<span class="text">{_e(r["text"])}</span>'] for r in label_errors]
    return ("<p>Rows predicted as another class with confidence \u2265 "
            f"{CONFIDENTLY_WRONG} (<i>confidently wrong</i>), or whose probability vector is unusually far from "
            "their class's mean (<i>far from class</i>). Worth a second look: the label may be wrong.</p>"
            + _table_html(["doc id", "label", "predicted", "confidence", "p(label)", "reason", "score", "text"],
                          rows, numeric=(3, 4, 6)))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
nav a { margin-right: 1em; }
section { margin-top: 2.5em; border-top: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0 1.2em; font-size: 0.92em; }
th, td { padding: 0.2em 0.7em; text-align: left; border-bottom: 1px solid #eee; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
article { margin: 1.2em 0; padding: 0.5em 1em; background: #fafafa; border-radius: 6px; }
div.text { white-space: pre-wrap; line-height: 1.6; max-height: 20em; overflow: auto; }
span.text { display: inline-block; max-width: 40em; }
mark { border-radius: 3px; padding: 0 2px; color: inherit; }
.note { color: #666; font-size: 0.9em; }
.warn { color: #a40; }
"""


def render_report(inp: EvaluationInput, metrics: dict[str, Any], *, explanations: list[dict[str, Any]],
                  label_errors: list[dict[str, Any]], prob_map: dict[str, Any]) -> str:
    """One self-contained HTML page of a model version's evaluation; every data-derived text escaped."""
    bodies = {
        "summary": ("Summary", _summary_body(inp, metrics)),
        "per-class": ("Per-class scores", _per_class_body(metrics)),
        "confusion-matrix": ("Confusion matrix", _confusion_body(metrics)),
        "training-curves": ("Training curves", _curves_body(inp.history)),
        "calibration": ("Calibration", _calibration_body(metrics)),
        "probability-correlation": ("Correlation of class probabilities", _correlation_body(inp)),
        "probability-map": ("Probability map", _map_body(prob_map)),
        "projector": ("Embedding Projector", _projector_body()),
        "explanations": ("Explained predictions", _explanations_body(explanations)),
        "label-errors": ("Suspected label errors", _label_errors_body(label_errors)),
    }
    return render_page(f"Model {inp.version} ({inp.architecture}): evaluation", bodies, SECTION_IDS)


def render_page(title: str, bodies: Mapping[str, tuple[str, str]], section_ids: Sequence[str],
                extra_css: str = "") -> str:
    """A self-contained report page: title, a section nav, then one ``<section>`` per id, in order."""
    nav = " ".join(f'<a href="#{sid}">{_e(bodies[sid][0])}</a>' for sid in section_ids)
    sections = "\n".join(_section(sid, *bodies[sid]) for sid in section_ids)
    title = _e(title)
    # The policy forbids scripts and remote loads outright: the page stays inert even if escaping were ever missed.
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{_CSS}{extra_css}</style></head><body>
<h1>{title}</h1>
<nav>{nav}</nav>
{sections}
</body></html>
"""


# -- orchestration -------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` with numpy types turned into Python ones and non-finite floats into None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _explained_rows(y: np.ndarray, pred: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded sample of ``count`` rows, half wrongly predicted when there are enough of each."""
    rng = np.random.default_rng(seed)
    right = np.flatnonzero(pred == y)
    wrong = np.flatnonzero(pred != y)
    n_wrong = min(len(wrong), max(count // 2, count - len(right)))
    n_right = min(len(right), count - n_wrong)
    chosen = [rng.choice(right, size=n_right, replace=False), rng.choice(wrong, size=n_wrong, replace=False)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def build_evaluation(inp: EvaluationInput, predict_fn: PredictFn, *, explain_count: int = 8, seed: int = 0,
                     progress_log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Evaluate a model version on its test split: (metrics, files to write next to it).

    files: ``metrics.json``, ``report.html`` and the ``projector/`` export.
    """
    def step(message: str) -> None:
        log.info("evaluation of %s: %s", inp.version, message)
        if progress_log is not None:
            progress_log(message)

    step(f"metrics on {len(inp.doc_ids):,} test rows")
    metrics = _jsonable(compute_metrics(inp.classes, inp.labels, inp.probs))
    step("suspected label errors")
    label_errors = suspected_label_errors(inp)
    y = label_indices(inp.classes, inp.labels)
    pred = np.asarray(inp.probs).argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    rows = _explained_rows(y, pred, max(0, min(explain_count, len(y))), seed)
    step(f"explaining {len(rows)} predictions")
    explanations = explain_predictions(predict_fn, [str(inp.texts[i]) for i in rows], inp.classes, seed=seed)
    for i, ex in zip(rows, explanations, strict=True):
        ex.update(doc_id=str(inp.doc_ids[i]), label=str(inp.labels[i]), row=int(i))
    step("probability map")
    prob_map = probability_map(inp.probs, y, inp.classes, seed=seed)
    step("projector export and report")
    files = projector_files(inp, seed=seed)
    report = render_report(inp, metrics, explanations=explanations, label_errors=label_errors, prob_map=prob_map)
    files = {"metrics.json": (json.dumps(metrics, indent=2) + "\n").encode("utf-8"),
             "report.html": report.encode("utf-8"), **files}
    step(f"done: report {len(files['report.html']) / 1e6:.2f} MB")
    return metrics, files
