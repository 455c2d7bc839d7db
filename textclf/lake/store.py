"""All I/O for the lake, a local directory or ``s3://bucket/prefix``: objects, listings, uploads and locks.

Only this package touches the filesystem or S3. Partitions (folders committed as a unit, manifest
last) are in ``textclf.lake.partition``; the keys of every area are in ``textclf.lake.layout``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from textclf.errors import (
    ChecksumMismatchError,
    PartitionNotFoundError,
    StorageError,
)
from textclf.lake.layout import LOCKS, MANIFEST, safe_key

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from textclf.lake.partition import PartitionWriter

log = logging.getLogger(__name__)


PARQUET_COMPRESSION = "zstd"

LOCK_STALE_S = 300.0  # a lock older than this is taken over: no commit or promotion holds one for that long

STAGING_ABANDONED_S = 24 * 3600.0  # a staging folder this old is an abandoned run's, whoever wrote it


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

    def storage_options(self) -> dict[str, str]:
        """The same endpoint and credentials as delta-rs storage options, with its commit mode made explicit.

        ``conditional_put=etag``: every Delta log entry is created with ``If-None-Match: *``, so of two writers
        racing for one table version exactly one wins and the other re-checks and retries (docs/RELIABILITY.md
        shows SeaweedFS honouring it). It is delta-rs's default for S3 since 2025; it is set here so that a
        change of default cannot silently turn it off. ``AWS_S3_ALLOW_UNSAFE_RENAME`` is never set.
        """
        options = {"conditional_put": "etag", "AWS_REGION": self.region or "us-east-1",
                   # fail an outage within about a minute, like pyarrow's S3 client, instead of retrying for 3
                   "max_retries": "4", "retry_timeout": "30s", "connect_timeout": "5s", "timeout": "120s"}
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        if self.access_key and self.secret_key:
            options["AWS_ACCESS_KEY_ID"] = self.access_key
            options["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return options

    def client(self) -> Any:
        """A boto3 client for the same endpoint: conditional writes (``If-Match``), which pyarrow's S3 lacks."""
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


def wrap_os_error(what: str, exc: Exception) -> StorageError:
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


def holder_record() -> dict[str, Any]:
    """Who this process is, as recorded in lock objects and staging folders."""
    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pidns": _pid_namespace(), "pid": os.getpid(),
            "acquired_at": time.time()}


