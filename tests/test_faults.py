"""Fault injection with real processes and real SeaweedFS servers on 127.0.0.1.

Faults: SIGKILL while scoring (while batches stream, just before and just after the Delta log entry is
written, before a shard commit) and while ingest commits, the S3 server killed while ingest, training and
scoring run, two scoring or ingest runs at once, two promotions racing, concurrent Delta writers on S3,
and a full disk. After each fault every reader (textclf, DuckDB ``delta_scan``, Polars, pandas) sees a
complete snapshot: the previous one until a commit, the new one after it, never a mix; a failing command
says why in one line; a rerun completes. Monkeypatching is used only inside child processes, to place a
kill or a stall exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import train_evaluated
from tests.readers import assert_engines_read
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, _free_ports, weed_binary
from tests.test_scoring import check_contract
from textclf.config import IngestConfig, PromoteConfig, ScoreConfig, TrainConfig
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.errors import StorageError
from textclf.ingest.stage import ingest
from textclf.lake import Lake, S3Options
from textclf.lake.layout import CHAMPION, shard_key
from textclf.lake.tables import Table, dataset_table, predictions_table, quarantine_table
from textclf.model.registry import list_versions
from textclf.promote.stage import promote
from textclf.score.stage import score, score_shard

pytestmark = pytest.mark.integration

TEXTCLF = str(Path(sys.executable).with_name("textclf"))
D = "2026-05-01"  # 30,000 documents, scored once by the fixture: the "previous snapshot"
D2 = "2026-05-02"  # 6,000 documents, ingested, not scored
ROWS_D = 30_000
BATCH = "128"  # small batches: scoring D streams for a few seconds
BIG_ROWS = 150_000  # the ingest that loses its S3 server mid-upload

# A child runs the real command line after one patch that places a fault exactly.
CHILD = """
import os, signal, sys, time
from textclf.lake import Lake
{patch}
from textclf.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Just before / just after delta-rs writes the Delta log entry of a commit (FAULT_KEY: the date's folder).
KILL_BEFORE_LOG = """
from deltalake import DeltaTable
from textclf.lake.tables import Table
_commit = Table.commit
def commit(self, date, *args, **kwargs):
    if self.date_key(date) == os.environ["FAULT_KEY"]:
        _write = DeltaTable.create_write_transaction
        def write(dt, *a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        DeltaTable.create_write_transaction = write
    return _commit(self, date, *args, **kwargs)
Table.commit = commit
"""
KILL_AFTER_LOG = """
from deltalake import DeltaTable
_write = DeltaTable.create_write_transaction
def write(dt, *a, **k):
    _write(dt, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
DeltaTable.create_write_transaction = write
"""
KILL_AT_COMMIT = """
from textclf.lake.tables import Table
_commit = Table.commit
def commit(self, date, *args, **kwargs):
    if self.date_key(date) == os.environ["FAULT_KEY"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return _commit(self, date, *args, **kwargs)
Table.commit = commit
"""
# Stalls a commit of FAULT_KEY once its files and summary are written, before its Delta log entry, until
# FAULT_GO exists (or FAULT_STALL_S passes); FAULT_FLAG says it is stalled.
STALL_BEFORE_LOG = """
from deltalake import DeltaTable
_write = DeltaTable.create_write_transaction
def write(dt, *a, **k):
    if not os.path.exists(os.environ["FAULT_FLAG"]):
        open(os.environ["FAULT_FLAG"], "w").close()
        deadline = time.monotonic() + float(os.environ.get("FAULT_STALL_S", "600"))
        while not os.path.exists(os.environ.get("FAULT_GO", "/nonexistent")) and time.monotonic() < deadline:
            time.sleep(0.05)
    return _write(dt, *a, **k)
DeltaTable.create_write_transaction = write
"""
STALL_AT_COMMIT = """
from textclf.lake.tables import Table
_commit = Table.commit
def commit(self, *args, **kwargs):
    open(os.environ["FAULT_FLAG"], "w").close()
    deadline = time.monotonic() + 600
    while not os.path.exists(os.environ["FAULT_GO"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _commit(self, *args, **kwargs)
Table.commit = commit
"""
# Each promotion pauses just before its conditional write of champion.json: both decided on the same state.
STALL_AT_CAS = """
_write_if = Lake.write_if
def write_if(self, key, data, tag):
    if key.endswith(os.environ["FAULT_KEY"]):
        time.sleep(float(os.environ.get("FAULT_STALL_S", "2")))
    return _write_if(self, key, data, tag)
Lake.write_if = write_if
"""


# -- processes ----------------------------------------------------------------------------------
class Procs:
    """Child processes of one test: output to files, every one killed by its PID at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[subprocess.Popen] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
              patch: str | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-c", CHILD.format(patch=patch), *args[1:]] if patch else args
        out, err = open(self.tmp / f"{name}.out", "w"), open(self.tmp / f"{name}.err", "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        proc.name = name  # type: ignore[attr-defined]
        out.close()
        err.close()
        self.running.append(proc)
        return proc

    def run(self, name: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
            patch: str | None = None) -> subprocess.CompletedProcess:
        proc = self.spawn(name, args, env, patch)
        proc.wait(timeout=timeout)
        return self.result(proc)

    def stderr(self, proc: subprocess.Popen) -> str:
        return (self.tmp / f"{proc.name}.err").read_text()  # type: ignore[attr-defined]

    def result(self, proc: subprocess.Popen) -> subprocess.CompletedProcess:
        proc.wait(timeout=300)
        out = (self.tmp / f"{proc.name}.out").read_text()  # type: ignore[attr-defined]
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, self.stderr(proc))

    def kill_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()


def wait_for(what: str, condition: Callable[[], bool], proc: subprocess.Popen, procs: Procs,
             timeout: float = 240) -> None:
    """Poll until ``condition`` holds; fail if the process ends first (the fault would come too late)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"{proc.name} ended (rc {proc.returncode}) before {what}:\n{procs.stderr(proc)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, code: int, *needles: str) -> str:
    """What a user sees when a command fails: the exit code, one error line naming the problem, no traceback."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"textclf {command}: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr[-3000:]
    assert any(n in errors[0] for n in needles), errors[0]
    return errors[0]


# -- lakes --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A local lake: a champion (bow_mlp, fast), a second trained version, D ingested and scored once, D2 ingested."""
    tmp = tmp_path_factory.mktemp("faults")
    uri = str(tmp / "lake")
    write_corpus(CorpusSpec(rows=1500, seed=11, id_prefix="l-"), tmp / "labeled.csv")
    ingest(Lake(uri), IngestConfig(kind="labeled", date="2026-04-30", sources=(str(tmp / "labeled.csv"),)))
    champion = train_evaluated(Lake(uri), TrainConfig(model="bow_mlp", epochs=2), explain_count=0)
    promote(Lake(uri), PromoteConfig(model_version=champion))
    other = train_evaluated(Lake(uri), TrainConfig(model="bow_mlp", epochs=2, seed=1), explain_count=0)
    for date, rows, seed in ((D, ROWS_D, 12), (D2, 6_000, 13)):
        source = tmp / f"unlabeled-{date}.csv"
        write_corpus(CorpusSpec(rows=rows, labeled=False, seed=seed, id_prefix=f"u{seed}-"), source)
        ingest(Lake(uri), IngestConfig(kind="unlabeled", date=date, sources=(str(source),)))
    score(Lake(uri), ScoreConfig(date=D))
    return {"lake": tmp / "lake", "versions": (champion, other), "tmp": tmp}


@pytest.fixture
def lake(base: dict, tmp_path: Path) -> Lake:
    shutil.copytree(base["lake"], tmp_path / "lake")
    return Lake(str(tmp_path / "lake"))


def upload_lake(src: Path, lake: Lake) -> None:
    for path in sorted(src.rglob("*")):
        if path.is_file():
            lake.upload(str(path), str(path.relative_to(src)))


def reader_view(lake: Lake, date: str, old: dict | None) -> str:
    """What readers of the predictions of ``date`` see: "old", "absent" or "new"; a mix fails here.

    textclf's own reader (the summary, checksums, one row per document) and DuckDB, Polars and pandas reading
    the Delta table all agree on the same rows.
    """
    table = predictions_table(lake)
    summary = table.summary(date)
    if summary is None:
        return "absent"
    manifest, _ = check_contract(lake, date)  # every file present with its checksum, one row per document
    assert_engines_read(table, date, manifest["rows"])
    return "old" if old is not None and summary["commit_run"] == old["commit_run"] else "new"


def new_parquet(lake: Lake, folder: str, before: set[str], min_bytes: int, prefix: str = "part-") -> bool:
    """A data file not among ``before`` is being written into ``folder`` (local lakes)."""
    root = Path(lake.path(folder))
    return any(p.name not in before and p.name.startswith(prefix) and p.stat().st_size >= min_bytes
               for p in root.glob("*.parquet") if p.exists())


def folder_files(lake: Lake, folder: str) -> set[str]:
    return {k.rsplit("/", 1)[1] for k in lake.list_files(folder)}


def score_args(lake: Lake | str, date: str, *extra: str) -> list[str]:
    uri = lake.uri if isinstance(lake, Lake) else lake
    return [TEXTCLF, "score", "--lake", uri, "--date", date, "--batch-rows", BATCH, "-q", *extra]


def versions_of_date(lake: Lake, date: str) -> list[int]:
    """Versions of the predictions table whose commit replaced ``date`` (from the Delta history)."""
    dt = predictions_table(lake).delta()
    assert dt is not None
    return sorted(e["version"] for e in dt.history() if (e.get("textclf") or {}).get("run_date") == date)


# -- 1. SIGKILL while scoring -----------------------------------------------------------------------
def test_sigkill_while_scoring_keeps_the_previous_snapshot(lake: Lake, procs: Procs) -> None:
    table = predictions_table(lake)
    folder = table.date_key(D)
    old = table.require_summary(D)
    old_files = folder_files(lake, folder)

    # Killed while batches stream into the new data file: the previous snapshot is served, whole.
    proc = procs.spawn("streaming", score_args(lake, D))
    wait_for("scored batches in a new data file", lambda: new_parquet(lake, folder, old_files, 64 << 10), proc, procs)
    sigkill(proc)
    assert reader_view(lake, D, old) == "old"

    # Killed just before the Delta log entry, every data file written: still the previous snapshot, whole
    # (the manifested partitions of schema version 1 were absent at this point).
    proc = procs.spawn("before-log", score_args(lake, D), env={"FAULT_KEY": folder}, patch=KILL_BEFORE_LOG)
    assert proc.wait(timeout=300) == -signal.SIGKILL, procs.stderr(proc)[-3000:]
    assert reader_view(lake, D, old) == "old"
    assert len(folder_files(lake, folder) - old_files) >= 2  # the killed runs' files: there, but in no snapshot

    # Killed just after the log entry: the commit happened, so the new snapshot is served, whole.
    proc = procs.spawn("after-log", score_args(lake, D), patch=KILL_AFTER_LOG)
    assert proc.wait(timeout=300) == -signal.SIGKILL, procs.stderr(proc)[-3000:]
    assert reader_view(lake, D, old) == "new"
    middle = table.require_summary(D)

    # A rerun commits one complete snapshot: no duplicates, nothing missing, counts that add up.
    result = procs.run("rerun", score_args(lake, D))
    assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, middle) == "new"
    manifest, rows = check_contract(lake, D)
    assert manifest["rows"] == len(rows) == ROWS_D and manifest["rows"] + manifest["quarantined_rows"] == \
        manifest["input_rows"]
    assert len(versions_of_date(lake, D)) == 3  # the fixture's commit, the one killed after its log entry, the rerun
    # What the killed runs left is in no snapshot; a vacuum past its retention removes it.
    table.vacuum(retention_hours=0)
    assert folder_files(lake, folder) == {f["path"].split("/")[1] for f in manifest["files"]}
    assert reader_view(lake, D, middle) == "new"


