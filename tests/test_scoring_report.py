"""Scoring report: PSI, drift signals, the JSON report and the HTML page."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from typing import Any

import pytest

from textclf.score.drift import DriftThresholds, ScoringReportInput, drift_signals, psi
from textclf.score.report import SECTION_IDS, build_scoring_report

pytestmark = pytest.mark.unit

CLASSES = ("sports", "politics", "tech")
TRAINING_CLASSES = {"sports": 500, "politics": 300, "tech": 200}
TRAINING_LENGTHS = {"0-100": 600, "100-300": 300, "300-500": 80, "500-800": 15, ">800": 5}
XSS = "<script>alert(1)</script>"


def batches(n: int, oov: float, confidence: float) -> list[dict[str, Any]]:
    """``n`` per-batch signal rows with the given out-of-vocabulary share and mean confidence."""
    return [{"batch": i, "rows": 100, "oov_rate": oov, "mean_words": 120.5, "max_words": 900,
             "mean_confidence": confidence, "low_confidence_share": 0.05} for i in range(n)]


def steady(**changes: Any) -> ScoringReportInput:
    """A run that looks like training: same class mix and lengths, similar OOV, confident predictions."""
    fields: dict[str, Any] = dict(
        run_date="2024-05-02", model_version="v20240501-abc", classes=CLASSES,
        counts={"input_rows": 1010, "rows": 1000, "quarantined_rows": 10, "duplicates_removed": 3},
        predicted_counts={"sports": 250, "politics": 150, "tech": 100}, training_class_counts=dict(TRAINING_CLASSES),
        confidence_hist=[0] * 8 + [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 445],
        length_bins={"0-100": 300, "100-300": 150, "300-500": 40, "500-800": 8, ">800": 2},
        training_length_bins=dict(TRAINING_LENGTHS), oov_rate=0.03, training_oov_rate=0.025,
        batch_signals=batches(10, 0.03, 0.9), predictions_uri="s3://lake/predictions/run_date=2024-05-02",
        validation_docs_uri="s3://lake/validation/unlabeled/run_date=2024-05-02/data_docs/index.html",
        model_report_uri="s3://lake/models/v20240501-abc/report.html",
    )
    fields.update(changes)
    return ScoringReportInput(**fields)


def shifted(**changes: Any) -> ScoringReportInput:
    """A run that drifted: tech dominates, texts are longer, more unknown words, many unsure predictions."""
    fields: dict[str, Any] = dict(
        predicted_counts={"sports": 100, "politics": 100, "tech": 800},
        length_bins={"0-100": 100, "100-300": 200, "300-500": 300, "500-800": 250, ">800": 150},
        oov_rate=0.15, training_oov_rate=0.03,
        confidence_hist=[0, 0, 0, 0, 10, 30, 60, 80, 100, 120, 100, 100, 80, 60, 60, 50, 50, 40, 30, 30],
    )
    fields.update(changes)
    return steady(**fields)


def by_name(signals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in signals}


# -- psi -----------------------------------------------------------------------------------------------------------


def test_psi_is_zero_for_identical_distributions_whatever_their_scale() -> None:
    assert psi({"a": 5, "b": 3, "c": 2}, {"a": 5, "b": 3, "c": 2}) == pytest.approx(0.0)
    assert psi({"a": 5, "b": 3, "c": 2}, {"a": 50, "b": 30, "c": 20}) == pytest.approx(0.0, abs=1e-12)


def test_psi_matches_a_hand_computed_value_and_is_symmetric_without_flooring() -> None:
    # (0.6 - 0.5) ln(0.6 / 0.5) + (0.4 - 0.5) ln(0.4 / 0.5) = 0.018232 + 0.022314
    expected = 0.1 * math.log(1.2) + 0.1 * math.log(1.25)
    assert psi({"a": 50, "b": 50}, {"a": 60, "b": 40}) == pytest.approx(expected)
    assert psi({"a": 60, "b": 40}, {"a": 50, "b": 50}) == pytest.approx(expected)
    assert expected == pytest.approx(0.040546, abs=1e-6)


def test_psi_floors_missing_keys_and_returns_zero_for_empty_inputs() -> None:
    value = psi({"a": 1, "b": 1}, {"a": 1})  # b missing on one side: its share floored at eps, still finite
    assert math.isfinite(value)
    assert value == pytest.approx((1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))
    assert psi({}, {}) == 0.0
    assert psi({"a": 3}, {}) == 0.0
    assert psi({"a": 0, "b": 0}, {"a": 1}) == 0.0
    with pytest.raises(ValueError, match="finite and >= 0"):
        psi({"a": -1}, {"a": 1})


# -- signals -------------------------------------------------------------------------------------------------------


def test_steady_run_has_only_ok_signals() -> None:
    signals = drift_signals(steady())

    assert [s["name"] for s in signals] == ["predicted_class_mix_psi", "length_psi", "oov_rate",
                                            "low_confidence_share"]
    assert {s["status"] for s in signals} == {"ok"}
    assert all(s["reliable"] and not s["skipped"] for s in signals)
    assert by_name(signals)["predicted_class_mix_psi"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert by_name(signals)["oov_rate"]["baseline"] == 0.025


def test_shifted_run_raises_alerts_and_warnings_naming_the_numbers() -> None:
    inp = shifted()
    signals = by_name(drift_signals(inp))

    mix = signals["predicted_class_mix_psi"]
    mix_psi = psi(TRAINING_CLASSES, inp.predicted_counts)
    assert mix["status"] == "alert" and mix["value"] == pytest.approx(mix_psi)
    assert f"PSI {mix_psi:.2f} > 0.25" in mix["message"]
    assert "largest change: class tech, 20.0% of training vs 80.0% of this run" in mix["message"]
    assert mix["threshold"] == {"warning": 0.10, "alert": 0.25}
    length = signals["length_psi"]
    assert length["status"] == "alert" and f"PSI {length['value']:.2f} > 0.25" in length["message"]
    oov = signals["oov_rate"]
    assert oov["status"] == "warning" and oov["value"] == 0.15 and oov["baseline"] == 0.03
    assert "3.0%" in oov["message"] and "15.0%" in oov["message"] and "+12.0 points > 5.0" in oov["message"]
    low = signals["low_confidence_share"]
    assert low["status"] == "warning" and low["value"] == pytest.approx(0.4)  # bins below 0.5: 400 of 1,000
    assert "is 40.0% (> 20.0%)" in low["message"]


def test_moderate_psi_is_a_warning() -> None:
    # 0.5/0.3/0.2 -> 0.4/0.3/0.3: PSI about 0.063 is ok; -> 0.35/0.3/0.35 about 0.137 is a warning
    signals = by_name(drift_signals(steady(predicted_counts={"sports": 350, "politics": 300, "tech": 350})))
    assert 0.10 < signals["predicted_class_mix_psi"]["value"] < 0.25
    assert signals["predicted_class_mix_psi"]["status"] == "warning"


def test_few_rows_cap_every_status_at_warning_and_say_why() -> None:
    inp = shifted(counts={"input_rows": 40, "rows": 40, "quarantined_rows": 0, "duplicates_removed": 0})
    signals = drift_signals(inp)

    assert {s["status"] for s in signals} == {"warning"}  # the two alerts are capped
    assert all("Only 40 rows were scored (fewer than 100)" in s["message"] for s in signals)
    assert not any(s["reliable"] for s in signals)
    assert "shown as a warning, not an alert" in by_name(signals)["predicted_class_mix_psi"]["message"]
    report, page = build_scoring_report(inp)
    assert report["reliable"] is False and "unreliable" in page
    assert page.count('<div class="box alert">') == 0


def test_missing_training_baselines_skip_their_signals_with_a_note() -> None:
    signals = by_name(drift_signals(shifted(training_length_bins=None, training_oov_rate=None)))

    length = signals["length_psi"]
    assert length["skipped"] and length["status"] == "ok" and length["value"] is None
    assert "no training length bins" in length["message"]
    oov = signals["oov_rate"]
    assert oov["skipped"] and oov["status"] == "ok" and oov["value"] == 0.15 and oov["baseline"] is None
    assert signals["predicted_class_mix_psi"]["status"] == "alert"


def test_custom_thresholds_apply_and_bad_ones_are_refused() -> None:
    lax = DriftThresholds(psi_warning=5.0, psi_alert=10.0, oov_increase=0.5, low_confidence_share=0.9)
    assert {s["status"] for s in drift_signals(shifted(thresholds=lax))} == {"ok"}
    with pytest.raises(ValueError, match="psi_warning"):
        DriftThresholds(psi_warning=0.3, psi_alert=0.2)


# -- report --------------------------------------------------------------------------------------------------------


def test_steady_report_says_there_are_no_warnings() -> None:
    report, page = build_scoring_report(steady())

    assert report["warnings"] == []
    assert "No drift warnings" in page
    assert '<div class="box warning">' not in page and '<div class="box alert">' not in page
    assert report["counts_consistent"] is True and "Every input row is accounted for" in page


def test_shifted_report_shows_a_box_per_warning() -> None:
    report, page = build_scoring_report(shifted())

    statuses = [w["status"] for w in report["warnings"]]
    assert sorted(statuses) == ["alert", "alert", "warning", "warning"]
    assert page.count('<div class="box alert">') == 2 and page.count('<div class="box warning">') == 2
    assert "No drift warnings" not in page
    for w in report["warnings"]:
        assert html.escape(w["message"]) in page


def test_report_dict_has_the_promised_fields_and_round_trips_through_json() -> None:
    report, _ = build_scoring_report(shifted(batch_signals=batches(3, float("nan"), 0.7)))

    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["predicted_shares"] == {"sports": 0.1, "politics": 0.1, "tech": 0.8}
    assert report["training_shares"] == {"sports": 0.5, "politics": 0.3, "tech": 0.2}
    assert report["low_confidence_share"] == pytest.approx(0.4)
    assert 0.5 < report["mean_confidence_estimate"] < 0.7
    assert report["links"]["predictions"].startswith("s3://")
    assert report["thresholds"]["min_rows"] == 100
    assert report["batch_signals"][0]["oov_rate"] is None  # NaN becomes null
    assert [s["name"] for s in report["signals"]] == ["predicted_class_mix_psi", "length_psi", "oov_rate",
                                                      "low_confidence_share"]


def test_page_has_every_section_in_order_inline_images_and_no_scripts() -> None:
    _, page = build_scoring_report(shifted())

    positions = [page.index(f'<section id="{sid}">') for sid in SECTION_IDS]
    assert positions == sorted(positions)
    assert SECTION_IDS == ("summary", "warnings", "class-mix", "confidence", "drift", "batches", "about")
    assert page.count("data:image/png;base64,") == 4  # class mix, confidence, lengths, batches
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""src=["']?(https?:)?//""", page)


