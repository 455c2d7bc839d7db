"""Retrain a model on all labeled data, evaluate it, apply the promotion gate and, if asked, a person.

Triggered by hand with the form below (or by Assets, see the end). ``train`` runs on the ``gpu``
queue and in the ``gpu`` pool and registers the new version; ``evaluate`` writes its metrics and
report. ``gate`` compares the candidate with the champion on the same test split:

- **refused**: the refusal and its reasons are recorded in ``champion.json`` and ``gate`` *fails*
  with the reasons as its error, so the run is red in the grid and the reason is the first thing
  its log shows; nothing after it runs. (A refusal is no error for the library or ``textclf promote``,
  which exits 0: failing the task is how the run says so where an operator looks.)
- **passes**: ``approve`` asks a person when ``require_approval`` is on (Required Actions in the UI:
  the candidate vs champion table and a link to the model report); otherwise it approves at once.
  ``promote`` then promotes (recording who approved) or records the rejection with who and why,
  and ``publish_champion`` emits the ``champion_model`` Asset only for a promotion.

With ``TEXTCLF_RETRAIN_ON_NEW_DATA=true`` in the DAG processor's environment the DAG also runs on
every ``labeled_data`` event; with ``TEXTCLF_RETRAIN_ON_DRIFT=true`` on every ``drift_alert`` event
of the scoring report, unless a model was trained less than ``TEXTCLF_RETRAIN_COOLDOWN_HOURS``
(default 24) ago: then ``cooldown`` skips the run and says until when.
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from textclf_airflow import (
    CHAMPION_MODEL,
    DEFAULT_ARGS,
    GPU_POOL,
    GPU_QUEUE,
    announce,
    lake_link,
    open_lake,
    retrain_schedule,
)
from textclf_airflow.approval import PromotionApproval

from textclf.model.architectures import DEFAULT_ARCHITECTURE, architectures

SETTING_PATTERN = r"^[a-z_]+=\S.*$"
log = logging.getLogger(__name__)


@task
def cooldown() -> dict:
    """Why this run started; a drift alert within the cooldown after the last training skips the run."""
    from textclf_airflow import retrain_trigger

    return retrain_trigger(get_current_context(), open_lake())


@task(queue=GPU_QUEUE, pool=GPU_POOL)
def train(trigger: dict) -> dict:
    """Train the chosen architecture and register it as a new model version."""
    from textclf.config import TrainConfig
    from textclf.model.train import train

    params = get_current_context()["params"]
    config = TrainConfig().with_overrides(params["settings"], model=params["model"], epochs=params["epochs"],
                                          seed=params["seed"])
    log.info("retraining (%s)", trigger["reason"])
    return train(open_lake(), config).summary()


@task
def evaluate(trained: dict) -> dict:
    """Evaluate the new version on the test split: metrics, linear reference, report, model card."""
    from textclf.config import EvaluateConfig
    from textclf.evaluate.stage import evaluate

    summary = evaluate(open_lake(), EvaluateConfig(model_version=trained["model_version"])).summary()
    log.info("model report: %s", lake_link(f"models/{trained['model_version']}/report.html"))
    return summary


def _promote_config(version: str, approved_by: str | None = None) -> Any:
    from textclf.config import PromoteConfig, PromotionPolicy

    params = get_current_context()["params"]
    policy = PromotionPolicy(tolerance=params["tolerance"], min_accuracy=params["min_accuracy"])
    return PromoteConfig(model_version=version, policy=policy, force=params["force_promote"], approved_by=approved_by)


@task
def gate(evaluated: dict) -> dict:
    """The promotion gate: fails with the reasons when it refuses (recorded), else hands over to ``approve``."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from textclf_airflow.approval import approval_body

    from textclf.promote.stage import preview, promote

    version = evaluated["model_version"]
    lake = open_lake()
    config = _promote_config(version)
    checked = preview(lake, config).summary()
    if checked["decision"] == "unchanged":
        raise AirflowSkipException(f"{version} is already the champion")
    if not checked["passes"]:
        recorded = promote(lake, config).summary()  # records the refusal
        if not recorded["promoted"]:
            raise AirflowFailException(f"promotion refused for {version}: {'; '.join(recorded['reasons'])} "
                                       f"(recorded in {recorded['champion_uri']}; the champion stays "
                                       f"{recorded['champion']})")
        checked = {**checked, "decision": recorded["decision"], "passes": True, "reasons": recorded["reasons"]}
    checked["approval_body"] = approval_body(checked, lake_link(f"models/{version}/report.html"))
    return checked


@task
def promote(gated: dict, answer: dict) -> dict:
    """Promote an approved candidate (re-checked against the champion of now), or record the rejection."""
    from textclf_airflow.approval import approved, responder

    from textclf.promote.stage import promote, reject

    version = gated["model_version"]
    lake = open_lake()
    who = responder(answer)
    if not approved(answer):
        reason = (answer.get("params_input") or {}).get("reason")
        decision = reject(lake, version, who, reason).summary()
        log.warning("promotion of %s rejected by %s: %s", version, who or "an operator", reason or "no reason given")
        return decision
    decision = promote(lake, _promote_config(version, who or ("automatic" if answer.get("automatic") else None))
                       ).summary()
    if not decision["promoted"]:  # the champion changed while the request waited, and the candidate lost
        log.warning("promotion %s for %s: %s", decision["decision"], version, "; ".join(decision["reasons"]))
    return decision


@task(outlets=[CHAMPION_MODEL])
def publish_champion(decision: dict) -> str:
    """Announce the new champion; skipped when it was not promoted."""
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
    description="train, evaluate, gate, (approval), promote; a refused gate fails the gate task with its reasons",
    schedule=retrain_schedule(),
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
        "require_approval": Param(False, type="boolean",
                                  description="when the gate passes, wait for a person to approve or reject "
                                              "(Required Actions) before promoting"),
        "force_promote": Param(False, type="boolean", description="promote even if the gate refuses (logged)"),
        "tolerance": Param(0.005, type="number", minimum=0, maximum=1,
                           description="how far below the champion's macro-F1 a candidate may be"),
        "min_accuracy": Param(0.70, type="number", minimum=0, maximum=1, description="accuracy floor"),
    },
    tags=["textclf"],
)
def textclf_retrain() -> None:
    gated = gate(evaluate(train(cooldown())))
    approval = PromotionApproval(
        task_id="approve",
        subject="Promote {{ ti.xcom_pull(task_ids='gate')['model_version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='gate')['approval_body'] }}",
    )
    gated >> approval
    publish_champion(promote(gated, approval.output))


textclf_retrain()
