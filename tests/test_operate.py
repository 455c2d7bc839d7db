"""Operating textclf: quiet TensorFlow, CLI hints, the approval step's helpers, the drift cooldown, the gate's
preview and a recorded rejection, what the api-server serves from the lake, and the DAG settings' checks."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from textclf.errors import StorageError

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

CHATTER = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796167635.403299    6616 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796167635.528123    6616 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
"""  # noqa: E501 - TensorFlow 2.21's lines as printed


@pytest.mark.unit
def test_tensorflow_start_up_lines_are_chatter_and_other_lines_are_kept(capfd: pytest.CaptureFixture[str]) -> None:
    from textclf import tflog

    assert all(tflog.is_chatter(line) for line in CHATTER.splitlines())
    assert not tflog.is_chatter("E0000 00:00:1.0 1 op_kernel.cc:12] OOM when allocating tensor")
    assert not tflog.is_chatter("Traceback (most recent call last):")
    onednn: list[str] = []
    with tflog.filtered_stderr(onednn):
        os.write(2, CHATTER.encode())
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n" and onednn == ["on"]


@pytest.mark.integration
def test_the_cli_prints_no_tensorflow_chatter(tmp_path: Path) -> None:
    """A command that imports TensorFlow: with -q no line at all from it, without -q one INFO line."""
    import subprocess

    code = ("import sys; from textclf import tflog; import logging; logging.basicConfig(level=logging.INFO); "
            "tflog.install(); import keras, tensorflow; print('done')")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorFlow 2." in lines[0] and "on CPU" in lines[0], proc.stderr


@pytest.mark.unit
def test_an_unreachable_s3_lake_names_the_endpoint_and_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf.cli import s3_endpoint_hint

    error = StorageError("cannot reach the lake s3://b/lake: AWS Error NETWORK_CONNECTION during HeadObject: "
                         "curlCode: 6, Could not resolve hostname b.s3.amazonaws.com")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    hint = s3_endpoint_hint("s3://b/lake", error)
    assert "AWS's own" in hint and "AWS_ENDPOINT_URL" in hint and "AWS_ENDPOINT_URL_S3" in hint
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert "http://127.0.0.1:1, from AWS_ENDPOINT_URL" in s3_endpoint_hint("s3://b/lake", error)
    assert s3_endpoint_hint("/local/lake", error) == ""
    assert s3_endpoint_hint("s3://b/lake", StorageError("s3://b/lake/x does not exist")) == ""


def _event(run_date: str) -> Any:
    return SimpleNamespace(extra={"run_date": run_date, "signals": [{"name": "predicted_class_mix_psi"}]})


@pytest.mark.dags
def test_drift_triggered_retraining_waits_out_its_cooldown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException
    from textclf_airflow import DRIFT_ALERT, LABELED_DATA, retrain_trigger

    from textclf.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    lake.write_bytes("models/20261120T060000Z-bow_mlp-abcdef/_MANIFEST.json", b"{}")
    drift = {"triggering_asset_events": {DRIFT_ALERT: [_event("2026-11-20")]}}
    at = dt.datetime(2026, 11, 21, 5, 0, tzinfo=dt.UTC)  # 23 h after the last training
    with pytest.raises(AirflowSkipException, match=r"drift alert of 2026-11-20 not acted on.*24 h cooldown"):
        retrain_trigger(drift, lake, now=at)
    later = retrain_trigger(drift, lake, now=at + dt.timedelta(hours=2))
    assert later["reason"] == "drift alert of 2026-11-20: predicted_class_mix_psi"
    monkeypatch.setenv("TEXTCLF_RETRAIN_COOLDOWN_HOURS", "1")
    assert retrain_trigger(drift, lake, now=at)["drift"][0]["run_date"] == "2026-11-20"
    # by hand, or with new labeled data, there is no cooldown
    assert retrain_trigger({}, lake, now=at)["reason"] == "triggered by hand"
    both = {"triggering_asset_events": {DRIFT_ALERT: [_event("2026-11-20")], LABELED_DATA: [_event("x")]}}
    monkeypatch.delenv("TEXTCLF_RETRAIN_COOLDOWN_HOURS")
    assert retrain_trigger(both, lake, now=at)["reason"] == "new labeled data"


