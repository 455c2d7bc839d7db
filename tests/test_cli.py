"""The command line as a user runs it: JSON on the last stdout line, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_csv

pytestmark = pytest.mark.integration

TEXTCLF = [str(Path(sys.executable).with_name("textclf"))]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TEXTCLF, *args], capture_output=True, text=True, timeout=120, env=env)


def test_ingest_prints_json_summary_last(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "a.csv", [("1", "hello", "x"), ("2", "", "x")])
    proc = run("ingest", "--lake", str(tmp_path / "lake"), "--kind", "labeled", "--date", "2026-01-02", str(src))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 1 and summary["quarantined_rows"] == 1 and summary["input_rows"] == 2
    assert summary["dataset"] == str(tmp_path / "lake" / "datasets/labeled/ingest_date=2026-01-02")


def test_python_dash_m_works(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "textclf", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("textclf ")


def test_unreadable_file_is_one_line_error_exit_3(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("id,body\n1,hello\n")
    proc = run("ingest", "--lake", str(tmp_path / "lake"), "--kind", "labeled", str(tmp_path / "x.csv"))
    assert proc.returncode == 3
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("textclf ingest: error: ") and "x.csv" in lines[-1] and "--text-col" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_bad_date_is_usage_error(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "a.csv", [("1", "hello", "x")])
    proc = run("ingest", "--lake", str(tmp_path), "--kind", "labeled", "--date", "21/11/2026", str(src))
    assert proc.returncode == 2 and "date must be YYYY-MM-DD" in proc.stderr


def test_unsafe_lake_key_in_s3_uri_without_bucket(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "a.csv", [("1", "hello", "x")])
    proc = run("ingest", "--lake", "s3://", "--kind", "labeled", str(src))
    assert proc.returncode == 5 and "needs a bucket" in proc.stderr


def test_missing_arguments_exit_2() -> None:
    proc = run("ingest", "--kind", "labeled")
    assert proc.returncode == 2 and "--lake" in proc.stderr


@pytest.mark.s3
def test_ingest_to_s3_lake_from_cli(tmp_path: Path, s3_lake: str) -> None:
    import os

    src = write_csv(tmp_path / "a.csv", [("1", "hello", "x")])
    proc = run("ingest", "--lake", s3_lake, "--kind", "unlabeled", "--date", "2026-01-02", str(src),
               env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["dataset"].startswith(s3_lake)


def test_demo_runs_every_stage_and_promotes_a_model(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    proc = subprocess.run([*TEXTCLF, "demo", "--lake", str(lake), "--date", "2026-02-01", "--labeled-rows", "2000",
                           "--unlabeled-rows", "200", "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    model = summary["model"]
    assert model["promotion"]["decision"] == "promoted"
    assert (lake / "models" / model["model_version"] / "report.html").is_file()
    champion = json.loads((lake / "models" / "champion.json").read_text())
    assert champion["champion"]["version"] == model["model_version"]
    assert "report:" in proc.stderr and "Data Docs:" in proc.stderr and "predictions:" in proc.stderr
    from textclf.lake import Lake
    from textclf.lake.tables import predictions_table

    predictions = predictions_table(Lake(str(lake))).verify("2026-02-01")
    assert predictions["rows"] == summary["unlabeled"]["rows"]
    assert predictions["model_version"] == model["model_version"]
    assert (lake / "reports/run_date=2026-02-01/report.html").is_file()
