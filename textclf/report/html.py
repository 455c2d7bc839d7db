"""HTML building blocks of the reports: escaping, tables and the page frame."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textclf.common import jsonable


def _e(value: Any) -> str:
    """Escaped text of any value, for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    """A number for a table cell; a dash for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, bool | np.bool_):
        return _e(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return _e(value)


def _value_html(value: Any, depth: int = 0) -> str:
    """Escaped HTML of a config or lineage value: nested tables for mappings, short lists inline."""
    if isinstance(value, Mapping) and value and depth < 3:
        return _table_html(["key", "value"], [[_e(k), _value_html(v, depth + 1)] for k, v in value.items()])
    if isinstance(value, list | tuple) and depth < 3:
        shown = ", ".join(_e(v) if not isinstance(v, Mapping | list | tuple) else _e(json.dumps(jsonable(v)))
                          for v in value[:50])
        return shown + (f" \u2026 and {len(value) - 50:,} more" if len(value) > 50 else "")
    if isinstance(value, Mapping | list | tuple):
        return _e(json.dumps(jsonable(value)))
    return _num(value) if isinstance(value, float | int | np.number) and not isinstance(value, bool) else _e(value)


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table from already-escaped header and cell HTML; ``numeric`` columns are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f'<td class="n">{cell}</td>' if j in numeric else f"<td>{cell}</td>"
                                      for j, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _img(uri: str, alt: str) -> str:
    """An inline image."""
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _section(section_id: str, title: str, body: str) -> str:
    """One report section with its anchor id and heading."""
    return f'<section id="{section_id}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
nav a { margin-right: 1em; }
section { margin-top: 2.5em; border-top: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0 1.2em; font-size: 0.92em; }
th, td { padding: 0.2em 0.7em; text-align: left; border-bottom: 1px solid #eee; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
article { margin: 1.2em 0; padding: 0.5em 1em; background: #fafafa; border-radius: 6px; }
div.text { white-space: pre-wrap; line-height: 1.6; max-height: 20em; overflow: auto; }
span.text { display: inline-block; max-width: 40em; }
mark { border-radius: 3px; padding: 0 2px; color: inherit; }
.note { color: #666; font-size: 0.9em; }
.warn { color: #a40; }
"""


def render_page(title: str, bodies: Mapping[str, tuple[str, str]], section_ids: Sequence[str],
                extra_css: str = "") -> str:
    """A self-contained report page: title, a section nav, then one ``<section>`` per id, in order."""
    nav = " ".join(f'<a href="#{sid}">{_e(bodies[sid][0])}</a>' for sid in section_ids)
    sections = "\n".join(_section(sid, *bodies[sid]) for sid in section_ids)
    title = _e(title)
    # The policy forbids scripts and remote loads outright: the page stays inert even if escaping were ever missed.
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{_CSS}{extra_css}</style></head><body>
<h1>{title}</h1>
<nav>{nav}</nav>
{sections}
</body></html>
"""
