"""A real distributed Airflow 3.3 cluster on 127.0.0.1, for tests.

What runs, every process launched directly (its own PID known) with its log in a file:

* PostgreSQL (Debian package) as the metadata DB and Celery result backend, run as the ``postgres`` user
  when the tests run as root, on a throw-away data directory;
* Redis (Debian package) as the Celery broker;
* Airflow: ``api-server`` (REST API + the Execution API the workers talk to), ``scheduler``,
  ``dag-processor``, and two Celery workers: ``worker-default`` (queue ``default``) and ``worker-gpu``
  (queues ``gpu,default``: the GPU node, which also takes default work when idle).

The S3 lake is the SeaweedFS server of ``tests/s3server.py``. Each worker gets ``[core] hostname_callable``
= :func:`worker_hostname`, which returns the worker's name from its environment; the Task SDK records
that value in the task instance's ``hostname`` when the task starts, so a test can tell which worker ran
what. Stop order on exit: Airflow components (SIGINT), then Redis (SIGTERM) and PostgreSQL (SIGTERM);
descendants left behind by a stopped process are killed by PID.

Needs, besides Airflow and the Celery provider: ``asyncpg`` (Airflow 3 opens an async engine on a PostgreSQL
metadata DB in every process), ``psycopg2``, ``redis``, and a Celery the provider can import (3.26.0
imports ``celery.backends.database.retry``, which Celery 5.7.0 removed).

This module must stay importable without Airflow (the workers import it for ``worker_hostname``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.airflow_env import project_env

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_NAME_ENV = "TEXTCLF_AIRFLOW_WORKER"
DEFAULT_WORKER = "worker-default"
GPU_WORKER = "worker-gpu"
#: worker name -> Celery queues it consumes
WORKERS = {DEFAULT_WORKER: "default", GPU_WORKER: "gpu,default"}
ADMIN_USER = "admin"
DEBIAN_PACKAGES = ("postgresql", "redis-server")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the test workers: the worker's name, else the host's FQDN."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# -- Debian packages ------------------------------------------------------------------------------
def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` that has a server, if any."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def redis_binary() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                             else None)


def ensure_debian_packages(log: Path) -> None:
    """Install PostgreSQL and Redis from Debian packages when their servers are missing (needs root)."""
    if postgres_bindir() and redis_binary():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"PostgreSQL or redis-server is missing and this is not root: "
                           f"apt-get install {' '.join(DEBIAN_PACKAGES)} first")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends",
               *DEBIAN_PACKAGES]
    with open(log, "ab") as out:
        if subprocess.run(install, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900).returncode:
            subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], stdout=out,
                           stderr=subprocess.STDOUT, env=env, timeout=600, check=False)
            rc = subprocess.run(install, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900).returncode
            if rc:
                raise RuntimeError(f"apt-get install failed ({rc}):\n{log_tail(log)}")
    if not (postgres_bindir() and redis_binary()):
        raise RuntimeError(f"packages installed but no postgres/redis-server binary:\n{log_tail(log)}")


# -- processes ------------------------------------------------------------------------------------
@dataclass
class Service:
    """One process we started: its PID, its log file and how to stop it."""

    name: str
    process: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGINT
    _log_handle: Any = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 60) -> str:
        return log_tail(self.log, lines)

    def descendants(self) -> list:
        import psutil

        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []

    def send(self, sig: int | None = None) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig if sig is not None else self.stop_signal)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float, escalate: tuple[int, ...] = (signal.SIGKILL,)) -> None:
        """Wait for the process to exit; send each escalation signal in turn if it does not."""
        for sig in (None, *escalate):
            if sig is not None:
                self.send(sig)
            try:
                self.process.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def spawn(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
          stop_signal: int = signal.SIGINT, **popen: Any) -> Service:
    """Start ``cmd`` directly (no shell), in its own session, output to ``log``."""
    handle = open(log, "ab")  # noqa: SIM115 - closed by Service.wait
    proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=cwd, start_new_session=True, **popen)
    return Service(name, proc, log, stop_signal, handle)


def stop_services(services: list[Service], timeout: float = 30.0) -> dict[str, float]:
    """Signal all, wait for each (escalating to SIGKILL), then kill descendants they left behind.

    Returns the seconds each took to exit after the signal."""
    import psutil

    children = {s.name: s.descendants() for s in services}
    t0 = time.monotonic()
    for s in services:
        s.send()
    took = {}
    for s in services:
        s.wait(timeout)
        took[s.name] = round(time.monotonic() - t0, 1)
    for s in services:
        leftovers = [c for c in children[s.name] if c.is_running()]
        for child in leftovers:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers, timeout=5)
    return took


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5,
               diagnose: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; on timeout raise with diagnostics."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except ClusterError:
            raise
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last_error = exc
        if time.monotonic() > deadline:
            details = diagnose() if diagnose else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})"
                               f"\n{details}")
        time.sleep(interval)


class ClusterError(RuntimeError):
    """A component failed to come up, died, or a DAG run did not finish."""


# -- PostgreSQL and Redis ---------------------------------------------------------------------------
@dataclass
class Postgres:
    service: Service
    port: int
    user: str
    password: str
    base: Path  # data directory parent, outside pytest's root-only tmp tree

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname=database, connect_timeout=3)

    def create_database(self, name: str) -> None:
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def start_postgres(logdir: Path, timeout: float = 60.0) -> Postgres:
    """initdb a temp cluster and run ``postgres`` on 127.0.0.1 (as the postgres user when we are root)."""
    bindir = postgres_bindir()
    if bindir is None:
        raise ClusterError("no PostgreSQL server binary under /usr/lib/postgresql")
    as_root = os.geteuid() == 0
    # pytest's tmp tree is 0700 root: the postgres user cannot enter it, so the data lives in /tmp
    base = Path(tempfile.mkdtemp(prefix="textclf-pg-"))
    data, sockdir, pwfile = base / "data", base / "run", base / "pwfile"
    sockdir.mkdir()
    user, password = "airflow", secrets.token_hex(16)
    pwfile.write_text(password + "\n")
    run_as: dict[str, Any] = {}
    if as_root:
        run_as = {"user": "postgres", "group": "postgres", "extra_groups": []}
        for p in (base, sockdir, pwfile):
            shutil.chown(p, "postgres", "postgres")
    initdb_log = logdir / "initdb.log"
    with open(initdb_log, "wb") as out:
        rc = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}", "--auth-local=trust",
             "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
            stdout=out, stderr=subprocess.STDOUT, cwd=base, timeout=120, **run_as).returncode
    if rc:
        shutil.rmtree(base, ignore_errors=True)
        raise ClusterError(f"initdb failed ({rc}):\n{log_tail(initdb_log)}")
    port = free_port()
    service = spawn(
        "postgres",
        [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(sockdir),
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=300", "-c", "listen_addresses=127.0.0.1"],
        logdir / "postgres.log", cwd=base, stop_signal=signal.SIGTERM, **run_as)
    pg = Postgres(service, port, user, password, base)

    def ready() -> bool:
        if not service.alive():
            raise ClusterError(f"postgres exited with {service.process.returncode}:\n{service.tail()}")
        pg.connect().close()
        return True

    try:
        wait_until("PostgreSQL", ready, timeout, 0.2, service.tail)
    except BaseException:
        stop_postgres(pg)
        raise
    return pg


def stop_postgres(pg: Postgres) -> None:
    # SIGTERM (smart shutdown) is enough once Airflow has gone; then fast (SIGINT), immediate (SIGQUIT)
    pg.service.send(signal.SIGTERM)
    pg.service.wait(10, escalate=(signal.SIGINT, signal.SIGQUIT, signal.SIGKILL))
    shutil.rmtree(pg.base, ignore_errors=True)


@dataclass
class Redis:
    service: Service
    port: int
    password: str

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"


def start_redis(logdir: Path, timeout: float = 30.0) -> Redis:
    binary = redis_binary()
    if binary is None:
        raise ClusterError("redis-server is not installed")
    port, password = free_port(), secrets.token_hex(16)
    workdir = logdir / "redis"
    workdir.mkdir(exist_ok=True)
    service = spawn(
        "redis",
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", str(workdir), "--requirepass", password],
        logdir / "redis.log", cwd=workdir, stop_signal=signal.SIGTERM)

    def ready() -> bool:
        import redis

        if not service.alive():
            raise ClusterError(f"redis-server exited with {service.process.returncode}:\n{service.tail()}")
        return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2).ping()

    try:
        wait_until("Redis", ready, timeout, 0.1, service.tail)
    except BaseException:
        stop_services([service], timeout=10)
        raise
    return Redis(service, port, password)


# -- Airflow ----------------------------------------------------------------------------------------
@dataclass
class S3Target:
    """Where the lake lives: the test S3 server and a bucket on it."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    @property
    def lake_uri(self) -> str:
        return f"s3://{self.bucket}/lake"

    @property
    def aws_env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region}


