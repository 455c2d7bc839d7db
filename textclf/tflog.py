"""TensorFlow's start-up chatter, silenced before TensorFlow is imported.

Importing TensorFlow 2.21 prints, on stderr and from C++, lines such as::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. You may see slightly different ...
    I0000 00:00:... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use ...
    To enable the following instructions: AVX2 ..., rebuild TensorFlow with the appropriate compiler flags.

They are written before absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not hide them,
and Airflow shows every stderr line of a task as a red ERROR line. :func:`install` (called by the CLI
and by the Airflow plugin, never by the library on its own: it changes the process) sets
``TF_CPP_MIN_LOG_LEVEL=2`` where unset (C++ INFO and WARNING once absl is up), and wraps the first ``import tensorflow``
so that, while TensorFlow's modules execute, file descriptor 2 goes to a temporary file. Afterwards
the known start-up lines are dropped, any other line is written back to stderr unchanged (nothing
else is lost, only delayed), and one informative line is logged instead::

    TensorFlow 2.21.0 on CPU (oneDNN custom operations on)

Importing this module is cheap and imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger("textclf")

#: Lines TensorFlow prints while it is imported that tell a user nothing they can act on.
CHATTER = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^[IW]\d{4} [\d:. ]+\d+ (port|cpu_feature_guard|cuda_\w+|gpu_\w+)\.cc:\d+\]"),
    re.compile(r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"),
    re.compile(r"^E\d{4} [\d:. ]+\d+ cuda_\w+\.cc:\d+\] (Unable to register|failed call to cuInit)"),
)
ONEDNN = re.compile(r"oneDNN custom operations are (on|off)")

ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # C++ INFO and WARNING, once absl's logging is up


def is_chatter(line: str) -> bool:
    """Whether a stderr line is TensorFlow's start-up chatter."""
    return any(p.search(line) for p in CHATTER)


@contextlib.contextmanager
def filtered_stderr(summary: list[str] | None = None) -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block; then write back every line that is not chatter."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (a detached process): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = []
            for line in text.splitlines(keepends=True):
                if is_chatter(line.rstrip("\n")):
                    if summary is not None and (m := ONEDNN.search(line)):
                        summary.append(m.group(1))
                else:
                    kept.append(line)
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """The real loader of ``tensorflow``, its module executed with stderr filtered."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        onednn: list[str] = []
        with filtered_stderr(onednn):
            self.real.exec_module(module)
        _announce(module, onednn)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.real, name)


def _announce(module: ModuleType, onednn: list[str]) -> None:
    version = getattr(module, "__version__", "?")
    try:
        devices = module.config.list_physical_devices("GPU")
    except Exception:  # noqa: BLE001 - only for the message
        devices = []
    where = f"{len(devices)} GPU(s)" if devices else "CPU"
    extra = f" (oneDNN custom operations {onednn[0]})" if onednn else ""
    log.info("TensorFlow %s on %s%s", version, where, extra)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and hands it to :class:`_QuietLoader`."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Quiet TensorFlow for this process: environment defaults now, the stderr filter at its first import."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())
