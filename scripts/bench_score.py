"""Scoring benchmark: end-to-end `score` against bare `model.predict` and a seed-style path, same run.

Generates N short unlabeled documents of the demo corpus, ingests them, and measures in
separate processes (each reports its own peak RSS):
- pipeline: ``textclf.score.stage.score`` (read Parquet, score, write, manifest, report);
- bare: the same model's ``predict`` on the same texts already in memory, same batch size;
- seed-style (seed 003): Python tokenizer, padding to 50 tokens, ``predict`` on int arrays, with
  the ``lstm`` architecture, next to the pipeline scoring with that same model.

``--vs-sklearn short long`` instead measures the default model against the scikit-learn stream (the
linear reference pipeline, rebuilt from plain arrays, ``transform`` + ``decision_function``) on the same Parquet
stream, batch by batch (``--batch-rows``, the scoring default 4,096), top-3 written as zstd Parquet,
each in its own process (whole process: imports, model load, stream, write; own peak RSS):
- short: trained on 6,000 demo-corpus documents, scoring N unlabeled demo documents;
- long: trained on the mail22 stress variant (forum posts with headers, quotes, signatures; built from
  ../shared/datasets by scripts/stress_variants.py), scoring its test split repeated to N documents.

    .venv/bin/python scripts/bench_score.py --docs 1000000 5000000
    .venv/bin/python scripts/bench_score.py --vs-sklearn short long --short-docs 200000 --long-docs 20000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from peak_rss import own_peak_rss_mb, run_child

from textclf.config import EvaluateConfig, PromoteConfig, ReportConfig
from textclf.evaluate.stage import evaluate

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LABELED_DATE = "2026-01-01"
DEFAULT = "hashed_linear"


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
    if not {DEFAULT, "lstm"} <= set(versions):
        labeled = work / "labeled.csv"
        write_corpus(CorpusSpec(rows=6000, seed=0), labeled)
        ingest(Lake(str(lake)), IngestConfig(kind="labeled", date=LABELED_DATE, sources=(str(labeled),)))
        for model in (DEFAULT, "lstm"):
            versions[model] = train(Lake(str(lake)), TrainConfig(model=model)).version
            evaluate(Lake(str(lake)), EvaluateConfig(model_version=versions[model], explain_count=2))
        promote(Lake(str(lake)), PromoteConfig(model_version=versions[DEFAULT], force=True))
    for n in docs:
        date = date_for(n)
        if dataset_table(store, "unlabeled").summary(date) is None:
            source = work / f"unlabeled-{n}.parquet"
            write_corpus(CorpusSpec(rows=n, labeled=False, seed=7, label_noise=0.0, id_prefix="u"), source)
            ingest(Lake(str(lake)), IngestConfig(kind="unlabeled", date=date, sources=(str(source),)))
            source.unlink()
    return {DEFAULT: versions[DEFAULT], "lstm": versions["lstm"]}


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


def _write_stream(batches: Any, predict: Any, classes: list[str], out_path: str) -> int:
    """pyarrow batches in -> probabilities -> top-3 -> zstd Parquet out (the scoring loop, minus the lake)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = np.array(classes, dtype=object)
    schema = pa.schema([("doc_id", pa.string()), ("predicted_label", pa.string()), ("confidence", pa.float32()),
                        ("top_labels", pa.list_(pa.string())), ("top_probs", pa.list_(pa.float32()))])
    writer = pq.ParquetWriter(out_path, schema, compression="zstd")
    n = 0
    for batch in batches:
        probs = predict(batch.column("text").to_pylist())
        k = min(3, probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        tp = np.take_along_axis(probs, top, axis=1).astype(np.float32)
        m = len(probs)
        offsets = pa.array(np.arange(0, (m + 1) * k, k, dtype=np.int32))
        writer.write_batch(pa.RecordBatch.from_arrays([
            batch.column("id"), pa.array(names[top[:, 0]], pa.string()), pa.array(tp[:, 0], pa.float32()),
            pa.ListArray.from_arrays(offsets, pa.array(names[top.ravel()], pa.string())),
            pa.ListArray.from_arrays(offsets, pa.array(tp.ravel(), pa.float32()))], schema=schema))
        n += m
    writer.close()
    return n


def stream_child(mode: str, model_path: str, docs_path: str, batch_rows: int) -> dict:
    """One whole scoring process (imports, model load, stream, write); reports its own peak RSS."""
    started = time.perf_counter()
    import numpy as np
    import pyarrow.parquet as pq

    if mode == "sklearn":
        vectorizer, clf, classes = load_reference(model_path)

        def predict(texts: list[str]) -> Any:
            from textclf.evaluate.reference import decision_probabilities

            return decision_probabilities(clf.decision_function(vectorizer.transform(texts)))
    else:  # as `textclf score` loads it: the registry, checksum first, safe mode
        import tensorflow as tf

        from textclf.lake import Lake
        from textclf.model.registry import load_model

        lake_uri, version = model_path.split("::")
        loaded_model = load_model(Lake(lake_uri), version)
        model, classes = loaded_model.model, list(loaded_model.classes)

        def predict(texts: list[str]) -> Any:
            return np.asarray(model.predict_on_batch(tf.constant(texts)), dtype=np.float32)
    loaded = time.perf_counter()
    out_path = f"/tmp/bench-score-{mode}-{os.getpid()}.parquet"
    batches = pq.ParquetFile(docs_path).iter_batches(batch_size=batch_rows, columns=["id", "text"])
    n = _write_stream(batches, predict, list(classes), out_path)
    done = time.perf_counter()
    os.unlink(out_path)
    return {"mode": mode, "docs": n, "seconds": done - started, "load_seconds": loaded - started,
            "docs_per_s": n / (done - started), "peak_rss_mb": own_peak_rss_mb(), "load_avg": os.getloadavg()[0]}


def save_reference(pipeline: Any, path: Path) -> None:
    """The fitted reference as plain arrays (no pickle: nothing here deserializes code)."""
    import numpy as np

    vectorizer, clf = pipeline[0], pipeline[1]
    terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    np.savez(path, idf=vectorizer.idf_, coef=clf.coef_, intercept=clf.intercept_,
             classes=np.array([str(c) for c in clf.classes_]), terms=np.array(terms))


def load_reference(path: str) -> tuple[Any, Any, list[str]]:
    """(vectorizer, classifier, classes) rebuilt from ``save_reference``'s arrays."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    data = np.load(path, allow_pickle=False)
    terms = data["terms"].tolist()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary={t: i for i, t in enumerate(terms)})
    vectorizer.idf_ = data["idf"]
    clf = LinearSVC()
    clf.coef_, clf.intercept_ = data["coef"], data["intercept"]
    classes = data["classes"].tolist()
    clf.classes_ = np.array(classes)
    return vectorizer, clf, classes


def stream_setup(kind: str, work: Path, n_docs: int, datasets: Path, stress: Path) -> dict[str, Any]:
    """Train the default and the reference on one training set; write N documents to score (cached in work)."""
    import tempfile

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from textclf.common import json_bytes
    from textclf.config import TrainConfig
    from textclf.demo.corpus import CorpusSpec, generate_rows
    from textclf.evaluate.reference import reference_pipeline
    from textclf.ingest.normalize import normalize_text
    from textclf.lake import Lake
    from textclf.model.data import LabeledData, Splits, assign_splits
    from textclf.model.registry import new_version, write_version
    from textclf.model.train import fit, save_model

    folder = work / kind
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / f"docs-{n_docs}.parquet"
    paths = {"docs": docs, "sklearn": folder / "reference.npz", "default": folder / "default.keras"}
    if kind == "short":
        rows = [r for c in generate_rows(CorpusSpec(rows=6000, seed=0)) for r in c]
        texts = np.array(normalize_text(pa.array([r["text"] for r in rows], pa.string())).to_pylist(), dtype=object)
        labels = np.array([r["label"] for r in rows], dtype=object)
        ids = np.array([r["id"] for r in rows], dtype=object)
        is_val = assign_splits(ids.tolist(), 0, 10) == "validation"
        if not docs.exists():
            score_rows = [r for c in generate_rows(CorpusSpec(rows=n_docs, labeled=False, seed=7, label_noise=0.0,
                                                             id_prefix="u")) for r in c]
            t = normalize_text(pa.array([r["text"] for r in score_rows], pa.string()))
            pq.write_table(pa.table({"id": [str(r["id"]) for r in score_rows], "text": t}), docs, compression="zstd")
    else:  # long: the 20news stand-in, its test split repeated to n_docs
        import stress_variants

        source = stress / "mail22.parquet"
        if not source.exists():
            stress_variants.build(datasets, stress)
        table = pq.read_table(source)
        split = np.array(table.column("split").to_pylist(), dtype=object)
        raw = np.array(normalize_text(table.column("text").combine_chunks()).to_pylist(), dtype=object)
        keep = split != "test"
        texts, labels = raw[keep], np.array(table.column("label").to_pylist(), dtype=object)[keep]
        ids = np.array(table.column("id").to_pylist(), dtype=object)[keep]
        is_val = split[keep] == "validation"
        if not docs.exists():
            test = raw[~keep]
            tiled = np.tile(test, int(np.ceil(n_docs / len(test))))[:n_docs]
            pq.write_table(pa.table({"id": [f"t{i}" for i in range(len(tiled))], "text": tiled.tolist()}), docs,
                           compression="zstd")
    classes = tuple(sorted(set(labels.tolist())))
    info: dict[str, Any] = {}
    if not (folder / "setup.json").exists() or not paths["sklearn"].exists():
        data = LabeledData(ids, texts, labels, {})
        splits = Splits(data.subset(~is_val), data.subset(is_val), data.subset(np.zeros(len(ids), bool)), classes)
        started = time.perf_counter()
        result = fit(splits, TrainConfig())
        info["default_train_seconds"] = round(time.perf_counter() - started, 1)
        info["chosen"] = (result.selection or {}).get("chosen")
        save_model(result.model, str(paths["default"]), splits.validation.texts.astype(str).tolist())
        lake = Lake(str((folder / "lake").resolve()))
        version = new_version(DEFAULT)
        with tempfile.TemporaryDirectory() as empty:
            write_version(lake, version, str(paths["default"]), {"config.json": json_bytes({"model": DEFAULT})},
                          empty, classes=classes, architecture=DEFAULT)
        info["registered"] = f"{lake.uri}::{version}"
        pipeline = reference_pipeline().fit(splits.train.texts.astype(str), splits.train.labels.astype(str))
        save_reference(pipeline, paths["sklearn"])
        (folder / "setup.json").write_text(json.dumps(info))
    info = json.loads((folder / "setup.json").read_text())
    info["model_mb"] = {m: round(paths[m].stat().st_size / 2**20, 1) for m in ("default", "sklearn")}
    return {"paths": paths, "info": info}


def vs_sklearn(kinds: list[str], n_docs: dict[str, int], work: Path, datasets: Path, stress: Path,
               batch_rows: int, repeats: int, json_path: Path | None) -> None:
    """The default's docs/s and peak RSS next to the scikit-learn stream, per kind of text."""
    rows: dict[str, Any] = {}
    print(f"{'texts':<6} {'path':<8} {'docs':>8} {'seconds':>8} {'docs/s':>8} {'peak RSS MB':>12} "
          f"{'vs sklearn':>10} {'model MB':>9} {'load avg':>8}")
    for kind in kinds:
        setup_ = stream_setup(kind, work, n_docs[kind], datasets, stress)
        paths, info = setup_["paths"], setup_["info"]
        results: dict[str, Any] = {}
        for _ in range(repeats):  # alternate the two, keep each one's best: the machine is shared
            for mode in ("sklearn", "default"):
                target = info["registered"] if mode == "default" else str(paths[mode])
                r = run_child(__file__, ["--stream-child", mode, "--model", target, "--docs-path",
                                         str(paths["docs"]), "--batch-rows", str(batch_rows)], mode)
                best = results.get(mode)
                if best is None or r["docs_per_s"] > best["docs_per_s"]:
                    results[mode] = {**r, "runs": [*(best or {}).get("runs", []), round(r["docs_per_s"])]}
                else:
                    best["runs"].append(round(r["docs_per_s"]))
        for mode in ("sklearn", "default"):
            r = results[mode]
            ratio = r["docs_per_s"] / results["sklearn"]["docs_per_s"]
            r["ratio_vs_sklearn"] = ratio
            print(f"{kind:<6} {mode:<8} {r['docs']:>8,} {r['seconds']:>8.1f} {r['docs_per_s']:>8,.0f} "
                  f"{r['peak_rss_mb']:>12,.0f} {ratio:>9.2f}x {info['model_mb'][mode]:>9.1f} {r['load_avg']:>8.1f}"
                  f"  runs {r['runs']}", flush=True)
        rows[kind] = {**results, "setup": info}
    if json_path:
        json_path.write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vs-sklearn", nargs="+", choices=["short", "long"], metavar="KIND",
                        help="measure the default against the scikit-learn stream on short and/or long texts")
    parser.add_argument("--short-docs", type=int, default=200_000)
    parser.add_argument("--long-docs", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--datasets-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--stress-dir", type=Path, default=Path("build/stress"),
                        help="the stress variants (scripts/stress_variants.py; built here when missing)")
    parser.add_argument("--json", type=Path, help="also write the --vs-sklearn rows as JSON here")
    parser.add_argument("--stream-child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--docs-path", help=argparse.SUPPRESS)
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
    if args.stream_child:
        print(json.dumps(stream_child(args.stream_child, args.model, args.docs_path, args.batch_rows)))
        return
    if args.vs_sklearn:
        vs_sklearn(args.vs_sklearn, {"short": args.short_docs, "long": args.long_docs}, args.dir / "vs-sklearn",
                   args.datasets_dir, args.stress_dir, args.batch_rows, args.repeats, args.json)
        return
    if args.child:
        print(json.dumps(child(args.child, args.lake, args.date, args.version, args.batch_rows)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    lake = (args.dir / "lake").resolve()
    versions = setup(lake, args.dir, args.docs)
    print(f"{'docs':>10} {'model':<13} {'path':<12} {'seconds':>8} {'docs/s':>9} {'peak RSS MB':>12} {'vs bare':>8}")
    for n in args.docs:
        date = date_for(n)
        runs = [(DEFAULT, path) for path in args.paths]
        if not args.skip_seed_style:
            runs += [("lstm", path) for path in args.lstm_paths]
        bare: dict[str, float] = {}
        for model, mode in runs:
            r = measure(mode, lake, date, versions[model], args.batch_rows)
            rate = r["docs"] / r["seconds"]
            if mode == "bare":
                bare[model] = r["seconds"]
            ratio = f"{r['seconds'] / bare[model]:.2f}x" if model in bare else ""
            print(f"{r['docs']:>10,} {model:<13} {mode:<12} {r['seconds']:>8.1f} {rate:>9,.0f} "
                  f"{r['peak_rss_mb']:>12,.0f} {ratio:>8}"
                  + (f"  (report {r['report_seconds']:.1f} s)" if "report_seconds" in r else ""), flush=True)


if __name__ == "__main__":
    main()
