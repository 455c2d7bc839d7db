"""Every report page is rendered here: one Jinja2 environment over the package's templates, HTML autoescaped.

Python builds plain context data (numbers, strings, lists, dicts) and calls ``render``; the
templates under ``textclf/report/templates/`` own all markup. Numbers are formatted by the
filters below so that every page writes them the same way.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from textclf.common import jsonable

if TYPE_CHECKING:
    import jinja2

DASH = "\u2013"

# Links are made only for these schemes (no scheme: a path); anything else, javascript: included, is shown as text.
LINK_SCHEMES = frozenset({"", "http", "https", "file", "s3", "s3a", "gs", "abfs", "abfss", "hdfs"})

# Column kinds whose cells are right-aligned, headers included.
NUMERIC_KINDS = frozenset({"num", "pct", "signed"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and not math.isfinite(value))


def num(value: Any, digits: int = 4) -> str:
    """A number for a table cell: thousands separators for ints, ``digits`` decimals for floats, a dash if missing."""
    if _missing(value):
        return DASH
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return str(value)


def pct(value: Any, digits: int = 1) -> str:
    """A share as a percentage; a dash when missing or not a number."""
    if not _is_number(value) or _missing(value):
        return DASH
    return f"{float(value):.{digits}%}"


def signed(value: Any, digits: int = 4) -> str:
    """A difference or weight with its sign; a dash when missing."""
    if not _is_number(value) or _missing(value):
        return DASH
    return f"{float(value):+.{digits}f}"


_FORMATS = {"num": num, "pct": pct, "signed": signed}


def fmt(value: Any, kind: str) -> str:
    """A cell value written as its column kind says: ``num``, ``num:3``, ``pct``, ``signed:1``; else as text."""
    base, _, digits = kind.partition(":")
    format_ = _FORMATS.get(base)
    if format_ is None:
        return "" if value is None else str(value)
    return format_(value, int(digits)) if digits else format_(value)


def safe_link(uri: Any) -> bool:
    """Whether ``uri`` may become a link: its scheme is in LINK_SCHEMES (schemes such as javascript: are not)."""
    if not isinstance(uri, str) or not uri:
        return False
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        return False
    return scheme in LINK_SCHEMES


@dataclass(frozen=True)
class Cell:
    """A table cell that overrides its column: another format ``kind``, or a CSS class (a status, a warning)."""

    value: Any
    kind: str | None = None
    css: str = ""


def config_tree(value: Any, depth: int = 0) -> dict[str, Any]:
    """A config or lineage value for the ``value`` macro: nested rows for mappings, short lists inline, else text."""
    if isinstance(value, Mapping) and value and depth < 3:
        return {"rows": [(str(k), config_tree(v, depth + 1)) for k, v in value.items()]}
    if isinstance(value, list | tuple) and depth < 3:
        items = [json.dumps(jsonable(v)) if isinstance(v, Mapping | list | tuple) else str(v) for v in value[:50]]
        return {"items": items, "more": max(len(value) - 50, 0)}
    if isinstance(value, Mapping | list | tuple):
        return {"text": json.dumps(jsonable(value))}
    return {"text": num(value) if _is_number(value) else str(value)}


@functools.cache
def environment() -> jinja2.Environment:
    """The one template environment: package templates, autoescape for .html, undefined names are errors."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("textclf.report", "templates"),
        # .md and .css are not HTML: the model card is Markdown and the stylesheet is included raw.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True, default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=num, pct=pct, signed=signed, fmt=fmt)
    env.tests.update(safe_link=safe_link, cell=lambda value: isinstance(value, Cell))
    env.globals.update(numeric_kinds=NUMERIC_KINDS)
    return env


def render(template: str, **context: Any) -> str:
    """One page from a package template and its context."""
    return environment().get_template(template).render(**context)
