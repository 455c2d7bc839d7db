"""Run a command and measure its own peak RSS, not its parent's.

Linux starts a child's high-water RSS at what it inherited: ``fork`` copies the parent's resident
size, and ``exec`` after ``vfork`` (what ``subprocess`` uses) records the parent's peak. A benchmark
that has generated a corpus or trained a model in-process would therefore report its own size for
every child. Here a bare ``python -S`` shim forks and execs the command, so the figure ``wait4``
returns starts from the shim's few megabytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SHIM = """
import os, sys
fd = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(fd)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


def run_measured(args: list[str]) -> tuple[float, float]:
    """Run ``args`` (the first one a path) to completion: wall seconds and peak RSS in MB.

    Exits the calling script with the command's stderr if the command fails.
    """
    read_fd, write_fd = os.pipe()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-S", "-c", SHIM, str(write_fd), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, pass_fds=(write_fd,))
    os.close(write_fd)
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    with os.fdopen(read_fd, "rb") as fh:
        reported = fh.read()
    if proc.returncode != 0 or not reported:
        sys.exit(f"{' '.join(args[:3])} failed (exit {proc.returncode}):\n{stderr.decode(errors='replace')[-2000:]}")
    return seconds, int(reported) / 1024


def own_peak_rss_mb() -> float:
    """This process's peak RSS since its last exec (VmHWM), excluding what it inherited from its parent."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(script: str, args: list[str], what: str) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter; the JSON object on its last line of output.

    The child measures itself (``own_peak_rss_mb``); exits the calling script with the end of the
    child's stderr if it fails.
    """
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{what} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
