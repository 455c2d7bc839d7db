"""Deterministic, seeded generator of a synthetic support-ticket corpus, streamed to a file."""

# Documents mix words from their class's keyword pool, a neighbouring class's pool and a shared
# filler vocabulary, so classes overlap and a good classifier lands around 90% accuracy.  Rows
# are generated in chunks with vectorised numpy sampling and streamed to CSV, TSV, JSON Lines or
# Parquet, so the file size is unbounded while memory stays flat.  An optional "dirty" mode mixes
# malformed rows (bad encodings, empty texts, duplicates, broken CSV lines, ...) into the stream.
#
# Rows are dicts with ``id``, ``text`` and (labeled) ``label``; keys starting with ``_`` are
# private and never written: ``_true_label`` (the label before label noise, also on unlabeled
# rows), ``_dirty`` (the kind of a dirty row) and ``_malformed`` (how a ``malformed_row`` breaks
# its CSV/TSV line: ``extra`` field, text ``split`` over two fields, or ``short`` of one field).
# Random streams are seeded per chunk from (seed, labeled, id_offset, stream, chunk), so a
# labeled and an unlabeled corpus with the same seed do not share texts.

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import os
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from textclf.errors import InputFileError, UsageError
from textclf.ingest.sources import detect_format

logger = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("billing", "shipping", "technical", "account", "feedback", "security")

# Two neighbours per class: a document borrows some of its words from one of them.
_NEIGHBOURS: dict[str, tuple[str, str]] = {
    "billing": ("account", "shipping"),
    "shipping": ("billing", "feedback"),
    "technical": ("security", "account"),
    "account": ("billing", "security"),
    "feedback": ("shipping", "technical"),
    "security": ("account", "technical"),
}

# The word pools (one per class, written for this project, some entries deliberately in two pools),
# the shared filler vocabulary (common English words, roughly most frequent first, with contractions
# and quoted words so that CSV quoting gets exercised), the non-ASCII words sprinkled into ~8% of
# documents, and the Windows-1252 snippets and HTML templates of dirty rows are package data:
# textclf/demo/words/*.txt, one entry per line, read once by ``_words``.

# Byte-exact fixtures stay here: invalid UTF-8 and whitespace are safer as escapes than in a text file.
_WHITESPACE_TEXTS: tuple[str, ...] = ("   \t ", " ", "\u00a0 \t", "\n  ")
_INVALID_SNIPPETS: tuple[bytes, ...] = (
    b"caf\x81\x8d bad",
    b"order \x90\x9d failed",
    b"r\x8fsum\x81 attached",
)

_PUNCT: tuple[str, ...] = ("", ",", ".", "?", "!", ".\n")
_N_PUNCT = len(_PUNCT)
_N_VARIANTS = 2 * _N_PUNCT  # (lowercase | capitalised) x punctuation

CHUNK_ROWS = 10_000
_MEDIAN_WORDS = 48.0
_SIGMA_WORDS = 1.0
_MIN_WORDS, _MAX_WORDS = 2, 3000
_UNICODE_DOC_RATE = 0.08
_UNICODE_TOKEN_RATE = 0.10
_NFD_RATE = 0.35  # among documents with non-ASCII words
_CASUAL_RATE = 0.10  # lowercase documents without final punctuation