def airflow_env(home: Path, dags_folder: Path, pg: Postgres, redis: Redis, api_port: int,
                s3: S3Target | None, export_aws_env: bool = False, scheduled_runs: bool = False,
                parallelism: int = 4) -> dict[str, str]:
    """The environment every Airflow process of the cluster shares.

    ``scheduled_runs=False`` turns off the timetables (``[scheduler] use_job_schedule``): only the runs a test
    triggers happen, no catchup or "latest interval" run appears when a DAG is unpaused. ``export_aws_env``
    also gives every process the S3 server's ``AWS_*`` variables (off: the lake's Connection must suffice)."""
    from cryptography.fernet import Fernet

    # nothing of an outer Airflow (or, unless exported, AWS) configuration leaks in
    dropped = ("AIRFLOW",) if export_aws_env else ("AIRFLOW", "AWS_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    no_proxy = ",".join(p for p in ("127.0.0.1", "localhost", os.environ.get("NO_PROXY", "")) if p)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **base,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PYTHONPATH": python_path,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        **project_env(home, dags_folder),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url("airflow"),
        "AIRFLOW__CELERY__BROKER_URL": redis.url(0),
        "AIRFLOW__CELERY__RESULT_BACKEND": pg.url("airflow", "db+postgresql+psycopg2"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        # parse quickly on start, look for new files often, re-parse unchanged files rarely
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled_runs),
        # the task supervisor may sleep up to this long after its task exits before it notices: keep it short
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    }
    if s3 is not None:
        env["AIRFLOW_VAR_TEXTCLF_LAKE"] = s3.lake_uri
        env["AIRFLOW_CONN_TEXTCLF_S3"] = json.dumps({
            "conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
            "extra": {"endpoint_url": s3.endpoint, "region_name": s3.region}})
        if export_aws_env:
            env.update(s3.aws_env)
    return env


