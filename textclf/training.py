"""Training and evaluation: labeled partitions in, a registered model version out.

The split is a pure function of the doc id (a salted hash), so a document stays in the same
split across versions and the test split only grows as data is added: versions compare on the
same held-out documents. Training streams shuffled batches through ``tf.data``, weights classes
against imbalance, stops early on the validation split with the best epoch restored, and
retries with another seed when a run collapses to one class.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf.config import TrainConfig
from textclf.errors import ModelError
from textclf.progress import NoProgress, Progress
from textclf.storage import Lake, utc_now_iso

if TYPE_CHECKING:
    import keras
    import numpy as np

    from textclf.models import ModelParams

log = logging.getLogger(__name__)

LABELED_PREFIX = "datasets/labeled"
SPLIT_SALT = "textclf-split-v1:"
MIN_TRAIN_ROWS = 2  # per class; fewer cannot be learned or validated


@dataclass
class LabeledData:
    """Every labeled document ingested so far (the latest label wins for a re-ingested id)."""

    doc_ids: np.ndarray
    texts: np.ndarray
    labels: np.ndarray
    lineage: dict[str, Any]

    def subset(self, mask: np.ndarray) -> LabeledData:
        return LabeledData(self.doc_ids[mask], self.texts[mask], self.labels[mask], self.lineage)

    def __len__(self) -> int:
        return len(self.doc_ids)


def split_bucket(doc_id: str) -> int:
    """A stable bucket 0-99 for a doc id."""
    digest = hashlib.sha256((SPLIT_SALT + doc_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def assign_splits(doc_ids: Sequence[str], test_percent: int, validation_percent: int) -> np.ndarray:
    """``train``/``validation``/``test`` for each id, by hash bucket (deterministic, order-free)."""
    import numpy as np

    buckets = np.fromiter((split_bucket(d) for d in doc_ids), dtype=np.int16, count=len(doc_ids))
    splits = np.full(len(doc_ids), "train", dtype=object)
    splits[buckets < test_percent + validation_percent] = "validation"
    splits[buckets < test_percent] = "test"
    return splits


def split_fingerprint(doc_ids: Sequence[str], labels: Sequence[str]) -> str:
    """sha256 over the sorted (doc id, label) pairs of a split: equal fingerprints, same test set."""
    digest = hashlib.sha256()
    for doc_id, label in sorted(zip(doc_ids, labels, strict=True)):
        digest.update(f"{doc_id}\t{label}\n".encode())
    return digest.hexdigest()


def load_labeled(lake: Lake) -> LabeledData:
    """Read every committed labeled partition, oldest first; a later ingest of an id replaces it."""
    import numpy as np

    partitions = lake.list_partitions(LABELED_PREFIX)
    if not partitions:
        raise ModelError(f"no labeled data in {lake.uri_of(LABELED_PREFIX)}: run `textclf ingest --kind labeled` first")
    index: dict[str, int] = {}
    doc_ids: list[str] = []
    texts: list[str] = []
    labels: list[str] = []
    replaced = 0
    used = []
    for key in partitions:
        manifest_bytes = lake.read_bytes(f"{key}/_MANIFEST.json")
        manifest = json.loads(manifest_bytes)
        table = lake.read_table(key, columns=["doc_id", "text", "label"])
        for doc_id, text, label in zip(*(table.column(c).to_pylist() for c in ("doc_id", "text", "label")),
                                       strict=True):
            at = index.get(doc_id)
            if at is None:
                index[doc_id] = len(doc_ids)
                doc_ids.append(doc_id)
                texts.append(text)
                labels.append(label)
            else:
                texts[at], labels[at] = text, label
                replaced += 1
        used.append({"partition": key, "rows": table.num_rows, "created_at": manifest.get("created_at"),
                     "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()})
    lineage = {"partitions": used, "rows": len(doc_ids), "replaced_by_later_ingest": replaced,
               "rows_per_class": dict(sorted(Counter(labels).items()))}
    return LabeledData(np.array(doc_ids, dtype=object), np.array(texts, dtype=object),
                       np.array(labels, dtype=object), lineage)


@dataclass
class Splits:
    train: LabeledData
    validation: LabeledData
    test: LabeledData
    classes: tuple[str, ...]

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: dict(sorted(Counter(getattr(self, name).labels.tolist()).items()))
                for name in ("train", "validation", "test")}


def make_splits(data: LabeledData, config: TrainConfig) -> Splits:
    """Split by doc id and check there is enough to learn from."""
    splits = assign_splits(data.doc_ids.tolist(), config.test_percent, config.validation_percent)
    train, validation, test = (data.subset(splits == s) for s in ("train", "validation", "test"))
    classes = tuple(sorted(set(train.labels.tolist())))
    if len(classes) < 2:
        raise ModelError(f"training needs at least 2 classes, found {len(classes)} ({', '.join(classes)})")
    counts = Counter(train.labels.tolist())
    thin = [f"{c} ({counts[c]})" for c in classes if counts[c] < MIN_TRAIN_ROWS]
    if thin:
        raise ModelError(f"too few training examples for class(es): {', '.join(thin)}; ingest more labeled data")
    if len(validation) == 0 or len(test) == 0:
        raise ModelError(f"{len(data)} labeled rows leave an empty validation or test split; ingest more data")
    missing = sorted(set(test.labels.tolist()) - set(classes))
    if missing:
        log.warning("test split has labels never seen in training (counted as errors): %s", ", ".join(missing))
    return Splits(train, validation, test, classes)


@dataclass
class FitResult:
    model: keras.Model
    params: ModelParams
    history: dict[str, list[float]]
    attempts: list[dict[str, Any]]
    seconds: float
    devices: dict[str, Any]


def _class_index(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Label strings -> class indices; -1 for a label the model does not know."""
    import numpy as np

    lookup = {c: i for i, c in enumerate(classes)}
    return np.fromiter((lookup.get(label, -1) for label in labels), dtype=np.int32, count=len(labels))


