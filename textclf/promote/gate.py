"""The promotion gate as a pure function of two versions' metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textclf.config import PromotionPolicy


@dataclass(frozen=True)
class Decision:
    """What the gate decided and why."""

    promoted: bool
    forced: bool
    reasons: tuple[str, ...]

    @property
    def outcome(self) -> str:
        if self.forced:
            return "forced"
        return "promoted" if self.promoted else "refused"


def _not_below(macro_f1: float, baseline: float, whose: str, tolerance: float, reasons: list[str]) -> bool:
    """Whether a macro-F1 is at least a baseline's minus the tolerance; the comparison goes into ``reasons``."""
    bar = baseline - tolerance
    ok = macro_f1 >= bar
    reasons.append(f"macro-F1 {macro_f1:.4f} {'>=' if ok else '<'} {whose} {baseline:.4f} "
                   f"minus tolerance {tolerance:.4f} = {bar:.4f}")
    return ok


def decide(candidate: dict[str, Any], champion: dict[str, Any] | None, policy: PromotionPolicy,
           force: bool = False) -> Decision:
    """The gate as a pure function of the two versions' metrics on the same test split."""
    reasons = []
    accuracy, macro_f1 = candidate["accuracy"], candidate["macro_f1"]
    floor_ok = accuracy >= policy.min_accuracy
    reasons.append(f"accuracy {accuracy:.4f} {'>=' if floor_ok else '<'} floor {policy.min_accuracy:.4f}")
    if champion is None:
        reasons.append("no champion yet")
        f1_ok = True
    else:
        f1_ok = _not_below(macro_f1, champion["macro_f1"], "champion's", policy.tolerance, reasons)
    reference_ok = True
    if policy.require_reference:
        reference = candidate.get("linear_reference") or {}
        if reference.get("macro_f1") is None:
            reasons.append("no linear reference was computed for this version; re-evaluate it")
            reference_ok = False
        else:
            reference_ok = _not_below(macro_f1, reference["macro_f1"], "linear reference's", policy.tolerance, reasons)
    passed = floor_ok and f1_ok and reference_ok
    if force and not passed:
        reasons.append("promoted anyway: forced by the operator")
    return Decision(promoted=passed or force, forced=force and not passed, reasons=tuple(reasons))
