"""Airflow glue for the textclf DAGs: configuration, retry rules and the shared Assets.

Importing this package is cheap (no pandas, pyarrow, TensorFlow or Great Expectations) and opens
no connection: the lake and its credentials are resolved when a task runs, never at parse time. It
installs :func:`textclf.tflog.install` in the process, so TensorFlow's C++ start-up lines never reach
a task log (one INFO line says which TensorFlow runs instead).

- The lake URI comes from the Airflow Variable ``textclf_lake`` or, failing that, the environment
  variable ``TEXTCLF_LAKE`` (a local directory or ``s3://bucket/prefix``).
- S3 credentials and the endpoint come from the Connection ``textclf_s3`` (type ``aws``: login is
  the access key, password the secret, ``endpoint_url`` and ``region_name`` in extra), or another
  id named by ``TEXTCLF_S3_CONN_ID``. Without that Connection, the standard ``AWS_*`` variables apply.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

from textclf import tflog
from textclf.errors import (
    ChecksumMismatchError,
    PartitionNotFoundError,
    StorageError,
    TextclfError,
    UnsafeKeyError,
)

if TYPE_CHECKING:
    from textclf.lake import Lake

log = logging.getLogger(__name__)

# Before any task imports TensorFlow: its C++ start-up lines would show as red ERROR lines in every task log.
tflog.install()

LAKE_VARIABLE = "textclf_lake"
LAKE_ENV = "TEXTCLF_LAKE"
S3_CONN_ENV = "TEXTCLF_S3_CONN_ID"
DEFAULT_S3_CONN_ID = "textclf_s3"
GPU_QUEUE = "gpu"
GPU_POOL = "gpu"

# Assets connect the DAGs; each event's extra carries the URI of the partition it announces.
LABELED_DATA = Asset("labeled_data")
UNLABELED_DATA = Asset("unlabeled_data")
CHAMPION_MODEL = Asset("champion_model")
PREDICTIONS = Asset("predictions")
# An alert-level drift signal in a scoring report; the extra carries the run date and the alerting signals.
DRIFT_ALERT = Asset("drift_alert")

# Storage and network trouble is usually transient: retry it with exponential backoff. A problem
# with the data, the model or the request will fail the same way again: fail at once.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception=[UnsafeKeyError, ChecksumMismatchError, PartitionNotFoundError],
                  action=RetryAction.FAIL, reason="the lake holds no such partition or a corrupt one: not retryable"),
        RetryRule(exception=[StorageError, ConnectionError, TimeoutError], action=RetryAction.RETRY,
                  reason="storage or network error: retrying with backoff"),
        RetryRule(exception=TextclfError, action=RetryAction.FAIL,
                  reason="bad data, model or settings: a retry would fail the same way"),
    ],
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "textclf",
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=10),
    "retry_policy": RETRY_POLICY,
}


def lake_uri() -> str:
    """The lake URI from the ``textclf_lake`` Variable or ``TEXTCLF_LAKE``; a clear error without either."""
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowFailException

    uri = Variable.get(LAKE_VARIABLE, default=None) or os.environ.get(LAKE_ENV)
    if not uri:
        raise AirflowFailException(
            f"no lake configured: set the Airflow Variable {LAKE_VARIABLE!r} (or the environment variable "
            f"{LAKE_ENV}) to a directory or an s3://bucket/prefix URI")
    return uri


def s3_options() -> Any:
    """``S3Options`` from the lake's Connection, or None to fall back to the ``AWS_*`` variables."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from textclf.lake import S3Options

    conn_id = os.environ.get(S3_CONN_ENV, DEFAULT_S3_CONN_ID)
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.info("no Connection %r: S3 settings come from the AWS_* environment variables", conn_id)
        return None
    extra = conn.extra_dejson
    endpoint = extra.get("endpoint_url") or (extra.get("service_config", {}).get("s3", {}).get("endpoint_url"))
    log.info("S3 settings from Connection %r (endpoint %s)", conn_id, endpoint or "AWS default")
    return S3Options(endpoint_url=endpoint, access_key=conn.login or extra.get("aws_access_key_id"),
                     secret_key=conn.password or extra.get("aws_secret_access_key"),
                     region=extra.get("region_name"))


def open_lake() -> Lake:
    """The configured lake, with credentials from its Connection."""
    from textclf.lake import Lake

    uri = lake_uri()
    return Lake(uri, s3=s3_options() if uri.startswith("s3://") else None)


