"""Airflow glue for the textclf DAGs: configuration, retry rules and the shared Assets.

Importing this package is cheap (no pandas, pyarrow, TensorFlow or Great Expectations) and opens
no connection: the lake and its credentials are resolved when a task runs, never at parse time.

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
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

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


def announce(context: Any, asset: Asset, **extra: Any) -> None:
    """Attach the written partition's URI (and small facts about it) to the task's Asset event."""
    context["outlet_events"][asset].extra = extra
