"""Evaluate: a registered model version on its test split, and the report that shows it.

``metrics``, ``label_errors``, ``explain`` (LIME), ``maps`` (probability maps, projector export) and
``reference`` (the linear baseline) compute; ``report`` lays out the HTML page; ``stage`` is the
``evaluate`` stage itself.
"""

from textclf.evaluate.stage import EvaluateResult, evaluate

__all__ = ["EvaluateResult", "evaluate"]
