"""Promote: the gate that decides whether a new model version serves, and the record of every decision.

``gate`` is the decision as a pure function of metrics; ``stage`` is the ``promote`` stage, which
compares candidate and champion on the same test split and writes ``champion.json``.
"""

from textclf.promote.stage import GatePreview, PromoteResult, preview, promote, reject

__all__ = ["GatePreview", "PromoteResult", "preview", "promote", "reject"]
