"""Pure text normalisation, vectorised over Arrow arrays.

The rules, in order (documented in docs/ingestion.md and tested in tests/test_normalize.py):

1. Bytes are decoded as UTF-8. Text that is not valid UTF-8 is repaired by decoding
   it as Windows-1252 (the usual legacy encoding) when every byte is defined there
   and the result holds no control characters; otherwise the row is quarantined as
   ``invalid_encoding``.
2. HTML tags (``<br />``, ``<p class=x>``, comments) become a space; then HTML
   entities (``&amp;``, ``&#39;``, ``&eacute;``) are unescaped to the characters
   they stand for. Tags are stripped before entities are unescaped, so an escaped
   ``&lt;b&gt;`` survives as the literal text ``<b>``.
3. Unicode is normalised to NFC.
4. Control and invisible format characters (C0, C1, zero-width space, word joiner,
   BOM, soft hyphen) are removed, except whitespace, which in step 5 becomes a single
   space. The zero-width joiner and non-joiner (U+200D, U+200C) are kept: they hold
   emoji sequences together and are part of how Persian and Indic words are spelled.
5. Runs of whitespace (including newlines, tabs, no-break spaces) become one space,
   and leading and trailing whitespace is trimmed.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# RE2 syntax (pyarrow.compute). A tag starts with a letter, '/' or '!': "a < b" is not a tag.
HTML_TAG_RE = r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>"
# Control (Cc) and invisible format characters that carry no meaning for a classifier.
CONTROL_RE = "[\\x00-\\x08\\x0B\\x0E-\\x1F\\x7F-\\x9F\\x{200B}\\x{2060}\\x{FEFF}\\x{00AD}]"
_SPACES = r"\x{00A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
WHITESPACE_RE = rf"[\s{_SPACES}]+"
# Text that needs the control/whitespace pass: a control character, a whitespace character other
# than a plain space, or two whitespace characters in a row. Most text has none of these, and
# matching is far cheaper than replacing (every single space would be a replacement).
_MESSY_RE = rf"{CONTROL_RE}|[\s{_SPACES}]{{2,}}|[\t\n\v\f\r{_SPACES}]"
# Cheap prefilters: a regex with a literal first character is scanned with memchr.
_TAG_HINT_RE = "<[A-Za-z/!]"
_ENTITY_HINT_RE = "&[#A-Za-z]"

_CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")


def repair_bytes(raw: bytes) -> str | None:
    """Decode text bytes: UTF-8, else Windows-1252 when that is unambiguous; None if neither."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if any(b in _CP1252_UNDEFINED for b in raw):
        return None
    text = raw.decode("cp1252")
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in text):
        return None
    return text


def decode_array(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Turn a string/binary array into valid UTF-8 strings plus a mask of undecodable rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.binary() if pa.types.is_large_binary(arr.type) else pa.string())
    if pa.types.is_string(arr.type):
        try:
            arr.validate(full=True)
            return arr, _false_mask(len(arr))
        except pa.ArrowInvalid:
            arr = arr.view(pa.binary())
    elif not pa.types.is_binary(arr.type):
        arr = arr.cast(pa.string())
        return arr, _false_mask(len(arr))
    # Slow path, only for batches that hold invalid UTF-8: find the bad rows by bisection
    # with Arrow's (C++) validation, then repair just those rows in Python.
    suspects = _invalid_utf8_rows(arr)
    fixed = [repair_bytes(arr[i].as_py()) for i in suspects]
    mask = np.zeros(len(arr), dtype=bool)
    mask[suspects] = True
    texts = pc.replace_with_mask(arr.view(pa.string()), pa.array(mask), pa.array(fixed, pa.string()))
    bad = np.zeros(len(arr), dtype=bool)
    bad[[i for i, text in zip(suspects, fixed, strict=True) if text is None]] = True
    return texts, pa.array(bad)


def _invalid_utf8_rows(arr: pa.Array, leaf_rows: int = 32) -> list[int]:
    """Positions of the non-null rows of a binary array inside slices that fail UTF-8 validation."""
    import pyarrow as pa

    found: list[int] = []
    stack = [(0, len(arr))]
    while stack:
        lo, hi = stack.pop()
        try:
            arr.slice(lo, hi - lo).view(pa.string()).validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        if hi - lo <= leaf_rows:
            found.extend(i for i in range(lo, hi) if arr[i].is_valid)
        else:
            mid = (lo + hi) // 2
            stack += [(mid, hi), (lo, mid)]
    return sorted(found)


def _false_mask(n: int) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    return pa.array(np.zeros(n, dtype=bool))


def _where(arr: pa.Array, pattern: str, transform: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """Apply ``transform`` only to the rows matching ``pattern``; the others pass through."""
    import pyarrow.compute as pc

    return _where_mask(arr, pc.fill_null(pc.match_substring_regex(arr, pattern), False), transform)


def _where_mask(arr: pa.Array, mask: pa.Array, transform: Callable[[pa.Array], pa.Array]) -> pa.Array:
    import pyarrow.compute as pc

    if not pc.any(mask).as_py():
        return arr
    return pc.replace_with_mask(arr, mask, transform(pc.filter(arr, mask)))


def _unescape_all(arr: pa.Array) -> pa.Array:
    import pyarrow as pa

    return pa.array([html.unescape(v) for v in arr.to_pylist()], pa.string())


def _collapse(arr: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    return pc.replace_substring_regex(pc.replace_substring_regex(arr, CONTROL_RE, ""), WHITESPACE_RE, " ")


def normalize_text(arr: pa.Array) -> pa.Array:
    """Apply rules 2-5 to a valid UTF-8 string array; nulls stay null.

    Each rule runs only on the rows that need it (found by a cheap match first), which
    keeps clean text, the common case, close to the speed of reading it.
    """
    import pyarrow.compute as pc

    if len(arr) == 0:
        return arr
    arr = _where(arr, _TAG_HINT_RE, lambda sub: pc.replace_substring_regex(sub, HTML_TAG_RE, " "))
    arr = _where(arr, _ENTITY_HINT_RE, _unescape_all)
    arr = _where_mask(arr, pc.invert(pc.fill_null(pc.string_is_ascii(arr), True)),
                      lambda sub: pc.utf8_normalize(sub, "NFC"))
    arr = _where(arr, _MESSY_RE, _collapse)
    # only plain spaces can remain at the ends now; ASCII trimming is safe on UTF-8
    return pc.ascii_trim(arr, " ")


def normalize_one(text: str) -> str:
    """Normalise a single string (same rules as ``normalize_text``)."""
    import pyarrow as pa

    return normalize_text(pa.array([text], pa.string()))[0].as_py()


def text_doc_id(text: str) -> str:
    """Stable id for a document without one: a hash of its normalised text."""
    return "h" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def text_doc_ids(arr: pa.Array) -> pa.Array:
    """``text_doc_id`` over an array of normalised texts (nulls stay null)."""
    import pyarrow as pa

    return pa.array([None if t is None else text_doc_id(t) for t in arr.to_pylist()], pa.string())
