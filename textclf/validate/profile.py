"""The data profile: per-document stats of a partition, length distribution and class balance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textclf.textstats import word_bin_counts

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa



STATS_FRAME = "stats"

CLASSES_FRAME = "class_counts"

# Which partition column each stats column comes from, to word messages in the partition's terms.
SOURCE_COLUMN = {"doc_id": "doc_id", "text_chars": "text", "text_words": "text", "label": "label"}

PERCENTILE_KEYS = ("min", "p5", "p50", "p95", "max", "mean")


def source_columns(kind: str) -> list[str]:
    """Dataset partition columns that validation reads (all must be strings)."""
    return ["doc_id", "text", *(["label"] if kind == "labeled" else [])]


def stats_columns(kind: str) -> list[str]:
    """Columns of the stats frame for a dataset kind."""
    return ["doc_id", "text_chars", "text_words", *(["label"] if kind == "labeled" else [])]


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
    keys = PERCENTILE_KEYS
    values = values.dropna() if values is not None else None
    if values is None or values.empty:
        return dict.fromkeys(keys)
    q = values.quantile([0.05, 0.5, 0.95]).tolist()
    return {"min": int(values.min()), "p5": round(q[0], 2), "p50": round(q[1], 2), "p95": round(q[2], 2),
            "max": int(values.max()), "mean": round(float(values.mean()), 2)}


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


def _bar_rows(items: dict[str, int], total: int) -> list[list[Any]]:
    """Table rows of a count per item: name, count, share of ``total`` and a bar's width in percent of the largest."""
    top = max(items.values(), default=0) or 1
    return [[str(name), n, n / total if total else None, 100 * n / top] for name, n in items.items()]


def render_profile_html(prof: dict[str, Any], title: str) -> str:
    """A small self-contained HTML page of a profile: bins, percentiles, classes."""
    from textclf.report.render import render

    sections = [("word-bins", "Words per text"), ("length-percentiles", "Length percentiles")]
    if "class_counts" in prof:
        sections.append(("classes", f"Classes ({prof['classes']})"))
    return render("profile.html", title=title, sections=sections, rows=prof["rows"],
                  word_bins=_bar_rows(prof["word_bins"], prof["rows"]),
                  percentiles=[[name, *(prof[name][k] for k in PERCENTILE_KEYS)] for name in ("chars", "words")],
                  percentile_columns=[("", "head"), *((k, "num:2") for k in PERCENTILE_KEYS)],
                  classes=_bar_rows(prof["class_counts"], prof["rows"]) if "class_counts" in prof else None)
