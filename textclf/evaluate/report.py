"""The model report: one self-contained HTML page of a version's evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textclf.evaluate.explain import WORD_RE
from textclf.evaluate.label_errors import CONFIDENTLY_WRONG
from textclf.evaluate.maps import (
    PROJECTOR_CONFIG,
    PROJECTOR_DIR,
    PROJECTOR_METADATA,
    PROJECTOR_TENSORS,
    probability_correlation,
)
from textclf.evaluate.predictions import EvaluationInput
from textclf.report.figures import curves_figure, map_figure, matrix_figure, method_name, reliability_figure
from textclf.report.html import _e, _img, _num, _table_html, _value_html, render_page
from textclf.textstats import LOW_CONFIDENCE

SECTION_IDS = ("summary", "per-class", "confusion-matrix", "training-curves", "calibration",
               "probability-correlation", "probability-map", "projector", "explanations", "label-errors")


def _highlighted_text(text: str, words: Sequence[Mapping[str, Any]]) -> str:
    """The escaped text with each explained word in a <mark>, green if it supports the prediction, red if not."""
    weight_of = {str(w["word"]).casefold(): float(w["weight"]) for w in words}
    top = max((abs(w) for w in weight_of.values()), default=0.0) or 1.0
    out, end = [], 0
    for m in WORD_RE.finditer(text):
        out.append(_e(text[end: m.start()]))
        weight = weight_of.get(m.group().casefold())
        if weight is None:
            out.append(_e(m.group()))
        else:
            alpha = 0.1 + 0.75 * abs(weight) / top
            rgb = "0,160,60" if weight > 0 else "220,40,40"
            out.append(f'<mark style="background:rgba({rgb},{alpha:.2f})" title="{weight:+.4f}">{_e(m.group())}</mark>')
        end = m.end()
    out.append(_e(text[end:]))
    return "".join(out)


def _summary_body(inp: EvaluationInput, metrics: Mapping[str, Any]) -> str:
    """Headline numbers, lineage and training config."""
    headline = [
        ("model version", _e(inp.version)), ("architecture", _e(inp.architecture)),
        ("classes", _e(", ".join(inp.classes))), ("test rows", _num(metrics.get("n"))),
        ("accuracy", _num(metrics.get("accuracy"))), ("macro-F1", _num(metrics.get("macro_f1"))),
        ("weighted-F1", _num(metrics.get("weighted_f1"))),
        ("expected calibration error", _num(metrics.get("expected_calibration_error"))),
        ("log loss", _num(metrics.get("log_loss"))),
        (f"share with confidence &lt; {LOW_CONFIDENCE}", _num(metrics.get("low_confidence_share"))),
        ("rows with labels unknown to the model", _num(metrics.get("unknown_label_count"))),
    ]
    unknown = metrics.get("unknown_labels") or {}
    note = (f'<p class="warn">{len(unknown)} label(s) of the test split are not classes of this model and count '
            f"as errors: {_e(', '.join(f'{k} ({v})' for k, v in unknown.items()))}</p>" if unknown else "")
    lineage = _value_html(inp.lineage) if inp.lineage else "<p>No lineage recorded.</p>"
    config = _value_html(inp.config) if inp.config else "<p>No training config recorded.</p>"
    return (_table_html(["", "value"], [[name, value] for name, value in headline], numeric=(1,)) + note
            + "\n<h3>Training data lineage</h3>\n" + lineage + "\n<h3>Training config</h3>\n" + config)


def _per_class_body(metrics: Mapping[str, Any]) -> str:
    """Precision, recall, F1, support and predicted count per class."""
    rows = [[_e(name), _num(s["precision"]), _num(s["recall"]), _num(s["f1"]), _num(s["support"]),
             _num(s.get("predicted"))] for name, s in metrics.get("per_class", {}).items()]
    dist = metrics.get("predicted_class_distribution", {})
    return (_table_html(["class", "precision", "recall", "F1", "support", "predicted"], rows, numeric=(1, 2, 3, 4, 5))
            + f"<p>Predicted class distribution: {_e(', '.join(f'{k} {v}' for k, v in dist.items()))}.</p>")


def _confusion_body(metrics: Mapping[str, Any]) -> str:
    """Confusion-matrix heatmap and table (rows true, columns predicted)."""
    cm = np.asarray(metrics.get("confusion_matrix", []), dtype=np.int64)
    rows = metrics.get("confusion_matrix_rows", [])
    cols = metrics.get("confusion_matrix_columns", [])
    if not cm.size:
        return "<p>No test rows.</p>"
    image = matrix_figure(cm, rows, cols, title="Confusion matrix (counts)", cmap="Blues", vmin=None, vmax=None,
                           fmt="d", xlabel="predicted", ylabel="true")
    table = _table_html(["true \\ predicted", *(_e(c) for c in cols)],
                        [[f"<b>{_e(r)}</b>", *(_num(int(v)) for v in cm[i])] for i, r in enumerate(rows)],
                        numeric=tuple(range(1, len(cols) + 1)))
    return _img(image, "confusion matrix heatmap") + table


def _curves_body(history: Mapping[str, Sequence[float]]) -> str:
    """Training curves and the per-epoch values, or a note without history."""
    series = {k: v for k, v in (history or {}).items() if isinstance(v, list | tuple) and len(v)}
    if not series:
        return "<p>No training history was recorded for this version.</p>"
    epochs = max(len(v) for v in series.values())
    rows = [[_num(e + 1), *(_num(float(v[e])) if e < len(v) else "" for v in series.values())] for e in range(epochs)]
    return (_img(curves_figure(series), "training and validation loss and accuracy per epoch")
            + _table_html(["epoch", *(_e(k) for k in series)], rows, numeric=tuple(range(len(series) + 1))))


def _calibration_body(metrics: Mapping[str, Any]) -> str:
    """Reliability diagram, ECE and the bin table."""
    bins = metrics.get("reliability_bins", [])
    ece = metrics.get("expected_calibration_error")
    rows = [[f"{b['lower']:.3f}\u2013{b['upper']:.3f}", _num(b["count"]), _num(b["mean_confidence"]),
             _num(b["accuracy"])] for b in bins]
    return (_img(reliability_figure(bins, ece), "reliability diagram")
            + f"<p>Expected calibration error over {len(bins)} equal-width confidence bins: <b>{_num(ece)}</b> "
            f"(0 is perfectly calibrated).</p>"
            + _table_html(["confidence bin", "rows", "mean confidence", "accuracy"], rows, numeric=(1, 2, 3)))


def _correlation_body(inp: EvaluationInput) -> str:
    """Heatmap of the correlation between class-probability columns."""
    corr = probability_correlation(inp.probs)
    if not corr.size:
        return "<p>No classes.</p>"
    image = matrix_figure(corr, inp.classes, inp.classes, title="Correlation of predicted class probabilities",
                           cmap="RdBu_r", vmin=-1.0, vmax=1.0, fmt=".2f", xlabel="class", ylabel="class")
    return (_img(image, "probability correlation heatmap")
            + "<p>Positively correlated classes tend to be confused with each other; classes whose probability "
            "never varies are shown uncorrelated.</p>")


def _map_body(prob_map: Mapping[str, Any]) -> str:
    """The probability map scatter and how it was made."""
    method = method_name(prob_map)
    shown = len(prob_map.get("points", []))
    return (_img(map_figure(dict(prob_map)), "2-D map of predicted probability vectors")
            + f"<p>{_e(method)} of {shown:,} of {_num(prob_map.get('n_rows', shown))} test rows (a stratified "
            f"sample when there are more), coloured by true class. Stars are the one-hot vectors of each class, "
            f"crosses the mean predicted vector of each class's rows, fitted together with the rows.</p>")


def _projector_body() -> str:
    """How to open the exported Embedding Projector files."""
    files = "".join(f"<li><code>{_e(f)}</code></li>" for f in (PROJECTOR_TENSORS, PROJECTOR_METADATA,
                                                                PROJECTOR_CONFIG))
    return (f"<p>A per-class sample of the test rows is exported for the TensorBoard Embedding Projector "
            f"(penultimate-layer features when the model provides them, else the predicted probabilities), "
            f"next to this report:</p><ul>{files}</ul>"
            f"<p>Either run <code>tensorboard --logdir MODEL_VERSION_DIR/{PROJECTOR_DIR}</code> on a local copy "
            f"of this version's folder and open the Projector tab, or open "
            f"<code>https://projector.tensorflow.org</code>, choose <em>Load</em> and upload "
            f"<code>tensors.tsv</code> then <code>metadata.tsv</code>.</p>")


def _explanations_body(explanations: Sequence[Mapping[str, Any]]) -> str:
    """Each explained prediction: the text with its explained words highlighted, and their weights."""
    if not explanations:
        return "<p>No predictions were explained.</p>"
    parts = ["<p>LIME: words are removed at random and a weighted linear model is fitted to the predicted class's "
             "probability. <mark style=\"background:rgba(0,160,60,.5)\">green</mark> words push towards the "
             "predicted class, <mark style=\"background:rgba(220,40,40,.5)\">red</mark> words away from it.</p>"]
    for ex in explanations:
        label = ex.get("label")
        verdict = ""
        if label is not None:
            verdict = " (correct)" if label == ex.get("predicted_label") else " (wrong)"
        head = (f"<h3>{_e(ex.get('doc_id', ''))}: predicted <b>{_e(ex.get('predicted_label'))}</b> "
                f"({_num(ex.get('confidence'), 3)})"
                + (f", labelled <b>{_e(label)}</b>{verdict}" if label is not None else "") + "</h3>")
        note = f"<p class=\"note\">{_e(ex['note'])}</p>" if ex.get("note") else ""
        words = ex.get("words", [])
        if not words:
            parts.append(f"<article>{head}{note}<p class=\"note\">No words to explain.</p></article>")
            continue
        table = _table_html(["word", "weight"], [[_e(w["word"]), f"{float(w['weight']):+.4f}"] for w in words],
                            numeric=(1,))
        fit = (f"<p class=\"note\">intercept {_num(ex.get('intercept'))}, local prediction "
               f"{_num(ex.get('local_prediction'))}, weighted R\u00b2 {_num(ex.get('score'))}, "
               f"{_num(ex.get('num_samples'))} samples</p>")
        parts.append(f"<article>{head}{note}<div class=\"text\">{_highlighted_text(str(ex.get('text', '')), words)}"
                     f"</div>{table}{fit}</article>")
    return "\n".join(parts)


def _label_errors_body(label_errors: Sequence[Mapping[str, Any]]) -> str:
    """Table of suspected label errors."""
    if not label_errors:
        return "<p>No suspected label errors.</p>"
    rows = [[_e(r["doc_id"]), _e(r["label"]), _e(r["predicted"]), _num(r["confidence"], 3),
             _num(r.get("label_probability"), 3), _e(r["reason"].replace("_", " ")), _num(r["score"], 3),
             f'<span class="text">{_e(r["text"])}</span>'] for r in label_errors]
    return ("<p>Rows predicted as another class with confidence \u2265 "
            f"{CONFIDENTLY_WRONG} (<i>confidently wrong</i>), or whose probability vector is unusually far from "
            "their class's mean (<i>far from class</i>). Worth a second look: the label may be wrong.</p>"
            + _table_html(["doc id", "label", "predicted", "confidence", "p(label)", "reason", "score", "text"],
                          rows, numeric=(3, 4, 6)))


def render_report(inp: EvaluationInput, metrics: dict[str, Any], *, explanations: list[dict[str, Any]],
                  label_errors: list[dict[str, Any]], prob_map: dict[str, Any]) -> str:
    """One self-contained HTML page of a model version's evaluation; every data-derived text escaped."""
    bodies = {
        "summary": ("Summary", _summary_body(inp, metrics)),
        "per-class": ("Per-class scores", _per_class_body(metrics)),
        "confusion-matrix": ("Confusion matrix", _confusion_body(metrics)),
        "training-curves": ("Training curves", _curves_body(inp.history)),
        "calibration": ("Calibration", _calibration_body(metrics)),
        "probability-correlation": ("Correlation of class probabilities", _correlation_body(inp)),
        "probability-map": ("Probability map", _map_body(prob_map)),
        "projector": ("Embedding Projector", _projector_body()),
        "explanations": ("Explained predictions", _explanations_body(explanations)),
        "label-errors": ("Suspected label errors", _label_errors_body(label_errors)),
    }
    return render_page(f"Model {inp.version} ({inp.architecture}): evaluation", bodies, SECTION_IDS)
