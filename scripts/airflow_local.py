"""The embedded default: the project's DAGs on a local Airflow (SQLite, LocalExecutor) and a local lake.

    python scripts/airflow_local.py demo   # `make demo`: land the demo corpus, run the three DAGs
    python scripts/airflow_local.py serve  # `make airflow`: the Airflow UI on 127.0.0.1 with the DAGs

Everything lives under ``--home`` (default ``./demo``): ``airflow/`` (metadata DB, logs, config),
``lake/`` (the data lake) and ``logs/`` (each DAG run's full output). ``make clean`` removes it.
The demo runs the DAGs with ``airflow dags test``, one after the other as a deployment would run
them: ingestion and validation, retraining (with the promotion gate), then the nightly scoring of
the day's documents with its report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from airflow_env import project_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def airflow_env(home: Path) -> dict[str, str]:
    """Configuration for a single-machine Airflow whose state lives under ``home``."""
    port = os.environ.get("AIRFLOW__API__PORT", "8080")
    return {
        **os.environ,
        **project_env(home / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": port,
        # Links in task logs and the approval step; and where task processes reach the Execution API.
        "AIRFLOW__API__BASE_URL": os.environ.get("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{port}"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # Stored as the Variable textclf_lake by `provision` below (and the plugin's fallback too).
        "TEXTCLF_LAKE": str(home / "lake"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def airflow(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run an ``airflow`` command, its output to ``log``; on failure show the end of the log and exit."""
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run([str(BIN / "airflow"), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                              cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        sys.stderr.write("\n".join(tail) + f"\n\nairflow {' '.join(args)} failed; full log: {log}\n")
        sys.exit(proc.returncode)


def provision(env: dict[str, str], log: Path) -> None:
    """What the DAGs need in Airflow (the gpu pool, the textclf_lake Variable), from the definition the
    Docker deployment's init uses too: plugins/textclf_airflow/provision.py."""
    plugins = env["AIRFLOW__CORE__PLUGINS_FOLDER"]
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run([str(BIN / "python"), "-m", "textclf_airflow.provision"], stdout=out,
                              stderr=subprocess.STDOUT, cwd=ROOT, env={**env, "PYTHONPATH": plugins})
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        sys.stderr.write(f"{tail}\nprovision failed; full log: {log}\n")
        sys.exit(proc.returncode)


PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
SETTINGS_FILE = "dag_settings.json"


def demo_settings(home: Path) -> dict[str, str]:
    """The DAG settings ``demo`` ran with (its score start date), so ``serve`` parses the DAGs the same way."""
    path = home / "airflow" / SETTINGS_FILE
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def dag_state(log: Path) -> str:
    """The final state ``airflow dags test`` reported for its run."""
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if "DagRun Finished:" in line:
            return line.split("state=", 1)[1].split(",", 1)[0]
    return "unknown"


def demo(home: Path, day: str) -> dict[str, object]:
    from textclf.demo.stage import DemoConfig, land_demo_corpus
    from textclf.lake import Lake
    from textclf.lake.layout import CHAMPION, LANDING, data_docs_key, report_key, version_key
    from textclf.lake.tables import predictions_table

    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    env = airflow_env(home)
    # The score DAG schedules no interval before its start date: let it start on the demo's day, and keep
    # that setting for `serve`, so the UI parses the DAGs exactly as the demo ran them.
    settings = {"TEXTCLF_SCORE_START_DATE": day}
    env.update(settings)
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    (home / "airflow" / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    lake = Lake(env["TEXTCLF_LAKE"])
    started = time.perf_counter()
    # The day is named with the DAGs' own params rather than a logical date: `airflow dags test DAG DATE`
    # records the run as started at DATE's midnight, so the UI showed a 19-hour run.
    steps: list[tuple[str, list[str]]] = [
        ("metadata DB (SQLite), pool and Variable", ["db", "migrate"]),
        ("textclf_ingest: ingest and validate the landed files",
         ["dags", "test", "textclf_ingest", "--conf", json.dumps({"ingest_date": day})]),
        ("textclf_retrain: train, evaluate, promotion gate", ["dags", "test", "textclf_retrain"]),
        ("textclf_score: score the day's documents, report",
         ["dags", "test", "textclf_score", "--conf", json.dumps({"run_date": day})]),
    ]
    say(f"landing the demo corpus in {lake.uri_of(LANDING)}")
    land_demo_corpus(lake, DemoConfig(date=day))
    timings = {}
    for number, (title, args) in enumerate(steps, 1):
        say(f"[{number}/{len(steps)}] {title} ...")
        log = logs / f"{number}-{args[2] if args[0] == 'dags' else 'db-migrate'}.log"
        t0 = time.perf_counter()
        airflow(args, env, log)
        if args == ["db", "migrate"]:
            provision(env, logs / f"{number}-provision.log")
        timings[title.split(":")[0]] = round(time.perf_counter() - t0, 1)
        if args[0] == "dags" and (state := dag_state(log)) != "success":
            sys.exit(f"{args[2]} ended {state}; full log: {log}")
        say(f"      done in {timings[title.split(':')[0]]} s (log: {log})")
    champion = lake.read_json(CHAMPION)["champion"]["version"]
    predictions = predictions_table(lake).require_summary(day)
    return {
        "airflow_home": env["AIRFLOW_HOME"], "lake": lake.uri, "date": day, "champion": champion,
        "predictions": predictions["table"], "table_version": predictions["table_version"], "rows": predictions["rows"],
        "quarantined_rows": predictions["quarantined_rows"],
        "scoring_report": lake.uri_of(f"{report_key(day)}/report.html"),
        "model_report": lake.uri_of(f"{version_key(champion)}/report.html"),
        "data_docs": {k: lake.uri_of(data_docs_key(k, day))
                      for k in ("labeled", "unlabeled")},
        "quarantine": lake.uri_of("quarantine"), "seconds": round(time.perf_counter() - started, 1),
        "steps_seconds": timings,
    }


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


SERVICES = (["api-server"], ["scheduler", "--skip-serve-logs"], ["dag-processor"], ["triggerer", "--skip-serve-logs"])
#: After Ctrl-C: seconds for Airflow's own graceful shutdown, then after SIGTERM, before SIGKILL.
GRACE_SECONDS = 15.0
TERM_SECONDS = 5.0


def become_subreaper() -> bool:
    """Linux: orphans of our children (a scheduler's executor workers) are re-parented to us, so we reap them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap() -> None:
    """Collect exited children that are not ours through Popen (adopted orphans), so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def process_tree(groups: set[int]) -> dict[int, object]:
    """Every live process in one of our process groups, or descended from a group leader, by PID."""
    import psutil

    found: dict[int, object] = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) in groups and proc.pid != os.getpid():
                found[proc.pid] = proc
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    for leader in groups:
        try:
            found.update({c.pid: c for c in psutil.Process(leader).children(recursive=True)})
        except psutil.Error:
            continue
    return found


def stop_processes(procs: list[subprocess.Popen], grace: float = GRACE_SECONDS, term: float = TERM_SECONDS) -> None:
    """Stop every process we started and everything they started: SIGINT to each component (Airflow's own
    shutdown), SIGTERM to whatever is left after ``grace`` seconds, SIGKILL after ``term`` more; each by PID."""
    import psutil

    groups = {p.pid for p in procs}  # each component leads its own process group (start_new_session)
    tree = process_tree(groups)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        reap()
        time.sleep(0.2)
    for sig, wait in ((signal.SIGTERM, term), (signal.SIGKILL, term)):
        tree.update(process_tree(groups))
        alive = [pr for pr in tree.values() if _alive(pr)]  # type: ignore[arg-type]
        if not alive:
            break
        for pr in alive:
            with contextlib.suppress(psutil.Error):
                pr.send_signal(sig)  # type: ignore[attr-defined]
        end = time.monotonic() + wait
        while time.monotonic() < end and any(_alive(pr) for pr in alive):  # type: ignore[arg-type]
            for p in procs:
                p.poll()
            reap()
            time.sleep(0.2)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=1)
    reap()


def _alive(proc: object) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.Error:
        return False


def serve(home: Path) -> None:
    """The Airflow UI on 127.0.0.1 with the project's DAGs, until Ctrl-C (or SIGTERM).

    The components are started one by one rather than with ``airflow standalone``, whose log
    servers listen on every interface; here logs are local files the api-server reads itself.
    Each component leads its own process group, and this process adopts their orphans
    (a child subreaper), so :func:`stop_processes` finds and stops every process they started.
    """
    env = airflow_env(home)
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    env.update(demo_settings(home))
    airflow(["db", "migrate"], env, home / "logs" / "serve-db-migrate.log")
    provision(env, home / "logs" / "serve-provision.log")
    become_subreaper()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    procs: list[subprocess.Popen] = []
    try:
        for args in SERVICES:
            if stopping:
                break
            log = open(home / "logs" / f"serve-{args[0]}.log", "w", encoding="utf-8")  # noqa: SIM115 - open while it runs
            procs.append(subprocess.Popen([str(BIN / "airflow"), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True))
        port = env.get("AIRFLOW__API__PORT", "8080")
        say(f"Airflow UI on http://127.0.0.1:{port} with the textclf DAGs (logs in {home / 'logs'}/serve-*.log).\n"
            f"Log in as admin with the password in {home / 'airflow' / PASSWORD_FILE}.\n"
            "Ctrl-C stops it.")
        while not stopping and all(p.poll() is None for p in procs):
            reap()
            time.sleep(1)
    finally:
        stop_processes(procs)
    failed = [" ".join(a) for a, p in zip(SERVICES, procs, strict=False) if p.returncode not in (0, -2, -15, 130)]
    if failed and not stopping:
        sys.exit(f"airflow {failed[0]} stopped unexpectedly; see {home / 'logs'}/serve-*.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["demo", "serve"])
    parser.add_argument("--home", type=Path, default=ROOT / "demo", help="where the lake and Airflow live")
    parser.add_argument("--date", default=(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat(),
                        help="the demo's day (default: yesterday, as a nightly run would score)")
    args = parser.parse_args()
    home = args.home.resolve()
    if args.command == "serve":
        serve(home)
        return
    summary = demo(home, args.date)
    say(f"\nDone in {summary['seconds']} s. Everything is under {home}:")
    for label, key in (("predictions", "predictions"), ("scoring report", "scoring_report"),
                       ("model report", "model_report"), ("quarantine", "quarantine")):
        say(f"  {label:15} {summary[key]}")
    for kind, uri in summary["data_docs"].items():  # type: ignore[union-attr]
        say(f"  {'Data Docs':15} {uri} ({kind})")
    say(f"  {'Airflow home':15} {summary['airflow_home']} (`make airflow` opens the UI: user admin, password in "
        f"{Path(str(summary['airflow_home'])) / PASSWORD_FILE})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
