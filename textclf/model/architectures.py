"""Model architectures, selectable by name; every one is end to end: raw strings in, probabilities out.

Text vectorization lives inside each model, so a saved ``.keras`` file carries its vocabulary
and scoring needs nothing but the file. Architectures take their defaults from ``ArchSpec``;
any of them can be overridden with ``TrainConfig`` fields (``--set KEY=VALUE``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf.errors import UsageError

if TYPE_CHECKING:
    import keras
    import numpy as np

    from textclf.config import TrainConfig



DEFAULT_ARCHITECTURE = "hashed_linear"

# Architectures fitted by a convex solver with model selection on validation (textclf.model.selection),
# not by the Keras fit loop.
SELECTED_ARCHITECTURES = ("hashed_linear",)

# The default model adds a character n-gram branch when training texts are this short on average.
CHAR_BRANCH_MAX_MEAN_CHARS = 600

CHAR_NGRAMS = (3, 4, 5)

CHAR_MAX_TOKENS = 300_000

# Fields of TrainConfig an architecture gives defaults for; None in the config means "use these".
TUNABLE = ("batch_size", "learning_rate", "optimizer", "max_tokens", "sequence_length", "embedding_dim",
           "units", "dropout", "ngrams", "char_branch")


@dataclass(frozen=True)
class ModelParams:
    """Resolved hyperparameters: the architecture's defaults overlaid with the user's settings."""

    architecture: str
    batch_size: int
    learning_rate: float
    optimizer: str
    max_tokens: int
    sequence_length: int
    embedding_dim: int
    units: int
    dropout: float
    ngrams: int
    char_branch: str
    seed: int


Builder = Callable[[ModelParams, "np.ndarray", "np.ndarray", int], "keras.Model"]


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: how to build it and its default hyperparameters."""

    name: str
    summary: str
    origin: str
    builder: Builder
    defaults: dict[str, Any]


_COMMON = {"batch_size": 32, "learning_rate": 1e-3, "optimizer": "adam", "max_tokens": 20_000,
           "sequence_length": 200, "embedding_dim": 64, "units": 64, "dropout": 0.5, "ngrams": 1,
           "char_branch": "auto"}


def resolve_params(config: TrainConfig) -> ModelParams:
    """The hyperparameters a training run will use."""
    spec = get_architecture(config.model)
    merged = {**_COMMON, **spec.defaults}
    for name in TUNABLE:
        value = getattr(config, name)
        if value is not None:
            merged[name] = value
    return ModelParams(architecture=spec.name, seed=config.seed, **merged)


def get_architecture(name: str) -> ArchSpec:
    """Look an architecture up by name, with a clear error listing the choices."""
    registry = architectures()
    if name not in registry:
        raise UsageError(f"unknown model architecture {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


def _vectorizer(params: ModelParams, texts: np.ndarray, **kwargs: Any) -> keras.layers.TextVectorization:
    """A TextVectorization layer adapted on the training texts."""
    import keras
    import tensorflow as tf

    layer = keras.layers.TextVectorization(max_tokens=params.max_tokens, name="vectorize", **kwargs)
    layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(2048))
    return layer


def _text_input() -> keras.KerasTensor:
    import keras

    return keras.Input(shape=(), dtype="string", name="text")


