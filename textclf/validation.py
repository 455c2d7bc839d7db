"""Validation: Great Expectations suites over a dataset partition; results and Data Docs into the lake.

The partition is streamed once into a compact *stats* frame (``doc_id``, ``text_chars``,
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

import dataclasses
import html
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from textclf import __version__
from textclf.config import Kind, ValidationConfig, parse_date, parse_kind
from textclf.errors import ValidationFailedError
from textclf.ingest import check_accounting, dataset_key
from textclf.progress import NoProgress, Progress
from textclf.storage import Lake, utc_now_iso

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

STRING_TYPES = ("string", "large_string", "string_view")
# Right-closed word-count bins: "0-100" holds 0..100 words, ">800" holds 801 and more.
WORD_BINS: tuple[tuple[str, float], ...] = (
    ("0-100", 100), ("100-300", 300), ("300-500", 500), ("500-800", 800), (">800", float("inf")),
)
STATS_FRAME = "stats"
CLASSES_FRAME = "class_counts"
# Which partition column each stats column comes from, to word messages in the partition's terms.
SOURCE_COLUMN = {"doc_id": "doc_id", "text_chars": "text", "text_words": "text", "label": "label"}
EXAMPLES_SHOWN = 5


def validation_key(kind: str, date: str) -> str:
    """Lake key of the validation partition for a dataset partition."""
    return f"validation/{kind}/ingest_date={date}"


def source_columns(kind: str) -> list[str]:
    """Dataset partition columns that validation reads (all must be strings)."""
    return ["doc_id", "text", *(["label"] if kind == "labeled" else [])]


def stats_columns(kind: str) -> list[str]:
    """Columns of the stats frame for a dataset kind."""
    return ["doc_id", "text_chars", "text_words", *(["label"] if kind == "labeled" else [])]


# -- pure helpers: stats, profile, expectations, messages ------------------------------------------


def _as_strings(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Values as Arrow strings; all null when they cannot be cast (the schema check names the type)."""
    import pyarrow as pa

    if pa.types.is_string(values.type):
        return values
    try:
        return values.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.nulls(len(values), pa.string())


def text_stats(table: pa.Table | pa.RecordBatch, kind: str) -> pa.Table:
    """Per-document stats of a dataset table: ``doc_id``, ``text_chars``, ``text_words`` (+ ``label``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.schema.names
    columns: dict[str, Any] = {}
    if "doc_id" in names:
        columns["doc_id"] = _as_strings(table.column("doc_id"))
    if "text" in names:
        text = _as_strings(table.column("text"))
        chars = pc.utf8_length(text).cast(pa.int64())
        # Ingest leaves texts single-spaced and trimmed, so words = spaces + 1 ("" has 0).
        spaces = pc.count_substring(text, " ").cast(pa.int64())
        columns["text_chars"] = chars
        columns["text_words"] = pc.if_else(pc.equal(chars, 0), pa.scalar(0, pa.int64()), pc.add(spaces, 1))
    if kind == "labeled" and "label" in names:
        columns["label"] = _as_strings(table.column("label"))
    return pa.table(columns)


def empty_stats(kind: str) -> pa.Table:
    """A stats table with no rows."""
    import pyarrow as pa

    types = {"doc_id": pa.string(), "text_chars": pa.int64(), "text_words": pa.int64(), "label": pa.string()}
    return pa.table({c: pa.array([], types[c]) for c in stats_columns(kind)})


def check_schema(schemas: dict[str, pa.Schema], kind: str) -> list[dict[str, Any]]:
    """Result entries checking that doc_id, text (and label) are strings in every data file."""
    entries = []
    for column in source_columns(kind):
        found: dict[str, list[str]] = {}
        for name, schema in schemas.items():
            idx = schema.get_field_index(column)
            found.setdefault("missing" if idx < 0 else str(schema.field(idx).type), []).append(name)
        if not found or set(found) == {"missing"}:
            continue  # absent from every file: the column-set expectation reports it
        entries.append({
            "suite": f"{kind}_schema", "expectation_type": "expect_column_values_to_be_of_type",
            "column": column, "kwargs": {"column": column, "type_": "string"},
            "success": all(t in STRING_TYPES for t in found),
            "observed_value": {t: sorted(files) for t, files in sorted(found.items())},
            "severity": "critical", "description": None, "error": None,
        })
    return entries


def accounting_entry(lake: Lake, kind: str, date: str, manifest: dict[str, Any], rows_read: int) -> dict[str, Any]:
    """A result entry checking the partition's row accounting and that its quarantine belongs to it."""
    found = check_accounting(lake, kind, date, manifest)
    if manifest.get("rows") != rows_read:
        found.append(f"the manifest lists {manifest.get('rows')} rows, the data files hold {rows_read}")
    return {
        "suite": f"{kind}_accounting", "expectation_type": "expect_partition_rows_to_add_up", "column": None,
        "kwargs": {}, "success": not found, "observed_value": {"problems": found},
        "severity": "critical", "description": None, "error": None,
    }


