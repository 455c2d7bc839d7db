"""Headless Chromium for the browser tests: Debian's chromium, driven by Playwright (from PyPI).

``npx playwright install`` cannot download browsers here, so the tests use the system's chromium:
:func:`chromium_executable` finds it, or installs Debian's package when running as root (as CI does),
and :func:`browser` starts it with a fresh profile, the flags below, and every request to anything
but ``file://`` and the allowed loopback origins aborted and recorded: the pages under test get no
network, and a test can assert that they did not even try.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-default-apps", "--metrics-recording-only", "--disable-features=MediaRouter,OptimizationHints"]


def chromium_executable() -> str:
    """Debian's chromium, installed with apt-get when it is missing and this is root; else the test skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("no chromium on this machine and not root: apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, capture_output=True, env=env, timeout=900).returncode:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], capture_output=True, env=env,
                       timeout=600)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, f"apt-get install chromium failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    found = shutil.which("chromium")
    assert found, "chromium installed but not on PATH"
    return found


@dataclass
class Browser:
    """A persistent Playwright context on a fresh profile, and the requests it refused."""

    context: Any
    blocked: list[str] = field(default_factory=list)

    def page(self) -> Any:
        return self.context.pages[0] if self.context.pages else self.context.new_page()


@contextmanager
def browser(allow_origins: tuple[str, ...] = ()) -> Iterator[Browser]:
    """Chromium with no network: only ``file://`` URLs and URLs starting with one of ``allow_origins`` load."""
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    profile = tempfile.mkdtemp(prefix="textclf-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=FLAGS,
                ignore_default_args=["--enable-automation"], viewport={"width": 1400, "height": 1000})
            state = Browser(context)

            def route(r: Any) -> None:
                url = r.request.url
                if url.startswith(("file://", "data:", "blob:", "about:")) or url.startswith(allow_origins):
                    r.continue_()
                else:
                    state.blocked.append(url)
                    r.abort("internetdisconnected")

            context.route("**/*", route)
            try:
                yield state
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page: Any, path: Path) -> None:
    """Best effort: a screenshot for a failing test's report."""
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception:  # noqa: BLE001 - diagnostics only
        pass
