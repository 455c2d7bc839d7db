"""The linear reference: the ten lines of scikit-learn a user would otherwise write, on the same split.

TF-IDF over word 1-2 grams (``min_df=2``, sublinear tf, at most 500k features) and a linear SVM
(``C=0.5``), fitted on the model's own training split and scored on its test split. The model
report shows the model against it, and the promotion gate can refuse a model that trails it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from textclf.model.data import Splits

log = logging.getLogger(__name__)

DESCRIPTION = ("TF-IDF word 1-2 grams (min_df=2, sublinear tf, 500k features) + LinearSVC(C=0.5), "
               "fitted on the same training split")


def reference_pipeline() -> Any:
    """The reference as an unfitted scikit-learn pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=500_000),
        LinearSVC(C=0.5),
    )


def decision_probabilities(decision: np.ndarray) -> np.ndarray:
    """Softmax over a linear classifier's decision values, (n, k) even for two classes."""
    import numpy as np

    scores = np.asarray(decision, dtype=np.float64)
    if scores.ndim == 1:  # binary: one margin for the positive class
        scores = np.stack([-scores / 2, scores / 2], axis=1)
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)


def linear_reference(splits: Splits) -> dict[str, Any]:
    """Accuracy and macro-F1 of the reference on the test split, trained on the training split."""
    import numpy as np

    from textclf.evaluate.metrics import compute_metrics

    started = time.perf_counter()
    train, test = splits.train, splits.test
    pipeline = reference_pipeline()
    try:
        pipeline.fit(train.texts.astype(str), train.labels.astype(str))
    except ValueError as exc:  # e.g. every term below min_df in a tiny training split
        log.warning("linear reference not computed: %s", exc)
        return {"description": DESCRIPTION, "error": str(exc).splitlines()[0]}
    fitted = [str(c) for c in pipeline.classes_]
    decision = pipeline.decision_function(test.texts.astype(str)) if len(test) else np.zeros((0, len(fitted)))
    probs = decision_probabilities(decision)
    # The model's columns are splits.classes; the reference fitted the same training labels, sorted the same.
    order = [fitted.index(c) for c in splits.classes]
    metrics = compute_metrics(splits.classes, test.labels.tolist(), probs[:, order])
    return {"description": DESCRIPTION, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "train_rows": len(train), "test_rows": len(test), "seconds": round(time.perf_counter() - started, 2)}
