"""Security checks as a user or an auditor would make them, end to end where it matters.

1. Models load only through the registry: checksum first, then Keras ``safe_mode=True``, then a shape check.
2. Credentials never reach logs, error messages, reports, manifests or any object written to the lake.
3. Reports show hostile document text as inert text in a real browser, and their CSP blocks scripts.
4. Keys derived from command-line arguments or manifests cannot leave the lake.
5. The embedded Airflow (``scripts/airflow_local.py serve``) wants a token and listens on loopback only.

What test_registry.py, test_evaluation.py, test_scoring_report.py and test_storage.py already check
(flipped model bytes, a float-input Lambda model, string-level escaping, ``safe_key``) is not repeated.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import train_evaluated
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from textclf.config import IngestConfig, TrainConfig
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.errors import ModelIntegrityError, StorageError, UnsafeKeyError
from textclf.evaluate.predictions import EvaluationInput
from textclf.ingest.stage import ingest
from textclf.lake import Lake, S3Options
from textclf.lake.layout import MANIFEST, MODEL_FILE
from textclf.lake.tables import dataset_table
from textclf.model.registry import load_model

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]
TEXTCLF = str(Path(sys.executable).with_name("textclf"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DATE = "2026-05-01"

# Payloads whose only observable effect, if they ever ran, is the page title.
PWNED = "PWNED"
HOSTILE_SCRIPT = f"<script>window.__pwned=1;document.title='{PWNED}'</script>"
HOSTILE_IMG = f"<img src=x onerror=\"document.title='{PWNED}'\">"
# Ingest strips real tags but unescapes entities afterwards (docs/ingestion.md), so the escaped
# forms arrive in the lake as literal markup: that is how hostile markup reaches a report.
HOSTILE_TEXT = " ".join([HOSTILE_SCRIPT, HOSTILE_IMG, html.escape(HOSTILE_SCRIPT), html.escape(HOSTILE_IMG)])
HOSTILE_CLASS = f"feedback{HOSTILE_SCRIPT}"


def _quiet_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([TEXTCLF, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or _quiet_env())


# -- a registered version, trained on documents carrying hostile markup ---------------------------------------------


def _hostile_corpus(tmp: Path) -> Path:
    """The demo corpus, every document and id carrying hostile markup, one class named with a script."""
    plain = tmp / "plain.csv"
    write_corpus(CorpusSpec(rows=600, seed=23, id_prefix="sec-"), plain)
    hostile = tmp / "hostile.csv"
    with open(plain, newline="", encoding="utf-8") as src, open(hostile, "w", newline="", encoding="utf-8") as dst:
        reader, writer = csv.DictReader(src), csv.writer(dst, lineterminator="\n")
        writer.writerow(["id", "text", "label"])
        for row in reader:
            label = HOSTILE_CLASS if row["label"] == "feedback" else row["label"]
            writer.writerow([f"{row['id']}{HOSTILE_IMG}", f"{row['text']} {HOSTILE_TEXT}", label])
    return hostile


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A local lake with one cheaply trained version (tests that change it work on a copy)."""
    tmp = tmp_path_factory.mktemp("security")
    lake = tmp / "lake"
    ingest(Lake(str(lake)), IngestConfig(kind="labeled", date=DATE, sources=(str(_hostile_corpus(tmp)),)))
    return lake, train_evaluated(Lake(str(lake)), TrainConfig(model="bow_mlp", epochs=1))


