"""Ingest and validate the files landed in ``LAKE/landing/{labeled,unlabeled}/``.

Each kind is ingested into the dataset partition of the run's date (the day its data interval
starts, or the ``ingest_date`` param), validated with the Great Expectations suites, and announced
as the ``labeled_data`` / ``unlabeled_data`` Asset. A kind with no new files is skipped. A failed
critical expectation fails the run; the task log names each failed expectation and the Data Docs.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from textclf_airflow import DEFAULT_ARGS, LABELED_DATA, UNLABELED_DATA, announce, interval_date, open_lake

ASSETS = {"labeled": LABELED_DATA, "unlabeled": UNLABELED_DATA}


@task
def find_landed(kind: str) -> dict:
    """New files of one kind in the landing prefix; skips the kind's branch when there are none."""
    from airflow.sdk.exceptions import AirflowSkipException

    from textclf.ingest.landing import find_landed
    from textclf.lake.layout import landing_key

    context = get_current_context()
    lake = open_lake()
    date = interval_date(context, context["params"].get("ingest_date"))
    files = find_landed(lake, kind, date)
    if not files:
        raise AirflowSkipException(f"no new {kind} files in {lake.uri_of(landing_key(kind))}")
    return {"kind": kind, "date": date, "files": files}


@task
def ingest(landed: dict) -> dict:
    """Ingest the landed files into ``datasets/{kind}/ingest_date=D`` (replacing it whole)."""
    from textclf.config import IngestConfig
    from textclf.ingest.stage import ingest

    config = IngestConfig(kind=landed["kind"], date=landed["date"], sources=tuple(landed["files"]))
    return {**landed, **ingest(open_lake(), config).summary()}


@task
def validate(ingested: dict) -> dict:
    """Run the expectation suites on the partition; announce it when the critical suite passes."""
    from textclf.config import ValidationConfig
    from textclf.validate.stage import validate

    summary = validate(open_lake(), ValidationConfig(kind=ingested["kind"], date=ingested["date"])).summary()
    announce(get_current_context(), ASSETS[ingested["kind"]], uri=ingested["dataset"], date=ingested["date"],
             rows=ingested["rows"], data_docs=summary.get("data_docs"))
    return summary


@dag(
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={"ingest_date": Param(None, type=["null", "string"], format="date",
                                 description="ingest into this date instead of the data interval's")},
    tags=["textclf"],
)
def textclf_ingest() -> None:
    for kind, asset in ASSETS.items():
        landed = find_landed.override(task_id=f"find_{kind}")(kind)
        ingested = ingest.override(task_id=f"ingest_{kind}")(landed)
        validate.override(task_id=f"validate_{kind}", outlets=[asset])(ingested)


textclf_ingest()
