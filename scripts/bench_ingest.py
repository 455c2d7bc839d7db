"""Benchmark: ingest throughput of a generated CSV against a plain pyarrow CSV-to-Parquet conversion.

Both runs read the same file with the same CSV parse options and write zstd Parquet; each
runs in its own process so its peak RSS is its own. Prints a table and the speed ratio.

    python scripts/bench_ingest.py                  # 2 GB CSV in ./bench-data (kept for reruns)
    python scripts/bench_ingest.py --size-gb 0.2    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from peak_rss import own_peak_rss_mb, run_child

from textclf.lake import Lake


def generate(path: Path, size_bytes: int, dirty_fraction: float) -> None:
    from textclf.demo.corpus import CorpusSpec, write_corpus_to_size

    if path.exists() and abs(path.stat().st_size - size_bytes) < 0.05 * size_bytes:
        print(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
        return
    t0 = time.perf_counter()
    spec = CorpusSpec(rows=0, labeled=True, seed=7, dirty_fraction=dirty_fraction)
    stats = write_corpus_to_size(spec, path, size_bytes)
    print(f"generated {stats.rows:,} rows, {stats.bytes / 1e6:.0f} MB in {time.perf_counter() - t0:.0f}s",
          file=sys.stderr)


def run_baseline(src: Path, out: Path) -> dict:
    """Plain pyarrow: stream the CSV, write zstd Parquet, nothing else."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = 0
    reader = pacsv.open_csv(
        str(src),
        read_options=pacsv.ReadOptions(block_size=8 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda r: "skip"),
        convert_options=pacsv.ConvertOptions(check_utf8=False,
                                             column_types={c: pa.string() for c in ("id", "text", "label")}),
    )
    with pq.ParquetWriter(str(out), reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return {"rows": rows}


def run_ingest(src: Path, lake: Path) -> dict:
    from textclf.config import IngestConfig
    from textclf.ingest.stage import ingest

    result = ingest(Lake(str(lake)), IngestConfig(kind="labeled", date="2026-01-01", sources=(str(src),)))
    m = result.manifest
    return {k: m[k] for k in ("input_rows", "rows", "quarantined_rows", "duplicates_removed")} | {
        "rows_in": m["input_rows"]}


def child(mode: str, src: Path, work: Path) -> None:
    t0 = time.perf_counter()
    out = run_baseline(src, work / "baseline.parquet") if mode == "baseline" else run_ingest(src, work / "lake")
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = own_peak_rss_mb()
    print(json.dumps(out))


def measure(mode: str, src: Path, work: Path) -> dict:
    return run_child(__file__, ["--child", mode, "--src", str(src), "--work", str(work)], mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--dir", default="bench-data", help="where the generated CSV and outputs go")
    parser.add_argument("--dirty-fraction", type=float, default=0.0,
                        help="share of malformed rows mixed in (exercises quarantine and dedup)")
    parser.add_argument("--child", choices=["baseline", "ingest"], help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.src), Path(args.work))
        return
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    dirty = f"-dirty{args.dirty_fraction:g}" if args.dirty_fraction else ""
    src = base / f"corpus-{args.size_gb:g}gb{dirty}.csv"
    generate(src, int(args.size_gb * 1e9), args.dirty_fraction)
    work = base / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    size_mb = src.stat().st_size / 1e6
    results = {"pyarrow csv->parquet": measure("baseline", src, work), "textclf ingest": measure("ingest", src, work)}
    print(f"\nfile: {src} ({size_mb:,.0f} MB), {os.cpu_count()} cores")
    print(f"{'run':<22}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'MB/s':>9}{'peak RSS MB':>13}")
    for name, r in results.items():
        rows = r.get("rows_in", r["rows"])
        print(f"{name:<22}{rows:>12,}{r['seconds']:>10.1f}{rows / r['seconds']:>12,.0f}"
              f"{size_mb / r['seconds']:>9.1f}{r['peak_rss_mb']:>13.0f}")
    ratio = results["pyarrow csv->parquet"]["seconds"] / results["textclf ingest"]["seconds"]
    ing = results["textclf ingest"]
    print(f"\ningest speed / plain conversion speed: {ratio:.2f} (target >= 0.50)")
    print(f"ingest peak RSS: {ing['peak_rss_mb']:.0f} MB (target < 1024)")
    print(f"ingest counts: input {ing['input_rows']:,} = rows {ing['rows']:,} + quarantined "
          f"{ing['quarantined_rows']:,} + duplicates {ing['duplicates_removed']:,}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
