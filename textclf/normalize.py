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
4. Control and format characters (C0, C1, zero-width, BOM) are removed, except
   whitespace, which in step 5 becomes a single space.
5. Runs of whitespace (including newlines, tabs, no-break spaces) become one space,
   and leading and trailing whitespace is trimmed.
"""

from __future__ import annotations

import hashlib
import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# RE2 syntax (pyarrow.compute). A tag starts with a letter, '/' or '!': "a < b" is not a tag.
HTML_TAG_RE = r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>"
HTML_ENTITY_RE = r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?"
# Control (Cc) and invisible format characters that carry no meaning for a classifier.
CONTROL_RE = "[\\x00-\\x08\\x0B\\x0E-\\x1F\\x7F-\\x9F\\x{200B}-\\x{200D}\\x{2060}\\x{FEFF}\\x{00AD}]"
WHITESPACE_RE = r"[\s\x{00A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]+"

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
    import pyarrow as pa

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
    # Slow path, only for batches that hold invalid UTF-8.
    texts: list[str | None] = []
    bad: list[bool] = []
    for raw in arr.to_pylist():
        if raw is None:
            texts.append(None)
            bad.append(False)
            continue
        text = repair_bytes(raw)
        texts.append(text)
        bad.append(text is None)
    return pa.array(texts, pa.string()), pa.array(bad, pa.bool_())


def _false_mask(n: int) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    return pa.array(np.zeros(n, dtype=bool))


def _unescape_entities(arr: pa.Array) -> pa.Array:
    """html.unescape the rows that contain an entity; others pass through untouched."""
    import pyarrow as pa
    import pyarrow.compute as pc

    has_entity = pc.fill_null(pc.match_substring_regex(arr, HTML_ENTITY_RE), False)
    if not pc.any(has_entity).as_py():
        return arr
    values = arr.to_pylist()
    for i in pc.indices_nonzero(has_entity).to_pylist():
        values[i] = html.unescape(values[i])
    return pa.array(values, pa.string())


def normalize_text(arr: pa.Array) -> pa.Array:
    """Apply rules 2-5 to a valid UTF-8 string array; nulls stay null."""
    import pyarrow.compute as pc

    if len(arr) == 0:
        return arr
    has_tag = pc.fill_null(pc.match_substring(arr, "<"), False)
    if pc.any(has_tag).as_py():
        arr = pc.replace_substring_regex(arr, HTML_TAG_RE, " ")
    if pc.any(pc.fill_null(pc.match_substring(arr, "&"), False)).as_py():
        arr = _unescape_entities(arr)
    arr = pc.utf8_normalize(arr, "NFC")
    arr = pc.replace_substring_regex(arr, CONTROL_RE, "")
    arr = pc.replace_substring_regex(arr, WHITESPACE_RE, " ")
    return pc.utf8_trim_whitespace(arr)


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
