#!/usr/bin/env bash
# One-shot initialisation for the compose deployment (service airflow-init). Idempotent: safe
# to run on every `docker compose up`. Every other Airflow service waits until it has exited 0.
#
#  1. migrate the metadata database;
#  2. create/update the `gpu` pool that training and evaluation tasks run in;
#  3. write the api-server admin password (SimpleAuthManager) from $AIRFLOW_ADMIN_PASSWORD;
#  4. check the lake's S3 connection and create the bucket if it is missing.
#
# The Variable `textclf_lake` and the Connection `textclf_s3` are not stored in the database:
# every Airflow container reads them from AIRFLOW_VAR_TEXTCLF_LAKE / AIRFLOW_CONN_TEXTCLF_S3.
set -euo pipefail

echo "airflow-init: migrating the metadata database"
airflow db migrate

echo "airflow-init: pool gpu with ${TEXTCLF_GPU_POOL_SLOTS:-1} slot(s)"
airflow pools set gpu "${TEXTCLF_GPU_POOL_SLOTS:-1}" "GPU slots"

echo "airflow-init: admin password for the api-server"
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
if not password:
    raise SystemExit("airflow-init: AIRFLOW_ADMIN_PASSWORD is empty; set it in docker/.env")
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps({"admin": password}) + "\n")
path.chmod(0o600)
PY

echo "airflow-init: checking the lake bucket"
python - <<'PY'
import os
from urllib.parse import urlparse

lake = os.environ.get("AIRFLOW_VAR_TEXTCLF_LAKE") or os.environ.get("TEXTCLF_LAKE", "")
uri = urlparse(lake)
if uri.scheme != "s3" or not uri.netloc:
    print(f"airflow-init: lake {lake!r} is not an s3:// URI; nothing to create")
    raise SystemExit(0)

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

conn_id = os.environ.get("TEXTCLF_S3_CONN_ID", "textclf_s3")
hook = S3Hook(aws_conn_id=conn_id)
if hook.check_for_bucket(uri.netloc):
    print(f"airflow-init: bucket {uri.netloc} exists")
else:
    hook.create_bucket(bucket_name=uri.netloc)
    print(f"airflow-init: created bucket {uri.netloc}")
PY

echo "airflow-init: done"