def class_counts(stats: pd.DataFrame) -> pd.DataFrame:
    """Examples per label, largest first, with each class's size relative to the smallest class."""
    import pandas as pd

    counts = stats["label"].value_counts(dropna=True) if "label" in stats else pd.Series([], dtype="int64")
    frame = pd.DataFrame({"label": [str(v) for v in counts.index], "count": counts.to_numpy(dtype="int64")})
    smallest = int(frame["count"].min()) if len(frame) else 1
    frame["imbalance"] = frame["count"] / max(smallest, 1)
    return frame


def _distribution(values: pd.Series | None) -> dict[str, float | int | None]:
    """min, p5, p50, p95, max and mean of a numeric column (None when there are no values)."""
    keys = ("min", "p5", "p50", "p95", "max", "mean")
    values = values.dropna() if values is not None else None
    if values is None or values.empty:
        return dict.fromkeys(keys)
    q = values.quantile([0.05, 0.5, 0.95]).tolist()
    return {"min": int(values.min()), "p5": round(q[0], 2), "p50": round(q[1], 2), "p95": round(q[2], 2),
            "max": int(values.max()), "mean": round(float(values.mean()), 2)}


def word_bin_counts(words: Any) -> dict[str, int]:
    """Documents per word-count bin (``WORD_BINS``); shared by the data profile and the scoring drift signals."""
    import numpy as np

    edges = [edge for _, edge in WORD_BINS[:-1]]
    counts = np.bincount(np.searchsorted(edges, words, side="left"), minlength=len(WORD_BINS))
    return {name: int(n) for (name, _), n in zip(WORD_BINS, counts, strict=True)}


def profile(stats: pd.DataFrame, kind: str) -> dict[str, Any]:
    """Row count, word-count bins, length percentiles and (labeled) class counts and shares."""
    import numpy as np

    rows = len(stats)
    # A missing word count (null text) is counted as 0 words so that the bins add up to `rows`.
    words = stats["text_words"].fillna(0).to_numpy() if "text_words" in stats else np.zeros(rows)
    out: dict[str, Any] = {
        "kind": kind,
        "rows": rows,
        "word_bins": word_bin_counts(words),
        "chars": _distribution(stats.get("text_chars")),
        "words": _distribution(stats.get("text_words")),
    }
    if kind == "labeled":
        classes = class_counts(stats)
        out["classes"] = len(classes)
        out["class_counts"] = {str(label): int(n) for label, n in zip(classes["label"], classes["count"], strict=True)}
        out["class_shares"] = {label: round(n / rows, 4) for label, n in out["class_counts"].items()}
        out["missing_labels"] = int(stats["label"].isna().sum()) if "label" in stats else rows
    return out


def _bar_rows(items: dict[str, int], total: int) -> str:
    """HTML table rows with a proportional bar per item (labels escaped)."""
    top = max(items.values(), default=0) or 1
    rows = []
    for name, n in items.items():
        share = f"{n / total:.1%}" if total else "-"
        rows.append(f'<tr><th>{html.escape(str(name))}</th><td class="n">{n}</td><td class="n">{share}</td>'
                    f'<td><div class="bar" style="width:{100 * n / top:.1f}%"></div></td></tr>')
    return "\n".join(rows)