def test_sigkill_one_shard_then_its_commit(lake: Lake, procs: Procs, tmp_path: Path) -> None:
    table = predictions_table(lake)
    folder = table.date_key(D)
    old = table.require_summary(D)
    shards = ("--shards", "3")
    for shard in (0, 2):
        result = procs.run(f"shard{shard}", score_args(lake, D, *shards, "--shard", str(shard)))
        assert result.returncode == 0, result.stderr[-3000:]

    # Shard 1 is killed while it streams: it has no record, nothing of it is visible, the commit refuses.
    before = folder_files(lake, folder)
    proc = procs.spawn("shard1-killed", score_args(lake, D, *shards, "--shard", "1"))
    wait_for("shard 1 streaming", lambda: new_parquet(lake, folder, before, 16 << 10, "part-00001-"), proc, procs)
    sigkill(proc)
    assert not lake.exists(shard_key(D, 1, 3))
    result = procs.run("commit-refused", score_args(lake, D, *shards, "--commit-only"))
    assert_one_line_error(result, "score", 5, "shard 1 of 3")
    assert reader_view(lake, D, old) == "old"

    # Only shard 1 is rerun; shards 0 and 2 are not rescored.
    before_records = {s: lake.read_json(shard_key(D, s, 3))["created_at"] for s in (0, 2)}
    result = procs.run("shard1", score_args(lake, D, *shards, "--shard", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert {s: lake.read_json(shard_key(D, s, 3))["created_at"] for s in (0, 2)} == before_records

    # Shard 2 is rescored (in this process) while a commit has read the shard records and is about to commit
    # their files: the commit notices and refuses, instead of publishing files the rescore replaced.
    flag, go = tmp_path / "commit-stalled", tmp_path / "commit-go"
    proc = procs.spawn("commit-stalled", score_args(lake, D, *shards, "--commit-only"), patch=STALL_AT_COMMIT,
                       env={"FAULT_FLAG": str(flag), "FAULT_GO": str(go)})
    wait_for("the commit to stall before its transaction", flag.exists, proc, procs)
    score_shard(lake, ScoreConfig(date=D, num_shards=3, batch_rows=2048, shard=2))
    go.touch()
    assert_one_line_error(procs.result(proc), "score", 5, "shard 2 of 3 for 2026-05-01 was rescored")
    assert reader_view(lake, D, old) == "old"

    # The commit is killed just before its Delta log entry: the previous snapshot is still served whole.
    proc = procs.spawn("commit-killed", score_args(lake, D, *shards, "--commit-only"), patch=KILL_BEFORE_LOG,
                       env={"FAULT_KEY": folder})
    assert proc.wait(timeout=300) == -signal.SIGKILL, procs.stderr(proc)[-3000:]
    assert reader_view(lake, D, old) == "old"
    assert all(lake.exists(shard_key(D, s, 3)) for s in range(3))  # every shard intact for the retry

    # Killed just after it: all three shards are visible at once, and a retry only clears the records.
    proc = procs.spawn("commit-after-log", score_args(lake, D, *shards, "--commit-only"), patch=KILL_AFTER_LOG)
    assert proc.wait(timeout=300) == -signal.SIGKILL, procs.stderr(proc)[-3000:]
    assert reader_view(lake, D, old) == "new"
    committed = table.require_summary(D)
    result = procs.run("commit", score_args(lake, D, *shards, "--commit-only"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert table.require_summary(D)["commit_run"] == committed["commit_run"]  # the retry changed nothing
    manifest, rows = check_contract(lake, D)
    assert manifest["num_shards"] == 3 and len(manifest["files"]) == 3 and len(rows) == ROWS_D
    assert not lake.list_files("_shards")


def test_sigkill_between_the_quarantine_and_the_dataset_commit(lake: Lake, procs: Procs, tmp_path: Path) -> None:
    """Ingest commits the quarantine, then the dataset; killed in between, validation names the mismatch."""
    dtable, qtable = dataset_table(lake, "unlabeled"), quarantine_table(lake, "unlabeled")
    old = dtable.require_summary(D2)
    source = tmp_path / "dirty.csv"
    write_corpus(CorpusSpec(rows=5_000, labeled=False, seed=22, dirty_fraction=0.05, id_prefix="dirty-"), source)
    ingest_args = [TEXTCLF, "ingest", "--lake", lake.uri, "--kind", "unlabeled", "--date", D2, "-q", str(source)]
    validate_args = [TEXTCLF, "validate", "--lake", lake.uri, "--kind", "unlabeled", "--date", D2, "-q"]
    result = procs.run("ingest", ingest_args, patch=KILL_AT_COMMIT, env={"FAULT_KEY": dtable.date_key(D2)})
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert dtable.verify(D2) == old  # readers still see the previous dataset snapshot, whole
    assert_engines_read(dtable, D2, old["rows"])
    assert qtable.verify(D2)["ingest_run"] != old["ingest_run"]  # beside a quarantine of the dead run
    assert_engines_read(qtable, D2, qtable.require_summary(D2)["rows"], unique=False)

    line = assert_one_line_error(procs.run("validate", validate_args), "validate", 4, "another ingest run")
    assert f"rerun ingest for unlabeled {D2}" in line

    result = procs.run("ingest-again", ingest_args)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest, quarantine = dtable.verify(D2), qtable.verify(D2)
    assert manifest["ingest_run"] == quarantine["ingest_run"]
    assert quarantine["rows"] == manifest["quarantined_rows"] > 0
    assert manifest["rows"] + manifest["quarantined_rows"] + manifest["duplicates_removed"] == 5_000
    assert_engines_read(dtable, D2, manifest["rows"])
    assert_engines_read(qtable, D2, quarantine["rows"], unique=False)
    result = procs.run("validate-again", validate_args)
    assert result.returncode == 0, result.stderr[-3000:]


# -- 2. The S3 server dies while a stage runs ---------------------------------------------------------
class RestartableS3:
    """A SeaweedFS server on 127.0.0.1 that can be killed and started again on the same ports and data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = _free_ports(5)
        self.server: S3Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def options(self) -> S3Options:
        return S3Options(endpoint_url=self.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1")

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def start(self, timeout_s: float = 60) -> None:
        s3, master, volume, filer, admin = self.ports
        data, run = self.workdir / "data", self.workdir / "run"
        data.mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        cmd = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-webdav=false", "-admin.ui=false", f"-admin.port={admin}",
               f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
               "-master.telemetry=false", f"-filer.localSocket={run}/filer.sock", f"-s3.localSocket={run}/s3.sock"]
        with open(self.workdir / "weed.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                    env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                                         "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
        self.server = S3Server(self.endpoint, proc, self.workdir)
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {proc.returncode}; see {self.workdir / 'weed.log'}")
            try:
                client = self.client()
                if "probe" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
                    client.create_bucket(Bucket="probe")
                client.put_object(Bucket="probe", Key="ready", Body=b"1")  # the write path answers too
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.3)

    def kill(self) -> None:
        assert self.server is not None
        os.kill(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(timeout=30)

    def stop(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            os.kill(self.server.process.pid, signal.SIGKILL)  # a throwaway server: no need to wait for a clean exit
            self.server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableS3]:
    """A SeaweedFS server of this module's own, which its tests kill and restart; stopped by PID at the end."""
    server = RestartableS3(tmp_path_factory.mktemp("own-seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_copy(own_s3: RestartableS3, base: dict) -> Lake:
    """The base lake, copied into a fresh bucket of the killable server."""
    if own_s3.server is None or own_s3.server.process.poll() is not None:
        own_s3.start()  # a previous test failed before restarting it
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    own_s3.client().create_bucket(Bucket=bucket)
    lake = Lake(f"s3://{bucket}/lake", s3=own_s3.options())
    upload_lake(base["lake"], lake)
    return lake


def multipart_in_progress(own_s3: RestartableS3, lake: Lake, prefix: str) -> bool:
    """A data file under ``prefix`` is being uploaded right now (pyarrow streams files as multipart uploads)."""
    bucket, _, root = lake.root.partition("/")
    uploads = own_s3.client().list_multipart_uploads(Bucket=bucket, Prefix=f"{root}/{prefix}/").get("Uploads", [])
    return any(u["Key"].endswith(".parquet") for u in uploads)


def assert_s3_failure(result: subprocess.CompletedProcess, command: str, own_s3: RestartableS3, lake: Lake) -> None:
    host = own_s3.endpoint.split("://", 1)[1]
    assert_one_line_error(result, command, 5, host, lake.uri.split("/lake", 1)[0])


@pytest.mark.s3
def test_s3_server_dies_during_ingest(own_s3: RestartableS3, s3_copy: Lake, procs: Procs, base: dict,
                                      tmp_path: Path) -> None:
    lake, table = s3_copy, dataset_table(s3_copy, "unlabeled")
    key = table.date_key(D2)
    old = table.require_summary(D2)
    source = tmp_path / "big.csv"
    # large enough that its data file is still uploading when the poll below looks (60,000 once finished first)
    write_corpus(CorpusSpec(rows=BIG_ROWS, labeled=False, seed=21, id_prefix="big-"), source)
    args = [TEXTCLF, "ingest", "--lake", lake.uri, "--kind", "unlabeled", "--date", D2, str(source)]
    proc = procs.spawn("ingest", args, env=own_s3.env)
    wait_for("a data file being uploaded", lambda: multipart_in_progress(own_s3, lake, key), proc, procs)
    own_s3.kill()
    assert_s3_failure(procs.result(proc), "ingest", own_s3, lake)

    own_s3.start()
    assert table.verify(D2) == old  # the previous snapshot, untouched and whole
    assert_engines_read(table, D2, old["rows"])
    result = procs.run("ingest-again", args, env=own_s3.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert table.verify(D2)["rows"] == BIG_ROWS
    assert_engines_read(table, D2, BIG_ROWS)


@pytest.mark.s3
@pytest.mark.slow
def test_s3_server_dies_during_training(own_s3: RestartableS3, s3_copy: Lake, procs: Procs) -> None:
    lake = s3_copy
    versions = list_versions(lake)
    args = [TEXTCLF, "train", "--lake", lake.uri, "--model", "bow_mlp", "--epochs", "2", "--explain", "0"]
    proc = procs.spawn("train", args, env=own_s3.env)
    wait_for("the first epoch", lambda: "epoch 1:" in procs.stderr(proc), proc, procs)
    own_s3.kill()
    assert_s3_failure(procs.result(proc), "train", own_s3, lake)

    own_s3.start()
    assert list_versions(lake) == versions  # no new version became visible
    result = procs.run("train-again", args, env=own_s3.env)
    assert result.returncode == 0, result.stderr[-3000:]
    new = [v for v in list_versions(lake) if v not in versions]
    assert len(new) == 1 and lake.verify(f"models/{new[0]}")


@pytest.mark.s3
def test_s3_server_dies_during_scoring(own_s3: RestartableS3, s3_copy: Lake, procs: Procs) -> None:
    lake = s3_copy
    old = predictions_table(lake).require_summary(D)
    proc = procs.spawn("score", score_args(lake, D), env=own_s3.env)
    wait_for("scored batches being uploaded",
             lambda: multipart_in_progress(own_s3, lake, predictions_table(lake).date_key(D)), proc, procs)
    own_s3.kill()
    assert_s3_failure(procs.result(proc), "score", own_s3, lake)

    own_s3.start()
    assert reader_view(lake, D, old) == "old"  # no longer "old or absent": the snapshot never went away
    result = procs.run("score-again", score_args(lake, D), env=own_s3.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, old) == "new"


# -- 3. Concurrent writers and readers ---------------------------------------------------------------------
def test_two_dates_scored_at_once(lake: Lake, procs: Procs) -> None:
    old = predictions_table(lake).require_summary(D)
    runs = [procs.spawn(f"score-{d}", score_args(lake, d, "--batch-rows", "2048")) for d in (D, D2)]
    for proc in runs:
        result = procs.result(proc)
        assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, old) == "new" and reader_view(lake, D2, None) == "new"
    first, _ = check_contract(lake, D)
    second, _ = check_contract(lake, D2)
    assert (first["run_date"], second["run_date"]) == (D, D2)
    assert (first["rows"], second["rows"]) == (ROWS_D, 6_000)


def lake_and_env(where: str, request: pytest.FixtureRequest) -> tuple[Lake, dict[str, str]]:
    """The base lake copied locally, or into a bucket of the module's own SeaweedFS (reached via the env)."""
    if where == "local":
        return request.getfixturevalue("lake"), {}
    return request.getfixturevalue("s3_copy"), request.getfixturevalue("own_s3").env


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_same_date_scored_twice_at_once(where: str, request: pytest.FixtureRequest, procs: Procs) -> None:
    """Both runs commit (delta-rs detects the conflict, the later one re-reads and commits again): the last
    to commit wins whole, and the other's commit is a complete version in the history."""
    lake, env = lake_and_env(where, request)
    table = predictions_table(lake)
    old = table.require_summary(D)
    runs = [procs.spawn(f"score-{i}", score_args(lake, D, "--batch-rows", "2048"), env=env) for i in range(2)]
    results = [procs.result(proc) for proc in runs]
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    committed = [json.loads(r.stdout.strip().splitlines()[-1])["table_version"] for r in results]
    assert reader_view(lake, D, old) == "new"
    final = table.require_summary(D)
    assert final["table_version"] == max(committed) and len(set(committed)) == 2
    assert versions_of_date(lake, D)[-2:] == sorted(committed)  # two whole commits, one after the other
    for version in committed:  # each of them, read back by time travel, is one complete run
        dt = table.delta(version)
        assert dt is not None and dt.to_pyarrow_table(columns=["doc_id"]).num_rows >= ROWS_D


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_same_date_ingested_twice_at_once(where: str, request: pytest.FixtureRequest, procs: Procs,
                                          tmp_path: Path) -> None:
    """Two ingests of one date with different files: the dataset and its quarantine end as one run's pair."""
    lake, env = lake_and_env(where, request)
    dtable, qtable = dataset_table(lake, "unlabeled"), quarantine_table(lake, "unlabeled")
    sizes = (12_000, 9_000)
    runs = []
    for i, rows in enumerate(sizes):
        source = tmp_path / f"race-{i}.csv"
        write_corpus(CorpusSpec(rows=rows, labeled=False, seed=40 + i, dirty_fraction=0.05, id_prefix=f"r{i}-"),
                     source)
        args = [TEXTCLF, "ingest", "--lake", lake.uri, "--kind", "unlabeled", "--date", D2, "-q", str(source)]
        runs.append(procs.spawn(f"ingest-{i}", args, env=env))
    results = [procs.result(proc) for proc in runs]
    winners = [rows for rows, r in zip(sizes, results, strict=True) if r.returncode == 0]
    assert winners, [r.stderr[-2000:] for r in results]
    for r in results:  # a run whose quarantine another run replaced gives up, and says so
        if r.returncode != 0:
            assert_one_line_error(r, "ingest", 5, f"another run committed unlabeled data for {D2} meanwhile")
    manifest, quarantine = dtable.verify(D2), qtable.verify(D2)
    assert manifest["input_rows"] in winners
    assert manifest["ingest_run"] == quarantine["ingest_run"]
    assert quarantine["rows"] == manifest["quarantined_rows"] > 0
    assert manifest["rows"] + manifest["quarantined_rows"] + manifest["duplicates_removed"] == manifest["input_rows"]
    assert_engines_read(dtable, D2, manifest["rows"])
    assert_engines_read(qtable, D2, quarantine["rows"], unique=False)


def test_a_stalled_commit_does_not_interleave_with_another(lake: Lake, procs: Procs, tmp_path: Path) -> None:
    """Run A stalls with its files written, just before its Delta log entry (a slow disk or network, a paused
    VM), while run B scores the same date and commits; A then commits over B's snapshot, whole."""
    table = predictions_table(lake)
    old = table.require_summary(D)
    flag, go = tmp_path / "a-stalled", tmp_path / "a-go"
    a = procs.spawn("a", score_args(lake, D), patch=STALL_BEFORE_LOG,
                    env={"FAULT_FLAG": str(flag), "FAULT_GO": str(go)})
    wait_for("run A to stall before its log entry", flag.exists, a, procs)
    assert reader_view(lake, D, old) == "old"
    b = procs.run("b", score_args(lake, D))  # nothing of A's holds B up
    assert b.returncode == 0, b.stderr[-3000:]
    assert reader_view(lake, D, old) == "new"
    b_summary = table.require_summary(D)
    go.touch()
    result = procs.result(a)
    assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, b_summary) == "new"  # A's snapshot, whole, after B's
    assert versions_of_date(lake, D)[-1] == table.require_summary(D)["table_version"]


READER = """
import json, sys, time
from textclf.lake import Lake
from textclf.lake.tables import predictions_table
from tests.readers import duckdb_connection
table = predictions_table(Lake(sys.argv[1]))
con = duckdb_connection(table)
stop, out = sys.argv[2], open(sys.argv[3], "w")
query = (f"SELECT count(*), count(DISTINCT doc_id), list(DISTINCT model_version) FROM delta_scan('{table.uri}') "
         f"WHERE run_date = DATE '{sys.argv[4]}'")
import os
while not os.path.exists(stop):
    rows, ids, versions = con.execute(query).fetchone()
    out.write(json.dumps([rows, ids, sorted(versions)]) + "\\n")
    out.flush()
    time.sleep(0.02)
"""


def test_duckdb_reads_whole_snapshots_while_a_commit_is_in_flight(lake: Lake, base: dict, procs: Procs,
                                                                  tmp_path: Path) -> None:
    """A DuckDB ``delta_scan`` loop runs while the date is rescored with another model: before, during (files
    written, the commit held back for a while) and after the commit it reads one model's complete rows."""
    champion, other = base["versions"]
    flag, go, stop, seen = tmp_path / "stalled", tmp_path / "go", tmp_path / "stop", tmp_path / "seen.jsonl"
    reader = procs.spawn("reader", [sys.executable, "-c", READER, lake.uri, str(stop), str(seen), D],
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    wait_for("the reader's first read", lambda: seen.exists() and seen.stat().st_size > 0, reader, procs)
    writer = procs.spawn("rescore", score_args(lake, D, "--model-version", other), patch=STALL_BEFORE_LOG,
                         env={"FAULT_FLAG": str(flag), "FAULT_GO": str(go)})
    wait_for("the commit to be in flight", flag.exists, writer, procs)
    during = len(seen.read_text().splitlines())
    time.sleep(2)  # the reader keeps reading while every new file is written and the commit waits
    assert len(seen.read_text().splitlines()) > during + 5
    go.touch()
    assert procs.result(writer).returncode == 0
    end = time.monotonic() + 30
    while other not in seen.read_text() and time.monotonic() < end:
        time.sleep(0.1)
    stop.touch()
    assert procs.result(reader).returncode == 0, procs.stderr(reader)[-2000:]
    reads = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {tuple(r[2]) for r in reads} == {(champion,), (other,)}  # only ever one model's snapshot
    assert all(r[0] == r[1] == ROWS_D for r in reads), [r for r in reads if r[0] != ROWS_D][:3]
    first_new = next(i for i, r in enumerate(reads) if r[2] == [other])
    assert all(r[2] == [other] for r in reads[first_new:])  # once committed, never the old one again
    assert first_new > during  # the reads while the commit was in flight saw the previous snapshot


def race_writer(uri: str, out: Path, writer: int, dates: list[str], commits: int) -> str:
    """A child that commits ``commits`` one-file replacements of each date, through ``Table.commit``."""
    return f"""
import json, os, sys
import pyarrow as pa
from textclf.lake import Lake
from textclf.lake.tables import Table
table = Table(Lake({uri!r}), "race", "run_date", pa.schema([("doc_id", pa.string()), ("writer", pa.int64())]))
done = []
for n in range({commits}):
    for date in {dates!r}:
        with table.writer(date) as w:
            part = w.parquet("part-00000.parquet", table.schema)
            part.write(pa.table({{"doc_id": [f"{writer}-{{n}}-{{i}}" for i in range(5)], "writer": [{writer}] * 5}},
                                schema=table.schema))
            w.close_parquet(part)
            summary = w.commit({{"writer": {writer}, "n": n}})
        done.append([date, summary["commit_run"], summary["table_version"]])
open({str(out)!r}, "w").write(json.dumps(done))
"""


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_concurrent_delta_writers_lose_no_commit(where: str, tmp_path: Path, procs: Procs,
                                                 request: pytest.FixtureRequest) -> None:
    """Six processes commit to one table at once, two dates each shared with others, on a disk and on SeaweedFS:
    every commit a writer was told succeeded is one version of the table, in order, and every date ends with
    exactly one commit's rows. On S3 this rests on SeaweedFS honouring ``If-None-Match: *`` for each log entry."""
    if where == "local":
        uri, env = str(tmp_path / "lake"), {}
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = f"race-{uuid.uuid4().hex[:10]}"
        server.create_bucket(bucket)
        uri, env = f"s3://{bucket}/lake", server.env
    dates = ["2026-06-01", "2026-06-02", "2026-06-03"]
    writers = []
    for i in range(6):
        code = race_writer(uri, tmp_path / f"writer-{i}.json", i, [dates[i % 3], dates[(i + 1) % 3]], 4)
        writers.append(procs.spawn(f"writer-{i}", [sys.executable, "-c", code], env=env))
    for proc in writers:
        assert procs.result(proc).returncode == 0, procs.stderr(proc)[-3000:]
    done = [c for i in range(6) for c in json.loads((tmp_path / f"writer-{i}.json").read_text())]
    lake = Lake(uri, s3=S3Options(env["AWS_ENDPOINT_URL"], ACCESS_KEY, SECRET_KEY, "us-east-1") if env else None)
    table = Table(lake, "race", "run_date")
    dt = table.delta()
    assert dt is not None
    history = {e["version"]: (e.get("textclf") or {}).get("run") for e in dt.history()}
    assert len(done) == 48 and len({v for _, _, v in done}) == 48  # 48 commits, 48 distinct versions
    for date, run, version in done:
        assert history[version] == run, (date, run, version)  # each is the version it was told, none lost
    # Besides the 48 commits: the table's creation (version 0). Writers creating the table at the same instant
    # can leave a second creation entry (delta-rs's create in "ignore" mode, measured once on SeaweedFS): a
    # metadata-only version with no textclf run. Anything else would be a commit nobody was told about.
    operations = {e["version"]: e.get("operation") for e in dt.history()}
    others = sorted(set(range(dt.version() + 1)) - {v for _, _, v in done})
    assert others and others[0] == 0, others
    assert all(history.get(v) is None and str(operations.get(v)).startswith("CREATE") for v in others), \
        {v: operations.get(v) for v in others}
    snapshot = table.snapshot()
    assert snapshot is not None
    for date in dates:
        last = max((v, run) for d, run, v in done if d == date)[1]
        assert table.require_summary(date, snapshot)["commit_run"] == last  # the last commit of each date won
        assert snapshot.rows(date) == 5
        assert_engines_read(table, date, 5)


# -- 4. Two promotions racing --------------------------------------------------------------------------
def reset_champion(lake: Lake) -> None:
    lake.write_bytes(CHAMPION, json.dumps({"schema_version": 1, "champion": None, "history": []}).encode())


def race_promotions(lake: Lake, versions: tuple[str, str], procs: Procs, env: dict[str, str], round_: int,
                    stall: float | None) -> None:
    reset_champion(lake)
    patch, fault_env = None, {}
    if stall:  # each run pauses just before its conditional write: both decided against the same state
        patch = STALL_AT_CAS
        fault_env = {"FAULT_KEY": CHAMPION, "FAULT_STALL_S": str(stall)}
    runs = [procs.spawn(f"promote-{round_}-{i}", [TEXTCLF, "promote", "--lake", lake.uri, "--model-version", v],
                        env={**env, **fault_env}, patch=patch) for i, v in enumerate(versions)]
    outputs = []
    for proc in runs:
        result = procs.result(proc)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    state = json.loads(lake.read_bytes(CHAMPION))  # valid JSON
    history = state["history"]
    assert sorted(h["model_version"] for h in history) == sorted(versions), history  # both decisions kept
    first, second = history
    assert first["decision"] == "promoted" and first["champion"] is None
    # the second decision was made against the first one's outcome, not against a stale read
    assert second["champion"] is not None and second["champion"]["version"] == first["model_version"]
    assert state["champion"]["version"] in versions
    expected = second["model_version"] if second["promoted"] else first["model_version"]
    assert state["champion"]["version"] == expected
    assert outputs[versions.index(second["model_version"])]["champion"] == expected


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_racing_promotions_keep_both_decisions(where: str, base: dict, tmp_path: Path, procs: Procs,
                                               request: pytest.FixtureRequest) -> None:
    if where == "local":
        shutil.copytree(base["lake"], tmp_path / "lake")
        lake, env = Lake(str(tmp_path / "lake")), {}
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = f"race-{uuid.uuid4().hex[:10]}"
        server.create_bucket(bucket)
        env = server.env
        lake = Lake(f"s3://{bucket}/lake", s3=S3Options(endpoint_url=server.endpoint, access_key=ACCESS_KEY,
                                                          secret_key=SECRET_KEY, region="us-east-1"))
        for name in ["models", "datasets/labeled"]:
            sub = base["lake"] / name
            for path in sorted(sub.rglob("*")):
                if path.is_file():
                    lake.upload(str(path), str(path.relative_to(base["lake"])))
    for round_ in range(3):
        race_promotions(lake, base["versions"], procs, env, round_, stall=None)
    race_promotions(lake, base["versions"], procs, env, 3, stall=2.0)


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_lake_lock_is_exclusive_and_stale_locks_are_taken_over(where: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    uri = str(tmp_path / "lake") if where == "local" else request.getfixturevalue("s3_lake")
    lake, name, lock_key = Lake(uri), "models/champion.json", "_locks/models/champion.json.lock"
    with lake.lock(name):
        with pytest.raises(StorageError, match=r"champion\.json\.lock is held by pid \d+ on .* since"), \
                lake.lock(name, timeout=0.5):
            pass
        with lake.lock("models/other.json", timeout=0.5):  # another name is another lock
            pass
    assert not lake.exists(lock_key)
    with lake.lock(name, timeout=0.5):  # released
        pass

    # A process killed while holding the lock: the next one takes it over at once (dead pid on this host).
    holder = ("import os, signal; from textclf.lake import Lake\n"
              f"held = Lake({uri!r}).lock({name!r}); held.__enter__(); os.kill(os.getpid(), signal.SIGKILL)")
    dead = subprocess.run([sys.executable, "-c", holder], capture_output=True, text=True, timeout=120)
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    assert lake.exists(lock_key)
    with lake.lock(name, timeout=0.5):
        assert json.loads(lake.read_bytes(lock_key))["pid"] == os.getpid()
    # A lock older than the stale limit, held from another host: taken over too.
    lake.write_bytes(lock_key, json.dumps({"token": "x", "pid": 1, "host": "elsewhere",
                                           "acquired_at": time.time() - 3600}).encode())
    with lake.lock(name, timeout=0.5):
        assert json.loads(lake.read_bytes(lock_key))["pid"] == os.getpid()
    assert not lake.exists(lock_key)


# -- 5. A full disk --------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (needs root), unmounted at the end."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {mount.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_is_a_clear_storage_error(small_disk: Path, tmp_path: Path, procs: Procs) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(os.urandom(3 << 20))  # something else filled the disk: about 1 MiB is left
    source = tmp_path / "docs.csv"
    write_corpus(CorpusSpec(rows=10_000, labeled=False, seed=31, id_prefix="full-"), source)
    lake = Lake(str(small_disk / "lake"))
    args = [TEXTCLF, "ingest", "--lake", lake.uri, "--kind", "unlabeled", "--date", D, str(source)]
    result = procs.run("ingest-full", args)
    line = assert_one_line_error(result, "ingest", 5, "No space left on device")
    assert lake.uri in line
    assert dataset_table(lake, "unlabeled").snapshot() is None
    assert not [p for p in (small_disk / "lake").rglob("*") if p.is_file()]  # its files removed: the space is back

    ballast.unlink()
    result = procs.run("ingest-again", args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert dataset_table(lake, "unlabeled").verify(D)["rows"] == 10_000
