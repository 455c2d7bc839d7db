#!/usr/bin/env bash
# One-shot initialisation for the compose deployment (service airflow-init). Idempotent: safe
# to run on every `docker compose up`. Every other Airflow service waits until it has exited 0.
#
#  1. migrate the metadata database;
#  2. provision what the DAGs need, from the one definition `make airflow` uses too
#     (plugins/textclf_airflow/provision.py): the `gpu` pool, the Variable `textclf_lake`, the
#     Connection `textclf_s3`, the lake's bucket, and a check of the DAG settings;
#  3. write the api-server admin password (SimpleAuthManager) from $AIRFLOW_ADMIN_PASSWORD.
#
# Only this service gets the S3 keys in its environment: the Connection is stored in the metadata
# database, encrypted with the Fernet key, and the tasks read it from there.
set -euo pipefail

echo "airflow-init: migrating the metadata database"
airflow db migrate

echo "airflow-init: provisioning the pool, Variable, Connection and lake the DAGs use"
PYTHONPATH="${AIRFLOW__CORE__PLUGINS_FOLDER}${PYTHONPATH:+:${PYTHONPATH}}" python -m textclf_airflow.provision

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

echo "airflow-init: done"