def _head(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """The softmax output, kept in float32 when mixed precision is on."""
    import keras

    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def _sequence_input(params: ModelParams, texts: np.ndarray) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Text input -> token ids padded/truncated to ``sequence_length`` -> embeddings (0 is padding)."""
    import keras

    vectorize = _vectorizer(params, texts, output_mode="int", output_sequence_length=params.sequence_length)
    inputs = _text_input()
    tokens = vectorize(inputs)
    embedded = keras.layers.Embedding(params.max_tokens, params.embedding_dim, mask_zero=True,
                                      name="embedding")(tokens)
    return inputs, embedded


def build_bow_mlp(params: ModelParams, texts: np.ndarray, labels: np.ndarray, num_classes: int) -> keras.Model:
    """Binary bag of words, Dense 512 relu, Dropout, Dense 256 sigmoid, Dropout, softmax (seed 002)."""
    import keras

    vectorize = _vectorizer(params, texts, output_mode="multi_hot")
    inputs = _text_input()
    x = vectorize(inputs)
    x = keras.layers.Dense(params.units, activation="relu")(x)
    x = keras.layers.Dropout(params.dropout, seed=params.seed)(x)
    x = keras.layers.Dense(params.units // 2, activation="sigmoid")(x)
    x = keras.layers.Dropout(params.dropout, seed=params.seed + 1)(x)
    return keras.Model(inputs, _head(x, num_classes), name="bow_mlp")


def build_embedding_flatten(params: ModelParams, texts: np.ndarray, labels: np.ndarray,
                            num_classes: int) -> keras.Model:
    """Embedding of a padded token sequence, Flatten, Dense 32 relu, softmax (seed 004)."""
    import keras

    vectorize = _vectorizer(params, texts, output_mode="int", output_sequence_length=params.sequence_length)
    inputs = _text_input()
    # No mask: Flatten reads every position, padding included, as in the seed.
    x = keras.layers.Embedding(params.max_tokens, params.embedding_dim, name="embedding")(vectorize(inputs))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(params.units, activation="relu")(x)
    return keras.Model(inputs, _head(x, num_classes), name="embedding_flatten")


def build_lstm(params: ModelParams, texts: np.ndarray, labels: np.ndarray, num_classes: int) -> keras.Model:
    """Embedding, one LSTM, softmax (seed 003, approach 1)."""
    import keras

    inputs, x = _sequence_input(params, texts)
    x = keras.layers.LSTM(params.units)(x)
    return keras.Model(inputs, _head(x, num_classes), name="lstm")


def build_bilstm(params: ModelParams, texts: np.ndarray, labels: np.ndarray, num_classes: int) -> keras.Model:
    """Embedding, one bidirectional LSTM, softmax (seed 003, approach 3)."""
    import keras

    inputs, x = _sequence_input(params, texts)
    x = keras.layers.Bidirectional(keras.layers.LSTM(params.units))(x)
    return keras.Model(inputs, _head(x, num_classes), name="bilstm")


def build_stacked_bilstm(params: ModelParams, texts: np.ndarray, labels: np.ndarray,
                         num_classes: int) -> keras.Model:
    """Embedding, three stacked bidirectional LSTMs (units, 1.2x, 1.5x), softmax (seed 003, approach 5)."""
    import keras

    inputs, x = _sequence_input(params, texts)
    widths = (params.units, int(params.units * 1.2), int(params.units * 1.5))
    for i, width in enumerate(widths):
        last = i == len(widths) - 1
        x = keras.layers.Bidirectional(keras.layers.LSTM(width, return_sequences=not last))(x)
    return keras.Model(inputs, _head(x, num_classes), name="stacked_bilstm")


def build_cnn(params: ModelParams, texts: np.ndarray, labels: np.ndarray, num_classes: int) -> keras.Model:
    """Embedding, Conv1D over 5-token windows, global max pooling, Dense, softmax (seed 000's convnet)."""
    import keras

    vectorize = _vectorizer(params, texts, output_mode="int", output_sequence_length=params.sequence_length)
    inputs = _text_input()
    x = keras.layers.Embedding(params.max_tokens, params.embedding_dim, name="embedding")(vectorize(inputs))
    x = keras.layers.Conv1D(params.units, 5, activation="relu", padding="same")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Dropout(params.dropout, seed=params.seed)(x)
    x = keras.layers.Dense(params.units, activation="relu")(x)
    return keras.Model(inputs, _head(x, num_classes), name="cnn")


def build_nb_tfidf(params: ModelParams, texts: np.ndarray, labels: np.ndarray, num_classes: int) -> keras.Model:
    """NB-weighted linear model on sublinear TF-IDF word n-grams, plus character n-grams for short texts.

    The project's default (see docs/models.md): word 1-``ngrams`` grams (punctuation kept as
    tokens) -> sublinear TF-IDF -> a linear layer whose kernel is scaled by Naive-Bayes
    log-count ratios. When the mean training text is short (news headlines, tickets), a second
    branch over character 3-5 grams adds its logits. Everything stays sparse, so a vocabulary of
    a million n-grams trains in minutes on two CPU cores.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from textclf.model.layers import (
        NBLinear,
        SublinearTfidf,
        count_statistics,
        idf_weights,
        nb_ratios,
        standardize_keep_punct,
    )

    texts = np.asarray(texts, dtype=object).astype(str)
    labels = np.asarray(labels).astype(np.int64)
    use_chars = params.char_branch == "on" or (
        params.char_branch == "auto" and float(np.mean([len(t) for t in texts])) <= CHAR_BRANCH_MAX_MEAN_CHARS)
    branches = [("word", {"max_tokens": params.max_tokens, "standardize": standardize_keep_punct,
                          "split": "whitespace", "ngrams": params.ngrams if params.ngrams > 1 else None})]
    if use_chars:
        branches.append(("char", {"max_tokens": CHAR_MAX_TOKENS, "standardize": "lower", "split": "character",
                                  "ngrams": CHAR_NGRAMS}))
    adapt_data = tf.data.Dataset.from_tensor_slices(texts).batch(1024)
    inputs = _text_input()
    logits, fills = [], []
    for name, options in branches:
        vectorize = keras.layers.TextVectorization(output_mode="count", sparse=True,
                                                   name="vectorize" if name == "word" else f"{name}_vectorize",
                                                   **options)
        vectorize.adapt(adapt_data)
        size = vectorize.vocabulary_size()
        tfidf = SublinearTfidf(size, name=f"{name}_tfidf", dtype="float32")
        linear = NBLinear(num_classes, size, name=f"{name}_linear", dtype="float32")
        logits.append(linear(tfidf(vectorize(inputs))))
        df, per_class = count_statistics(vectorize, texts, labels, num_classes)
        fills.append((tfidf, idf_weights(df, len(texts)), linear, nb_ratios(per_class)))
    summed = logits[0] if len(logits) == 1 else keras.layers.Add(name="add_branches")(logits)
    model = keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32", name="probabilities")(summed),
                        name="nb_tfidf")
    for tfidf, idf, linear, ratios in fills:
        tfidf.idf.assign(idf)
        linear.ratio.assign(ratios)
    # Summed branches move the logits faster per step: keep the effective step size constant.
    model.compile(optimizer=make_optimizer(dataclasses.replace(params, learning_rate=params.learning_rate
                                                               / len(logits))),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_hashed_linear(params: ModelParams, texts: np.ndarray, labels: np.ndarray,
                        num_classes: int) -> keras.Model:
    """The linear reference's configuration alone (no selection): hashed word 1-2 grams + LinearSVC(C=0.5).

    Training goes through ``textclf.model.selection.select`` instead (train.fit does), which fits this
    and the other candidates and keeps the validation winner; this builder is the no-validation fallback.
    """
    import numpy as np

    from textclf.model.selection import SelectionSettings, default_candidates, select

    classes = tuple(str(i) for i in range(num_classes))
    y = np.array([str(int(v)) for v in labels], dtype=object)
    empty = np.zeros(0, dtype=object)
    return select(np.asarray(texts, dtype=object), y, empty, empty, classes,
                  SelectionSettings(cv_below=0, seed=params.seed), candidates=default_candidates()[:1]).model


def architectures() -> dict[str, ArchSpec]:
    """Every architecture by name, the default first."""
    specs = [
        ArchSpec("hashed_linear", "linear model on exact-key hashed word n-grams (+ subwords), solver-fitted, "
                 "configuration chosen on validation against the linear reference", "project default",
                 build_hashed_linear, {}),
        ArchSpec("nb_tfidf", "NB-weighted linear model on word 1-3 gram TF-IDF (+ char 3-5 grams for short texts)",
                 "previous default", build_nb_tfidf,
                 {"ngrams": 3, "max_tokens": 1_000_000, "learning_rate": 0.02, "batch_size": 256}),
        ArchSpec("bow_mlp", "binary bag of 3,000 words, MLP 512-256", "seed 002", build_bow_mlp,
                 {"max_tokens": 3_000, "units": 512, "dropout": 0.5, "batch_size": 32}),
        ArchSpec("embedding_flatten", "embedding of 500 tokens, flatten, dense 32", "seed 004",
                 build_embedding_flatten,
                 {"max_tokens": 20_000, "sequence_length": 500, "embedding_dim": 128, "units": 32,
                  "batch_size": 32}),
        ArchSpec("lstm", "embedding 25, LSTM 50 over 50 tokens", "seed 003", build_lstm,
                 {"sequence_length": 50, "embedding_dim": 25, "units": 50, "optimizer": "rmsprop",
                  "batch_size": 512}),
        ArchSpec("bilstm", "embedding 25, bidirectional LSTM 50 over 50 tokens", "seed 003", build_bilstm,
                 {"sequence_length": 50, "embedding_dim": 25, "units": 50, "optimizer": "rmsprop",
                  "batch_size": 512}),
        ArchSpec("stacked_bilstm", "embedding 30, bidirectional LSTMs 50/60/75 over 50 tokens", "seed 003",
                 build_stacked_bilstm,
                 {"sequence_length": 50, "embedding_dim": 30, "units": 50, "optimizer": "rmsprop",
                  "batch_size": 512}),
        ArchSpec("cnn", "embedding 64, Conv1D 128x5, global max pooling, dense 128", "seed 000", build_cnn,
                 {"sequence_length": 200, "embedding_dim": 64, "units": 128, "dropout": 0.5,
                  "batch_size": 64}),
    ]
    return {spec.name: spec for spec in specs}


def make_optimizer(params: ModelParams) -> keras.optimizers.Optimizer:
    import keras

    if params.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(params.learning_rate)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(params.learning_rate)
    return keras.optimizers.Adam(params.learning_rate)


def build_model(params: ModelParams, texts: np.ndarray, labels: np.ndarray, num_classes: int) -> keras.Model:
    """Build and compile an architecture, its vectorizer adapted on the training texts only."""
    model = get_architecture(params.architecture).builder(params, texts, labels, num_classes)
    if getattr(model, "compiled", False):
        return model
    model.compile(optimizer=make_optimizer(params), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def describe_architectures() -> list[dict[str, Any]]:
    """Name, origin, summary and defaults of each architecture (for ``--help`` and the docs)."""
    return [{"name": s.name, "origin": s.origin, "summary": s.summary, "defaults": {**_COMMON, **s.defaults}}
            for s in architectures().values()]


def params_dict(params: ModelParams) -> dict[str, Any]:
    return dataclasses.asdict(params)
