"""Nightly scoring: one predictions partition per daily data interval, backfills by catchup.

``wait_for_inputs`` waits (rescheduling, so it holds no worker slot) until a champion model and
the day's ingested unlabeled data exist, logging what it waits for; after
``TEXTCLF_SCORE_WAIT_SECONDS`` (default 6 hours) it fails. The day's documents are then scored as
``shards`` independent mapped tasks, committed together in one Delta commit of the predictions table, and
the scoring report is written. The ``predictions`` Asset event carries the table URI, the date and
the table version. ``vacuum`` then removes table files replaced more than ``TEXTCLF_VACUUM_RETENTION_DAYS``
(default 7) days ago.
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, dag, get_current_context, task
from textclf_airflow import DEFAULT_ARGS, PREDICTIONS, announce, interval_date, open_lake

log = logging.getLogger(__name__)
WAIT_SECONDS = float(os.environ.get("TEXTCLF_SCORE_WAIT_SECONDS", 6 * 3600))
VACUUM_RETENTION_DAYS = float(os.environ.get("TEXTCLF_VACUUM_RETENTION_DAYS", 7))
POKE_SECONDS = float(os.environ.get("TEXTCLF_SCORE_POKE_SECONDS", 300))
# The first night catchup backfills; set it to the day the deployment starts scoring.
START_DATE = pendulum.parse(os.environ.get("TEXTCLF_SCORE_START_DATE", "2026-11-01"), tz="UTC")


@task.sensor(poke_interval=POKE_SECONDS, timeout=WAIT_SECONDS, mode="reschedule")
def wait_for_inputs() -> PokeReturnValue:
    """Ready when the model to score with and the day's unlabeled partition both exist."""
    from textclf.model.registry import champion_version
    from textclf.score.stage import missing_inputs

    context = get_current_context()
    params = context["params"]
    lake = open_lake()
    date = interval_date(context, params.get("run_date"))
    missing = missing_inputs(lake, date, params.get("model_version"))
    if missing:
        log.warning("waiting to score %s: %s", date, "; ".join(missing))
        return PokeReturnValue(is_done=False)
    # The version is fixed here, so a promotion during the run cannot mix models across shards.
    version = params.get("model_version") or champion_version(lake)
    return PokeReturnValue(is_done=True, xcom_value={"date": date, "model_version": version})


@task
def plan_shards(inputs: dict) -> list[dict]:
    """One spec per shard; documents are assigned to shards by a hash of their id."""
    shards = get_current_context()["params"]["shards"]
    return [{**inputs, "shard": i, "num_shards": shards} for i in range(shards)]


@task(map_index_template="{{ task.op_kwargs['spec']['shard'] }}")
def score_shard(spec: dict) -> dict:
    """Score one shard into its hidden shard partition."""
    from textclf.config import ScoreConfig
    from textclf.score.stage import score_shard

    config = ScoreConfig(date=spec["date"], model_version=spec["model_version"], num_shards=spec["num_shards"],
                         shard=spec["shard"])
    return score_shard(open_lake(), config).summary()


@task(outlets=[PREDICTIONS])
def commit(inputs: dict, shards: list[dict]) -> dict:
    """Commit all shards as the day's predictions, in one Delta commit."""
    from textclf.config import ScoreConfig
    from textclf.score.stage import commit_predictions

    config = ScoreConfig(date=inputs["date"], model_version=inputs["model_version"], num_shards=len(shards))
    summary = commit_predictions(open_lake(), config).summary()
    announce(get_current_context(), PREDICTIONS, uri=summary["predictions"], run_date=inputs["date"],
             table_version=summary["table_version"], model_version=summary["model_version"], rows=summary["rows"])
    return summary


@task
def report(inputs: dict) -> dict:
    """Write the scoring report (drift, class mix, confidence) next to the predictions."""
    from textclf.config import ReportConfig
    from textclf.score.stage import report

    written = report(open_lake(), ReportConfig(date=inputs["date"]))
    for warning in written.warnings:
        log.warning("scoring report for %s: %s", inputs["date"], warning)
    return written.summary()


@task
def vacuum() -> dict:
    """Delete table files replaced before the retention, so replaced snapshots do not pile up."""
    from textclf.config import VacuumConfig
    from textclf.lake.maintenance import vacuum

    return vacuum(open_lake(), VacuumConfig(retention_days=VACUUM_RETENTION_DAYS)).summary()


@dag(
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=True,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    params={
        "shards": Param(2, type="integer", minimum=1, maximum=256, description="mapped scoring tasks"),
        "run_date": Param(None, type=["null", "string"], format="date",
                          description="score this date instead of the data interval's"),
        "model_version": Param(None, type=["null", "string"], description="default: the champion"),
    },
    tags=["textclf"],
)
def textclf_score() -> None:
    inputs = wait_for_inputs()
    shards = score_shard.expand(spec=plan_shards(inputs))
    committed = commit(inputs, shards)
    committed >> report(inputs)
    committed >> vacuum()


textclf_score()