@pytest.fixture
def lake_copy(registered: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    copy = tmp_path / "lake"
    shutil.copytree(registered[0], copy)
    return copy, registered[1]


def _install_model(lake: Path, version: str, data: bytes) -> None:
    """Put ``data`` in place of a version's model.keras AND update its manifest, so the checksum passes."""
    key = lake / "models" / version
    (key / MODEL_FILE).write_bytes(data)
    manifest = json.loads((key / MANIFEST).read_text())
    digest = hashlib.sha256(data).hexdigest()
    manifest["model_sha256"] = digest
    for entry in manifest["files"]:
        if entry["path"] == MODEL_FILE:
            entry["sha256"] = digest
    (key / MANIFEST).write_text(json.dumps(manifest))


def _rezip(original: bytes, change: Callable[[str, bytes], list[tuple[str, bytes]]]) -> bytes:
    """A copy of a .keras zip with each member replaced by ``change(name, data)`` (an empty list drops it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            for new_name, data in change(name, src.read(name)):
                dst.writestr(new_name, data)
    return out.getvalue()


# -- 1. models load only from the registry, checksummed, in safe mode ----------------------------------------------


def test_only_the_registry_deserializes_models() -> None:
    """No code path loads a model unsafely or around the registry's checksum (the trainer's self-check aside)."""
    unsafe = re.compile(r"safe_mode\s*=\s*False|enable_unsafe_deserialization|pickle\.loads?\(|joblib\.load|"
                        r"saved_model\.load|dill\.load|cloudpickle")
    loads = re.compile(r"(keras\.(saving|models)\.load_model|tf\.keras\.models\.load_model)\(")
    imported = re.compile(r"from\s+(keras|tensorflow)[\w.]*\s+import[^\n]*\bload_model\b")
    sources = [*ROOT.glob("textclf/**/*.py"), *ROOT.glob("dags/*.py"), *ROOT.glob("plugins/**/*.py"),
               *ROOT.glob("scripts/*.py")]
    assert len(sources) > 20
    for path in sources:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT).as_posix()
        assert not unsafe.search(text), f"{rel} deserializes unsafely"
        assert not imported.search(text), f"{rel} imports a model loader under another name"
        for match in loads.finditer(text):
            line = text[match.start(): text.find("\n", match.start())]
            # registry.load_model (after the checksum) and the trainer reloading the file it has just saved
            allowed = rel in ("textclf/model/registry.py", "textclf/model/train.py")
            assert allowed and "safe_mode=True" in line, (rel, line)


def test_lambda_in_a_string_model_is_refused_by_safe_mode_without_running(lake_copy: tuple[Path, str],
                                                                            tmp_path: Path) -> None:
    """A model that would pass the checksum and the shape check is still refused, and its code never runs."""
    import keras

    lake, version = lake_copy
    classes = load_model(Lake(str(lake)), version).classes
    marker = tmp_path / "lambda-ran"
    # The lambda's only effect is to create `marker`; it runs whenever Keras rebuilds the model.
    evil = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")  # noqa: S307
    text = keras.Input(shape=(), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(max_tokens=50, output_mode="multi_hot")
    vectorize.adapt(["billing invoice refund", "password login account"])
    hidden = keras.layers.Lambda(evil, name="payload")(vectorize(text))
    model = keras.Model(text, keras.layers.Dense(len(classes), activation="softmax")(hidden))
    path = tmp_path / "lambda.keras"
    model.save(path)
    assert marker.exists()  # the payload does run when the graph is built ...
    marker.unlink()
    _install_model(lake, version, path.read_bytes())

    with pytest.raises(ModelIntegrityError, match=r"not a loadable textclf model \(safe mode\).*Lambda"):
        load_model(Lake(str(lake)), version)
    assert not marker.exists()  # ... but not when the registry refuses to load it
    assert Lake(str(lake)).verify(f"models/{version}")  # the checksum did pass: safe mode is what refused it


def _os_system_activation(name: str, data: bytes) -> list[tuple[str, bytes]]:
    if name != "config.json":
        return [(name, data)]
    config = json.loads(data)
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["activation"] = {"module": "os", "class_name": "function", "config": "system",
                                     "registered_name": "system"}
    return [(name, json.dumps(config).encode())]


CORRUPT_ARCHIVES: dict[str, Callable[[bytes], bytes]] = {
    "not-a-zip": lambda original: b"PK but not really a zip archive\n" * 10,
    "truncated": lambda original: original[: len(original) // 2],
    "config-not-json": lambda original: _rezip(original, lambda n, d: [(n, b"{'nope" if n == "config.json" else d)]),
    "config-missing": lambda original: _rezip(original, lambda n, d: [] if n == "config.json" else [(n, d)]),
    "weights-garbage": lambda original: _rezip(original, lambda n, d: [(n, os.urandom(4096) if n.endswith(".h5")
                                                                         else d)]),
    "weights-missing": lambda original: _rezip(original, lambda n, d: [] if n.endswith(".h5") else [(n, d)]),
    "os-system-activation": lambda original: _rezip(original, _os_system_activation),
    "foreign-class": lambda original: _rezip(original, lambda n, d: [(n, json.dumps({
        "module": "builtins", "class_name": "exec", "config": {}, "registered_name": None}).encode()
        if n == "config.json" else d)]),
}


@pytest.mark.parametrize("kind", list(CORRUPT_ARCHIVES))
def test_corrupt_archive_with_a_matching_checksum_is_an_integrity_error(kind: str,
                                                                        lake_copy: tuple[Path, str]) -> None:
    lake, version = lake_copy
    original = (lake / "models" / version / MODEL_FILE).read_bytes()
    _install_model(lake, version, CORRUPT_ARCHIVES[kind](original))
    with pytest.raises(ModelIntegrityError, match=rf"models/{version}/model.keras is not a loadable textclf model"):
        load_model(Lake(str(lake)), version)


def test_archive_members_cannot_write_outside_the_extraction_folder(lake_copy: tuple[Path, str],
                                                                    tmp_path: Path) -> None:
    """A member named ``../../x`` is never written; whether the rest loads is secondary."""
    lake, version = lake_copy
    target = tmp_path / "escaped.txt"
    member = "../" * 12 + str(target).lstrip("/")
    original = (lake / "models" / version / MODEL_FILE).read_bytes()
    _install_model(lake, version, _rezip(original, lambda n, d: [(n, d)] + ([(member, b"owned")]
                                                                           if n == "config.json" else [])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Skipping invalid path during archive extraction"
        try:
            load_model(Lake(str(lake)), version)
        except ModelIntegrityError:
            pass
    assert not target.exists()


@pytest.mark.integration
def test_cli_refuses_a_tampered_model_with_exit_6_and_one_line(lake_copy: tuple[Path, str]) -> None:
    lake, version = lake_copy
    path = lake / "models" / version / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    proc = _cli("evaluate", "--lake", str(lake), "--model-version", version)
    assert proc.returncode == 6, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("textclf evaluate: error: ") and "fails its checksum" in last and MODEL_FILE in last
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# -- 2. credentials never appear in output, errors or the lake -----------------------------------------------------


def _views(name: str, data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """The bytes of an object and of everything packed inside it (zip members, gzip, Parquet values)."""
    yield name, data
    if depth > 3:
        return
    if data[:2] == b"\x1f\x8b":
        yield from _views(f"{name}!gunzip", gzip.decompress(data), depth + 1)
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for member in zf.namelist():
                yield from _views(f"{name}!{member}", zf.read(member), depth + 1)
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))  # values are zstd-compressed on disk: scan them decoded
        yield f"{name}!values", json.dumps(table.to_pylist(), default=str).encode()
        yield f"{name}!schema", str(table.schema.metadata).encode()


def _bucket_objects(server: S3Server, bucket: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            objects[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return objects


def _upload(server: S3Server, bucket: str, key: str, path: Path) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    client.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


@pytest.mark.s3
def test_credentials_never_appear_in_output_errors_or_the_lake(s3_lake: str, s3_env: S3Server,
                                                               tmp_path: Path) -> None:
    bucket = s3_lake.removeprefix("s3://").split("/", 1)[0]
    assert len(SECRET_KEY) >= 16 and len(ACCESS_KEY) >= 8  # specific enough to search for everywhere
    labeled, unlabeled = tmp_path / "labeled.csv", tmp_path / "unlabeled.csv"
    write_corpus(CorpusSpec(rows=600, seed=31), labeled)
    write_corpus(CorpusSpec(rows=150, seed=32, labeled=False, id_prefix="u-"), unlabeled)
    sources = {kind: _upload(s3_env, bucket, f"lake/landing/{kind}/{kind}.csv", path)
               for kind, path in (("labeled", labeled), ("unlabeled", unlabeled))}

    outputs: list[tuple[str, str]] = []

    def step(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = _cli(*args, "--debug", env=env)
        outputs.append((args[0], proc.stdout + proc.stderr))
        return proc

    for kind in ("labeled", "unlabeled"):
        proc = step("ingest", "--lake", s3_lake, "--kind", kind, "--date", DATE, sources[kind])
        assert proc.returncode == 0, proc.stderr
    proc = step("validate", "--lake", s3_lake, "--kind", "labeled", "--date", DATE)
    assert proc.returncode == 0, proc.stderr
    proc = step("train", "--lake", s3_lake, "--model", "bow_mlp", "--epochs", "1", "--explain", "1")
    assert proc.returncode == 0, proc.stderr
    version = json.loads(proc.stdout.strip().splitlines()[-1])["model_version"]
    proc = step("promote", "--lake", s3_lake, "--model-version", version, "--force")
    assert proc.returncode == 0, proc.stderr
    proc = step("score", "--lake", s3_lake, "--date", DATE)
    assert proc.returncode == 0, proc.stderr
    proc = step("report", "--lake", s3_lake, "--date", DATE)
    assert proc.returncode == 0, proc.stderr

    # A wrong secret: the command fails with a plain message, and neither secret is echoed, even with --debug.
    wrong = "wr0ng-Secret-" + hashlib.sha256(b"not the key").hexdigest()[:20]
    proc = step("report", "--lake", s3_lake, "--date", DATE, env=_quiet_env(AWS_SECRET_ACCESS_KEY=wrong))
    assert proc.returncode == 5, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("textclf report: error: ") and bucket in last and "denied" in last.lower()
    # The same failure in-process: message, repr and the whole chained traceback.
    with pytest.raises(StorageError) as caught:
        Lake(s3_lake, S3Options(s3_env.endpoint, ACCESS_KEY, wrong, "us-east-1")).read_json("models/champion.json")
    outputs.append(("in-process error", "".join(traceback.format_exception(caught.value)) + repr(caught.value)))

    objects = _bucket_objects(s3_env, bucket)
    keys = set(objects)
    assert {f"lake/models/{version}/{MODEL_FILE}", f"lake/models/{version}/{MANIFEST}", "lake/models/champion.json",
            f"lake/reports/run_date={DATE}/report.html", "lake/predictions/_delta_log/00000000000000000000.json",
            f"lake/validation/labeled/ingest_date={DATE}/results.json"} <= keys, sorted(keys)
    assert any(k.startswith(f"lake/predictions/run_date={DATE}/part-") for k in keys)

    leaks, scanned = [], 0
    for name, needle in (("secret key", SECRET_KEY), ("wrong secret key", wrong), ("access key", ACCESS_KEY)):
        for what, text in outputs:
            if needle in text:
                leaks.append(f"{name} in the output of {what}")
        for key, data in objects.items():
            for view, content in _views(key, data):
                scanned += 1
                if needle.encode() in content:
                    leaks.append(f"{name} in s3://{bucket}/{view}")
    assert scanned > 3 * len(objects)  # zip members and Parquet values were scanned too
    assert not leaks, leaks


# -- 3. reports are inert in a real browser ------------------------------------------------------------------------


class _Dom(HTMLParser):
    """Elements, attributes, title and text of a serialized DOM."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False
        self.markup = markup
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data


