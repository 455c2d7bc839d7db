"""Maps of predicted probabilities: class correlation, a 2-D t-SNE/PCA map, the Embedding Projector export."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from textclf.common import truncate
from textclf.evaluate.predictions import EvaluationInput, checked_probs

log = logging.getLogger(__name__)


MIN_TSNE_POINTS = 10


def _stratified_sample(groups: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of at most ``limit`` rows, each group in proportion (at least one)."""
    from sklearn.utils import resample

    n = len(groups)
    if n <= limit:
        return np.arange(n)
    rng = np.random.RandomState(seed)
    # sklearn's stratified sampling rounds a share under one row down to none, so a rare class
    # would vanish from the map: take one random row of every group first, then let sklearn
    # sample the remaining rows in proportion to what each group has left.
    order = rng.permutation(n)
    _, first = np.unique(groups[order], return_index=True)
    reserved = order[first]
    if len(reserved) >= limit:  # more groups than rows allowed: one row each of randomly chosen groups
        return np.sort(rng.choice(reserved, size=limit, replace=False))
    rest = np.setdiff1d(np.arange(n), reserved, assume_unique=True)
    extra = resample(rest, n_samples=limit - len(reserved), replace=False, stratify=groups[rest], random_state=rng)
    return np.sort(np.concatenate([reserved, extra]))


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
    arr = checked_probs(probs, k)
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


PROJECTOR_DIR = "projector"

PROJECTOR_TENSORS = f"{PROJECTOR_DIR}/tensors.tsv"

PROJECTOR_METADATA = f"{PROJECTOR_DIR}/metadata.tsv"

PROJECTOR_CONFIG = f"{PROJECTOR_DIR}/projector_config.pbtxt"

METADATA_HEADER = ("doc_id", "label", "predicted", "confidence", "text")

METADATA_TEXT_CHARS = 200

_WHITESPACE = re.compile(r"\s")


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
    probs = checked_probs(inp.probs, len(inp.classes))
    rows = _per_group_sample(inp.labels, per_class, seed)
    vectors = np.asarray(inp.embeddings if inp.embeddings is not None else probs, dtype=np.float64)
    tensor_name = "embeddings" if inp.embeddings is not None else "probabilities"
    tensors = "".join("\t".join(f"{v:.6g}" for v in vectors[i]) + "\n" for i in rows)
    meta = ["\t".join(METADATA_HEADER)]
    for i in rows:
        c = int(probs[i].argmax()) if probs.shape[1] else 0
        fields = (inp.doc_ids[i], inp.labels[i], inp.classes[c] if probs.shape[1] else "",
                  f"{probs[i, c]:.4f}" if probs.shape[1] else "", truncate(str(inp.texts[i]), METADATA_TEXT_CHARS))
        meta.append("\t".join(_tsv_field(f) for f in fields))
    config = (f'embeddings {{\n  tensor_name: "{tensor_name}"\n  tensor_path: "tensors.tsv"\n'
              f'  metadata_path: "metadata.tsv"\n}}\n')
    return {PROJECTOR_TENSORS: tensors.encode("utf-8"), PROJECTOR_METADATA: ("\n".join(meta) + "\n").encode("utf-8"),
            PROJECTOR_CONFIG: config.encode("utf-8")}
