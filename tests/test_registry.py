"""The registry and the promotion gate on real trained models, on a local lake and on real S3."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LABELED_DATE, SMALL_DEFAULT, TrainedLake, train_evaluated
from textclf.config import EvaluateConfig, IngestConfig, PromoteConfig, PromotionPolicy, TrainConfig
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.errors import ModelError, ModelIntegrityError
from textclf.evaluate.stage import evaluate
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.layout import MODEL_FILE, version_key
from textclf.model.registry import load_model, read_champion, read_version
from textclf.promote.gate import decide
from textclf.promote.stage import promote

pytestmark = pytest.mark.model

TEXTCLF = str(Path(sys.executable).with_name("textclf"))
REPORT_SECTIONS = ("summary", "per-class", "confusion-matrix", "training-curves", "calibration",
                   "probability-correlation", "probability-map", "projector", "explanations", "label-errors")
FAST = SMALL_DEFAULT.with_overrides(["char_branch=off"])


def train_quickly(uri: str, config: TrainConfig = FAST) -> str:
    """Another evaluated version, without the report's LIME and reference sections (not what these tests read)."""
    return train_evaluated(Lake(uri), config, explain_count=0, linear_reference=False)


def add_labeled(lake_uri: str, tmp: Path, date: str, rows: int, seed: int) -> None:
    source = tmp / f"labeled-{date}-{seed}.csv"
    write_corpus(CorpusSpec(rows=rows, seed=seed, id_prefix=f"d{seed}-"), source)
    ingest(Lake(lake_uri), IngestConfig(kind="labeled", date=date, sources=(str(source),)))


@pytest.fixture
def base_lake(trained_lake: TrainedLake) -> tuple[Path, str]:
    """The session's lake with labeled data and one trained, evaluated version (read only)."""
    return trained_lake.path, trained_lake.version


@pytest.fixture
def lake(trained_lake: TrainedLake, tmp_path: Path) -> tuple[str, str]:
    """A copy of it, for a test that changes it."""
    return trained_lake.copy(tmp_path / "lake"), trained_lake.version


def test_version_holds_model_evaluation_and_lineage(base_lake: tuple[Path, str]) -> None:
    root, version = base_lake
    lake = Lake(str(root))
    manifest = lake.verify(version_key(version))  # every checksum matches
    paths = {f["path"] for f in manifest["files"]}
    for name in (MODEL_FILE, "metrics.json", "report.html", "model_card.md", "config.json", "lineage.json",
                 "training.json", "test_predictions.parquet", "projector/metadata.tsv", "projector/tensors.tsv"):
        assert name in paths, name
    assert any(p.startswith("tensorboard/") for p in paths)
    lineage = lake.read_json(f"{version_key(version)}/lineage.json")
    assert lineage["partitions"][0]["partition"] == f"datasets/labeled/ingest_date={LABELED_DATE}"
    assert sum(lineage["rows_per_class"].values()) == lineage["rows"]
    assert sum(sum(s.values()) for s in lineage["splits"].values()) == lineage["rows"]
    metrics = lake.read_json(f"{version_key(version)}/metrics.json")
    assert metrics["n"] == sum(lineage["splits"]["test"].values())
    assert metrics["accuracy"] > 0.7  # the demo corpus is learnable; 3% label noise caps it below 1
    html = lake.read_bytes(f"{version_key(version)}/report.html").decode()
    for section in REPORT_SECTIONS:
        assert f'id="{section}"' in html, section
    assert "data:image/png;base64," in html
    assert manifest["classes"] == sorted(lineage["rows_per_class"])


def test_versions_are_immutable(base_lake: tuple[Path, str], tmp_path: Path) -> None:
    from textclf.model.registry import write_version

    root, version = base_lake
    with pytest.raises(ModelError, match="immutable"):
        write_version(Lake(str(root)), version, str(tmp_path / "none.keras"), {}, str(tmp_path),
                      classes=["a"], architecture="x")


