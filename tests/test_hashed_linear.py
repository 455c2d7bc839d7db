"""The default model (hashed_linear): its layer round-trips in safe mode, selection within a budget registers its
winner, and on the demo corpus it is not below its own linear reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_models import separable_corpus
from textclf.config import IngestConfig, TrainConfig
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.layout import version_key
from textclf.model.architectures import DEFAULT_ARCHITECTURE
from textclf.model.data import load_labeled, make_splits
from textclf.model.predict import model_vocabulary, predict_texts
from textclf.model.selection import Candidate, FeatureSpec, SelectionSettings, default_candidates, select

pytestmark = pytest.mark.model

PROBE = ["the goal of the match", "", "Shares of the bank FELL, sharply!", "zzzz qqqq unseen-words-only",
         "héllo wörld ünïcode ☃ 東京", "<b>markup</b> & stuff " * 200]
SMALL_SET = [Candidate(FeatureSpec("words", 2, False), "svm", 0.5),
             Candidate(FeatureSpec("punct", 3, True, min_df=1), "nbsvm", 0.3),
             Candidate(FeatureSpec("words", 2, True), "svm", 1.0)]


@pytest.fixture(scope="module")
def corpus() -> tuple:
    splits = make_splits(separable_corpus(600, seed=3), TrainConfig())
    return splits


@pytest.mark.parametrize("index", [0, 1, 2])
def test_layer_saves_and_reloads_in_safe_mode_with_identical_predictions(corpus: object, index: int,
                                                                         tmp_path: Path) -> None:
    import keras

    splits = corpus
    chosen = select(splits.train.texts, splits.train.labels, splits.validation.texts, splits.validation.labels,
                    splits.classes, SelectionSettings(cv_below=0), candidates=[SMALL_SET[index]])
    model = chosen.model
    before = predict_texts(model, PROBE + splits.test.texts.tolist())
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
    assert chosen.info["max_logit_diff"] < 1e-2 * max(1.0, 1.0 / chosen.temperature)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    after = predict_texts(reloaded, PROBE + splits.test.texts.tolist())
    np.testing.assert_array_equal(after, before)
    # The drift signal's vocabulary (training words) travels in the file too.
    assert "goal" in model_vocabulary(model) and model_vocabulary(reloaded) == model_vocabulary(model)
    # Batch composition does not change a document's probabilities (chunked scoring pads with empty texts).
    one_by_one = np.vstack([predict_texts(reloaded, [t]) for t in PROBE])
    np.testing.assert_allclose(one_by_one, before[:len(PROBE)], atol=1e-6)


def test_budget_cuts_candidates_after_the_anchor(corpus: object) -> None:
    splits = corpus
    args = (splits.train.texts, splits.train.labels, splits.validation.texts, splits.validation.labels,
            splits.classes)
    tiny = select(*args, SelectionSettings(budget_s=1e-9, cv_below=0), candidates=SMALL_SET)
    assert [c.skipped for c in tiny.candidates] == [None, "work budget", "work budget"]
    assert tiny.chosen == SMALL_SET[0].name and tiny.candidates[0].selected
    assert tiny.info["work_units"] == tiny.candidates[0].work_units  # only the anchor's work was spent
    roomy = select(*args, SelectionSettings(cv_below=0), candidates=SMALL_SET)
    assert [c.skipped for c in roomy.candidates] == [None, None, None]
    assert roomy.info["work_units"] <= roomy.info["budget_units"]
    # Deterministic: the same data choose the same candidate and the same scores.
    again = select(*args, SelectionSettings(cv_below=0), candidates=SMALL_SET)
    assert again.chosen == roomy.chosen
    assert [c.validation_accuracy for c in again.candidates] == [c.validation_accuracy for c in roomy.candidates]


def test_time_budget_skips_candidates_that_would_end_late(corpus: object) -> None:
    import itertools

    splits = corpus
    ticks = itertools.count(0.0, 1000.0)  # a machine so slow that every step takes 1,000 s
    slow = select(splits.train.texts, splits.train.labels, splits.validation.texts, splits.validation.labels,
                  splits.classes, SelectionSettings(budget_s=60.0, cv_below=0), candidates=SMALL_SET,
                  clock=lambda: next(ticks))
    assert [c.skipped for c in slow.candidates] == [None, "time budget", "time budget"]
    assert slow.chosen == SMALL_SET[0].name  # the anchor always runs: there is always a model


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    tmp = tmp_path_factory.mktemp("hashed")
    source = tmp / "labeled.csv"
    write_corpus(CorpusSpec(rows=1500, seed=4), source)
    lake = Lake(str(tmp / "lake"))
    ingest(lake, IngestConfig(kind="labeled", date="2026-04-01", sources=(str(source),)))
    return lake


@pytest.fixture(scope="module")
def default_version(demo_lake: Lake) -> str:
    """``textclf train`` with no options on the demo lake: the full selection, once for the tests below."""
    from textclf.model.train import train

    return train(demo_lake, TrainConfig()).version


def test_validation_winner_is_the_registered_model(demo_lake: Lake, default_version: str) -> None:
    from textclf.model.registry import load_model

    assert TrainConfig().model == DEFAULT_ARCHITECTURE == "hashed_linear"
    training = demo_lake.read_json(f"{version_key(default_version)}/training.json")
    candidates = training["candidates"]
    assert [c["name"] for c in candidates] == [c.name for c in default_candidates()]
    selected = [c for c in candidates if c["selected"]]
    assert len(selected) == 1 and selected[0]["name"] == training["selection"]["chosen"]
    assert all(c["validation_accuracy"] is not None for c in candidates if not c["skipped"])
    assert training["model_bytes"] > 0
    # The registered file is the winner: its layer config matches the chosen candidate's features.
    params = selected[0]["params"]
    model = load_model(demo_lake, default_version).model
    layer = model.get_layer("hashed_linear")
    assert (layer.tokenizer, f"1-{layer.ngram_max}", layer.subwords) == (params["tokenizer"], params["ngrams"],
                                                                         params["subwords"])
    assert layer.table_dtype == "float32"  # a small model keeps its solver's weights exact
    # The recorded evidence is the registered model's: its validation accuracy, recomputed from the file.
    splits = make_splits(load_labeled(demo_lake), TrainConfig())
    probs = predict_texts(model, splits.validation.texts)
    accuracy = float((np.array(splits.classes)[probs.argmax(axis=1)] == splits.validation.labels).mean())
    assert accuracy == pytest.approx(selected[0]["validation_accuracy"], abs=1.5 / len(splits.validation.labels))


def test_default_is_not_below_its_own_linear_reference_on_the_demo_corpus(demo_lake: Lake,
                                                                          default_version: str) -> None:
    from textclf.evaluate.reference import linear_reference
    from textclf.model.registry import load_model

    splits = make_splits(load_labeled(demo_lake), TrainConfig())
    probs = predict_texts(load_model(demo_lake, default_version).model, splits.test.texts)
    accuracy = float((np.array(splits.classes)[probs.argmax(axis=1)] == splits.test.labels).mean())
    reference = linear_reference(splits)
    assert accuracy >= reference["accuracy"] - 1e-9, (accuracy, reference)


HASH_SCRIPT = """
import json, sys
import tensorflow as tf
from textclf.model.hashed import ngram_keys, subword_keys, token_hashes, tokenize
texts = tf.constant(json.loads(sys.argv[1]))
tokens, rows = tokenize(texts, "punct")
h = token_hashes(tokens)
keys, _ = ngram_keys(h, rows, 3)
sub, _ = subword_keys(tokens, 3, 5)
print(json.dumps([keys.numpy().tolist(), sub.numpy().tolist()]))
"""


@pytest.mark.integration
def test_hashing_is_stable_across_processes() -> None:
    import tensorflow as tf

    from textclf.model.hashed import ngram_keys, subword_keys, token_hashes, tokenize

    texts = PROBE[:5]
    tokens, rows = tokenize(tf.constant(texts), "punct")
    h = token_hashes(tokens)
    here = [ngram_keys(h, rows, 3)[0].numpy().tolist(), subword_keys(tokens, 3, 5)[0].numpy().tolist()]
    # A fresh interpreter with another hash seed: FarmHash, not Python's salted hash().
    env_seed = {"PYTHONHASHSEED": "12345", "TF_CPP_MIN_LOG_LEVEL": "3"}
    import os

    out = subprocess.run([sys.executable, "-c", HASH_SCRIPT, json.dumps(texts)], capture_output=True, text=True,
                         check=True, env={**os.environ, **env_seed}, timeout=300)
    there = json.loads(out.stdout.strip().splitlines()[-1])
    assert there == here and len(here[0]) > 10 and len(here[1]) > 10


def test_training_again_in_one_process_logs_no_retracing_warning(corpus: object,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A worker trains many times: each run's extractors are new tf.functions of the same code, which TF's
    frequent-tracing detector reports as retracing. Each is traced once; the log must not say otherwise."""
    import logging

    splits = corpus
    args = (splits.train.texts, splits.train.labels, splits.validation.texts, splits.validation.labels,
            splits.classes, SelectionSettings(cv_below=0))
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for _ in range(3):
            select(*args, candidates=SMALL_SET)
    assert not [r.getMessage()[:80] for r in caplog.records if "retracing" in r.getMessage()]
    assert logging.getLogger("tensorflow").filters == []  # the filter that drops it was scoped to each call
