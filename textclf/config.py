"""Typed, frozen configuration of every stage, built at the edges (CLI options, Airflow Params, environment).

Each stage takes ``(lake, config)``; its config is a pydantic model, so values given as strings
(``--set KEY=VALUE``, Airflow Params) are converted and checked in one place, and a bad value is
one ``UsageError`` line naming the setting.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from textclf.errors import UsageError

Kind = Literal["labeled", "unlabeled"]
KINDS: tuple[Kind, ...] = ("labeled", "unlabeled")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NONE_WORDS = ("none", "null", "default", "")


def parse_kind(value: str) -> Kind:
    """Check a dataset kind."""
    if value not in KINDS:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {value!r}")
    return value  # type: ignore[return-value]


def parse_date(value: str | None) -> str:
    """A real calendar day written ``YYYY-MM-DD``; today (UTC) when None."""
    if value is None:
        return dt.datetime.now(dt.UTC).date().isoformat()
    # fromisoformat alone also takes "20261130" and week dates: the lake's keys need one spelling.
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise UsageError(f"date must be YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise UsageError(f"date {value!r} is not a real day ({exc})") from exc


def _usage_error(cls: type[BaseModel], exc: ValidationError) -> UsageError:
    """One line naming the first bad setting, what is wrong with it and what was given."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or cls.__name__
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = ", ".join(sorted(cls.model_fields))
        return UsageError(f"unknown setting {where!r}; known: {known}")
    if first["type"] == "missing":
        return UsageError(f"setting {where} is required")
    if first["type"] == "value_error":  # our own validators' messages name the setting already
        return UsageError(message)
    # "Input should be a valid integer, unable to parse string as an integer" -> "must be a valid integer"
    if first["type"].endswith("_parsing"):
        message = message.split(", ")[0]
    message = message.replace("Input should be", "must be")
    given = first.get("input")
    return UsageError(f"setting {where} {message}, got {given!r}" if not isinstance(given, dict)
                      else f"{cls.__name__}: {message}")


class StageConfig(BaseModel):
    """Base of the stage configs: frozen, no unknown keys, strings converted to the field's type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def build(cls, **values: Any) -> Self:
        """Validate ``values`` into a config; ``None`` values mean "the default"."""
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise _usage_error(cls, exc) from None

    def replaced(self, **changes: Any) -> Self:
        """A validated copy with some fields changed."""
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise _usage_error(type(self), exc) from None

    def as_record(self) -> dict[str, Any]:
        """The config as JSON-ready values, as written next to what a stage produced."""
        return self.model_dump(mode="json")


class DatedConfig(StageConfig):
    """A stage config with a ``date``: a real day, written ``YYYY-MM-DD``."""

    @field_validator("date", mode="before", check_fields=False)
    @classmethod
    def _real_day(cls, value: Any) -> str:
        try:
            return parse_date(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None


def _today() -> str:
    return parse_date(None)


class IngestConfig(DatedConfig):
    """How source files become a dataset partition."""

    kind: Kind
    date: str = Field(default_factory=_today)
    sources: tuple[str, ...] = ()
    id_col: str = "id"
    text_col: str = "text"
    label_col: str = "label"
    id_col_required: bool = False  # True when the user named the id column explicitly
    # Longer labeled texts are quarantined as text_too_long. Longer unlabeled texts are cut to the limit and
    # scored (a consumer expects one prediction per document), counted in the summary as truncated_rows.
    max_text_chars: int = Field(100_000, ge=1)
    truncate_unlabeled: bool = True  # False: quarantine over-long unlabeled texts too
    batch_rows: int = Field(65_536, ge=1)
    max_rows_per_file: int = Field(1_000_000, ge=1)
    workers: int = Field(0, ge=0)  # threads normalising batches; 0: one per core, at most 4


class ValidationConfig(DatedConfig):
    """Which partition to validate, and the thresholds of its expectations (critical ones fail)."""

    kind: Kind
    date: str = Field(default_factory=_today)
    min_text_chars: int = 1
    max_text_chars: int = 100_000
    min_examples_per_class: int = 10
    min_classes: int = 2
    allowed_labels: tuple[str, ...] | None = None  # None: any label set
    max_class_imbalance: float = 10.0  # warning: largest class / smallest class
    max_short_text_share: float = 0.10  # warning: share of texts under `short_text_words`
    short_text_words: int = 3
    max_median_words: int = 2_000  # warning: median length looks like concatenated documents

    def thresholds(self) -> dict[str, Any]:
        """The expectation thresholds alone, as recorded in the validation results."""
        return self.model_dump(mode="json", exclude={"kind", "date"})


Optimizer = Literal["adam", "adamw", "rmsprop"]
Switch = Literal["auto", "on", "off"]


class TrainConfig(StageConfig):
    """Hyperparameters of one training run; ``None`` means "the architecture's default".

    Built from CLI options (``--model``, ``--epochs``, ``--seed``, ``--set KEY=VALUE``) or
    Airflow Params through ``with_overrides``.
    """

    model: str = "hashed_linear"
    epochs: int = Field(30, ge=1)  # upper bound: early stopping on the validation split ends most runs sooner
    # hashed_linear (the default): its candidates are fitted by a convex solver, chosen on validation
    # training-time budget of the candidate fits, as a deterministic work estimate (features included);
    # None: 20 s per 1,000 training documents, between 150 s and 540 s
    selection_budget_s: float | None = Field(None, gt=0)
    max_model_mb: float = Field(95.0, gt=0)  # candidates whose weights would exceed this are skipped
    seed: int = 0
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    optimizer: Optimizer | None = None
    max_tokens: int | None = Field(None, ge=1)  # vocabulary size (n-grams included)
    sequence_length: int | None = Field(None, ge=1)  # tokens per document for sequence models
    embedding_dim: int | None = Field(None, ge=1)
    units: int | None = Field(None, ge=1)  # hidden units (MLP, LSTM, convolution filters)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    ngrams: int | None = Field(None, ge=1)
    char_branch: Switch | None = None  # nb_tfidf: auto (short texts), on, off
    patience: int = Field(3, ge=0)  # epochs without improvement of `monitor` before stopping
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    min_steps_per_epoch: int = Field(50, ge=1)  # small datasets get smaller batches, so every epoch makes progress
    class_weight: Literal["balanced", "none"] = "balanced"
    test_percent: int = Field(10, ge=1, le=50)  # fixed across versions so the gate compares like with like
    validation_percent: int = Field(10, ge=1, le=50)
    max_attempts: int = Field(3, ge=1)  # retrain with another seed when a run collapses to one class
    mixed_precision: Switch = "auto"  # on GPUs

    def with_overrides(self, assignments: Sequence[str] = (), **values: Any) -> TrainConfig:
        """A copy with ``KEY=VALUE`` strings (typed by the field) and keyword values applied."""
        changes: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
            if key not in type(self).model_fields:
                raise UsageError(f"unknown setting {key!r}; known: {', '.join(sorted(type(self).model_fields))}")
            raw = raw.strip()
            optional = type(self).model_fields[key].default is None
            changes[key] = None if optional and raw.lower() in _NONE_WORDS else raw
        return self.replaced(**changes)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainConfig:
        """Rebuild the config a model version recorded in its ``config.json`` (unknown keys ignored)."""
        return cls.build(**{k: v for k, v in record.items() if k in cls.model_fields})


class EvaluateConfig(StageConfig):
    """Which model version to evaluate on the lake's current test split."""

    model_version: str
    explain_count: int = Field(8, ge=0)  # predictions explained (LIME) in the report
    linear_reference: bool = True  # fit a TF-IDF + linear classifier on the same split for comparison


