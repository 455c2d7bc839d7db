"""The Airflow DAGs: integrity, parse-time hygiene, and end to end with ``dag.test()`` on local and S3 lakes."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.test_scoring import check_contract
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.lake import Lake
from textclf.lake.tables import dataset_table, predictions_table

pytestmark = pytest.mark.dags

LOGICAL = "2026-11-03"  # a daily data interval starting on DATE (after the score DAG's start date)
DATE = "2026-11-02"
# Epochs of 10 steps rather than 50: the runs test the orchestration, and the model still clears the 0.70 floor.
RETRAIN_CONF = {"model": "bow_mlp", "epochs": 4, "settings": ["min_steps_per_epoch=10"]}


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata DB in the session's AIRFLOW_HOME (dag.test() needs its tables).

    Migrated in process, as ``airflow db migrate`` does: the dags tier starts no process.
    """
    from airflow.utils import db

    db.upgradedb()
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


def land(lake: Lake, tmp: Path, *, labeled_rows: int = 1000, unlabeled_rows: int = 300, seed: int = 0) -> None:
    """Generated files in the landing prefix, the way an upstream system drops them."""
    labeled = tmp / f"labeled-{seed}.csv.gz"
    write_corpus(CorpusSpec(rows=labeled_rows, seed=seed, id_prefix=f"l{seed}-"), labeled)
    lake.upload(str(labeled), f"landing/labeled/{labeled.name}")
    unlabeled = tmp / f"unlabeled-{seed}.jsonl"
    write_corpus(CorpusSpec(rows=unlabeled_rows, labeled=False, seed=seed + 1, dirty_fraction=0.05,
                            id_prefix=f"u{seed}-"), unlabeled)
    lake.upload(str(unlabeled), f"landing/unlabeled/{unlabeled.name}")


def run(dag_id: str, logical: str | None = None, wait_seconds: float = 120, **conf: Any) -> Any:
    """``dag.test()`` on a freshly parsed DAG: a run's conf would otherwise stay in a shared DAG's params."""
    import pendulum

    date = pendulum.parse(logical, tz="UTC") if logical else None
    return load_dags(wait_seconds)[dag_id].test(logical_date=date, run_conf=conf or None)


def state_of(ti: Any) -> str:
    return str(getattr(ti.state, "value", ti.state))