def render_profile_html(prof: dict[str, Any], title: str) -> str:
    """A small self-contained HTML page of a profile: bins, percentiles, classes."""
    stats_rows = "\n".join(
        f"<tr><th>{name}</th>" + "".join(f'<td class="n">{html.escape(str(prof[name][k]))}</td>'
                                         for k in ("min", "p5", "p50", "p95", "max", "mean")) + "</tr>"
        for name in ("chars", "words"))
    classes = ""
    if "class_counts" in prof:
        classes = (f"<h2>Classes ({prof['classes']})</h2><table><tr><th>label</th><th>count</th><th>share</th>"
                   f"<th></th></tr>{_bar_rows(prof['class_counts'], prof['rows'])}</table>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #eee; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
td:last-child {{ width: 20em; }}
.bar {{ background: #4a7bd0; height: 0.9em; min-width: 1px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{prof['rows']} rows</p>
<h2>Words per text</h2>
<table><tr><th>words</th><th>texts</th><th>share</th><th></th></tr>
{_bar_rows(prof['word_bins'], prof['rows'])}</table>
<h2>Length percentiles</h2>
<table><tr><th></th><th>min</th><th>p5</th><th>p50</th><th>p95</th><th>max</th><th>mean</th></tr>
{stats_rows}</table>
{classes}
</body></html>
"""


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as code: the frame it checks, its GX class and kwargs, and its severity."""

    suite: str
    frame: str  # STATS_FRAME or CLASSES_FRAME
    gx_class: str  # a class name in great_expectations.expectations
    kwargs: dict[str, Any]
    severity: str  # "critical" or "warning"
    description: str | None = None  # names the check in messages and Data Docs instead of its type


def expectation_specs(kind: str, config: ValidationConfig) -> list[ExpectationSpec]:
    """The critical and warning expectations for a dataset kind, in reporting order."""
    crit, warn = f"{kind}_critical", f"{kind}_warning"

    def critical(gx_class: str, description: str | None = None, frame: str = STATS_FRAME,
                 suite: str = crit, **kwargs: Any) -> ExpectationSpec:
        return ExpectationSpec(suite, frame, gx_class, kwargs, "critical", description)

    def warning(gx_class: str, description: str, frame: str = STATS_FRAME, suite: str = warn,
                **kwargs: Any) -> ExpectationSpec:
        return ExpectationSpec(suite, frame, gx_class, kwargs, "warning", description)

    specs = [
        critical("ExpectTableRowCountToBeBetween", min_value=1),
        critical("ExpectTableColumnsToMatchSet", column_set=stats_columns(kind), exact_match=True),
        critical("ExpectColumnValuesToNotBeNull", column="doc_id"),
        critical("ExpectColumnValuesToBeUnique", column="doc_id"),
        critical("ExpectColumnValuesToNotBeNull", column="text_chars"),
        critical("ExpectColumnValuesToBeBetween", column="text_chars", min_value=config.min_text_chars,
                 max_value=config.max_text_chars),
    ]
    if kind == "labeled":
        specs += [
            critical("ExpectColumnValuesToNotBeNull", column="label"),
            critical("ExpectColumnUniqueValueCountToBeBetween", f"at least {config.min_classes} classes",
                     column="label", min_value=config.min_classes),
        ]
        if config.allowed_labels is not None:  # on the class frame, so that messages give exact counts
            specs.append(critical("ExpectColumnValuesToBeInSet", "labels outside allowed_labels", CLASSES_FRAME,
                                  f"{crit}_classes", column="label", value_set=sorted(config.allowed_labels)))
        specs.append(critical("ExpectColumnValuesToBeBetween",
                              f"min examples per class ({config.min_examples_per_class})", CLASSES_FRAME,
                              f"{crit}_classes", column="count", min_value=config.min_examples_per_class))
    specs += [
        warning("ExpectColumnValuesToBeBetween",
                f"share of texts under {config.short_text_words} words (max {config.max_short_text_share:.0%})",
                column="text_words", min_value=config.short_text_words,
                mostly=min(1.0, max(0.0, 1.0 - config.max_short_text_share))),
        warning("ExpectColumnMedianToBeBetween", f"median words (max {config.max_median_words})",
                column="text_words", max_value=config.max_median_words),
    ]
    if kind == "labeled":
        specs.append(warning("ExpectColumnValuesToBeBetween",
                             f"class imbalance (largest/smallest max {config.max_class_imbalance:g})",
                             CLASSES_FRAME, f"{warn}_classes", column="imbalance",
                             max_value=config.max_class_imbalance))
    return specs


def _fmt(value: Any) -> str:
    """A value for a message: numbers without a spurious ``.0``, strings quoted."""
    if value is None:
        return "no value"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.4g}"
    return repr(value)


def _range_text(kwargs: dict[str, Any]) -> str:
    """``between a and b``, ``>= a`` or ``<= b`` from min_value/max_value kwargs."""
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"between {_fmt(lo)} and {_fmt(hi)}"
    return f">= {_fmt(lo)}" if lo is not None else f"<= {_fmt(hi)}"


def describe(entry: dict[str, Any]) -> str:
    """One line naming an expectation that did not pass and what was observed."""
    type_, column = entry["expectation_type"], entry.get("column")
    kwargs, observed = entry["kwargs"], entry["observed_value"]
    name = entry.get("description") or (f"{type_}({column})" if column else type_)
    if entry.get("error"):
        return f"{name}: could not be evaluated: {entry['error']}"
    if type_ == "expect_column_values_to_be_of_type":
        found = "; ".join(f"{t} in {', '.join(files)}" for t, files in observed.items() if t not in STRING_TYPES)
        return f"{name}: expected {kwargs['type_']}, found {found}"
    if type_ == "expect_partition_rows_to_add_up":
        return f"{name}: {'; '.join(observed['problems'])}"
    if type_ == "expect_table_columns_to_match_set":
        present, expected = set(observed or []), set(kwargs["column_set"])
        missing = sorted({SOURCE_COLUMN.get(c, c) for c in expected - present})
        extra = sorted(present - expected)
        parts = [f"the partition has no column(s) {missing}"] * bool(missing) + [f"unexpected {extra}"] * bool(extra)
        return f"{name}: {'; '.join(parts)}"
    if not isinstance(observed, dict):  # an aggregate: row count, distinct labels, median
        return f"{name}: observed {_fmt(observed)}, expected {_range_text(kwargs)}"
    count, rows = observed["unexpected_count"], observed.get("rows") or []
    values = ", ".join(f"{_fmt(v['value'])} ({v['count']} rows)" for v in observed.get("value_counts") or [])
    if "mostly" in kwargs:
        return f"{name}: {observed['unexpected_percent']:.1f}% ({count} of {observed['element_count']} rows)"
    if type_ == "expect_column_values_to_be_unique":
        shown = list(dict.fromkeys(v["value"] for v in observed.get("value_counts") or []))[:EXAMPLES_SHOWN]
        return f"{name}: {count} rows share a duplicated value, e.g. {shown}"
    if type_ == "expect_column_values_to_not_be_null":
        return f"{name}: {count} null values in {observed['element_count']} rows"
    if rows and "label" in rows[0]:  # class-frame checks: exact counts of every failing class
        if column == "imbalance":
            top = max(rows, key=lambda r: r["imbalance"])
            smallest = round(top["count"] / top["imbalance"])
            return (f"{name}: {_fmt(top['label'])} has {top['count']}, {float(top['imbalance']):.1f}x the "
                    f"smallest class ({smallest})")
        found = ", ".join(f"{_fmt(r['label'])} has {r['count']}" for r in rows)
        return f"{name}: {found}"
    if rows and "doc_id" in rows[0]:
        values = ", ".join(f"doc {_fmt(r['doc_id'])} has {r.get(column)}" for r in rows[:EXAMPLES_SHOWN])
    return f"{name}: {count} values not {_range_text(kwargs)}, e.g. {values}"


def _observed(result: dict[str, Any]) -> Any:
    """The observed value of a GX result: the value itself, or a summary of the unexpected values.

    The summary holds counts, ``value_counts`` (up to 20 unexpected values with their counts)
    and ``rows`` (the index columns, doc_id or label, of unexpected rows) when GX gave them.
    """
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" not in result:
        return None
    rows = result.get("unexpected_index_list") or result.get("partial_unexpected_index_list") or []
    return {"element_count": result.get("element_count"), "unexpected_count": result["unexpected_count"],
            "unexpected_percent": result.get("unexpected_percent"),
            "value_counts": result.get("partial_unexpected_counts") or [],
            "rows": [r for r in rows if isinstance(r, dict)]}


def _error_message(exception_info: dict[str, Any]) -> str | None:
    """The exception message of a GX result, if evaluating it raised."""
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message") or "error").splitlines()[0]
    return None


def entries_from_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten GX suite validation results (JSON dicts) into ``results.json`` entries, in spec order."""
    entries = []
    for suite_result in results:
        for res in suite_result["results"]:
            cfg = res["expectation_config"]
            kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
            entries.append({
                "suite": suite_result["suite_name"], "expectation_type": cfg["type"],
                "column": kwargs.get("column"), "kwargs": kwargs, "success": bool(res["success"]),
                "observed_value": _observed(res.get("result") or {}),
                "severity": str(cfg.get("severity") or "critical"), "description": cfg.get("description"),
                "error": _error_message(res.get("exception_info") or {}),
                "_order": (cfg.get("meta") or {}).get("order", 0),
            })
    entries.sort(key=lambda e: e["_order"])
    for entry in entries:
        del entry["_order"]
    return entries


def problems(entries: list[dict[str, Any]], severity: str, frame_columns: list[str]) -> list[str]:
    """Messages for the failed entries of one severity.

    An expectation that could not run because its column is absent is left out: the
    column-set expectation already names that column.
    """
    return [describe(e) for e in entries
            if not e["success"] and e["severity"] == severity
            and not (e["error"] and e["column"] in SOURCE_COLUMN and e["column"] not in frame_columns)]


# -- Great Expectations --------------------------------------------------------------------------


@dataclass(frozen=True)
class GxRun:
    """What the GX checkpoints produced: validation results as JSON dicts and the Data Docs folder."""

    results: list[dict[str, Any]]
    docs_dir: str
    gx_version: str


def run_expectations(frames: dict[str, pd.DataFrame], specs: list[ExpectationSpec], project_dir: str) -> GxRun:
    """Run the suites with a file-backed GX context in ``project_dir``; one checkpoint per frame."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # GX logs config chatter at INFO; keep task logs readable
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.variables.save()
    source = context.data_sources.add_pandas("textclf")
    results: list[dict[str, Any]] = []
    for frame_name, frame in frames.items():
        frame_specs = [(i, s) for i, s in enumerate(specs) if s.frame == frame_name]
        if not frame_specs:
            continue
        batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe("whole")
        definitions = []
        for suite_name in dict.fromkeys(s.suite for _, s in frame_specs):
            expectations = [getattr(gxe, s.gx_class)(**s.kwargs, severity=s.severity, description=s.description,
                                                     meta={"order": i})
                            for i, s in frame_specs if s.suite == suite_name]
            suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
            definitions.append(context.validation_definitions.add(
                gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)))
        # Name the offending rows (doc_id) or classes (label) in results; COMPLETE only for the tiny class frame.
        index_columns = ["label", "count"] if frame_name == CLASSES_FRAME else ["doc_id"]
        result_format: dict[str, Any] = {"result_format": "COMPLETE" if frame_name == CLASSES_FRAME else "SUMMARY"}
        if set(index_columns) <= set(frame.columns):
            result_format["unexpected_index_column_names"] = index_columns
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"textclf_{frame_name}", validation_definitions=definitions,
            actions=[UpdateDataDocsAction(name="update_data_docs")], result_format=result_format))
        run = checkpoint.run(batch_parameters={"dataframe": frame})
        results += [vr.to_json_dict() for vr in run.run_results.values()]
    site_url = context.get_docs_sites_urls()[0]["site_url"]
    return GxRun(results, os.path.dirname(unquote(urlparse(site_url).path)), gx.__version__)


