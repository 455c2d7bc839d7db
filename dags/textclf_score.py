"""Nightly scoring: one predictions partition per daily data interval.

**What unpausing does:** the scheduler starts one run at each midnight (UTC) for the day that
ended, from the next midnight on. Unpausing never creates a run for a time already past: no
catchup, and not even yesterday's run (set ``TEXTCLF_SCORE_CATCHUP=true`` to have it catch up from
``TEXTCLF_SCORE_START_DATE``). A manual trigger scores the day named by ``run_date``, else the day
before its logical date. To score a range of past days, backfill explicitly: the trigger form's
**Backfill** option or ``airflow backfill create --dag-id textclf_score --from-date D1 --to-date D2``
creates the runs of the midnights D1..D2, which score the days D1-1..D2-1.

``wait_for_inputs`` waits (rescheduling, so it holds no worker slot) until a champion model and
the day's ingested unlabeled data exist, logging what it waits for; after
``TEXTCLF_SCORE_WAIT_SECONDS`` (default 6 hours) it fails. The day's documents are then scored as
``shards`` independent mapped tasks, committed together in one Delta commit of the predictions table, and
the scoring report is written. The ``predictions`` Asset event carries the table URI, the date and
the table version. When the report raises an alert-level drift signal, ``drift_alert`` emits the
``drift_alert`` Asset with the signals (``textclf_retrain`` can run on it, see its docs); otherwise it
is skipped. ``vacuum`` then removes table files replaced more than ``TEXTCLF_VACUUM_RETENTION_DAYS``
(default 7) days ago.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, PokeReturnValue, dag, get_current_context, task
from textclf_airflow import DEFAULT_ARGS, DRIFT_ALERT, PREDICTIONS, announce, interval_date, lake_link, open_lake

log = logging.getLogger(__name__)
WAIT_SECONDS = float(os.environ.get("TEXTCLF_SCORE_WAIT_SECONDS", 6 * 3600))
VACUUM_RETENTION_DAYS = float(os.environ.get("TEXTCLF_VACUUM_RETENTION_DAYS", 7))
POKE_SECONDS = float(os.environ.get("TEXTCLF_SCORE_POKE_SECONDS", 300))
# With catchup on, the first day it catches up from; set it to the day the deployment starts scoring.
START_DATE = pendulum.parse(os.environ.get("TEXTCLF_SCORE_START_DATE", "2026-11-01"), tz="UTC")
# Off: unpausing schedules tonight's run only. Past days are backfilled explicitly (docs/airflow.md).
CATCHUP = os.environ.get("TEXTCLF_SCORE_CATCHUP", "").strip().lower() in ("1", "true")


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
    log.info("scoring report: %s", lake_link(f"reports/run_date={inputs['date']}/report.html"))
    alerts = [s for s in written.content.get("signals", []) if s.get("status") == "alert"]
    return {**written.summary(), "alerts": alerts}


@task(outlets=[DRIFT_ALERT])
def drift_alert(reported: dict) -> dict:
    """Emit the ``drift_alert`` Asset when the report raised an alert; skipped otherwise."""
    from airflow.sdk.exceptions import AirflowSkipException

    alerts = reported.get("alerts") or []
    if not alerts:
        raise AirflowSkipException(f"no alert-level drift signal in the report of {reported['run_date']}")
    signals = [{k: s.get(k) for k in ("name", "value", "baseline", "threshold", "status", "message")} for s in alerts]
    for s in signals:
        log.warning("drift alert for %s: %s", reported["run_date"], s["message"])
    announce(get_current_context(), DRIFT_ALERT, run_date=reported["run_date"], report=reported["report"],
             signals=signals)
    return {"run_date": reported["run_date"], "signals": signals}


@task
def vacuum() -> dict:
    """Delete table files replaced before the retention, so replaced snapshots do not pile up."""
    from textclf.config import VacuumConfig
    from textclf.lake.maintenance import vacuum

    return vacuum(open_lake(), VacuumConfig(retention_days=VACUUM_RETENTION_DAYS)).summary()


@dag(
    doc_md=__doc__,
    # A run at midnight covers the day that ended ([D, D+1) for the run at D+1 00:00). Without catchup there is
    # no start date and run_immediately is 0: unpausing schedules the next midnight's run, never a past one
    # (with a start date, or within 2.4 h of midnight by default, Airflow would schedule the last midnight's).
    schedule=CronTriggerTimetable("0 0 * * *", timezone="UTC", interval=dt.timedelta(days=1),
                                  run_immediately=dt.timedelta(0)),
    description="nightly scoring, no catchup: unpausing schedules tonight's run only; backfill past days",
    start_date=START_DATE if CATCHUP else None,
    catchup=CATCHUP,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    params={
        "shards": Param(2, type="integer", minimum=1, maximum=256, description="mapped scoring tasks"),
        "run_date": Param(None, type=["null", "string"], format="date",
                          description="the day to score (empty: the day before the run's logical date). "
                                      "Unpausing starts no runs for past days: backfill them instead"),
        "model_version": Param(None, type=["null", "string"], description="default: the champion"),
    },
    tags=["textclf"],
)
def textclf_score() -> None:
    inputs = wait_for_inputs()
    shards = score_shard.expand(spec=plan_shards(inputs))
    committed = commit(inputs, shards)
    reported = report(inputs)
    committed >> reported
    drift_alert(reported)
    committed >> vacuum()


textclf_score()