def test_hostile_names_and_uris_appear_only_escaped() -> None:
    inp = shifted(classes=(*CLASSES, XSS), predicted_counts={"sports": 100, "politics": 100, "tech": 300, XSS: 500},
                  model_version=f"v1{XSS}", predictions_uri='s3://lake/p"><script>alert(1)</script>',
                  validation_docs_uri="javascript:alert(1)", batch_signals=[{"batch": XSS, "rows": 1}])
    report, page = build_scoring_report(inp)

    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="s3://lake/p&#34;&gt;&lt;script&gt;' in page  # the quote cannot close the attribute
    assert 'href="javascript:' not in page and "<code>javascript:alert(1)</code>" in page
    assert XSS in report["predicted_counts"] and XSS in json.dumps(report)  # the JSON keeps the raw name


def test_old_model_without_training_length_bins_still_renders() -> None:
    report, page = build_scoring_report(steady(training_length_bins=None, training_oov_rate=None))

    assert report["training_length_bins"] is None
    assert "records no training length bins" in page
    assert page.count("data:image/png;base64,") == 4


def test_count_mismatch_is_shown_plainly() -> None:
    report, page = build_scoring_report(steady(counts={"input_rows": 1000, "rows": 900, "quarantined_rows": 50}))

    assert report["counts_consistent"] is False
    assert "50 rows are unaccounted for" in page


