"""The model registry: immutable versions under ``models/VERSION/`` and ``models/champion.json``.

A version is a lake partition: ``model.keras``, its config, lineage, training record,
evaluation (``metrics.json``, ``report.html``, projector export) and model card, with a
``_MANIFEST.json`` of sha256 checksums written last. Loading verifies the model file against
that manifest before Keras sees it, and Keras loads it with ``safe_mode=True``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf.common import first_line
from textclf.errors import ModelError, ModelIntegrityError
from textclf.lake import Lake
from textclf.lake.layout import CHAMPION, MANIFEST, MODEL_FILE, MODELS, VERSION_RE, version_key

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


# Files of a version that an evaluation may replace; everything else is fixed at training time.
EVALUATION_FILES = ("metrics.json", "report.html", "test_predictions.parquet", "model_card.md")

EVALUATION_DIRS = ("projector/",)


def new_version(architecture: str) -> str:
    """A new version id that sorts by creation time: ``20261121T101500Z-nb_tfidf-1a2b3c``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{architecture}-{uuid.uuid4().hex[:6]}"


def list_versions(lake: Lake) -> list[str]:
    """Committed versions, oldest first."""
    return [name for name in lake.list_children(MODELS)
            if VERSION_RE.match(name) and lake.exists(f"{MODELS}/{name}/{MANIFEST}")]


def read_version(lake: Lake, version: str) -> dict[str, Any]:
    """A version's manifest; a clear error when the version does not exist."""
    manifest = lake.read_manifest(version_key(version))
    if manifest is None:
        known = list_versions(lake)
        hint = f"; known versions: {', '.join(known[-5:])}" if known else "; no model has been trained yet"
        raise ModelError(f"model version {version} not found in {lake.uri_of(MODELS)}{hint}")
    return manifest


def write_version(lake: Lake, version: str, model_path: str, files: Mapping[str, bytes], tensorboard_dir: str,
                  *, classes: Sequence[str], architecture: str) -> str:
    """Register a new version; versions are immutable, so an existing one is refused."""
    key = version_key(version)
    if lake.exists(key):
        raise ModelError(f"model version {version} already exists; versions are immutable")
    with lake.partition(key) as part, open(model_path, "rb") as fh:
        model_entry = part.add_bytes(MODEL_FILE, fh.read())
        for name, data in sorted(files.items()):
            part.add_bytes(name, data)
        if os.path.isdir(tensorboard_dir):
            part.add_local_dir("tensorboard", tensorboard_dir)
        part.commit({"kind": "model", "model_version": version, "architecture": architecture,
                     "classes": list(classes), "model_sha256": model_entry.sha256})
    log.info("registered model version %s", lake.uri_of(key))
    return lake.uri_of(key)