def states(dag_run: Any) -> dict[str, str]:
    """Task id (with map index) -> final state."""
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": state_of(ti)
            for ti in dag_run.get_task_instances()}


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def pipeline(request: pytest.FixtureRequest, airflow_db: str, tmp_path_factory: pytest.TempPathFactory
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
            from textclf.lake import S3Options

            lake = Lake(uri, s3=S3Options(server.endpoint, ACCESS_KEY, SECRET_KEY))
        mp.setenv("AIRFLOW_VAR_TEXTCLF_LAKE", uri)
        land(lake, tmp)
        runs = {
            "ingest": run("textclf_ingest", LOGICAL),
            "retrain": run("textclf_retrain", **RETRAIN_CONF),
            "score": run("textclf_score", LOGICAL, shards=3),
        }
        yield lake, {name: {"state": str(r.state), "tasks": states(r)} for name, r in runs.items()}


def test_ingest_retrain_score_end_to_end(pipeline: tuple[Lake, dict[str, Any]]) -> None:
    lake, runs = pipeline
    assert {name: r["state"] for name, r in runs.items()} == {"ingest": "success", "retrain": "success",
                                                            "score": "success"}
    assert set(runs["ingest"]["tasks"].values()) == {"success"}
    assert runs["retrain"]["tasks"] == {"cooldown": "success", "train": "success", "evaluate": "success",
                                        "gate": "success", "approve": "success", "promote": "success",
                                        "publish_champion": "success"}
    assert {k for k in runs["score"]["tasks"] if k.startswith("score_shard")} == {
        "score_shard[0]", "score_shard[1]", "score_shard[2]"}
    for kind in ("labeled", "unlabeled"):
        manifest = dataset_table(lake, kind).require_summary(DATE)
        assert [s["uri"] for s in manifest["sources"]] == [lake.uri_of(k) for k in lake.list_files(f"landing/{kind}")]
        assert lake.require_manifest(f"validation/{kind}/ingest_date={DATE}")["success"] is True
    champion = lake.read_json("models/champion.json")
    assert champion["champion"]["version"].split("-")[1] == "bow_mlp"
    manifest, rows = check_contract(lake, DATE)
    assert manifest["num_shards"] == 3 and manifest["model_version"] == champion["champion"]["version"]
    assert manifest["quarantined_rows"] > 0 and len(rows) == manifest["rows"]
    assert lake.exists(f"reports/run_date={DATE}/report.html")
    assert runs["score"]["tasks"]["vacuum"] == "success"


def asset_events(name: str) -> list[dict[str, Any]]:
    """Extras of the events recorded for an Asset, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.name == name).order_by(AssetEvent.id)).all()
    return [dict(r[0] or {}) for r in rows]


def test_asset_events_carry_the_partition_uris(pipeline: tuple[Lake, dict[str, Any]]) -> None:
    lake, _ = pipeline
    predictions = predictions_table(lake).require_summary(DATE)
    event = asset_events("predictions")[-1]  # the table, the date and the version committed
    assert (event["uri"], event["run_date"]) == (lake.uri_of("predictions"), DATE)
    assert event["table_version"] == predictions["table_version"] and event["rows"] == predictions["rows"]
    assert asset_events("labeled_data")[-1]["uri"] == lake.uri_of(f"datasets/labeled/ingest_date={DATE}")
    assert asset_events("unlabeled_data")[-1]["rows"] == dataset_table(lake, "unlabeled").require_summary(DATE)["rows"]
    champion = lake.read_json("models/champion.json")["champion"]["version"]
    assert asset_events("champion_model")[-1]["model_version"] == champion


def test_a_refused_promotion_fails_the_gate_task_with_its_reasons(pipeline: tuple[Lake, dict[str, Any]],
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """The refusal is recorded, and the run says so where an operator looks: a failed gate task, no retries."""
    lake, _ = pipeline
    champion = lake.read_json("models/champion.json")["champion"]["version"]
    events = len(asset_events("champion_model"))
    dag_run = run("textclf_retrain", **RETRAIN_CONF, seed=1, min_accuracy=0.999)
    assert str(dag_run.state) == "failed"
    assert states(dag_run) == {"cooldown": "success", "train": "success", "evaluate": "success", "gate": "failed",
                               "approve": "upstream_failed", "promote": "upstream_failed",
                               "publish_champion": "upstream_failed"}
    gate = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "gate")
    assert gate.try_number == 1  # retries=3, yet a refusal is not retried
    state = lake.read_json("models/champion.json")
    assert state["champion"]["version"] == champion  # the gate kept the champion
    last = state["history"][-1]
    assert last["decision"] == "refused" and any("0.999" in r for r in last["reasons"])
    assert len(asset_events("champion_model")) == events  # no event for a refusal
    out = caplog.text + "".join(capfd.readouterr())  # dag.test() runs the tasks here, logging to this process
    assert re.search(r"promotion refused for \S+: accuracy [0-9.]+ < floor 0\.9990", out), out[-3000:]


def test_an_alert_level_drift_emits_the_drift_alert_asset(pipeline: tuple[Lake, dict[str, Any]],
                                                           tmp_path: Path) -> None:
    """A day whose documents all come from one class: the class-mix PSI alerts, and the Asset carries it."""
    from tests.conftest import write_csv
    from textclf.config import IngestConfig
    from textclf.demo.corpus import generate_rows
    from textclf.ingest.stage import ingest

    lake, runs = pipeline
    assert runs["score"]["tasks"]["drift_alert"] == "skipped"  # the demo day drifts nowhere
    day, logical = "2026-11-05", "2026-11-06"
    rows = [r for chunk in generate_rows(CorpusSpec(rows=4000, seed=9, id_prefix="skew-")) for r in chunk]
    label = rows[0]["label"]
    skewed = [(r["id"], r["text"]) for r in rows if r["label"] == label][:400]
    source = write_csv(tmp_path / "skewed.csv", skewed, ("id", "text"))
    ingest(lake, IngestConfig(kind="unlabeled", date=day, sources=(str(source),)))
    events = len(asset_events("drift_alert"))
    dag_run = run("textclf_score", logical, shards=1)
    assert str(dag_run.state) == "success" and states(dag_run)["drift_alert"] == "success"
    alerts = asset_events("drift_alert")
    assert len(alerts) == events + 1
    assert alerts[-1]["run_date"] == day and alerts[-1]["report"].endswith(f"run_date={day}/report.html")
    mix = {s["name"]: s for s in alerts[-1]["signals"]}["predicted_class_mix_psi"]
    assert mix["status"] == "alert" and mix["value"] > 0.25 and "PSI" in mix["message"]
    assert {s["status"] for s in alerts[-1]["signals"]} == {"alert"}  # only alert-level signals are carried


def test_rerunning_a_scoring_interval_replaces_its_partition(pipeline: tuple[Lake, dict[str, Any]]) -> None:
    lake, _ = pipeline
    before = predictions_table(lake).require_summary(DATE)
    dag_run = run("textclf_score", LOGICAL, shards=2)
    assert str(dag_run.state) == "success"
    manifest, rows = check_contract(lake, DATE)
    assert manifest["num_shards"] == 2 and manifest["table_version"] > before["table_version"]
    assert manifest["rows"] == before["rows"] and len(rows) == before["rows"]
    assert not {f["path"] for f in before["files"]} & {f["path"] for f in manifest["files"]}  # all replaced
    # the vacuum keeps the replaced snapshot for its retention: it can still be read as it was
    old = predictions_table(lake).delta(before["table_version"])
    assert old is not None and old.to_pyarrow_table().num_rows >= before["rows"]


def test_a_failed_validation_fails_the_run_without_retries(airflow_db: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import write_csv

    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setenv("AIRFLOW_VAR_TEXTCLF_LAKE", lake.uri)
    rows = [(f"d{i}", f"an ordinary support message number {i} about billing", "billing") for i in range(40)]
    rows += [(f"r{i}", f"please refund order {i}", "refund") for i in range(3)]  # below the class minimum
    lake.upload(str(write_csv(tmp_path / "few.csv", rows)), "landing/labeled/few.csv")
    dag_run = run("textclf_ingest", LOGICAL)
    assert str(dag_run.state) == "failed"
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    failed = tis["validate_labeled"]
    assert state_of(failed) == "failed" and failed.try_number == 1  # retries=3, yet no retry
    assert state_of(tis["find_unlabeled"]) == "skipped"  # nothing landed for that kind
    results = lake.read_json(f"validation/labeled/ingest_date={DATE}/results.json")
    assert results["success"] is False and results["failures"] == ["min examples per class (10): 'refund' has 3"]
    assert lake.exists(f"validation/labeled/ingest_date={DATE}/data_docs/index.html")


def test_scoring_without_a_champion_fails_clearly(airflow_db: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setenv("AIRFLOW_VAR_TEXTCLF_LAKE", lake.uri)
    dag_run = run("textclf_score", LOGICAL, wait_seconds=2)
    assert str(dag_run.state) == "failed"
    tis = states(dag_run)
    assert tis["wait_for_inputs"] == "failed" and "commit" not in tis.values()
    assert predictions_table(lake).snapshot() is None


def test_missing_inputs_says_what_is_missing(tmp_path: Path) -> None:
    from textclf.score.stage import missing_inputs

    lake = Lake(str(tmp_path / "lake"))
    missing = missing_inputs(lake, DATE)
    assert len(missing) == 2
    assert missing[0].startswith("no champion model yet in ") and "textclf_retrain" in missing[0]
    assert missing[1].startswith(f"no unlabeled data ingested for {DATE} at ")
    absent = "20260101T000000Z-nb_tfidf-abcdef"
    assert missing_inputs(lake, DATE, absent)[0].startswith(f"model version {absent} not found in ")


# -- integrity: parsing, task graphs, params, retry rules ---------------------------------------------

PARSE_PROBE = """
import json, socket, sqlite3, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Connection, Variable

opened = []
real_connect, real_sqlite = socket.socket.connect, sqlite3.connect
def record(kind, real):
    def wrapper(*args, **kwargs):
        opened.append(kind)
        return real(*args, **kwargs)
    return wrapper
socket.socket.connect = record("socket", real_connect)
sqlite3.connect = record("sqlite", real_sqlite)
Connection.get = record("airflow connection", Connection.get)
Variable.get = record("airflow variable", Variable.get)
before = set(sys.modules)
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
total = time.perf_counter() - started
loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before})
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
                  "opened": opened, "loaded": loaded, "seconds": total,
                  "files": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats}}))
