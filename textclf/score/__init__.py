"""Score: a date's unlabeled documents through the champion into a predictions partition, and its report.

``predictions`` is the output schema, ``signals`` and ``drift`` the statistics and drift checks,
``report`` lays out the scoring report page, ``stage`` holds the ``score`` stage, its sharded form
and ``stage.report``, which writes the report.
"""

from textclf.score.stage import (
    PredictionsResult,
    ReportResult,
    ScoreResult,
    ShardResult,
    commit_predictions,
    score,
    score_shard,
)

__all__ = ["PredictionsResult", "ReportResult", "ScoreResult", "ShardResult", "commit_predictions", "score",
           "score_shard"]
