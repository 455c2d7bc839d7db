"""The Docker deployment, built and started for real (``make test-docker``; see tests/docker_stack.py).

A private dockerd builds the images (official bases where they can be pulled, local stand-ins
otherwise), ``docker compose -f docker/docker-compose.yml -f docker/compose.test.yml up`` starts
PostgreSQL, Redis, SeaweedFS, airflow-init, the api-server, scheduler, dag-processor, triggerer, a
``default`` worker and a ``gpu,default`` worker on the host network, bound to 127.0.0.1. Then, as a
user would: the demo files land in the S3 lake (boto3), the three DAGs are triggered through the REST
API with a token, and the predictions are read back from SeaweedFS and held to the contract.

Runs only with ``TEXTCLF_DOCKER_TESTS=1`` (``make test-docker`` sets it): it needs root and about ten
minutes. The gpu worker runs the CPU image unless ``TEXTCLF_DOCKER_GPU=1`` (``make test-docker-gpu``,
part of ``make test-slow``) builds the CUDA image for it, which adds about 3 GB of wheels and 7 minutes.
``TEXTCLF_DOCKER_KEEP=1`` keeps the images for the next run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.docker_stack import (
    AIRFLOW_SERVICES,
    CACHE_DIR,
    INFRA_SERVICES,
    INIT_SERVICE,
    ComposeStack,
    DockerDaemon,
    RunSettings,
    Timings,
    build_gpu_image,
    compose_airflow,
    ensure_host_packages,
    keep,
    make_base_image,
    make_infra_images,
    scan_for_secrets,
    serve_directory,
    start_daemon,
    wheelhouse,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("TEXTCLF_DOCKER_TESTS") != "1",
                       reason="the Docker tier runs with `make test-docker` (TEXTCLF_DOCKER_TESTS=1)"),
    # the first test also pays for the images and the start of the stack (the module's fixture)
    pytest.mark.timeout(3600),
]

DAY = "2026-03-02"
LABELED_ROWS, UNLABELED_ROWS, DIRTY_FRACTION = 6000, 2000, 0.02  # the demo corpus's sizes
SHARDS = 2
BUCKET, LAKE_PREFIX = "textclf", "lake"
CPU_IMAGE, GPU_IMAGE = "textclf-airflow:latest", "textclf-airflow-gpu:latest"
WORKER_HOSTS = {"airflow-worker-cpu": "textclf-worker-cpu", "airflow-worker-gpu": "textclf-worker-gpu"}
AIRFLOW_UID = "50000"


@dataclass
class Deployment:
    daemon: DockerDaemon
    stack: ComposeStack
    settings: RunSettings
    airflow: Any
    built: dict[str, str]  # role -> image this run built (or pulled)
    gpu: bool
    timings: Timings
    workdir: Path
    facts: dict[str, Any] = field(default_factory=dict)

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.settings["TEXTCLF_S3_ENDPOINT"], region_name="us-east-1",
                            aws_access_key_id=self.settings["TEXTCLF_S3_ACCESS_KEY"],
                            aws_secret_access_key=self.settings["TEXTCLF_S3_SECRET_KEY"])


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if os.geteuid() != 0:
        pytest.fail("the Docker tier starts its own dockerd and needs root")
    workdir = tmp_path_factory.mktemp("docker")
    logdir = workdir / "logs"
    logdir.mkdir()
    timings = Timings()
    gpu = build_gpu_image()
    failed_before = request.session.testsfailed
    with timings.step("host packages"):
        ensure_host_packages(logdir / "apt.log")
    data_root = CACHE_DIR / "docker-data" if keep() else workdir / "docker-data"
    with timings.step("start dockerd"):
        daemon = start_daemon(data_root, logdir)
    stack: ComposeStack | None = None
    ok = False
    try:
        base = make_base_image(daemon, workdir, timings)
        infra = make_infra_images(daemon, workdir, timings)
        house = wheelhouse(daemon, base, gpu, logdir, timings)
        settings = RunSettings.generate()
        settings.values.update({
            "TEXTCLF_TEST_BASE_IMAGE": base,
            "TEXTCLF_TEST_POSTGRES_IMAGE": infra["postgres"],
            "TEXTCLF_TEST_REDIS_IMAGE": infra["redis"],
            "TEXTCLF_TEST_SEAWEEDFS_IMAGE": infra["seaweedfs"],
            "TEXTCLF_TEST_GPU_WORKER_IMAGE": GPU_IMAGE if gpu else CPU_IMAGE,
            "TEXTCLF_IMAGE": CPU_IMAGE, "TEXTCLF_GPU_IMAGE": GPU_IMAGE,
            "TEXTCLF_BUCKET": BUCKET, "TEXTCLF_LAKE_PREFIX": LAKE_PREFIX,
            # one task at a time per worker, so two shards queued together go to both
            "TEXTCLF_CPU_WORKER_CONCURRENCY": "1", "TEXTCLF_GPU_WORKER_CONCURRENCY": "1",
            # the score DAG makes no task instances for days before its start date
            "TEXTCLF_SCORE_START_DATE": "2026-01-01",
        })
        stack = ComposeStack(daemon, workdir / "run.env", f"textclf-test-{uuid.uuid4().hex[:6]}", logdir)
        with serve_directory(house) as wheels_url:
            settings.values["TEXTCLF_TEST_PIP_FIND_LINKS"] = wheels_url
            settings.write(stack.env_file)
            with timings.step("build textclf-airflow"):
                stack.compose("build", INIT_SERVICE, log="build-airflow.log", timeout=1800)
            if gpu:
                with timings.step("build textclf-airflow-gpu"):
                    stack.compose("build", "airflow-worker-gpu", log="build-airflow-gpu.log", timeout=2400)
        built = {"base": base, **infra, "airflow": CPU_IMAGE, **({"airflow-gpu": GPU_IMAGE} if gpu else {})}
        with timings.step("compose up, until every service is healthy"):
            stack.compose("up", "-d", "--no-build", log="compose-up.log", timeout=900)
            ready = stack.wait_ready(timeout=900)
        say(f"\nservices ready after (s): {ready}")
        api = compose_airflow(stack, f"http://127.0.0.1:{settings['TEXTCLF_TEST_API_PORT']}",
                              settings["AIRFLOW_ADMIN_PASSWORD"], workdir)
        deployment = Deployment(daemon, stack, settings, api, built, gpu, timings, workdir)
        ok = True
        yield deployment
    finally:
        if stack is not None:
            if not ok or request.session.testsfailed > failed_before:
                say(f"\n==== last log lines of every container ====\n{stack.logs(80)}")
            with timings.step("compose down -v"):
                stack.down()
        sizes = {}
        if daemon.alive() and ok:
            sizes = {image: f"{daemon.image_size(image) / 1e6:.0f} MB" for image in deployment.built.values()}
        with timings.step("stop dockerd"):
            daemon.stop()
        if not keep():
            shutil.rmtree(data_root, ignore_errors=True)
        say(f"\ndocker tier timings (s): {dict(timings)}\nimage sizes: {sizes}")


# -- the stack as a user sees it --------------------------------------------------------------------
def test_every_service_is_healthy_and_airflow_runs_as_airflow(deployment: Deployment) -> None:
    states = deployment.stack.ps()
    assert set(states) == {*INFRA_SERVICES, INIT_SERVICE, *AIRFLOW_SERVICES}
    assert states[INIT_SERVICE]["State"]["ExitCode"] == 0
    for name in (*INFRA_SERVICES, *AIRFLOW_SERVICES):
        assert states[name]["State"]["Health"]["Status"] == "healthy", name
    for name in (INIT_SERVICE, *AIRFLOW_SERVICES):
        assert states[name]["Config"]["User"] == "airflow", name
    daemon = deployment.daemon
    for name in AIRFLOW_SERVICES:
        container = states[name]["Id"]
        # every process of the container, seen from the host (tini included), runs as uid 50000
        top = daemon.docker("top", container, "-eo", "uid,pid,comm").stdout.decode().splitlines()[1:]
        uids = {line.split()[0] for line in top}
        assert uids == {AIRFLOW_UID}, (name, top)
    assert deployment.stack.exec("airflow-apiserver", "id", "-un").strip() == "airflow"


def test_servers_listen_on_loopback_only(deployment: Deployment) -> None:
    import psutil

    pids = {}
    for name, state in deployment.stack.ps().items():
        if state["State"]["Status"] == "running":
            top = deployment.daemon.docker("top", state["Id"], "-eo", "pid").stdout.decode().split()[1:]
            pids.update({int(pid): name for pid in top})
    listening = [(pids[c.pid], c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert {name for name, _, _ in listening} >= {"postgres", "redis", "seaweedfs", "airflow-apiserver"}
    exposed = [entry for entry in listening if entry[1] not in ("127.0.0.1", "::1")]
    assert exposed == [], exposed


def test_init_provisioned_what_the_dags_need(deployment: Deployment) -> None:
    api, settings = deployment.airflow, deployment.settings
    assert api.api("GET", "/api/v2/pools/gpu")["slots"] == 1
    assert api.api("GET", "/api/v2/variables/textclf_lake")["value"] == f"s3://{BUCKET}/{LAKE_PREFIX}"
    conn = api.api("GET", "/api/v2/connections/textclf_s3")
    assert (conn["conn_type"], conn["login"]) == ("aws", settings["TEXTCLF_S3_ACCESS_KEY"])
    assert json.loads(conn["extra"])["endpoint_url"] == settings["TEXTCLF_S3_ENDPOINT"]
    assert settings["TEXTCLF_S3_SECRET_KEY"] not in json.dumps(conn), "the REST API shows the S3 secret"
    deployment.s3().head_bucket(Bucket=BUCKET)  # airflow-init created the lake's bucket
    # Only airflow-init (which stores the Connection) and SeaweedFS (whose identity it is) hold the S3 secret.
    secret = settings["TEXTCLF_S3_SECRET_KEY"]
    holders = {name for name, state in deployment.stack.ps().items()
               if any(secret in item for item in state["Config"]["Env"] or [])}
    assert holders == {INIT_SERVICE, "seaweedfs"}
    init_log = deployment.stack.logs(200, (INIT_SERVICE,))
    assert "pool gpu: created" in init_log and "connection textclf_s3: created" in init_log, init_log[-3000:]
    # Safe on every `up`: a second run changes nothing and still exits 0.
    again = deployment.stack.compose("run", "--rm", "--no-deps", "-T", INIT_SERVICE, timeout=300)
    output = again.stdout.decode(errors="replace") + again.stderr.decode(errors="replace")
    for item in ("pool gpu", "variable textclf_lake", "connection textclf_s3"):
        assert f"{item}: unchanged" in output, output[-3000:]
    assert secret not in output, "airflow-init printed the S3 secret"


# -- the pipeline -----------------------------------------------------------------------------------
def land_demo_files(deployment: Deployment) -> None:
    """The demo corpus (labeled CSV.gz, unlabeled JSON Lines .zst, 2% malformed rows) into LAKE/landing/."""
    from textclf.demo.corpus import CorpusSpec, write_corpus

    s3 = deployment.s3()
    specs = {"labeled": (CorpusSpec(rows=LABELED_ROWS, labeled=True, seed=11, dirty_fraction=DIRTY_FRACTION),
                         "csv.gz"),
             "unlabeled": (CorpusSpec(rows=UNLABELED_ROWS, labeled=False, seed=12, id_offset=10**7,
                                      dirty_fraction=DIRTY_FRACTION), "jsonl.zst")}
    for kind, (spec, ext) in specs.items():
        local = deployment.workdir / f"demo-{kind}-{DAY}.{ext}"
        write_corpus(spec, local)
        s3.upload_file(str(local), BUCKET, f"{LAKE_PREFIX}/landing/{kind}/{local.name}")


def event_text(line: str) -> str:
    """The message of one task-log line (Airflow 3 serves them as JSON objects)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    return str(record.get("event", line)) if isinstance(record, dict) else line