@pytest.fixture(scope="module")
def chromium() -> str:
    if not CHROMIUM:
        pytest.skip("no headless Chromium on this machine (apt-get install -y chromium): browser checks not run")
    return CHROMIUM


def _render(chromium: str, page: Path, tmp_path: Path) -> _Dom:
    """Load a page in headless Chromium, let timers and image errors fire, and parse the resulting DOM."""
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=3000", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-2000:]
    return _Dom(proc.stdout)


def _assert_inert(dom: _Dom, expected_title: str) -> None:
    assert dom.title == expected_title, dom.title  # a payload that ran would have set it to PWNED
    scripts = [attrs for tag, attrs in dom.tags if tag in ("script", "iframe", "object", "embed")]
    handlers = [(tag, name) for tag, attrs in dom.tags for name in attrs if name.lower().startswith("on")]
    remote = [attrs.get("src") for tag, attrs in dom.tags if tag == "img" and not (attrs.get("src") or "")
              .startswith("data:image/")]
    assert not scripts and not handlers and not remote, (scripts, handlers, remote)


def _csp_script_sources(markup: str) -> list[str]:
    match = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)"', markup)
    assert match, "the page has no Content-Security-Policy"
    directives = {d.split()[0]: d.split()[1:] for d in html.unescape(match.group(1)).split(";") if d.strip()}
    return directives.get("script-src", directives.get("default-src", ["*"]))


