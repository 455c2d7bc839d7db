"""The operator's path through the Airflow UI, as ``make airflow`` serves it, in headless Chromium.

``scripts/airflow_local.py serve`` runs on a lake that already holds a day of ingested and validated
data and a champion (what ``make demo`` leaves, made here in-process to save time). Then, in the
browser: log in as ``admin`` with the generated password; trigger ``textclf_retrain`` from its form
with non-default params (``require_approval`` on); approve in the Human-in-the-loop step, whose
request shows the candidate vs champion table and links to the model report; see the champion
change; trigger ``textclf_score`` from its form; open the scoring report, the model report and the
Data Docs through the api-server, with every request to anything but that loopback server refused.

Both runs go through the real scheduler and the LocalExecutor (not ``dags test``, which ignores
pools): a task that stays ``queued`` or ``scheduled`` for ``STUCK_SECONDS`` fails the test with the
scheduler's log, which is how a missing ``gpu`` pool showed ("Tasks using non-existent pool 'gpu'
will not be scheduled").
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser import browser, screenshot

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-11-20"
STUCK_SECONDS = 90.0
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_lake(lake_dir: Path) -> str:
    """A day of ingested, validated data and a weak champion (1 epoch, forced): what ``make demo`` leaves."""
    from tests.conftest import train_evaluated
    from textclf.config import IngestConfig, PromoteConfig, TrainConfig, ValidationConfig
    from textclf.demo.stage import DemoConfig, land_demo_corpus
    from textclf.ingest.landing import find_landed
    from textclf.ingest.stage import ingest
    from textclf.lake import Lake
    from textclf.promote.stage import promote
    from textclf.validate.stage import validate

    lake = Lake(str(lake_dir))
    land_demo_corpus(lake, DemoConfig(date=DAY, labeled_rows=1500, unlabeled_rows=400, dirty_fraction=0.0))
    for kind in ("labeled", "unlabeled"):
        ingest(lake, IngestConfig(kind=kind, date=DAY, sources=tuple(find_landed(lake, kind, DAY))))
        validate(lake, ValidationConfig(kind=kind, date=DAY))
    version = train_evaluated(lake, TrainConfig(model="bow_mlp", epochs=1), explain_count=1)
    promote(lake, PromoteConfig(model_version=version, force=True))
    return version


@dataclass
class Served:
    base: str
    home: Path
    proc: subprocess.Popen
    log: Path
    seeded_champion: str
    _token: str | None = None
    seen: dict[int, Any] = field(default_factory=dict)

    @property
    def password(self) -> str:
        return json.loads((self.home / "airflow" / PASSWORD_FILE).read_text())["admin"]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        if self._token is None and path != "/auth/token":
            self._token = self.api("POST", "/auth/token", {"username": "admin", "password": self.password})[
                "access_token"]
        headers = {"Content-Type": "application/json"}
        if self._token and path != "/auth/token":
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.base + path, method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def tail(self, name: str, lines: int = 60) -> str:
        path = self.home / "logs" / f"serve-{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]

    def tasks(self, dag_id: str, run_id: str) -> dict[str, str]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        return {t["task_id"] + ("" if t["map_index"] < 0 else f"[{t['map_index']}]"): str(t["state"])
                for t in self.api("GET", path)["task_instances"]}

    def watch(self, dag_id: str, run_id: str, until: Any, timeout: float) -> dict[str, str]:
        """Poll a run until ``until(tasks, run_state)``; fail when a task is stuck queued/scheduled or the run fails."""
        assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
        waiting: dict[tuple[str, str], float] = {}
        queued_since: float | None = None
        deadline = time.monotonic() + timeout
        while True:
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
            tasks = self.tasks(dag_id, run_id)
            now = time.monotonic()
            for key in [k for k in waiting if tasks.get(k[0]) != k[1]]:
                del waiting[key]
            for task, state in tasks.items():
                if state in ("queued", "scheduled"):
                    since = waiting.setdefault((task, state), now)
                    assert now - since < STUCK_SECONDS, (
                        f"{dag_id}.{task} stayed {state} for {now - since:.0f} s: {tasks}\n"
                        f"scheduler log:\n{self.tail('scheduler')}")
            # A run the scheduler never starts (its DAG paused, max_active_runs reached) fails now, not at the end.
            queued_since = (queued_since or now) if run["state"] == "queued" else None
            if queued_since is not None and now - queued_since >= STUCK_SECONDS:
                self._fail(dag_id, f"run stayed queued for {now - queued_since:.0f} s", run, tasks)
            if until(tasks, run["state"]):
                return tasks
            assert run["state"] != "failed", f"{dag_id} run failed: {tasks}\n{self.tail('scheduler', 30)}"
            if now >= deadline:
                self._fail(dag_id, f"run not done in {timeout:.0f} s", run, tasks)
            time.sleep(2)

    def _fail(self, dag_id: str, what: str, run: dict[str, Any], tasks: dict[str, str]) -> None:
        paused = self.api("GET", f"/api/v2/dags/{dag_id}")["is_paused"]
        raise AssertionError(f"{dag_id} {what}: run {run['state']}, DAG paused: {paused}, tasks {tasks}\n"
                             f"api-server log:\n{self.tail('api-server', 40)}\n"
                             f"scheduler log:\n{self.tail('scheduler', 40)}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import psutil

    home = tmp_path_factory.mktemp("operator") / "demo"
    champion = _prepare_lake(home / "lake")
    (home / "airflow").mkdir(parents=True)
    (home / "airflow" / "dag_settings.json").write_text(json.dumps({"TEXTCLF_SCORE_START_DATE": DAY}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW", "TEXTCLF_"))}
    env.update({"AIRFLOW__API__PORT": str(port), "TEXTCLF_SCORE_POKE_SECONDS": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2"})
    log = home / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "airflow_local.py"), "serve", "--home",
                                 str(home)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    ui = Served(f"http://127.0.0.1:{port}", home, proc, log, champion)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{ui.base}/api/v2/monitor/health", timeout=3) as r:
                    health = json.loads(r.read())
                if all(health.get(c, {}).get("status") == "healthy" for c in ("scheduler", "dag_processor")):
                    dags = {d["dag_id"] for d in ui.api("GET", "/api/v2/dags")["dags"]}
                    if {"textclf_retrain", "textclf_score"} <= dags:
                        break
            except (OSError, urllib.error.URLError, KeyError):
                pass
            assert time.monotonic() < deadline, f"Airflow not up in 180 s: {log.read_text()[-3000:]}"
            time.sleep(2)
        ui.seen = {p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)}
        yield ui
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for p in ui.seen.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass


def _log_in(page: Any, ui: Served) -> None:
    page.goto(ui.base + "/", wait_until="load")
    page.wait_for_url("**/login**", timeout=60_000)
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ui.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "login" not in url, timeout=60_000)


def _open_trigger_form(page: Any, ui: Served, dag_id: str) -> Any:
    page.goto(f"{ui.base}/dags/{dag_id}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for(timeout=30_000)
    return dialog


def _new_run(ui: Served, dag_id: str, before: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [r for r in ui.runs(dag_id) if r["dag_run_id"] not in before]
        if new:
            return new[0]
        time.sleep(1)
    raise AssertionError(f"no new {dag_id} run after the form's Trigger")


@pytest.mark.timeout(1200)
def test_retrain_from_the_form_approve_score_and_read_every_report(served: Served, tmp_path: Path) -> None:
    ui = served
    with browser(allow_origins=(ui.base,)) as chrome:
        page = chrome.page()
        page.set_default_timeout(60_000)
        try:
            _log_in(page, ui)

            # -- retrain from the form, with non-default params -------------------------------------------
            before = {r["dag_run_id"] for r in ui.runs("textclf_retrain")}
            form = _open_trigger_form(page, ui, "textclf_retrain")
            model = form.get_by_role("combobox").first
            model.click()
            model.fill("bow_mlp")
            page.get_by_role("option", name="bow_mlp", exact=True).click()
            form.locator("input[name=element_epochs]").fill("3")
            form.locator("input[name=element_seed]").fill("7")
            form.locator("input[name=element_tolerance]").fill("1")
            form.locator("input[name=element_min_accuracy]").fill("0")
            form.locator("input[name=element_require_approval]").check(force=True)
            form.get_by_role("button", name="Trigger").click()
            run = _new_run(ui, "textclf_retrain", before)
            assert {k: run["conf"][k] for k in ("model", "epochs", "seed", "require_approval", "tolerance")} == {
                "model": "bow_mlp", "epochs": 3, "seed": 7, "require_approval": True, "tolerance": 1}
            run_id = run["dag_run_id"]
            ui.watch("textclf_retrain", run_id, lambda t, _: t.get("approve") == "awaiting_input", timeout=600)

            # -- the Human-in-the-loop step: the table, the report link, Approve ---------------------------
            page.goto(f"{ui.base}/dags/textclf_retrain/runs/{urllib.parse.quote(run_id)}/tasks/approve/"
                      "required_actions", wait_until="networkidle")
            page.get_by_role("button", name="Approve").wait_for()
            request = page.locator("main").inner_text() if page.locator("main").count() else page.inner_text("body")
            assert "candidate" in request and "champion" in request and ui.seeded_champion in request, request
            assert "test macro-F1" in request and "Model report" in request, request
            report_link = page.locator("a[href*='/textclf/lake/models/']").first.get_attribute("href")
            candidate = re.search(r"/textclf/lake/models/([^/]+)/report\.html", report_link or "")
            assert candidate, report_link
            page.fill("input[name=element_reason]", "better on every class in the report")
            page.get_by_role("button", name="Approve").click()
            tasks = ui.watch("textclf_retrain", run_id, lambda t, state: state == "success", timeout=300)
            assert tasks == {"cooldown": "success", "train": "success", "evaluate": "success", "gate": "success",
                             "approve": "success", "promote": "success", "publish_champion": "success"}, tasks

            # -- the champion changed, with who approved it -----------------------------------------------
            champion = json.loads((ui.home / "lake" / "models" / "champion.json").read_text())
            assert champion["champion"]["version"] == candidate.group(1) != ui.seeded_champion
            assert champion["champion"]["approved_by"] == "admin"
            page.goto(f"{ui.base}/textclf/lake/models/champion.json")
            assert candidate.group(1) in page.inner_text("body")
            page.goto(urllib.parse.urljoin(ui.base, report_link or ""), wait_until="load")
            assert page.title() == f"Model {candidate.group(1)} (bow_mlp): evaluation"

            # -- score from the form; unpausing starts no other run ---------------------------------------
            form = _open_trigger_form(page, ui, "textclf_score")
            form.locator("input[name=element_run_date]").fill(DAY)
            form.locator("input[name=element_shards]").fill("1")
            form.get_by_role("button", name="Trigger").click()
            run = _new_run(ui, "textclf_score", set())
            assert run["conf"]["run_date"] == DAY and run["conf"]["shards"] == 1, run["conf"]
            tasks = ui.watch("textclf_score", run["dag_run_id"], lambda t, state: state == "success", timeout=400)
            assert tasks["commit"] == "success" and tasks["report"] == "success", tasks
            time.sleep(5)  # the scheduler had time to create a catch-up or "latest interval" run, if it would
            assert [r["dag_run_id"] for r in ui.runs("textclf_score")] == [run["dag_run_id"]]

            # -- every report of the run, through the api-server, with no network -------------------------
            page.goto(f"{ui.base}/dags/textclf_score/runs/{urllib.parse.quote(run['dag_run_id'])}/tasks/report",
                      wait_until="networkidle")
            page.get_by_text("scoring report:").first.wait_for()
            logged = re.search(r"scoring report: (\S+/report\.html)", page.inner_text("body"))
            assert logged, page.inner_text("body")[-2000:]
            page.goto(logged.group(1), wait_until="load")
            assert page.title() == f"Scoring report {DAY}: model {candidate.group(1)}"
            page.goto(f"{ui.base}/textclf/lake/validation/unlabeled/ingest_date={DAY}/data_docs/index.html",
                      wait_until="load")
            page.wait_for_function("() => document.querySelectorAll('.bootstrap-table tbody tr[data-index]')"
                                   ".length > 0", timeout=30_000)
            assert "unlabeled_critical" in page.inner_text("body")
            response = page.goto(f"{ui.base}/textclf/lake/landing/labeled/")
            assert response is not None and response.status == 404  # only reports and Data Docs are served
        except BaseException:
            screenshot(page, tmp_path / "operator.png")
            raise
        assert chrome.blocked == [], chrome.blocked