def _dataset(texts: np.ndarray, y: np.ndarray | None, batch_size: int, seed: int | None) -> Any:
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
    return np.asarray(model.predict(_dataset(texts, None, batch_size, None), verbose=0), dtype=np.float32)


def _devices(config: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """All visible GPUs (mirrored) with mixed precision when enabled, else the default CPU strategy."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
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


def fit(splits: Splits, config: TrainConfig, progress: Progress | None = None,
        log_dir: str | None = None) -> FitResult:
    """Train the configured architecture; early stopping restores the best epoch."""
    import keras
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    from textclf.models import build_model, resolve_params

    progress = progress or NoProgress()
    base = resolve_params(config)
    y_train = _class_index(splits.train.labels, splits.classes)
    y_val = _class_index(splits.validation.labels, splits.classes)
    n_train = len(y_train)
    batch_size = base.batch_size
    if math.ceil(n_train / batch_size) < config.min_steps_per_epoch:
        batch_size = max(8, n_train // config.min_steps_per_epoch)
    class_weight = None
    if config.class_weight == "balanced":
        weights = compute_class_weight("balanced", classes=np.arange(len(splits.classes)), y=y_train)
        class_weight = {i: float(w) for i, w in enumerate(weights)}
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
            history = model.fit(_dataset(splits.train.texts, y_train, batch_size, params.seed),
                                validation_data=_dataset(splits.validation.texts, y_val, 1024, None),
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
        keras.mixed_precision.set_global_policy("float32")
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

    from textclf.scoring import model_vocabulary, oov_counts
    from textclf.validation import word_bin_counts

    words = np.fromiter((t.count(" ") + 1 if t else 0 for t in splits.train.texts), dtype=np.int64,
                        count=len(splits.train))
    oov, total = oov_counts(splits.validation.texts.tolist(), model_vocabulary(model))
    return {"word_bins": word_bin_counts(words), "oov_rate": oov / total if total else None}


@dataclass
class TrainResult:
    version: str
    uri: str
    metrics: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        keep = ("n", "accuracy", "macro_f1", "expected_calibration_error")
        return {"model_version": self.version, "model_uri": self.uri, "train_seconds": round(self.seconds, 1),
                "metrics": {k: self.metrics[k] for k in keep if k in self.metrics},
                "report": f"{self.uri}/report.html"}


def evaluation_files(model: keras.Model, version: str, config: dict[str, Any], lineage: dict[str, Any],
                     classes: Sequence[str], test: LabeledData, history: dict[str, list[float]],
                     seed: int, explain_count: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Evaluate a model on the test split: metrics plus every report file."""

    from textclf.evaluation import EvaluationInput, build_evaluation

    probs = predict_texts(model, test.texts)
    inp = EvaluationInput(version=version, architecture=str(config.get("model")), classes=tuple(classes),
                          doc_ids=test.doc_ids.tolist(), texts=test.texts.tolist(), labels=test.labels.tolist(),
                          probs=probs, history=history, config=config, lineage=lineage)
    metrics, files = build_evaluation(inp, lambda texts: predict_texts(model, texts), explain_count=explain_count,
                                      seed=seed)
    metrics["test_split"] = {"fingerprint": split_fingerprint(test.doc_ids.tolist(), test.labels.tolist()),
                             "rows": len(test)}
    metrics["evaluated_at"] = utc_now_iso()
    files["metrics.json"] = _json_bytes(metrics)
    files["test_predictions.parquet"] = _predictions_parquet(test, classes, probs)
    return metrics, files


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=False, default=str).encode()


