"""Soak run: ingest and score consecutive dates through the CLI, then check every partition.

Each date gets N freshly generated unlabeled documents (a different seed per date), ingested with
``textclf ingest`` and scored with ``textclf score`` in their own processes, each measured with its
own peak RSS (``peak_rss.py``). At the end every predictions partition is verified (checksums, one row
per eligible document, ``rows + quarantined_rows == input_rows``) and the scoring peak RSS of the
last date is compared with the first: memory must not grow from date to date.

    .venv/bin/python scripts/soak.py --dates 10 --docs 1000000     # `make soak`
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from peak_rss import run_measured

from textclf.config import EvaluateConfig, PromoteConfig
from textclf.evaluate.stage import evaluate

BIN = Path(sys.executable).parent
FIRST_DATE = dt.date(2031, 1, 1)


def prepare_model(lake: str, work: Path) -> None:
    """One promoted default model, trained once per soak lake."""
    from textclf.config import IngestConfig, TrainConfig
    from textclf.demo.corpus import CorpusSpec, write_corpus
    from textclf.ingest.stage import ingest
    from textclf.lake import Lake
    from textclf.model.registry import read_champion
    from textclf.model.train import train
    from textclf.promote.stage import promote

    if read_champion(Lake(lake)).get("champion"):
        return
    labeled = work / "labeled.csv"
    write_corpus(CorpusSpec(rows=6000, seed=0), labeled)
    ingest(Lake(lake), IngestConfig(kind="labeled", date="2030-12-31", sources=(str(labeled),)))
    store = Lake(lake)
    version = train(store, TrainConfig()).version
    evaluate(store, EvaluateConfig(model_version=version, explain_count=2))
    promote(store, PromoteConfig(model_version=version, force=True))


def check_partition(lake: str, date: str) -> dict[str, int]:
    """What a consumer would check on one date's predictions."""
    import pyarrow.compute as pc

    from textclf.lake import Lake
    from textclf.lake.tables import dataset_table, predictions_table

    store = Lake(lake)
    manifest = predictions_table(store).verify(date)  # checksums, and the Delta log's row count
    ids = predictions_table(store).read(date, columns=["doc_id"]).column("doc_id")
    source = dataset_table(store, "unlabeled").require_summary(date)
    problems = []
    if manifest["rows"] + manifest["quarantined_rows"] != manifest["input_rows"]:
        problems.append("rows + quarantined_rows != input_rows")
    if len(ids) != manifest["rows"] or pc.count_distinct(ids).as_py() != len(ids):
        problems.append("duplicate or missing rows")
    if manifest["rows"] != source["rows"]:
        problems.append(f"{manifest['rows']} predictions for {source['rows']} eligible documents")
    if problems:
        sys.exit(f"predictions for {date}: {'; '.join(problems)}")
    return {"rows": manifest["rows"], "quarantined": manifest["quarantined_rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dates", type=int, default=10)
    parser.add_argument("--docs", type=int, default=1_000_000, help="unlabeled documents per date")
    parser.add_argument("--dir", type=Path, default=Path("bench-data/soak"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from textclf.demo.corpus import CorpusSpec, write_corpus

    work = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    lake = str(work / "lake")
    prepare_model(lake, work)
    textclf = str(BIN / "textclf")
    print(f"{'date':>10} {'docs':>10} {'ingest s':>9} {'ingest MB':>10} {'score s':>8} {'docs/s':>8} "
          f"{'score MB':>9} {'quarantined':>11}", flush=True)
    peaks = []
    for i in range(args.dates):
        date = (FIRST_DATE + dt.timedelta(days=i)).isoformat()
        source = work / f"unlabeled-{date}.parquet"
        write_corpus(CorpusSpec(rows=args.docs, labeled=False, seed=1000 + i, dirty_fraction=0.01,
                                id_prefix=f"s{i}-"), source)
        ingest_s, ingest_mb = run_measured([textclf, "ingest", "-q", "--lake", lake, "--kind", "unlabeled",
                                            "--date", date, str(source)])
        source.unlink()
        score_s, score_mb = run_measured([textclf, "score", "-q", "--lake", lake, "--date", date])
        counts = check_partition(lake, date)
        peaks.append(score_mb)
        print(f"{date:>10} {counts['rows']:>10,} {ingest_s:>9.1f} {ingest_mb:>10,.0f} {score_s:>8.1f} "
              f"{counts['rows'] / score_s:>8,.0f} {score_mb:>9,.0f} {counts['quarantined']:>11,}", flush=True)
    growth = peaks[-1] / peaks[0]
    print(f"all {args.dates} partitions complete; scoring peak RSS last/first = {growth:.2f}x "
          f"(min {min(peaks):,.0f} MB, max {max(peaks):,.0f} MB)")


if __name__ == "__main__":
    main()
