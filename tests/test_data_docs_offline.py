"""The Data Docs written into the lake render completely with no network (textclf/validate/data_docs.py).

A labeled partition is validated (one critical failure, so the site has a failed and a passed suite),
then the site is opened from disk in headless Chromium whose every non-``file://`` request is refused:
the pages must not even try the network, Bootstrap's CSS must apply, jQuery, bootstrap-table and Vega
must load, and the index's Validation Results list must hold the run's suites.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser import browser, screenshot
from tests.conftest import write_csv
from textclf.config import IngestConfig, ValidationConfig
from textclf.errors import ValidationFailedError
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.layout import data_docs_key
from textclf.validate.data_docs import CDN_ASSETS, assets_root, make_offline
from textclf.validate.stage import validate

DATE = "2026-04-01"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("docs")
    rows = [(f"d{i}", f"an ordinary message number {i} about the invoice and the parcel", label)
            for i, label in enumerate(["billing"] * 30 + ["shipping"] * 30 + ["refund"] * 3)]
    lake = Lake(str(tmp / "lake"))
    ingest(lake, IngestConfig(kind="labeled", date=DATE, sources=(str(write_csv(tmp / "a.csv", rows)),)))
    with pytest.raises(ValidationFailedError):  # 'refund' has 3 < 10 examples: a failed suite in the docs too
        validate(lake, ValidationConfig(kind="labeled", date=DATE))
    return (tmp / "lake" / data_docs_key("labeled", DATE)).parent  # the key names its index.html


@pytest.mark.data
def test_every_page_loads_its_assets_from_inside_the_site(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 3  # the index and a page per suite run
    for page in pages:
        markup = page.read_text(encoding="utf-8")
        remote = re.findall(r"<(?:script|link)\b[^>]*(?:src|href)=[\"']((?:https?:)?//[^\"']+)", markup)
        assert remote == [], (page, remote)
        assert "integrity=" not in markup and "crossorigin" not in markup
        for ref in re.findall(r"<(?:script|link)\b[^>]*(?:src|href)=[\"']([^\"'#?]+)", markup):
            assert (page.parent / ref).resolve().is_file(), (page, ref)
    shipped = {p.relative_to(assets_root()).as_posix() for p in assets_root().rglob("*") if p.is_file()}
    assert set(CDN_ASSETS.values()) <= shipped
    assert all((assets_root() / d).exists() for d in ("fontawesome/webfonts", "SOURCES.md"))


@pytest.mark.unit
def test_an_unknown_remote_asset_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    page.write_text('<html><head><script src="https://code.jquery.com/jquery-3.7.1.min.js" integrity="sha384-x" '
                    'crossorigin="anonymous"></script><link rel="stylesheet" href="https://cdn.example/x.css">'
                    '<a href="https://greatexpectations.io">a link is fine</a></head></html>')
    assert make_offline(tmp_path) == ["index.html: https://cdn.example/x.css"]
    markup = page.read_text()
    assert '<script src="static/vendor/jquery/jquery.min.js"></script>' in markup
    assert (tmp_path / "static/vendor/jquery/jquery.min.js").is_file()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_site_renders_completely_in_chromium_with_no_network(site: Path, tmp_path: Path) -> None:
    with browser() as chrome:
        page = chrome.page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((site / "index.html").as_uri(), wait_until="load")
        try:
            page.wait_for_function("() => document.querySelectorAll('.bootstrap-table tbody tr[data-index]')"
                                   ".length > 0", timeout=30_000)
            state = page.evaluate("""() => ({
                jquery: typeof window.jQuery, table: typeof (window.jQuery && jQuery.fn.bootstrapTable),
                vega: typeof window.vega, vegaEmbed: typeof window.vegaEmbed,
                bootstrapCss: (() => { const d = document.createElement('div'); d.className = 'd-none';
                                       document.body.appendChild(d); return getComputedStyle(d).display; })(),
                rows: [...document.querySelectorAll('.bootstrap-table tbody tr[data-index]')].map(r => r.innerText),
                faFont: [...document.fonts].some(f => f.family.includes('Font Awesome')),
            })""")
            assert state["jquery"] == "function" and state["table"] == "function", state
            assert state["vega"] == "object" and state["vegaEmbed"] == "function", state
            assert state["bootstrapCss"] == "none", state  # Bootstrap's .d-none: its CSS applied
            assert state["faFont"], state
            suites = " ".join(state["rows"])
            assert "labeled_critical_classes" in suites and "labeled_critical" in suites, state["rows"]
            # and one validation result page, reached through the index's own link
            page.locator(".bootstrap-table tbody tr[data-index]").first.click()
            page.wait_for_load_state("load")
            assert "/validations/" in page.url
            page.wait_for_function("() => typeof window.jQuery === 'function' && "
                                   "getComputedStyle(document.body).fontFamily.length > 0", timeout=30_000)
            assert page.locator("text=Expectation").count() > 0
        except BaseException:
            screenshot(page, tmp_path / "data-docs.png")
            raise
        assert chrome.blocked == [], chrome.blocked  # not a single request for the network
        assert errors == [], errors
