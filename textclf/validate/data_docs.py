"""Data Docs that render with no network: GX's CDN links rewritten to files shipped inside the site.

Great Expectations 1.x writes Data Docs pages that load Bootstrap, jQuery, bootstrap-table, Font
Awesome, Vega and friends from public CDNs; offline (air-gapped production, a laptop on a plane)
the index renders unstyled with an empty Validation Results list. :func:`make_offline` copies the
same libraries, at the versions GX asks for, from ``data_docs_assets/`` (vendored from their npm
packages: ``data_docs_assets/SOURCES.md`` lists each package, version and licence) into the site's
``static/vendor/`` folder, and rewrites every page's ``<link>`` and ``<script>`` to a relative path
there (dropping the SRI ``integrity``/``crossorigin`` attributes, which make a browser refuse a
``file://`` script). GX's own stylesheet's one remote image (a logo) points to GX's local copy,
and links to the site's own ``static/`` files are recomputed for each page's depth.

GX's logo, which its pages load from an S3 host with the page's time and the data context's id in
the query (a tracking pixel), points to the site's own copy. Only those URLs are rewritten; any
other remote ``src``/``href`` of a ``<script>``, ``<img>``, icon or stylesheet left in a page is
returned (and logged), so a GX upgrade that adds one
is noticed: tests/test_validation.py fails on it, and checks the site in Chromium with no network.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

VENDOR_DIR = "static/vendor"

#: CDN URL as GX 1.x writes it -> path under data_docs_assets/ (and the site's static/vendor/).
CDN_ASSETS: dict[str, str] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/js/bootstrap.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/umd/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    # GX links the filter-control CSS of 1.19.0 (plain and minified) next to the 1.19.1 script: one copy of 1.19.1.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/css/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/vega-embed.min.js",
}
GX_REMOTE_LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png"
GX_STYLES = "static/styles/data_docs_default_styles.css"

# GX's pages also show its logo from this host, with the page's time and the data context's id in the
# query string: a tracking pixel. The site has the same image in static/images/.
GX_IMAGES = re.compile(r"^https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/(?P<name>[\w.-]+)")

_TAG = re.compile(r"<(script|link|img)\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r"""\s(src|href)\s*=\s*(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_SRI = re.compile(r"""\s(integrity|crossorigin)(\s*=\s*(["']).*?\3)?(?=[\s/>])""", re.IGNORECASE | re.DOTALL)


def assets_root() -> Path:
    """The vendored files, inside the installed package."""
    return Path(str(resources.files("textclf.validate") / "data_docs_assets"))


_SITE_STATIC = re.compile(r"^(\.\./)*static/(?P<rest>[^?#]+)$")


def _rewrite_page(markup: str, to_vendor: str) -> tuple[str, list[str]]:
    """A page with every known CDN link pointing into ``to_vendor``; also the remote links left.

    Links to the site's own ``static/`` folder are recomputed from the page's depth too: GX 1.24 writes
    validation pages whose favicon link climbs one folder too few.
    """
    left: list[str] = []
    to_static = to_vendor.rsplit("/", 1)[0]

    def tag(match: re.Match[str]) -> str:
        text = match.group(0)
        attr = _ATTR.search(text)
        if attr is None:
            return text
        url = attr.group(3).strip()
        if (own := _SITE_STATIC.match(url)) is not None:
            return text[:attr.start(3)] + f"{to_static}/{own.group('rest')}" + text[attr.end(3):]
        if (image := GX_IMAGES.match(url)) is not None:
            return text[:attr.start(3)] + f"{to_static}/images/{image.group('name')}" + text[attr.end(3):]
        if url in CDN_ASSETS:
            local = f"{to_vendor}/{CDN_ASSETS[url]}"
            text = text[:attr.start(3)] + local + text[attr.end(3):]
            return _SRI.sub("", text)
        loads = match.group(1).lower() in ("script", "img") or "stylesheet" in text.lower() or "icon" in text.lower()
        if loads and re.match(r"^(https?:)?//", url, re.IGNORECASE):
            left.append(url)
        return text

    return _TAG.sub(tag, markup), left


def make_offline(site_dir: str | os.PathLike[str]) -> list[str]:
    """Make a rendered Data Docs site self-contained; returns the remote script/stylesheet URLs left (none today)."""
    site = Path(site_dir)
    vendor = site / VENDOR_DIR
    shutil.copytree(assets_root(), vendor, dirs_exist_ok=True, ignore=shutil.ignore_patterns("SOURCES.md"))
    left: list[str] = []
    for page in sorted(site.rglob("*.html")):
        to_vendor = os.path.relpath(vendor, page.parent).replace(os.sep, "/")
        markup, remote = _rewrite_page(page.read_text(encoding="utf-8"), to_vendor)
        page.write_text(markup, encoding="utf-8")
        left += [f"{page.relative_to(site).as_posix()}: {url}" for url in remote]
    styles = site / GX_STYLES
    if styles.exists():
        css = styles.read_text(encoding="utf-8")
        styles.write_text(css.replace(GX_REMOTE_LOGO, "../images/logo-long.png"), encoding="utf-8")
    for item in left:
        log.warning("Data Docs still load %s from the network (not in textclf.validate.data_docs.CDN_ASSETS)", item)
    return left
