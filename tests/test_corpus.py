"""Tests of the synthetic demo corpus generator (textclf.demo.corpus)."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from textclf.demo.corpus import CLASSES, CorpusSpec, CorpusStats, generate_rows, write_corpus, write_corpus_to_size
from textclf.errors import UsageError

pytestmark = pytest.mark.unit

ALL_KINDS = {
    "empty_text", "missing_id", "invalid_encoding", "repairable_encoding", "too_long",
    "missing_label", "exact_duplicate", "conflicting_label", "html", "control_chars",
    "malformed_row",
}


def rows_of(spec: CorpusSpec) -> list[dict]:
    """All rows of a spec, chunks flattened."""
    return [row for chunk in generate_rows(spec) for row in chunk]


@pytest.fixture(scope="module")
def big() -> list[dict]:
    """20,000 clean labeled rows shared by the distribution tests."""
    return rows_of(CorpusSpec(rows=20_000, seed=11, label_noise=0.1))


def read_csv_records(path: Path, delimiter: str = ",") -> list[list[str]]:
    """Read a CSV/TSV as a lenient ingester would: undecodable bytes kept as surrogates."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def raw_bytes(text: str) -> bytes:
    """Bytes of a field as stored in the file."""
    return text.encode("utf-8", errors="surrogateescape")


def test_classes_are_plain_identifiers() -> None:
    assert len(CLASSES) >= 6
    assert len(set(CLASSES)) == len(CLASSES)
    for name in CLASSES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    spec = CorpusSpec(rows=3_000, seed=5, dirty_fraction=0.05)
    for ext in ("csv", "jsonl.gz", "parquet"):
        a = write_corpus(spec, tmp_path / f"a.{ext}")
        b = write_corpus(spec, tmp_path / f"b.{ext}")
        c = write_corpus(dataclasses.replace(spec, seed=6), tmp_path / f"c.{ext}")
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes(), ext
        assert Path(a.path).read_bytes() != Path(c.path).read_bytes(), ext
        assert a.dirty == b.dirty


@pytest.mark.integration
def test_determinism_holds_across_processes(tmp_path: Path) -> None:
    code = (
        "import sys; from textclf.demo.corpus import CorpusSpec, write_corpus; "
        "write_corpus(CorpusSpec(rows=2000, seed=3, dirty_fraction=0.05), sys.argv[1]); "
        "write_corpus(CorpusSpec(rows=100), sys.argv[1] + '.parquet'); "
        "assert 'pandas' not in sys.modules, 'corpus must not import pandas'"
    )
    write_corpus(CorpusSpec(rows=2000, seed=3, dirty_fraction=0.05), tmp_path / "here.csv")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there.csv")], check=True)
    assert (tmp_path / "here.csv").read_bytes() == (tmp_path / "there.csv").read_bytes()


def test_all_classes_present_and_roughly_balanced(big: list[dict]) -> None:
    counts = Counter(r["_true_label"] for r in big)
    assert set(counts) == set(CLASSES)
    expected = len(big) / len(CLASSES)
    for name in CLASSES:
        assert 0.9 * expected < counts[name] < 1.1 * expected, counts


def test_label_noise_fraction_matches_the_setting(big: list[dict]) -> None:
    noisy = np.mean([r["label"] != r["_true_label"] for r in big])
    assert 0.09 < noisy < 0.11
    clean = rows_of(CorpusSpec(rows=20_000, seed=11, label_noise=0.0))
    assert all(r["label"] == r["_true_label"] for r in clean)
    # Noise changes labels only: the texts and ids are the same.
    assert [r["text"] for r in clean] == [r["text"] for r in big]
    default = rows_of(CorpusSpec(rows=10_000, seed=2))
    assert 0.02 < np.mean([r["label"] != r["_true_label"] for r in default]) < 0.04


def test_length_spread_is_lognormal_like(big: list[dict]) -> None:
    words = np.array([len(r["text"].split()) for r in big])
    assert words.min() >= 2
    assert words.min() <= 5
    assert words.max() >= 1000
    assert words.max() <= 3000
    assert 40 <= np.median(words) <= 60
    assert (words <= 5).mean() < 0.05


def test_non_ascii_and_nfd_documents_are_present(big: list[dict]) -> None:
    texts = [r["text"] for r in big]
    non_ascii = [t for t in texts if not t.isascii()]
    assert 0.03 < len(non_ascii) / len(texts) < 0.2
    nfd = [t for t in non_ascii if unicodedata.normalize("NFC", t) != t]
    assert len(nfd) > 50
    assert all(unicodedata.normalize("NFD", t) == t for t in nfd)
    joined = "\n".join(unicodedata.normalize("NFC", t) for t in non_ascii)
    for word in ("café", "Zürich", "東京", "Ελλάδα"):
        assert word in joined