def test_gate_promotes_refuses_and_forces(lake: tuple[str, str]) -> None:
    uri, first = lake
    decision = promote(Lake(uri), PromoteConfig(model_version=first))
    assert decision.decision == "promoted" and decision.champion == first
    # Thirty words of vocabulary, mostly stop words: a real model, clearly worse than the champion.
    weak = train_quickly(uri, FAST.with_overrides(["max_tokens=30", "ngrams=1", "char_branch=off"], epochs=1,
                                                    model="nb_tfidf"))
    refused = promote(Lake(uri), PromoteConfig(model_version=weak))
    assert refused.decision == "refused" and refused.champion == first
    assert any("macro-F1" in r and "<" in r for r in refused.reasons)
    forced = promote(Lake(uri), PromoteConfig(model_version=weak, force=True))
    assert forced.decision == "forced" and forced.champion == weak
    state = read_champion(Lake(uri))
    assert [h["decision"] for h in state["history"]] == ["promoted", "refused", "forced"]
    assert state["champion"]["forced"] is True
    assert state["history"][1]["champion"]["version"] == first
    assert promote(Lake(uri), PromoteConfig(model_version=weak)).decision == "unchanged"


def test_first_model_must_clear_the_floor(lake: tuple[str, str]) -> None:
    uri, version = lake
    result = promote(Lake(uri), PromoteConfig(model_version=version, policy=PromotionPolicy(min_accuracy=0.999)))
    assert result.decision == "refused" and result.champion is None
    assert "floor 0.9990" in result.reasons[0]


def test_gate_rescores_the_champion_when_the_test_split_grew(lake: tuple[str, str], tmp_path: Path) -> None:
    uri, first = lake
    promote(Lake(uri), PromoteConfig(model_version=first))
    add_labeled(uri, tmp_path, "2026-03-02", 400, seed=2)
    second = train_quickly(uri)
    result = promote(Lake(uri), PromoteConfig(model_version=second))
    record = read_champion(Lake(uri))["history"][-1]
    recorded = Lake(uri).read_json(f"models/{first}/metrics.json")
    assert record["test_split"]["rows"] > recorded["test_split"]["rows"]
    # The champion's numbers in the decision are its scores on the current, larger split, not its old ones.
    from textclf.evaluate.metrics import metrics_on
    from textclf.model.data import load_labeled, make_splits
    from textclf.model.predict import predict_texts

    test = make_splits(load_labeled(Lake(uri)), FAST).test
    champion = load_model(Lake(uri), first)
    expected = metrics_on(lambda texts: predict_texts(champion.model, texts), champion.classes, test)
    assert record["champion"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert record["test_split"]["fingerprint"] == expected["test_split"]["fingerprint"]
    assert list(result.reasons) == record["reasons"]


def test_decide_is_the_contract() -> None:
    policy = PromotionPolicy(tolerance=0.005, min_accuracy=0.8)
    champ = {"accuracy": 0.9, "macro_f1": 0.90}
    assert decide({"accuracy": 0.9, "macro_f1": 0.896}, champ, policy).promoted  # within tolerance
    assert not decide({"accuracy": 0.9, "macro_f1": 0.894}, champ, policy).promoted
    assert not decide({"accuracy": 0.79, "macro_f1": 0.95}, champ, policy).promoted  # below the floor
    assert decide({"accuracy": 0.81, "macro_f1": 0.5}, None, policy).promoted  # first model: floor only
    forced = decide({"accuracy": 0.5, "macro_f1": 0.5}, champ, policy, force=True)
    assert forced.promoted and forced.forced and forced.outcome == "forced"
    assert decide({"accuracy": 0.95, "macro_f1": 0.95}, champ, policy, force=True).outcome == "promoted"


def test_tampered_model_is_refused(lake: tuple[str, str]) -> None:
    uri, version = lake
    path = Path(uri) / "models" / version / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="fails its checksum"):
        load_model(Lake(uri), version)
    with pytest.raises(ModelIntegrityError):
        evaluate(Lake(uri), EvaluateConfig(model_version=version))


