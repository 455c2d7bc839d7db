"""The landing prefix: where new source files arrive before they are ingested.

``LAKE/landing/{labeled,unlabeled}/`` takes files of any supported format. A file counts as
ingested once a date of the dataset table lists it among its sources (in the date's summary), so
the ingestion DAG picks up exactly the files no other date has taken. Rerunning a date takes its
own files again (plus any new ones), because a rerun replaces that date whole.
"""

from __future__ import annotations

import logging

from textclf.config import parse_date
from textclf.lake import Lake
from textclf.lake.layout import landing_key
from textclf.lake.tables import dataset_table

log = logging.getLogger(__name__)


def is_hidden(key: str) -> bool:
    """Hidden and marker files or folders (``.part``, ``_SUCCESS``) are uploads in progress or bookkeeping."""
    return any(part.startswith((".", "_")) for part in key.split("/"))


def ingested_elsewhere(lake: Lake, kind: str, date: str) -> set[str]:
    """URIs of source files that the committed other dates of the dataset table were built from."""
    taken: set[str] = set()
    table = dataset_table(lake, kind)
    snapshot = table.snapshot()
    for other in snapshot.dates() if snapshot else []:
        if other != date:
            summary = table.summary(other, snapshot) or {}
            taken.update(s["uri"] for s in summary.get("sources", []))
    return taken


def find_landed(lake: Lake, kind: str, date: str) -> list[str]:
    """URIs of landed files of a kind that no other date has ingested, sorted."""
    date = parse_date(date)
    listed = lake.list_files(landing_key(kind))
    # Every other file is taken: one ingest cannot read is an error naming it, never a silent skip.
    keys = [k for k in listed if not is_hidden(k)]
    if len(keys) < len(listed):
        log.warning("ignoring %d hidden landed file(s): %s", len(listed) - len(keys),
                    ", ".join(k for k in listed if is_hidden(k))[:500])
    taken = ingested_elsewhere(lake, kind, date)
    uris = [lake.uri_of(k) for k in keys]
    new = [u for u in uris if u not in taken]
    log.info("%d %s file(s) landed, %d already ingested for other dates, %d to ingest for %s",
             len(uris), kind, len(uris) - len(new), len(new), date)
    return new
