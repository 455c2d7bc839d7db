"""Scoring benchmark: end-to-end `score` against bare `model.predict` and a seed-style path, same run.

Generates N short unlabeled documents of the demo corpus, ingests them, and measures in
separate processes (each reports its own peak RSS):
- pipeline: ``textclf.score.stage.score`` (read Parquet, score, write, manifest, report);
- bare: the same model's ``predict`` on the same texts already in memory, same batch size;
- seed-style (seed 003): Python tokenizer, padding to 50 tokens, ``predict`` on int arrays, with
  the ``lstm`` architecture, next to the pipeline scoring with that same model.

    .venv/bin/python scripts/bench_score.py --docs 1000000 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from peak_rss import own_peak_rss_mb, run_child

from textclf.config import EvaluateConfig, PromoteConfig, ReportConfig
from textclf.evaluate.stage import evaluate

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LABELED_DATE = "2026-01-01"


def date_for(n: int) -> str:
    """One ingest date per document count (a hash of it), so sizes never share a partition."""
    import datetime as dt
    import zlib

    return (dt.date(2030, 1, 1) + dt.timedelta(days=zlib.crc32(str(n).encode()) % 3000)).isoformat()


def setup(lake: Path, work: Path, docs: list[int]) -> dict[str, str]:
    """Train the default and the seed LSTM once; land and ingest N unlabeled documents per size."""
    from textclf.config import IngestConfig, TrainConfig
    from textclf.demo.corpus import CorpusSpec, write_corpus
    from textclf.ingest.stage import ingest
    from textclf.lake import Lake
    from textclf.lake.tables import dataset_table
    from textclf.model.registry import list_versions
    from textclf.model.train import train
    from textclf.promote.stage import promote

    store = Lake(str(lake))
    versions = {v.split("-")[1]: v for v in list_versions(store) if v.count("-") >= 2}
    if not {"nb_tfidf", "lstm"} <= set(versions):
        labeled = work / "labeled.csv"
        write_corpus(CorpusSpec(rows=6000, seed=0), labeled)
        ingest(Lake(str(lake)), IngestConfig(kind="labeled", date=LABELED_DATE, sources=(str(labeled),)))
        for model in ("nb_tfidf", "lstm"):
            versions[model] = train(Lake(str(lake)), TrainConfig(model=model)).version
            evaluate(Lake(str(lake)), EvaluateConfig(model_version=versions[model], explain_count=2))
        promote(Lake(str(lake)), PromoteConfig(model_version=versions["nb_tfidf"], force=True))
    for n in docs:
        date = date_for(n)
        if dataset_table(store, "unlabeled").summary(date) is None:
            source = work / f"unlabeled-{n}.parquet"
            write_corpus(CorpusSpec(rows=n, labeled=False, seed=7, label_noise=0.0, id_prefix="u"), source)
            ingest(Lake(str(lake)), IngestConfig(kind="unlabeled", date=date, sources=(str(source),)))
            source.unlink()
    return {"nb_tfidf": versions["nb_tfidf"], "lstm": versions["lstm"]}


def read_texts(lake: str, date: str) -> list[str]:
    from textclf.lake import Lake
    from textclf.lake.tables import dataset_table

    return dataset_table(Lake(lake), "unlabeled").read(date, columns=["text"]).column("text").to_pylist()


def child(mode: str, lake: str, date: str, version: str, batch_rows: int) -> dict:
    """One measurement in this process; returns docs, seconds and peak RSS."""
    import numpy as np
    import tensorflow as tf

    from textclf.config import ScoreConfig
    from textclf.lake import Lake
    from textclf.model.registry import load_model
    from textclf.score.stage import report, score

    if mode == "pipeline":
        # The report is its own step (`textclf report`); it is timed apart, not in documents per second.
        started = time.perf_counter()
        store = Lake(lake)
        config = ScoreConfig(date=date, model_version=version, batch_rows=batch_rows)
        docs = score(store, config, with_report=False).predictions.manifest["rows"]
        seconds = time.perf_counter() - started
        report_started = time.perf_counter()
        report(store, ReportConfig(date=date))
        return {"docs": docs, "seconds": seconds, "report_seconds": time.perf_counter() - report_started,
                "peak_rss_mb": own_peak_rss_mb()}
    else:
        model = load_model(Lake(lake), version).model
        texts = read_texts(lake, date)
        docs = len(texts)
        if mode == "bare":
            started = time.perf_counter()
            model.predict(tf.constant(texts), batch_size=batch_rows, verbose=0)
        else:  # seed-style: tokenize and pad in Python, predict on integer arrays
            import keras

            vocabulary = model.get_layer("vectorize").get_vocabulary()
            length = model.get_layer("vectorize").get_config()["output_sequence_length"]
            index = {word: i for i, word in enumerate(vocabulary)}
            inputs = keras.Input(shape=(length,), dtype="int64")
            x = inputs
            for layer in model.layers[2:]:
                x = layer(x)
            int_model = keras.Model(inputs, x)
            strip = re.compile(r"[^\w\s]")
            started = time.perf_counter()
            padded = np.zeros((docs, length), dtype=np.int64)
            for row, text in enumerate(texts):
                ids = [index.get(w, 1) for w in strip.sub("", text.lower()).split()[:length]]
                padded[row, :len(ids)] = ids
            int_model.predict(padded, batch_size=batch_rows, verbose=0)
    seconds = time.perf_counter() - started
    return {"docs": docs, "seconds": seconds, "peak_rss_mb": own_peak_rss_mb()}


def measure(mode: str, lake: Path, date: str, version: str, batch_rows: int) -> dict:
    return run_child(__file__, ["--child", mode, "--lake", str(lake), "--date", date, "--version", version,
                                "--batch-rows", str(batch_rows)], mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--dir", type=Path, default=Path("bench-data/score"))
    parser.add_argument("--skip-seed-style", action="store_true", help="run no lstm path at all")
    parser.add_argument("--lstm-paths", nargs="*", default=["bare", "pipeline", "seed-style"],
                        choices=["bare", "pipeline", "seed-style"], help="which lstm paths to run")
    parser.add_argument("--paths", nargs="*", default=["bare", "pipeline"], choices=["bare", "pipeline"],
                        help="which default-model paths to run (bare needs every text in memory)")
    parser.add_argument("--batch-rows", type=int, default=4096, help="the pipeline's batch size")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--date", help=argparse.SUPPRESS)
    parser.add_argument("--version", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.lake, args.date, args.version, args.batch_rows)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    lake = (args.dir / "lake").resolve()
    versions = setup(lake, args.dir, args.docs)
    print(f"{'docs':>10} {'model':<9} {'path':<12} {'seconds':>8} {'docs/s':>9} {'peak RSS MB':>12} {'vs bare':>8}")
    for n in args.docs:
        date = date_for(n)
        runs = [("nb_tfidf", path) for path in args.paths]
        if not args.skip_seed_style:
            runs += [("lstm", path) for path in args.lstm_paths]
        bare: dict[str, float] = {}
        for model, mode in runs:
            r = measure(mode, lake, date, versions[model], args.batch_rows)
            rate = r["docs"] / r["seconds"]
            if mode == "bare":
                bare[model] = r["seconds"]
            ratio = f"{r['seconds'] / bare[model]:.2f}x" if model in bare else ""
            print(f"{r['docs']:>10,} {model:<9} {mode:<12} {r['seconds']:>8.1f} {rate:>9,.0f} "
                  f"{r['peak_rss_mb']:>12,.0f} {ratio:>8}"
                  + (f"  (report {r['report_seconds']:.1f} s)" if "report_seconds" in r else ""), flush=True)


if __name__ == "__main__":
    main()