"""


@pytest.mark.integration
def test_parsing_the_dags_is_light_and_opens_nothing(airflow_db: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(ROOT / "dags")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["errors"] == {}
    assert probe["dags"] == ["textclf_ingest", "textclf_retrain", "textclf_score"]
    assert probe["opened"] == []  # no socket, no database, no Connection or Variable lookup
    assert not {"tensorflow", "keras", "great_expectations", "pandas", "pyarrow", "sklearn"} & set(probe["loaded"])
    print("DAG parse seconds:", probe["files"])


def test_ingest_graph(dags: dict[str, Any]) -> None:
    dag = dags["textclf_ingest"]
    for kind in ("labeled", "unlabeled"):
        assert dag.get_task(f"find_{kind}").downstream_task_ids == {f"ingest_{kind}"}
        assert dag.get_task(f"ingest_{kind}").downstream_task_ids == {f"validate_{kind}"}
        assert [a.name for a in dag.get_task(f"validate_{kind}").outlets] == [f"{kind}_data"]
    assert len(dag.tasks) == 6 and not dag.catchup


def test_retrain_graph_routes_training_to_the_gpu_queue(dags: dict[str, Any]) -> None:
    dag = dags["textclf_retrain"]
    train, evaluate, gate, approve, promote, publish = (
        dag.get_task(t) for t in ("train", "evaluate", "gate", "approve", "promote", "publish_champion"))
    assert (train.queue, train.pool) == ("gpu", "gpu")
    assert evaluate.queue == gate.queue == promote.queue == publish.queue == "default"
    assert dag.get_task("cooldown").downstream_task_ids == {"train"}
    assert train.downstream_task_ids == {"evaluate"} and evaluate.downstream_task_ids == {"gate"}
    assert gate.downstream_task_ids == {"approve", "promote"} and approve.downstream_task_ids == {"promote"}
    assert type(approve).__name__ == "PromotionApproval" and approve.options == ["Approve", "Reject"]
    assert approve.retries == 0 and set(approve.params) >= {"reason"}
    assert promote.downstream_task_ids == {"publish_champion"}
    assert [a.name for a in publish.outlets] == ["champion_model"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual unless an opt-in Asset schedule is set
    assert set(dag.params) == {"model", "epochs", "seed", "settings", "require_approval", "force_promote",
                               "tolerance", "min_accuracy"}
    assert dag.params["require_approval"] is False


def test_score_graph_maps_shards_and_never_catches_up_by_itself(dags: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    dag = dags["textclf_score"]
    assert dag.catchup is False and type(dag.timetable).__name__ == "CronTriggerTimetable"
    # unpausing schedules nothing in the past, not even last midnight's run: no start date, no grace period
    assert dag.start_date is None and dag.timetable.run_immediately == dt.timedelta(0)
    assert "backfill" in dag.description and "backfill" in dag.params.get_param("run_date").description.lower()
    monkeypatch.setenv("TEXTCLF_SCORE_CATCHUP", "true")
    caught_up = load_dags()["textclf_score"]
    assert caught_up.catchup is True and caught_up.start_date.date().isoformat() == "2026-11-01"  # the opt-in
    assert dag.get_task("report").downstream_task_ids == {"drift_alert"}
    assert [a.name for a in dag.get_task("drift_alert").outlets] == ["drift_alert"]
    sensor = dag.get_task("wait_for_inputs")
    assert sensor.mode == "reschedule"
    assert sensor.downstream_task_ids == {"plan_shards", "commit", "report"}
    assert dag.get_task("plan_shards").downstream_task_ids == {"score_shard"}
    assert dag.get_task("score_shard").downstream_task_ids == {"commit"}
    assert dag.get_task("commit").downstream_task_ids == {"report", "vacuum"}
    assert [a.name for a in dag.get_task("commit").outlets] == ["predictions"]


@pytest.mark.parametrize(("name", "value"), [("model", "gpt"), ("epochs", 0), ("seed", -1),
                                             ("settings", ["no equals sign"]), ("tolerance", 2)])
def test_the_retrain_form_refuses_bad_values(dags: dict[str, Any], name: str, value: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    param = dags["textclf_retrain"].params.get_param(name)
    with pytest.raises(ParamValidationError):
        param.resolve(value)


def test_the_retrain_form_accepts_every_architecture(dags: dict[str, Any]) -> None:
    from textclf.model.architectures import architectures

    param = dags["textclf_retrain"].params.get_param("model")
    assert [param.resolve(name) for name in architectures()] == list(architectures())
    assert dags["textclf_retrain"].params.get_param("settings").resolve(["learning_rate=0.01"])


def test_retry_rules_retry_storage_errors_only() -> None:
    from airflow.sdk.definitions.retry_policy import RetryAction
    from textclf_airflow import RETRY_POLICY

    from textclf.errors import InputFileError, PartitionNotFoundError, StorageError, ValidationFailedError

    def action(exc: BaseException) -> RetryAction:
        return RETRY_POLICY.evaluate(exc, try_number=1, max_tries=4).action

    assert action(StorageError("s3 is down")) == RetryAction.RETRY
    assert action(ConnectionError("reset")) == RetryAction.RETRY
    assert action(ValidationFailedError("labeled 2026-01-01", ["x"])) == RetryAction.FAIL
    assert action(InputFileError("f.csv", "not CSV")) == RetryAction.FAIL
    assert action(PartitionNotFoundError("nothing there")) == RetryAction.FAIL
    assert action(KeyError("a bug")) == RetryAction.DEFAULT


def test_retraining_can_follow_new_labeled_data(airflow_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTCLF_RETRAIN_ON_NEW_DATA", "true")
    dag = load_dags()["textclf_retrain"]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["labeled_data"]


def test_retraining_can_follow_drift_alerts_too(airflow_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTCLF_RETRAIN_ON_DRIFT", "true")
    assert [a.name for a in load_dags()["textclf_retrain"].timetable.asset_condition.objects] == ["drift_alert"]
    monkeypatch.setenv("TEXTCLF_RETRAIN_ON_NEW_DATA", "true")
    condition = load_dags()["textclf_retrain"].timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"
    assert sorted(a.name for a in condition.objects) == ["drift_alert", "labeled_data"]