def check_predictions(deployment: Deployment, day: str) -> dict:
    """The predictions contract (docs/contracts.md: the Delta table, schema version 2), read back from the
    stack's S3 through the table, as a consumer would: the same checks as the scoring tests."""
    from tests.test_scoring import check_contract
    from textclf.lake import Lake
    from textclf.lake.store import S3Options

    s3 = S3Options(endpoint_url=deployment.settings["TEXTCLF_S3_ENDPOINT"], region="us-east-1",
                   access_key=deployment.settings["TEXTCLF_S3_ACCESS_KEY"],
                   secret_key=deployment.settings["TEXTCLF_S3_SECRET_KEY"])
    manifest, _ = check_contract(Lake(f"s3://{BUCKET}/{LAKE_PREFIX}", s3=s3), day)
    return manifest


def test_pipeline_runs_on_the_cpu_and_gpu_workers(deployment: Deployment) -> None:
    api, s3 = deployment.airflow, deployment.s3()
    land_demo_files(deployment)
    api.wait_for_dags(["textclf_ingest", "textclf_retrain", "textclf_score"], timeout=300)

    with deployment.timings.step("run textclf_ingest"):
        ingest = api.run_dag("textclf_ingest", date=DAY, timeout=600)
    states = {t["task_id"]: t["state"] for t in api.task_instances("textclf_ingest", ingest)}
    assert states["validate_labeled"] == states["validate_unlabeled"] == "success", states

    with deployment.timings.step("run textclf_retrain"):
        retrain = api.run_dag("textclf_retrain", conf={"model": "bow_mlp", "epochs": 2}, timeout=900)
    tis = {t["task_id"]: t for t in api.task_instances("textclf_retrain", retrain)}
    train = tis["train"]
    assert (train["queue"], train["pool"], train["hostname"]) == ("gpu", "gpu", WORKER_HOSTS["airflow-worker-gpu"])
    assert tis["publish_champion"]["state"] == "success", "the first model should clear the promotion gate"
    version = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{LAKE_PREFIX}/models/champion.json")["Body"].read()
                         )["champion"]["version"]
    training = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{LAKE_PREFIX}/models/{version}/training.json")
                          ["Body"].read())
    assert training["devices"]["gpus"] == 0, training["devices"]  # no GPU here: it trained on the CPU
    events = [event_text(line) for line in api.task_log("textclf_retrain", retrain, train).splitlines()]
    gpu_lines = [e for e in events if "GPU" in e or "CUDA" in e.upper()]
    say(f"\ntrain task log, lines about the GPU: {gpu_lines[:5] or 'none'}")
    fallback = [e for e in events if "no GPU visible to TensorFlow" in e and "training on the CPU" in e]
    assert len(fallback) == 1, gpu_lines  # one clear line says the training fell back to the CPU

    with deployment.timings.step("run textclf_score"):
        score = api.run_dag("textclf_score", date=DAY, conf={"shards": SHARDS}, timeout=900)
    shards = [t for t in api.task_instances("textclf_score", score) if t["task_id"] == "score_shard"]
    assert sorted(t["map_index"] for t in shards) == list(range(SHARDS))
    assert all(t["state"] == "success" for t in shards)
    assert {t["hostname"] for t in shards} == set(WORKER_HOSTS.values()), \
        [(t["map_index"], t["hostname"]) for t in shards]

    manifest = check_predictions(deployment, DAY)  # one row per eligible document, checksums, schema
    assert manifest["quarantined_rows"] > 0, "the demo files carry malformed rows"
    assert manifest["received_rows"] == UNLABELED_ROWS
    say(f"predictions: {manifest['rows']} rows, {manifest['quarantined_rows']} quarantined, "
        f"{manifest['input_rows']} input, model {manifest['model_version']}")