def test_texts_have_sentences_punctuation_and_some_newlines(big: list[dict]) -> None:
    texts = [r["text"] for r in big]
    assert sum(t[0].isupper() for t in texts) > 0.8 * len(texts)
    assert sum("," in t for t in texts) > 0.3 * len(texts)
    assert sum('"' in t for t in texts) > 0.1 * len(texts)
    assert 0 < sum("\n" in t for t in texts) < 0.2 * len(texts)


def test_ids_follow_prefix_and_offset_and_unlabeled_has_no_label() -> None:
    labeled = rows_of(CorpusSpec(rows=50, id_prefix="train"))
    assert [r["id"] for r in labeled[:2]] == ["train-000000000", "train-000000001"]
    unlabeled = rows_of(CorpusSpec(rows=50, labeled=False, id_offset=1_000_000))
    assert unlabeled[0]["id"] == "doc-001000000"
    assert all("label" not in r for r in unlabeled)
    assert len({r["id"] for r in unlabeled}) == 50
    # Unlabeled rows are not copies of the labeled corpus with the same seed.
    assert {r["text"] for r in labeled}.isdisjoint({r["text"] for r in unlabeled})


def test_a_classifier_reaches_high_but_not_perfect_accuracy() -> None:
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    naive_bayes = pytest.importorskip("sklearn.naive_bayes")
    train = rows_of(CorpusSpec(rows=8_000, seed=21))
    test = rows_of(CorpusSpec(rows=3_000, seed=22))
    vec = sklearn_text.CountVectorizer()
    model = naive_bayes.MultinomialNB().fit(
        vec.fit_transform([r["text"] for r in train]), [r["label"] for r in train]
    )
    predicted = model.predict(vec.transform([r["text"] for r in test]))
    accuracy = np.mean(predicted == np.array([r["label"] for r in test]))
    assert 0.80 <= accuracy <= 0.96, accuracy


def test_dirty_csv_contains_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "dirty.csv"
    stats = write_corpus(CorpusSpec(rows=1_000, seed=4, dirty_fraction=0.05), path)
    assert set(stats.dirty) == ALL_KINDS
    assert all(n >= 1 for n in stats.dirty.values())
    assert 1_000 * 0.03 < sum(stats.dirty.values()) < 1_000 * 0.15
    assert stats.rows == 1_000
    assert stats.bytes == path.stat().st_size

    records = read_csv_records(path)
    header, data = records[0], records[1:]
    assert header == ["id", "text", "label"]
    assert len(data) == stats.rows
    wrong_width = [r for r in data if len(r) != 3]
    assert len(wrong_width) == stats.dirty["malformed_row"]
    good = [r for r in data if len(r) == 3]

    texts = [r[1] for r in good]
    assert "" in texts
    assert any(t and not t.strip() for t in texts)
    assert any(r[0] == "" for r in good)
    assert any(r[2] == "" for r in good)
    assert any(len(t) > 100_000 for t in texts)
    assert any("<br" in t or "&amp;" in t or "&quot;" in t for t in texts)
    assert any("\x07" in t and "\u200b" in t and "\u00a0" in t for t in texts)

    undecodable = [raw_bytes(t) for t in texts if not raw_bytes(t).isascii()]
    invalid, repairable = [], []
    for b in undecodable:
        try:
            b.decode("utf-8")
            continue
        except UnicodeDecodeError:
            pass
        try:
            b.decode("cp1252")
            repairable.append(b)
        except UnicodeDecodeError:
            invalid.append(b)
    assert len(invalid) == stats.dirty["invalid_encoding"]
    assert len(repairable) == stats.dirty["repairable_encoding"]
    assert any("é" in b.decode("cp1252") for b in repairable)

    seen: dict[tuple[str, str], set[str]] = {}
    rows = Counter(tuple(r) for r in good if r[0])
    for r in good:
        seen.setdefault((r[0], r[1]), set()).add(r[2])
    assert any(n > 1 for n in rows.values())
    assert any(len(labels) > 1 for labels in seen.values())


def test_dirty_rows_from_generate_rows_are_tagged() -> None:
    rows = rows_of(CorpusSpec(rows=400, seed=9, dirty_fraction=0.05))
    kinds = Counter(r["_dirty"] for r in rows if "_dirty" in r)
    assert set(kinds) == ALL_KINDS
    for r in rows:
        assert isinstance(r["text"], bytes) == (
            r.get("_dirty") in ("invalid_encoding", "repairable_encoding")
        )


def test_small_dirty_corpus_and_no_dirt_by_default() -> None:
    assert not any("_dirty" in r for r in rows_of(CorpusSpec(rows=500)))
    small = rows_of(CorpusSpec(rows=50, dirty_fraction=0.2))
    assert len(small) == 50


def test_dirty_jsonl_keeps_invalid_bytes_and_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "dirty.jsonl"
    stats = write_corpus(CorpusSpec(rows=1_000, seed=4, dirty_fraction=0.05), path)
    assert set(stats.dirty) == ALL_KINDS - {"malformed_row"}
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    objects = [json.loads(line.decode("utf-8", "surrogateescape")) for line in lines[:-1]]
    assert len(objects) == stats.rows == 1_000
    assert all(set(o) == {"id", "text", "label"} for o in objects)
    bad = 0
    for line in lines[:-1]:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    assert bad == stats.dirty["invalid_encoding"] + stats.dirty["repairable_encoding"]


