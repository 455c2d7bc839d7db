"""Accuracy benchmark: the default model against the linear reference, per dataset and stress variant, same split.

Builds the stress variants of ../shared/datasets once (scripts/stress_variants.py: the public datasets, a
22-class merge, the same with e-mail/forum noise, small-data subsamples, 1:20 imbalance), normalises texts
exactly as ingestion does, and for each variant, in the same run and on the same split:

- the linear reference (textclf.evaluate.reference: TF-IDF word 1-2 grams, min_df 2, sublinear tf, 500k
  features + LinearSVC C=0.5), fitted on the training split as the evaluation report fits it;
- each model (default: the default architecture), trained through the pipeline's ``fit`` on the same
  training split with the same validation split,

then prints one row per (variant, model): test accuracy, macro-F1, training seconds, model file size, the
chosen candidate and the difference to the reference.

    .venv/bin/python scripts/bench_models.py                                   # every variant
    .venv/bin/python scripts/bench_models.py --variants ag mail22 --models hashed_linear nb_tfidf
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import stress_variants  # noqa: E402

from textclf.config import TrainConfig  # noqa: E402
from textclf.errors import ModelError  # noqa: E402
from textclf.ingest.normalize import normalize_text  # noqa: E402
from textclf.model.architectures import DEFAULT_ARCHITECTURE, architectures  # noqa: E402
from textclf.model.data import LabeledData, Splits  # noqa: E402
from textclf.model.predict import predict_texts  # noqa: E402
from textclf.model.train import fit, save_model  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def load_variant(folder: Path, name: str) -> Splits:
    """Train / validation / test of one stress variant (validation already carved by the project's id rule)."""
    table = pq.read_table(folder / f"{name}.parquet")
    texts = np.array(normalize_text(table.column("text").combine_chunks()).to_pylist(), dtype=object)
    ids = np.array(table.column("id").to_pylist(), dtype=object)
    labels = np.array(table.column("label").to_pylist(), dtype=object)
    split = np.array(table.column("split").to_pylist(), dtype=object)
    data = LabeledData(ids, texts, labels, {"dataset": name})
    train = split == "train"
    classes = tuple(sorted(set(labels[split != "test"].tolist())))
    return Splits(data.subset(train), data.subset(split == "validation"), data.subset(split == "test"), classes)


def scores(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(labels, predicted)), float(f1_score(labels, predicted, average="macro"))


def reference(splits: Splits) -> dict[str, Any]:
    """The linear reference on the training split, scored on the test split (as the evaluation report does)."""
    import joblib

    from textclf.evaluate.reference import reference_pipeline

    started = time.perf_counter()
    pipeline = reference_pipeline().fit(splits.train.texts.astype(str), splits.train.labels.astype(str))
    seconds = time.perf_counter() - started
    accuracy, macro_f1 = scores(splits.test.labels.astype(str), pipeline.predict(splits.test.texts.astype(str)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.joblib"
        joblib.dump(pipeline, path)
        size = path.stat().st_size
    return {"accuracy": accuracy, "macro_f1": macro_f1, "seconds": seconds, "model_mb": size / 2**20}


def run_model(splits: Splits, config: TrainConfig) -> dict[str, Any]:
    """Train through the pipeline's ``fit``; test scores, training seconds, .keras size, scoring speed."""
    started = time.perf_counter()
    result = fit(splits, config)
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        save_model(result.model, str(path), splits.validation.texts.astype(str).tolist())
        size = path.stat().st_size
    started = time.perf_counter()
    probs = predict_texts(result.model, splits.test.texts, batch_size=4096)
    predict_seconds = time.perf_counter() - started
    accuracy, macro_f1 = scores(splits.test.labels, np.array(splits.classes)[probs.argmax(axis=1)])
    selection = result.selection or {}
    return {"accuracy": accuracy, "macro_f1": macro_f1, "seconds": seconds, "model_mb": size / 2**20,
            "chosen": selection.get("chosen", ""), "epochs": len(result.history.get("loss", [])),
            "docs_per_s": len(splits.test) / max(predict_seconds, 1e-9), "candidates": result.candidates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--work", type=Path, default=Path("build/stress"), help="where the variants are built")
    parser.add_argument("--variants", nargs="+", default=list(stress_variants.VARIANTS),
                        choices=stress_variants.VARIANTS)
    parser.add_argument("--models", nargs="+", default=[DEFAULT_ARCHITECTURE], choices=list(architectures()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if not all((args.work / f"{v}.parquet").exists() for v in args.variants):
        if not args.datasets_dir.is_dir():
            print(f"no datasets at {args.datasets_dir}; pass --datasets-dir", file=sys.stderr)
            return 2
        stress_variants.build(args.datasets_dir, args.work)
    rows = []
    print(f"{'variant':<13} {'train':>6} {'model':<14} {'accuracy':>8} {'macro-F1':>8} {'train s':>8} {'MB':>6} "
          f"{'docs/s':>7} {'ref acc':>8} {'ref s':>6} {'diff':>7}  chosen")
    for name in args.variants:
        splits = load_variant(args.work, name)
        base = reference(splits)
        for model in args.models:
            config = TrainConfig(model=model, seed=args.seed).with_overrides(args.settings)
            try:
                row = {"variant": name, "model": model, "train_rows": len(splits.train),
                       "validation_rows": len(splits.validation), "test_rows": len(splits.test),
                       **run_model(splits, config), "reference": base}
            except ModelError as exc:  # a collapsed recipe is a result too
                print(f"{name:<13} {model:<14} failed: {exc}", flush=True)
                rows.append({"variant": name, "model": model, "error": str(exc)})
                continue
            rows.append(row)
            print(f"{name:<13} {len(splits.train):>6} {model:<14} {row['accuracy']:>8.2%} {row['macro_f1']:>8.4f} "
                  f"{row['seconds']:>8.1f} {row['model_mb']:>6.1f} {row['docs_per_s']:>7.0f} "
                  f"{base['accuracy']:>8.2%} {base['seconds']:>6.1f} "
                  f"{(row['accuracy'] - base['accuracy']) * 100:>+6.2f}p  {row['chosen']}", flush=True)
            if args.json:  # after every row: a long run that is stopped keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
