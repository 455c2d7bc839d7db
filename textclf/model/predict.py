"""Running a loaded Keras model on raw texts, and reading its vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import numpy as np



def text_dataset(texts: np.ndarray, y: np.ndarray | None, batch_size: int, seed: int | None) -> Any:
    """A batched tf.data pipeline over strings (shuffled each epoch when a seed is given)."""
    import tensorflow as tf

    tensors = tf.constant(texts.astype(str)) if y is None else (tf.constant(texts.astype(str)), tf.constant(y))
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if seed is not None:
        ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict_texts(model: keras.Model, texts: Sequence[str] | np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities for raw texts."""
    import numpy as np

    texts = np.asarray(texts, dtype=object)
    if len(texts) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.asarray(model.predict(text_dataset(texts, None, batch_size, None), verbose=0), dtype=np.float32)


def model_vocabulary(model: keras.Model) -> frozenset[str]:
    """The single-word entries of the model's word vectorizer (n-grams and special tokens left out); for the
    default (hashed) model, the training split's frequent words it stores for this purpose."""
    import keras

    for layer in model.layers:
        if hasattr(layer, "vocabulary_words"):
            return frozenset(layer.vocabulary_words())
        if isinstance(layer, keras.layers.TextVectorization) and layer.name == "vectorize":
            return frozenset(t for t in layer.get_vocabulary() if t and " " not in t and not t.startswith("["))
    return frozenset()
