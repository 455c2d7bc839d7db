"""Small helpers every layer shares: timestamps, JSON, text truncation, error lines, stable hash buckets."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

UNKNOWN_ROW = "(unknown)"  # how a label the model does not know is shown in tables and figures


def json_bytes(obj: Any) -> bytes:
    """Pretty JSON bytes of a lake object; values JSON lacks (numpy numbers, dates) become strings."""
    return json.dumps(obj, indent=2, default=str).encode()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def stable_bucket(salt: str, key: str, buckets: int) -> int:
    """Bucket 0..buckets-1 of ``key`` by salted sha256: the same on every run, machine and Python."""
    digest = hashlib.sha256((salt + key).encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def utc_now_iso() -> str:
    """Current UTC time as an ISO-8601 string with a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def jsonable(value: Any) -> Any:
    """``value`` with numpy types turned into Python ones and non-finite floats into None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
