"""Typed errors: every failure a user can act on derives from ``TextclfError``."""

from __future__ import annotations


class TextclfError(Exception):
    """Base class of errors whose message is meant for the user as one line."""

    exit_code = 1


class UsageError(TextclfError):
    """Bad options or arguments given to a command."""

    exit_code = 2


class InputFileError(TextclfError):
    """A source file cannot be read at all (format, compression, columns, truncation)."""

    exit_code = 3

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"{uri}: {problem}")


class StorageError(TextclfError):
    """The lake cannot be read or written (missing object, permissions, network)."""

    exit_code = 5


class UnsafeKeyError(StorageError):
    """A key would resolve outside the lake (``..`` segments or an absolute path)."""


class PartitionNotFoundError(StorageError):
    """No committed (manifested) partition exists where one was expected."""


class ChecksumMismatchError(StorageError):
    """A file's sha256 does not match the one recorded in its manifest."""


class ValidationFailedError(TextclfError):
    """A critical data expectation failed; names each expectation and its observed value."""

    exit_code = 4

    def __init__(self, subject: str, failures: list[str], docs_uri: str | None = None) -> None:
        self.subject = subject
        self.failures = failures
        self.docs_uri = docs_uri
        detail = "; ".join(failures)
        where = f" (Data Docs: {docs_uri})" if docs_uri else ""
        super().__init__(f"validation of {subject} failed: {detail}{where}")


class ModelError(TextclfError):
    """A model cannot be trained, found or loaded (too little data, unknown version, training collapsed)."""

    exit_code = 6


class ModelIntegrityError(ModelError):
    """A model file fails its checksum, is not a textclf model, or holds unsafe code (Lambda layers)."""
