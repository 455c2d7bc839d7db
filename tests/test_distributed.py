"""The real DAGs on a real distributed Airflow 3.3 on 127.0.0.1 (see tests/airflow_cluster.py).

PostgreSQL + Redis + SeaweedFS S3 + api-server, scheduler, dag-processor and two Celery workers:
``worker-default`` (queue ``default``) and ``worker-gpu`` (queues ``gpu,default``). Files land in the
lake's landing prefix, ``textclf_ingest`` ingests them for day D, ``textclf_retrain`` trains on the ``gpu``
queue, and ``textclf_score`` scores D in 4 mapped shards that both workers share. As in a deployment, the
processes reach the lake only through the ``textclf_lake`` Variable and the ``textclf_s3`` Connection: no
``AWS_*`` variables (``CONNECTION_ONLY``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.airflow_cluster import DEFAULT_WORKER, GPU_WORKER, REPO_ROOT, S3Target, airflow_cluster
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server

if TYPE_CHECKING:
    from textclf.lake import Lake

pytestmark = [pytest.mark.integration, pytest.mark.distributed, pytest.mark.s3]

DAGS_FOLDER = REPO_ROOT / "dags"
DAG_IDS = ["textclf_ingest", "textclf_retrain", "textclf_score"]
DAY = "2026-03-02"
LABELED_ROWS = 3000
UNLABELED_ROWS = 4000
SHARDS = 4
DIRTY_FRACTION = 0.02  # some unlabeled rows are quarantined at ingest: the predictions' summary counts them
# No AWS_* variables in any Airflow process: the tasks must take the endpoint and keys from the textclf_s3
# Connection, as textclf_airflow documents (False exports the S3 server's AWS_* variables as well).
CONNECTION_ONLY = True


def land_files(lake_uri: str, s3: S3Target, workdir: Path) -> Lake:
    """Generate a labeled and an unlabeled corpus and upload them to LAKE/landing/{labeled,unlabeled}/."""
    from textclf.demo.corpus import CorpusSpec, write_corpus
    from textclf.lake import Lake, S3Options

    lake = Lake(lake_uri, S3Options(endpoint_url=s3.endpoint, access_key=s3.access_key,
                                    secret_key=s3.secret_key, region=s3.region))
    for kind, spec in (("labeled", CorpusSpec(rows=LABELED_ROWS, labeled=True, seed=11)),
                       ("unlabeled", CorpusSpec(rows=UNLABELED_ROWS, labeled=False, seed=12, id_offset=10**6,
                                                    dirty_fraction=DIRTY_FRACTION))):
        local = workdir / f"{kind}-{DAY}.csv"
        write_corpus(spec, local)
        lake.upload(str(local), f"landing/{kind}/{local.name}")
    return lake


@pytest.mark.timeout(900)
def test_pipeline_runs_distributed_across_cpu_and_gpu_workers(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    s3 = S3Target(endpoint=s3_server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, bucket=bucket)
    (tmp_path / "data").mkdir()
    lake = land_files(s3.lake_uri, s3, tmp_path / "data")

    extra_env = {
        # the score DAG makes no task instances for days before its start date (the run "succeeds" empty)
        "TEXTCLF_SCORE_START_DATE": "2026-01-01",
        # if the champion or the day's data were missing, the score sensor would fail in a minute, not 6 hours
        "TEXTCLF_SCORE_POKE_SECONDS": "5", "TEXTCLF_SCORE_WAIT_SECONDS": "60",
    }
    # timetables are off in the cluster (no catchup or "latest interval" runs): only these runs happen
    with airflow_cluster(tmp_path / "cluster", DAGS_FOLDER, s3, export_aws_env=not CONNECTION_ONLY,
                         extra_env=extra_env) as cluster:
        cluster.wait_for_dags(DAG_IDS)

        ingest_run = cluster.run_dag("textclf_ingest", date=DAY, timeout=300)
        ingested = {t["task_id"]: t for t in cluster.task_instances("textclf_ingest", ingest_run)}
        assert {t: ingested[t]["state"] for t in ("validate_labeled", "validate_unlabeled")} == {
            "validate_labeled": "success", "validate_unlabeled": "success"}

        retrain_run = cluster.run_dag("textclf_retrain", conf={"model": "bow_mlp", "epochs": 2}, timeout=300)
        retrain_tis = cluster.task_instances("textclf_retrain", retrain_run)
        train = next(t for t in retrain_tis if t["task_id"] == "train")
        assert (train["queue"], train["pool"], train["hostname"]) == ("gpu", "gpu", GPU_WORKER)
        for ti in retrain_tis:  # whatever else goes to the gpu queue (an evaluate task) ran there too
            if ti["queue"] == "gpu":
                assert ti["hostname"] == GPU_WORKER, ti

        score_run = cluster.run_dag("textclf_score", date=DAY, conf={"shards": SHARDS}, timeout=300)
        score_tis = cluster.task_instances("textclf_score", score_run)
        shards = [t for t in score_tis if t["task_id"] == "score_shard"]
        assert sorted(t["map_index"] for t in shards) == list(range(SHARDS))
        assert all(t["state"] == "success" for t in shards)
        assert {t["hostname"] for t in shards} == {DEFAULT_WORKER, GPU_WORKER}, \
            [(t["map_index"], t["hostname"]) for t in shards]
        print(f"\ncluster timings (s): {cluster.timings}")

    from textclf.lake.tables import dataset_table, predictions_table

    manifest = predictions_table(lake).summary(DAY)
    assert manifest is not None, f"no committed predictions for {DAY} in {lake.uri_of('predictions')}"
    assert manifest["rows"] + manifest["quarantined_rows"] == manifest["input_rows"]
    assert manifest["rows"] > 0 and manifest["quarantined_rows"] > 0
    assert manifest["num_shards"] == SHARDS
    assert manifest["received_rows"] == UNLABELED_ROWS
    unlabeled = dataset_table(lake, "unlabeled").summary(DAY)
    assert unlabeled is not None and manifest["rows"] == unlabeled["rows"]
    print(f"stop: {cluster.timings.get('stop')} s; predictions: {manifest['rows']} rows, "
          f"{manifest['quarantined_rows']} quarantined, {manifest['input_rows']} input")
