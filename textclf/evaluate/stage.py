"""Evaluation: a registered model version on the test split, its metrics and every report file written with it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from textclf.common import json_bytes, jsonable, utc_now_iso
from textclf.config import EvaluateConfig, TrainConfig
from textclf.evaluate.explain import PredictFn, explain_predictions
from textclf.evaluate.label_errors import suspected_label_errors
from textclf.evaluate.maps import probability_map, projector_files
from textclf.evaluate.metrics import compute_metrics
from textclf.evaluate.predictions import EvaluationInput
from textclf.evaluate.report import render_report
from textclf.lake import Lake
from textclf.model.data import LabeledData, Splits, label_indices, load_labeled, make_splits, split_fingerprint
from textclf.model.predict import predict_texts
from textclf.progress import NoProgress, Progress

if TYPE_CHECKING:
    import keras
    import numpy as np

log = logging.getLogger(__name__)


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
                     progress_log: Callable[[str], None] | None = None,
                     linear_reference: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Evaluate a model version on its test split: (metrics, files to write next to it).

    files: ``metrics.json``, ``report.html`` and the ``projector/`` export.
    """
    def step(message: str) -> None:
        log.info("evaluation of %s: %s", inp.version, message)
        if progress_log is not None:
            progress_log(message)

    step(f"metrics on {len(inp.doc_ids):,} test rows")
    metrics = jsonable(compute_metrics(inp.classes, inp.labels, inp.probs))
    if linear_reference is not None:
        metrics["linear_reference"] = jsonable(linear_reference)
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
    files = {"metrics.json": json_bytes(metrics),
             "report.html": report.encode("utf-8"), **files}
    step(f"done: report {len(files['report.html']) / 1e6:.2f} MB")
    return metrics, files


def evaluation_files(model: keras.Model, version: str, config: dict[str, Any], lineage: dict[str, Any],
                     classes: Sequence[str], splits: Splits, training: dict[str, Any], seed: int,
                     explain_count: int, with_reference: bool) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Evaluate a model on the test split: metrics plus every report file, the model card included."""
    from textclf.evaluate.reference import linear_reference
    from textclf.model.registry import model_card

    test = splits.test
    probs = predict_texts(model, test.texts)
    history = training.get("history", {})
    inp = EvaluationInput(version=version, architecture=str(config.get("model")), classes=tuple(classes),
                          doc_ids=test.doc_ids.tolist(), texts=test.texts.tolist(), labels=test.labels.tolist(),
                          probs=probs, history=history, config=config, lineage=lineage, training=training)
    reference = linear_reference(splits) if with_reference else None
    metrics, files = build_evaluation(inp, lambda texts: predict_texts(model, texts), explain_count=explain_count,
                                      seed=seed, linear_reference=reference)
    metrics["test_split"] = {"fingerprint": split_fingerprint(test.doc_ids.tolist(), test.labels.tolist()),
                             "rows": len(test)}
    metrics["evaluated_at"] = utc_now_iso()
    files["metrics.json"] = json_bytes(metrics)
    files["test_predictions.parquet"] = _predictions_parquet(test, classes, probs)
    files["model_card.md"] = model_card(version, config, lineage, metrics, training).encode()
    return metrics, files


def _predictions_parquet(test: LabeledData, classes: Sequence[str], probs: np.ndarray) -> bytes:
    """The test split's predictions, kept for audits and for comparing versions row by row."""
    import io

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


@dataclass(frozen=True)
class EvaluateResult:
    """An evaluated model version: where its report is and its headline test metrics."""

    version: str
    uri: str
    metrics: dict[str, Any]

    @property
    def report_uri(self) -> str:
        return f"{self.uri}/report.html"

    def summary(self) -> dict[str, Any]:
        keep = ("n", "accuracy", "macro_f1", "expected_calibration_error")
        out = {"model_version": self.version, "model_uri": self.uri, "report": self.report_uri,
               "metrics": {k: self.metrics[k] for k in keep if k in self.metrics},
               "test_split": self.metrics.get("test_split")}
        reference = self.metrics.get("linear_reference")
        if reference:
            out["linear_reference"] = {k: reference[k] for k in ("accuracy", "macro_f1") if k in reference}
        return out


def evaluate(lake: Lake, config: EvaluateConfig, progress: Progress | None = None) -> EvaluateResult:
    """Evaluate a registered version on the lake's current test split and record the evaluation with it.

    The model file and training record stay byte for byte; only the evaluation files are (re)written,
    so a failed evaluation never costs a finished training run: fix the cause and run it again.
    """
    from textclf.model.registry import load_model, rewrite_evaluation

    progress = progress or NoProgress()
    loaded = load_model(lake, config.model_version)
    train_config = TrainConfig.from_record(loaded.config)
    splits = make_splits(load_labeled(lake), train_config)
    training = lake.read_json(f"{loaded.key}/training.json")
    lineage = lake.read_json(f"{loaded.key}/lineage.json")
    metrics, files = evaluation_files(loaded.model, config.model_version, loaded.config, lineage, loaded.classes,
                                      splits, training, train_config.seed, config.explain_count,
                                      config.linear_reference)
    uri = rewrite_evaluation(lake, config.model_version, files)
    return EvaluateResult(config.model_version, uri, metrics)
