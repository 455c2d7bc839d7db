"""Custom Keras layers of the default model, registered so ``.keras`` files load in safe mode.

Importing this module imports TensorFlow: only model building and loading import it.
Large statistics (idf, Naive-Bayes ratios) are non-trainable weights, saved with the weights,
not in the layer config.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "textclf"


@keras.saving.register_keras_serializable(package=PACKAGE)
def standardize_keep_punct(text: tf.Tensor) -> tf.Tensor:
    """Lower-case and make each punctuation or symbol character a token ("!", "?", "(", "." carry signal)."""
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"([^\w\s'])", r" \1 ")
    # An apostrophe inside a word stays (don't); quotes around words go.
    return tf.strings.regex_replace(text, r"(^|\s)'|'(\s|$)", r" ")


@keras.saving.register_keras_serializable(package=PACKAGE)
class SublinearTfidf(keras.layers.Layer):
    """Sparse term counts -> (1 + log tf) * idf, each row scaled to unit L2 norm."""

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.idf = self.add_weight(name="idf", shape=(self.vocab_size,), initializer="ones", trainable=False)

    def call(self, x: tf.SparseTensor) -> tf.SparseTensor:
        if not isinstance(x, tf.SparseTensor):
            x = tf.sparse.from_dense(x)
        values = tf.cast(x.values, "float32")
        rows = tf.cast(x.indices[:, 0], "int32")
        values = (1.0 + tf.math.log(values)) * tf.gather(self.idf, x.indices[:, 1])
        norms = tf.sqrt(tf.maximum(
            tf.math.unsorted_segment_sum(values * values, rows, tf.cast(x.dense_shape[0], "int32")), 1e-12))
        return tf.SparseTensor(x.indices, values / tf.gather(norms, rows), x.dense_shape)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.vocab_size)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class NBLinear(keras.layers.Layer):
    """A linear layer over sparse features whose effective kernel is ``W * R``.

    ``R`` holds per-class Naive-Bayes log-count ratios (NBSVM, Wang & Manning 2012, one class
    against the rest): features that separate classes start with a larger scale, so gradient
    descent with early stopping behaves like NB-informed regularisation.
    """

    def __init__(self, units: int, input_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.input_dim = int(input_dim)
        self.kernel = self.add_weight(name="kernel", shape=(self.input_dim, self.units), initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.ratio = self.add_weight(name="ratio", shape=(self.input_dim, self.units), initializer="ones",
                                     trainable=False)

    def call(self, x: tf.SparseTensor) -> tf.Tensor:
        return tf.sparse.sparse_dense_matmul(x, self.kernel * self.ratio) + self.bias

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "input_dim": self.input_dim}


def count_statistics(vectorizer: keras.layers.TextVectorization, texts: np.ndarray, labels: np.ndarray,
                     num_classes: int, batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Document frequency per feature and binarised feature counts per class, from training data only."""
    size = vectorizer.vocabulary_size()
    df = np.zeros(size, np.float64)
    per_class = np.zeros((num_classes, size), np.float64)
    for start in range(0, len(texts), batch):
        indices = vectorizer(tf.constant(texts[start:start + batch])).indices.numpy()
        rows, cols = indices[:, 0], indices[:, 1]
        np.add.at(df, cols, 1.0)
        np.add.at(per_class, (labels[start:start + batch][rows], cols), 1.0)
    return df, per_class


def idf_weights(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Smoothed idf as scikit-learn computes it; the out-of-vocabulary bucket gets 0."""
    idf = (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)
    idf[0] = 0.0
    return idf


def nb_ratios(per_class: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Log-count ratios r_k = log(p_k / |p_k|) - log(q_k / |q_k|), class k against the rest."""
    total = per_class.sum(axis=0)
    ratios = np.zeros((per_class.shape[1], per_class.shape[0]), np.float32)
    for k in range(per_class.shape[0]):
        p = per_class[k] + alpha
        q = total - per_class[k] + alpha
        ratios[:, k] = np.log(p / p.sum()) - np.log(q / q.sum())
    ratios[0] = 0.0  # the out-of-vocabulary bucket carries no signal
    return ratios
