"""Accuracy benchmark: textclf architectures against a TF-IDF + linear SVM baseline, same split, same run.

Reads the public datasets in ../shared/datasets (or --datasets-dir), normalises texts exactly as
ingestion does, trains through the same ``fit`` the pipeline uses, and prints one table row per
(dataset, model) with test accuracy, macro-F1, training time and the difference to the baseline.

    .venv/bin/python scripts/bench_models.py                       # default model on all datasets
    .venv/bin/python scripts/bench_models.py --seed-archs ag_news_7600   # plus every seed architecture there
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from textclf.config import TrainConfig  # noqa: E402
from textclf.errors import ModelError  # noqa: E402
from textclf.ingest.normalize import normalize_text  # noqa: E402
from textclf.model.architectures import DEFAULT_ARCHITECTURE, architectures  # noqa: E402
from textclf.model.data import LabeledData, Splits, assign_splits  # noqa: E402
from textclf.model.predict import predict_texts  # noqa: E402
from textclf.model.train import fit  # noqa: E402

DATASETS = ("imdb_reviews", "stackoverflow_16k", "ag_news_7600")
TARGETS = {"imdb_reviews": 0.915, "stackoverflow_16k": 0.900, "ag_news_7600": 0.890}
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def load_dataset(root: Path, name: str) -> tuple[LabeledData, LabeledData]:
    """(train, test) as the reference figures split them: official splits, AG News stratified 80/20 seed 0."""
    import pyarrow as pa

    files = sorted((root / name).glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f, columns=["id", "text", "label", "split"]) for f in files])
    texts = np.array(normalize_text(table.column("text").combine_chunks()).to_pylist(), dtype=object)
    ids = np.array([str(i) for i in table.column("id").to_pylist()], dtype=object)
    labels = np.array(table.column("label").to_pylist(), dtype=object)
    if name == "ag_news_7600":
        from sklearn.model_selection import train_test_split

        train_idx, test_idx = train_test_split(np.arange(len(ids)), test_size=0.2, stratify=labels, random_state=0)
    else:
        split = np.array(table.column("split").to_pylist())
        train_idx, test_idx = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    lineage = {"dataset": name}
    return (LabeledData(ids[train_idx], texts[train_idx], labels[train_idx], lineage),
            LabeledData(ids[test_idx], texts[test_idx], labels[test_idx], lineage))


def scores(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(labels, predicted)), float(f1_score(labels, predicted, average="macro"))


def baseline(train: LabeledData, test: LabeledData) -> dict[str, float]:
    """TF-IDF word 1-2 grams (min_df 2, sublinear tf) + LinearSVC, as DATASETS.md measured it."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    clf = LinearSVC().fit(vectorizer.fit_transform(train.texts), train.labels)
    seconds = time.perf_counter() - started
    accuracy, macro_f1 = scores(test.labels, clf.predict(vectorizer.transform(test.texts)))
    return {"accuracy": accuracy, "macro_f1": macro_f1, "seconds": seconds}


def run_model(train: LabeledData, test: LabeledData, config: TrainConfig) -> dict[str, float]:
    """Train through the pipeline's ``fit`` (validation carved from the train split by id hash)."""
    is_val = assign_splits(train.doc_ids.tolist(), 0, config.validation_percent) == "validation"
    classes = tuple(sorted(set(train.labels.tolist())))
    splits = Splits(train.subset(~is_val), train.subset(is_val), test, classes)
    started = time.perf_counter()
    result = fit(splits, config)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    probs = predict_texts(result.model, test.texts)
    predict_seconds = time.perf_counter() - started
    accuracy, macro_f1 = scores(test.labels, np.array(classes)[probs.argmax(axis=1)])
    return {"accuracy": accuracy, "macro_f1": macro_f1, "seconds": seconds,
            "epochs": len(result.history.get("loss", [])), "docs_per_s": len(test) / max(predict_seconds, 1e-9),
            "attempts": len(result.attempts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=[DEFAULT_ARCHITECTURE], choices=list(architectures()))
    parser.add_argument("--seed-archs", nargs="*", default=[], choices=DATASETS, metavar="DATASET",
                        help="also train every architecture on these datasets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if not args.datasets_dir.is_dir():
        print(f"no datasets at {args.datasets_dir}; pass --datasets-dir", file=sys.stderr)
        return 2
    rows = []
    header = (f"{'dataset':<18} {'model':<18} {'accuracy':>8} {'macro-F1':>8} {'train s':>8} {'epochs':>6} "
              f"{'docs/s':>8} {'SVM acc':>8} {'diff':>7} {'target':>7}")
    print(header)
    for name in args.datasets:
        train, test = load_dataset(args.datasets_dir, name)
        base = baseline(train, test)
        models = list(architectures()) if name in args.seed_archs else args.models
        for model in models:
            config = TrainConfig(model=model, seed=args.seed).with_overrides(args.settings)
            try:
                row = {"dataset": name, "model": model, **run_model(train, test, config), "baseline": base}
            except ModelError as exc:  # a collapsed recipe is a result too
                print(f"{name:<18} {model:<18} failed: {exc}", flush=True)
                rows.append({"dataset": name, "model": model, "error": str(exc)})
                continue
            rows.append(row)
            target = TARGETS[name] if model == DEFAULT_ARCHITECTURE else None
            met = "" if target is None else ("met" if row["accuracy"] >= target else "MISSED")
            print(f"{name:<18} {model:<18} {row['accuracy']:>8.2%} {row['macro_f1']:>8.4f} {row['seconds']:>8.1f} "
                  f"{row['epochs']:>6} {row['docs_per_s']:>8.0f} {base['accuracy']:>8.2%} "
                  f"{(row['accuracy'] - base['accuracy']) * 100:>+6.2f}p {met:>7}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