def _predictions_parquet(test: LabeledData, classes: Sequence[str], probs: np.ndarray) -> bytes:
    """The test split's predictions, kept for audits and for comparing versions row by row."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    table = pa.table({
        "doc_id": pa.array(test.doc_ids.tolist(), pa.string()),
        "label": pa.array(test.labels.tolist(), pa.string()),
        "predicted_label": pa.array([classes[i] for i in predicted], pa.string()),
        "confidence": pa.array(probs.max(axis=1) if len(probs) else [], pa.float32()),
        "probs": pa.array(probs.tolist(), pa.list_(pa.float32())),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def train(lake_uri: str, config: TrainConfig, progress: Progress | None = None,
          lake: Lake | None = None) -> TrainResult:
    """Train on all labeled data, evaluate on the test split and register a new model version."""
    from textclf.models import params_dict
    from textclf.registry import model_card, new_version, write_version

    lake = lake or Lake(lake_uri)
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
        run_config = {**config.as_dict(), "resolved": params_dict(result.params)}
        training = {"history": result.history, "attempts": result.attempts, "seconds": round(result.seconds, 2),
                    "devices": result.devices, "trained_at": utc_now_iso()}
        metrics, files = evaluation_files(result.model, version, run_config, lineage, splits.classes, splits.test,
                                          result.history, config.seed, config.explain_count)
        files.update({"config.json": _json_bytes(run_config), "lineage.json": _json_bytes(lineage),
                      "training.json": _json_bytes(training)})
        files["model_card.md"] = model_card(version, run_config, lineage, metrics, training).encode()
        uri = write_version(lake, version, model_path, files, os.path.join(tmp, "tensorboard"),
                            classes=splits.classes, architecture=config.model)
    return TrainResult(version, uri, metrics, result.seconds)


def evaluate(lake_uri: str, version: str, progress: Progress | None = None, lake: Lake | None = None,
             explain_count: int = 8) -> dict[str, Any]:
    """Re-evaluate a registered version on the lake's current test split and record it with the version."""
    from textclf.registry import load_model, rewrite_evaluation

    lake = lake or Lake(lake_uri)
    loaded = load_model(lake, version)
    config = TrainConfig.from_record(loaded.config)
    splits = make_splits(load_labeled(lake), config)
    training = lake.read_json(f"{loaded.key}/training.json")
    lineage = lake.read_json(f"{loaded.key}/lineage.json")
    metrics, files = evaluation_files(loaded.model, version, loaded.config, lineage, loaded.classes, splits.test,
                                      training.get("history", {}), config.seed, explain_count)
    uri = rewrite_evaluation(lake, version, files)
    return {"model_version": version, "model_uri": uri, "report": f"{uri}/report.html",
            "metrics": {k: metrics[k] for k in ("n", "accuracy", "macro_f1") if k in metrics},
            "test_split": metrics["test_split"]}


def metrics_on(model_predict: Callable[[Sequence[str]], np.ndarray], classes: Sequence[str],
               test: LabeledData) -> dict[str, Any]:
    """Accuracy and macro-F1 of a model on a given test split (used by the promotion gate)."""
    from textclf.evaluation import compute_metrics

    metrics = compute_metrics(tuple(classes), test.labels.tolist(), model_predict(test.texts.tolist()))
    metrics["test_split"] = {"fingerprint": split_fingerprint(test.doc_ids.tolist(), test.labels.tolist()),
                             "rows": len(test)}
    return metrics
