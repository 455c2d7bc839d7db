"""Training: labeled partitions in, a registered model version out.

The default (``hashed_linear``) is fitted by convex solvers: its candidate configurations are fitted
within a work budget and the validation winner is kept (textclf.model.selection); every candidate's
validation score goes into ``training.json``. The other architectures stream shuffled batches through
``tf.data``, weight classes against imbalance, stop early on the validation split with the best epoch
restored, and retry with another seed when a run collapses to one class."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf.common import json_bytes, utc_now_iso
from textclf.config import TrainConfig
from textclf.errors import ModelError
from textclf.lake import Lake
from textclf.model.data import SPLIT_SALT, Splits, label_indices, load_labeled, make_splits
from textclf.model.predict import predict_texts, text_dataset
from textclf.progress import NoProgress, Progress

if TYPE_CHECKING:
    import keras
    import numpy as np

    from textclf.model.architectures import ModelParams

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    model: keras.Model
    params: ModelParams
    history: dict[str, list[float]]
    attempts: list[dict[str, Any]]
    seconds: float
    devices: dict[str, Any]
    candidates: list[dict[str, Any]] | None = None  # model selection: every candidate's validation evidence
    selection: dict[str, Any] | None = None  # model selection: the chosen candidate, temperature, budget


def _devices(config: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """All visible GPUs (mirrored) with mixed precision when enabled, else the default CPU strategy."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        log.info("training on %d GPU(s): %s", len(gpus), ", ".join(g.name for g in gpus))
    else:
        log.info("no GPU visible to TensorFlow %s (built with CUDA: %s): training on the CPU", tf.__version__,
                 tf.test.is_built_with_cuda())
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    mixed = config.mixed_precision == "on" or (config.mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return strategy, {"gpus": len(gpus), "replicas": strategy.num_replicas_in_sync,
                      "mixed_precision": mixed, "tensorflow": tf.__version__, "keras": keras.__version__}


def _progress_callback(progress: Progress, total_steps: int) -> keras.callbacks.Callback:
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        """Feeds the CLI progress bar batch by batch and logs each epoch's metrics."""

        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.done += 1
            progress.update(self.done)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
            log.info("epoch %d: %s", epoch + 1, shown)

    progress.start(total_steps, "training", unit="step")
    return ProgressCallback()


def collapse_reason(y_true: np.ndarray, probs: np.ndarray) -> str | None:
    """Why a trained model is unusable (predicts one class, or no better than the majority class), or None."""

    if len(y_true) == 0:
        return None
    predicted = probs.argmax(axis=1)
    if len(set(y_true.tolist())) > 1 and len(set(predicted.tolist())) == 1:
        return f"predicts only one class on the validation split ({len(y_true)} rows)"
    accuracy = float((predicted == y_true).mean())
    majority = max(Counter(y_true.tolist()).values()) / len(y_true)
    if len(y_true) >= 50 and accuracy <= majority:
        return (f"validation accuracy {accuracy:.3f} is no better than always guessing "
                f"the majority class ({majority:.3f})")
    return None


def _cpu_devices() -> dict[str, Any]:
    """What a solver-fitted model trained on: the CPU, whatever GPUs TensorFlow sees (logged once)."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        log.info("%d GPU(s) visible, unused: the default model's solver trains on the CPU", len(gpus))
    else:
        log.info("no GPU visible to TensorFlow %s (built with CUDA: %s): training on the CPU", tf.__version__,
                 tf.test.is_built_with_cuda())
    return {"gpus": len(gpus), "replicas": 1, "mixed_precision": False, "tensorflow": tf.__version__,
            "keras": keras.__version__, "solver": "scikit-learn LinearSVC (liblinear), CPU"}


def _selection_logs(log_dir: str, candidates: list[dict[str, Any]]) -> None:
    """The candidates' validation scores as TensorBoard scalars (step = candidate index), under ``selection/``."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(os.path.join(log_dir, "selection"))
    with writer.as_default():
        for step, c in enumerate(candidates):
            for key in ("validation_accuracy", "validation_macro_f1", "cv_accuracy"):
                if c.get(key) is not None:
                    tf.summary.scalar(f"selection/{key}", c[key], step=step)
        lines = [f"{i}: {c['name']}" + (" (selected)" if c.get("selected") else "")
                 + (f" skipped: {c['skipped']}" if c.get("skipped") else "") for i, c in enumerate(candidates)]
        tf.summary.text("selection/candidates", "\n".join(lines), step=0)
    writer.close()


def fit_selected(splits: Splits, config: TrainConfig, progress: Progress | None = None,
                 log_dir: str | None = None) -> FitResult:
    """Fit the default's candidates with a convex solver and keep the validation winner (no Keras fit loop)."""
    from textclf.model.architectures import resolve_params
    from textclf.model.selection import SelectionSettings, select

    progress = progress or NoProgress()
    params = resolve_params(config)
    devices = _cpu_devices()
    settings = SelectionSettings(budget_s=config.selection_budget_s, max_model_mb=config.max_model_mb,
                                 seed=config.seed)
    progress.start(1, "fitting candidates", unit="selection")
    started = time.perf_counter()
    result = select(splits.train.texts, splits.train.labels, splits.validation.texts, splits.validation.labels,
                    splits.classes, settings)
    progress.update(1)
    progress.close()
    log.info("model selection chose %s of %d candidates in %.1fs (temperature %.3f)", result.chosen,
             len(result.candidates), result.seconds, result.temperature)
    y_val = label_indices(splits.classes, splits.validation.labels)
    reason = collapse_reason(y_val, predict_texts(result.model, splits.validation.texts))
    attempts = [{"attempt": 1, "seed": config.seed, "learning_rate": None, "epochs_run": 0, "collapsed": reason}]
    if reason is not None:
        raise ModelError(f"training {config.model} collapsed ({reason}); the data may not carry the labels")
    candidates = [c.record() for c in result.candidates]
    if log_dir:
        _selection_logs(log_dir, candidates)
    return FitResult(result.model, params, {}, attempts, time.perf_counter() - started, devices,
                     candidates=candidates, selection=result.record())


def fit(splits: Splits, config: TrainConfig, progress: Progress | None = None,
        log_dir: str | None = None) -> FitResult:
    """Train the configured architecture; early stopping restores the best epoch."""
    import keras
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    from textclf.model.architectures import SELECTED_ARCHITECTURES, build_model, resolve_params

    if config.model in SELECTED_ARCHITECTURES:
        return fit_selected(splits, config, progress, log_dir)
    progress = progress or NoProgress()
    base = resolve_params(config)
    y_train = label_indices(splits.classes, splits.train.labels)
    y_val = label_indices(splits.classes, splits.validation.labels)
    n_train = len(y_train)
    batch_size = base.batch_size
    if math.ceil(n_train / batch_size) < config.min_steps_per_epoch:
        batch_size = max(8, n_train // config.min_steps_per_epoch)
    class_weight = None
    if config.class_weight == "balanced":
        weights = compute_class_weight("balanced", classes=np.arange(len(splits.classes)), y=y_train)
        class_weight = {i: float(w) for i, w in enumerate(weights)}
    policy = keras.mixed_precision.global_policy()  # process-wide: put back what the caller had
    strategy, devices = _devices(config)
    batch_size *= strategy.num_replicas_in_sync
    started = time.perf_counter()
    attempts: list[dict[str, Any]] = []
    try:
        for attempt in range(config.max_attempts):
            # A collapsed run is retried with another seed and half the step size: collapse is
            # usually an optimisation blow-up (dead ReLUs, one class's logit running away).
            params = dataclasses.replace(base, batch_size=batch_size, seed=config.seed + 1000 * attempt,
                                         learning_rate=base.learning_rate * 0.5 ** attempt)
            keras.utils.set_random_seed(params.seed)
            with strategy.scope():
                model = build_model(params, splits.train.texts.astype(str), y_train, len(splits.classes))
            callbacks: list[Any] = [
                keras.callbacks.EarlyStopping(monitor=config.monitor, patience=config.patience,
                                              restore_best_weights=True, verbose=0),
                _progress_callback(progress, config.epochs * math.ceil(n_train / batch_size)),
            ]
            if log_dir:
                callbacks.append(keras.callbacks.TensorBoard(os.path.join(log_dir, f"attempt-{attempt + 1}"),
                                                             write_graph=False, profile_batch=0))
            history = model.fit(text_dataset(splits.train.texts, y_train, batch_size, params.seed),
                                validation_data=text_dataset(splits.validation.texts, y_val, 1024, None),
                                epochs=config.epochs, class_weight=class_weight, callbacks=callbacks, shuffle=False,
                                verbose=0)
            progress.close()
            hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
            reason = collapse_reason(y_val, predict_texts(model, splits.validation.texts))
            attempts.append({"attempt": attempt + 1, "seed": params.seed, "learning_rate": params.learning_rate,
                             "epochs_run": len(hist.get("loss", [])), "collapsed": reason})
            if reason is None:
                return FitResult(model, params, hist, attempts, time.perf_counter() - started, devices)
            log.warning("training attempt %d collapsed: %s; retrying with another seed and half the learning rate",
                        attempt + 1, reason)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    raise ModelError(f"training {config.model} collapsed in all {config.max_attempts} attempts "
                     f"({attempts[-1]['collapsed']}); try a lower learning_rate or another --model")


def save_model(model: keras.Model, path: str, probe_texts: Sequence[str]) -> None:
    """Save as .keras and prove the file reloads (safe mode) with identical predictions."""
    import keras
    import numpy as np

    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    probe = list(probe_texts)[:64] or ["probe"]
    before, after = predict_texts(model, probe), predict_texts(reloaded, probe)
    if not np.allclose(before, after, atol=1e-5):
        raise ModelError(f"saved model at {path} does not reproduce its predictions after reloading")


def training_profile(model: keras.Model, splits: Splits) -> dict[str, Any]:
    """Baselines for scoring-time drift: word-count bins of the training texts, OOV rate on validation."""
    import numpy as np

    from textclf.model.predict import model_vocabulary
    from textclf.textstats import oov_counts, word_bin_counts

    words = np.fromiter((t.count(" ") + 1 if t else 0 for t in splits.train.texts), dtype=np.int64,
                        count=len(splits.train))
    oov, total = oov_counts(splits.validation.texts.tolist(), model_vocabulary(model))
    return {"word_bins": word_bin_counts(words), "oov_rate": oov / total if total else None}


@dataclass(frozen=True)
class TrainResult:
    """A registered, not yet evaluated model version."""

    version: str
    uri: str
    architecture: str
    seconds: float
    classes: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {"model_version": self.version, "model_uri": self.uri, "architecture": self.architecture,
                "train_seconds": round(self.seconds, 1), "classes": list(self.classes)}


def train(lake: Lake, config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train on all labeled data and register a new model version (``evaluate`` then adds its evaluation)."""
    from textclf.model.architectures import params_dict
    from textclf.model.registry import new_version, write_version

    progress = progress or NoProgress()
    data = load_labeled(lake)
    splits = make_splits(data, config)
    log.info("training %s on %d rows (%d train, %d validation, %d test), classes: %s", config.model, len(data),
             len(splits.train), len(splits.validation), len(splits.test), ", ".join(splits.classes))
    version = new_version(config.model)
    with tempfile.TemporaryDirectory(prefix="textclf-train-") as tmp:
        result = fit(splits, config, progress, log_dir=os.path.join(tmp, "tensorboard"))
        model_path = os.path.join(tmp, "model.keras")
        save_model(result.model, model_path, splits.validation.texts.astype(str).tolist())
        lineage = {**data.lineage, "splits": splits.counts(), "split_salt": SPLIT_SALT,
                   "test_percent": config.test_percent, "validation_percent": config.validation_percent,
                   "profile": training_profile(result.model, splits)}
        run_config = {**config.as_record(), "resolved": params_dict(result.params)}
        training: dict[str, Any] = {"history": result.history, "attempts": result.attempts,
                                    "seconds": round(result.seconds, 2), "devices": result.devices,
                                    "trained_at": utc_now_iso(), "model_bytes": os.path.getsize(model_path)}
        if result.candidates is not None:
            training["candidates"] = result.candidates
            training["selection"] = result.selection
        files = {"config.json": json_bytes(run_config), "lineage.json": json_bytes(lineage),
                 "training.json": json_bytes(training)}
        uri = write_version(lake, version, model_path, files, os.path.join(tmp, "tensorboard"),
                            classes=splits.classes, architecture=config.model)
    return TrainResult(version, uri, config.model, result.seconds, splits.classes)
