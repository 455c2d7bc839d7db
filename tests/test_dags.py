"""The Airflow DAGs: integrity, parse-time hygiene, and end to end with ``dag.test()`` on local and S3 lakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.test_scoring import check_contract
from textclf.corpus import CorpusSpec, write_corpus
from textclf.storage import Lake

LOGICAL = "2026-11-03"  # a daily data interval starting on DATE (after the score DAG's start date)
DATE = "2026-11-02"
RETRAIN_CONF = {"model": "bow_mlp", "epochs": 4}


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata DB in the session's AIRFLOW_HOME (dag.test() needs its tables)."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    proc = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return os.environ["AIRFLOW_HOME"]


def load_dags(wait_seconds: float = 120) -> dict[str, Any]:
    """Parse the DAG folder; the scoring sensor gives up after ``wait_seconds`` (polling every second)."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEXTCLF_SCORE_WAIT_SECONDS", str(wait_seconds))
        mp.setenv("TEXTCLF_SCORE_POKE_SECONDS", "1")
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


@pytest.fixture(scope="module")
def dags(airflow_db: str) -> dict[str, Any]:
    return load_dags()


def land(lake: Lake, tmp: Path, *, labeled_rows: int = 1500, unlabeled_rows: int = 600, seed: int = 0) -> None:
    """Generated files in the landing prefix, the way an upstream system drops them."""
    labeled = tmp / f"labeled-{seed}.csv.gz"
    write_corpus(CorpusSpec(rows=labeled_rows, seed=seed, id_prefix=f"l{seed}-"), labeled)
    lake.upload(str(labeled), f"landing/labeled/{labeled.name}")
    unlabeled = tmp / f"unlabeled-{seed}.jsonl"
    write_corpus(CorpusSpec(rows=unlabeled_rows, labeled=False, seed=seed + 1, dirty_fraction=0.05,
                            id_prefix=f"u{seed}-"), unlabeled)
    lake.upload(str(unlabeled), f"landing/unlabeled/{unlabeled.name}")


def run(dag: Any, logical: str | None = None, **conf: Any) -> Any:
    import pendulum

    date = pendulum.parse(logical, tz="UTC") if logical else None
    return dag.test(logical_date=date, run_conf=conf or None)


def states(dag_run: Any) -> dict[str, str]:
    """Task id (with map index) -> final state."""
    out = {}
    for ti in dag_run.get_task_instances():
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        out[name] = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
    return out


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def pipeline(request: pytest.FixtureRequest, dags: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Lake, dict[str, Any]]]:
    """Ingest, retrain and score through the DAGs; the lake and each run's task states."""
    tmp = tmp_path_factory.mktemp("dags")
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "local":
            uri, lake = str(tmp / "lake"), Lake(str(tmp / "lake"))
        else:
            # Credentials reach the tasks through the Airflow Connection only, not through AWS_* variables.
            server: S3Server = request.getfixturevalue("s3_server")
            server.create_bucket(bucket := f"dags-{os.getpid()}")
            uri = f"s3://{bucket}/lake"
            for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                mp.delenv(key, raising=False)
            mp.setenv("AIRFLOW_CONN_TEXTCLF_S3", json.dumps({
                "conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
                "extra": {"endpoint_url": server.endpoint, "region_name": "us-east-1"}}))
            from textclf.storage import S3Options

            lake = Lake(uri, s3=S3Options(server.endpoint, ACCESS_KEY, SECRET_KEY))
        mp.setenv("AIRFLOW_VAR_TEXTCLF_LAKE", uri)
        land(lake, tmp)
        runs = {
            "ingest": run(dags["textclf_ingest"], LOGICAL),
            "retrain": run(dags["textclf_retrain"], **RETRAIN_CONF),
            "score": run(dags["textclf_score"], LOGICAL, shards=3),
        }
        yield lake, {name: {"state": str(r.state), "tasks": states(r)} for name, r in runs.items()}


def test_ingest_retrain_score_end_to_end(pipeline: tuple[Lake, dict[str, Any]]) -> None:
    lake, runs = pipeline
    assert {name: r["state"] for name, r in runs.items()} == {"ingest": "success", "retrain": "success",
                                                            "score": "success"}
    assert set(runs["ingest"]["tasks"].values()) == {"success"}
    assert runs["retrain"]["tasks"] == {"train": "success", "promote": "success", "publish_champion": "success"}
    assert {k for k in runs["score"]["tasks"] if k.startswith("score_shard")} == {
        "score_shard[0]", "score_shard[1]", "score_shard[2]"}
    for kind in ("labeled", "unlabeled"):
        manifest = lake.require_manifest(f"datasets/{kind}/ingest_date={DATE}")
        assert [s["uri"] for s in manifest["sources"]] == [lake.uri_of(k) for k in lake.list_files(f"landing/{kind}")]
        assert lake.require_manifest(f"validation/{kind}/ingest_date={DATE}")["success"] is True
    champion = lake.read_json("models/champion.json")
    assert champion["champion"]["version"].split("-")[1] == "bow_mlp"
    manifest, rows = check_contract(lake, DATE)
    assert manifest["num_shards"] == 3 and manifest["model_version"] == champion["champion"]["version"]
    assert manifest["quarantined_rows"] > 0 and len(rows) == manifest["rows"]
    assert lake.exists(f"reports/run_date={DATE}/report.html")
