"""The expectation suites as code, their Great Expectations run, and one-line messages for failures."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from textclf.config import ValidationConfig
from textclf.validate.data_docs import make_offline
from textclf.validate.profile import CLASSES_FRAME, SOURCE_COLUMN, STATS_FRAME, source_columns, stats_columns

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa



STRING_TYPES = ("string", "large_string", "string_view")

EXAMPLES_SHOWN = 5


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


@dataclass(frozen=True)
class GxRun:
    """What the GX checkpoints produced: validation results as JSON dicts and the Data Docs folder."""

    results: list[dict[str, Any]]
    docs_dir: str
    gx_version: str


def run_expectations(frames: dict[str, pd.DataFrame], specs: list[ExpectationSpec], project_dir: str) -> GxRun:
    """Run the suites with a file-backed GX context in ``project_dir``; one checkpoint per frame."""
    with _gx_logs_at_warning():
        return _run_expectations(frames, specs, project_dir)


@contextlib.contextmanager
def _gx_logs_at_warning() -> Iterator[None]:
    """Within the block, the ``great_expectations`` logger at WARNING unless its level was set; restored after."""
    # GX logs some 240 INFO lines of config chatter, most of them while it is first imported (its
    # docs decorators): keep task logs readable, but leave the process's logging as it was.
    gx_log = logging.getLogger("great_expectations")
    quieted = gx_log.level == logging.NOTSET
    if quieted:
        gx_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        if quieted and gx_log.level == logging.WARNING:
            gx_log.setLevel(logging.NOTSET)


def _run_expectations(frames: dict[str, pd.DataFrame], specs: list[ExpectationSpec], project_dir: str) -> GxRun:
    """``run_expectations`` without the logging scope."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_dir)
    # Analytics off in the context's own config rather than GX_ANALYTICS_ENABLED: GX 1.24 reads that
    # variable nowhere (and older 1.x read it once, at import), so setting it here changed nothing.
    context.variables.analytics_enabled = False
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
        # No UpdateDataDocsAction: it rebuilds the whole site after every suite (four builds, two thirds of a
        # small partition's validation time); the checkpoints store their results and the site is built once below.
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"textclf_{frame_name}", validation_definitions=definitions, result_format=result_format))
        run = checkpoint.run(batch_parameters={"dataframe": frame})
        results += [vr.to_json_dict() for vr in run.run_results.values()]
    context.build_data_docs()
    site_url = context.get_docs_sites_urls()[0]["site_url"]
    docs_dir = os.path.dirname(unquote(urlparse(site_url).path))
    make_offline(docs_dir)  # its CSS and JavaScript from files inside the site: it renders with no network
    return GxRun(results, docs_dir, gx.__version__)
