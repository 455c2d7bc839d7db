"""Row accounting: a dataset date's counts add up, and its quarantine comes from the same ingest run."""

from __future__ import annotations

from typing import Any

from textclf.errors import StorageError
from textclf.lake import Lake
from textclf.lake.layout import dataset_key, quarantine_key
from textclf.lake.tables import quarantine_table


def check_accounting(lake: Lake, kind: str, date: str, manifest: dict[str, Any]) -> list[str]:
    """What does not add up between a dataset date and its quarantine; empty when all is well.

    ``manifest`` is the dataset date's summary (recorded with its Delta commit). Checks
    ``rows + quarantined_rows + duplicates_removed == input_rows`` in it, and that the quarantine table's
    date is the one written by the same ingest run with that many rows.
    """
    found = []
    counts = [c for k in ("rows", "quarantined_rows", "duplicates_removed", "input_rows")
              if isinstance(c := manifest.get(k), int)]
    if len(counts) < 4:
        found.append(f"the manifest of {lake.uri_of(dataset_key(kind, date))} lacks its row counts")
    elif counts[0] + counts[1] + counts[2] != counts[3]:
        found.append(f"{counts[0]} rows + {counts[1]} quarantined + {counts[2]} duplicates != {counts[3]} input rows")
    qtable = quarantine_table(lake, kind)
    qsnapshot = qtable.snapshot()
    rerun = f"rerun ingest for {kind} {date}"
    try:
        quarantine = qtable.summary(date, qsnapshot)
    except StorageError as exc:  # files without a summary: not written by an ingest
        return [*found, f"{exc}"]
    if quarantine is None:
        found.append(f"{lake.uri_of(quarantine_key(kind, date))} is not in the quarantine table; {rerun}")
    elif quarantine.get("ingest_run") != manifest.get("ingest_run"):
        found.append(f"{lake.uri_of(quarantine_key(kind, date))} was written by another ingest run than the dataset "
                     f"(ingest_run {quarantine.get('ingest_run')} != {manifest.get('ingest_run')}): an ingest "
                     f"stopped between its two commits; {rerun}")
    elif quarantine.get("rows") != manifest.get("quarantined_rows"):
        found.append(f"{lake.uri_of(quarantine_key(kind, date))} holds {quarantine.get('rows')} rows, the dataset "
                     f"summary says {manifest.get('quarantined_rows')} were quarantined; {rerun}")
    elif qsnapshot is not None and qsnapshot.rows(date) != quarantine.get("rows"):
        found.append(f"the Delta log of {lake.uri_of(quarantine_key(kind, date))} counts {qsnapshot.rows(date)} rows, "
                     f"its summary {quarantine.get('rows')}; {rerun}")
    return found


def accounting_entry(lake: Lake, kind: str, date: str, manifest: dict[str, Any], rows_read: int,
                     logged_rows: int | None = None) -> dict[str, Any]:
    """A result entry checking the date's row accounting and that its quarantine belongs to it.

    ``rows_read`` is what the data files hold, ``logged_rows`` what the Delta log's statistics count.
    """
    found = check_accounting(lake, kind, date, manifest)
    if manifest.get("rows") != rows_read:
        found.append(f"the summary lists {manifest.get('rows')} rows, the data files hold {rows_read}")
    if logged_rows is not None and logged_rows != rows_read:
        found.append(f"the Delta log of {lake.uri_of(dataset_key(kind, date))} counts {logged_rows} rows, "
                     f"the data files hold {rows_read}")
    return {
        "suite": f"{kind}_accounting", "expectation_type": "expect_partition_rows_to_add_up", "column": None,
        "kwargs": {}, "success": not found, "observed_value": {"problems": found},
        "severity": "critical", "description": None, "error": None,
    }