def test_long_runs_show_both_ends_of_the_batch_table() -> None:
    _, page = build_scoring_report(steady(batch_signals=batches(250, 0.03, 0.9)))

    batches_html = page[page.index('<section id="batches">'):page.index('<section id="about">')]
    assert batches_html.count("<tr>") == 1 + 100 + 1 + 100  # header, first 100, the gap row, last 100
    assert "50 batches not shown" in batches_html
    # Batches are shown numbered from 1: the first 100 are 1-100 and the last 100 are 151-250.
    assert "<td>100</td>" in batches_html and "<td>151</td>" in batches_html
    assert "<td>101</td>" not in batches_html and "<td>150</td>" not in batches_html


def test_empty_run_renders_without_crashing() -> None:
    inp = steady(counts={"input_rows": 0, "rows": 0, "quarantined_rows": 0}, predicted_counts={},
                 confidence_hist=[0] * 20, length_bins={}, oov_rate=None, batch_signals=[])
    report, page = build_scoring_report(inp)

    assert all(s["skipped"] and s["status"] == "ok" for s in report["signals"])
    assert "No drift warnings" in page and "No batch signals recorded" in page
    json.dumps(report, allow_nan=False)


def test_input_is_a_frozen_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        steady().run_date = "x"  # type: ignore[misc]


def test_batches_are_numbered_from_one_in_the_table_and_the_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    import textclf.report.figures as figures

    drawn: list = []
    real = figures.png_uri
    monkeypatch.setattr(figures, "png_uri", lambda fig: (drawn.append(fig), real(fig))[1])

    report, page = build_scoring_report(steady(batch_signals=batches(3, 0.03, 0.9)))

    assert [b["batch"] for b in report["batch_signals"]] == [0, 1, 2]  # the JSON keeps its 0-based field
    table = page[page.index('<section id="batches">'):page.index('<section id="about">')]
    assert re.findall(r"<tr><td>(\d+)</td>", table) == ["1", "2", "3"]
    figure = next(f for f in drawn if f.axes[0].get_title() == "Per-batch signals")
    plotted = [line for line in figure.axes[0].lines if line.get_label() in ("out-of-vocabulary share",
                                                                              "mean confidence")]
    assert len(plotted) == 2 and all(list(line.get_xdata()) == [1, 2, 3] for line in plotted)
