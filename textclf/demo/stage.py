"""The demo: generate the project's own corpus, land it in the lake, run the pipeline's stages."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from textclf.config import DatedConfig, IngestConfig, ValidationConfig, parse_date
from textclf.lake import Lake
from textclf.lake.layout import landing_key
from textclf.progress import NoProgress, Progress

log = logging.getLogger(__name__)


class DemoConfig(DatedConfig):
    """Which day the demo runs and how much it generates."""

    date: str = Field(default_factory=lambda: parse_date(None))
    labeled_rows: int = Field(6_000, ge=100)
    unlabeled_rows: int = Field(2_000, ge=1)
    seed: int = 0
    dirty_fraction: float = Field(0.02, ge=0.0, lt=1.0)  # malformed rows mixed in, to show the quarantine at work


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced, stage by stage (each stage's own summary)."""

    lake: str
    date: str
    stages: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"lake": self.lake, "date": self.date, **self.stages}


def land_demo_corpus(lake: Lake, config: DemoConfig) -> dict[str, str]:
    """Generate labeled (CSV, gzip) and unlabeled (JSON Lines, zstd) files into ``landing/``."""
    from textclf.demo.corpus import CorpusSpec, write_corpus

    specs = {
        "labeled": (CorpusSpec(rows=config.labeled_rows, labeled=True, seed=config.seed,
                               dirty_fraction=config.dirty_fraction), "csv.gz"),
        "unlabeled": (CorpusSpec(rows=config.unlabeled_rows, labeled=False, seed=config.seed + 1,
                                 dirty_fraction=config.dirty_fraction, id_offset=10_000_000), "jsonl.zst"),
    }
    landed = {}
    with tempfile.TemporaryDirectory(prefix="textclf-demo-") as tmp:
        for kind, (spec, ext) in specs.items():
            local = Path(tmp) / f"demo-{kind}-{config.date}.{ext}"
            write_corpus(spec, local)
            landed[kind] = lake.upload(str(local), f"{landing_key(kind)}/{local.name}")
            log.info("landed %d %s rows at %s", spec.rows, kind, landed[kind])
    return landed


def run_demo(lake: Lake, config: DemoConfig, progress: Progress | None = None) -> DemoResult:
    """Land the demo corpus, ingest and validate both kinds, train, evaluate, promote and score the day."""
    from textclf.config import EvaluateConfig, PromoteConfig, ScoreConfig, TrainConfig
    from textclf.evaluate.stage import evaluate
    from textclf.ingest.stage import ingest
    from textclf.model.train import train
    from textclf.promote.stage import promote
    from textclf.score.stage import score
    from textclf.validate.stage import validate

    progress = progress or NoProgress()
    landed = land_demo_corpus(lake, config)
    stages: dict[str, Any] = {}
    for kind in ("labeled", "unlabeled"):
        ingested = ingest(lake, IngestConfig(kind=kind, date=config.date, sources=(landed[kind],)), progress)
        validated = validate(lake, ValidationConfig(kind=kind, date=config.date), progress)
        stages[kind] = {"landed": landed[kind], **ingested.summary(), "validation": validated.summary()}
    trained = train(lake, TrainConfig(seed=config.seed), progress)
    evaluated = evaluate(lake, EvaluateConfig(model_version=trained.version), progress)
    promoted = promote(lake, PromoteConfig(model_version=trained.version))
    stages["model"] = {**trained.summary(), **evaluated.summary(), "promotion": promoted.summary()}
    stages["scoring"] = score(lake, ScoreConfig(date=config.date), progress).summary()
    return DemoResult(lake.uri, config.date, stages)
