"""What the textclf DAGs need inside Airflow, defined once, and the command that applies it.

    python -m textclf_airflow.provision          # values from the environment (docker/airflow-init.sh)
    python -m textclf_airflow.provision --lake /data/lake --gpu-slots 2

The definition (:class:`Provision`):

- the pool ``gpu`` (``GPU_POOL``) with ``TEXTCLF_GPU_POOL_SLOTS`` slots (default 1): training and
  evaluation run in it, so no more of them hold a GPU at once than there are slots;
- the Variable ``textclf_lake`` (``LAKE_VARIABLE``) holding the lake URI, from ``TEXTCLF_LAKE``;
- when the lake is on S3 and keys are given, the Connection ``textclf_s3`` (or the id in
  ``TEXTCLF_S3_CONN_ID``) of type ``aws``: ``TEXTCLF_S3_ACCESS_KEY`` / ``TEXTCLF_S3_SECRET_KEY`` as
  login and password, ``TEXTCLF_S3_ENDPOINT`` and ``TEXTCLF_S3_REGION`` in extra. Stored in the metadata
  database, so the password is encrypted with the Fernet key and only this process sees it in its
  environment. Without keys the tasks fall back to the ``AWS_*`` variables;
- the lake itself: its bucket (S3) or directory (local) is created when missing;
- the settings the DAG files read when they are parsed (:data:`DAG_SETTINGS`, such as
  ``TEXTCLF_SCORE_START_DATE``). They are environment variables of the dag-processor and the workers,
  not database rows, so this command only checks the values it sees and reports them.

Applying is idempotent: each item is created, updated or left as it is, and the report says which.
Importing this module is cheap (no pandas, TensorFlow or Great Expectations; Airflow's ORM and boto3
are imported by :func:`apply`) and opens no connection.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from textclf_airflow import DEFAULT_S3_CONN_ID, GPU_POOL, LAKE_ENV, LAKE_VARIABLE, S3_CONN_ENV

log = logging.getLogger(__name__)

GPU_POOL_SLOTS_ENV = "TEXTCLF_GPU_POOL_SLOTS"
GPU_POOL_DESCRIPTION = "GPU slots: training and evaluation tasks (one per GPU)"
S3_ENDPOINT_ENV = "TEXTCLF_S3_ENDPOINT"
S3_ACCESS_KEY_ENV = "TEXTCLF_S3_ACCESS_KEY"
S3_SECRET_KEY_ENV = "TEXTCLF_S3_SECRET_KEY"
S3_REGION_ENV = "TEXTCLF_S3_REGION"


class ProvisionError(ValueError):
    """A value of the definition is malformed; the message names the variable and what to do."""


def _date(value: str) -> None:
    dt.date.fromisoformat(value)


def _seconds(value: str) -> None:
    if float(value) <= 0:
        raise ValueError("must be > 0")


def _boolean(value: str) -> None:
    if value.lower() not in ("1", "true", "0", "false", ""):
        raise ValueError("must be true or false")


#: Settings the DAG files read at parse time: name -> (what it does, check of a value).
DAG_SETTINGS: dict[str, tuple[str, Callable[[str], None]]] = {
    "TEXTCLF_SCORE_START_DATE": ("with TEXTCLF_SCORE_CATCHUP, the first day textclf_score catches up from "
                                 "(YYYY-MM-DD)", _date),
    "TEXTCLF_SCORE_CATCHUP": ("let textclf_score catch up from its start date when unpaused (default false)",
                              _boolean),
    "TEXTCLF_SCORE_POKE_SECONDS": ("how often the scoring sensor checks its inputs", _seconds),
    "TEXTCLF_SCORE_WAIT_SECONDS": ("how long the scoring sensor waits before it fails", _seconds),
    "TEXTCLF_RETRAIN_ON_NEW_DATA": ("also run textclf_retrain on every labeled_data event", _boolean),
    "TEXTCLF_RETRAIN_ON_DRIFT": ("also run textclf_retrain on every drift_alert event (default false)", _boolean),
    "TEXTCLF_RETRAIN_COOLDOWN_HOURS": ("no drift-triggered retraining within this many hours of the last "
                                       "training (default 24)", _seconds),
    "TEXTCLF_VACUUM_RETENTION_DAYS": ("how long textclf_score's vacuum keeps replaced table files (default 7)",
                                      _seconds),
    "TEXTCLF_APPROVAL_TIMEOUT_HOURS": ("how long the approval step waits for an answer (default 168)", _seconds),
}


@dataclass(frozen=True)
class S3Connection:
    """The Airflow Connection the tasks read the lake's endpoint and keys from."""

    conn_id: str
    access_key: str
    secret_key: str = field(repr=False)
    endpoint_url: str | None = None
    region: str | None = None

    @property
    def extra(self) -> dict[str, str]:
        return {k: v for k, v in (("endpoint_url", self.endpoint_url), ("region_name", self.region)) if v}


