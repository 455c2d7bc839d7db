"""The human approval step of ``textclf_retrain``: a Human-in-the-loop task between the gate and ``promote``.

:class:`PromotionApproval` is the standard provider's ``HITLOperator`` with the options ``Approve`` and
``Reject`` and a free-text ``reason`` field. When the run's ``require_approval`` param is off it asks
nobody and returns an automatic approval at once; when it is on, the task writes its request (the
candidate vs champion table from the ``gate`` task and a link to the model report) and waits in
``awaiting_input`` (Airflow 3.3), holding no worker slot, until someone answers in the UI (Browse ->
Required Actions, or the task's "Required Actions" tab) or the REST API. Its result, whatever the
answer, goes to ``promote``, which promotes or records the rejection, with who answered and why, in
``champion.json``: a rejection is a decision, not a failure, so this task does not skip or fail anything.

A request nobody answers within ``TEXTCLF_APPROVAL_TIMEOUT_HOURS`` (default 168, a week) fails the task:
the candidate stays registered and can be promoted later with ``textclf promote``.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, ParamsDict

APPROVE = "Approve"
REJECT = "Reject"
TIMEOUT_ENV = "TEXTCLF_APPROVAL_TIMEOUT_HOURS"


def approval_timeout() -> dt.timedelta:
    return dt.timedelta(hours=float(os.environ.get(TIMEOUT_ENV) or 168))


class PromotionApproval(HITLOperator):
    """Approve or reject the candidate the gate passed; automatic when ``params.require_approval`` is off."""

    def __init__(self, **kwargs: Any) -> None:
        # The HITL form shows the task's own params (source "task"), not the DAG's; the operator's
        # metaclass has already merged the DAG's params into kwargs by the time __init__ runs.
        given = kwargs.pop("params", None)
        params = given if isinstance(given, ParamsDict) else ParamsDict(given or {})
        params.update({"reason": Param(None, type=["null", "string"], title="Reason", source="task",
                                       description="why (optional; recorded in champion.json with your name)")})
        kwargs["params"] = params
        kwargs.setdefault("response_timeout", approval_timeout())
        kwargs.setdefault("retries", 0)  # a retry would ask again, or time out again
        super().__init__(options=[APPROVE, REJECT], multiple=False, **kwargs)

    def execute(self, context: Any) -> Any:
        if not approval_required(context):
            self.log.info("require_approval is off: promoting without asking (the gate has passed)")
            return {"chosen_options": [APPROVE], "params_input": {}, "responded_by_user": None,
                    "responded_at": None, "automatic": True}
        self.log.info("waiting for a person to approve or reject the promotion: %s", self.subject)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        result = dict(super().execute_complete(context, event))
        self.log.info("%s by %s", result["chosen_options"][0], responder(result) or "someone")
        return {**result, "responded_at": str(result.get("responded_at") or ""), "automatic": False}


def approval_required(context: Any) -> bool:
    """The run's ``require_approval``: its conf, else the task's params, else the DAG's default.

    (A HITL task's own params hold only its form fields, so the DAG's params are looked up here.)"""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    if "require_approval" in conf:
        return bool(conf["require_approval"])
    params = context.get("params") or {}
    if "require_approval" in params:
        return bool(params["require_approval"])
    dag = context.get("dag")
    return bool(dag.params.get("require_approval", False)) if dag is not None else False


def responder(result: dict[str, Any]) -> str | None:
    """The name of whoever answered (None for an automatic approval)."""
    user = result.get("responded_by_user")
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user) if user else None


def approved(result: dict[str, Any]) -> bool:
    return APPROVE in (result.get("chosen_options") or [])


def approval_body(gate: dict[str, Any], report_link: str) -> str:
    """The request's Markdown: candidate vs champion on the same test split, the gate's reasons, the report."""
    candidate, champion = gate["candidate"], gate.get("champion")
    champion_version = f"`{champion['version']}`" if champion else "(none yet)"
    rows = ["| | candidate | champion |", "|---|---|---|",
            f"| version | `{gate['model_version']}` | {champion_version} |"]
    for key, label in (("accuracy", "test accuracy"), ("macro_f1", "test macro-F1")):
        theirs = f"{champion[key]:.4f}" if champion else "-"
        rows.append(f"| {label} | {candidate[key]:.4f} | {theirs} |")
    if candidate.get("linear_reference_macro_f1") is not None:
        rows.append(f"| linear reference macro-F1 | {candidate['linear_reference_macro_f1']:.4f} | |")
    reasons = "\n".join(f"- {r}" for r in gate["reasons"])
    gate_outcome = "passed" if gate["decision"] == "promoted" else "refused, but force_promote is set"
    return (f"The promotion gate {gate_outcome}. Approve to make the candidate the champion "
            f"that scoring uses; reject (with a reason) to keep the current one. Both are recorded in "
            f"champion.json.\n\n" + "\n".join(rows) + f"\n\nGate:\n{reasons}\n\n"
            f"Model report: [{gate['report']}]({report_link})\n")
