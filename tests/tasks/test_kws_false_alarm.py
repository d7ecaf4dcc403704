"""Hard-negative mining by false alarms: what the KWS Brain hands the sampler."""

import math

import pytest
import speechbrain as sb
import torch
from conftest import tiny_kws_brain
from speechbrain.dataio.batch import PaddedBatch

from hardmine.tasks.kws import false_alarm_scores
from hardmine.validation import ConfigError

KEYWORDS = ["yes", "no"]  # classes 0, 1; then _silence_ (2) and _unknown_ (3)


def test_false_alarm_score_follows_the_largest_keyword_posterior():
    probs = torch.tensor(
        [
            [0.90, 0.05, 0.03, 0.02],  # keyword "yes", well recognised
            [0.01, 0.01, 0.01, 0.97],  # _unknown_, no keyword likely
            [0.01, 0.01, 0.97, 0.01],  # _unknown_ taken for _silence_: no alarm
            [0.02, 0.96, 0.01, 0.01],  # _unknown_ that fires "no"
            [0.00, 1.00, 0.00, 0.00],  # fires "no" for certain: capped, finite
        ]
    )
    targets = torch.tensor([0, 3, 3, 3, 3])
    losses = -torch.log(probs[torch.arange(5), targets].clamp(min=1e-12))
    scores = false_alarm_scores(probs.log(), targets, len(KEYWORDS), losses).tolist()
    losses = losses.tolist()
    assert scores[0] == losses[0]  # a keyword keeps its loss
    assert scores[1] == pytest.approx(-math.log(0.99), rel=1e-5)
    # Same loss as a clip that fires a keyword, but no false alarm:
    assert losses[2] == pytest.approx(losses[3])
    assert scores[2] == pytest.approx(-math.log(0.99), rel=1e-5)
    assert scores[3] == pytest.approx(-math.log(0.04), rel=1e-4)
    assert math.isfinite(scores[4]) and scores[4] == pytest.approx(
        -math.log(1e-6), rel=1e-3
    )


class Spy:
    """Records what the Brain hands a live sampler."""

    def __init__(self):
        self.seen = []

    def observe(self, ids, scores):
        self.seen.append((list(ids), scores.clone()))


def _no_loader(*args, **kwargs):
    """A mining-sampler factory for Brains that never build a loader here."""
    raise AssertionError("not called")


def _brain(hardness, sampler=_no_loader):
    hparams = {"negative_hardness": hardness, "mining_sampler": sampler}
    brain = tiny_kws_brain(hparams, n_classes=4)
    brain.keywords = KEYWORDS
    return brain


@pytest.mark.parametrize("hardness", ["loss", "false_alarm"])
def test_the_sampler_records_false_alarm_scores_of_negatives(hardness):
    torch.manual_seed(0)
    brain = _brain(hardness)
    brain.live_sampler = spy = Spy()
    labels = [0, 1, 2, 3, 3, 2]
    batch = PaddedBatch(
        [
            {
                "id": f"u{i}",
                "sig": torch.randn(4000),
                "command_encoded": torch.tensor([c]),
                "audio_problem": "broken" if i == 5 else "",
            }
            for i, c in enumerate(labels)
        ]
    )
    log_probs = brain.compute_forward(batch, sb.Stage.TRAIN)
    brain.compute_objectives(log_probs, batch, sb.Stage.TRAIN)
    ((ids, scores),) = spy.seen
    assert ids == [f"u{i}" for i in range(6)]
    targets = torch.tensor(labels)
    nll = torch.nn.functional.nll_loss(log_probs.detach(), targets, reduction="none")
    expected = nll
    if hardness == "false_alarm":
        expected = false_alarm_scores(log_probs.detach(), targets, 2, nll)
        assert not torch.allclose(expected[2:5], nll[2:5])
    torch.testing.assert_close(scores[:5], expected[:5])
    assert torch.isnan(scores[5])  # bad audio is still marked for the sampler


def test_bad_negative_hardness_is_refused_when_the_brain_is_made():
    with pytest.raises(ConfigError, match=r"^negative_hardness: .*'alarm'"):
        _brain("alarm")


def test_false_alarm_scores_without_a_sampler_are_refused():
    with pytest.raises(ConfigError, match=r"^negative_hardness: 'false_alarm' feeds"):
        _brain("false_alarm", sampler=None)
    assert _brain("loss", sampler=None).negative_hardness == "loss"
