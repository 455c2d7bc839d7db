"""Labeled data for training: every committed partition read once, and the deterministic split by doc id.

The split is a pure function of the doc id (a salted hash), so a document stays in the same
split across versions and the test split only grows as data is added: versions compare on the
same held-out documents."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf.common import stable_bucket
from textclf.config import TrainConfig
from textclf.errors import ModelError
from textclf.lake import Lake
from textclf.lake.layout import datasets_key
from textclf.lake.tables import dataset_table

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


SPLIT_SALT = "textclf-split-v1:"

MIN_TRAIN_ROWS = 2  # per class; fewer cannot be learned or validated


@dataclass
class LabeledData:
    """Every labeled document ingested so far (the latest label wins for a re-ingested id)."""

    doc_ids: np.ndarray
    texts: np.ndarray
    labels: np.ndarray
    lineage: dict[str, Any]

    def subset(self, mask: np.ndarray) -> LabeledData:
        return LabeledData(self.doc_ids[mask], self.texts[mask], self.labels[mask], self.lineage)

    def __len__(self) -> int:
        return len(self.doc_ids)


def split_bucket(doc_id: str) -> int:
    """A stable bucket 0-99 for a doc id."""
    return stable_bucket(SPLIT_SALT, doc_id, 100)


def assign_splits(doc_ids: Sequence[str], test_percent: int, validation_percent: int) -> np.ndarray:
    """``train``/``validation``/``test`` for each id, by hash bucket (deterministic, order-free)."""
    import numpy as np

    buckets = np.fromiter((split_bucket(d) for d in doc_ids), dtype=np.int16, count=len(doc_ids))
    splits = np.full(len(doc_ids), "train", dtype=object)
    splits[buckets < test_percent + validation_percent] = "validation"
    splits[buckets < test_percent] = "test"
    return splits


def split_fingerprint(doc_ids: Sequence[str], labels: Sequence[str]) -> str:
    """sha256 over the sorted (doc id, label) pairs of a split: equal fingerprints, same test set."""
    digest = hashlib.sha256()
    for doc_id, label in sorted(zip(doc_ids, labels, strict=True)):
        digest.update(f"{doc_id}\t{label}\n".encode())
    return digest.hexdigest()


def load_labeled(lake: Lake) -> LabeledData:
    """Read every date of one snapshot of the labeled table, oldest first; a later ingest of an id replaces it.

    The lineage names the table version read, so the training data can be read again by time travel.
    """
    import numpy as np

    table = dataset_table(lake, "labeled")
    snapshot = table.snapshot()
    if snapshot is None or not snapshot.dates():
        raise ModelError(f"no labeled data in {lake.uri_of(datasets_key('labeled'))}: "
                         "run `textclf ingest --kind labeled` first")
    index: dict[str, int] = {}
    doc_ids: list[str] = []
    texts: list[str] = []
    labels: list[str] = []
    replaced = 0
    used = []
    for date in snapshot.dates():
        summary = table.require_summary(date, snapshot)
        rows = table.read(date, columns=["doc_id", "text", "label"], snapshot=snapshot)
        for doc_id, text, label in zip(*(rows.column(c).to_pylist() for c in ("doc_id", "text", "label")),
                                       strict=True):
            at = index.get(doc_id)
            if at is None:
                index[doc_id] = len(doc_ids)
                doc_ids.append(doc_id)
                texts.append(text)
                labels.append(label)
            else:
                texts[at], labels[at] = text, label
                replaced += 1
        used.append({"partition": table.date_key(date), "rows": rows.num_rows, "created_at": summary.get("created_at"),
                     "ingest_run": summary.get("ingest_run")})
    lineage = {"table": lake.uri_of(table.key), "table_version": snapshot.version,
               "partitions": used, "rows": len(doc_ids), "replaced_by_later_ingest": replaced,
               "rows_per_class": dict(sorted(Counter(labels).items()))}
    return LabeledData(np.array(doc_ids, dtype=object), np.array(texts, dtype=object),
                       np.array(labels, dtype=object), lineage)


@dataclass
class Splits:
    train: LabeledData
    validation: LabeledData
    test: LabeledData
    classes: tuple[str, ...]

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: dict(sorted(Counter(getattr(self, name).labels.tolist()).items()))
                for name in ("train", "validation", "test")}


def make_splits(data: LabeledData, config: TrainConfig) -> Splits:
    """Split by doc id and check there is enough to learn from."""
    splits = assign_splits(data.doc_ids.tolist(), config.test_percent, config.validation_percent)
    train, validation, test = (data.subset(splits == s) for s in ("train", "validation", "test"))
    classes = tuple(sorted(set(train.labels.tolist())))
    if len(classes) < 2:
        raise ModelError(f"training needs at least 2 classes, found {len(classes)} ({', '.join(classes)})")
    counts = Counter(train.labels.tolist())
    thin = [f"{c} ({counts[c]})" for c in classes if counts[c] < MIN_TRAIN_ROWS]
    if thin:
        raise ModelError(f"too few training examples for class(es): {', '.join(thin)}; ingest more labeled data")
    if len(validation) == 0 or len(test) == 0:
        raise ModelError(f"{len(data)} labeled rows leave an empty validation or test split; ingest more data")
    missing = sorted(set(test.labels.tolist()) - set(classes))
    if missing:
        log.warning("test split has labels never seen in training (counted as errors): %s", ", ".join(missing))
    return Splits(train, validation, test, classes)


def label_indices(classes: Sequence[str], labels: Sequence[str] | np.ndarray) -> np.ndarray:
    """Index of each label in ``classes``; -1 for labels the model does not know."""
    import numpy as np

    position = {name: i for i, name in enumerate(classes)}
    return np.fromiter((position.get(str(label), -1) for label in labels), dtype=np.int64, count=len(labels))