def rewrite_evaluation(lake: Lake, version: str, evaluation: Mapping[str, bytes]) -> str:
    """Replace a version's evaluation files; the model and training record are copied byte for byte."""
    key = version_key(version)
    manifest = read_version(lake, version)
    fields = {k: v for k, v in manifest.items() if k not in ("files", "manifest_version", "partition", "created_at")}
    with lake.partition(key) as part:
        for entry in manifest["files"]:
            path = entry["path"]
            if path in evaluation or path in EVALUATION_FILES or path.startswith(EVALUATION_DIRS):
                continue
            data = lake.read_bytes(f"{key}/{path}")
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ModelIntegrityError(f"{lake.uri_of(f'{key}/{path}')} does not match its manifest checksum")
            part.add_bytes(path, data)
        for name, data in sorted(evaluation.items()):
            part.add_bytes(name, data)
        part.commit({**fields, "reevaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    return lake.uri_of(key)


@dataclass
class LoadedModel:
    version: str
    key: str
    model: keras.Model
    classes: tuple[str, ...]
    config: dict[str, Any]
    manifest: dict[str, Any]


def load_model(lake: Lake, version: str) -> LoadedModel:
    """Load a registered model: checksum first, then Keras with ``safe_mode=True``, then shape checks."""
    import keras

    import textclf.model.hashed  # noqa: F401 - registers the default model's layer
    import textclf.model.layers  # noqa: F401 - registers the project's own layers; nothing else may deserialize

    key = version_key(version)
    manifest = read_version(lake, version)
    entry = next((f for f in manifest.get("files", []) if f["path"] == MODEL_FILE), None)
    if entry is None:
        raise ModelIntegrityError(f"{lake.uri_of(key)} has no {MODEL_FILE} in its manifest")
    data = lake.read_bytes(f"{key}/{MODEL_FILE}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"] or digest != manifest.get("model_sha256", digest):
        raise ModelIntegrityError(f"{lake.uri_of(f'{key}/{MODEL_FILE}')} fails its checksum "
                                  f"(manifest {entry['sha256'][:12]}..., file {digest[:12]}...): refusing to load")
    classes = tuple(manifest.get("classes") or ())
    with tempfile.TemporaryDirectory(prefix="textclf-model-") as tmp:
        path = os.path.join(tmp, MODEL_FILE)
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for foreign or unsafe archives
            raise ModelIntegrityError(f"{lake.uri_of(f'{key}/{MODEL_FILE}')} is not a loadable textclf model "
                                      f"(safe mode): {first_line(exc)[:300]}") from exc
    inputs = model.inputs
    if len(inputs) != 1 or inputs[0].dtype != "string" or model.output_shape[-1] != len(classes):
        raise ModelIntegrityError(f"{lake.uri_of(key)}: the model does not take raw strings and return "
                                  f"{len(classes)} class probabilities")
    config = lake.read_json(f"{key}/config.json")
    return LoadedModel(version, key, model, classes, config, manifest)


def read_champion_tagged(lake: Lake) -> tuple[dict[str, Any], str | None]:
    """``champion.json`` and its tag (None when there is none yet), for a conditional ``write_champion``."""
    data, tag = lake.read_tagged(CHAMPION)
    if data is None:
        return {"schema_version": 1, "champion": None, "history": []}, None
    try:
        state = json.loads(data)
    except ValueError as exc:
        raise ModelError(f"{lake.uri_of(CHAMPION)} is not valid JSON: {exc}") from exc
    return state, tag


def read_champion(lake: Lake) -> dict[str, Any]:
    """``champion.json``: the serving version (or None) and the history of gate decisions."""
    return read_champion_tagged(lake)[0]


def write_champion(lake: Lake, state: dict[str, Any], tag: str | None) -> bool:
    """Replace ``champion.json`` only if it is still the one read with ``tag`` (None: only if there is none).

    A conditional write (``If-Match`` / ``If-None-Match: *`` on S3, a compare and atomic rename on a disk):
    False when another promotion wrote it meanwhile; nothing was written, so read it again and decide again.
    """
    return lake.write_if(CHAMPION, json.dumps(state, indent=2).encode(), tag) is not None


def champion_version(lake: Lake) -> str:
    """The version that serves; a clear error before the first promotion."""
    champion = read_champion(lake).get("champion")
    if not champion:
        raise ModelError(f"no champion model in {lake.uri_of(CHAMPION)}: train and promote a model first")
    return champion["version"]


def model_card(version: str, config: Mapping[str, Any], lineage: Mapping[str, Any], metrics: Mapping[str, Any],
               training: Mapping[str, Any]) -> str:
    """A short Markdown model card: what the model is, what it was trained on, how well it does."""
    from textclf.report.render import render
    from textclf.textstats import MIN_RELIABLE_ROWS

    n = metrics.get("n")
    return render(
        "model_card.md", version=version, architecture=config.get("model"), per_class=metrics.get("per_class", {}),
        trained_at=training.get("trained_at"), seconds=training.get("seconds"),
        gpus=training.get("devices", {}).get("gpus", 0), rows=lineage.get("rows"),
        partitions=lineage.get("partitions", []),
        split_sizes=", ".join(f"{name} {sum(counts.values())}" for name, counts in lineage.get("splits", {}).items()),
        n=n, small_sample=n is not None and n < MIN_RELIABLE_ROWS, min_rows=MIN_RELIABLE_ROWS,
        accuracy=metrics.get("accuracy", 0), macro_f1=metrics.get("macro_f1", 0),
        ece=metrics.get("expected_calibration_error", 0))