def holder_is_stale(holder: dict[str, Any], stale_after: float) -> bool:
    """Whether a lock's or staging folder's holder (``holder_record()``) is a dead process on this host, or older
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
    def root_exists(self) -> bool:
        """Whether the lake's root exists (a folder on disk; on S3, any object under the prefix)."""
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(self.root).type != pafs.FileType.NotFound
        except OSError as exc:
            raise wrap_os_error(f"cannot reach the lake {self.uri}", exc) from exc

    def exists(self, key: str) -> bool:
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(self.path(key)).type != pafs.FileType.NotFound
        except OSError as exc:
            raise wrap_os_error(self.uri_of(key), exc) from exc

    def open_output(self, key: str) -> pa.NativeFile:
        path = self.path(key)
        try:
            if self.is_local:
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
            return self.fs.open_output_stream(path)
        except OSError as exc:
            raise wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc

    def open_input(self, key: str) -> pa.NativeFile:
        try:
            return self.fs.open_input_file(self.path(key))
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri_of(key)} does not exist") from exc
        except OSError as exc:
            raise wrap_os_error(f"cannot read {self.uri_of(key)}", exc) from exc

    def write_object(self, key: str, data: bytes) -> None:
        """Write an object in one piece (not atomic on a local disk; see ``write_bytes``)."""
        try:
            with self.open_output(key) as out:
                out.write(data)
        except OSError as exc:
            raise wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc

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
                raise wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc
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

    # -- conditional writes ------------------------------------------------------------
    def read_tagged(self, key: str) -> tuple[bytes | None, str | None]:
        """An object's bytes and its tag, or ``(None, None)`` when it is absent; ``write_if`` compares the tag.

        The tag is the S3 ETag on S3 and the sha256 of the content on a local disk.
        """
        if self.is_local:
            try:
                with open(self.path(key), "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                return None, None
            except OSError as exc:
                raise wrap_os_error(f"cannot read {self.uri_of(key)}", exc) from exc
            return data, hashlib.sha256(data).hexdigest()
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket, object_key = self._s3_object(key)
        try:
            obj = client.get_object(Bucket=bucket, Key=object_key)
            return obj["Body"].read(), obj["ETag"]
        except ClientError as exc:
            if _s3_error_code(exc) in ("NoSuchKey", "404"):
                return None, None
            raise wrap_os_error(f"cannot read {self.uri_of(key)}", exc) from exc
        except BotoCoreError as exc:
            raise wrap_os_error(f"cannot read {self.uri_of(key)}", exc) from exc

    def write_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        """Write an object only if it is still as ``read_tagged`` returned it (``tag`` None: only if absent).

        Returns the new tag, or None when another writer changed the object meanwhile (nothing is written):
        re-read it and decide again. On S3 this is one PUT with ``If-Match: TAG`` or ``If-None-Match: *``.
        On a local disk the comparison and the atomic rename (or, for a new object, the exclusive ``link``)
        run under an ``flock`` of a sidecar file, held for those few system calls only; the kernel drops it
        when its holder exits, so it is never stale and never taken over.
        """
        if self.is_local:
            return self._write_if_local(key, data, tag)
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket, object_key = self._s3_object(key)
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            return client.put_object(Bucket=bucket, Key=object_key, Body=data, **condition)["ETag"]
        except ClientError as exc:
            if _s3_error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return None
            raise wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc
        except BotoCoreError as exc:
            raise wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc

    def _write_if_local(self, key: str, data: bytes, tag: str | None) -> str | None:
        path = self.path(key)
        folder, name = posixpath.split(path)
        tmp = f"{folder}/.tmp-{uuid.uuid4().hex[:8]}-{name}"
        try:
            os.makedirs(folder, exist_ok=True)
            guard = os.open(f"{folder}/.{name}.cas", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if self.read_tagged(key)[1] != tag:
                return None
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if tag is None:
                os.link(tmp, path)  # atomic create: fails if the object appeared meanwhile
            else:
                os.replace(tmp, path)  # atomic: readers see the old or the new content, never a mix
            return hashlib.sha256(data).hexdigest()
        except FileExistsError:
            return None
        except OSError as exc:
            raise wrap_os_error(f"cannot write {self.uri_of(key)}", exc) from exc
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            os.close(guard)  # releases the flock

    def delete(self, key: str) -> None:
        """Delete one object if it exists."""
        try:
            self.fs.delete_file(self.path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if self.exists(key):
                raise wrap_os_error(f"cannot delete {self.uri_of(key)}", exc) from exc

    def remove_empty_folders(self, key: str) -> None:
        """On a local lake, remove ``key``'s folder and then its parents while they are empty (up to the lake's
        root, which stays). Object stores have no folders, so there is nothing to do there."""
        import pyarrow.fs as pafs

        if not isinstance(self.fs, pafs.LocalFileSystem):
            return
        path, root = os.path.abspath(self.path(key)), os.path.abspath(self.root)
        while path.startswith(root + os.sep):
            try:
                os.rmdir(path)  # only ever removes an empty folder
            except OSError:  # not empty (another run's files), or already gone
                if os.path.isdir(path):
                    return
            path = os.path.dirname(path)

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
            raise wrap_os_error(f"cannot delete {self.uri_of(key)}", exc) from exc

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
            raise wrap_os_error(f"cannot {verb} {self.uri_of(src)}", exc) from exc

    def _infos(self, key: str, recursive: bool) -> list[pafs.FileInfo]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(key), allow_not_found=True, recursive=recursive)
        try:
            return self.fs.get_file_info(selector)
        except OSError as exc:
            raise wrap_os_error(f"cannot list {self.uri_of(key)}", exc) from exc

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
            raise wrap_os_error(f"cannot upload {local_path} to {self.uri_of(key)}", exc) from exc
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
            body = json.dumps(holder_record()).encode()
            tag = self._lock_create(key, body)
            if tag is not None:
                break
            held = self._lock_read(key)
            if held is None:
                continue  # released meanwhile
            holder, held_tag = held
            if holder_is_stale(holder, stale_after):
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
                raise wrap_os_error(f"cannot create the lock {self.uri_of(key)}", exc) from exc
            try:
                os.write(fd, body)
            except OSError as exc:
                os.unlink(path)
                raise wrap_os_error(f"cannot create the lock {self.uri_of(key)}", exc) from exc
            finally:
                os.close(fd)
            return body
        return self.write_if(key, body, None)  # S3: one PUT with If-None-Match: *

    def _lock_read(self, key: str) -> tuple[dict[str, Any], Any] | None:
        """The holder of a lock and its tag, or None when there is no lock."""
        if self.is_local:
            try:
                with open(self.path(key), "rb") as fh:
                    data, written = fh.read(), os.fstat(fh.fileno()).st_mtime
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise wrap_os_error(f"cannot read the lock {self.uri_of(key)}", exc) from exc
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
                raise wrap_os_error(f"cannot read the lock {self.uri_of(key)}", exc) from exc
            except BotoCoreError as exc:
                raise wrap_os_error(f"cannot read the lock {self.uri_of(key)}", exc) from exc
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
                raise wrap_os_error(f"cannot remove the lock {self.uri_of(key)}", exc) from exc
            return
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket, object_key = self._s3_object(key)
        try:
            client.delete_object(Bucket=bucket, Key=object_key, IfMatch=tag)
        except ClientError as exc:
            if _s3_error_code(exc) not in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict",
                                           "412", "404", "409"):  # else: gone, or not ours any more
                raise wrap_os_error(f"cannot remove the lock {self.uri_of(key)}", exc) from exc
        except BotoCoreError as exc:
            raise wrap_os_error(f"cannot remove the lock {self.uri_of(key)}", exc) from exc

    # -- partitions --------------------------------------------------------------------
    def partition(self, key: str) -> PartitionWriter:
        """Start writing a partition; see ``PartitionWriter``."""
        from textclf.lake.partition import PartitionWriter  # partition builds on this module

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
        return self.iter_file_batches(self.partition_files(key), columns, batch_size)

    def iter_file_batches(self, file_keys: list[str], columns: list[str] | None = None, batch_size: int = 65_536
                          ) -> Iterator[pa.RecordBatch]:
        """Stream record batches of the given Parquet files, in order; a missing column is a clear error."""
        for file_key in file_keys:
            pf = self.parquet_file(file_key)
            missing = [c for c in columns or [] if c not in pf.schema_arrow.names]
            if missing:
                raise StorageError(f"{self.uri_of(file_key)} has no column(s) {', '.join(missing)}")
            try:
                yield from pf.iter_batches(batch_size=batch_size, columns=columns)
            except OSError as exc:  # the store went away mid-read
                raise wrap_os_error(f"cannot read {self.uri_of(file_key)}", exc) from exc

    def read_table(self, key: str, columns: list[str] | None = None) -> pa.Table:
        """Read a whole committed partition into memory (small partitions only)."""
        import pyarrow as pa

        tables = []
        for file_key in self.partition_files(key):
            try:
                tables.append(self.parquet_file(file_key).read(columns=columns))
            except OSError as exc:  # the store went away mid-read
                raise wrap_os_error(f"cannot read {self.uri_of(file_key)}", exc) from exc
        if not tables:
            raise PartitionNotFoundError(f"{self.uri_of(key)} has no Parquet files")
        return pa.concat_tables(tables)

    def verify(self, key: str) -> dict[str, Any]:
        """Check every file of a committed partition against its manifest's sha256."""
        manifest = self.require_manifest(key)
        for entry in manifest["files"]:
            self.verify_file(f"{safe_key(key)}/{entry['path']}", entry["sha256"], "the manifest's")
        return manifest

    def verify_file(self, file_key: str, sha256: str, listed_by: str) -> None:
        """Stream one file and compare its sha256 with the one ``listed_by`` (a manifest, a summary) records."""
        sha = hashlib.sha256()
        try:
            with self.open_input(file_key) as src:
                while chunk := src.read(8 << 20):
                    sha.update(chunk)
        except OSError as exc:
            raise wrap_os_error(f"cannot read {self.uri_of(file_key)}", exc) from exc
        if sha.hexdigest() != sha256:
            raise ChecksumMismatchError(f"{self.uri_of(file_key)}: sha256 {sha.hexdigest()} does not match "
                                        f"{listed_by} {sha256}; the file was changed after it was written")


def open_source(uri: str, s3: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path of an input file given as a local path or ``s3://`` URI."""
    fs, path = resolve_filesystem(uri, s3)
    import pyarrow.fs as pafs

    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise wrap_os_error(f"cannot reach {uri}", exc) from exc
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri} does not exist")
    if info.type != pafs.FileType.File:
        raise StorageError(f"{uri} is not a file")
    return fs, path
