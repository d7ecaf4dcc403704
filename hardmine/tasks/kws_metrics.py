"""Keyword-spotting metrics: accuracy, confusion, false rejects at a false-alarm budget.

Classification metrics treat every class alike. Detection metrics split the
classes into keywords (the ``targets`` pool) and the rest (``negatives``:
unknown words, silence). The detection score of an utterance is its largest
posterior over the keyword classes; an utterance is *accepted* when its score
is >= the threshold. The false-alarm rate (FAR) is the fraction of negative
utterances accepted, the false-reject rate (FRR) the fraction of keyword
utterances not accepted. The threshold is the lowest one whose FAR does not
exceed the budget, which gives the lowest FRR allowed by that budget.

Example
-------
>>> import numpy as np
>>> post = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
>>> labels = np.array([0, 1, 1, 1])
>>> accuracy(post.argmax(1), labels)
0.75
>>> confusion_matrix(post.argmax(1), labels, 2).tolist()
[[1, 0], [1, 2]]
"""

import csv
import json
import math
import os

import numpy as np

from hardmine.validation import ConfigError, check_number

__all__ = [
    "accuracy",
    "confusion_matrix",
    "per_class_accuracy",
    "detection_scores",
    "frr_at_far",
    "KWSResults",
]


def accuracy(predictions, labels):
    """Fraction of ``predictions`` equal to ``labels`` (NaN when empty)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape} predictions for {labels.shape} labels")
    if labels.size == 0:
        return math.nan
    return float(np.mean(predictions == labels))


def confusion_matrix(predictions, labels, n_classes):
    """Counts ``C[true, predicted]`` as an int array ``[n_classes, n_classes]``."""
    predictions, labels = np.asarray(predictions, int), np.asarray(labels, int)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class_accuracy(matrix):
    """Recall of each class from a confusion matrix (NaN for absent classes).

    Example
    -------
    >>> per_class_accuracy(np.array([[3, 1], [0, 0]])).tolist()
    [0.75, nan]
    """
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def detection_scores(posteriors, keyword_indices):
    """Largest posterior over the keyword classes, and which keyword it is.

    Example
    -------
    >>> s, k = detection_scores(np.array([[0.1, 0.3, 0.6], [0.5, 0.4, 0.1]]), [0, 1])
    >>> s.tolist(), k.tolist()
    ([0.3, 0.5], [1, 0])
    """
    posteriors = np.asarray(posteriors, dtype=float)
    keyword_indices = np.asarray(keyword_indices, dtype=int)
    if keyword_indices.size == 0:
        raise ValueError("no keyword classes to score")
    sub = posteriors[:, keyword_indices]
    best = sub.argmax(axis=1)
    return sub[np.arange(len(sub)), best], keyword_indices[best]


def frr_at_far(target_scores, negative_scores, far_target):
    """False-reject rate at the lowest threshold whose false-alarm rate <= budget.

    Arguments
    ---------
    target_scores : array
        Detection scores of keyword utterances.
    negative_scores : array
        Detection scores of non-keyword utterances.
    far_target : float
        False-alarm budget in [0, 1].

    Returns
    -------
    dict
        ``threshold`` (accept when score >= threshold), ``far`` and ``frr`` at
        that threshold; NaN entries when either side is empty.

    Example
    -------
    With 4 negatives a 25 % budget allows one false alarm, so the threshold
    sits just above the second-highest negative score (0.6):

    >>> r = frr_at_far([0.9, 0.7, 0.65, 0.2], [0.8, 0.6, 0.3, 0.1], 0.25)
    >>> round(r["threshold"], 6), r["far"], r["frr"]
    (0.6, 0.25, 0.25)
    """
    far_target = check_number("far_target", far_target, minimum=0.0, maximum=1.0)
    pos = np.asarray(target_scores, dtype=float)
    neg = np.sort(np.asarray(negative_scores, dtype=float))[::-1]
    if pos.size == 0 or neg.size == 0:
        return {"threshold": math.nan, "far": math.nan, "frr": math.nan}
    allowed = int(math.floor(far_target * neg.size + 1e-9))
    if allowed >= neg.size:
        threshold = -math.inf  # every utterance may be accepted
    else:
        # Accept strictly above the (allowed+1)-th highest negative score.
        threshold = float(np.nextafter(neg[allowed], math.inf))
    far = float(np.mean(neg >= threshold))
    frr = float(np.mean(pos < threshold))
    return {"threshold": threshold, "far": far, "frr": frr}


class KWSResults:
    """Collects posteriors over an evaluation stage and summarises them.

    Arguments
    ---------
    class_names : list of str
        Label of each class index.
    keywords : list of str
        Class names forming the ``targets`` side of detection; every other
        class is a negative.
    far_targets : list of float
        False-alarm budgets at which the false-reject rate is reported.

    Example
    -------
    >>> res = KWSResults(["yes", "no", "_unknown_"], keywords=["yes", "no"], far_targets=[0.5])
    >>> res.append(["a", "b", "c", "d"], np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1],
    ...            [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]]), [0, 1, 2, 2])
    >>> s = res.summary()
    >>> s["accuracy"], s["frr_at_far"]["0.5"]["frr"], s["confusion"][2]
    (0.75, 0.0, [1, 0, 1])
    """

    def __init__(self, class_names, keywords, far_targets=(0.01, 0.05)):
        self.class_names = list(class_names)
        unknown = [k for k in keywords if k not in self.class_names]
        if unknown:
            raise ConfigError(
                "keywords", f"{unknown} are not classes of {self.class_names}"
            )
        self.keyword_indices = [self.class_names.index(k) for k in keywords]
        self.far_targets = [
            check_number("far_targets", f, minimum=0.0, maximum=1.0)
            for f in far_targets
        ]
        self.ids, self.posteriors, self.labels = [], [], []

    def append(self, ids, posteriors, labels):
        """Add a batch: IDs, posteriors ``[B, C]`` (probabilities), labels ``[B]``."""
        posteriors = np.asarray(posteriors, dtype=float)
        labels = np.asarray(labels, dtype=int).reshape(-1)
        if posteriors.shape != (len(ids), len(self.class_names)) or len(labels) != len(
            ids
        ):
            raise ValueError(
                f"{len(ids)} ids, posteriors {posteriors.shape}, labels {labels.shape} "
                f"for {len(self.class_names)} classes"
            )
        self.ids.extend(ids)
        self.posteriors.append(posteriors)
        self.labels.append(labels)

    def _arrays(self):
        n = len(self.class_names)
        post = np.concatenate(self.posteriors) if self.posteriors else np.zeros((0, n))
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, int)
        return post, labels

    def summary(self):
        """Dictionary of every metric (JSON-serialisable; NaN for undefined)."""
        post, labels = self._arrays()
        n = len(self.class_names)
        pred = post.argmax(axis=1) if len(post) else np.zeros(0, int)
        matrix = confusion_matrix(pred, labels, n)
        scores, _ = (
            detection_scores(post, self.keyword_indices)
            if len(post)
            else (np.zeros(0), None)
        )
        is_target = np.isin(labels, self.keyword_indices)
        return {
            "n_examples": int(len(labels)),
            "accuracy": accuracy(pred, labels),
            "per_class_accuracy": dict(
                zip(self.class_names, per_class_accuracy(matrix).tolist(), strict=True)
            ),
            "classes": self.class_names,
            "confusion": matrix.tolist(),
            "n_targets": int(is_target.sum()),
            "n_negatives": int((~is_target).sum()),
            "frr_at_far": {
                str(f): frr_at_far(scores[is_target], scores[~is_target], f)
                for f in self.far_targets
            },
        }

    def write(self, folder, prefix="test"):
        """Write ``<prefix>_results.csv`` (per utterance) and ``<prefix>_summary.json``.

        Returns the two paths.
        """
        post, labels = self._arrays()
        os.makedirs(folder, exist_ok=True)
        csv_path = os.path.join(folder, f"{prefix}_results.csv")
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ID", "label", "prediction", "correct", "score"])
            if len(post):
                scores, _ = detection_scores(post, self.keyword_indices)
                for uid, p, lab, score in zip(
                    self.ids, post, labels, scores, strict=True
                ):
                    guess = int(p.argmax())
                    writer.writerow(
                        [
                            uid,
                            self.class_names[lab],
                            self.class_names[guess],
                            int(guess == lab),
                            f"{score:.6f}",
                        ]
                    )
        json_path = os.path.join(folder, f"{prefix}_summary.json")
        with open(json_path, "w") as f:
            json.dump(_jsonable(self.summary()), f, indent=2)
        return csv_path, json_path


def _jsonable(value):
    """Replace non-finite floats by None so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