_LABELED_KINDS: tuple[str, ...] = (
    "empty_text", "missing_id", "invalid_encoding", "repairable_encoding", "too_long",
    "missing_label", "exact_duplicate", "conflicting_label", "html", "control_chars",
    "malformed_row",
)
_TEXT_ONLY_KINDS = frozenset({"invalid_encoding", "repairable_encoding", "malformed_row"})
_DELIMITED_ONLY_KINDS = frozenset({"malformed_row"})
_LABEL_KINDS = frozenset({"missing_label", "conflicting_label"})


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate: row count, labeled or not, seed, noise and dirt levels, id scheme."""

    rows: int
    labeled: bool = True
    seed: int = 0
    label_noise: float = 0.03
    dirty_fraction: float = 0.0
    max_text_chars: int = 100_000
    id_prefix: str = "doc"
    id_offset: int = 0

    def __post_init__(self) -> None:
        """Reject values that cannot describe a corpus."""
        if self.rows < 0:
            raise UsageError(f"rows must be >= 0, got {self.rows}")
        if self.seed < 0:
            raise UsageError(f"seed must be >= 0, got {self.seed}")
        if self.id_offset < 0:
            raise UsageError(f"id_offset must be >= 0, got {self.id_offset}")
        if not 0.0 <= self.label_noise <= 1.0:
            raise UsageError(f"label_noise must be in [0, 1], got {self.label_noise}")
        if not 0.0 <= self.dirty_fraction <= 1.0:
            raise UsageError(f"dirty_fraction must be in [0, 1], got {self.dirty_fraction}")
        if self.max_text_chars < 1:
            raise UsageError(f"max_text_chars must be >= 1, got {self.max_text_chars}")


@dataclass(frozen=True)
class CorpusStats:
    """What a write produced: the file, its data rows, its size and the dirty rows by kind."""

    path: str
    rows: int
    bytes: int
    dirty: dict[str, int] = field(default_factory=dict)


def _capitalise(word: str) -> str:
    """Upper-case the first letter unless the word already carries capitals (iOS, PayPal)."""
    if any(c.isupper() for c in word):
        return word
    return word[:1].upper() + word[1:]


@dataclass(frozen=True)
class _Words:
    """The corpus's word pools and dirty-row snippets, as the package data files hold them."""

    class_words: dict[str, tuple[str, ...]]
    filler: tuple[str, ...]
    unicode: tuple[str, ...]
    cp1252_snippets: tuple[str, ...]
    html_templates: tuple[str, ...]


def _word_list(name: str) -> tuple[str, ...]:
    """The entries of ``words/<name>.txt``, one per line, in file order."""
    text = (resources.files("textclf.demo") / "words" / f"{name}.txt").read_text(encoding="utf-8")
    # split("\n"), not splitlines(): that would also split entries on U+2028, U+0085 and the like
    return tuple(text.removesuffix("\n").split("\n"))


@functools.cache
def _words() -> _Words:
    """The word lists, read from the package data once per process."""
    return _Words(
        class_words={c: _word_list(f"class_{c}") for c in CLASSES},
        filler=_word_list("filler"),
        unicode=_word_list("unicode"),
        cp1252_snippets=_word_list("cp1252_snippets"),
        html_templates=_word_list("html_templates"),
    )


class _Vocab:
    """All pools concatenated into one token table indexed by word * variants + variant."""

    def __init__(self, words: _Words) -> None:
        """Build pool offsets, sizes and the token-variant table."""
        pools = [words.class_words[c] for c in CLASSES] + [words.filler, words.unicode]
        self.filler_pool = len(CLASSES)
        self.unicode_pool = len(CLASSES) + 1
        sizes = [len(p) for p in pools]
        self.pool_size = np.array(sizes, dtype=np.int64)
        self.pool_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        words_flat = [w for p in pools for w in p]
        table: list[str] = []
        for w in words_flat:
            cap = _capitalise(w)
            table.extend(w + p for p in _PUNCT)
            table.extend(cap + p for p in _PUNCT)
        self.table = np.array(table, dtype=object)
        self.word_count = np.array([len(w.split()) for w in words_flat], dtype=np.int64)
        index = {c: i for i, c in enumerate(CLASSES)}
        self.neighbours = np.array(
            [[index[n] for n in _NEIGHBOURS[c]] for c in CLASSES], dtype=np.int64
        )


@functools.cache
def _vocab() -> _Vocab:
    """The token table, built on first use and shared by every corpus of the process (it is read-only)."""
    return _Vocab(_words())


def _rng(spec: CorpusSpec, stream: int, chunk: int) -> np.random.Generator:
    """Return the generator of one chunk of one stream (0: texts, 1: dirt) of this corpus."""
    return np.random.default_rng([spec.seed, int(spec.labeled), spec.id_offset, stream, chunk])