@dataclass(frozen=True)
class Provision:
    """Everything the DAGs expect to find in Airflow."""

    lake: str | None
    gpu_pool_slots: int = 1
    s3: S3Connection | None = None
    dag_settings: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, lake: str | None = None,
                     gpu_pool_slots: int | None = None) -> Provision:
        """The definition from environment variables; explicit arguments win. Raises ProvisionError."""
        env = os.environ if environ is None else environ
        lake = lake or env.get(LAKE_ENV) or None
        if gpu_pool_slots is None:
            raw = env.get(GPU_POOL_SLOTS_ENV) or "1"
            try:
                gpu_pool_slots = int(raw)
            except ValueError:
                raise ProvisionError(f"{GPU_POOL_SLOTS_ENV}={raw!r} is not a whole number") from None
        if gpu_pool_slots < 1:
            raise ProvisionError(f"{GPU_POOL_SLOTS_ENV} must be at least 1, got {gpu_pool_slots}")
        s3 = None
        if lake and lake.startswith("s3://"):
            if not urlparse(lake).netloc:
                raise ProvisionError(f"{LAKE_ENV}={lake!r} names no bucket: use s3://BUCKET/PREFIX")
            key, secret = env.get(S3_ACCESS_KEY_ENV), env.get(S3_SECRET_KEY_ENV)
            if bool(key) != bool(secret):
                raise ProvisionError(f"set both {S3_ACCESS_KEY_ENV} and {S3_SECRET_KEY_ENV}, or neither")
            if key and secret:
                s3 = S3Connection(conn_id=env.get(S3_CONN_ENV) or DEFAULT_S3_CONN_ID, access_key=key,
                                  secret_key=secret, endpoint_url=env.get(S3_ENDPOINT_ENV) or None,
                                  region=env.get(S3_REGION_ENV) or None)
        settings = {name: env[name] for name in DAG_SETTINGS if env.get(name)}
        for name, value in settings.items():
            try:
                DAG_SETTINGS[name][1](value)
            except ValueError as exc:
                raise ProvisionError(f"{name}={value!r}: {exc} ({DAG_SETTINGS[name][0]})") from None
        return cls(lake=lake, gpu_pool_slots=gpu_pool_slots, s3=s3, dag_settings=settings)

    def summary(self) -> dict[str, Any]:
        """What will be applied, without secrets."""
        return {
            "pool": {"name": GPU_POOL, "slots": self.gpu_pool_slots},
            "variable": {"key": LAKE_VARIABLE, "value": self.lake},
            "connection": None if self.s3 is None else {
                "conn_id": self.s3.conn_id, "conn_type": "aws", **self.s3.extra},
            "dag_settings": dict(self.dag_settings),
        }