@pytest.mark.integration
def test_trained_report_shows_hostile_documents_as_inert_text(registered: tuple[Path, str], chromium: str,
                                                              tmp_path: Path) -> None:
    root, version = registered
    lake = Lake(str(root))
    # Ingest stripped the real tags but the escaped ones became literal markup: hostile text is in the lake.
    texts = dataset_table(lake, "labeled").read(DATE, columns=["text"]).column("text").to_pylist()
    assert all(HOSTILE_SCRIPT in t and HOSTILE_IMG in t for t in texts)
    markup = lake.read_bytes(f"models/{version}/report.html").decode()
    assert _csp_script_sources(markup) == ["'none'"]
    page = tmp_path / "report.html"
    page.write_text(markup, encoding="utf-8")

    dom = _render(chromium, page, tmp_path)

    _assert_inert(dom, f"Model {version} (bow_mlp): evaluation")
    text = "".join(dom.text)
    assert HOSTILE_CLASS in text  # the class name, shown as text
    assert HOSTILE_IMG in text  # a doc id of an explained prediction, shown as text
    assert HOSTILE_SCRIPT in text  # a document's text, shown as text
    assert "&lt;script&gt;" in dom.markup and "&lt;img src=x onerror=" in dom.markup


def hostile_input(base: EvaluationInput, class_suffix: str, id_suffix: str) -> EvaluationInput:
    """An evaluation input whose version, architecture, a class, texts, doc ids and config carry markup."""
    hostile_class = f"tech{class_suffix}"
    return dataclasses.replace(
        base, version=f"v1{HOSTILE_SCRIPT}", architecture=HOSTILE_IMG,
        classes=tuple(hostile_class if c == "tech" else c for c in base.classes),
        labels=[hostile_class if label == "tech" else label for label in base.labels],
        texts=[f"{t} {HOSTILE_SCRIPT} goal {HOSTILE_IMG}" for t in base.texts],
        doc_ids=[f"{d}{id_suffix}" for d in base.doc_ids], config={**base.config, "note": HOSTILE_IMG})


