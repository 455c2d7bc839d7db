"""plugins/textclf_airflow/provision.py: the one definition of what the DAGs need, and the command applying it.

docker/airflow-init.sh runs ``python -m textclf_airflow.provision`` in the compose deployment (and
tests/test_docker_stack.py checks its result through the REST API); here it runs against a fresh SQLite
metadata DB and the real SeaweedFS server of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server

pytestmark = pytest.mark.dags

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
HEAVY = ("tensorflow", "keras", "great_expectations", "pandas", "pyarrow", "sklearn", "boto3")


@pytest.mark.integration
def test_importing_provision_is_cheap_and_opens_nothing() -> None:
    code = (
        "import json, socket, sys\n"
        "opened = []\n"
        "socket.socket.connect = lambda self, *a: opened.append(a)\n"
        "import textclf_airflow.provision as p\n"
        f"print(json.dumps({{'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules), 'opened': opened}}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"heavy": [], "opened": []}


def provision_module():  # noqa: ANN201 - the module
    """The module, imported as Airflow would (its plugins folder on sys.path)."""
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    import textclf_airflow.provision as provision

    return provision


def test_the_definition_comes_from_the_environment() -> None:
    p = provision_module()
    env = {"TEXTCLF_LAKE": "s3://lake-bucket/lake", "TEXTCLF_GPU_POOL_SLOTS": "2", "TEXTCLF_S3_ACCESS_KEY": "key",
           "TEXTCLF_S3_SECRET_KEY": "s3cr3t", "TEXTCLF_S3_ENDPOINT": "http://seaweedfs:8333",
           "TEXTCLF_SCORE_START_DATE": "2026-05-01"}
    definition = p.Provision.from_environ(env)
    assert definition.gpu_pool_slots == 2 and definition.lake == "s3://lake-bucket/lake"
    assert definition.s3 == p.S3Connection("textclf_s3", "key", "s3cr3t", "http://seaweedfs:8333", None)
    assert definition.dag_settings == {"TEXTCLF_SCORE_START_DATE": "2026-05-01"}
    summary = json.dumps(definition.summary())
    assert "s3cr3t" not in summary and "s3cr3t" not in repr(definition)
    # explicit values win; a local lake needs no Connection
    local = p.Provision.from_environ(env, lake="/data/lake", gpu_pool_slots=1)
    assert (local.lake, local.gpu_pool_slots, local.s3) == ("/data/lake", 1, None)
    # S3 without keys: the tasks fall back to the AWS_* variables
    assert p.Provision.from_environ({"TEXTCLF_LAKE": "s3://b/lake"}).s3 is None


@pytest.mark.parametrize(("env", "message"), [
    ({"TEXTCLF_GPU_POOL_SLOTS": "0"}, "TEXTCLF_GPU_POOL_SLOTS must be at least 1"),
    ({"TEXTCLF_GPU_POOL_SLOTS": "two"}, "is not a whole number"),
    ({"TEXTCLF_LAKE": "s3:///lake"}, "names no bucket"),
    ({"TEXTCLF_LAKE": "s3://b/lake", "TEXTCLF_S3_ACCESS_KEY": "k"}, "set both TEXTCLF_S3_ACCESS_KEY"),
    ({"TEXTCLF_SCORE_START_DATE": "2026-13-01"}, "TEXTCLF_SCORE_START_DATE='2026-13-01'"),
    ({"TEXTCLF_SCORE_POKE_SECONDS": "-5"}, "must be > 0"),
    ({"TEXTCLF_RETRAIN_ON_NEW_DATA": "maybe"}, "must be true or false"),
])
def test_a_bad_value_is_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    p = provision_module()
    with pytest.raises(p.ProvisionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        p.Provision.from_environ(env)


READ_BACK = """
import json
from airflow.models.connection import Connection
from airflow.models.pool import Pool
from airflow.models.variable import Variable
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as s:
    pool = s.scalar(select(Pool).where(Pool.pool == "gpu"))
    var = s.scalar(select(Variable).where(Variable.key == "textclf_lake"))
    conn = s.scalar(select(Connection).where(Connection.conn_id == "textclf_s3"))
    print(json.dumps({"slots": pool.slots, "lake": var.val, "conn_type": conn.conn_type, "login": conn.login,
                      "password": conn.password, "extra": conn.extra_dejson, "encrypted": conn.is_encrypted}))
"""


@pytest.mark.s3
@pytest.mark.timeout(300)
def test_provision_applies_idempotently_to_a_real_metadata_db(s3_server: S3Server, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    bin_dir = Path(sys.executable).parent
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "TEXTCLF_"))}
    env.update({"AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(), "PYTHONPATH": str(PLUGINS),
                "TEXTCLF_LAKE": f"s3://{bucket}/lake", "TEXTCLF_S3_ENDPOINT": s3_server.endpoint,
                "TEXTCLF_S3_ACCESS_KEY": ACCESS_KEY, "TEXTCLF_S3_SECRET_KEY": SECRET_KEY,
                "TEXTCLF_S3_REGION": "us-east-1", "TEXTCLF_SCORE_START_DATE": "2026-05-01"})

    def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=180, env={**env, **(extra or {})},
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    run(str(bin_dir / "airflow"), "db", "migrate")
    provision = [sys.executable, "-m", "textclf_airflow.provision"]
    first = run(*provision)
    assert json.loads(first.stdout.splitlines()[-1])["applied"] == {
        "pool gpu": "created", "variable textclf_lake": "created", "connection textclf_s3": "created",
        "lake": "created"}
    assert SECRET_KEY not in first.stdout + first.stderr, "provision logged the S3 secret"
    again = run(*provision)
    assert set(json.loads(again.stdout.splitlines()[-1])["applied"].values()) == {"unchanged", "exists"}
    changed = run(*provision, extra={"TEXTCLF_GPU_POOL_SLOTS": "3"})
    assert json.loads(changed.stdout.splitlines()[-1])["applied"]["pool gpu"] == "updated"

    stored = json.loads(run(sys.executable, "-c", READ_BACK).stdout.splitlines()[-1])
    assert stored == {"slots": 3, "lake": f"s3://{bucket}/lake", "conn_type": "aws", "login": ACCESS_KEY,
                      "password": SECRET_KEY, "extra": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
                      "encrypted": True}
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    client.head_bucket(Bucket=bucket)  # the lake's bucket now exists


@pytest.mark.integration
def test_a_bad_setting_fails_the_command_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "AIRFLOW_HOME": str(tmp_path),
           "TEXTCLF_SCORE_START_DATE": "tomorrow"}
    proc = subprocess.run([sys.executable, "-m", "textclf_airflow.provision", "--dry-run"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("provision: TEXTCLF_SCORE_START_DATE='tomorrow'")
