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
        bar = champion["macro_f1"] - policy.tolerance
        f1_ok = macro_f1 >= bar
        reasons.append(f"macro-F1 {macro_f1:.4f} {'>=' if f1_ok else '<'} champion's {champion['macro_f1']:.4f} "
                       f"minus tolerance {policy.tolerance:.4f} = {bar:.4f}")
    reference_ok = True
    if policy.require_reference:
        reference = candidate.get("linear_reference") or {}
        if reference.get("macro_f1") is None:
            reasons.append("no linear reference was computed for this version; re-evaluate it")
            reference_ok = False
        else:
            bar = reference["macro_f1"] - policy.tolerance
            reference_ok = macro_f1 >= bar
            reasons.append(f"macro-F1 {macro_f1:.4f} {'>=' if reference_ok else '<'} linear reference's "
                           f"{reference['macro_f1']:.4f} minus tolerance {policy.tolerance:.4f} = {bar:.4f}")
    passed = floor_ok and f1_ok and reference_ok
    if force and not passed:
        reasons.append("promoted anyway: forced by the operator")
    return Decision(promoted=passed or force, forced=force and not passed, reasons=tuple(reasons))