def test_gpu_worker_has_cuda_tensorflow_and_falls_back_to_the_cpu(deployment: Deployment) -> None:
    if not deployment.gpu:
        pytest.skip("the gpu worker runs the CPU image; make test-docker-gpu builds the CUDA one")
    probe = ("import json, tensorflow as tf; print(json.dumps({'cuda': tf.test.is_built_with_cuda(), "
             "'gpus': len(tf.config.list_physical_devices('GPU'))}))")
    found = {name: json.loads(deployment.stack.exec(name, "python", "-c", probe, timeout=300).splitlines()[-1])
             for name in ("airflow-worker-gpu", "airflow-worker-cpu")}
    assert found == {"airflow-worker-gpu": {"cuda": True, "gpus": 0}, "airflow-worker-cpu": {"cuda": False, "gpus": 0}}


def test_no_credential_in_any_image_layer(deployment: Deployment) -> None:
    """`docker save` of every image this run built holds none of the run's generated credentials."""
    secrets = deployment.settings.secrets
    for role, image in deployment.built.items():
        with deployment.timings.step(f"docker save + scan {image}"):
            scanned, found = scan_for_secrets(deployment.daemon, image, secrets)
        assert scanned > 10_000_000, (image, scanned)
        assert found == [], f"{image} ({role}) contains {len(found)} of the run's credentials"
