"""Unit tests of the text normalisation rules (docs/ingestion.md)."""

from __future__ import annotations

import unicodedata

import pyarrow as pa
import pytest

from textclf.ingest.normalize import decode_array, normalize_one, normalize_text, repair_bytes, text_doc_id

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain text", "plain text"),
        ("  padded \n\n text\t", "padded text"),
        ("line<br />break", "line break"),
        ('<p class="x">para</p><!-- note -->', "para"),
        ("fish &amp; chips &#39;n&#x27; &eacute;", "fish & chips 'n' é"),
        ("&lt;b&gt;kept literally&lt;/b&gt;", "<b>kept literally</b>"),
        ("a < b and c > d", "a < b and c > d"),
        ("bell\x07 esc\x1b zero\u200bwidth", "bell esc zerowidth"),
        ("no\u00a0break\u2003em", "no break em"),
        ("\ufeffbom", "bom"),
        ("soft\u00adhyphen word\u2060joiner", "softhyphen wordjoiner"),
        ("family \U0001f468\u200d\U0001f469\u200d\U0001f467", "family \U0001f468\u200d\U0001f469\u200d\U0001f467"),
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),
        ("   \t  ", ""),
        ("<br/>", ""),
    ],
)
def test_normalize_rules(raw: str, expected: str) -> None:
    assert normalize_one(raw) == expected


def test_normalize_composes_unicode_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "café naïve Zürich")
    assert decomposed != "café naïve Zürich"
    assert normalize_one(decomposed) == "café naïve Zürich"


def test_normalize_keeps_non_ascii_scripts() -> None:
    text = "東京 Ελλάδα São Paulo 🙂"
    assert normalize_one(text) == text


def test_normalize_keeps_nulls() -> None:
    assert normalize_text(pa.array([None, " x "], pa.string())).to_pylist() == [None, "x"]


def test_repair_bytes() -> None:
    assert repair_bytes("café".encode()) == "café"
    assert repair_bytes("café crème".encode("cp1252")) == "café crème"
    assert repair_bytes(b"caf\x81\x8d") is None  # undefined in cp1252
    assert repair_bytes(b"\xe9\x01\x02") is None  # would decode to control characters


def test_decode_array_marks_only_undecodable_rows() -> None:
    texts, bad = decode_array(pa.array([b"ok", "caf\xe9".encode("latin-1"), b"\x81\x8d", None], pa.binary()))
    assert texts.to_pylist() == ["ok", "café", None, None]
    assert bad.to_pylist() == [False, False, True, False]


def test_text_doc_id_is_stable_and_content_based() -> None:
    assert text_doc_id("hello") == text_doc_id("hello")
    assert text_doc_id("hello") != text_doc_id("hello!")
    assert text_doc_id("hello") == "h" + "2cf24dba5fb0a30e26e83b2a"