# -- I/O -------------------------------------------------------------------------------------------


def read_stats(lake: Lake, key: str, kind: str, progress: Progress) -> tuple[pd.DataFrame, dict[str, pa.Schema]]:
    """Stream a committed dataset partition into the stats frame; also return each file's schema."""
    import pandas as pd
    import pyarrow as pa

    files = lake.partition_files(key)
    schemas, total = {}, 0
    for file_key in files:
        meta = lake.parquet_file(file_key).metadata
        schemas[file_key[len(key) + 1 :]] = meta.schema.to_arrow_schema()
        total += meta.num_rows
    readable = [c for c in source_columns(kind) if schemas and all(c in s.names for s in schemas.values())]
    progress.start(total, f"validate {kind}", unit="rows")
    parts, done = [], 0
    for batch in lake.iter_batches(key, columns=readable):
        parts.append(text_stats(batch, kind))
        done += batch.num_rows
        progress.update(done)
    progress.close()
    if not readable:  # nothing to read: keep the row count, the column-set expectation reports the rest
        return pd.DataFrame(index=pd.RangeIndex(total)), schemas
    present = [c for c in stats_columns(kind) if SOURCE_COLUMN[c] in readable]
    table = pa.concat_tables(parts) if parts else empty_stats(kind).select(present)
    return table.to_pandas(), schemas


