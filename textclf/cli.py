"""The ``textclf`` command line.

Conventions: human progress and logs go to stderr; the last stdout line is one JSON
object summarising what was written; failures print one line and exit non-zero
(2 usage, 3 unreadable input file, 4 validation failed, 5 storage, 1 anything else).
``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from textclf import __version__
from textclf.errors import TextclfError

log = logging.getLogger("textclf")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def _lake_and_kind(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", required=True, help="lake root: a local directory or s3://bucket/prefix")
    parser.add_argument("--kind", required=True, choices=["labeled", "unlabeled"])
    parser.add_argument("--date", help="ingest date YYYY-MM-DD (default: today, UTC)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="textclf", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"textclf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="ingest CSV/TSV/JSONL/Parquet files into a dataset partition")
    _lake_and_kind(p)
    p.add_argument("--id-col", help="id column (default: id; without one, ids are hashes of the text)")
    p.add_argument("--text-col", default="text", help="text column (default: text)")
    p.add_argument("--label-col", default="label", help="label column for labeled data (default: label)")
    p.add_argument("--max-text-chars", type=int, default=100_000,
                   help="quarantine texts longer than this (default: 100000)")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="local path or s3:// URI (.gz/.zst allowed)")
    _common(p)

    p = sub.add_parser("validate", help="run the Great Expectations suites on a dataset partition")
    _lake_and_kind(p)
    p.add_argument("--min-examples-per-class", type=int, default=10)
    p.add_argument("--max-text-chars", type=int, default=100_000)
    _common(p)

    p = sub.add_parser("demo", help="generate the demo corpus and run the pipeline's stages on it")
    p.add_argument("--lake", default="demo/lake", help="lake root (default: demo/lake)")
    p.add_argument("--date", help="ingest date YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--labeled-rows", type=int, default=6_000)
    p.add_argument("--unlabeled-rows", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    _common(p)

    p = sub.add_parser("train", help="train a model on all labeled data, evaluate it and register a new version",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_architectures_help())
    p.add_argument("--lake", required=True, help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--model", help="architecture name (default: the project's best, nb_tfidf)")
    p.add_argument("--epochs", type=int, help="maximum epochs; early stopping usually ends sooner (default 30)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, e.g. --set learning_rate=0.002 (repeatable)")
    _common(p)

    p = sub.add_parser("evaluate", help="re-evaluate a model version on the current test split; rewrite its report")
    p.add_argument("--lake", required=True, help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--model-version", required=True, help="model version to evaluate")
    _common(p)

    p = sub.add_parser("promote", help="apply the promotion gate to a model version")
    p.add_argument("--lake", required=True, help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--model-version", required=True, help="model version to promote")
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses (recorded as forced)")
    p.add_argument("--tolerance", type=float, default=0.005,
                   help="allowed drop in macro-F1 against the champion (default 0.005)")
    p.add_argument("--min-accuracy", type=float, default=0.70, help="absolute accuracy floor (default 0.70)")
    _common(p)

    p = sub.add_parser("score", help="score a date's unlabeled documents into a predictions partition")
    p.add_argument("--lake", required=True, help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--date", required=True, help="ingest date of the documents to score, YYYY-MM-DD")
    p.add_argument("--model-version", help="model version (default: the champion)")
    p.add_argument("--shards", type=int, default=1, help="score as N shards by doc id (default 1)")
    p.add_argument("--shard", type=int, help="score only this shard (0..N-1) and do not publish; "
                   "publish later with --commit-only")
    p.add_argument("--commit-only", action="store_true", help="publish the scored shards of the date as one partition")
    p.add_argument("--batch-rows", type=int, default=4096, help="documents per batch (bounds memory; default 4096)")
    _common(p)

    p = sub.add_parser("report", help="write the scoring report of a date (HTML + JSON)")
    p.add_argument("--lake", required=True, help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--date", required=True, help="run date YYYY-MM-DD")
    _common(p)
    return parser


def _architectures_help() -> str:
    from textclf.model.architectures import describe_architectures

    lines = ["architectures (--model):"]
    lines += [f"  {a['name']:<18} {a['summary']} ({a['origin']})" for a in describe_architectures()]
    lines.append("settings (--set KEY=VALUE): any field of textclf.config.TrainConfig, e.g. batch_size, "
                 "learning_rate, max_tokens, sequence_length, embedding_dim, units, dropout, ngrams, patience")
    return "\n".join(lines)


def cmd_ingest(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.config import IngestConfig, parse_date
    from textclf.ingest.stage import ingest

    config = IngestConfig(
        kind=args.kind, date=parse_date(args.date), id_col=args.id_col or "id", text_col=args.text_col,
        label_col=args.label_col, id_col_required=args.id_col is not None, max_text_chars=args.max_text_chars,
    )
    return ingest(args.lake, args.sources, config, progress).summary()


def cmd_validate(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.config import ValidationConfig, parse_date
    from textclf.validate.stage import validate

    config = ValidationConfig(min_examples_per_class=args.min_examples_per_class, max_text_chars=args.max_text_chars)
    return validate(args.lake, args.kind, parse_date(args.date), config, progress).summary()


def cmd_demo(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.config import parse_date
    from textclf.demo.stage import DemoConfig, run_demo

    config = DemoConfig(lake=args.lake, date=parse_date(args.date), labeled_rows=args.labeled_rows,
                        unlabeled_rows=args.unlabeled_rows, seed=args.seed)
    summary = run_demo(config, progress)
    lines = [f"\nDemo lake: {summary['lake']}"]
    for kind in ("labeled", "unlabeled"):
        part = summary[kind]
        lines += [
            f"  {kind}: {part['rows']} rows kept, {part['quarantined_rows']} quarantined, "
            f"{part['duplicates_removed']} duplicates removed (of {part['input_rows']})",
            f"    data:       {part['dataset']}",
            f"    quarantine: {part['quarantine']}",
            f"    Data Docs:  {part['validation']['data_docs']}",
        ]
    model = summary["model"]
    lines += [
        f"  model {model['model_version']}: test accuracy {model['metrics']['accuracy']:.4f}, "
        f"macro-F1 {model['metrics']['macro_f1']:.4f}; {model['promotion']['decision']}",
        f"    report:     {model['report']}",
    ]
    scoring = summary["scoring"]
    lines += [
        f"  scored {scoring['rows']} documents of {summary['date']} ({scoring['quarantined_rows']} quarantined)",
        f"    predictions: {scoring['predictions']}",
        f"    report:      {scoring['report']}",
    ]
    lines += [f"    warning: {w}" for w in scoring.get("warnings", [])]
    print("\n".join(lines), file=sys.stderr)
    return summary


def cmd_train(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.config import TrainConfig
    from textclf.model.architectures import get_architecture
    from textclf.model.train import train

    config = TrainConfig().with_overrides(args.settings, model=args.model, epochs=args.epochs, seed=args.seed)
    get_architecture(config.model)  # an unknown name fails before any data is read
    result = train(args.lake, config, progress)
    metrics = result.metrics
    print(f"\nmodel {result.version}: test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
          f"on {metrics['n']} documents\n  report: {result.uri}/report.html", file=sys.stderr)
    return result.summary()


def cmd_evaluate(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.evaluate.stage import evaluate

    return evaluate(args.lake, args.model_version, progress)


def cmd_promote(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.config import PromotionPolicy
    from textclf.promote.stage import promote

    policy = PromotionPolicy(tolerance=args.tolerance, min_accuracy=args.min_accuracy)
    result = promote(args.lake, args.model_version, policy, force=args.force)
    print(f"{result['decision']}: {'; '.join(result['reasons'])}", file=sys.stderr)
    return result


def cmd_score(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.config import parse_date
    from textclf.lake import Lake
    from textclf.score.stage import ScoreConfig, commit_predictions, report, score, score_shard

    config = ScoreConfig(date=parse_date(args.date), model_version=args.model_version, num_shards=args.shards,
                         batch_rows=args.batch_rows)
    lake = Lake(args.lake)
    if args.shard is not None:
        manifest = score_shard(lake, config, args.shard, progress)
        return {"shard": args.shard, "num_shards": args.shards, "rows": manifest["rows"],
                "model_version": manifest["model_version"]}
    if args.commit_only:
        manifest = commit_predictions(lake, config.date, config.num_shards)
        summary = report(lake.uri, config.date, lake=lake)
        return {"predictions": lake.uri_of(manifest["partition"]), "rows": manifest["rows"],
                "report": summary["uri"]}
    result = score(lake.uri, config, progress, lake=lake)
    for warning in result.summary().get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return result.summary()


def cmd_report(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from textclf.config import parse_date
    from textclf.score.stage import report

    content = report(args.lake, parse_date(args.date))
    return {"report": content["uri"], "warnings": [w["message"] for w in content.get("warnings", [])]}


COMMANDS: dict[str, Callable[[argparse.Namespace, Any], dict[str, Any]]] = {
    "ingest": cmd_ingest,
    "validate": cmd_validate,
    "demo": cmd_demo,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "promote": cmd_promote,
    "score": cmd_score,
    "report": cmd_report,
}


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("textclf")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # TensorFlow's Python-side warnings (tf.function retracing and the like) are for developers.
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if debug else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    from textclf.progress import BarProgress, NoProgress

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for users
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug, args.quiet)
    progress = NoProgress() if args.quiet else BarProgress()
    try:
        summary = COMMANDS[args.command](args, progress)
    except TextclfError as exc:
        progress.close()
        if args.debug:
            log.exception("failed")
        print(f"textclf {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        progress.close()
        print(f"textclf {args.command}: interrupted; nothing was committed by the unfinished step", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, not a traceback
        progress.close()
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"textclf {args.command}: internal error: {type(exc).__name__}: {first} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    print(json.dumps(summary, default=str, ensure_ascii=False))
    return 0