def apply(definition: Provision, create_lake: bool = True) -> dict[str, str]:
    """Create or update the pool, Variable and Connection in the metadata DB; returns what happened to each."""
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    outcome: dict[str, str] = {}
    with create_session() as session:
        pool = session.scalar(select(Pool).where(Pool.pool == GPU_POOL))
        before = None if pool is None else (pool.slots, pool.description)
        Pool.create_or_update_pool(GPU_POOL, definition.gpu_pool_slots, GPU_POOL_DESCRIPTION, False,
                                   session=session)
        outcome[f"pool {GPU_POOL}"] = _change(before, (definition.gpu_pool_slots, GPU_POOL_DESCRIPTION))

        if definition.lake:
            stored = session.scalar(select(Variable).where(Variable.key == LAKE_VARIABLE))
            current = None if stored is None else stored.val
            if current != definition.lake:
                Variable.set(LAKE_VARIABLE, definition.lake, description="the textclf lake URI", session=session)
            outcome[f"variable {LAKE_VARIABLE}"] = _change(current, definition.lake)

        if definition.s3 is not None:
            s3 = definition.s3
            conn = session.scalar(select(Connection).where(Connection.conn_id == s3.conn_id))
            wanted = ("aws", s3.access_key, s3.secret_key, s3.extra)
            current_conn = None if conn is None else (conn.conn_type, conn.login, conn.password, conn.extra_dejson)
            if conn is None:
                conn = Connection(conn_id=s3.conn_id)
                session.add(conn)
            if current_conn != wanted:
                conn.conn_type, conn.login, conn.password = "aws", s3.access_key, s3.secret_key
                conn.extra = json.dumps(s3.extra)
                conn.description = "the textclf lake's S3 endpoint and keys"
            outcome[f"connection {s3.conn_id}"] = _change(current_conn, wanted)
    shadows = [f"AIRFLOW_VAR_{LAKE_VARIABLE.upper()}"] + ([f"AIRFLOW_CONN_{definition.s3.conn_id.upper()}"]
                                                          if definition.s3 else [])
    for name in shadows:
        if os.environ.get(name):
            log.warning("the environment variable %s takes precedence over what is stored here", name)
    if create_lake and definition.lake:
        outcome["lake"] = ensure_lake(definition)
    return outcome


def _change(before: Any, after: Any) -> str:
    return "created" if before is None else ("unchanged" if before == after else "updated")


def ensure_lake(definition: Provision) -> str:
    """Create the lake's bucket (S3) or directory (local) if it is missing."""
    uri = definition.lake or ""
    if not uri.startswith("s3://"):
        existed = os.path.isdir(uri)
        os.makedirs(uri, exist_ok=True)
        return "exists" if existed else "created"
    import boto3
    from botocore.exceptions import ClientError

    s3 = definition.s3
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint_url if s3 else None, region_name=s3.region if s3 else None,
        aws_access_key_id=s3.access_key if s3 else None, aws_secret_access_key=s3.secret_key if s3 else None)
    bucket = urlparse(uri).netloc
    try:
        client.head_bucket(Bucket=bucket)
        return "exists"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    client.create_bucket(Bucket=bucket)
    return "created"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textclf_airflow.provision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help=f"the lake URI (default: ${LAKE_ENV})")
    parser.add_argument("--gpu-slots", type=int,
                        help=f"slots of the {GPU_POOL} pool (default: ${GPU_POOL_SLOTS_ENV} or 1)")
    parser.add_argument("--no-create-lake", action="store_true", help="do not create a missing bucket or directory")
    parser.add_argument("--dry-run", action="store_true", help="print the definition, change nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="provision: %(message)s", stream=sys.stderr)
    try:
        definition = Provision.from_environ(lake=args.lake, gpu_pool_slots=args.gpu_slots)
    except ProvisionError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
    summary = definition.summary()
    if not definition.lake:
        log.warning("no lake given (--lake or %s): the Variable %s is left as it is", LAKE_ENV, LAKE_VARIABLE)
    elif definition.lake.startswith("s3://") and definition.s3 is None:
        log.warning("no S3 keys (%s, %s): the tasks will use the AWS_* environment variables",
                    S3_ACCESS_KEY_ENV, S3_SECRET_KEY_ENV)
    for name, value in definition.dag_settings.items():
        log.info("DAG setting %s=%s (%s)", name, value, DAG_SETTINGS[name][0])
    if not args.dry_run:
        summary["applied"] = apply(definition, create_lake=not args.no_create_lake)
        for item, what in summary["applied"].items():
            log.info("%s: %s", item, what)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