def _chunk_texts(rng: np.random.Generator, labels: np.ndarray) -> list[str]:
    """Generate one text per label with vectorised sampling of words and punctuation."""
    v = _vocab()
    n = len(labels)
    drawn = rng.lognormal(math.log(_MEDIAN_WORDS), _SIGMA_WORDS, n)
    target = np.clip(np.rint(drawn), _MIN_WORDS, _MAX_WORDS).astype(np.int64)
    p_class = rng.uniform(0.14, 0.34, n).astype(np.float32)
    p_neigh = rng.uniform(0.05, 0.22, n).astype(np.float32)
    uni = rng.random(n) < _UNICODE_DOC_RATE
    nfd = uni & (rng.random(n) < _NFD_RATE)
    casual = rng.random(n) < _CASUAL_RATE

    # Sample one token per target word (tokens may be phrases), then keep each document's
    # tokens while its running word count stays within the target.
    doc = np.repeat(np.arange(n, dtype=np.int32), target)
    total = len(doc)
    u = rng.random(total, dtype=np.float32)
    pc = p_class[doc]
    lab = labels[doc]
    neigh = v.neighbours[lab, rng.integers(0, 2, total, dtype=np.int8)]
    pool = np.where(u < pc, lab, np.where(u < pc + p_neigh[doc], neigh, v.filler_pool))
    pool[uni[doc] & (u > 1.0 - _UNICODE_TOKEN_RATE)] = v.unicode_pool
    del pc, lab, neigh, u
    r = rng.random(total, dtype=np.float32)
    r = np.where(pool == v.filler_pool, r * r, r)  # skew filler towards its most common words
    size = v.pool_size[pool]
    word = v.pool_offset[pool] + np.minimum((r * size).astype(np.int64), size - 1)
    del pool, r, size

    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(target, out=starts[1:])
    words_so_far = np.cumsum(v.word_count[word])
    words_so_far -= np.repeat(words_so_far[starts[:-1]] - v.word_count[word[starts[:-1]]], target)
    before = words_so_far - v.word_count[word]
    keep = (words_so_far <= target[doc]) | (before < _MIN_WORDS)
    word = word[keep]
    lengths = np.bincount(doc[keep], minlength=n)
    del doc, keep, words_so_far, before

    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    total = int(bounds[-1])
    end = rng.random(total, dtype=np.float32) < np.float32(1.0 / 12.0)
    last = bounds[1:] - 1
    end[last] = True
    p = rng.random(total, dtype=np.float32)
    punct = np.zeros(total, dtype=np.int64)
    punct[~end & (p < 0.06)] = 1
    pe = p[end]
    punct[end] = np.select([pe < 0.83, pe < 0.91, pe < 0.99], [2, 3, 4], default=5)
    punct[last[punct[last] == 5]] = 2
    cap = np.zeros(total, dtype=bool)
    cap[1:] = end[:-1]
    cap[bounds[:-1]] = True
    cap &= ~np.repeat(casual, lengths)
    punct[last[casual]] = 0
    del p, pe, end

    tokens = v.table[word * _N_VARIANTS + cap * _N_PUNCT + punct].tolist()
    b = bounds.tolist()
    texts = [" ".join(tokens[b[i] : b[i + 1]]) for i in range(n)]
    for i, t in enumerate(texts):
        if "\n" in t:
            texts[i] = t.replace("\n ", "\n")
    for i in np.flatnonzero(nfd).tolist():
        texts[i] = unicodedata.normalize("NFD", texts[i])
    return texts


def _kinds(labeled: bool, fmt: str) -> tuple[str, ...]:
    """Return the dirty kinds that a file of this format and labeling can carry."""
    kinds = []
    for k in _LABELED_KINDS:
        if k in _LABEL_KINDS and not labeled:
            continue
        if fmt == "parquet" and k in _TEXT_ONLY_KINDS:
            continue
        if fmt == "jsonl" and k in _DELIMITED_ONLY_KINDS:
            continue
        kinds.append(k)
    return tuple(kinds)


