"""The predictions table: schema version 2, column for column, and record batches in it.

Version 2 is version 1's columns in the data files plus the Delta partition column ``run_date`` (a date),
which readers of the table get from the Delta log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa



SCHEMA_VERSION = 2


def prediction_schema() -> pa.Schema:
    """The columns of a predictions data file (the table adds ``run_date``, a date, as its partition column)."""
    import pyarrow as pa

    return pa.schema([
        ("doc_id", pa.string()),
        ("predicted_label", pa.string()),
        ("confidence", pa.float32()),
        ("top_labels", pa.list_(pa.string())),
        ("top_probs", pa.list_(pa.float32())),
        ("model_version", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ])


def prediction_batch(doc_ids: Sequence[str], probs: np.ndarray, classes: Sequence[str], version: str,
                      scored_at: Any, top_k: int) -> pa.RecordBatch:
    """One record batch of a predictions data file from a batch of probabilities."""
    import numpy as np
    import pyarrow as pa

    k = min(top_k, len(classes))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top_probs = np.take_along_axis(probs, top, axis=1).astype(np.float32)
    class_array = np.array(classes, dtype=object)
    n = len(doc_ids)
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.RecordBatch.from_arrays([
        pa.array(doc_ids, pa.string()),
        pa.array(class_array[top[:, 0]], pa.string()),
        pa.array(top_probs[:, 0], pa.float32()),
        pa.ListArray.from_arrays(offsets, pa.array(class_array[top.ravel()], pa.string())),
        pa.ListArray.from_arrays(offsets, pa.array(top_probs.ravel(), pa.float32())),
        pa.array([version] * n, pa.string()),
        pa.array([scored_at] * n, pa.timestamp("us", tz="UTC")),
    ], schema=prediction_schema())
