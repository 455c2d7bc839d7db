"""What downstream engines see of a table: DuckDB ``delta_scan``, Polars and pandas (via ``deltalake``).

Used by the fault-injection tests to check that every engine reads exactly the committed snapshot's rows,
during and after a failed run. The DuckDB extensions are loaded from their PyPI packages (offline).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from textclf.lake.tables import Table


def _extension(module: Any, name: str) -> str:
    import duckdb

    return os.path.join(os.path.dirname(module.__file__), "extensions", f"v{duckdb.__version__}",
                        f"{name}.duckdb_extension")


def duckdb_connection(table: Table) -> Any:
    """A DuckDB connection with the delta extension (and, for an S3 lake, httpfs and a secret)."""
    import duckdb
    import duckdb_extension_delta
    import duckdb_extension_httpfs

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{_extension(duckdb_extension_delta, 'delta')}'")
    options = table.storage_options()
    if options:
        endpoint = options["AWS_ENDPOINT_URL"]
        con.execute(f"LOAD '{_extension(duckdb_extension_httpfs, 'httpfs')}'")
        con.execute(f"""CREATE SECRET lake (TYPE s3, KEY_ID '{options["AWS_ACCESS_KEY_ID"]}',
                        SECRET '{options["AWS_SECRET_ACCESS_KEY"]}', REGION '{options["AWS_REGION"]}',
                        ENDPOINT '{endpoint.split("://")[1]}', URL_STYLE 'path',
                        USE_SSL {str(endpoint.startswith("https")).lower()})""")
    return con


def reader_options(table: Table) -> dict[str, str] | None:
    """What a consumer passes to Polars and deltalake: the endpoint and credentials (AWS_* keys) only."""
    options = table.storage_options()
    return None if options is None else {k: v for k, v in options.items() if k.startswith("AWS_")}


def engine_views(table: Table, date: str) -> dict[str, tuple[int, int]]:
    """(rows, distinct ids) of a date as DuckDB, Polars and pandas read the table's latest snapshot."""
    import polars as pl
    from deltalake import DeltaTable

    day = dt.date.fromisoformat(date)
    con = duckdb_connection(table)
    try:
        duck = con.execute(f"SELECT count(*), count(DISTINCT {_id(table)}) FROM delta_scan('{table.uri}') "
                           f"WHERE {table.date_column} = DATE '{date}'").fetchone()
    finally:
        con.close()
    frame = (pl.scan_delta(table.uri, storage_options=reader_options(table))
             .filter(pl.col(table.date_column) == day).select(_id(table)).collect())
    df = DeltaTable(table.uri, storage_options=reader_options(table)).to_pandas(
        columns=[_id(table)], filters=[(table.date_column, "=", day)])
    assert duck is not None
    return {"duckdb": (int(duck[0]), int(duck[1])), "polars": (frame.height, frame[_id(table)].n_unique()),
            "pandas": (len(df), int(df[_id(table)].nunique()))}


def _id(table: Table) -> str:
    return "id" if table.key.startswith("quarantine") else "doc_id"


def assert_engines_read(table: Table, date: str, rows: int, unique: bool = True) -> None:
    """Every engine reads ``rows`` rows for the date (distinct ids, unless ``unique`` is False)."""
    views = engine_views(table, date)
    for engine, (n, distinct) in views.items():
        assert n == rows, f"{engine} read {n} rows of {date}, the summary counts {rows}: {views}"
        if unique:
            assert distinct == n, f"{engine} read duplicate ids for {date}: {views}"
