"""The Airflow settings shared by every Airflow this repository starts: ``airflow_local.py`` and the tests.

It imports only ``pathlib``, so the tests can apply it before anything imports Airflow (which reads
its configuration once, at import). It is not in ``plugins/textclf_airflow/``: importing any module
there runs that package's ``__init__``, which imports ``airflow.sdk`` and with it
``airflow.configuration`` (3.4 s). The library, ``textclf/``, never imports Airflow or knows these.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_env(home: str | Path, dags_folder: str | Path | None = None) -> dict[str, str]:
    """Variables for an Airflow with its state in ``home`` that runs this project's DAGs and plugins."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # SQLite (Airflow's default DB here; the Docker deployment and the cluster tests override it with
        # PostgreSQL) has one writer at a time. Its default 5 s busy timeout is shorter than one trigger of a
        # run on a busy 2-core machine, so the UI's "unpause on trigger", sent alongside, failed with
        # "database is locked" and left the new run queued behind a paused DAG. Writers wait up to 60 s instead.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{Path(home) / 'airflow.db'}?timeout=60",
        # Task processes: GX 1.24 ignores this (analytics are off in the context's config); older 1.x read it at import.
        "GX_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ start-up chatter
    }
