"""Typed, frozen configuration built at the edges (CLI options, Airflow Params, environment)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from textclf.errors import UsageError

Kind = Literal["labeled", "unlabeled"]
KINDS: tuple[Kind, ...] = ("labeled", "unlabeled")


def parse_kind(value: str) -> Kind:
    """Check a dataset kind."""
    if value not in KINDS:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {value!r}")
    return value  # type: ignore[return-value]


def parse_date(value: str | None) -> str:
    """A YYYY-MM-DD date string; today (UTC) when None."""
    if value is None:
        return dt.datetime.now(dt.UTC).date().isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise UsageError(f"date must be YYYY-MM-DD, got {value!r}") from exc


@dataclass(frozen=True)
class IngestConfig:
    """How source files become a dataset partition."""

    kind: Kind
    date: str
    id_col: str = "id"
    text_col: str = "text"
    label_col: str = "label"
    id_col_required: bool = False  # True when the user named the id column explicitly
    max_text_chars: int = 100_000  # longer texts are quarantined as text_too_long
    batch_rows: int = 65_536
    max_rows_per_file: int = 1_000_000
    workers: int = 0  # threads normalising batches; 0: one per core, at most 4

    def __post_init__(self) -> None:
        parse_kind(self.kind)
        parse_date(self.date)
        if self.max_text_chars < 1:
            raise UsageError(f"max_text_chars must be positive, got {self.max_text_chars}")
        if self.batch_rows < 1 or self.max_rows_per_file < 1:
            raise UsageError("batch_rows and max_rows_per_file must be positive")


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the data expectations; critical ones fail, warnings are reported."""

    min_text_chars: int = 1
    max_text_chars: int = 100_000
    min_examples_per_class: int = 10
    min_classes: int = 2
    allowed_labels: tuple[str, ...] | None = None  # None: any label set
    max_class_imbalance: float = 10.0  # warning: largest class / smallest class
    max_short_text_share: float = 0.10  # warning: share of texts under `short_text_words`
    short_text_words: int = 3
    max_median_words: int = 2_000  # warning: median length looks like concatenated documents
