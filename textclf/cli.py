"""The textclf command line: every stage of the pipeline, one subcommand each.

Progress and logs go to stderr; the last stdout line is one JSON object describing what was
written. A failure prints one line naming what failed and what to do, and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from textclf import __version__
from textclf.errors import StorageError, TextclfError

if TYPE_CHECKING:
    from textclf.lake import Lake
    from textclf.progress import Progress

log = logging.getLogger("textclf")

EXIT_CODES = """exit codes:
  0  done (a promotion the gate refuses is an outcome, not an error: it exits 0 and says why)
  1  anything else (rerun with --debug for the traceback)
  2  bad options or arguments
  3  a source file cannot be read (format, compression, columns)
  4  a critical data expectation failed (see the Data Docs named in the message)
  5  the lake cannot be read or written (missing lake or partition, permissions, network)
  6  a model cannot be trained, found or loaded, or fails its checksum"""

LAKE_HELP = "lake root: a local directory or s3://bucket/prefix (S3 from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the epilog's layout, and show each option's default when it has a real one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings and \
                "default" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text


def _common_flags(default: Any) -> argparse.ArgumentParser:
    """--debug and -q, accepted before or after the subcommand (a subcommand's value wins when both are given)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars, warnings only")
    return parser


def _lake(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    if default is None:
        parser.add_argument("--lake", required=True, help=LAKE_HELP)
    else:
        parser.add_argument("--lake", default=default, help=LAKE_HELP)


def _kind_and_date(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=["labeled", "unlabeled"],
                        help="labeled data (with a label column) trains models; unlabeled data is scored")
    parser.add_argument("--date", help="ingest date YYYY-MM-DD (default: today, UTC)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="textclf", description=__doc__.split("\n\n")[0], epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[_common_flags(False)])
    parser.add_argument("--version", action="version", version=f"textclf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_flags(argparse.SUPPRESS)

    def command(name: str, help_text: str, epilog: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                              formatter_class=_Formatter, epilog=(epilog + "\n\n" if epilog else "") + EXIT_CODES)

    p = command("ingest", "ingest CSV/TSV/JSONL/Parquet files into a dataset partition (and its quarantine)")
    _lake(p)
    _kind_and_date(p)
    p.add_argument("--id-col", help="id column (default: id; without one, ids are hashes of the text)")
    p.add_argument("--text-col", default="text", help="text column")
    p.add_argument("--label-col", default="label", help="label column of labeled data")
    p.add_argument("--max-text-chars", type=int, default=100_000, help="quarantine texts longer than this")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="local path or s3:// URI of a .csv, .tsv, .jsonl or .parquet file, optionally .gz or .zst")

    p = command("validate", "run the Great Expectations suites on a dataset partition; write results and Data Docs")
    _lake(p)
    _kind_and_date(p)
    p.add_argument("--min-examples-per-class", type=int, default=10,
                   help="critical: fewer labeled examples of a class fail the partition")
    p.add_argument("--max-text-chars", type=int, default=100_000, help="critical: longer texts fail the partition")

    p = command("demo", "generate the demo corpus and run every stage on it, without Airflow")
    _lake(p, default="demo/lake")
    p.add_argument("--date", help="the demo's day YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--labeled-rows", type=int, default=6_000, help="labeled documents to generate")
    p.add_argument("--unlabeled-rows", type=int, default=2_000, help="unlabeled documents to generate (and score)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus and of training")

    p = command("train", "train a model on all labeled data, register it and evaluate it", _architectures_help())
    _lake(p)
    p.add_argument("--model", help="architecture name (default: the project's default, see below)")
    p.add_argument("--epochs", type=int, help="maximum epochs; early stopping usually ends sooner (default 30)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, e.g. --set learning_rate=0.002 (repeatable)")
    p.add_argument("--explain", type=int, default=8, help="predictions explained with LIME in the report")

    p = command("evaluate", "evaluate a model version on the current test split; (re)write its report")
    _lake(p)
    p.add_argument("--model-version", required=True, help="model version to evaluate")
    p.add_argument("--explain", type=int, default=8, help="predictions explained with LIME in the report")
    p.add_argument("--no-linear-reference", action="store_true",
                   help="skip fitting the TF-IDF + linear SVM reference the report compares the model with")

    p = command("promote", "apply the promotion gate to a model version")
    _lake(p)
    p.add_argument("--model-version", required=True, help="model version to promote")
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses (recorded as forced)")
    p.add_argument("--tolerance", type=float, default=0.005, help="allowed drop in macro-F1 against the champion")
    p.add_argument("--min-accuracy", type=float, default=0.70, help="absolute test accuracy floor")
    p.add_argument("--require-reference", action="store_true",
                   help="also refuse a model whose macro-F1 trails its linear reference by more than the tolerance")

    p = command("score", "score a date's unlabeled documents into a predictions partition, then write its report")
    _lake(p)
    p.add_argument("--date", required=True, help="ingest date of the documents to score, YYYY-MM-DD")
    p.add_argument("--model-version", help="model version (default: the champion)")
    p.add_argument("--shards", type=int, default=1, help="score as N shards by doc id")
    p.add_argument("--shard", type=int, help="score only this shard (0..N-1) and do not publish; "
                   "publish later with --commit-only")
    p.add_argument("--commit-only", action="store_true", help="publish the scored shards of the date as one partition")
    p.add_argument("--batch-rows", type=int, default=4096, help="documents per batch (bounds memory)")

    p = command("report", "write the scoring report of a date (HTML + JSON)")
    _lake(p)
    p.add_argument("--date", required=True, help="run date YYYY-MM-DD")

    p = command("vacuum", "delete the files of replaced table snapshots older than the retention (and dead runs')")
    _lake(p)
    p.add_argument("--retention-days", type=float, default=7.0,
                   help="keep replaced files this long: time travel works within it (at least 1)")

    p = command("migrate", "convert a lake written before the Delta tables (manifested partitions) into tables")
    _lake(p)
    return parser


def _architectures_help() -> str:
    from textclf.model.architectures import describe_architectures

    lines = ["architectures (--model):"]
    lines += [f"  {a['name']:<18} {a['summary']} ({a['origin']})" for a in describe_architectures()]
    lines.append("settings (--set KEY=VALUE): any field of textclf.config.TrainConfig, e.g. batch_size, "
                 "learning_rate, max_tokens, sequence_length, embedding_dim, units, dropout, ngrams, patience")
    return "\n".join(lines)


def cmd_ingest(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import IngestConfig
    from textclf.ingest.stage import ingest

    config = IngestConfig.build(kind=args.kind, date=args.date, sources=tuple(args.sources), id_col=args.id_col or "id",
                                text_col=args.text_col, label_col=args.label_col,
                                id_col_required=args.id_col is not None, max_text_chars=args.max_text_chars)
    return ingest(lake, config, progress)


def cmd_validate(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import ValidationConfig
    from textclf.validate.stage import validate

    config = ValidationConfig.build(kind=args.kind, date=args.date, min_examples_per_class=args.min_examples_per_class,
                                    max_text_chars=args.max_text_chars)
    return validate(lake, config, progress)


def cmd_demo(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.demo.stage import DemoConfig, run_demo

    config = DemoConfig.build(date=args.date, labeled_rows=args.labeled_rows, unlabeled_rows=args.unlabeled_rows,
                              seed=args.seed)
    result = run_demo(lake, config, progress)
    summary = result.summary()
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
    return result


def cmd_train(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    """Train, then evaluate: a version is registered before its evaluation runs, so a failed report costs no run."""
    from textclf.config import EvaluateConfig, TrainConfig
    from textclf.evaluate.stage import evaluate
    from textclf.model.architectures import get_architecture
    from textclf.model.train import train

    config = TrainConfig().with_overrides(args.settings, model=args.model, epochs=args.epochs, seed=args.seed)
    get_architecture(config.model)  # an unknown name fails before any data is read
    trained = train(lake, config, progress)
    try:
        evaluated = evaluate(lake, EvaluateConfig(model_version=trained.version, explain_count=args.explain), progress)
    except TextclfError as exc:
        raise type(exc)(f"model version {trained.version} is registered but its evaluation failed: {exc}; "
                        f"fix that and run `textclf evaluate --model-version {trained.version}`") from exc
    metrics = evaluated.metrics
    print(f"\nmodel {trained.version}: test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
          f"on {metrics['n']} documents\n  report: {evaluated.report_uri}", file=sys.stderr)
    return _Combined({**trained.summary(), **evaluated.summary()})


def cmd_evaluate(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import EvaluateConfig
    from textclf.evaluate.stage import evaluate

    config = EvaluateConfig.build(model_version=args.model_version, explain_count=args.explain,
                                  linear_reference=not args.no_linear_reference)
    return evaluate(lake, config, progress)


def cmd_promote(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import PromoteConfig, PromotionPolicy
    from textclf.promote.stage import promote

    policy = PromotionPolicy.build(tolerance=args.tolerance, min_accuracy=args.min_accuracy,
                                   require_reference=args.require_reference)
    result = promote(lake, PromoteConfig(model_version=args.model_version, policy=policy, force=args.force))
    print(f"{result.decision}: {'; '.join(result.reasons)}", file=sys.stderr)
    return result


def cmd_score(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import ReportConfig, ScoreConfig
    from textclf.score.stage import commit_predictions, report, score, score_shard

    config = ScoreConfig.build(date=args.date, model_version=args.model_version, num_shards=args.shards,
                               shard=args.shard, batch_rows=args.batch_rows)
    if config.shard is not None:
        return score_shard(lake, config, progress)
    if args.commit_only:
        predictions = commit_predictions(lake, config)
        written = report(lake, ReportConfig(date=config.date))
        return _Combined({**predictions.summary(), "report": written.uri, "warnings": written.warnings})
    result = score(lake, config, progress)
    for warning in result.report.warnings if result.report else []:
        print(f"warning: {warning}", file=sys.stderr)
    return result


def cmd_report(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import ReportConfig
    from textclf.score.stage import report

    return report(lake, ReportConfig.build(date=args.date))


def cmd_vacuum(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import VacuumConfig
    from textclf.lake.maintenance import vacuum

    return vacuum(lake, VacuumConfig.build(retention_days=args.retention_days))


def cmd_migrate(args: argparse.Namespace, lake: Lake, progress: Progress) -> Any:
    from textclf.config import MigrateConfig
    from textclf.lake.maintenance import migrate

    return migrate(lake, MigrateConfig())


class _Combined:
    """Summaries of two stages run by one command, printed as one JSON line."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self._summary = summary

    def summary(self) -> dict[str, Any]:
        return self._summary


COMMANDS: dict[str, Callable[[argparse.Namespace, Lake, Progress], Any]] = {
    "ingest": cmd_ingest,
    "validate": cmd_validate,
    "demo": cmd_demo,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "promote": cmd_promote,
    "score": cmd_score,
    "report": cmd_report,
    "vacuum": cmd_vacuum,
    "migrate": cmd_migrate,
}
# Commands that may start a new lake; every other one needs an existing lake root.
CREATES_LAKE = ("ingest", "demo")


def open_lake(uri: str, command: str) -> Lake:
    """The lake of a command, with one clear error when a command that reads a lake finds none."""
    from textclf.lake import Lake

    lake = Lake(uri)
    if not lake.root_exists():
        if command not in CREATES_LAKE:
            raise StorageError(f"no lake at {lake.uri}: check --lake, or create it with `textclf ingest`")
        log.info("creating a new lake at %s", lake.uri)
    return lake


# Words of a storage error that say the endpoint could not be reached (pyarrow/AWS SDK and botocore wordings).
_UNREACHABLE = ("curlcode", "could not connect", "couldn't connect", "could not resolve", "couldn't resolve",
                "connection refused", "timed out", "timeout", "name or service not known", "endpoint url",
                "amazonaws.com", "network", "unreachable")


def s3_endpoint_hint(lake_uri: str | None, exc: BaseException) -> str:
    """For an S3 lake that cannot be reached: the endpoint in use and the variables that set it ('' otherwise)."""
    if not (lake_uri or "").startswith("s3://") or not any(w in str(exc).lower() for w in _UNREACHABLE):
        return ""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return (f" (S3 endpoint in use: {os.environ[name]}, from {name}: check that the server is up and "
                    "the URL is right)")
    return (" (S3 endpoint in use: AWS's own, as neither AWS_ENDPOINT_URL nor AWS_ENDPOINT_URL_S3 is set: for "
            "an S3-compatible store set AWS_ENDPOINT_URL, e.g. AWS_ENDPOINT_URL=http://127.0.0.1:8333)")


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
    from textclf import tflog
    from textclf.progress import BarProgress, NoProgress

    tflog.install()  # TensorFlow's C++ start-up chatter is not for users: one INFO line instead, if it loads
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug, args.quiet)
    progress = NoProgress() if args.quiet else BarProgress()
    try:
        lake = open_lake(args.lake, args.command)
        summary = COMMANDS[args.command](args, lake, progress).summary()
    except TextclfError as exc:
        progress.close()
        if args.debug:
            log.exception("failed")
        hint = s3_endpoint_hint(args.lake, exc) if isinstance(exc, StorageError) else ""
        print(f"textclf {args.command}: error: {exc}{hint}", file=sys.stderr)
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