def test_model_with_lambda_layer_is_refused_even_with_a_matching_manifest(lake: tuple[str, str],
                                                                          tmp_path: Path) -> None:
    import hashlib

    import keras

    uri, version = lake
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    evil = tmp_path / "evil.keras"
    model.save(evil)
    key = Path(uri) / "models" / version
    shutil.copy(evil, key / MODEL_FILE)
    manifest = json.loads((key / "_MANIFEST.json").read_text())
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    manifest["model_sha256"] = digest
    for entry in manifest["files"]:
        if entry["path"] == MODEL_FILE:
            entry["sha256"] = digest
    (key / "_MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="safe mode"):
        load_model(Lake(uri), version)


def test_evaluate_rewrites_the_evaluation_and_keeps_the_model(lake: tuple[str, str]) -> None:
    uri, version = lake
    before = read_version(Lake(uri), version)
    summary = evaluate(Lake(uri), EvaluateConfig(model_version=version, explain_count=0,
                                                 linear_reference=False)).summary()
    after = Lake(uri).verify(version_key(version))
    assert after["model_sha256"] == before["model_sha256"] and "reevaluated_at" in after
    assert summary["metrics"]["n"] == Lake(uri).read_json(f"models/{version}/metrics.json")["n"]


def test_unknown_version_is_a_clear_error(lake: tuple[str, str]) -> None:
    uri, version = lake
    with pytest.raises(ModelError, match=f"not found.*{version}"):
        promote(Lake(uri), PromoteConfig(model_version="20990101T000000Z-nope-000000"))


@pytest.mark.integration
@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_cli_train_then_promote(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    uri = str(tmp_path / "lake") if where == "local" else request.getfixturevalue("s3_lake")
    add_labeled(uri, tmp_path, "2026-04-01", 1500, seed=5)
    proc = subprocess.run([TEXTCLF, "train", "--lake", uri, "--epochs", "10", "--explain", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    trained = json.loads(proc.stdout.strip().splitlines()[-1])
    assert trained["report"].startswith(uri) and trained["metrics"]["accuracy"] > 0.5
    proc = subprocess.run([TEXTCLF, "promote", "--lake", uri, "--model-version", trained["model_version"]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decision = json.loads(proc.stdout.strip().splitlines()[-1])
    assert decision["decision"] == "promoted" and "promoted:" in proc.stderr
    assert read_champion(Lake(uri))["champion"]["version"] == trained["model_version"]


@pytest.mark.integration
def test_cli_unknown_architecture_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([TEXTCLF, "train", "--lake", str(tmp_path), "--model", "gpt"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "unknown model architecture 'gpt'" in proc.stderr


def test_a_failed_evaluation_keeps_the_trained_version_and_the_gate_waits_for_it(
        lake: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import textclf.evaluate.stage as evaluate_stage
    from textclf.model.train import train

    uri, _ = lake
    version = train(Lake(uri), FAST.with_overrides(epochs=1)).version

    def broken_report(*args: object, **kwargs: object) -> str:
        raise RuntimeError("the report template is broken")

    with monkeypatch.context() as patched:
        patched.setattr(evaluate_stage, "render_report", broken_report)
        with pytest.raises(RuntimeError, match="template is broken"):
            evaluate(Lake(uri), EvaluateConfig(model_version=version, explain_count=0, linear_reference=False))
    assert read_version(Lake(uri), version)["model_sha256"]  # the trained version is registered, whole
    assert not Lake(uri).exists(f"{version_key(version)}/metrics.json")
    with pytest.raises(ModelError, match=f"{version} has not been evaluated.*textclf evaluate --model-version"):
        promote(Lake(uri), PromoteConfig(model_version=version))
    evaluated = evaluate(Lake(uri), EvaluateConfig(model_version=version, explain_count=0,
                                                   linear_reference=False))  # the retry works
    assert evaluated.metrics["n"] > 0
    assert promote(Lake(uri), PromoteConfig(model_version=version)).decision in ("promoted", "refused")
