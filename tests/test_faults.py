"""Fault injection with real processes and real SeaweedFS servers on 127.0.0.1.

Faults: SIGKILL while scoring (between batches, between the data files and the manifest, halfway
through a shard commit) and while ingest commits, the S3 server killed while ingest, training and
scoring run, two scoring or ingest runs at once, two promotions racing, and a full disk. After each
fault a reader of the lake sees the old complete partition or none, never a mix; a failing command
says why in one line; a rerun completes. Monkeypatching is used only inside child processes, to
place a kill or a stall exactly.
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
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, _free_ports, weed_binary
from tests.test_scoring import check_contract
from textclf.config import IngestConfig, PromoteConfig, ScoreConfig, TrainConfig
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.errors import StorageError
from textclf.ingest.stage import ingest
from textclf.lake import Lake, S3Options
from textclf.lake.layout import CHAMPION, dataset_key, predictions_key, quarantine_key, shard_key
from textclf.model.registry import list_versions
from textclf.promote.stage import promote
from textclf.score.stage import score, score_shard

pytestmark = pytest.mark.integration

TEXTCLF = str(Path(sys.executable).with_name("textclf"))
D = "2026-05-01"  # 30,000 documents, scored once by the fixture: the "old complete partition"
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
KILL_AT_WRITE = """
_write = Lake.write_bytes
def write_bytes(self, key, data):
    if key.endswith(os.environ["FAULT_KEY"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return _write(self, key, data)
Lake.write_bytes = write_bytes
"""
KILL_AFTER_FIRST_COPY = """
_copy = Lake.copy
def copy(self, src, dst):
    _copy(self, src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
Lake.copy = copy
"""
STALL_AT_FIRST_COPY = """
_copy = Lake.copy
def copy(self, src, dst):
    if not os.path.exists(os.environ["FAULT_FLAG"]):
        open(os.environ["FAULT_FLAG"], "w").close()
        deadline = time.monotonic() + 600
        while not os.path.exists(os.environ["FAULT_GO"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    return _copy(self, src, dst)
Lake.copy = copy
"""
KILL_AT_COMMIT = """
from textclf.lake.partition import PartitionWriter
_commit = PartitionWriter.commit
def commit(self, fields=None):
    if self.key == os.environ["FAULT_KEY"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return _commit(self, fields)
PartitionWriter.commit = commit
"""
STALL_AT_WRITE = """
_write = Lake.write_bytes
def write_bytes(self, key, data):
    if key.endswith(os.environ["FAULT_KEY"]):
        open(os.environ["FAULT_FLAG"], "w").close()
        deadline = time.monotonic() + float(os.environ.get("FAULT_STALL_S", "600"))
        while not os.path.exists(os.environ.get("FAULT_GO", "/nonexistent")) and time.monotonic() < deadline:
            time.sleep(0.05)
    return _write(self, key, data)
Lake.write_bytes = write_bytes
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
    """What a reader of the predictions of ``date`` sees: "old", "absent" or "new"; a mix fails here."""
    manifest = lake.read_manifest(predictions_key(date))
    if manifest is None:
        return "absent"
    check_contract(lake, date)  # every listed file present with its checksum, one row per document
    return "old" if manifest == old else "new"


def staged_parquet(lake: Lake, prefix: str, min_bytes: int) -> bool:
    root = Path(lake.path(prefix))
    return any(p.stat().st_size >= min_bytes for p in root.glob("**/_staging-*/*.parquet") if p.exists())


def score_args(lake: Lake | str, date: str, *extra: str) -> list[str]:
    uri = lake.uri if isinstance(lake, Lake) else lake
    return [TEXTCLF, "score", "--lake", uri, "--date", date, "--batch-rows", BATCH, "-q", *extra]


# -- 1. SIGKILL while scoring -----------------------------------------------------------------------
def test_sigkill_while_scoring_leaves_the_old_partition_or_none(lake: Lake, procs: Procs) -> None:
    key = predictions_key(D)
    old = lake.require_manifest(key)

    # Killed while batches stream into the shard's staging file: the old partition is still served.
    proc = procs.spawn("streaming", score_args(lake, D))
    wait_for("scored batches in a staging file", lambda: staged_parquet(lake, "predictions/_shards", 64 << 10),
             proc, procs)
    sigkill(proc)
    assert reader_view(lake, D, old) == "old"

    # Killed between the data files and the manifest: the old manifest is gone, the new one never came.
    proc = procs.spawn("at-manifest", score_args(lake, D), env={"FAULT_KEY": f"{key}/_MANIFEST.json"},
                       patch=KILL_AT_WRITE)
    assert proc.wait(timeout=300) == -signal.SIGKILL, procs.stderr(proc)[-3000:]
    assert reader_view(lake, D, old) == "absent"
    # The new data files are already in place: a mix on disk, which readers of manifested partitions never see.
    assert any(f.endswith(".parquet") for f in lake.list_files(key))

    # A rerun publishes one complete partition and clears what the killed runs left behind, including the
    # lock the run killed inside its commit still held (its holder is a dead process on this host).
    assert lake.exists(f"_locks/{key}.lock")
    result = procs.run("rerun", score_args(lake, D))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "taking over the stale lock" in result.stderr and not lake.exists(f"_locks/{key}.lock")
    assert reader_view(lake, D, old) == "new"
    manifest, rows = check_contract(lake, D)
    assert manifest["rows"] == len(rows) == ROWS_D
    assert sorted(lake.list_files(key)) == sorted(f"{key}/{n}" for n in [f["path"] for f in manifest["files"]]
                                                    + ["_MANIFEST.json"])
    assert not lake.list_files("predictions/_shards")


def test_sigkill_one_shard_then_its_commit(lake: Lake, procs: Procs, tmp_path: Path) -> None:
    key = predictions_key(D)
    old = lake.require_manifest(key)
    shards = ("--shards", "3")
    for shard in (0, 2):
        result = procs.run(f"shard{shard}", score_args(lake, D, *shards, "--shard", str(shard)))
        assert result.returncode == 0, result.stderr[-3000:]

    # Shard 1 is killed while it streams: nothing of it is visible, and the commit refuses to publish.
    proc = procs.spawn("shard1-killed", score_args(lake, D, *shards, "--shard", "1"))
    wait_for("shard 1 streaming", lambda: staged_parquet(lake, shard_key(D, 1, 3), 16 << 10), proc, procs)
    sigkill(proc)
    assert lake.read_manifest(shard_key(D, 1, 3)) is None
    result = procs.run("commit-refused", score_args(lake, D, *shards, "--commit-only"))
    assert_one_line_error(result, "score", 5, "shard 1 of 3")
    assert reader_view(lake, D, old) == "old"

    # Only shard 1 is rerun; shards 0 and 2 are not rescored.
    before = {s: lake.require_manifest(shard_key(D, s, 3))["created_at"] for s in (0, 2)}
    result = procs.run("shard1", score_args(lake, D, *shards, "--shard", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert {s: lake.require_manifest(shard_key(D, s, 3))["created_at"] for s in (0, 2)} == before

    # Shard 2 is rescored (in this process) while a commit has read the shard manifests and is about to copy
    # their files: the commit notices and refuses instead of publishing a file under another file's checksum.
    flag, go = tmp_path / "commit-stalled", tmp_path / "commit-go"
    proc = procs.spawn("commit-stalled", score_args(lake, D, *shards, "--commit-only"), patch=STALL_AT_FIRST_COPY,
                       env={"FAULT_FLAG": str(flag), "FAULT_GO": str(go)})
    wait_for("the commit to stall before its first copy", flag.exists, proc, procs)
    score_shard(lake, ScoreConfig(date=D, num_shards=3, batch_rows=2048, shard=2))
    go.touch()
    assert_one_line_error(procs.result(proc), "score", 5, "shard 2 of 3 for 2026-05-01 was rescored")
    assert reader_view(lake, D, old) == "old"

    # The commit is killed right after its first copy: the old partition is still served whole.
    proc = procs.spawn("commit-killed", score_args(lake, D, *shards, "--commit-only"), patch=KILL_AFTER_FIRST_COPY)
    assert proc.wait(timeout=300) == -signal.SIGKILL, procs.stderr(proc)[-3000:]
    assert reader_view(lake, D, old) == "old"
    assert all(lake.read_manifest(shard_key(D, s, 3)) for s in range(3))  # every shard intact for the retry

    result = procs.run("commit", score_args(lake, D, *shards, "--commit-only"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, old) == "new"
    manifest, rows = check_contract(lake, D)
    assert manifest["num_shards"] == 3 and len(manifest["files"]) == 3 and len(rows) == ROWS_D
    assert not lake.list_files("predictions/_shards")


def test_sigkill_between_the_quarantine_and_the_dataset_commit(lake: Lake, procs: Procs, tmp_path: Path) -> None:
    """Ingest commits the quarantine, then the dataset; killed in between, validation names the mismatch."""
    key, qkey = dataset_key("unlabeled", D2), quarantine_key("unlabeled", D2)
    old = lake.require_manifest(key)
    source = tmp_path / "dirty.csv"
    write_corpus(CorpusSpec(rows=5_000, labeled=False, seed=22, dirty_fraction=0.05, id_prefix="dirty-"), source)
    ingest_args = [TEXTCLF, "ingest", "--lake", lake.uri, "--kind", "unlabeled", "--date", D2, "-q", str(source)]
    validate_args = [TEXTCLF, "validate", "--lake", lake.uri, "--kind", "unlabeled", "--date", D2, "-q"]
    result = procs.run("ingest", ingest_args, patch=KILL_AT_COMMIT, env={"FAULT_KEY": key})
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert lake.read_manifest(key) == old  # readers still see the old complete dataset
    lake.verify(key)
    assert lake.verify(qkey)["ingest_run"] != old["ingest_run"]  # beside a quarantine of the dead run

    line = assert_one_line_error(procs.run("validate", validate_args), "validate", 4, "another ingest run")
    assert f"rerun ingest for unlabeled {D2}" in line

    result = procs.run("ingest-again", ingest_args)  # takes over the dead run's lock at once
    assert result.returncode == 0, result.stderr[-3000:]
    manifest, quarantine = lake.verify(key), lake.verify(qkey)
    assert manifest["ingest_run"] == quarantine["ingest_run"]
    assert quarantine["rows"] == manifest["quarantined_rows"] > 0
    assert manifest["rows"] + manifest["quarantined_rows"] + manifest["duplicates_removed"] == 5_000
    # the killed run's staging folder (its writer a dead process on this host) went with the commit
    assert not [k for k in lake.list_files(key) if "/_staging-" in k]
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
    """A staging file of ``prefix`` is being uploaded right now (pyarrow streams files as multipart uploads)."""
    bucket, _, root = lake.root.partition("/")
    uploads = own_s3.client().list_multipart_uploads(Bucket=bucket, Prefix=f"{root}/{prefix}").get("Uploads", [])
    return any("/_staging-" in u["Key"] for u in uploads)


def assert_s3_failure(result: subprocess.CompletedProcess, command: str, own_s3: RestartableS3, lake: Lake) -> None:
    host = own_s3.endpoint.split("://", 1)[1]
    assert_one_line_error(result, command, 5, host, lake.uri.split("/lake", 1)[0])


@pytest.mark.s3
def test_s3_server_dies_during_ingest(own_s3: RestartableS3, s3_copy: Lake, procs: Procs, base: dict,
                                      tmp_path: Path) -> None:
    lake, key = s3_copy, dataset_key("unlabeled", D2)
    old = lake.require_manifest(key)
    source = tmp_path / "big.csv"
    # large enough that its data file is still uploading when the poll below looks (60,000 once finished first)
    write_corpus(CorpusSpec(rows=BIG_ROWS, labeled=False, seed=21, id_prefix="big-"), source)
    args = [TEXTCLF, "ingest", "--lake", lake.uri, "--kind", "unlabeled", "--date", D2, str(source)]
    proc = procs.spawn("ingest", args, env=own_s3.env)
    wait_for("a data file being uploaded", lambda: multipart_in_progress(own_s3, lake, key), proc, procs)
    own_s3.kill()
    assert_s3_failure(procs.result(proc), "ingest", own_s3, lake)

    own_s3.start()
    assert lake.read_manifest(key) == old  # the old complete partition, untouched
    lake.verify(key)
    result = procs.run("ingest-again", args, env=own_s3.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert lake.verify(key)["rows"] == BIG_ROWS


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
    lake, key = s3_copy, predictions_key(D)
    old = lake.require_manifest(key)
    proc = procs.spawn("score", score_args(lake, D), env=own_s3.env)
    wait_for("scored batches being uploaded", lambda: multipart_in_progress(own_s3, lake, "predictions/_shards"),
             proc, procs)
    own_s3.kill()
    assert_s3_failure(procs.result(proc), "score", own_s3, lake)

    own_s3.start()
    assert reader_view(lake, D, old) in ("old", "absent")
    result = procs.run("score-again", score_args(lake, D), env=own_s3.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, old) == "new"


# -- 3. Two scoring runs at once ------------------------------------------------------------------------
def test_two_dates_scored_at_once(lake: Lake, procs: Procs) -> None:
    old = lake.require_manifest(predictions_key(D))
    runs = [procs.spawn(f"score-{d}", score_args(lake, d, "--batch-rows", "2048")) for d in (D, D2)]
    for proc in runs:
        result = procs.result(proc)
        assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, old) == "new"
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
    lake, env = lake_and_env(where, request)
    old = lake.require_manifest(predictions_key(D))
    runs = [procs.spawn(f"score-{i}", score_args(lake, D, "--batch-rows", "2048"), env=env) for i in range(2)]
    results = [procs.result(proc) for proc in runs]
    assert any(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    for r in results:  # a run that loses the race says so in one line naming the date; which line depends on
        if r.returncode != 0:  # where the other run's commit caught it (its staging, or its shards, taken)
            assert_one_line_error(r, "score", 5, D)
    assert reader_view(lake, D, old) == "new"
    assert not [k for k in lake.list_files("predictions") if "/_staging-" in k]  # the loser cleaned up


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_same_date_ingested_twice_at_once(where: str, request: pytest.FixtureRequest, procs: Procs,
                                          tmp_path: Path) -> None:
    """Two ingests of one date with different files: the dataset and its quarantine end as one run's pair."""
    lake, env = lake_and_env(where, request)
    key, qkey = dataset_key("unlabeled", D2), quarantine_key("unlabeled", D2)
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
    for r in results:
        if r.returncode != 0:
            assert_one_line_error(r, "ingest", 5, "another run committed this partition meanwhile")
    manifest, quarantine = lake.verify(key), lake.verify(qkey)
    assert manifest["input_rows"] in winners
    assert manifest["ingest_run"] == quarantine["ingest_run"]
    assert quarantine["rows"] == manifest["quarantined_rows"] > 0
    assert manifest["rows"] + manifest["quarantined_rows"] + manifest["duplicates_removed"] == manifest["input_rows"]
    assert not [k for k in lake.list_files("datasets") + lake.list_files("quarantine") if "/_staging-" in k]


def test_a_stalled_commit_does_not_interleave_with_another(lake: Lake, procs: Procs, tmp_path: Path) -> None:
    """Run A stalls between moving its files into place and writing its manifest (a slow disk or network,
    a paused VM) while run B scores the same date; both must not publish a manifest over the other's files."""
    key = predictions_key(D)
    old = lake.require_manifest(key)
    flag, go = tmp_path / "a-stalled", tmp_path / "a-go"
    a = procs.spawn("a", score_args(lake, D), patch=STALL_AT_WRITE,
                    env={"FAULT_KEY": f"{key}/_MANIFEST.json", "FAULT_FLAG": str(flag), "FAULT_GO": str(go)})
    wait_for("run A to stall before its manifest", flag.exists, a, procs)
    b = procs.spawn("b", [a for a in score_args(lake, D) if a != "-q"])  # B logs its steps
    wait_for("run B to commit its shard", lambda: "shard=00000-of-00001 (" in procs.stderr(b), b, procs)
    deadline = time.monotonic() + 5  # then B either finishes (nothing stops it) or waits for A's commit
    while b.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    go.touch()
    for proc in (a, b):
        result = procs.result(proc)
        assert result.returncode == 0, result.stderr[-3000:]
    assert reader_view(lake, D, old) == "new"


# -- 4. Two promotions racing --------------------------------------------------------------------------
def reset_champion(lake: Lake) -> None:
    lake.write_bytes(CHAMPION, json.dumps({"schema_version": 1, "champion": None, "history": []}).encode())


def race_promotions(lake: Lake, versions: tuple[str, str], procs: Procs, env: dict[str, str], round_: int,
                    stall: float | None) -> None:
    reset_champion(lake)
    patch, fault_env = None, {}
    if stall:  # each run pauses just before writing champion.json, so without a lock both write a stale copy
        patch = STALL_AT_WRITE
        fault_env = {"FAULT_KEY": CHAMPION, "FAULT_FLAG": os.devnull, "FAULT_STALL_S": str(stall)}
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
    key = dataset_key("unlabeled", D)
    assert lake.read_manifest(key) is None
    assert not [p for p in (small_disk / "lake").rglob("*") if p.is_file()]  # staging removed: the space is back

    ballast.unlink()
    result = procs.run("ingest-again", args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert lake.verify(key)["rows"] == 10_000
