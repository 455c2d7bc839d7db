"""All I/O for the lake: a local directory or ``s3://bucket/prefix``.

A *partition* is a folder written as a unit. Its data files are staged in a
hidden ``_staging-*`` folder, the previous content is retired (manifest first,
so it becomes invisible before anything else is touched), the staged files are
moved into place and ``_MANIFEST.json`` is written last. A reader that only
trusts manifested partitions therefore sees the old complete partition, the new
complete one, or none, never a mix. Those commit steps run under the partition's
lake lock (``Lake.lock``), so two writers of one partition never interleave them:
the last to commit wins. A commit leaves other runs' staging folders alone unless
they are abandoned (a dead writer on this host, or older than a day).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import random
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from textclf.errors import (
    ChecksumMismatchError,
    PartitionNotFoundError,
    StorageError,
    UnsafeKeyError,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
STAGING_PREFIX = "_staging-"
PARQUET_COMPRESSION = "zstd"
LOCKS = "_locks"  # lock objects, at the lake root (see Lake.lock)
LOCK_STALE_S = 300.0  # a lock older than this is taken over: no commit or promotion holds one for that long
WRITER = "_writer.json"  # inside a staging folder: who is writing it (host, pid, time)
STAGING_ABANDONED_S = 24 * 3600.0  # a staging folder this old is an abandoned run's, whoever wrote it


def utc_now_iso() -> str:
    """Current UTC time as an ISO-8601 string with a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def safe_key(key: str) -> str:
    """Normalise a lake key, refusing anything that could escape the lake root."""
    if not isinstance(key, str) or not key.strip():
        raise UnsafeKeyError(f"lake key must be a non-empty string, got {key!r}")
    if "\x00" in key or "\\" in key:
        raise UnsafeKeyError(f"lake key {key!r} contains a NUL or backslash")
    if key.startswith("/") or urlparse(key).scheme:
        raise UnsafeKeyError(f"lake key {key!r} is absolute; keys are relative to the lake root")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeKeyError(f"lake key {key!r} contains '..'; keys may not leave the lake")
    if not parts:
        raise UnsafeKeyError(f"lake key {key!r} names the lake root itself")
    return "/".join(parts)


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible endpoint; defaults come from the standard AWS variables."""

    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)  # never shown in a repr, log or error
    region: str | None = None

    @classmethod
    def from_env(cls) -> S3Options:
        """Read ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, region."""
        return cls(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        )

    def filesystem(self) -> pafs.S3FileSystem:
        """Build a pyarrow S3 filesystem for these options."""
        import pyarrow.fs as pafs

        kwargs: dict[str, Any] = {"region": self.region or "us-east-1"}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        if self.access_key and self.secret_key:
            kwargs["access_key"] = self.access_key
            kwargs["secret_key"] = self.secret_key
        return pafs.S3FileSystem(**kwargs)

    def client(self) -> Any:
        """A boto3 client for the same endpoint: locks need conditional writes, which pyarrow's S3 lacks."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region or "us-east-1")