@pytest.mark.integration
def test_evaluation_report_with_hostile_version_classes_and_texts_is_inert(chromium: str, tmp_path: Path) -> None:
    from tests.test_evaluation import keyword_model, make_input
    from textclf.evaluate.stage import build_evaluation

    inp = hostile_input(make_input(), class_suffix=HOSTILE_IMG, id_suffix=HOSTILE_SCRIPT)
    _, files = build_evaluation(inp, keyword_model, explain_count=3, seed=0)
    page = tmp_path / "report.html"
    page.write_bytes(files["report.html"])

    dom = _render(chromium, page, tmp_path)

    _assert_inert(dom, f"Model v1{HOSTILE_SCRIPT} ({HOSTILE_IMG}): evaluation")
    text = "".join(dom.text)
    assert f"tech{HOSTILE_IMG}" in text and f"v1{HOSTILE_SCRIPT}" in text and HOSTILE_IMG in text


@pytest.mark.integration
def test_scoring_report_with_hostile_names_and_links_is_inert(chromium: str, tmp_path: Path) -> None:
    from tests.test_scoring_report import steady
    from textclf.score.report import build_scoring_report

    inp = steady(
        classes=("sports", "politics", HOSTILE_SCRIPT),
        predicted_counts={"sports": 250, "politics": 150, HOSTILE_SCRIPT: 100},
        training_class_counts={"sports": 500, "politics": 300, HOSTILE_SCRIPT: 200},
        model_version=f"v1{HOSTILE_IMG}", batch_signals=[{"batch": HOSTILE_SCRIPT, "rows": 100}],
        predictions_uri=f's3://lake/p">{HOSTILE_SCRIPT}', validation_docs_uri=f"javascript:document.title='{PWNED}'",
        model_report_uri=f"s3://lake/m'{HOSTILE_IMG}")
    _, markup = build_scoring_report(inp)
    assert _csp_script_sources(markup) == ["'none'"]
    page = tmp_path / "report.html"
    page.write_text(markup, encoding="utf-8")

    dom = _render(chromium, page, tmp_path)

    _assert_inert(dom, f"Scoring report 2024-05-02: model v1{HOSTILE_IMG}")
    assert HOSTILE_SCRIPT in "".join(dom.text)
    links = [attrs.get("href", "") for tag, attrs in dom.tags if tag == "a"]
    assert links and not [h for h in links if h.strip().lower().startswith("javascript:")]