class AirflowCluster:
    """The running cluster: services, the REST API, DAG-run helpers and diagnostics."""

    def __init__(self, workdir: Path, dags_folder: Path, s3: S3Target | None = None,
                 export_aws_env: bool = False, scheduled_runs: bool = False,
                 extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.home = workdir / "airflow_home"
        self.logdir = workdir / "logs"
        self.dags_folder = dags_folder
        self.s3 = s3
        self.export_aws_env = export_aws_env
        self.scheduled_runs = scheduled_runs
        self.extra_env = dict(extra_env or {})
        self.services: list[Service] = []  # Airflow components
        self.postgres: Postgres | None = None
        self.redis: Redis | None = None
        self.env: dict[str, str] = {}
        self.api_url = ""
        self.password = secrets.token_urlsafe(16)
        self.timings: dict[str, float] = {}
        self.stop_times: dict[str, float] = {}
        self._token: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> AirflowCluster:
        t0 = time.monotonic()
        import importlib.util

        if importlib.util.find_spec("asyncpg") is None:
            # Airflow 3 opens an async engine on the metadata DB in every process: postgresql+asyncpg
            raise ClusterError("asyncpg is not installed: Airflow 3 needs it with a PostgreSQL metadata DB")
        self.home.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        ensure_debian_packages(self.logdir / "apt.log")
        self._mark("packages", t0)
        self.redis = start_redis(self.logdir)
        self.postgres = start_postgres(self.logdir)
        self.postgres.create_database("airflow")
        self._mark("postgres+redis", t0)
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = airflow_env(self.home, self.dags_folder, self.postgres, self.redis, api_port, self.s3,
                               self.export_aws_env, self.scheduled_runs)
        self.env.update(self.extra_env)
        (self.home / "passwords.json").write_text(json.dumps({ADMIN_USER: self.password}))
        self.airflow("db", "migrate", timeout=300)
        self._mark("db migrate", t0)

        self._start_component("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(api_port)])
        self._start_component("scheduler", ["scheduler", "--skip-serve-logs"])
        self._start_component("dag-processor", ["dag-processor"])
        for name, queues in WORKERS.items():
            worker_env = {**self.env, WORKER_NAME_ENV: name,
                          "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"}
            self._start_component(name, [
                "celery", "worker", "--queues", queues, "--concurrency", "1", "--celery-hostname", name,
                "--skip-serve-logs", "--pid", str(self.home / f"{name}.pid"), "--without-mingle",
                "--without-gossip"], env=worker_env)

        deadline = time.monotonic() + timeout
        wait_until("the API server", lambda: self._health(), deadline - time.monotonic(), 0.5, self.report)
        self._mark("api-server up", t0)
        self.api("POST", "/api/v2/pools", {"name": "gpu", "slots": 1, "description": "GPU slots"})

        def components_healthy() -> bool:
            health = self._health()
            return all(health.get(c, {}).get("status") == "healthy" for c in ("scheduler", "dag_processor"))

        wait_until("scheduler and dag-processor heartbeats", components_healthy, deadline - time.monotonic(),
                   0.5, self.report)
        for name in WORKERS:
            wait_until(f"Celery worker {name}", lambda name=name: self._worker_ready(name),
                       deadline - time.monotonic(), 0.5, self.report)
        self._mark("cluster up", t0)
        return self

    def stop(self) -> None:
        self.stop_times = stop_services(list(reversed(self.services)), timeout=30)
        if self.redis is not None:
            stop_services([self.redis.service], timeout=10)
        if self.postgres is not None:
            stop_postgres(self.postgres)

    def _mark(self, what: str, t0: float) -> None:
        self.timings[what] = round(time.monotonic() - t0, 1)

    def _start_component(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Service:
        service = spawn(name, [self.airflow_bin, *args], self.logdir / f"{name}.log", env=env or self.env,
                        cwd=self.workdir, stop_signal=signal.SIGINT)
        self.services.append(service)
        return service

    @property
    def airflow_bin(self) -> str:
        candidate = Path(sys.executable).with_name("airflow")
        return str(candidate) if candidate.exists() else (shutil.which("airflow") or "airflow")

    def airflow(self, *args: str, timeout: float = 120) -> str:
        """Run an ``airflow`` CLI command with the cluster's environment; return its output."""
        log = self.logdir / f"cli-{args[0]}.log"
        proc = subprocess.run([self.airflow_bin, *args], env=self.env, cwd=self.workdir, capture_output=True,
                              text=True, timeout=timeout)
        with open(log, "a") as fh:
            fh.write(f"$ airflow {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
        if proc.returncode:
            raise ClusterError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-4000:]}")
        return proc.stdout

    def check_alive(self) -> None:
        for s in [*self.services, *([self.redis.service] if self.redis else []),
                  *([self.postgres.service] if self.postgres else [])]:
            if not s.alive():
                raise ClusterError(f"{s.name} (pid {s.pid}) exited with {s.process.returncode}:\n"
                                   f"{s.tail(80)}\n\n{self.report()}")

    def _health(self) -> dict:
        self.check_alive()
        return self.api("GET", "/api/v2/monitor/health", auth=False)

    def _worker_ready(self, name: str) -> bool:
        self.check_alive()
        return re.search(rf"celery@{re.escape(name)} ready", self._service(name).log.read_text(errors="replace")) \
            is not None

    def _service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    # -- REST API -------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            self._token = self.api("POST", "/auth/token", {"username": ADMIN_USER, "password": self.password},
                                   auth=False)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None, auth: bool = True, query: dict | None = None) -> Any:
        url = self.api_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=30) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc
        return json.loads(payload) if payload else None

    # -- DAGs and runs --------------------------------------------------------------------------
    def import_errors(self) -> list[dict]:
        return self.api("GET", "/api/v2/importErrors", query={"limit": 100})["import_errors"]

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 120) -> None:
        """Wait until the dag-processor has serialized every DAG; fail early on import errors."""
        def parsed() -> bool:
            self.check_alive()
            errors = self.import_errors()
            if errors:
                raise ClusterError("DAG import errors:\n" + "\n".join(
                    f"{e['filename']}:\n{e['stack_trace']}" for e in errors))
            known = {d["dag_id"] for d in self.api("GET", "/api/v2/dags", query={"limit": 100})["dags"]}
            return set(dag_ids) <= known

        wait_until(f"DAGs {dag_ids} to be parsed", parsed, timeout, 0.5, self.report)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, date: str | None = None, conf: dict | None = None) -> str:
        """Trigger a run; returns its run id.

        With ``date`` (``YYYY-MM-DD``) the run is the one a daily timetable schedules for that day: logical
        date D 00:00 UTC and data interval [D, D+1). (A bare manual trigger with logical date D, as
        ``airflow dags trigger --logical-date D`` does, gets [D-1, D) from a cron data-interval timetable.)"""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if date is not None:
            import datetime as dt

            day = dt.date.fromisoformat(date)
            body["logical_date"] = body["data_interval_start"] = f"{day.isoformat()}T00:00:00+00:00"
            body["data_interval_end"] = f"{(day + dt.timedelta(days=1)).isoformat()}T00:00:00+00:00"
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Poll a run until it ends; raise with task logs and process logs unless it succeeded."""
        def finished() -> str | None:
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        try:
            state = wait_until(f"{dag_id} run {run_id}", finished, timeout, 1.0)
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{self.report(dag_id, run_id)}") from None
        if state != "success":
            raise ClusterError(f"{dag_id} run {run_id} ended {state}\n{self.report(dag_id, run_id)}")
        return state

    def run_dag(self, dag_id: str, date: str | None = None, conf: dict | None = None,
                timeout: float = 300) -> str:
        """Unpause, trigger (see :meth:`trigger`) and wait for success; records the duration in ``timings``."""
        t0 = time.monotonic()
        self.unpause(dag_id)
        run_id = self.trigger(dag_id, date, conf)
        self.wait_for_run(dag_id, run_id, timeout)
        self.timings[f"run {dag_id}"] = round(time.monotonic() - t0, 1)
        if not any(t["state"] == "success" for t in self.task_instances(dag_id, run_id)):
            # e.g. a logical date before the DAG's start_date: Airflow creates no task instances
            raise ClusterError(f"{dag_id} run {run_id} succeeded without running a single task "
                               f"(logical date before the DAG's start_date?)")
        return run_id

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of a run (mapped ones included), with state, hostname, queue, pool."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        out: list[dict] = []
        while True:
            page = self.api("GET", path, query={"limit": 100, "offset": len(out)})
            out.extend(page["task_instances"])
            if not page["task_instances"] or len(out) >= page["total_entries"]:
                return out

    def task_log_files(self, dag_id: str, run_id: str) -> list[Path]:
        root = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        return sorted(root.rglob("*.log")) if root.exists() else []

    # -- diagnostics ----------------------------------------------------------------------------
    def report(self, dag_id: str | None = None, run_id: str | None = None, lines: int = 40) -> str:
        """Tails of every process log, plus the failed tasks' logs of a run when given."""
        parts = []
        if dag_id and run_id:
            try:
                tis = self.task_instances(dag_id, run_id)
                parts.append("task instances:\n" + "\n".join(
                    f"  {t['task_id']}[{t['map_index']}] {t['state']} host={t.get('hostname')} "
                    f"queue={t.get('queue')}" for t in tis))
                bad = {t["task_id"] for t in tis if t["state"] not in ("success", "skipped")}
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                parts.append(f"(task instances unavailable: {exc})")
                bad = None
            for path in self.task_log_files(dag_id, run_id):
                task = next((p.split("=", 1)[1] for p in path.parts if p.startswith("task_id=")), "")
                if bad is None or task in bad:
                    parts.append(f"==== task log {path.relative_to(self.home)} ====\n{log_tail(path, lines * 2)}")
        services = [*self.services, *([self.redis.service] if self.redis else []),
                    *([self.postgres.service] if self.postgres else [])]
        for s in services:
            state = "running" if s.alive() else f"exited {s.process.returncode}"
            parts.append(f"==== {s.name} (pid {s.pid}, {state}) {s.log} ====\n{s.tail(lines)}")
        return "\n".join(parts)


class ApiError(ClusterError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def airflow_cluster(workdir: Path, dags_folder: Path, s3: S3Target | None = None, export_aws_env: bool = False,
                    scheduled_runs: bool = False, extra_env: dict[str, str] | None = None
                    ) -> Iterator[AirflowCluster]:
    """Start the whole cluster; stop every process (by PID) on exit, also when start-up fails."""
    cluster = AirflowCluster(workdir, dags_folder, s3, export_aws_env, scheduled_runs, extra_env)
    try:
        cluster.start()
        yield cluster
    finally:
        t0 = time.monotonic()
        cluster.stop()
        cluster.timings["stop"] = round(time.monotonic() - t0, 1)


__all__ = ["AirflowCluster", "ClusterError", "S3Target", "airflow_cluster", "worker_hostname"]
