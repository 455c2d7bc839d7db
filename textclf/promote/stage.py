"""The promotion gate (docs/contracts.md, section 4): a candidate serves only if it is at least as good.

Candidate and champion are compared on the same held-out documents: when both versions were
evaluated on a test split with the same fingerprint their recorded metrics are used; otherwise
(new labeled data arrived since) both are re-scored on the lake's current test split. Every
decision, with the numbers behind it, is appended to ``champion.json``. No lock is held while deciding:
``champion.json`` is read with its tag and replaced only if it still has that tag (a conditional write);
a promotion that finds it changed reads it again and decides again against the new champion. So two
racing promotions both end up in the history, the second decided against the first one's outcome, and a
slow promotion (re-scoring two models) never holds anything that another one could wait on or take over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textclf.common import utc_now_iso
from textclf.config import PromoteConfig, PromotionPolicy, TrainConfig
from textclf.errors import ModelError, StorageError
from textclf.lake import Lake
from textclf.lake.layout import CHAMPION, version_key
from textclf.model.registry import read_champion, read_champion_tagged, read_version, write_champion
from textclf.promote.gate import decide

log = logging.getLogger(__name__)


CAS_ATTEMPTS = 20  # promotions that keep finding champion.json changed give up after this many decisions


def _metrics_for(lake: Lake, version: str, fingerprint: str | None, test: Any,
                 cache: dict[tuple[str, str | None], dict[str, Any]]) -> dict[str, Any]:
    """A version's test metrics on the given split: recorded ones when the split matches, else re-scored."""
    from textclf.evaluate.metrics import metrics_on
    from textclf.model.predict import predict_texts
    from textclf.model.registry import load_model

    recorded = lake.read_json(f"{version_key(version)}/metrics.json")
    if fingerprint is None or recorded.get("test_split", {}).get("fingerprint") == fingerprint:
        return recorded
    if (version, fingerprint) not in cache:  # a decision taken again after a conflict re-scores nothing twice
        log.info("re-scoring %s on the current test split (%d rows)", version, len(test))
        loaded = load_model(lake, version)
        cache[version, fingerprint] = metrics_on(lambda texts: predict_texts(loaded.model, texts), loaded.classes,
                                                 test)
    return cache[version, fingerprint]


def _current_test_split(lake: Lake, candidate: str) -> Any:
    from textclf.model.data import load_labeled, make_splits

    config = TrainConfig.from_record(lake.read_json(f"{version_key(candidate)}/config.json"))
    return make_splits(load_labeled(lake), config).test


@dataclass(frozen=True)
class PromoteResult:
    """What the gate decided for a version, and which version serves now."""

    version: str
    decision: str  # promoted, forced, refused, rejected (by a person) or unchanged
    promoted: bool
    reasons: tuple[str, ...]
    champion: str | None
    champion_uri: str

    def summary(self) -> dict[str, Any]:
        return {"model_version": self.version, "promoted": self.promoted, "decision": self.decision,
                "reasons": list(self.reasons), "champion": self.champion, "champion_uri": self.champion_uri}


def _require_evaluated(lake: Lake, version: str) -> None:
    read_version(lake, version)
    if not lake.exists(f"{version_key(version)}/metrics.json"):
        raise ModelError(f"model version {version} has not been evaluated, so the gate has nothing to compare: "
                         f"run `textclf evaluate --model-version {version}` first")

def promote(lake: Lake, config: PromoteConfig) -> PromoteResult:
    """Apply the gate to a version, record the decision in ``champion.json`` and return it."""
    version = config.model_version
    _require_evaluated(lake, version)
    cache: dict[tuple[str, str | None], dict[str, Any]] = {}
    return _record(lake, version, lambda state: _decide(lake, version, state, config.policy, config.force, cache,
                                                         config.approved_by))


def _record(lake: Lake, version: str, decide_in: Callable[[dict[str, Any]], PromoteResult | None]) -> PromoteResult:
    """Read ``champion.json``, let ``decide_in`` record a decision in it, and write it back only if nobody
    wrote it meanwhile (a conditional write); otherwise decide again against what is there now."""
    for attempt in range(1, CAS_ATTEMPTS + 1):
        state, tag = read_champion_tagged(lake)
        result = decide_in(state)
        if result is None or write_champion(lake, state, tag):  # unchanged, or recorded
            return result or PromoteResult(version, "unchanged", False, ("already the champion",), version,
                                           lake.uri_of(CHAMPION))
        log.info("%s changed while %s was being decided (attempt %d): deciding again against it",
                 lake.uri_of(CHAMPION), version, attempt)
    raise StorageError(f"{lake.uri_of(CHAMPION)} kept changing while {version} was decided ({CAS_ATTEMPTS} "
                       "attempts): other promotions are running; retry")


@dataclass(frozen=True)
class GatePreview:
    """What the gate would decide now, with the numbers behind it; nothing is recorded."""

    version: str
    decision: str  # promoted, forced, refused or unchanged: what ``promote`` would record
    reasons: tuple[str, ...]
    candidate: dict[str, Any]  # accuracy, macro_f1 (and the linear reference's when evaluated)
    champion: dict[str, Any] | None  # version, accuracy, macro_f1 on the same split; None without a champion
    report_uri: str

    @property
    def passes(self) -> bool:
        return self.decision in ("promoted", "forced")

    def summary(self) -> dict[str, Any]:
        return {"model_version": self.version, "decision": self.decision, "passes": self.passes,
                "reasons": list(self.reasons), "candidate": self.candidate, "champion": self.champion,
                "report": self.report_uri}


