"""Model selection of the default (pure parts): the anchor rule, deterministic ties, the work budget's cost."""

from __future__ import annotations

import numpy as np
import pytest

from textclf.model.selection import Candidate, FeatureSpec, beats, choose, default_candidates, fit_cost

pytestmark = pytest.mark.unit


def correct(n: int, wrong: list[int]) -> np.ndarray:
    out = np.ones(n, bool)
    out[wrong] = False
    return out


def test_the_anchor_is_the_linear_reference_configuration() -> None:
    anchor = default_candidates()[0]
    assert anchor == Candidate(FeatureSpec("words", 2, False, min_df=2, max_features=500_000), "svm", 0.5)
    names = [c.name for c in default_candidates()]
    assert len(names) == len(set(names))


def test_a_challenger_must_beat_the_anchor_by_one_standard_error() -> None:
    anchor = correct(200, list(range(20)))
    slightly = correct(200, list(range(19)))  # one more right: within noise
    clearly = correct(200, list(range(5)))
    assert not beats(slightly, anchor, 1.0) and beats(clearly, anchor, 1.0)
    assert choose(["anchor", "slightly"], {"anchor": anchor, "slightly": slightly}, 1.0) == "anchor"
    assert choose(["anchor", "slightly", "clearly"],
                  {"anchor": anchor, "slightly": slightly, "clearly": clearly}, 1.0) == "clearly"
    assert not beats(anchor, anchor, 0.0)  # identical evidence never replaces the anchor


def test_ties_keep_the_earlier_candidate() -> None:
    anchor = correct(300, list(range(60)))
    better = correct(300, list(range(10)))
    evidence = {"a": anchor, "b": better, "c": better.copy(), "d": better.copy()}
    for _ in range(3):
        assert choose(["a", "b", "c", "d"], evidence, 1.0) == "b"
        assert choose(["a", "d", "c", "b"], evidence, 1.0) == "d"


def test_skipped_candidates_are_never_chosen() -> None:
    anchor = correct(100, list(range(30)))
    assert choose(["a", "skipped"], {"a": anchor}, 1.0) == "a"
    assert choose(["a", "empty"], {"a": anchor, "empty": np.zeros(0, bool)}, 1.0) == "a"


def test_work_estimate_depends_on_the_data_only() -> None:
    svm = Candidate(FeatureSpec(), "svm", 0.5)
    nb = Candidate(FeatureSpec(), "nbsvm", 0.5)
    assert fit_cost(svm, 1000, 2, 0) == 1000.0  # binary: one problem, one fit
    assert fit_cost(svm, 1000, 20, 0) == 20 * 1000.0
    assert fit_cost(svm, 1000, 20, 5) == pytest.approx(20 * 1000.0 * 5.0)  # + 5 folds at 0.8 each
    assert fit_cost(nb, 1000, 2, 0) == pytest.approx(1800.0)


def test_default_budget_scales_with_the_training_split() -> None:
    from textclf.model.selection import SelectionSettings, auto_budget_s

    assert auto_budget_s(100) == 150.0 and auto_budget_s(10_160) == pytest.approx(203.2)
    assert auto_budget_s(22_499) == pytest.approx(449.98) and auto_budget_s(10**6) == 540.0
    assert SelectionSettings().resolved(10_000).budget_s == 200.0
    assert SelectionSettings(budget_s=30.0).resolved(10_000).budget_s == 30.0


def test_small_models_keep_float32_tables_and_large_ones_float16() -> None:
    from textclf.model.selection import FLOAT32_TABLES_MAX_MB, Vocab, model_bytes, table_dtype

    k = 20
    limit = FLOAT32_TABLES_MAX_MB * 2**20 // (4 * k)  # word rows whose float32 table is exactly the limit

    def vocab(rows: int) -> Vocab:
        return Vocab(FeatureSpec(), 1000, np.zeros(rows, np.int64), np.ones(rows, np.float32))

    assert table_dtype(vocab(limit), k) == "float32" and table_dtype(vocab(limit + 1), k) == "float16"
    # The size the max_model_mb check reads follows the dtype: float16 rows take half the table bytes.
    assert model_bytes(vocab(limit), k) == limit * (12 + 4 * k)
    assert model_bytes(vocab(limit + 1), k) == (limit + 1) * (12 + 2 * k)