@pytest.mark.dags
def test_the_approval_request_and_its_answer() -> None:
    from textclf_airflow.approval import approval_body, approval_required, approved, responder

    gate = {"model_version": "v2", "decision": "promoted", "reasons": ["accuracy 0.9 >= floor 0.7"],
            "candidate": {"accuracy": 0.9, "macro_f1": 0.88, "linear_reference_macro_f1": 0.85},
            "champion": {"version": "v1", "accuracy": 0.8, "macro_f1": 0.79}, "report": "/lake/models/v2/report.html"}
    body = approval_body(gate, "/textclf/lake/models/v2/report.html")
    assert "| version | `v2` | `v1` |" in body and "| test macro-F1 | 0.8800 | 0.7900 |" in body
    assert "[/lake/models/v2/report.html](/textclf/lake/models/v2/report.html)" in body
    assert "(none yet)" in approval_body({**gate, "champion": None}, "x")
    answer = {"chosen_options": ["Reject"], "responded_by_user": {"id": "1", "name": "ada"}}
    assert not approved(answer) and responder(answer) == "ada"
    assert approved({"chosen_options": ["Approve"]}) and responder({"responded_by_user": None}) is None
    dag = SimpleNamespace(params={"require_approval": False})
    assert approval_required({"dag_run": SimpleNamespace(conf={"require_approval": True}), "dag": dag})
    assert not approval_required({"dag_run": SimpleNamespace(conf={}), "params": {}, "dag": dag})


@pytest.mark.model
@pytest.mark.integration  # TensorFlow's import runs `uname -p`
def test_the_gate_previews_without_recording_and_a_rejection_is_recorded(tmp_path: Path) -> None:
    from tests.conftest import train_evaluated
    from tests.test_dags import land
    from textclf.config import IngestConfig, PromoteConfig, PromotionPolicy, TrainConfig
    from textclf.ingest.stage import ingest
    from textclf.lake import Lake
    from textclf.promote.stage import preview, promote, reject

    lake = Lake(str(tmp_path / "lake"))
    land(lake, tmp_path, labeled_rows=600, unlabeled_rows=10)
    ingest(lake, IngestConfig(kind="labeled", date="2026-11-02", sources=tuple(
        lake.uri_of(k) for k in lake.list_files("landing/labeled"))))
    first = train_evaluated(lake, TrainConfig(model="bow_mlp", epochs=1), explain_count=0)
    lenient = PromotionPolicy(min_accuracy=0.0, tolerance=1.0)  # one epoch: the gate's numbers are not the point
    assert preview(lake, PromoteConfig(model_version=first, policy=lenient)).decision == "promoted"
    assert not lake.exists("models/champion.json") or not lake.read_json("models/champion.json").get("history")
    done = promote(lake, PromoteConfig(model_version=first, policy=lenient, approved_by="ada"))
    assert done.promoted and lake.read_json("models/champion.json")["champion"]["approved_by"] == "ada"
    second = train_evaluated(lake, TrainConfig(model="bow_mlp", epochs=1, seed=3), explain_count=0)
    seen = preview(lake, PromoteConfig(model_version=second, policy=lenient))
    assert seen.passes and seen.champion is not None and seen.champion["version"] == first
    result = reject(lake, second, "bob", "  worse on refunds  ")
    state = lake.read_json("models/champion.json")
    assert result.decision == "rejected" and state["champion"]["version"] == first
    expected = {"model_version": second, "decision": "rejected", "promoted": False, "rejected_by": "bob",
                "reason": "worse on refunds", "reasons": ["rejected by bob: worse on refunds"]}
    assert {k: state["history"][-1][k] for k in expected} == expected


@pytest.mark.dags
def test_the_api_server_serves_reports_and_data_docs_only() -> None:
    from textclf_airflow import SERVED

    docs = "validation/unlabeled/ingest_date=2026-11-20/data_docs"
    for key in ("models/champion.json", "models/20261201T000000Z-nb_tfidf-abc123/report.html",
                "reports/run_date=2026-11-20/report.html", f"{docs}/index.html",
                f"{docs}/static/vendor/jquery/jquery.min.js"):
        assert SERVED.match(key), key
    for key in ("landing/labeled/a.csv", "datasets/labeled/ingest_date=2026-11-20/part-00000.parquet",
                "models/v1/model.keras", "predictions/run_date=2026-11-20/_MANIFEST.json", "_locks/x",
                "reports/run_date=x/report.html"):
        assert not SERVED.match(key), key


@pytest.mark.dags
@pytest.mark.parametrize(("name", "value"), [("TEXTCLF_SCORE_CATCHUP", "sometimes"),
                                             ("TEXTCLF_RETRAIN_ON_DRIFT", "yes please"),
                                             ("TEXTCLF_RETRAIN_COOLDOWN_HOURS", "-1"),
                                             ("TEXTCLF_APPROVAL_TIMEOUT_HOURS", "0")])
def test_provision_checks_the_new_dag_settings(name: str, value: str) -> None:
    from textclf_airflow.provision import Provision, ProvisionError

    with pytest.raises(ProvisionError, match=name):
        Provision.from_environ({name: value})