def preview(lake: Lake, config: PromoteConfig) -> GatePreview:
    """The gate's decision for a version against the current champion, without recording it."""
    version = config.model_version
    _require_evaluated(lake, version)
    report = lake.uri_of(f"{version_key(version)}/report.html")
    state = read_champion(lake)
    current = state.get("champion")
    if current and current["version"] == version:
        return GatePreview(version, "unchanged", ("already the champion",), {}, None, report)
    decision, candidate, champion, _ = _compare(lake, version, current, config.policy, config.force, {})
    reference = (candidate.get("linear_reference") or {}).get("macro_f1")
    return GatePreview(
        version, decision.outcome, decision.reasons,
        {"accuracy": candidate["accuracy"], "macro_f1": candidate["macro_f1"], "linear_reference_macro_f1": reference},
        None if current is None or champion is None else {
            "version": current["version"], "accuracy": champion["accuracy"], "macro_f1": champion["macro_f1"]},
        report)


def reject(lake: Lake, version: str, by: str | None, reason: str | None) -> PromoteResult:
    """Record that a person rejected a version the gate would have promoted; the champion stays."""
    _require_evaluated(lake, version)
    who = by or "an operator"
    reasons = (f"rejected by {who}" + (f": {reason.strip()}" if reason and reason.strip() else " (no reason given)"),)
    metrics = lake.read_json(f"{version_key(version)}/metrics.json")

    def record(state: dict[str, Any]) -> PromoteResult:
        current = state.get("champion")
        state.setdefault("history", []).append({
            "at": utc_now_iso(), "model_version": version, "decision": "rejected", "promoted": False,
            "forced": False, "reasons": list(reasons), "rejected_by": by, "reason": (reason or "").strip() or None,
            "candidate": {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
            "champion": None if not current else {"version": current["version"]},
        })
        return PromoteResult(version, "rejected", False, reasons, current["version"] if current else None,
                             lake.uri_of(CHAMPION))

    result = _record(lake, version, record)
    log.info("rejected %s: %s", version, reasons[0])
    return result


def _compare(lake: Lake, version: str, current: dict[str, Any] | None, policy: PromotionPolicy, force: bool,
             cache: dict[tuple[str, str | None], dict[str, Any]]
             ) -> tuple[Any, dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The gate's decision, the candidate's and champion's metrics on one test split, and that split."""
    candidate_metrics = lake.read_json(f"{version_key(version)}/metrics.json")
    champion_metrics = None
    split = candidate_metrics.get("test_split", {})
    if current:
        champion_recorded = lake.read_json(f"{version_key(current['version'])}/metrics.json")
        if champion_recorded.get("test_split", {}).get("fingerprint") == split.get("fingerprint"):
            champion_metrics = champion_recorded
        else:
            from textclf.model.data import split_fingerprint

            test = _current_test_split(lake, version)
            fingerprint = split_fingerprint(test.doc_ids.tolist(), test.labels.tolist())
            candidate_metrics = _metrics_for(lake, version, fingerprint, test, cache)
            champion_metrics = _metrics_for(lake, current["version"], fingerprint, test, cache)
            split = candidate_metrics["test_split"]
    return decide(candidate_metrics, champion_metrics, policy, force), candidate_metrics, champion_metrics, split


def _decide(lake: Lake, version: str, state: dict[str, Any], policy: PromotionPolicy, force: bool,
            cache: dict[tuple[str, str | None], dict[str, Any]], approved_by: str | None = None
            ) -> PromoteResult | None:
    """Decide against ``state`` and record the decision in it (the caller writes it); None: already champion."""
    current = state.get("champion")
    if current and current["version"] == version:
        return None
    decision, candidate_metrics, champion_metrics, split = _compare(lake, version, current, policy, force, cache)
    record: dict[str, Any] = {
        "at": utc_now_iso(), "model_version": version, "decision": decision.outcome,
        "promoted": decision.promoted, "forced": decision.forced, "reasons": list(decision.reasons),
        "candidate": {"accuracy": candidate_metrics["accuracy"], "macro_f1": candidate_metrics["macro_f1"]},
        "champion": None if current is None or champion_metrics is None else {
            "version": current["version"], "accuracy": champion_metrics["accuracy"],
            "macro_f1": champion_metrics["macro_f1"]},
        "test_split": split, "policy": policy.as_record(),
    }
    if approved_by is not None:
        record["approved_by"] = approved_by
    state.setdefault("history", []).append(record)  # written only if nothing was recorded meanwhile
    if decision.promoted:
        state["champion"] = {"version": version, "promoted_at": record["at"], "forced": decision.forced,
                             "reasons": record["reasons"]}
        if approved_by is not None:
            state["champion"]["approved_by"] = approved_by
    log.info("%s %s: %s", decision.outcome, version, "; ".join(decision.reasons))
    return PromoteResult(version, decision.outcome, decision.promoted, decision.reasons,
                         state["champion"]["version"] if state.get("champion") else None, lake.uri_of(CHAMPION))
