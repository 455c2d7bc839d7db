"""Partitions: folders of files committed as a unit, with ``_MANIFEST.json`` written last.

A partition's data files are staged in a hidden ``_staging-*`` folder, the previous content is
retired (manifest first, so it becomes invisible before anything else is touched), the staged files
are moved into place and the manifest is written last. A reader that only trusts manifested
partitions therefore sees the old complete partition, the new complete one, or none, never a mix.
Those commit steps run under the partition's lake lock (``Lake.lock``), so two writers of one
partition never interleave them: the last to commit wins. A commit leaves other runs' staging
folders alone unless they are abandoned (a dead writer on this host, or older than a day).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf.common import utc_now_iso
from textclf.errors import (
    StorageError,
    UnsafeKeyError,
)
from textclf.lake.layout import MANIFEST, STAGING_PREFIX, WRITER, safe_key
from textclf.lake.store import (
    PARQUET_COMPRESSION,
    STAGING_ABANDONED_S,
    Lake,
    holder_is_stale,
    holder_record,
    wrap_os_error,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)


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
            raise wrap_os_error(f"cannot write {self._uri}", exc) from exc
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise wrap_os_error(f"cannot write {self._uri}", exc) from exc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._stream.close()
            except OSError as exc:
                raise wrap_os_error(f"cannot write {self._uri}", exc) from exc

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
        lake.write_object(f"{self.staging}/{WRITER}", json.dumps(holder_record()).encode())

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
        return not isinstance(holder, dict) or holder_is_stale(holder, STAGING_ABANDONED_S)

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