def resolve_filesystem(uri: str, s3: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """Map a local path or ``s3://`` URI to a pyarrow filesystem and a path inside it."""
    import pyarrow.fs as pafs

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{uri}: an S3 URI needs a bucket, as in s3://bucket/prefix")
        path = posixpath.join(parsed.netloc, parsed.path.lstrip("/")).rstrip("/")
        return (s3 or S3Options.from_env()).filesystem(), path
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
    raise StorageError(f"{uri}: unsupported scheme {parsed.scheme!r}; use a local path or s3://")


def _wrap_os_error(what: str, exc: Exception) -> StorageError:
    message = f"{what}: {exc}".splitlines()[0]
    if "No space left on device" in message:
        message += "; free space on that disk and rerun"
    return StorageError(message)


def _s3_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _pid_namespace() -> int | None:
    """Which process-id namespace this process lives in (containers sharing a host name differ here)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _holder() -> dict[str, Any]:
    """Who this process is, as recorded in lock objects and staging folders."""
    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pidns": _pid_namespace(), "pid": os.getpid(),
            "acquired_at": time.time()}


def _holder_is_stale(holder: dict[str, Any], stale_after: float) -> bool:
    """Whether a lock's or staging folder's holder (``_holder()``) is a dead process on this host, or older
    than ``stale_after`` seconds."""
    try:
        if time.time() - float(holder.get("acquired_at", 0)) > stale_after:
            return True
    except (TypeError, ValueError):
        return True
    pid = holder.get("pid")
    here = holder.get("host") == socket.gethostname() and holder.get("pidns") == _pid_namespace()
    if here and isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
    return False


class HashingSink:
    """A writable file object that forwards bytes to a pyarrow stream and hashes them."""

    def __init__(self, stream: pa.NativeFile, uri: str = "a lake file") -> None:
        self._stream = stream
        self._uri = uri  # named in errors: a full disk or a lost S3 connection surfaces here
        self._sha = hashlib.sha256()
        self._pos = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self._sha.update(data)
        try:
            self._stream.write(data)
        except OSError as exc:
            raise _wrap_os_error(f"cannot write {self._uri}", exc) from exc
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _wrap_os_error(f"cannot write {self._uri}", exc) from exc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._stream.close()
            except OSError as exc:
                raise _wrap_os_error(f"cannot write {self._uri}", exc) from exc

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def size(self) -> int:
        return self._pos


@dataclass(frozen=True)
class FileEntry:
    """One file of a partition as recorded in its manifest."""

    path: str
    rows: int | None
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}
        if self.rows is not None:
            out["rows"] = self.rows
        return out


class ParquetPartFile:
    """A Parquet file being written into a partition's staging area."""

    def __init__(self, sink: HashingSink, schema: pa.Schema, name: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.name = name
        self.rows = 0
        self._sink = sink
        self._writer: pq.ParquetWriter = pq.ParquetWriter(
            pa.PythonFile(sink, mode="w"), schema, compression=PARQUET_COMPRESSION
        )

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        import pyarrow as pa

        if data.num_rows:
            if isinstance(data, pa.Table):
                self._writer.write_table(data)
            else:
                self._writer.write_batch(data)
            self.rows += data.num_rows

    def close(self) -> FileEntry:
        self._writer.close()
        self._sink.close()
        return FileEntry(self.name, self.rows, self._sink.size, self._sink.sha256)


class PartitionWriter:
    """Stages the files of one partition and commits them with a manifest written last.

    Use as a context manager: on an exception the staging area is removed and the
    previous partition, if any, is left untouched.
    """

    def __init__(self, lake: Lake, key: str) -> None:
        self.lake = lake
        self.key = safe_key(key)
        self.staging = f"{self.key}/{STAGING_PREFIX}{int(time.time())}-{uuid.uuid4().hex[:12]}"
        self.files: list[FileEntry] = []
        self._committed = False
        self._open: list[ParquetPartFile] = []
        lake.write_object(f"{self.staging}/{WRITER}", json.dumps(_holder()).encode())

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._committed:
            self.abort()

    def _check_name(self, name: str) -> str:
        name = safe_key(name)
        if name in (MANIFEST, WRITER) or name.split("/")[0].startswith(STAGING_PREFIX):
            raise UnsafeKeyError(f"{name!r} is reserved inside a partition")
        return name

    def parquet(self, name: str, schema: pa.Schema) -> ParquetPartFile:
        """Open a Parquet file in the staging area; ``close()`` it, then it joins the manifest."""
        name = self._check_name(name)
        stream = self.lake.open_output(f"{self.staging}/{name}")
        part = ParquetPartFile(HashingSink(stream, self.lake.uri_of(f"{self.staging}/{name}")), schema, name)
        self._open.append(part)
        return part

    def close_parquet(self, part: ParquetPartFile) -> FileEntry:
        """Finish a Parquet file and record it for the manifest."""
        entry = part.close()
        self._open.remove(part)
        self.files.append(entry)
        return entry

    def add_bytes(self, name: str, data: bytes, rows: int | None = None) -> FileEntry:
        """Stage a small file given as bytes (JSON, HTML, ...)."""
        name = self._check_name(name)
        self.lake.write_object(f"{self.staging}/{name}", data)
        entry = FileEntry(name, rows, len(data), hashlib.sha256(data).hexdigest())
        self.files.append(entry)
        return entry

    def add_local_dir(self, name: str, local_dir: str) -> list[FileEntry]:
        """Stage every file under a local directory below ``name``/."""
        entries = []
        for root, _dirs, filenames in os.walk(local_dir):
            for filename in sorted(filenames):
                full = os.path.join(root, filename)
                rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
                with open(full, "rb") as fh:
                    entries.append(self.add_bytes(f"{name}/{rel}", fh.read()))
        return entries

    def adopt(self, name: str, src_key: str, entry: dict[str, Any]) -> FileEntry:
        """Copy an already-written, already-hashed file (another partition's) into this one.

        A copy, not a move: until this partition is committed the source stays complete, so a
        commit that dies halfway can simply be run again.
        """
        name = self._check_name(name)
        self.lake.copy(src_key, f"{self.staging}/{name}")
        adopted = FileEntry(name, entry.get("rows"), entry["bytes"], entry["sha256"])
        self.files.append(adopted)
        return adopted

    def rewrite_parquet(self, entry: FileEntry, schema: pa.Schema,
                        batches: Iterable[pa.RecordBatch | pa.Table]) -> FileEntry:
        """Replace a staged Parquet file's content (streamed), keeping its name (used to drop rows)."""
        tmp_name = f"{entry.path}.rewrite"
        part = self.parquet(tmp_name, schema)
        for batch in batches:
            part.write(batch)
        written = self.close_parquet(part)
        self.lake.move(f"{self.staging}/{tmp_name}", f"{self.staging}/{entry.path}")
        final = FileEntry(entry.path, written.rows, written.bytes, written.sha256)
        self.files = [final if f is entry else f for f in self.files if f is not written]
        return final

    def drop_file(self, entry: FileEntry) -> None:
        """Remove a staged file and its manifest entry."""
        self.files = [f for f in self.files if f is not entry]
        self.lake.delete(f"{self.staging}/{entry.path}")

    def staged_uri(self, entry: FileEntry) -> str:
        """Key of a staged file, for reading it back before the commit."""
        return f"{self.staging}/{entry.path}"

    def require_staged(self) -> None:
        """Raise StorageError if staged files are gone: a writer that committed meanwhile removed them.

        That writer's result stands, and nothing is touched here.
        """
        staged = set(self.lake.list_files(self.staging))
        gone = [e.path for e in self.files if f"{self.staging}/{e.path}" not in staged]
        if gone:
            raise StorageError(
                f"cannot commit {self.lake.uri_of(self.key)}: {len(gone)} staged file(s) ({gone[0]}, ...) are gone "
                f"from {self.lake.uri_of(self.staging)}; another run committed this partition meanwhile and its "
                "result stands; rerun to replace it")

    def commit(self, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """Retire the previous partition, publish the staged files, write the manifest last.

        Under the partition's lock: two writers of one partition (two runs for the same date) commit one
        after the other, so the manifest left last lists exactly the files the same writer put in place.
        """
        if self._open:
            raise StorageError(f"{self.key}: commit with {len(self._open)} Parquet file(s) still open")
        manifest: dict[str, Any] = {
            "manifest_version": 1,
            "partition": self.key,
            "created_at": utc_now_iso(),
            **(fields or {}),
            "files": [f.as_dict() for f in self.files],
        }
        if "rows" not in manifest and any(f.rows is not None for f in self.files):
            manifest["rows"] = sum(f.rows for f in self.files if f.rows is not None)
        lake = self.lake
        with lake.lock(self.key):
            # Checked before the old manifest goes, so the partition stays whole.
            self.require_staged()
            lake.delete(f"{self.key}/{MANIFEST}")
            staging_name = self.staging.rsplit("/", 1)[1]
            for child in lake.list_children(self.key):
                # Another run's staging folder stays while that run may still commit (last committer wins).
                if child != staging_name and (not child.startswith(STAGING_PREFIX) or self._abandoned(child)):
                    lake.delete_tree(f"{self.key}/{child}")
            for entry in self.files:
                lake.move(f"{self.staging}/{entry.path}", f"{self.key}/{entry.path}")
            lake.write_bytes(f"{self.key}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
            lake.delete_tree(self.staging)
            self._committed = True
        log.info("committed %s (%d files)", lake.uri_of(self.key), len(self.files))
        return manifest

    def _abandoned(self, staging_name: str) -> bool:
        """Whether another staging folder of this partition belongs to a run that will never commit it.

        True for a folder older than ``STAGING_ABANDONED_S``, one whose writer is a dead process on this
        host, and one without a writer record after a minute (it is written as the folder is created).
        """
        started = staging_name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not started.isdigit():
            return True  # an older release's name: nothing of it is running any more
        age = time.time() - int(started)
        if age > STAGING_ABANDONED_S:
            return True
        try:
            holder = json.loads(self.lake.read_bytes(f"{self.key}/{staging_name}/{WRITER}"))
        except (StorageError, ValueError):
            return age > 60
        return not isinstance(holder, dict) or _holder_is_stale(holder, STAGING_ABANDONED_S)

    def abort(self) -> None:
        """Remove the staging area; the previous partition stays as it was."""
        for part in list(self._open):
            try:
                part.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
        self._open.clear()
        try:
            self.lake.delete_tree(self.staging)
        except StorageError:
            log.warning("could not remove staging area %s", self.lake.uri_of(self.staging))


class Lake:
    """A lake rooted at a local directory or an ``s3://bucket/prefix`` URI."""

    def __init__(self, uri: str, s3: S3Options | None = None) -> None:
        self.fs, self.root = resolve_filesystem(uri.rstrip("/") or uri, s3)
        self.s3 = s3  # also used for source files on S3 (landed files live in the same store)
        self.is_local = uri.startswith("file:") or "://" not in uri
        # local lakes are named by their absolute path, so printed locations work from anywhere
        self.uri = self.root if self.is_local else uri.rstrip("/")
        self._s3_client: Any = None

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # -- keys ---------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """Filesystem path of a key (inside the lake, checked)."""
        return f"{self.root}/{safe_key(key)}"

    def uri_of(self, key: str) -> str:
        """Full URI of a key, for messages and manifests."""
        return f"{self.uri}/{safe_key(key)}"

    # -- plain objects -----------------------------------------------------------------
    def exists(self, key: str) -> bool:
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(self.path(key)).type != pafs.FileType.NotFound
        except OSError as exc:
            raise _wrap_os_error(self.uri_of(key), exc) from exc

    def open_output(self, key: str) -> pa.NativeFile:
        path = self.path(key)
        try:
            if self.is_local:
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
            return self.fs.open_output_stream(path)
        except OSError as exc:
            raise _wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc

    def open_input(self, key: str) -> pa.NativeFile:
        try:
            return self.fs.open_input_file(self.path(key))
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri_of(key)} does not exist") from exc
        except OSError as exc:
            raise _wrap_os_error(f"cannot read {self.uri_of(key)}", exc) from exc

    def write_object(self, key: str, data: bytes) -> None:
        """Write an object in one piece (not atomic on a local disk; see ``write_bytes``)."""
        try:
            with self.open_output(key) as out:
                out.write(data)
        except OSError as exc:
            raise _wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write an object in one piece (atomically on a local disk: temp file, then rename)."""
        if self.is_local:
            path = self.path(key)
            tmp = f"{posixpath.dirname(path)}/.tmp-{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}"
            try:
                with self.open_output(posixpath.relpath(tmp, self.root)) as out:
                    out.write(data)
                os.replace(tmp, path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise _wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc
        else:
            self.write_object(key, data)
        return self.uri_of(key)

    def read_bytes(self, key: str) -> bytes:
        with self.open_input(key) as src:
            return src.read()

    def read_json(self, key: str) -> Any:
        try:
            return json.loads(self.read_bytes(key))
        except json.JSONDecodeError as exc:
            raise StorageError(f"{self.uri_of(key)} is not valid JSON: {exc}") from exc

    def delete(self, key: str) -> None:
        """Delete one object if it exists."""
        try:
            self.fs.delete_file(self.path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if self.exists(key):
                raise _wrap_os_error(f"cannot delete {self.uri_of(key)}", exc) from exc

    def delete_tree(self, key: str) -> None:
        """Delete a key and everything below it, if present."""
        import pyarrow.fs as pafs

        path = self.path(key)
        try:
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _wrap_os_error(f"cannot delete {self.uri_of(key)}", exc) from exc

    def move(self, src: str, dst: str) -> None:
        """Move one file inside the lake."""
        self._transfer("move", src, dst)

    def copy(self, src: str, dst: str) -> None:
        """Copy one file inside the lake (server-side on S3)."""
        self._transfer("copy", src, dst)

    def _transfer(self, verb: str, src: str, dst: str) -> None:
        try:
            if self.is_local:
                self.fs.create_dir(posixpath.dirname(self.path(dst)), recursive=True)
            operation = self.fs.move if verb == "move" else self.fs.copy_file
            operation(self.path(src), self.path(dst))
        except OSError as exc:
            raise _wrap_os_error(f"cannot {verb} {self.uri_of(src)}", exc) from exc

    def _infos(self, key: str, recursive: bool) -> list[pafs.FileInfo]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(key), allow_not_found=True, recursive=recursive)
        try:
            return self.fs.get_file_info(selector)
        except OSError as exc:
            raise _wrap_os_error(f"cannot list {self.uri_of(key)}", exc) from exc

    def list_children(self, key: str) -> list[str]:
        """Names directly below a key (files and folders), sorted."""
        return sorted(posixpath.basename(i.path.rstrip("/")) for i in self._infos(key, recursive=False))

    def list_files(self, key: str) -> list[str]:
        """Keys of every file below a key, sorted."""
        import pyarrow.fs as pafs

        base = self.root + "/"
        infos = self._infos(key, recursive=True)
        return sorted(i.path[len(base) :] for i in infos if i.type == pafs.FileType.File)

    def upload(self, local_path: str, key: str) -> str:
        """Copy a local file into the lake (streamed, any size)."""
        import pyarrow.fs as pafs

        dest = self.path(key)
        try:
            if self.is_local:
                self.fs.create_dir(posixpath.dirname(dest), recursive=True)
            pafs.copy_files(os.path.abspath(local_path), dest, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)
        except OSError as exc:
            raise _wrap_os_error(f"cannot upload {local_path} to {self.uri_of(key)}", exc) from exc
        return self.uri_of(key)

    # -- locks -------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, *, timeout: float | None = None, stale_after: float = LOCK_STALE_S) -> Iterator[None]:
        """Hold the lake's exclusive lock ``name`` (a key, such as a partition's) while the block runs.

        The lock is the object ``_locks/NAME.lock``, created only where none exists: ``O_CREAT | O_EXCL``
        on a local disk, a conditional PUT (``If-None-Match: *``, which the S3 store must honour) on S3.
        It records its holder (host, pid, time); a lock whose holder is a dead process on this host, or
        that is older than ``stale_after`` seconds, is taken over. Waits up to ``timeout`` seconds
        (default ``stale_after`` plus a minute), then raises StorageError naming the lock and its holder.
        """
        key = f"{LOCKS}/{safe_key(name)}.lock"
        deadline = time.monotonic() + (stale_after + 60 if timeout is None else timeout)
        pause = 0.02
        while True:
            body = json.dumps(_holder()).encode()
            tag = self._lock_create(key, body)
            if tag is not None:
                break
            held = self._lock_read(key)
            if held is None:
                continue  # released meanwhile
            holder, held_tag = held
            if _holder_is_stale(holder, stale_after):
                log.warning("taking over the stale lock %s of pid %s on %s", self.uri_of(key), holder.get("pid"),
                            holder.get("host"))
                self._lock_remove(key, held_tag)
                continue
            if time.monotonic() >= deadline:
                since = datetime.fromtimestamp(float(holder.get("acquired_at", 0)), UTC).isoformat(timespec="seconds")
                raise StorageError(
                    f"{self.uri_of(key)} is held by pid {holder.get('pid')} on {holder.get('host')} since {since}: "
                    f"another run is writing {name}; retry when it is done (a lock older than {stale_after:.0f} s "
                    "is taken over)")
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.5)
        try:
            yield
        finally:
            try:
                self._lock_remove(key, tag)
            except StorageError as exc:
                log.warning("could not release the lock %s (it expires by itself): %s", self.uri_of(key), exc)

    def _s3_object(self, key: str) -> tuple[Any, str, str]:
        if self._s3_client is None:
            self._s3_client = (self.s3 or S3Options.from_env()).client()
        bucket, _, object_key = self.path(key).partition("/")
        return self._s3_client, bucket, object_key

    def _lock_create(self, key: str, body: bytes) -> Any:
        """Create the lock object if absent; its tag (what ``_lock_remove`` compares), or None if it exists."""
        if self.is_local:
            path = self.path(key)
            try:
                os.makedirs(posixpath.dirname(path), exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return None
            except OSError as exc:
                raise _wrap_os_error(f"cannot create the lock {self.uri_of(key)}", exc) from exc
            try:
                os.write(fd, body)
            except OSError as exc:
                os.unlink(path)
                raise _wrap_os_error(f"cannot create the lock {self.uri_of(key)}", exc) from exc
            finally:
                os.close(fd)
            return body
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket, object_key = self._s3_object(key)
        try:
            return client.put_object(Bucket=bucket, Key=object_key, Body=body, IfNoneMatch="*")["ETag"]
        except ClientError as exc:
            if _s3_error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return None
            raise _wrap_os_error(f"cannot create the lock {self.uri_of(key)}", exc) from exc
        except BotoCoreError as exc:
            raise _wrap_os_error(f"cannot create the lock {self.uri_of(key)}", exc) from exc

    def _lock_read(self, key: str) -> tuple[dict[str, Any], Any] | None:
        """The holder of a lock and its tag, or None when there is no lock."""
        if self.is_local:
            try:
                with open(self.path(key), "rb") as fh:
                    data, written = fh.read(), os.fstat(fh.fileno()).st_mtime
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise _wrap_os_error(f"cannot read the lock {self.uri_of(key)}", exc) from exc
            tag: Any = data
        else:
            from botocore.exceptions import BotoCoreError, ClientError

            client, bucket, object_key = self._s3_object(key)
            try:
                obj = client.get_object(Bucket=bucket, Key=object_key)
                data, tag, written = obj["Body"].read(), obj["ETag"], obj["LastModified"].timestamp()
            except ClientError as exc:
                if _s3_error_code(exc) in ("NoSuchKey", "404"):
                    return None
                raise _wrap_os_error(f"cannot read the lock {self.uri_of(key)}", exc) from exc
            except BotoCoreError as exc:
                raise _wrap_os_error(f"cannot read the lock {self.uri_of(key)}", exc) from exc
        try:
            holder = json.loads(data)
        except ValueError:
            holder = None
        if not isinstance(holder, dict):
            holder = {}
        holder.setdefault("acquired_at", written)  # a lock created this instant has no content yet
        return holder, tag

    def _lock_remove(self, key: str, tag: Any) -> None:
        """Delete the lock only if it is still the one with ``tag`` (its own, or the stale one it read)."""
        if self.is_local:
            path = self.path(key)
            aside = f"{path}.{uuid.uuid4().hex[:8]}.removed"
            try:
                os.rename(path, aside)  # atomic: from here no other process can remove or replace it
                with open(aside, "rb") as fh:
                    ours = fh.read() == tag
                if not ours:  # another holder's lock: put it back
                    with contextlib.suppress(FileExistsError):
                        os.link(aside, path)
                os.unlink(aside)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _wrap_os_error(f"cannot remove the lock {self.uri_of(key)}", exc) from exc
            return
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket, object_key = self._s3_object(key)
        try:
            client.delete_object(Bucket=bucket, Key=object_key, IfMatch=tag)
        except ClientError as exc:
            if _s3_error_code(exc) not in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict",
                                           "412", "404", "409"):  # else: gone, or not ours any more
                raise _wrap_os_error(f"cannot remove the lock {self.uri_of(key)}", exc) from exc
        except BotoCoreError as exc:
            raise _wrap_os_error(f"cannot remove the lock {self.uri_of(key)}", exc) from exc

    # -- partitions --------------------------------------------------------------------
    def partition(self, key: str) -> PartitionWriter:
        """Start writing a partition; see ``PartitionWriter``."""
        return PartitionWriter(self, key)

    def read_manifest(self, key: str) -> dict[str, Any] | None:
        """The manifest of a committed partition, or None when there is none."""
        manifest_key = f"{safe_key(key)}/{MANIFEST}"
        if not self.exists(manifest_key):
            return None
        return self.read_json(manifest_key)

    def require_manifest(self, key: str) -> dict[str, Any]:
        manifest = self.read_manifest(key)
        if manifest is None:
            raise PartitionNotFoundError(f"no committed partition at {self.uri_of(key)} (no {MANIFEST})")
        return manifest

    def list_partitions(self, key: str) -> list[str]:
        """Keys of the committed partitions directly below a key, sorted."""
        parent = safe_key(key)
        found = []
        for child in self.list_children(parent):
            if "=" in child and self.exists(f"{parent}/{child}/{MANIFEST}"):
                found.append(f"{parent}/{child}")
        return found

    def partition_files(self, key: str, suffix: str = ".parquet") -> list[str]:
        """Keys of a committed partition's data files, as listed in its manifest."""
        manifest = self.require_manifest(key)
        return [f"{safe_key(key)}/{f['path']}" for f in manifest["files"] if f["path"].endswith(suffix)]

    def parquet_file(self, key: str) -> pq.ParquetFile:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.open_input(key))
        except StorageError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for damaged files
            raise StorageError(f"{self.uri_of(key)} is not a readable Parquet file: {exc}") from exc

    def iter_batches(
        self, key: str, columns: list[str] | None = None, batch_size: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Stream record batches of a committed partition's Parquet files."""
        for file_key in self.partition_files(key):
            pf = self.parquet_file(file_key)
            missing = [c for c in columns or [] if c not in pf.schema_arrow.names]
            if missing:
                raise StorageError(f"{self.uri_of(file_key)} has no column(s) {', '.join(missing)}")
            try:
                yield from pf.iter_batches(batch_size=batch_size, columns=columns)
            except OSError as exc:  # the store went away mid-read
                raise _wrap_os_error(f"cannot read {self.uri_of(file_key)}", exc) from exc

    def read_table(self, key: str, columns: list[str] | None = None) -> pa.Table:
        """Read a whole committed partition into memory (small partitions only)."""
        import pyarrow as pa

        tables = []
        for file_key in self.partition_files(key):
            try:
                tables.append(self.parquet_file(file_key).read(columns=columns))
            except OSError as exc:  # the store went away mid-read
                raise _wrap_os_error(f"cannot read {self.uri_of(file_key)}", exc) from exc
        if not tables:
            raise PartitionNotFoundError(f"{self.uri_of(key)} has no Parquet files")
        return pa.concat_tables(tables)

    def verify(self, key: str) -> dict[str, Any]:
        """Check every file of a committed partition against its manifest's sha256."""
        manifest = self.require_manifest(key)
        for entry in manifest["files"]:
            file_key = f"{safe_key(key)}/{entry['path']}"
            sha = hashlib.sha256()
            try:
                with self.open_input(file_key) as src:
                    while chunk := src.read(8 << 20):
                        sha.update(chunk)
            except OSError as exc:
                raise _wrap_os_error(f"cannot read {self.uri_of(file_key)}", exc) from exc
            if sha.hexdigest() != entry["sha256"]:
                raise ChecksumMismatchError(
                    f"{self.uri_of(file_key)}: sha256 {sha.hexdigest()} does not match the manifest's "
                    f"{entry['sha256']}; the file was changed after it was written"
                )
        return manifest


def open_source(uri: str, s3: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path of an input file given as a local path or ``s3://`` URI."""
    fs, path = resolve_filesystem(uri, s3)
    import pyarrow.fs as pafs

    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise _wrap_os_error(f"cannot reach {uri}", exc) from exc
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri} does not exist")
    if info.type != pafs.FileType.File:
        raise StorageError(f"{uri} is not a file")
    return fs, path
