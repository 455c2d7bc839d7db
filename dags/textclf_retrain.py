"""Retrain a model on all labeled data, evaluate it and apply the promotion gate.

Triggered by hand with the form below. ``train`` runs on the ``gpu`` queue and in the ``gpu`` pool
and registers the new version; ``evaluate`` then writes its metrics and report (a failed report
leaves the trained version registered, and the task can be retried on its own). A refused promotion
is a successful run: the ``promote`` task logs the refusal and its reasons, ``champion.json`` records them, and
``publish_champion`` is skipped. Set ``TEXTCLF_RETRAIN_ON_NEW_DATA=true`` in the DAG processor's
environment to also run it whenever the ``labeled_data`` Asset is updated.
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from textclf_airflow import CHAMPION_MODEL, DEFAULT_ARGS, GPU_POOL, GPU_QUEUE, LABELED_DATA, announce, open_lake

from textclf.model.architectures import DEFAULT_ARCHITECTURE, architectures

SETTING_PATTERN = r"^[a-z_]+=\S.*$"
log = logging.getLogger(__name__)


@task(queue=GPU_QUEUE, pool=GPU_POOL)
def train() -> dict:
    """Train the chosen architecture and register it as a new model version."""
    from textclf.config import TrainConfig
    from textclf.model.train import train

    params = get_current_context()["params"]
    config = TrainConfig().with_overrides(params["settings"], model=params["model"], epochs=params["epochs"],
                                          seed=params["seed"])
    return train(open_lake(), config).summary()


@task
def evaluate(trained: dict) -> dict:
    """Evaluate the new version on the test split: metrics, linear reference, report, model card."""
    from textclf.config import EvaluateConfig
    from textclf.evaluate.stage import evaluate

    return evaluate(open_lake(), EvaluateConfig(model_version=trained["model_version"])).summary()


@task
def promote(evaluated: dict) -> dict:
    """Apply the promotion gate; a refusal is an outcome, not an error."""
    from textclf.config import PromoteConfig, PromotionPolicy
    from textclf.promote.stage import promote

    params = get_current_context()["params"]
    policy = PromotionPolicy(tolerance=params["tolerance"], min_accuracy=params["min_accuracy"])
    config = PromoteConfig(model_version=evaluated["model_version"], policy=policy, force=params["force_promote"])
    decision = promote(open_lake(), config).summary()
    if not decision["promoted"]:
        log.warning("promotion %s for %s: %s", decision["decision"], evaluated["model_version"],
                    "; ".join(decision["reasons"]))
    return decision


@task(outlets=[CHAMPION_MODEL])
def publish_champion(decision: dict) -> str:
    """Announce the new champion; skipped when the gate kept the current one."""
    from airflow.sdk.exceptions import AirflowSkipException

    from textclf.lake.layout import version_key

    if not decision["promoted"]:
        raise AirflowSkipException(f"{decision['model_version']} not promoted: {'; '.join(decision['reasons'])}")
    uri = open_lake().uri_of(version_key(decision["model_version"]))
    announce(get_current_context(), CHAMPION_MODEL, uri=uri, model_version=decision["model_version"],
             forced=decision["decision"] == "forced")
    return uri


@dag(
    doc_md=__doc__,
    schedule=[LABELED_DATA] if os.environ.get("TEXTCLF_RETRAIN_ON_NEW_DATA", "").lower() in ("1", "true") else None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "model": Param(DEFAULT_ARCHITECTURE, type="string", enum=list(architectures()),
                       description="model architecture (see docs/models.md)"),
        "epochs": Param(30, type="integer", minimum=1, maximum=1000,
                        description="upper bound; early stopping ends most runs sooner"),
        "seed": Param(0, type="integer", minimum=0),
        "settings": Param([], type="array", items={"type": "string", "pattern": SETTING_PATTERN},
                          description="more training settings, one KEY=VALUE per line (e.g. learning_rate=0.01)"),
        "force_promote": Param(False, type="boolean", description="promote even if the gate refuses (logged)"),
        "tolerance": Param(0.005, type="number", minimum=0, maximum=1,
                           description="how far below the champion's macro-F1 a candidate may be"),
        "min_accuracy": Param(0.70, type="number", minimum=0, maximum=1, description="accuracy floor"),
    },
    tags=["textclf"],
)
def textclf_retrain() -> None:
    publish_champion(promote(evaluate(train())))


textclf_retrain()
