"""Fitting the default model (``hashed_linear``): convex solvers on the layer's own features, chosen on validation.

    features = the TF functions of textclf.model.hashed (tokenize -> 63-bit keys), run batch by batch
    X        = sublinear tf-idf, L2 per document (+ a subword block), built in NumPy/SciPy with the same
               arithmetic the layer performs at scoring time (checked: the built model's logits equal X @ W + b)
    solver   = scikit-learn LinearSVC (squared hinge, one-vs-rest) on X, or on NB-scaled X (NBSVM)
    select   = validation accuracy (plus 5-fold cross-validation on the training split when it is small); the
               linear reference's own configuration is the anchor, and a challenger replaces it only when it beats
               it by one paired standard error, so the default cannot lose to the reference on the evidence
    budget   = a deterministic work estimate per candidate (nonzeros x binary problems x fits) cut against
               ``selection_budget_s`` x UNITS_PER_SECOND, in candidate order; a wall-clock safety net skips
               a candidate that would, by its estimate, end after the budget's time (features included)
    calibrate= one temperature, fitted by log-loss on the evidence's decision values, folded into W and b
    model    = textclf.model.hashed.build_model: raw strings in, probabilities out, .keras, safe-mode loadable

No Keras fit loop: the weights are the solver's; the Keras layer holds and applies them (docs/models.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import numpy as np
    import scipy.sparse as sp

log = logging.getLogger(__name__)

BATCH = 2048
SUB_MIN, SUB_MAX = 3, 5
# Work units (fit_cost) per second of training wall time on a shared 2-core worker, feature extraction
# included: the prototype's 20-class long-mail fits ran at ~8.7e6 units per wall second with two fits at
# once, and features took about a third of the time.
UNITS_PER_SECOND = 5e6
# One fit's speed on one thread of that worker (the prototype's measured ~4.4e6): the safety net's estimate.
UNITS_PER_THREAD_SECOND = 4e6
# Weight tables up to this size (in float32) are stored and applied in float32, larger ones in float16
# (table_dtype). Large models (the long-mail stand-in's tables: 50 MB in float32) stay float16, so the
# scoring memory of the models that dominate it does not grow.
FLOAT32_TABLES_MAX_MB = 32
VOCAB_WORDS = 100_000  # training words kept for the scoring report's out-of-vocabulary share
# Without an explicit budget: 20 s per 1,000 training documents, within these bounds.
AUTO_BUDGET_PER_DOC_S, AUTO_BUDGET_MIN_S, AUTO_BUDGET_MAX_S = 0.02, 150.0, 540.0


def auto_budget_s(n_train: int) -> float:
    """The training-time budget for n training documents (~200 s for 11k long mails, ~450 s for imdb's 22.5k)."""
    return min(AUTO_BUDGET_MAX_S, max(AUTO_BUDGET_MIN_S, AUTO_BUDGET_PER_DOC_S * n_train))


# ============================================================================================ features
@dataclass(frozen=True)
class FeatureSpec:
    """How documents become features: tokenizer, word n-gram order, subwords, vocabulary limits."""

    tokenizer: str = "words"  # words (scikit-learn's token_pattern) or punct (+ punctuation tokens)
    ngram_max: int = 2
    subwords: bool = False
    min_df: int = 2
    max_features: int = 500_000
    sub_max_features: int = 300_000
    tok_cache: int = 300_000

    @property
    def name(self) -> str:
        return (f"{self.tokenizer}1-{self.ngram_max}{'+sub' if self.subwords else ''}"
                f"{'' if self.min_df == 2 else f'/df{self.min_df}'}")


@dataclass
class Raw:
    """Keys of one split: word n-gram (doc, key) pairs, token (doc, hash) pairs, token strings by hash."""

    n_docs: int
    doc: np.ndarray
    key: np.ndarray
    tok_doc: np.ndarray
    tok_hash: np.ndarray
    tok_strings: dict[int, bytes]


@dataclass
class Vocab:
    """What training kept: sorted feature keys and their idf (word block, token cache, subwords)."""

    spec: FeatureSpec
    n_train: int
    word_keys: np.ndarray
    word_idf: np.ndarray
    tok_keys: np.ndarray | None = None
    tok_idf: np.ndarray | None = None
    sub_keys: np.ndarray | None = None
    sub_idf: np.ndarray | None = None
    idf_unseen: float = 1.0
    phi_cache: sp.csr_matrix | None = None  # cached tokens x subwords


class _RetracingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _no_retracing_warning() -> Iterator[None]:
    """Within the block, drop TensorFlow's "calls ... triggered tf.function retracing" warning.

    Each (tokenizer, n-gram order) has its own extractor, traced once for its fixed input signature; TF's
    frequent-tracing detector keys on their shared code object and warns, in every training log, as if one
    function retraced. Scoped to the call: the filter is removed afterwards."""
    logger, drop = logging.getLogger("tensorflow"), _RetracingWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


class Featurizer:
    """The layer's TF feature functions, compiled once per (tokenizer, n-gram order), plus a subword memo.

    One instance per training run: nothing is cached between runs (no module state)."""

    def __init__(self) -> None:
        self._extractors: dict[tuple[str, int], Any] = {}
        self._subword_fn: Any = None
        self._sub_memo: dict[bytes, np.ndarray] = {}

    def _extractor(self, tokenizer: str, ngram_max: int) -> Any:
        import tensorflow as tf

        from textclf.model.hashed import ngram_keys, token_hashes, tokenize

        key = (tokenizer, ngram_max)
        if key not in self._extractors:
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
            def extract(texts: tf.Tensor) -> tuple[tf.Tensor, ...]:
                tokens, rows = tokenize(texts, tokenizer)
                h = token_hashes(tokens)
                keys, krows = ngram_keys(h, rows, ngram_max)
                uh, occ = tf.unique(h, out_idx=tf.int64)
                first = tf.math.unsorted_segment_min(tf.range(tf.shape(h, out_type=tf.int64)[0]), occ,
                                                     tf.shape(uh, out_type=tf.int64)[0])
                return keys, krows, h, rows, uh, tf.gather(tokens, first)
            self._extractors[key] = extract
        return self._extractors[key]

    def extract(self, texts: np.ndarray, spec: FeatureSpec) -> Raw:
        """Every word n-gram key (and, with subwords, every token hash and string) of the texts."""
        import numpy as np
        import tensorflow as tf

        fn = self._extractor(spec.tokenizer, spec.ngram_max)
        docs, keys, tdocs, thash = [], [], [], []
        strings: dict[int, bytes] = {}
        with _no_retracing_warning():
            for start in range(0, len(texts), BATCH):
                batch = np.asarray(texts[start:start + BATCH], dtype=object).astype(str)
                k, kr, h, r, uh, ut = fn(tf.constant(batch))
                keys.append(k.numpy())
                docs.append(kr.numpy() + start)
                if spec.subwords:
                    thash.append(h.numpy())
                    tdocs.append(r.numpy() + start)
                    for hh, s in zip(uh.numpy().tolist(), ut.numpy().tolist(), strict=True):
                        strings.setdefault(hh, s)

        def cat(xs: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(xs) if xs else np.zeros(0, np.int64)

        return Raw(len(texts), cat(docs), cat(keys), cat(tdocs), cat(thash), strings)

    def subword_occurrences(self, tokens: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(token index, subword key) of every subword occurrence, via the layer's TF function (memoised per
        token: folds and splits share tokens, so each distinct token goes through TF once)."""
        import numpy as np
        import tensorflow as tf

        from textclf.model.hashed import subword_keys

        if self._subword_fn is None:
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
            def fn(tokens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                return subword_keys(tokens, SUB_MIN, SUB_MAX)
            self._subword_fn = fn
        todo = list(dict.fromkeys(t for t in tokens if t not in self._sub_memo))
        for start in range(0, len(todo), 65536):
            chunk = todo[start:start + 65536]
            k, r = self._subword_fn(tf.constant(chunk, tf.string))
            k, r = k.numpy(), r.numpy()
            order = np.argsort(r, kind="stable")
            k, r = k[order], r[order]
            bounds = np.searchsorted(r, np.arange(len(chunk) + 1))
            for i, t in enumerate(chunk):
                self._sub_memo[t] = k[bounds[i]:bounds[i + 1]]
        if not tokens:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        parts = [self._sub_memo[t] for t in tokens]
        lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        return np.repeat(np.arange(len(tokens)), lengths), np.concatenate(parts)


def subset(raw: Raw, docs: np.ndarray) -> Raw:
    """The Raw of a subset of documents (renumbered 0..len(docs)-1 in the given order)."""
    import numpy as np

    mapping = np.full(raw.n_docs, -1, np.int64)
    mapping[docs] = np.arange(len(docs))
    m = mapping[raw.doc] >= 0
    mt = mapping[raw.tok_doc] >= 0 if len(raw.tok_doc) else np.zeros(0, bool)
    return Raw(len(docs), mapping[raw.doc[m]], raw.key[m], mapping[raw.tok_doc[mt]], raw.tok_hash[mt],
               raw.tok_strings)


def pair_counts(doc: np.ndarray, col: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (doc, col) pairs and their counts (col already a compact index)."""
    import numpy as np

    comb = doc.astype(np.int64) * n_cols + col
    uniq, counts = np.unique(comb, return_counts=True)
    return uniq // n_cols, uniq % n_cols, counts


def key_counts(doc: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (doc, key) pairs and counts, for arbitrary 63-bit keys."""
    import numpy as np

    ukeys, inv = np.unique(key, return_inverse=True)
    d, c, n = pair_counts(doc, inv, max(len(ukeys), 1))
    return d, ukeys[c], n


def idf_of(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Smoothed idf as scikit-learn computes it."""
    import numpy as np

    return (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)


def sentinel(keys: np.ndarray) -> np.ndarray:
    """A key vector never empty (a -1 sentinel matches nothing: real keys are >= 0)."""
    import numpy as np

    return keys if len(keys) else np.array([-1], np.int64)


def lookup_np(sorted_keys: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, found) of each query key in a sorted key vector."""
    import numpy as np

    pos = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == q


def top_k(keys: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """The k keys of highest score, ties by key; returned sorted by key."""
    import numpy as np

    if len(keys) > k:
        order = np.lexsort((keys, -score))[:k]
        keys = keys[order]
    return np.sort(keys)


def fit_vocab(raw: Raw, spec: FeatureSpec, featurizer: Featurizer) -> Vocab:
    """Kept word features (df >= min_df, the max_features most frequent) with their idf, from training docs."""
    import numpy as np

    _, k, c = key_counts(raw.doc, raw.key)
    ukeys, inv = np.unique(k, return_inverse=True)
    df = np.bincount(inv, minlength=len(ukeys))
    tf_total = np.bincount(inv, weights=c, minlength=len(ukeys))
    keep = df >= spec.min_df
    kept = sentinel(top_k(ukeys[keep], tf_total[keep], spec.max_features))
    pos, found = lookup_np(ukeys, kept) if len(ukeys) else (np.zeros(1, np.int64), np.zeros(1, bool))
    idf = np.where(found, idf_of(df[pos], raw.n_docs) if len(ukeys) else 0.0, 0.0).astype(np.float32)
    vocab = Vocab(spec, raw.n_docs, kept, idf)
    if spec.subwords:
        _fit_subwords(raw, vocab, featurizer)
    return vocab


def _fit_subwords(raw: Raw, vocab: Vocab, featurizer: Featurizer) -> None:
    import numpy as np

    spec = vocab.spec
    _, h, _ = key_counts(raw.tok_doc, raw.tok_hash)
    uh, inv = np.unique(h, return_inverse=True)
    df = np.bincount(inv, minlength=len(uh))
    cache = sentinel(top_k(uh, df.astype(np.float64), spec.tok_cache))
    pos, found = lookup_np(uh, cache) if len(uh) else (np.zeros(1, np.int64), np.zeros(1, bool))
    vocab.tok_keys = cache
    vocab.tok_idf = np.where(found, idf_of(df[pos], raw.n_docs) if len(uh) else 0.0, 0.0).astype(np.float32)
    vocab.idf_unseen = float(idf_of(np.array([0.0]), raw.n_docs)[0])
    # Subword vocabulary over the training token types: kept when >= min_df types contain it.
    tokens = [raw.tok_strings[int(x)] for x in uh]
    t_idx, s_key = featurizer.subword_occurrences(tokens)
    types = key_counts(t_idx, s_key)  # unique (type, subword)
    sk, sinv = np.unique(types[1], return_inverse=True)
    type_freq = np.bincount(sinv, minlength=len(sk))
    doc_weighted = np.bincount(sinv, weights=df[types[0]], minlength=len(sk))
    keep = type_freq >= spec.min_df
    vocab.sub_keys = sentinel(top_k(sk[keep], doc_weighted[keep], spec.sub_max_features))
    if len(sk):
        p2, f2 = lookup_np(sk, vocab.sub_keys)
        vocab.sub_idf = np.where(f2, idf_of(type_freq[p2], len(uh)), 0.0).astype(np.float32)
    else:
        vocab.sub_idf = np.zeros(len(vocab.sub_keys), np.float32)
    vocab.phi_cache = phi_matrix([raw.tok_strings.get(int(x), b"") for x in vocab.tok_keys], vocab, featurizer)


def phi_matrix(tokens: list[bytes], vocab: Vocab, featurizer: Featurizer) -> sp.csr_matrix:
    """phi(t): idf-weighted subword vector of each token (occurrences counted), unit L2 norm (layer's math)."""
    import numpy as np
    import scipy.sparse as sp

    assert vocab.sub_keys is not None and vocab.sub_idf is not None
    n_sub = len(vocab.sub_keys)
    if not tokens:
        return sp.csr_matrix((0, n_sub), dtype=np.float32)
    t_idx, s_key = featurizer.subword_occurrences(tokens)
    pos, found = lookup_np(vocab.sub_keys, s_key)
    t_idx, pos = t_idx[found], pos[found]
    g = vocab.sub_idf[pos].astype(np.float64)
    norm = np.sqrt(np.bincount(t_idx, weights=g * g, minlength=len(tokens)))
    g = g / np.maximum(norm, 1e-12)[t_idx]
    return sp.csr_matrix((g, (t_idx, pos)), shape=(len(tokens), n_sub), dtype=np.float64)


def transform(raw: Raw, vocab: Vocab, featurizer: Featurizer) -> sp.csr_matrix:
    """The feature matrix the layer's arithmetic defines (word block [, subword block] / sqrt 2)."""
    import numpy as np
    import scipy.sparse as sp

    pos, found = lookup_np(vocab.word_keys, raw.key)
    d, col, c = pair_counts(raw.doc[found], pos[found], len(vocab.word_keys))
    a = (1.0 + np.log(c)) * vocab.word_idf[col]
    norm = np.sqrt(np.bincount(d, weights=a * a, minlength=raw.n_docs))
    a = a / np.maximum(norm, 1e-12)[d]
    x = sp.csr_matrix((a, (d, col)), shape=(raw.n_docs, len(vocab.word_keys)), dtype=np.float64)
    if not vocab.spec.subwords:
        return x
    assert vocab.tok_keys is not None and vocab.tok_idf is not None and vocab.phi_cache is not None
    d, h, c = key_counts(raw.tok_doc, raw.tok_hash)
    uh, tinv = np.unique(h, return_inverse=True)
    tpos, cached = lookup_np(vocab.tok_keys, uh)
    idf_t = np.where(cached, vocab.tok_idf[tpos], vocab.idf_unseen)
    w = (1.0 + np.log(c)) * idf_t[tinv]
    norm = np.sqrt(np.bincount(d, weights=w * w, minlength=raw.n_docs))
    w = w / np.maximum(norm, 1e-12)[d]
    dmat = sp.csr_matrix((w, (d, tinv)), shape=(raw.n_docs, len(uh)))
    # phi rows: cached tokens from the cache, the others computed (as the layer does for cache misses)
    miss = np.flatnonzero(~cached)
    phi_miss = phi_matrix([raw.tok_strings[int(uh[i])] for i in miss], vocab, featurizer)
    sel = sp.csr_matrix((np.ones(int(cached.sum())), (np.flatnonzero(cached), tpos[cached])),
                        shape=(len(uh), vocab.phi_cache.shape[0]))
    place = sp.csr_matrix((np.ones(len(miss)), (miss, np.arange(len(miss)))), shape=(len(uh), len(miss)))
    phi = sel @ vocab.phi_cache + place @ phi_miss
    xs = dmat @ phi
    return sp.csr_matrix(sp.hstack([x, xs], format="csr") * (1.0 / math.sqrt(2.0)))


# ============================================================================================ solvers
@dataclass(frozen=True)
class Candidate:
    """One configuration: features, loss (svm: hinge on tf-idf; nbsvm: hinge on NB-scaled tf-idf), C."""

    features: FeatureSpec
    loss: str
    C: float

    @property
    def name(self) -> str:
        return f"{self.features.name}/{self.loss}/C={self.C:g}"

    def params(self) -> dict[str, Any]:
        """The settings shown in the model report's model-selection table."""
        f = self.features
        return {"tokenizer": f.tokenizer, "ngrams": f"1-{f.ngram_max}", "subwords": f.subwords, "min_df": f.min_df,
                "max_features": f.max_features, "loss": self.loss, "C": self.C}


def nb_ratios(x: sp.csr_matrix, y: np.ndarray, k: int, alpha: float = 1.0) -> np.ndarray:
    """Per-class NB log-count ratios over binarised features, one class against the rest ([k, n_cols])."""
    import numpy as np

    xb = x.copy()
    xb.data = np.ones_like(xb.data)
    per_class = np.vstack([np.asarray(xb[y == c].sum(axis=0)).ravel() for c in range(k)])
    total = per_class.sum(axis=0)
    r = np.zeros_like(per_class)
    for c in range(k):
        p = per_class[c] + alpha
        q = total - per_class[c] + alpha
        r[c] = np.log(p / p.sum()) - np.log(q / q.sum())
    return r


def fit_linear(cand: Candidate, x: sp.csr_matrix, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(W [n_cols, k], b [k]) such that decision = x @ W + b (two classes: symmetric halves of one margin)."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.svm import LinearSVC

    present = np.unique(y)
    if len(present) < 2:  # a fold (or a tiny split) with one class: a constant model for it
        b = np.full(k, -1.0)
        if len(present):
            b[int(present[0])] = 1.0
        return np.zeros((x.shape[1], k)), b
    if cand.loss == "svm":
        clf = LinearSVC(C=cand.C).fit(x, y)
        coef, icpt = clf.coef_, clf.intercept_
        if coef.shape[0] == 1:  # binary problem: one margin for the larger label
            w = np.zeros((x.shape[1], k))
            b = np.zeros(k)
            lo, hi = int(clf.classes_[0]), int(clf.classes_[1])
            w[:, lo], w[:, hi] = -coef[0] * 0.5, coef[0] * 0.5
            b[lo], b[hi] = -icpt[0] * 0.5, icpt[0] * 0.5
            if k > 2:
                b[[c for c in range(k) if c not in (lo, hi)]] = -1e3
            return w, b
        w = np.zeros((x.shape[1], k))
        b = np.full(k, -1e3)
        w[:, clf.classes_], b[clf.classes_] = coef.T, icpt
        return w, b
    if cand.loss == "nbsvm":
        r = nb_ratios(x, y, k)
        classes = [1] if k == 2 else list(range(k))
        w = np.zeros((x.shape[1], k))
        b = np.zeros(k)
        for c in classes:
            target = (y == c).astype(int)
            if target.min() == target.max():
                b[c] = 1.0 if target[0] else -1e3
                continue
            clf = LinearSVC(C=cand.C).fit(x @ sp.diags(r[c]), target)
            w[:, c] = clf.coef_[0] * r[c]
            b[c] = clf.intercept_[0]
        if k == 2:
            w[:, 0], b[0] = -w[:, 1] * 0.5, -b[1] * 0.5
            w[:, 1], b[1] = w[:, 1] * 0.5, b[1] * 0.5
        return w, b
    raise ValueError(f"unknown loss {cand.loss!r}")


# ============================================================================================ selection
def fit_temperature(dec: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the log-loss of softmax(dec / T) on labelled evidence (1 without evidence)."""
    import numpy as np
    from scipy.optimize import minimize_scalar

    if len(y) == 0:
        return 1.0

    def nll(logt: float) -> float:
        z = dec / math.exp(logt)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())

    return float(math.exp(minimize_scalar(nll, bounds=(-6.0, 4.0), method="bounded").x))


def beats(challenger: np.ndarray, anchor: np.ndarray, z: float) -> bool:
    """Paired one-standard-error rule: mean(correct_c - correct_a) > z * its standard error."""
    import numpy as np

    d = challenger.astype(float) - anchor.astype(float)
    if not d.any():
        return False
    se = float(np.std(d, ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else math.inf
    return float(d.mean()) > z * se


def choose(names: Sequence[str], evidence: dict[str, np.ndarray], z: float) -> str:
    """The first name (the anchor) unless a later one beats it by ``z`` paired standard errors and scores higher
    than every earlier winner; candidates are visited in order, so ties keep the earlier one (deterministic)."""
    anchor = names[0]
    chosen, best = anchor, float(evidence[anchor].mean()) if len(evidence[anchor]) else 0.0
    for name in names[1:]:
        if name not in evidence or not len(evidence[name]):
            continue
        acc = float(evidence[name].mean())
        if acc > best and beats(evidence[name], evidence[anchor], z):
            chosen, best = name, acc
    return chosen


def default_candidates() -> list[Candidate]:
    """The candidate set, in priority order (the work budget cuts from the end); the anchor comes first.

    The anchor is the linear reference itself (words 1-2, min_df 2, 500k features, LinearSVC C=0.5). Then
    2 x 2 feature sets (tokens: scikit-learn words | words + punctuation with 1-3 grams; subwords off | on)
    x 2 losses (hinge on tf-idf | hinge on NB-scaled tf-idf) x C around the reference's C = 0.5.
    """
    ref = FeatureSpec("words", 2, False)
    specs = [ref, FeatureSpec("words", 2, True), FeatureSpec("punct", 3, False, max_features=1_000_000),
             FeatureSpec("punct", 3, True, min_df=1, max_features=1_000_000)]
    grid = [("svm", 0.5), ("nbsvm", 0.3), ("svm", 0.25), ("svm", 1.0), ("nbsvm", 1.0)]
    return [Candidate(spec, loss, c) for loss, c in grid for spec in specs]


def table_rows(vocab: Vocab) -> int:
    """Rows of the model's weight tables (word n-grams, plus tokens and subwords with subwords on)."""
    n = len(vocab.word_keys)
    if vocab.spec.subwords and vocab.tok_keys is not None and vocab.sub_keys is not None:
        n += len(vocab.tok_keys) + len(vocab.sub_keys)
    return n


def table_dtype(vocab: Vocab, k: int) -> str:
    """float32 weight tables up to FLOAT32_TABLES_MAX_MB, float16 above (half the file and resident size).

    float16 tables (and their float16 sparse products) move logits by ~1e-3: enough to flip a document whose two
    best classes are that close, so a small model could lose a document to the reference it was chosen to
    match (measured: mail22_imb20, the reference's own configuration, 54.30% vs 54.35% in float16, equal in
    float32). A small model stays exact; a large one keeps its memory bound."""
    return "float32" if table_rows(vocab) * k * 4 <= FLOAT32_TABLES_MAX_MB * 2**20 else "float16"


def model_bytes(vocab: Vocab, k: int) -> int:
    """Weight bytes of a model on this vocabulary: int64 keys + float32 idf + float32 or float16 tables."""
    width = 4 if table_dtype(vocab, k) == "float32" else 2
    return table_rows(vocab) * (12 + width * k)


def fit_cost(cand: Candidate, nnz: int, k: int, n_folds: int) -> float:
    """Deterministic work estimate of a candidate: nonzeros x binary problems x fits (NB ~1.8x slower)."""
    problems = 1 if k == 2 else k
    fits = 1.0 + 0.8 * n_folds
    return float(nnz) * problems * fits * (1.8 if cand.loss == "nbsvm" else 1.0)


@dataclass
class CandidateResult:
    """One candidate's evidence, as recorded in training.json (``candidates``)."""

    name: str
    params: dict[str, Any]
    validation_accuracy: float | None = None
    validation_macro_f1: float | None = None
    cv_accuracy: float | None = None
    evidence_accuracy: float | None = None
    seconds: float = 0.0
    work_units: float = 0.0
    skipped: str | None = None
    selected: bool = False

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Selection:
    """The fitted model and how it was chosen."""

    model: keras.Model
    chosen: str
    temperature: float
    candidates: list[CandidateResult]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "temperature": self.temperature, **self.info}


@dataclass(frozen=True)
class SelectionSettings:
    """Knobs of the selection (TrainConfig's ``selection_budget_s``, ``max_model_mb``, ``cv_below``)."""

    budget_s: float | None = None  # None: auto_budget_s(training documents)
    max_model_mb: float = 95.0
    cv_below: int = 5000
    folds: int = 5
    z: float = 1.0
    n_jobs: int = 2
    seed: int = 0

    def resolved(self, n_train: int) -> SelectionSettings:
        """These settings with the budget resolved for a training split of n documents."""
        budget = self.budget_s if self.budget_s is not None else auto_budget_s(n_train)
        return dataclasses.replace(self, budget_s=float(budget))

    @property
    def budget_units(self) -> float:
        assert self.budget_s is not None, "resolve the budget first"
        return self.budget_s * UNITS_PER_SECOND


def select(texts: np.ndarray, labels: np.ndarray, val_texts: np.ndarray, val_labels: np.ndarray,
           classes: Sequence[str], settings: SelectionSettings | None = None,
           candidates: Sequence[Candidate] | None = None,
           clock: Callable[[], float] = time.perf_counter) -> Selection:
    """Fit the candidates that fit the budget, choose one on the evidence, calibrate, build the Keras model."""
    import numpy as np
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    settings = (settings or SelectionSettings()).resolved(len(labels))
    budget_s = float(settings.budget_s or 0.0)
    candidates = list(candidates or default_candidates())
    if len({c.name for c in candidates}) != len(candidates):
        raise ValueError("candidate names must be unique")
    started = clock()
    featurizer = Featurizer()
    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels], dtype=np.int64)
    yv = np.array([index.get(c, -1) for c in val_labels], dtype=np.int64)
    cv_splits = None
    if len(y) < settings.cv_below:
        counts = np.bincount(y, minlength=k)
        n_folds = int(min(settings.folds, counts.min())) if counts.min() >= 2 else 0
        if n_folds >= 2:
            skf = StratifiedKFold(n_folds, shuffle=True, random_state=settings.seed)
            cv_splits = list(skf.split(np.zeros(len(y)), y))
    n_folds = 0 if cv_splits is None else len(cv_splits)

    feats: dict[FeatureSpec, Any] = {}
    fold_feats: dict[FeatureSpec, list[tuple[Any, Any]]] = {}
    raws: dict[tuple[str, int], tuple[Raw, Raw]] = {}
    for spec in dict.fromkeys(c.features for c in candidates):  # features first, in candidate order
        rkey = (spec.tokenizer, spec.ngram_max)
        if rkey not in raws:  # one extraction per tokenizer and n-gram order, shared by the specs using it
            rspec = dataclasses.replace(spec, subwords=any(
                (c.features.tokenizer, c.features.ngram_max) == rkey and c.features.subwords for c in candidates))
            raws[rkey] = (featurizer.extract(texts, rspec), featurizer.extract(val_texts, rspec))
        raw_tr, raw_va = raws[rkey]
        vocab = fit_vocab(raw_tr, spec, featurizer)
        if model_bytes(vocab, k) > settings.max_model_mb * 2**20 and spec != candidates[0].features:
            feats[spec] = None
            continue
        feats[spec] = (vocab, transform(raw_tr, vocab, featurizer), transform(raw_va, vocab, featurizer))
        if cv_splits is not None:  # each fold gets its own vocabulary and idf: no leak from held-out docs
            fold_feats[spec] = []
            for tr, te in cv_splits:
                r_tr, r_te = subset(raw_tr, tr), subset(raw_tr, te)
                v_f = fit_vocab(r_tr, spec, featurizer)
                fold_feats[spec].append((transform(r_tr, v_f, featurizer), transform(r_te, v_f, featurizer)))
    features_s = clock() - started

    # The budget is in work units, so which candidates run depends on the data, never on the machine's load.
    results = [CandidateResult(c.name, c.params()) for c in candidates]
    planned: set[str] = set()
    spent = 0.0
    for i, (cand, res) in enumerate(zip(candidates, results, strict=True)):
        f = feats[cand.features]
        if f is None:
            res.skipped = "model too large"
            continue
        res.work_units = fit_cost(cand, f[1].nnz, k, n_folds)
        if i == 0 or spent + res.work_units <= settings.budget_units:
            planned.add(cand.name)
            spent += res.work_units
        else:
            res.skipped = "work budget"
    log.info("features built in %.1fs; %d of %d candidates fit the work budget (%.2e of %.2e units)", features_s,
             len(planned), len(candidates), spent, settings.budget_units)

    def evaluate(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        cand, res = candidates[i], results[i]
        t0 = clock()
        if cand.name not in planned:
            return None
        # Safety net on a slow machine: a candidate that would end past the budget (features included) is skipped.
        if i > 0 and t0 - started + res.work_units / UNITS_PER_THREAD_SECOND > budget_s:
            res.skipped = "time budget"
            return None
        _, x, xv = feats[cand.features]
        w, b = fit_linear(cand, x, y, k)
        dv = np.asarray(xv @ w + b)
        pred_v = dv.argmax(1) if len(yv) else np.zeros(0, np.int64)
        correct_v = pred_v == yv
        ev_correct, ev_dec, ev_y = [correct_v], [dv], [yv]
        if cv_splits is not None:
            oof = np.zeros((len(y), k))
            for (tr, te), (x_tr, x_te) in zip(cv_splits, fold_feats[cand.features], strict=True):
                wf, bf = fit_linear(cand, x_tr, y[tr], k)
                oof[te] = x_te @ wf + bf
            ev_correct.append(oof.argmax(1) == y)
            ev_dec.append(oof)
            ev_y.append(y)
            res.cv_accuracy = float(ev_correct[-1].mean())
        correct = np.concatenate(ev_correct)
        if len(yv):
            res.validation_accuracy = float(correct_v.mean())
            res.validation_macro_f1 = float(f1_score(yv, pred_v, labels=np.arange(k), average="macro",
                                                     zero_division=0))
        res.evidence_accuracy = float(correct.mean()) if len(correct) else None
        res.seconds = round(clock() - t0, 2)
        log.info("candidate %-28s evidence %s val %s cv %s %.1fs", cand.name, res.evidence_accuracy,
                 res.validation_accuracy, res.cv_accuracy, res.seconds)
        return correct, np.vstack(ev_dec), np.concatenate(ev_y), w.astype(np.float32), b

    with ThreadPoolExecutor(max(1, settings.n_jobs)) as pool:  # liblinear releases the GIL: fits in parallel
        outcomes = list(pool.map(evaluate, range(len(candidates))))
    evidence = {c.name: o[0] for c, o in zip(candidates, outcomes, strict=True) if o is not None}
    chosen = choose([c.name for c in candidates], evidence, settings.z)
    ci = [c.name for c in candidates].index(chosen)
    results[ci].selected = True
    outcome = outcomes[ci]
    assert outcome is not None
    _, dec, ye, w, b = outcome
    keep = ye >= 0
    temperature = fit_temperature(dec[keep], ye[keep])
    cand = candidates[ci]
    vocab = feats[cand.features][0]
    model = to_keras(vocab, w, b, temperature, k, vocabulary_words(texts))
    info: dict[str, Any] = {
        "anchor": candidates[0].name, "z": settings.z, "budget_s": settings.budget_s,
        "budget_units": settings.budget_units, "work_units": spent, "features_seconds": round(features_s, 1),
        "evidence_rows": int(len(evidence[candidates[0].name])), "cv_folds": n_folds or None,
        "n_word": int(len(vocab.word_keys)), "n_tok": None if vocab.tok_keys is None else int(len(vocab.tok_keys)),
        "n_sub": None if vocab.sub_keys is None else int(len(vocab.sub_keys)),
        "weight_mb": round(model_bytes(vocab, k) / 2**20, 1)}
    # The built model must reproduce X @ W + b on validation (features identical at train and score time).
    probe = min(len(val_texts), 256)
    if probe:
        import tensorflow as tf

        from textclf.model.hashed import LAYER_NAME

        got = model.get_layer(LAYER_NAME)(tf.constant(np.asarray(val_texts[:probe], dtype=object).astype(str)))
        want = (feats[cand.features][2][:probe] @ w + b) / temperature
        info["max_logit_diff"] = float(np.abs(np.asarray(got) - want).max())
    return Selection(model, chosen, temperature, results, clock() - started, info)


def vocabulary_words(texts: Iterable[Any], min_df: int = 2, max_words: int = VOCAB_WORDS) -> bytes:
    """The training texts' words (as the OOV drift signal tokenizes) in >= min_df documents, the most frequent
    max_words, sorted, newline-joined UTF-8: what the model stores for the scoring report's OOV share."""
    from collections import Counter

    from textclf.textstats import word_tokens

    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(word_tokens(str(text))))
    kept = sorted((w for w, n in df.items() if n >= min_df and "\n" not in w), key=lambda w: (-df[w], w))
    return "\n".join(sorted(kept[:max_words])).encode("utf-8")


def to_keras(vocab: Vocab, w: np.ndarray, b: np.ndarray, temperature: float, k: int,
             words: bytes = b"") -> keras.Model:
    """The end-to-end Keras model holding a solution (weights scaled by 1 / temperature, tables in table_dtype)."""
    import numpy as np

    from textclf.model.hashed import build_model

    n_word = len(vocab.word_keys)
    scale = 1.0 / temperature
    dtype = table_dtype(vocab, k)
    table = np.dtype(dtype)
    sol: dict[str, np.ndarray] = {"word_keys": vocab.word_keys, "word_idf": vocab.word_idf,
                                  "bias": (b * scale).astype(np.float32)}
    config: dict[str, Any] = {"num_classes": k, "n_word": n_word, "tokenizer": vocab.spec.tokenizer,
                              "ngram_max": vocab.spec.ngram_max, "subwords": vocab.spec.subwords,
                              "table_dtype": dtype}
    if vocab.spec.subwords:
        assert vocab.tok_keys is not None and vocab.sub_keys is not None and vocab.phi_cache is not None
        assert vocab.tok_idf is not None and vocab.sub_idf is not None
        f = 1.0 / math.sqrt(2.0)
        sol["word_w"] = (w[:n_word] * f * scale).astype(table)
        w_sub = w[n_word:] * f * scale
        sol.update({"tok_keys": vocab.tok_keys, "tok_idf": vocab.tok_idf, "sub_keys": vocab.sub_keys,
                    "sub_idf": vocab.sub_idf, "sub_w": w_sub.astype(table),
                    "tok_v": np.asarray(vocab.phi_cache @ w_sub, dtype=table)})
        config.update({"n_tok": len(vocab.tok_keys), "n_sub": len(vocab.sub_keys), "sub_min": SUB_MIN,
                       "sub_max": SUB_MAX, "idf_unseen": vocab.idf_unseen})
    else:
        sol["word_w"] = (w * scale).astype(table)
    if words:
        config["n_vocab_bytes"] = len(words)
        sol["vocab_bytes"] = np.frombuffer(words, dtype=np.uint8)
    return build_model(sol, config)
