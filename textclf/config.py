"""Typed, frozen configuration built at the edges (CLI options, Airflow Params, environment)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run; ``None`` means "the architecture's default".

    Built from CLI options (``--model``, ``--epochs``, ``--seed``, ``--set KEY=VALUE``) or
    Airflow Params through ``with_overrides``.
    """

    model: str = "nb_tfidf"
    epochs: int = 30  # upper bound: early stopping on the validation split ends most runs sooner
    seed: int = 0
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: str | None = None  # adam, adamw or rmsprop
    max_tokens: int | None = None  # vocabulary size (n-grams included)
    sequence_length: int | None = None  # tokens per document for sequence models
    embedding_dim: int | None = None
    units: int | None = None  # hidden units (MLP, LSTM, convolution filters)
    dropout: float | None = None
    ngrams: int | None = None
    char_branch: str | None = None  # nb_tfidf: auto (short texts), on, off
    patience: int = 3  # epochs without improvement of `monitor` before stopping
    monitor: str = "val_loss"
    min_steps_per_epoch: int = 50  # small datasets get smaller batches, so every epoch makes real progress
    class_weight: str = "balanced"  # balanced or none
    test_percent: int = 10  # fixed across versions so the promotion gate compares like with like
    validation_percent: int = 10
    max_attempts: int = 3  # retrain with another seed when a run collapses to one class
    mixed_precision: str = "auto"  # auto (on GPUs), on, off
    explain_count: int = 8  # predictions explained in the report

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"epochs must be at least 1, got {self.epochs}")
        if not 1 <= self.test_percent <= 50 or not 1 <= self.validation_percent <= 50:
            raise UsageError("test_percent and validation_percent must be between 1 and 50")
        if self.class_weight not in ("balanced", "none"):
            raise UsageError(f"class_weight must be balanced or none, got {self.class_weight!r}")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise UsageError(f"mixed_precision must be auto, on or off, got {self.mixed_precision!r}")
        if self.monitor not in ("val_loss", "val_accuracy"):
            raise UsageError(f"monitor must be val_loss or val_accuracy, got {self.monitor!r}")
        if self.char_branch not in (None, "auto", "on", "off"):
            raise UsageError(f"char_branch must be auto, on or off, got {self.char_branch!r}")
        if self.optimizer not in (None, "adam", "adamw", "rmsprop"):
            raise UsageError(f"optimizer must be adam, adamw or rmsprop, got {self.optimizer!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("batch_size", "max_tokens", "sequence_length", "embedding_dim", "units", "ngrams"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be positive, got {value}")
        if self.max_attempts < 1 or self.patience < 0 or self.min_steps_per_epoch < 1:
            raise UsageError("max_attempts and min_steps_per_epoch must be positive, patience not negative")

    def with_overrides(self, assignments: Sequence[str] = (), **values: Any) -> TrainConfig:
        """A copy with ``KEY=VALUE`` strings (typed by the field) and keyword values applied."""
        hints = typing.get_type_hints(TrainConfig)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        changes: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
            if key not in known:
                raise UsageError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            changes[key] = _parse_typed(key, raw.strip(), hints[key])
        for key in changes:
            if key not in known:
                raise UsageError(f"unknown setting {key!r}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainConfig:
        """Rebuild the config a model version recorded in its ``config.json`` (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


def _parse_typed(key: str, raw: str, hint: Any) -> Any:
    """Convert a ``--set`` value to the field's type (int, float, str, bool, or None for optional fields)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if optional and raw.lower() in ("none", "null", "default", ""):
        return None
    try:
        if base is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
    except ValueError as exc:
        raise UsageError(f"setting {key} expects {base.__name__}, got {raw!r}") from exc
    return raw


@dataclass(frozen=True)
class PromotionPolicy:
    """The promotion gate (CONTRACTS.md section 4)."""

    tolerance: float = 0.005  # a candidate may trail the champion's macro-F1 by at most this much
    min_accuracy: float = 0.70  # absolute floor on test accuracy, first model included

    def __post_init__(self) -> None:
        if not 0.0 <= self.tolerance <= 1.0 or not 0.0 <= self.min_accuracy <= 1.0:
            raise UsageError("tolerance and min_accuracy must be between 0 and 1")
