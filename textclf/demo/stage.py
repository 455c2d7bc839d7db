"""The demo: generate the project's own corpus, land it in the lake, run the pipeline's stages."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.config import IngestConfig, ValidationConfig
from textclf.lake import Lake
from textclf.lake.layout import landing_key
from textclf.progress import NoProgress, Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo writes and how much it generates."""

    lake: str
    date: str
    labeled_rows: int = 6_000
    unlabeled_rows: int = 2_000
    seed: int = 0
    dirty_fraction: float = 0.02  # malformed rows mixed in, to show the quarantine at work


def land_demo_corpus(config: DemoConfig, lake: Lake) -> dict[str, str]:
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


def run_demo(config: DemoConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Land the demo corpus, ingest and validate both kinds for ``config.date``, train, promote, score."""
    from textclf.config import TrainConfig
    from textclf.ingest.stage import ingest
    from textclf.model.train import train
    from textclf.promote.stage import promote
    from textclf.score.stage import ScoreConfig, score
    from textclf.validate.stage import validate

    progress = progress or NoProgress()
    lake = Lake(config.lake)
    landed = land_demo_corpus(config, lake)
    summary: dict[str, Any] = {"lake": lake.uri, "date": config.date}
    for kind in ("labeled", "unlabeled"):
        ingested = ingest(lake, [landed[kind]], IngestConfig(kind=kind, date=config.date), progress)
        report = validate(lake, kind, config.date, ValidationConfig(), progress)
        summary[kind] = {"landed": landed[kind], **ingested.summary(), "validation": report.summary()}
    trained = train(config.lake, TrainConfig(seed=config.seed), progress, lake=lake)
    summary["model"] = {**trained.summary(), "promotion": promote(config.lake, trained.version, lake=lake)}
    summary["scoring"] = score(config.lake, ScoreConfig(date=config.date), progress, lake=lake).summary()
    return summary
