"""Validation: Great Expectations suites over a dataset partition; results and Data Docs into the lake.

The date (one snapshot of the dataset table) is streamed once into a compact *stats* frame (``doc_id``, ``text_chars``,
``text_words`` and, for labeled data, ``label``; the text itself is not kept), which the
suites of ``expectation_specs`` check. Everything a reader needs is written as one
partition, ``validation/{kind}/ingest_date=D/`` (see docs/validation.md):

- ``results.json``: overall success and one entry per expectation (suite, type, column,
  kwargs, success, observed value, severity ``critical`` or ``warning``)
- ``profile.json`` / ``profile.html``: row count, length distribution, class balance
- ``gx_results/{suite}.json``: the Great Expectations validation results
- ``data_docs/index.html``: the rendered GX Data Docs site

Critical failures raise ``ValidationFailedError`` after that partition is committed;
warnings are logged and returned.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf import __version__
from textclf.common import json_bytes, utc_now_iso
from textclf.config import ValidationConfig
from textclf.errors import ValidationFailedError
from textclf.lake import Lake
from textclf.lake.layout import data_docs_key, dataset_key, validation_key
from textclf.lake.tables import Snapshot, Table, dataset_table
from textclf.progress import NoProgress, Progress
from textclf.validate.accounting import accounting_entry
from textclf.validate.expectations import (
    check_schema,
    entries_from_results,
    expectation_specs,
    problems,
    run_expectations,
)
from textclf.validate.profile import (
    CLASSES_FRAME,
    SOURCE_COLUMN,
    STATS_FRAME,
    class_counts,
    empty_stats,
    profile,
    render_profile_html,
    source_columns,
    stats_columns,
    text_stats,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)


def read_stats(table: Table, date: str, kind: str, progress: Progress,
               snapshot: Snapshot | None = None) -> tuple[pd.DataFrame, dict[str, pa.Schema]]:
    """Stream one date of a dataset table into the stats frame; also return each file's schema."""
    import pandas as pd
    import pyarrow as pa

    lake, key = table.lake, table.date_key(date)
    files = table.file_keys(date, snapshot)
    schemas, total = {}, 0
    for file_key in files:
        meta = lake.parquet_file(file_key).metadata
        schemas[file_key[len(key) + 1 :]] = meta.schema.to_arrow_schema()
        total += meta.num_rows
    readable = [c for c in source_columns(kind) if schemas and all(c in s.names for s in schemas.values())]
    progress.start(total, f"validate {kind}", unit="rows")
    parts, done = [], 0
    for batch in table.iter_batches(date, columns=readable, snapshot=snapshot):
        parts.append(text_stats(batch, kind))
        done += batch.num_rows
        progress.update(done)
    progress.close()
    if not readable:  # nothing to read: keep the row count, the column-set expectation reports the rest
        return pd.DataFrame(index=pd.RangeIndex(total)), schemas
    present = [c for c in stats_columns(kind) if SOURCE_COLUMN[c] in readable]
    stats = pa.concat_tables(parts) if parts else empty_stats(kind).select(present)
    return stats.to_pandas(), schemas


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one dataset partition."""

    kind: str
    date: str
    success: bool
    failures: list[str]
    warnings: list[str]
    results_uri: str
    docs_uri: str
    profile: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The CLI's one-line JSON summary."""
        return {"results": self.results_uri, "data_docs": self.docs_uri, "kind": self.kind,
                "ingest_date": self.date, "rows": self.profile.get("rows"), "success": self.success,
                "failures": self.failures, "warnings": self.warnings}


def validate(lake: Lake, config: ValidationConfig, progress: Progress | None = None) -> ValidationResult:
    """Validate one date of a dataset table, write results, profile and Data Docs to the lake; raise on critical."""
    kind, date = config.kind, config.date
    source_key, out_key = dataset_key(kind, date), validation_key(kind, date)
    table = dataset_table(lake, kind)
    snapshot = table.snapshot()
    manifest = table.require_summary(date, snapshot)
    assert snapshot is not None
    stats, schemas = read_stats(table, date, kind, progress or NoProgress(), snapshot)
    specs = expectation_specs(kind, config)
    frames = {STATS_FRAME: stats}
    if kind == "labeled":
        frames[CLASSES_FRAME] = class_counts(stats)
    prof = profile(stats, kind)
    with tempfile.TemporaryDirectory(prefix="textclf-gx-") as project_dir:
        gx_run = run_expectations(frames, specs, project_dir)
        entries = ([accounting_entry(lake, kind, date, manifest, prof["rows"], snapshot.rows(date))]
                   + check_schema(schemas, kind)
                   + entries_from_results(gx_run.results))
        failures = problems(entries, "critical", list(stats.columns))
        warnings = problems(entries, "warning", list(stats.columns))
        success = all(e["success"] for e in entries if e["severity"] == "critical")
        gx_files = [f"gx_results/{r['suite_name']}.json" for r in gx_run.results]
        results = {
            "kind": kind, "ingest_date": date, "dataset": lake.uri_of(source_key),
            "dataset_table": table.lake.uri_of(table.key), "dataset_version": snapshot.version,
            "dataset_rows": manifest.get("rows", prof["rows"]), "validated_at": utc_now_iso(),
            "success": success, "failures": failures, "warnings": warnings,
            "links": {"profile": "profile.json", "profile_html": "profile.html",
                      "data_docs": "data_docs/index.html", "gx_results": gx_files},
            "config": config.thresholds(),
            "versions": {"textclf": __version__, "great_expectations": gx_run.gx_version},
            "expectations": entries,
        }
        with lake.partition(out_key) as writer:
            writer.add_bytes("results.json", json_bytes(results))
            writer.add_bytes("profile.json", json_bytes(prof))
            writer.add_bytes("profile.html", render_profile_html(prof, f"Profile of {kind} {date}").encode())
            for name, result in zip(gx_files, gx_run.results, strict=True):
                writer.add_bytes(name, json_bytes(result))
            writer.add_local_dir("data_docs", gx_run.docs_dir)
            writer.commit({"kind": kind, "ingest_date": date, "dataset": lake.uri_of(source_key),
                           "dataset_version": snapshot.version, "dataset_rows": prof["rows"], "success": success,
                           "critical_failures": len(failures), "warnings": len(warnings)})
    validated = ValidationResult(kind, date, success, failures, warnings, lake.uri_of(f"{out_key}/results.json"),
                              lake.uri_of(data_docs_key(kind, date)), prof)
    for warning in warnings:
        log.warning("validation warning for %s %s: %s", kind, date, warning)
    log.info("validated %s %s: %s", kind, date, "passed" if success else f"{len(failures)} critical failure(s)")
    for failure in failures:
        log.error("failed expectation for %s %s: %s", kind, date, failure)
    if not success:
        raise ValidationFailedError(subject=f"{kind} {date}", failures=failures or ["see results.json"],
                                    docs_uri=validated.docs_uri)
    return validated