@pytest.mark.integration
def test_csp_blocks_scripts_even_if_escaping_were_missed(chromium: str, tmp_path: Path) -> None:
    """Raw markup in the pages' base template stays inert; the same page without its CSP meta tag runs it (control)."""
    from textclf.report.render import environment

    # `|safe` stands for an escaping bug: the payload goes into the page as markup.
    probe = environment().from_string('{% extends "base.html" %}{% block content %}{{ probe|safe }}{% endblock %}')
    markup = probe.render(title="csp probe", sections=[("probe", "Probe")], probe=HOSTILE_SCRIPT + HOSTILE_IMG)
    assert HOSTILE_SCRIPT in markup
    protected, unprotected = tmp_path / "protected.html", tmp_path / "unprotected.html"
    protected.write_text(markup, encoding="utf-8")
    without_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", markup)
    assert without_csp != markup
    unprotected.write_text(without_csp, encoding="utf-8")

    assert _render(chromium, protected, tmp_path).title == "csp probe"
    assert _render(chromium, unprotected, tmp_path).title == PWNED  # the browser would have run it



def _hostile_pages() -> dict[str, tuple[str, str]]:
    """Every HTML page, rendered with hostile markup in each value it shows: {page: (markup, expected title)}."""
    import pandas as pd

    from tests.test_evaluation import keyword_model, make_input
    from tests.test_scoring_report import steady
    from textclf.evaluate.explain import explain_predictions
    from textclf.evaluate.label_errors import suspected_label_errors
    from textclf.evaluate.maps import probability_map
    from textclf.evaluate.metrics import compute_metrics
    from textclf.evaluate.report import render_report
    from textclf.model.data import label_indices
    from textclf.score.report import build_scoring_report
    from textclf.validate.profile import profile, render_profile_html

    inp = dataclasses.replace(
        hostile_input(make_input(), class_suffix=HOSTILE_SCRIPT, id_suffix=HOSTILE_IMG),
        history={"loss": [0.5], HOSTILE_SCRIPT: [0.1]},
        training={"candidates": [{"name": HOSTILE_SCRIPT, "params": {HOSTILE_IMG: HOSTILE_SCRIPT},
                                  "validation_accuracy": 0.9, "validation_macro_f1": 0.9, "seconds": 1.0,
                                  "selected": True}]})
    metrics = compute_metrics(inp.classes, inp.labels, inp.probs)
    metrics["linear_reference"] = {"accuracy": 0.5, "macro_f1": 0.5, "description": HOSTILE_SCRIPT, "seconds": 1.0}
    explanations = explain_predictions(keyword_model, inp.texts[-3:], inp.classes, num_samples=50)
    for ex, doc_id, label in zip(explanations, inp.doc_ids[-3:], inp.labels[-3:], strict=True):
        ex.update(doc_id=doc_id, label=label)
    model_page = render_report(inp, metrics, explanations=explanations, label_errors=suspected_label_errors(inp),
                               prob_map=probability_map(inp.probs, label_indices(inp.classes, inp.labels),
                                                        inp.classes, method="pca"))
    _, scoring_page = build_scoring_report(steady(
        classes=("sports", "politics", HOSTILE_SCRIPT),
        predicted_counts={"sports": 250, "politics": 150, HOSTILE_SCRIPT: 100},
        training_class_counts={"sports": 500, "politics": 300, HOSTILE_SCRIPT: 200},
        length_bins={HOSTILE_IMG: 500}, model_version=f"v1{HOSTILE_IMG}",
        batch_signals=[{"batch": 0, "rows": 100, HOSTILE_SCRIPT: HOSTILE_IMG}],
        predictions_uri=f's3://lake/p">{HOSTILE_SCRIPT}', validation_docs_uri=f"javascript:document.title='{PWNED}'",
        model_report_uri=f" JavaScript:alert('{PWNED}')"))
    stats = pd.DataFrame({"doc_id": ["a"], "text_chars": [3], "text_words": [1], "label": [HOSTILE_SCRIPT]})
    profile_page = render_profile_html(profile(stats, "labeled"), f"Profile {HOSTILE_IMG}")
    return {"model report": (model_page, f"Model v1{HOSTILE_SCRIPT} ({HOSTILE_IMG}): evaluation"),
            "scoring report": (scoring_page, f"Scoring report 2024-05-02: model v1{HOSTILE_IMG}"),
            "profile": (profile_page, f"Profile {HOSTILE_IMG}")}