def test_dirty_parquet_and_unlabeled_kinds(tmp_path: Path) -> None:
    stats = write_corpus(
        CorpusSpec(rows=1_000, seed=4, dirty_fraction=0.05), tmp_path / "dirty.parquet"
    )
    assert set(stats.dirty) == ALL_KINDS - {
        "invalid_encoding", "repairable_encoding", "malformed_row"
    }
    table = pq.read_table(stats.path)
    assert table.num_rows == stats.rows == 1_000
    assert "" in table.column("text").to_pylist()

    unlabeled = write_corpus(
        CorpusSpec(rows=1_000, labeled=False, seed=4, dirty_fraction=0.05),
        tmp_path / "dirty_unlabeled.tsv",
    )
    assert set(unlabeled.dirty) == ALL_KINDS - {"missing_label", "conflicting_label"}
    records = read_csv_records(Path(unlabeled.path), delimiter="\t")
    assert records[0] == ["id", "text"]
    assert len(records) - 1 == unlabeled.rows
    assert sum(len(r) != 2 for r in records[1:]) == unlabeled.dirty["malformed_row"]


@pytest.mark.parametrize(
    "name",
    [
        "c.csv", "c.tsv", "c.jsonl", "c.parquet",
        "c.csv.gz", "c.csv.zst", "c.tsv.gz", "c.jsonl.gz", "c.jsonl.zst",
    ],
)
@pytest.mark.parametrize("labeled", [True, False])
def test_formats_round_trip(tmp_path: Path, name: str, labeled: bool) -> None:
    spec = CorpusSpec(rows=700, labeled=labeled, seed=8)
    path = tmp_path / name
    stats = write_corpus(spec, path)
    assert isinstance(stats, CorpusStats)
    assert stats.rows == 700 and stats.bytes == path.stat().st_size
    assert stats.dirty == {}
    assert not list(tmp_path.glob("*.partial"))
    if ".csv" in name or ".tsv" in name:
        delimiter = "\t" if ".tsv" in name else ","
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
        )
    elif ".jsonl" in name:
        table = pajson.read_json(path)
    else:
        table = pq.read_table(path)
    columns = ["id", "text", "label"] if labeled else ["id", "text"]
    assert table.column_names == columns
    expected = rows_of(spec)
    assert table.to_pylist() == [{c: r[c] for c in columns} for r in expected]


def test_gzip_output_is_readable_by_python_gzip(tmp_path: Path) -> None:
    stats = write_corpus(CorpusSpec(rows=100, seed=1), tmp_path / "x.csv.gz")
    with gzip.open(stats.path, "rt", encoding="utf-8", newline="") as f:
        assert len(list(csv.reader(f))) == 101


def test_progress_reports_cumulative_rows_per_chunk(tmp_path: Path) -> None:
    seen: list[int] = []
    write_corpus(CorpusSpec(rows=25_000, seed=1), tmp_path / "p.parquet", progress=seen.append)
    assert seen == [10_000, 20_000, 25_000]


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl.zst", "s.parquet"])
def test_write_to_size_stops_near_the_target(tmp_path: Path, name: str) -> None:
    target = 3_000_000
    seen: list[int] = []
    stats = write_corpus_to_size(
        CorpusSpec(rows=1, seed=2), tmp_path / name, target, progress=seen.append
    )
    assert target <= stats.bytes < target * 1.02
    assert seen[-1] == stats.rows > 1
    if name.endswith(".csv"):
        ids = [r[0] for r in read_csv_records(Path(stats.path))[1:]]
        assert ids == [f"doc-{i:09d}" for i in range(stats.rows)]


def test_bad_arguments_raise_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        write_corpus(CorpusSpec(rows=10), tmp_path / "x.txt")
    with pytest.raises(UsageError):
        write_corpus(CorpusSpec(rows=10), tmp_path / "x.parquet.gz")
    with pytest.raises(UsageError):
        CorpusSpec(rows=-1)
    with pytest.raises(UsageError):
        CorpusSpec(rows=10, label_noise=1.5)
    with pytest.raises(UsageError):
        CorpusSpec(rows=10, dirty_fraction=-0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        CorpusSpec(rows=10).rows = 3  # type: ignore[misc]
    assert not list(tmp_path.iterdir())


def test_too_long_respects_max_text_chars() -> None:
    rows = rows_of(CorpusSpec(rows=300, seed=3, dirty_fraction=0.02, max_text_chars=5_000))
    long_rows = [r for r in rows if r.get("_dirty") == "too_long"]
    assert long_rows
    assert all(5_000 < len(r["text"]) <= 5_600 for r in long_rows)
