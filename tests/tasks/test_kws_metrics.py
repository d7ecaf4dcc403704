"""Keyword-spotting metrics on cases whose answers are worked out by hand."""

import csv
import json
import math

import numpy as np
import pytest

from hardmine.tasks.kws_metrics import (
    KWSResults,
    accuracy,
    confusion_matrix,
    detection_scores,
    frr_at_far,
    per_class_accuracy,
)
from hardmine.validation import ConfigError


def test_accuracy_and_confusion():
    labels = [0, 0, 1, 1, 2, 2, 2]
    preds = [0, 1, 1, 1, 0, 2, 2]
    assert accuracy(preds, labels) == pytest.approx(5 / 7)
    matrix = confusion_matrix(preds, labels, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    per_class = per_class_accuracy(matrix)
    assert per_class[:3].tolist() == pytest.approx([0.5, 1.0, 2 / 3])
    assert math.isnan(per_class[3])
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])


def test_detection_score_is_max_keyword_posterior():
    post = np.array([[0.1, 0.2, 0.7], [0.45, 0.35, 0.2], [0.3, 0.31, 0.39]])
    scores, which = detection_scores(post, [0, 1])
    assert scores.tolist() == [0.2, 0.45, 0.31]
    assert which.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    "far_target, threshold_above, far, frr",
    [
        # 10 negatives scored 0.05 .. 0.95; targets at 0.12, 0.5, 0.72, 0.9, 0.99.
        (0.0, 0.95, 0.0, 0.8),  # nothing above the top negative but 0.99
        (0.1, 0.85, 0.1, 0.6),  # one false alarm allowed (0.95)
        (0.15, 0.85, 0.1, 0.6),  # 1.5 rounds down to one false alarm
        (0.3, 0.65, 0.3, 0.4),
        (0.95, 0.05, 0.9, 0.0),
        (1.0, -math.inf, 1.0, 0.0),
    ],
)
def test_frr_at_far_known_answers(far_target, threshold_above, far, frr):
    negatives = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]
    targets = [0.12, 0.5, 0.72, 0.9, 0.99]
    r = frr_at_far(targets, negatives, far_target)
    if math.isinf(threshold_above):
        assert r["threshold"] == -math.inf
    else:
        # Lowest threshold keeping the budget: the next float above that negative.
        assert r["threshold"] == np.nextafter(threshold_above, math.inf)
    assert r["far"] == pytest.approx(far) and r["far"] <= far_target
    assert r["frr"] == pytest.approx(frr)


def test_frr_at_far_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        neg = rng.random(rng.integers(1, 40)).round(2)  # ties on purpose
        pos = rng.random(rng.integers(1, 40)).round(2)
        budget = float(rng.choice([0.0, 0.01, 0.05, 0.2, 0.5]))
        best = min(
            (np.mean(pos < t), t)
            for t in np.concatenate([neg, pos, [np.inf]])
            if np.mean(neg >= t) <= budget
        )
        assert frr_at_far(pos, neg, budget)["frr"] == pytest.approx(best[0])


def test_frr_at_far_edge_cases():
    assert math.isnan(frr_at_far([], [0.2], 0.1)["frr"])
    assert math.isnan(frr_at_far([0.3], [], 0.1)["far"])
    with pytest.raises(ConfigError, match="far_target"):
        frr_at_far([0.3], [0.2], 1.5)


def test_results_summary_and_files(tmp_path):
    names = ["yes", "no", "_unknown_", "_silence_"]
    res = KWSResults(names, keywords=["yes", "no"], far_targets=[0.0, 0.5])
    post = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],  # yes, right, score 0.7
            [0.2, 0.5, 0.2, 0.1],  # no, right, score 0.5
            [0.4, 0.3, 0.2, 0.1],  # no, wrong (yes), score 0.4
            [0.1, 0.1, 0.7, 0.1],  # unknown, right, score 0.1
            [0.6, 0.1, 0.2, 0.1],  # silence, wrong (yes), score 0.6
        ]
    )
    res.append(["u1", "u2"], post[:2], [0, 1])
    res.append(["u3", "u4", "u5"], post[2:], [1, 2, 3])
    s = res.summary()
    assert s["accuracy"] == pytest.approx(0.6)
    assert s["per_class_accuracy"] == {
        "yes": 1.0,
        "no": 0.5,
        "_unknown_": 1.0,
        "_silence_": 0.0,
    }
    assert s["confusion"][1] == [1, 1, 0, 0] and s["confusion"][3] == [1, 0, 0, 0]
    assert (s["n_targets"], s["n_negatives"]) == (3, 2)
    # FAR 0: threshold above 0.6 keeps only the 0.7 target -> FRR 2/3.
    assert s["frr_at_far"]["0.0"]["frr"] == pytest.approx(2 / 3)
    # FAR 0.5: one of two negatives may pass: threshold above 0.1 -> no rejects.
    assert s["frr_at_far"]["0.5"] == {
        "threshold": np.nextafter(0.1, 1.0),
        "far": 0.5,
        "frr": 0.0,
    }
    csv_path, json_path = res.write(str(tmp_path))
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["ID"] for r in rows] == ["u1", "u2", "u3", "u4", "u5"]
    assert rows[2] == {
        "ID": "u3",
        "label": "no",
        "prediction": "yes",
        "correct": "0",
        "score": "0.400000",
    }
    assert json.load(open(json_path))["accuracy"] == pytest.approx(0.6)


def test_results_reject_bad_input():
    with pytest.raises(ConfigError, match="keywords"):
        KWSResults(["a", "b"], keywords=["c"])
    res = KWSResults(["a", "b"], keywords=["a"])
    with pytest.raises(ValueError):
        res.append(["x"], np.zeros((1, 3)), [0])
    empty = KWSResults(["a", "b"], keywords=["a"]).summary()
    assert empty["n_examples"] == 0 and math.isnan(empty["accuracy"])