def interval_date(context: Any, override: str | None = None) -> str:
    """The date a run works on: an explicit override, else the day its data interval starts."""
    from textclf.config import parse_date

    if override:
        return parse_date(override)
    start = context.get("data_interval_start") or context.get("logical_date")
    if start is None:
        return parse_date(None)
    return start.date().isoformat()


RETRAIN_ON_NEW_DATA_ENV = "TEXTCLF_RETRAIN_ON_NEW_DATA"
RETRAIN_ON_DRIFT_ENV = "TEXTCLF_RETRAIN_ON_DRIFT"
RETRAIN_COOLDOWN_ENV = "TEXTCLF_RETRAIN_COOLDOWN_HOURS"
DEFAULT_RETRAIN_COOLDOWN_HOURS = 24.0
#: Where the api-server serves lake files (reports, Data Docs) to logged-in users: plugins/textclf_airflow/plugin.py.
LAKE_URL_PREFIX = "/textclf/lake"
_DATE = r"\d{4}-\d{2}-\d{2}"
#: The lake keys it serves: reports, model cards, champion.json, validation results and Data Docs; nothing else.
SERVED = re.compile(
    r"^(models/champion\.json"
    r"|models/[A-Za-z0-9][A-Za-z0-9._-]*/(report\.html|model_card\.md|metrics\.json)"
    rf"|reports/run_date={_DATE}/report\.(html|json)"
    rf"|validation/(labeled|unlabeled)/ingest_date={_DATE}/(results\.json|profile\.(html|json)|data_docs/[^?#]+))$")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true")


def retrain_schedule() -> Any:
    """``textclf_retrain``'s schedule: None (manual), or the Assets its opt-in settings name, any of them."""
    assets = [a for a, env in ((LABELED_DATA, RETRAIN_ON_NEW_DATA_ENV), (DRIFT_ALERT, RETRAIN_ON_DRIFT_ENV))
              if _flag(env)]
    if not assets:
        return None
    return assets if len(assets) == 1 else assets[0] | assets[1]


def retrain_cooldown() -> dt.timedelta:
    return dt.timedelta(hours=float(os.environ.get(RETRAIN_COOLDOWN_ENV) or DEFAULT_RETRAIN_COOLDOWN_HOURS))


def last_training(lake: Lake) -> dt.datetime | None:
    """When the newest registered model version was trained (its id starts with that UTC time)."""
    from textclf.model.registry import list_versions

    versions = list_versions(lake)
    if not versions:
        return None
    try:
        return dt.datetime.strptime(versions[-1].split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def retrain_trigger(context: Any, lake: Lake, now: dt.datetime | None = None) -> dict[str, Any]:
    """Why a retrain run started; raises AirflowSkipException for a drift alert within the cooldown.

    Only a run started by ``drift_alert`` events alone is subject to the cooldown: a run by hand or on
    new labeled data always trains. The cooldown counts from the newest model version, however it was made.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    events = context.get("triggering_asset_events") or {}
    drift = list(events.get(DRIFT_ALERT, [])) if events else []
    labeled = list(events.get(LABELED_DATA, [])) if events else []
    if labeled or not drift:
        return {"reason": "new labeled data" if labeled else "triggered by hand", "drift": []}
    alerts = [dict(getattr(e, "extra", None) or {}) for e in drift]
    days = ", ".join(sorted({str(a.get("run_date")) for a in alerts}))
    cooldown = retrain_cooldown()
    last = last_training(lake)
    now = now or dt.datetime.now(dt.UTC)
    if last is not None and now - last < cooldown:
        raise AirflowSkipException(
            f"drift alert of {days} not acted on: the newest model was trained at {last.isoformat()}, within the "
            f"{cooldown.total_seconds() / 3600:g} h cooldown ({RETRAIN_COOLDOWN_ENV}); a drift alert after "
            f"{(last + cooldown).isoformat()} retrains")
    signals = sorted({s.get("name", "?") for a in alerts for s in a.get("signals", [])})
    log.info("retraining on the drift alert of %s (%s)", days, ", ".join(signals))
    return {"reason": f"drift alert of {days}: {', '.join(signals)}", "drift": alerts}


def lake_link(key: str) -> str:
    """A link to a lake file as the api-server serves it to logged-in users (absolute when api.base_url is set)."""
    from urllib.parse import quote

    try:
        from airflow.sdk.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:  # noqa: BLE001 - only for a nicer link
        base = ""
    return f"{base}{LAKE_URL_PREFIX}/{quote(key)}"


def announce(context: Any, asset: Asset, **extra: Any) -> None:
    """Attach the written partition's URI (and small facts about it) to the task's Asset event."""
    context["outlet_events"][asset].extra = extra