@dataclass(frozen=True)
class ValidationReport:
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


def validate(lake: Lake | str, kind: Kind, date: str, config: ValidationConfig | None = None,
             progress: Progress | None = None) -> ValidationReport:
    """Validate a dataset partition, write results, profile and Data Docs to the lake; raise on critical."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    kind, date = parse_kind(kind), parse_date(date)
    config = config or ValidationConfig()
    source_key, out_key = dataset_key(kind, date), validation_key(kind, date)
    manifest = lake.require_manifest(source_key)
    stats, schemas = read_stats(lake, source_key, kind, progress or NoProgress())
    specs = expectation_specs(kind, config)
    frames = {STATS_FRAME: stats}
    if kind == "labeled":
        frames[CLASSES_FRAME] = class_counts(stats)
    prof = profile(stats, kind)
    with tempfile.TemporaryDirectory(prefix="textclf-gx-") as project_dir:
        gx_run = run_expectations(frames, specs, project_dir)
        entries = ([accounting_entry(lake, kind, date, manifest, prof["rows"])] + check_schema(schemas, kind)
                   + entries_from_results(gx_run.results))
        failures = problems(entries, "critical", list(stats.columns))
        warnings = problems(entries, "warning", list(stats.columns))
        success = all(e["success"] for e in entries if e["severity"] == "critical")
        gx_files = [f"gx_results/{r['suite_name']}.json" for r in gx_run.results]
        results = {
            "kind": kind, "ingest_date": date, "dataset": lake.uri_of(source_key),
            "dataset_rows": manifest.get("rows", prof["rows"]), "validated_at": utc_now_iso(),
            "success": success, "failures": failures, "warnings": warnings,
            "links": {"profile": "profile.json", "profile_html": "profile.html",
                      "data_docs": "data_docs/index.html", "gx_results": gx_files},
            "config": dataclasses.asdict(config),
            "versions": {"textclf": __version__, "great_expectations": gx_run.gx_version},
            "expectations": entries,
        }
        with lake.partition(out_key) as writer:
            writer.add_bytes("results.json", _json(results))
            writer.add_bytes("profile.json", _json(prof))
            writer.add_bytes("profile.html", render_profile_html(prof, f"Profile of {kind} {date}").encode())
            for name, result in zip(gx_files, gx_run.results, strict=True):
                writer.add_bytes(name, _json(result))
            writer.add_local_dir("data_docs", gx_run.docs_dir)
            writer.commit({"kind": kind, "ingest_date": date, "dataset": lake.uri_of(source_key),
                           "dataset_rows": prof["rows"], "success": success, "critical_failures": len(failures),
                           "warnings": len(warnings)})
    report = ValidationReport(kind, date, success, failures, warnings, lake.uri_of(f"{out_key}/results.json"),
                              lake.uri_of(f"{out_key}/data_docs/index.html"), prof)
    for warning in warnings:
        log.warning("validation warning for %s %s: %s", kind, date, warning)
    log.info("validated %s %s: %s", kind, date, "passed" if success else f"{len(failures)} critical failure(s)")
    for failure in failures:
        log.error("failed expectation for %s %s: %s", kind, date, failure)
    if not success:
        raise ValidationFailedError(subject=f"{kind} {date}", failures=failures or ["see results.json"],
                                    docs_uri=report.docs_uri)
    return report


def _json(obj: Any) -> bytes:
    """Pretty JSON bytes (values GX left as numpy or dates become strings)."""
    return json.dumps(obj, indent=2, default=str).encode()