def test_templates_autoescape_hostile_values_in_every_page() -> None:
    """Without a browser: class names, doc ids, texts, labels, versions and URIs come out as text, never markup."""
    for name, (markup, title) in _hostile_pages().items():
        dom = _Dom(markup)
        _assert_inert(dom, title)
        assert "<script" not in markup.lower(), name
        text = "".join(dom.text)
        assert HOSTILE_SCRIPT in text or HOSTILE_IMG in text, name
        links = [attrs.get("href") or "" for tag, attrs in dom.tags if tag == "a"]
        assert not [h for h in links if "javascript:" in h.lower()], (name, links)
    scoring = _Dom(_hostile_pages()["scoring report"][0])
    assert f"javascript:document.title='{PWNED}'" in "".join(scoring.text)  # refused as a link, shown as text


def test_no_module_builds_html_in_python_strings() -> None:
    """Markup lives in textclf/report/templates only: no string literal of the package holds an HTML tag."""
    import ast

    tag = re.compile(r"<\s*/?\s*(!doctype|html|head|body|style|table|thead|tbody|tr|td|th|div|span|p|a|img|"
                     r"section|nav|mark|code|b|i|em|ul|li|h[1-6]|br|article|meta|title)\b", re.I)
    # The demo corpus writes dirty documents, HTML included, for ingest to clean: input data, not a page.
    allowed = {"textclf/demo/corpus.py"}
    offenders = []
    for path in sorted((ROOT / "textclf").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        offenders += [f"{rel}:{node.lineno}: {node.value[:60]!r}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings and tag.search(node.value) and rel not in allowed]
    assert offenders == []


# -- 4. keys built from arguments or manifests cannot leave the lake -----------------------------------------------


@pytest.mark.parametrize(("args", "code", "message"), [
    (["score", "--date", "../../x"], 2, "date must be YYYY-MM-DD, got '../../x'"),
    (["score", "--date", "2026-01-01/../../../etc"], 2, "date must be YYYY-MM-DD"),
    (["report", "--date", "/etc/passwd"], 2, "date must be YYYY-MM-DD"),
    (["validate", "--kind", "labeled", "--date", "..\\..\\x"], 2, "date must be YYYY-MM-DD"),
    (["evaluate", "--model-version", "../../etc"], 6, "invalid model version '../../etc'"),
    (["promote", "--model-version", "/etc/passwd"], 6, "invalid model version '/etc/passwd'"),
    (["promote", "--model-version", "a/../../x"], 6, "invalid model version 'a/../../x'"),
    (["evaluate", "--model-version", "..\x00x"], 6, "invalid model version"),
    (["evaluate", "--model-version", "champion.json"], 6, "invalid model version 'champion.json'"),
])
def test_crafted_dates_and_versions_are_clear_errors(args: list[str], code: int, message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from textclf.cli import main

    lake = tmp_path / "inside" / "lake"
    lake.mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    command, rest = args[0], args[1:]
    assert main([command, "--lake", str(lake), *rest]) == code
    err = capsys.readouterr().err
    assert f"textclf {command}: error: " in err and message in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_manifest_paths_cannot_point_outside_the_lake(tmp_path: Path) -> None:
    """A tampered manifest naming ``../`` files is refused by every reader instead of being followed."""
    import pyarrow as pa

    lake = Lake(str(tmp_path / "lake"))
    key = f"reports/run_date={DATE}"  # a manifested folder (table files are named by the Delta log: test_tables.py)
    with lake.partition(key) as part:
        writer = part.parquet("part-00000.parquet", pa.schema([("doc_id", pa.string())]))
        writer.write(pa.table({"doc_id": ["a"]}))
        part.close_parquet(writer)
        part.commit({})
    outside = tmp_path / "outside.parquet"
    shutil.copy(tmp_path / "lake" / key / "part-00000.parquet", outside)
    manifest = json.loads((tmp_path / "lake" / key / MANIFEST).read_text())
    manifest["files"][0]["path"] = "../../../outside.parquet"
    (tmp_path / "lake" / key / MANIFEST).write_text(json.dumps(manifest))
    assert (tmp_path / "lake" / key / manifest["files"][0]["path"]).resolve() == outside  # it would be followed

    for read in (lake.verify, lake.read_table, lambda k: list(lake.iter_batches(k))):
        with pytest.raises(UnsafeKeyError, match=r"'\.\.'"):
            read(key)
    for method in (lake.read_manifest, lake.list_partitions, lake.list_children, lake.delete_tree, lake.exists):
        with pytest.raises(UnsafeKeyError):
            method("datasets/../../outside")


# -- 5. the embedded Airflow: authentication required, loopback only -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, *, token: str | None = None, body: dict | None = None, timeout: float = 10) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait_for(check: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen, log: Path) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"airflow_local.py serve exited {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout} s; {log.read_text()[-3000:]}")


def _running(proc: object) -> bool:
    """Alive and not a zombie (a zombie has exited; only its exit status waits to be collected)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.NoSuchProcess:
        return False


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_embedded_airflow_requires_a_token_and_listens_on_loopback_only(tmp_path: Path) -> None:
    import psutil

    port = _free_port()
    home = tmp_path / "home"
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AIRFLOW__API__PORT"] = str(port)
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "airflow_local.py"), "serve", "--home",
                                 str(home)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seen: dict[int, psutil.Process] = {}

    def tree() -> list[psutil.Process]:
        try:
            found = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        seen.update({p.pid: p for p in found})
        return found

    try:
        _wait_for(lambda: _http(f"{base}/api/v2/monitor/health", timeout=3)[0] == 200, 150, "health", proc, log)

        status, _ = _http(f"{base}/api/v2/dags")
        assert status in (401, 403)
        status, _ = _http(f"{base}/api/v2/dags", token="not-a-token")
        assert status in (401, 403)
        status, _ = _http(f"{base}/auth/token", body={"username": "admin", "password": "wrong"})
        assert status in (401, 403)
        passwords = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        status, body = _http(f"{base}/auth/token", body={"username": "admin", "password": passwords["admin"]})
        assert status in (200, 201), body
        token = json.loads(body)["access_token"]

        def dag_ids() -> set[str]:
            status, body = _http(f"{base}/api/v2/dags", token=token)
            assert status == 200, body
            return {d["dag_id"] for d in json.loads(body)["dags"]}

        expected = {"textclf_ingest", "textclf_retrain", "textclf_score"}
        _wait_for(lambda: expected <= dag_ids(), 90, "the three DAGs", proc, log)

        listening = []
        for p in [psutil.Process(proc.pid), *tree()]:
            try:
                listening += [(p.pid, " ".join(p.cmdline()[:3]), c.laddr.ip, c.laddr.port)
                              for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        assert any(port == lport for *_, lport in listening), listening  # we did see the api-server's socket
        assert all(ip == "127.0.0.1" for _, _, ip, _ in listening), listening
        assert len(tree()) >= 4  # api-server, scheduler, dag-processor, triggerer

        tree()
        # Ctrl-C: the runner gives Airflow 15 s to stop, then SIGTERM, then SIGKILL 5 s later, each by PID,
        # and waits for all of it: when it has exited, nothing it started may be left (no grace here).
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
        took = time.monotonic() - started
        alive = [p for p in seen.values() if _running(p)]
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        print(f"make airflow stopped in {took:.1f} s")
    finally:  # on failure: stop the tree gently, then kill what is left, by PID
        if proc.poll() is None:
            tree()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for p in seen.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass
