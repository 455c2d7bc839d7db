"""The default model's layer: raw strings -> class logits of a linear model over exact-key hashed n-grams.

The saved model is ``keras.Input(shape=(), dtype="string") -> HashedTextLinear -> Activation("softmax")``.
Its weights are fitted by a convex solver outside Keras (textclf.model.selection); this layer holds them
and computes, with the same TensorFlow functions that built the training features, the logits at scoring.

Featurisation:

1. Tokens: ``words`` = lower-cased (Unicode) runs of letters/digits/underscore of >= 2 characters, which is
   scikit-learn's default ``token_pattern`` ``(?u)\\b\\w\\w+\\b``; ``punct`` = the same runs of any length plus
   every other non-space character as its own token.
2. Each token -> 63-bit FarmHash fingerprint (``tf.strings.to_hash_bucket_fast``: stable across processes and
   machines, no Python ``hash()``). Word n-grams (n <= ngram_max) are combined from the token fingerprints by
   uint64 arithmetic (no n-gram strings are built).
3. The vocabulary is exact: the layer stores the sorted 63-bit keys of the features kept at training
   (min_df, max_features as scikit-learn selects them); a key is looked up in a hash table built from that
   weight, an unknown key is dropped. Kept features do not collide (p ~ 1e-7 per model).
4. Word block: sublinear tf (1 + log count) x idf, L2-normalised per document (scikit-learn's TfidfVectorizer
   with sublinear_tf=True, norm="l2"); logits = x . W + b.
5. Optional subword block (fastText-style): each token's character 3-5 grams of "<token>" form a unit vector
   phi(t) (idf-weighted, only subwords kept at training). The document's block is
   sum_t w_t phi(t) / sqrt(sum_t w_t^2) with w_t = (1 + log count_t) idf_tok(t); being linear in phi(t), its
   logits are sum_t w_t v(t) / sqrt(sum_t w_t^2) with v(t) = phi(t) . W_sub precomputed for every training
   token (an exact cache), so scoring computes subwords only for unseen tokens.

Temperature scaling is folded into W and b. Every statistic is a weight saved in the .keras weights file;
the config holds only sizes and switches, so the file loads in safe mode.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "textclf"
LAYER_NAME = "hashed_linear"
HASH_BUCKETS = 2**63 - 1  # to_hash_bucket_fast: fingerprint64 mod this -> non-negative int64
MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio) for combining n-gram hashes
CP_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def _salt(n: int) -> np.uint64:
    """A per-order constant (n-gram order n, subword order 100 + n), computed modulo 2**64."""
    return np.uint64((0xD6E8FEB86659FD93 * n) & 0xFFFFFFFFFFFFFFFF)


_W, _NW = r"[\p{L}\p{N}_]", r"[^\p{L}\p{N}_]"
# Separators plus every one-character token after them become one space, so a whitespace split yields
# exactly scikit-learn's tokens (runs of >= 2 word characters) without a length filter op.
WORD_RE = rf"(?:{_NW}+|^)(?:{_W}(?:{_NW}+|$))*"
PUNCT_RE = r"([^\p{L}\p{N}_\s])"


def tokenize(texts: tf.Tensor, tokenizer: str) -> tuple[tf.Tensor, tf.Tensor]:
    """(token strings, row of each token) for a [B] string batch; flat, in text order."""
    t = tf.strings.lower(texts, encoding="utf-8")
    if tokenizer == "words":
        t = tf.strings.regex_replace(t, WORD_RE, " ")
    elif tokenizer == "punct":
        t = tf.strings.regex_replace(t, PUNCT_RE, r" \1 ")
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}")
    ragged = tf.strings.split(t)
    return ragged.flat_values, ragged.value_rowids()


def token_hashes(tokens: tf.Tensor) -> tf.Tensor:
    """63-bit FarmHash fingerprint of each token (int64, non-negative), the same on every machine."""
    return tf.strings.to_hash_bucket_fast(tokens, HASH_BUCKETS)


def ngram_keys(h: tf.Tensor, rows: tf.Tensor, ngram_max: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Keys of all word 1..ngram_max grams (n-grams never cross a document) and their rows."""
    keys, krows = [h], [rows]
    hu = tf.bitcast(h, tf.uint64)
    acc = hu
    for n in range(2, ngram_max + 1):
        acc = acc[:-1] * MIX + hu[n - 1:]
        same = tf.equal(rows[:-(n - 1)], rows[n - 1:])
        salted = tf.bitwise.bitwise_xor(acc, _salt(n))
        k = tf.bitcast(tf.bitwise.right_shift(salted, np.uint64(1)), tf.int64)
        keys.append(tf.boolean_mask(k, same))
        krows.append(tf.boolean_mask(rows[:-(n - 1)], same))
    return tf.concat(keys, 0), tf.concat(krows, 0)


def subword_keys(tokens: tf.Tensor, min_n: int, max_n: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Character min_n..max_n grams of "<token>" as 63-bit keys, with the index of their token."""
    cps = tf.strings.unicode_decode(tokens, "UTF-8")
    b = tf.fill([tf.shape(tokens)[0], 1], tf.constant(60, tf.int32))  # "<"
    e = tf.fill([tf.shape(tokens)[0], 1], tf.constant(62, tf.int32))  # ">"
    cps = tf.concat([b, cps, e], axis=1)
    flat = tf.cast(cps.flat_values, tf.uint64) + np.uint64(1)
    rows = cps.value_rowids()
    keys, krows = [], []
    acc = flat
    for n in range(2, max_n + 1):
        acc = acc[:-1] * CP_MIX + flat[n - 1:]
        if n >= min_n:
            same = tf.equal(rows[:-(n - 1)], rows[n - 1:])
            salted = tf.bitwise.bitwise_xor(acc * MIX, _salt(100 + n))
            k = tf.bitcast(tf.bitwise.right_shift(salted, np.uint64(1)), tf.int64)
            keys.append(tf.boolean_mask(k, same))
            krows.append(tf.boolean_mask(rows[:-(n - 1)], same))
    return tf.concat(keys, 0), tf.concat(krows, 0)


def lookup(sorted_keys: tf.Tensor, q: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(position, found) of each query key in a sorted key vector (binary search)."""
    n = tf.shape(sorted_keys, out_type=tf.int64)[0]
    pos = tf.searchsorted(sorted_keys, q, out_type=tf.int64)
    pos = tf.minimum(pos, tf.maximum(n - 1, 0))
    found = tf.equal(tf.gather(sorted_keys, pos), q)
    return pos, found


def hash_table(keys: tf.Tensor) -> tf.lookup.StaticHashTable:
    """key -> position + 1 (0: not found); built from a key weight after it is assigned or loaded."""
    n = tf.shape(keys, out_type=tf.int64)[0]
    init = tf.lookup.KeyValueTensorInitializer(keys, tf.range(1, n + 1, dtype=tf.int64), tf.int64, tf.int64)
    return tf.lookup.StaticHashTable(init, default_value=0)


def table_lookup(table: tf.lookup.StaticHashTable, q: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(position, found) of each query key (hash-table twin of ``lookup``)."""
    p = table.lookup(q)
    return tf.maximum(p - 1, 0), p > 0


def sparse_rows_matmul(rows: tf.Tensor, cols: tf.Tensor, values: tf.Tensor, table: tf.Variable,
                       n_rows: tf.Tensor) -> tf.Tensor:
    """sum over entries of values * table[cols] per row, as one sparse x dense product (no [nnz, K] copy)."""
    idx = tf.stack([tf.cast(rows, tf.int64), tf.cast(cols, tf.int64)], axis=1)
    shape = tf.stack([tf.cast(n_rows, tf.int64), tf.shape(table, out_type=tf.int64)[0]])
    sp = tf.SparseTensor(idx, tf.cast(values, table.dtype), shape)
    return tf.cast(tf.sparse.sparse_dense_matmul(sp, table), tf.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class HashedTextLinear(keras.layers.Layer):
    """Raw strings -> class logits of a linear model over exact-key hashed word n-grams (+ subwords)."""

    def __init__(self, num_classes: int, n_word: int, tokenizer: str = "words", ngram_max: int = 2,
                 subwords: bool = False, n_tok: int = 0, n_sub: int = 0, sub_min: int = 3, sub_max: int = 5,
                 idf_unseen: float = 1.0, chunk: int = 512, parallel: int = 2, table_dtype: str = "float16",
                 n_vocab_bytes: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.n_word = int(num_classes), int(n_word)
        self.tokenizer, self.ngram_max = str(tokenizer), int(ngram_max)
        self.subwords, self.n_tok, self.n_sub = bool(subwords), int(n_tok), int(n_sub)
        self.sub_min, self.sub_max, self.idf_unseen = int(sub_min), int(sub_max), float(idf_unseen)
        self.chunk, self.parallel = int(chunk), int(parallel)
        self.table_dtype = str(table_dtype)  # float16 halves the file and the resident size of the big tables
        # The training split's frequent words, UTF-8, newline-separated: the scoring drift signal's vocabulary
        # (the hashed features themselves keep no strings).
        self.n_vocab_bytes = int(n_vocab_bytes)
        k = self.num_classes
        add = self.add_weight
        self.word_keys = add(name="word_keys", shape=(self.n_word,), dtype="int64", initializer="zeros",
                             trainable=False)
        self.word_idf = add(name="word_idf", shape=(self.n_word,), initializer="zeros", trainable=False)
        self.word_w = add(name="word_w", shape=(self.n_word, k), dtype=self.table_dtype, initializer="zeros",
                          trainable=False)
        self.bias = add(name="bias", shape=(k,), initializer="zeros", trainable=False)
        if self.subwords:
            self.tok_keys = add(name="tok_keys", shape=(self.n_tok,), dtype="int64", initializer="zeros",
                                trainable=False)
            self.tok_idf = add(name="tok_idf", shape=(self.n_tok,), initializer="zeros", trainable=False)
            self.tok_v = add(name="tok_v", shape=(self.n_tok, k), dtype=self.table_dtype, initializer="zeros",
                             trainable=False)
            self.sub_keys = add(name="sub_keys", shape=(self.n_sub,), dtype="int64", initializer="zeros",
                                trainable=False)
            self.sub_idf = add(name="sub_idf", shape=(self.n_sub,), initializer="zeros", trainable=False)
            self.sub_w = add(name="sub_w", shape=(self.n_sub, k), dtype=self.table_dtype, initializer="zeros",
                             trainable=False)
        if self.n_vocab_bytes:
            self.vocab_bytes = add(name="vocab_bytes", shape=(self.n_vocab_bytes,), dtype="uint8",
                                   initializer="zeros", trainable=False)
        self.built = True
        self._tables: dict[str, Any] = {}
        self.build_tables(empty=True)

    def build_tables(self, empty: bool = False) -> None:
        """(Re)build the key -> position hash tables from the key weights (after assigning or loading them)."""
        names = ["word_keys"] + (["tok_keys", "sub_keys"] if self.subwords else [])
        self._tables = {name: hash_table(tf.constant([-1], tf.int64) if empty else getattr(self, name).value)
                        for name in names}

    def vocabulary_words(self) -> frozenset[str]:
        """The training split's frequent words (empty for a model saved without them)."""
        if not self.n_vocab_bytes:
            return frozenset()
        data = bytes(np.asarray(self.vocab_bytes.value if hasattr(self.vocab_bytes, "value") else self.vocab_bytes,
                                dtype=np.uint8).tobytes())
        return frozenset(w for w in data.decode("utf-8").split("\n") if w)

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        self.build_tables()

    # -- the word block ------------------------------------------------------------------------------------
    def _word_logits(self, h: tf.Tensor, rows: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        keys, krows = ngram_keys(h, rows, self.ngram_max)
        pos, found = table_lookup(self._tables["word_keys"], keys)
        pos, krows = tf.boolean_mask(pos, found), tf.boolean_mask(krows, found)
        uniq, _, counts = tf.unique_with_counts(krows * self.n_word + pos, out_idx=tf.int64)
        urow, upos = uniq // self.n_word, uniq % self.n_word
        s = 1.0 + tf.math.log(tf.cast(counts, tf.float32))
        a = s * tf.gather(self.word_idf, upos)
        urow32 = tf.cast(urow, tf.int32)
        norm = tf.sqrt(tf.math.unsorted_segment_sum(a * a, urow32, batch))
        scale = a / tf.gather(tf.maximum(norm, 1e-12), urow32)
        return sparse_rows_matmul(urow, upos, scale, self.word_w, batch)

    # -- the subword block ---------------------------------------------------------------------------------
    def _token_vectors(self, tokens: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Unique tokens of the batch: (index of each token occurrence, idf_tok, v) per unique token."""
        uh, occ = tf.unique(h, out_idx=tf.int64)
        n_u = tf.shape(uh, out_type=tf.int64)[0]
        pos, cached = table_lookup(self._tables["tok_keys"], uh)
        idf = tf.where(cached, tf.gather(self.tok_idf, pos), self.idf_unseen)
        v = tf.where(cached[:, None], tf.cast(tf.gather(self.tok_v, pos), tf.float32), 0.0)
        # Subwords only for tokens not in the cache (unseen at training, or beyond the cache size).
        miss = tf.where(~cached)[:, 0]
        first = tf.math.unsorted_segment_min(tf.range(tf.shape(h, out_type=tf.int64)[0]), occ, n_u)
        miss_tokens = tf.gather(tokens, tf.gather(first, miss))
        v_miss = self._subword_vectors(miss_tokens)
        v = tf.tensor_scatter_nd_add(v, miss[:, None], v_miss)
        return occ, idf, v

    def _subword_vectors(self, tokens: tf.Tensor) -> tf.Tensor:
        n_t = tf.shape(tokens)[0]
        keys, trow = subword_keys(tokens, self.sub_min, self.sub_max)
        pos, found = table_lookup(self._tables["sub_keys"], keys)
        pos, trow = tf.boolean_mask(pos, found), tf.cast(tf.boolean_mask(trow, found), tf.int32)
        g = tf.gather(self.sub_idf, pos)
        norm = tf.sqrt(tf.math.unsorted_segment_sum(g * g, trow, n_t))
        g = g / tf.gather(tf.maximum(norm, 1e-12), trow)
        return sparse_rows_matmul(trow, pos, g, self.sub_w, n_t)

    def _subword_logits(self, tokens: tf.Tensor, h: tf.Tensor, rows: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        occ, idf, v = self._token_vectors(tokens, h)
        n_u = tf.shape(idf, out_type=tf.int64)[0]
        uniq, _, counts = tf.unique_with_counts(rows * n_u + occ, out_idx=tf.int64)
        urow, utok = tf.cast(uniq // n_u, tf.int32), uniq % n_u
        w = (1.0 + tf.math.log(tf.cast(counts, tf.float32))) * tf.gather(idf, utok)
        norm = tf.sqrt(tf.math.unsorted_segment_sum(w * w, urow, batch))
        w = w / tf.gather(tf.maximum(norm, 1e-12), urow)
        return sparse_rows_matmul(urow, utok, w, v, batch)

    def _chunk_logits(self, texts: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(texts)[0]
        tokens, rows = tokenize(texts, self.tokenizer)
        h = token_hashes(tokens)
        logits = self._word_logits(h, rows, batch)
        if self.subwords:
            logits = logits + self._subword_logits(tokens, h, rows, batch)
        return logits

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        """Documents in chunks of ``chunk``, two chunks at a time: bounded memory, both cores busy."""
        texts = tf.reshape(texts, [-1])
        n = tf.shape(texts)[0]
        c = self.chunk
        padded = tf.concat([texts, tf.fill([(c - n % c) % c], "")], 0)
        parts = tf.reshape(padded, [-1, c])
        out = tf.map_fn(self._chunk_logits, parts, parallel_iterations=self.parallel,
                        fn_output_signature=tf.TensorSpec([None, self.num_classes], tf.float32))
        return tf.reshape(out, [-1, self.num_classes])[:n] + self.bias

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes, "n_word": self.n_word,
                "tokenizer": self.tokenizer, "ngram_max": self.ngram_max, "subwords": self.subwords,
                "n_tok": self.n_tok, "n_sub": self.n_sub, "sub_min": self.sub_min, "sub_max": self.sub_max,
                "idf_unseen": self.idf_unseen, "chunk": self.chunk, "parallel": self.parallel,
                "table_dtype": self.table_dtype, "n_vocab_bytes": self.n_vocab_bytes}


def build_model(solution: dict[str, np.ndarray], config: dict[str, Any], name: str = "hashed_linear") -> keras.Model:
    """The end-to-end Keras model from a training solution (weights already scaled by 1/temperature)."""
    inputs = keras.Input(shape=(), dtype="string", name="text")
    layer = HashedTextLinear(name=LAYER_NAME, dtype="float32", **config)  # whatever the global policy
    probs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(layer(inputs))
    model = keras.Model(inputs, probs, name=name)
    for w in layer.weights:
        w.assign(solution[w.name.split("/")[-1]])
    layer.build_tables()
    return model