class _Dirt:
    """Turns clean rows into dirty ones; keeps per-kind counters and recent clean rows."""

    def __init__(self, spec: CorpusSpec, kinds: tuple[str, ...]) -> None:
        """Remember the spec, the kinds allowed and start every counter at zero."""
        self.spec = spec
        self.kinds = kinds
        self.random_kinds = tuple(k for k in kinds if k != "too_long")
        self.count: dict[str, int] = {k: 0 for k in kinds}
        self.recent: deque[dict[str, str | bytes]] = deque(maxlen=16)

    def plan(self, chunk: int, n: int, total: int | None) -> dict[int, str]:
        """Pick the positions of this chunk that become dirty, and their kinds."""
        spec = self.spec
        if spec.dirty_fraction <= 0.0 or n == 0 or not self.kinds:
            return {}
        rng = _rng(spec, 1, chunk)
        plan: dict[int, str] = {}
        if self.random_kinds:
            mask = rng.random(n) < spec.dirty_fraction
            which = rng.integers(0, len(self.random_kinds), n)
            for i in np.flatnonzero(mask).tolist():
                plan[i] = self.random_kinds[int(which[i])]
        if "too_long" in self.kinds:
            plan[int(rng.integers(0, n))] = "too_long"
        if chunk == 0 and (total is None or total >= 200):
            # Every kind once, plus both flavours of empty text ("" and whitespace only).
            guaranteed = [k if k != "empty_text" else "empty_text:empty" for k in self.kinds]
            if "empty_text" in self.kinds:
                guaranteed.append("empty_text:blank")
            for j, kind in enumerate(guaranteed):
                plan[(j + 1) * n // (len(guaranteed) + 1)] = kind
        return plan

    def apply(self, rows: list[dict[str, str | bytes]], plan: dict[int, str], chunk: int) -> None:
        """Replace the planned rows in place; remember recent clean rows for duplicates."""
        rng = _rng(self.spec, 2, chunk)
        for i in sorted(plan):
            kind, _, flavour = plan[i].partition(":")
            source = None
            if kind in ("exact_duplicate", "conflicting_label"):
                source = self._source(rows, plan, i, rng)
                if source is None:
                    kind = "html"
            rows[i] = self._make(kind, rows[i], source, rng, flavour)
            self.count[kind] = self.count.get(kind, 0) + 1
        for i in range(max(0, len(rows) - 64), len(rows)):
            if i not in plan:
                self.recent.append(rows[i])

    def _source(
        self,
        rows: list[dict[str, str | bytes]],
        plan: dict[int, str],
        i: int,
        rng: np.random.Generator,
    ) -> dict[str, str | bytes] | None:
        """Pick an earlier clean row to repeat, from this chunk or the previous one."""
        if i > 0:
            for _ in range(20):
                j = i - int(rng.integers(1, min(i, 200) + 1))
                if j not in plan:
                    return rows[j]
        if self.recent:
            return self.recent[int(rng.integers(0, len(self.recent)))]
        return None

    def _make(
        self,
        kind: str,
        row: dict[str, str | bytes],
        source: dict[str, str | bytes] | None,
        rng: np.random.Generator,
        flavour: str = "",
    ) -> dict[str, str | bytes]:
        """Build the dirty row of one kind (and optional flavour) from the clean row it replaces."""
        nth = self.count.get(kind, 0)
        text = str(row["text"])
        out = dict(row)
        out["_dirty"] = kind
        if kind == "empty_text":
            blank = _WHITESPACE_TEXTS[(nth // 2) % len(_WHITESPACE_TEXTS)]
            empty = flavour == "empty" or (flavour != "blank" and nth % 2 == 0)
            out["text"] = "" if empty else blank
        elif kind == "missing_id":
            out["id"] = ""
        elif kind == "missing_label":
            out["label"] = ""
        elif kind == "invalid_encoding":
            snippet = _INVALID_SNIPPETS[nth % len(_INVALID_SNIPPETS)]
            out["text"] = snippet + b" " + text[:300].encode("utf-8")
        elif kind == "repairable_encoding":
            snippets = _words().cp1252_snippets
            cp1252 = snippets[nth % len(snippets)]
            out["text"] = f"{cp1252} {text[:300]}".encode("cp1252", errors="replace")
        elif kind == "too_long":
            need = self.spec.max_text_chars + 1 + int(rng.integers(0, 500))
            reps = need // (len(text) + 1) + 1
            out["text"] = " ".join([text] * reps)[:need]
        elif kind == "html":
            words = text.split(" ")
            half = len(words) // 2
            templates = _words().html_templates
            tpl = templates[nth % len(templates)]
            out["text"] = tpl.format(a=" ".join(words[:half]), b=" ".join(words[half:]))
        elif kind == "control_chars":
            words = text.split(" ")
            half = len(words) // 2
            a, b = " ".join(words[:half]), " ".join(words[half:])
            out["text"] = f"\u200b{a}\x07  \t{b}\u00a0\u00a0\x1b[0m  \u200b"
        elif kind == "malformed_row":
            out["_malformed"] = ("extra", "split", "short")[nth % 3]
        elif kind == "exact_duplicate":
            assert source is not None
            out = dict(source)
            out["_dirty"] = kind
        elif kind == "conflicting_label":
            assert source is not None
            out = dict(source)
            out["_dirty"] = kind
            old = CLASSES.index(str(source["label"]))
            out["label"] = CLASSES[(old + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)]
        return out


def _iter_chunks(
    spec: CorpusSpec, kinds: tuple[str, ...], total: int | None
) -> Iterator[list[dict[str, str | bytes]]]:
    """Yield the rows of each chunk; ``total=None`` generates chunks forever."""
    dirt = _Dirt(spec, kinds)
    k = len(CLASSES)
    chunk = 0
    done = 0
    while total is None or done < total:
        n = CHUNK_ROWS if total is None else min(CHUNK_ROWS, total - done)
        rng = _rng(spec, 0, chunk)
        true = rng.integers(0, k, n)
        noisy = rng.random(n) < spec.label_noise
        shift = rng.integers(1, k, n)
        observed = np.where(noisy, (true + shift) % k, true)
        texts = _chunk_texts(rng, true)
        start = spec.id_offset + done
        prefix = spec.id_prefix
        true_l = [CLASSES[t] for t in true.tolist()]
        if spec.labeled:
            obs_l = [CLASSES[t] for t in observed.tolist()]
            rows: list[dict[str, str | bytes]] = [
                {
                    "id": f"{prefix}-{start + i:09d}",
                    "text": texts[i],
                    "label": obs_l[i],
                    "_true_label": true_l[i],
                }
                for i in range(n)
            ]
        else:
            rows = [
                {"id": f"{prefix}-{start + i:09d}", "text": texts[i], "_true_label": true_l[i]}
                for i in range(n)
            ]
        plan = dirt.plan(chunk, n, total)
        if plan:
            dirt.apply(rows, plan, chunk)
        yield rows
        del rows, texts, true_l  # do not hold this chunk while generating the next
        done += n
        chunk += 1


def generate_rows(spec: CorpusSpec) -> Iterator[list[dict[str, str | bytes]]]:
    """Yield chunks of rows (dicts with id/text[/label]); text is bytes only for bad encodings."""
    yield from _iter_chunks(spec, _kinds(spec.labeled, "csv"), spec.rows)


def _as_str(value: str | bytes) -> str:
    """Return text, with undecodable bytes carried as surrogate escapes."""
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


def _fields(row: dict[str, str | bytes], labeled: bool) -> list[str]:
    """Return the delimited-file fields of a row, broken on purpose for malformed rows."""
    fields = [str(row["id"]), _as_str(row["text"])]
    if labeled:
        fields.append(str(row["label"]))
    how = row.get("_malformed")
    if how is None:
        return fields
    if how == "split":
        words = fields[1].split(" ")
        if len(words) > 1:
            half = len(words) // 2
            return [fields[0], " ".join(words[:half]), " ".join(words[half:])] + fields[2:]
        how = "extra"
    if how == "extra":
        return fields + ["unexpected extra field"]
    return fields[:-1]


class _Sink:
    """A binary output file, optionally compressed, that reports the bytes on disk."""

    def __init__(self, path: Path, compression: str | None) -> None:
        """Open the file (and compressor) for writing."""
        self.raw = pa.OSFile(str(path), "wb")
        self.stream: pa.NativeFile = (
            pa.CompressedOutputStream(self.raw, compression) if compression else self.raw
        )
        self.compressed = compression is not None

    def write(self, data: bytes) -> None:
        """Write bytes and flush a compressor so that the size on disk stays current."""
        self.stream.write(data)
        if self.compressed:
            self.stream.flush()

    def size(self) -> int:
        """Return the number of bytes written to the file so far."""
        return int(self.raw.tell())

    def close(self) -> None:
        """Finish the compressor (if any) and close the file."""
        self.stream.close()
        if not self.raw.closed:
            self.raw.close()


def _string_array(values: list[str]) -> pa.Array:
    """Build an Arrow string array from its buffers (pa.array on lists would import pandas)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise UsageError("a chunk of texts exceeds 2 GiB; lower max_text_chars")
    return pa.StringArray.from_buffers(
        len(encoded), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))
    )


class _Writer:
    """Serialises chunks of rows in one format to a sink."""

    def __init__(self, fmt: str, path: Path, compression: str | None, labeled: bool) -> None:
        """Open the output and write the header where the format has one."""
        self.fmt = fmt
        self.labeled = labeled
        self.columns = ["id", "text", "label"] if labeled else ["id", "text"]
        if fmt == "parquet":
            self.raw = pa.OSFile(str(path), "wb")
            schema = pa.schema([(c, pa.string()) for c in self.columns])
            self.pq = pq.ParquetWriter(
                self.raw, schema, compression="zstd", use_dictionary=["label"]
            )
        else:
            self.sink = _Sink(path, compression)
            if fmt in ("csv", "tsv"):
                self.sink.write(self.encode_delimited([], header=True))

    def encode_delimited(self, rows: list[dict[str, str | bytes]], header: bool = False) -> bytes:
        """Return CSV/TSV bytes for these rows (and the header row when asked)."""
        buf = io.StringIO()
        writer = csv.writer(
            buf,
            delimiter="\t" if self.fmt == "tsv" else ",",
            quoting=csv.QUOTE_MINIMAL,
            lineterminator="\n",
        )
        if header:
            writer.writerow(self.columns)
        writer.writerows(_fields(r, self.labeled) for r in rows)
        return buf.getvalue().encode("utf-8", errors="surrogateescape")

    def encode_jsonl(self, rows: list[dict[str, str | bytes]]) -> bytes:
        """Return JSON Lines bytes for these rows; invalid bytes stay raw in the output."""
        dumps = json.dumps
        cols = self.columns
        lines = [
            dumps({c: _as_str(r[c]) for c in cols}, ensure_ascii=False) for r in rows
        ]
        lines.append("")
        return "\n".join(lines).encode("utf-8", errors="surrogateescape")

    def encode(self, rows: list[dict[str, str | bytes]]) -> bytes:
        """Return the serialised bytes of rows in a text format."""
        if self.fmt == "jsonl":
            return self.encode_jsonl(rows)
        return self.encode_delimited(rows)

    def write(self, rows: list[dict[str, str | bytes]], data: bytes | None = None) -> None:
        """Append rows to the output (``data``: their text-format bytes, if already encoded)."""
        if self.fmt == "parquet":
            arrays = [_string_array([str(r[c]) for r in rows]) for c in self.columns]
            self.pq.write_table(pa.Table.from_arrays(arrays, names=self.columns))
        else:
            self.sink.write(self.encode(rows) if data is None else data)

    def size(self) -> int:
        """Return the bytes written to disk so far."""
        return int(self.raw.tell()) if self.fmt == "parquet" else self.sink.size()

    def close(self) -> None:
        """Finish and close the output."""
        if self.fmt == "parquet":
            self.pq.close()
            if not self.raw.closed:
                self.raw.close()
        else:
            self.sink.close()


def _count_dirty(rows: list[dict[str, str | bytes]], counts: dict[str, int]) -> None:
    """Add the dirty rows of a chunk to the per-kind counts."""
    for r in rows:
        kind = r.get("_dirty")
        if kind is not None:
            counts[str(kind)] = counts.get(str(kind), 0) + 1


def _write(
    spec: CorpusSpec,
    path: str | Path,
    progress: Callable[[int], None] | None,
    target_bytes: int | None,
) -> CorpusStats:
    """Write the corpus (all spec.rows, or chunks until target_bytes) via a temporary file."""
    final = Path(path)
    try:  # the formats and compressions ingest reads, by the same rule
        fmt, compression = detect_format(str(final))
    except InputFileError as exc:  # here the name is an argument the user gave, not a file to read
        raise UsageError(str(exc)) from None
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".partial")
    kinds = _kinds(spec.labeled, fmt)
    total = None if target_bytes is not None else spec.rows
    logger.info(
        "writing %s corpus to %s (%s, compression=%s, seed=%d, %s)",
        "labeled" if spec.labeled else "unlabeled", final, fmt, compression, spec.seed,
        f"{spec.rows} rows" if total is not None else f"~{target_bytes} bytes",
    )
    written = 0
    dirty: dict[str, int] = {}
    writer: _Writer | None = None
    try:
        writer = _Writer(fmt, tmp, compression, spec.labeled)
        chunks = _iter_chunks(spec, kinds, total)
        pending: list[dict[str, str | bytes]] = []
        while True:
            if target_bytes is not None and writer.size() >= target_bytes:
                break
            if not pending:
                nxt = next(chunks, None)
                if nxt is None:
                    break
                pending = nxt
                del nxt
            rows, pending = pending, []
            data = None
            if target_bytes is not None:
                rows, data, pending = _fit(writer, rows, target_bytes - writer.size(), written)
            if rows:
                writer.write(rows, data)
                written += len(rows)
                _count_dirty(rows, dirty)
                logger.debug("wrote %d rows to %s", written, tmp)
                if progress is not None:
                    progress(written)
            del rows
        writer.close()
    except BaseException:
        try:
            if writer is not None:
                writer.close()
        except Exception:  # noqa: BLE001 - the original error is the one worth reporting
            logger.debug("closing %s after an error failed", tmp, exc_info=True)
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    size = final.stat().st_size
    logger.info("wrote %d rows, %d bytes to %s; dirty rows: %s", written, size, final, dirty)
    return CorpusStats(path=str(final), rows=written, bytes=size, dirty=dirty)


def _fit(
    writer: _Writer, rows: list[dict[str, str | bytes]], remaining: int, written: int
) -> tuple[list[dict[str, str | bytes]], bytes | None, list[dict[str, str | bytes]]]:
    """Split rows into (now, their bytes if encoded, later) so that now roughly fills remaining."""
    if writer.fmt == "parquet" or writer.sink.compressed:
        # Sizes are only known after compression: estimate rows from what is on disk so far.
        on_disk = writer.size()
        if written > 0 and on_disk > 0:
            per_row = on_disk / written
        else:
            per_row = sum(len(r["text"]) for r in rows) / max(len(rows), 1) / 2.0 + 1.0
        k = max(1, math.ceil(remaining / per_row))
        return rows[:k], None, rows[k:]
    data = writer.encode(rows)
    if len(data) <= remaining:
        return rows, data, []
    lo, hi = 1, len(rows)  # smallest prefix whose bytes reach the remaining budget
    while lo < hi:
        mid = (lo + hi) // 2
        if len(writer.encode(rows[:mid])) >= remaining:
            hi = mid
        else:
            lo = mid + 1
    return rows[:lo], writer.encode(rows[:lo]), rows[lo:]


def write_corpus(
    spec: CorpusSpec, path: str | Path, progress: Callable[[int], None] | None = None
) -> CorpusStats:
    """Stream the corpus to a local file whose extension picks the format; returns counts."""
    return _write(spec, path, progress, None)


def write_corpus_to_size(
    spec_template: CorpusSpec,
    path: str | Path,
    target_bytes: int,
    progress: Callable[[int], None] | None = None,
) -> CorpusStats:
    """Write chunks of the corpus (spec.rows ignored) until the file reaches ~target_bytes."""
    if target_bytes < 1:
        raise UsageError(f"target_bytes must be >= 1, got {target_bytes}")
    return _write(spec_template, path, progress, target_bytes)