class PromotionPolicy(StageConfig):
    """The promotion gate (docs/contracts.md, the gate)."""

    tolerance: float = Field(0.005, ge=0.0, le=1.0)  # a candidate may trail the champion's macro-F1 by this much
    min_accuracy: float = Field(0.70, ge=0.0, le=1.0)  # absolute floor on test accuracy, first model included
    require_reference: bool = False  # also refuse a candidate whose macro-F1 trails its linear reference's


class PromoteConfig(StageConfig):
    """Which version to put through the gate, under which policy."""

    model_version: str
    policy: PromotionPolicy = PromotionPolicy()
    force: bool = False  # promote even if the gate refuses; recorded as forced
    approved_by: str | None = None  # who approved the promotion (the Airflow approval step); recorded


class ScoreConfig(DatedConfig):
    """What to score and how."""

    date: str
    model_version: str | None = None  # None: the champion
    batch_rows: int = Field(4_096, ge=1)  # 8,192 ran 20% faster with the default model but peaked near 2 GB RSS
    rows_per_file: int = Field(1_000_000, ge=1)
    num_shards: int = Field(1, ge=1)
    shard: int | None = Field(None, ge=0)  # score only this shard (with score_shard); None: every shard
    top_k: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _shard_in_range(self) -> ScoreConfig:
        if self.shard is not None and self.shard >= self.num_shards:
            raise ValueError(f"shard must be between 0 and {self.num_shards - 1}, got {self.shard}")
        return self


class ReportConfig(DatedConfig):
    """Which run date's scoring report to write."""

    date: str


class VacuumConfig(StageConfig):
    """How long the tables keep the files of replaced snapshots (time travel works within it)."""

    # At least a day: a vacuum deletes uncommitted files older than this, so a shorter retention could take the
    # files of a sharded run that is still waiting to commit.
    retention_days: float = Field(7.0, ge=1.0)


class MigrateConfig(StageConfig):
    """Convert a lake written by textclf before the Delta tables (manifested partitions) into tables."""

    remove_manifests: bool = True  # the old _MANIFEST.json of each converted partition goes once it is committed
