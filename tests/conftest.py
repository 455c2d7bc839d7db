"""Shared fixtures: a real SeaweedFS S3 server on loopback, and lakes on disk and on S3."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.airflow_env import project_env
from tests.s3server import S3Server, start_s3_server
from textclf.config import TrainConfig
from textclf.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
AIRFLOW_HOME_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Airflow reads its configuration once, at import: point it at this project before any test imports it."""
    home = tempfile.mkdtemp(prefix="textclf-airflow-home-")
    config.stash[AIRFLOW_HOME_KEY] = home
    os.environ.update({**project_env(home), "AIRFLOW__CORE__UNIT_TEST_MODE": "False"})
    _guard_processes()


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(AIRFLOW_HOME_KEY, None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS server for the session, stopped by its PID at the end."""
    server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the standard AWS variables at the test server."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def s3_lake(s3_env: S3Server) -> str:
    """A fresh bucket on the real S3 server, as a lake URI."""
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    s3_env.create_bucket(bucket)
    return f"s3://{bucket}/lake"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a local-directory lake and on an S3 lake."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_lake")


def write_csv(path: Path, rows: list[tuple], header: tuple = ("id", "text", "label")) -> Path:
    """Write rows as CSV with the csv module (quoting as a spreadsheet would)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def train_evaluated(lake: Lake, config: TrainConfig, explain_count: int = 2, linear_reference: bool = True) -> str:
    """Train a version and evaluate it, as ``textclf train`` does; returns the version id.

    ``explain_count=0`` and ``linear_reference=False`` skip the report's LIME and reference sections
    (seconds each) where a test does not look at them.
    """
    from textclf.config import EvaluateConfig
    from textclf.evaluate.stage import evaluate
    from textclf.model.train import train

    version = train(lake, config).version
    evaluate(lake, EvaluateConfig(model_version=version, explain_count=explain_count,
                                  linear_reference=linear_reference))
    return version


# -- one small trained lake for the session --------------------------------------------------------------------------

LABELED_DATE = "2026-04-30"
SCORE_DATE = "2026-05-01"
# The default architecture, sized for tests of mechanics (registry, gate, scoring) rather than of accuracy: a
# selection budget too small for any challenger, so the anchor candidate alone is fitted (about 2 s, not the
# full selection's 7-14 s; tests/test_hashed_linear.py runs the full one). It still clears the gate's 0.70 floor.
# The epoch settings (10 steps, not 50; a 20,000-entry vocabulary) are for tests that switch architecture.
SMALL_DEFAULT = TrainConfig(epochs=4, max_tokens=20_000, min_steps_per_epoch=10, selection_budget_s=0.001)


@dataclass(frozen=True)
class TrainedLake:
    """A local lake: 900 labeled demo rows on LABELED_DATE, one trained and evaluated version of the
    default architecture (not promoted), and 400 dirty unlabeled rows on SCORE_DATE."""

    path: Path
    version: str

    def copy(self, dest: Path) -> str:
        """A copy to change (``shutil.copytree`` of a local lake: milliseconds); returns its URI."""
        shutil.copytree(self.path, dest)
        return str(dest)


def _build_trained_lake(root: Path) -> str:
    from textclf.config import IngestConfig
    from textclf.demo.corpus import CorpusSpec, write_corpus
    from textclf.ingest.stage import ingest

    lake = Lake(str(root / "lake"))
    labeled, unlabeled = root / "labeled.csv", root / "unlabeled.jsonl"
    write_corpus(CorpusSpec(rows=900, seed=11, id_prefix="l-"), labeled)
    ingest(lake, IngestConfig(kind="labeled", date=LABELED_DATE, sources=(str(labeled),)))
    version = train_evaluated(lake, SMALL_DEFAULT)
    write_corpus(CorpusSpec(rows=400, labeled=False, seed=12, dirty_fraction=0.05, id_prefix="u-"), unlabeled)
    ingest(lake, IngestConfig(kind="unlabeled", date=SCORE_DATE, sources=(str(unlabeled),)))
    return version


@pytest.fixture(scope="session")
def trained_lake(tmp_path_factory: pytest.TempPathFactory) -> TrainedLake:
    """The session's trained lake, built once (once for all pytest-xdist workers); read it, or ``copy`` it."""
    import fcntl
    import json

    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker has its own basetemp inside the session's: build the lake there, under a lock.
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "trained-lake"
    root.mkdir(exist_ok=True)
    done = root / "version.json"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(root / "lake", ignore_errors=True)  # what a failed build in another worker left
            done.write_text(json.dumps(_build_trained_lake(root)))
    return TrainedLake(root / "lake", json.loads(done.read_text()))


TIERS = ("unit", "data", "model", "dags", "integration")
# A test using one of these starts a server: it is an integration test whatever its file's tier.
SERVER_FIXTURES = {"s3_server", "s3_env", "s3_lake", "own_s3", "s3_copy"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put server tests in the integration tier, and refuse a test that names no tier."""
    untiered = []
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("s3") \
                or item.get_closest_marker("distributed"):
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            untiered.append(item.nodeid)
    if untiered:
        raise pytest.UsageError(f"tests without a tier marker ({', '.join(TIERS)}): {', '.join(untiered[:5])}")


# Outside the integration tier a test may not start a process, in its fixtures or its body: that is
# what keeps `make test-fast` fast, and it is enforced, not only labelled.
_PROCESS_POLICY: dict[str, object] = {"allowed": True, "test": ""}


# Read-only probes of the machine that libraries run and cache: the standard library's platform module
# (``uname -p`` when TensorFlow is imported, ``file -b python`` when croniter is) and joblib counting
# physical cores for scikit-learn (``lscpu``, ``cat /proc/cpuinfo``). They start no server and no Python.
MACHINE_PROBES = (("uname",), ("file", "-b"), ("lscpu",), ("cat", "/proc/cpuinfo"))


def _is_machine_probe(args: object) -> bool:
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else []
    return any(tuple(argv[:len(probe)]) == probe for probe in MACHINE_PROBES)


def _guard_processes() -> None:
    import subprocess

    original = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        if not _PROCESS_POLICY["allowed"] and not _is_machine_probe(args):
            raise AssertionError(f"{_PROCESS_POLICY['test']} starts a process ({args!r}) but is not marked "
                                 "integration")
        original(self, args, *rest, **kwargs)  # type: ignore[arg-type]

    subprocess.Popen.__init__ = guarded  # type: ignore[method-assign]


def _allow_processes(item: pytest.Item | None) -> None:
    _PROCESS_POLICY["allowed"] = item is None or bool(item.get_closest_marker("integration")
                                                     or item.get_closest_marker("slow"))
    _PROCESS_POLICY["test"] = item.nodeid if item is not None else ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):  # noqa: ANN201 - a hook wrapper
    _allow_processes(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):  # noqa: ANN201 - a hook wrapper
    _allow_processes(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item):  # noqa: ANN201 - a hook wrapper
    _allow_processes(None)  # session fixtures may be stopped after any test
    yield


@pytest.fixture(autouse=True)
def restore_textclf_logger() -> Iterator[None]:
    """``textclf.cli.main`` configures the ``textclf`` logger for a terminal (its own handler, no propagation);
    a test calling it in process must not take the log records away from the tests after it (caplog)."""
    import logging

    logger = logging.getLogger("textclf")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved
