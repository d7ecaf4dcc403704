"""The quality ruler: mining variants against the baseline, paired over seeds.

Every run is the recipe's own ``train.py`` on a benchmark set with a known
difficulty structure, all variants under the same budget (epochs, batch
size, model), one seed after the other; the same seed gives two variants the
same initial weights and, where the sampler allows, the same data order.

``kws`` (default): the Google Speech Commands recipe on the hard benchmark
set of :mod:`hardmine.synthetic.hard_gsc` (low-SNR clips, rare keywords,
mislabelled training clips, every clip's subgroup listed). Metrics per run:
test accuracy, rare-keyword and low-SNR accuracy, false-reject rate at 1 %
and 5 % false alarms, the validation accuracy of every epoch, and the
optimizer steps a variant needs to reach the baseline's final validation
accuracy (epoch resolution).

``sep``: the WSJ0Mix recipe on the embedded WSJ0-2mix-style set, with the
CPU-sized Conv-TasNet (``TINY_OVERRIDES["convtasnet"]``, 84k parameters),
batches of 8 one-second crops and lr 1e-3 for 12 epochs. Metrics:
test SI-SNRi mean, median, 5th and 10th percentile, the mean per subgroup
of ``mixture_info.csv`` (close pitch, large level difference, full overlap,
the rest), validation SI-SNR per epoch and steps to the baseline's final
validation SI-SNR.

Statistics against the baseline (:mod:`hardmine.tools.stats`): the mean
per-seed difference with a bootstrap 95 % interval and the Wilcoxon
signed-rank p-value, and for the test-set metrics a paired bootstrap over
test utterances (one resample for both variants and every seed).
``--reference`` names another variant to pair with (a mining variant's own
control) and to measure "early" on.

``benchmarks/quality_bench.py`` and ``make demo`` run it
(:func:`run`); see that script for the command lines.
"""

import argparse
import csv
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from hardmine.synthetic.gsc import CORE_KEYWORDS
from hardmine.synthetic.hard_gsc import SUBGROUPS_FILE, hard_gsc_default, make_hard_gsc
from hardmine.synthetic.layouts import default_wsj0mix
from hardmine.tasks.kws_metrics import frr_at_far
from hardmine.tasks.sep_metrics import SUBGROUPS, read_subgroups
from hardmine.tasks.separation import TINY_OVERRIDES
from hardmine.tools.hardest import read_saved_hparams, report_for_run, sampler_config
from hardmine.tools.stats import seed_difference, utterance_difference

ROOT = Path(__file__).resolve().parents[2]
FARS = (0.01, 0.05)


class Task:
    """What differs between the KWS and the separation ruler."""

    def __init__(
        self,
        name,
        recipe,
        variants,
        epochs,
        extra,
        valid_key,
        higher_better,
        early_fraction,
    ):
        self.name = name
        self.recipe = ROOT / "recipes" / recipe
        self.variants = variants
        self.epochs = epochs
        self.extra = extra
        self.valid_key = valid_key
        self.higher_better = higher_better
        #: "Early": the baseline's final validation value reached within
        #: this share of the baseline's steps (the targets of mining).
        self.early_fraction = early_fraction


#: Class shares of the ``balanced_*`` KWS variants: each keyword 100 (the
#: training set has 996 keyword clips, 28-29 of each rare word), the
#: negatives at their counts (1,002 unknown words, 200 silence clips).
BALANCED_MIX = (
    "{"
    + ", ".join(
        [f"{w}: 100" for w in CORE_KEYWORDS] + ["_unknown_: 1002", "_silence_: 200"]
    )
    + "}"
)

KWS = Task(
    "kws",
    "GoogleSpeechCommands/kws",
    {
        "baseline": "hparams/kws.yaml",
        "isbl": "hparams/kws_isbl.yaml",
        "robust": "hparams/kws_robust.yaml",
        # robust with the streaming partition (an EMA of Z): weights that do
        # not depend on the batch size (for small batches and accumulation).
        "robust_stream": "hparams/kws_robust.yaml --reweight_partition ema",
        # ISBL with exploration (unseen examples score the pool's maximum, 5 %
        # uniform draws) and the noise guard against mislabelled clips.
        "isbl_guarded": "hparams/kws_isbl.yaml --isbl_unseen_score max "
        "--isbl_uniform_mix 0.05 --isbl_score_clip_quantile 0.95",
        # isbl_guarded flagging after 2 visits in a row above the quantile
        # instead of 3: more visits of a 5-epoch run count.
        "isbl_guarded_k2": "hparams/kws_isbl.yaml --isbl_unseen_score max "
        "--isbl_uniform_mix 0.05 --isbl_score_clip_quantile 0.95 "
        "--isbl_persistent_visits 2",
        # isbl_guarded with the draws held at 0.05 nats from uniform per pool.
        "isbl_capacity": "hparams/kws_isbl.yaml --isbl_unseen_score max "
        "--isbl_uniform_mix 0.05 --isbl_score_clip_quantile 0.95 "
        "--isbl_capacity 0.05",
        # isbl_guarded with importance weights (N P_i)^-1: the uniform objective.
        "isbl_unbiased": "hparams/kws_isbl.yaml --isbl_unseen_score max "
        "--isbl_uniform_mix 0.05 --isbl_score_clip_quantile 0.95 "
        "--isbl_is_beta 1.0",
        # Hard-negative mining: keywords drawn uniformly, _unknown_ and
        # _silence_ by loss (power 1), with isbl_guarded's exploration and guard.
        "isbl_hard_negatives": "hparams/kws_isbl.yaml "
        "--isbl_pool_alpha '{targets: 0.0, negatives: 1.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # Reducible loss (RHO-LOSS style): two holdout copies of the model,
        # 5 epochs each on half of the training set, give every clip a
        # reference loss; ISBL draws by the loss in excess of it.
        "isbl_reducible": "hparams/kws_isbl.yaml --isbl_reference_epochs 5 "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05",
        # isbl_hard_negatives with the negatives' loss power at 2: the draws
        # among _unknown_ and _silence_ concentrated further on the hard ones.
        "isbl_hard_negatives_a2": "hparams/kws_isbl.yaml "
        "--isbl_pool_alpha '{targets: 0.0, negatives: 2.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # isbl_hard_negatives scoring a negative by how near it comes to a
        # false alarm, -log(1 - largest keyword posterior), not by its loss.
        "isbl_fa_negatives": "hparams/kws_isbl.yaml --negative_hardness false_alarm "
        "--isbl_pool_alpha '{targets: 0.0, negatives: 1.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # isbl_guarded with staleness: each epoch, a score not refreshed in
        # the epoch that ended moves half way to its pool's mean score.
        "isbl_decay": "hparams/kws_isbl.yaml --isbl_unseen_score max "
        "--isbl_uniform_mix 0.05 --isbl_score_clip_quantile 0.95 "
        "--isbl_score_decay 0.5",
        # isbl_reducible with the excess as a ratio, exp(loss - reference),
        # never clipped, and the draws held at 0.1 nats from uniform per pool.
        "isbl_reducible_capacity": "hparams/kws_isbl.yaml --isbl_reference_epochs 5 "
        "--isbl_transform exp --isbl_capacity 0.1 "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05",
        # The same at 0.3 nats.
        "isbl_reducible_capacity_03": "hparams/kws_isbl.yaml --isbl_reference_epochs 5 "
        "--isbl_transform exp --isbl_capacity 0.3 "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05",
        # isbl_hard_negatives with two negatives drawn per keyword (the data
        # has 1.2): a controlled negative:positive ratio, as in Hou et al.
        "isbl_hard_negatives_2to1": "hparams/kws_isbl.yaml "
        "--isbl_pool_alpha '{targets: 0.0, negatives: 1.0}' "
        "--isbl_pool_mix '{targets: 1.0, negatives: 2.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # Every class its own pool at its natural share: mining within a
        # class, the class priors of the data kept.
        "isbl_per_class": "hparams/kws_isbl.yaml --isbl_pool_field command "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # isbl_per_class with the class shares flattened (size ** 0.5): the
        # rare keywords drawn about three times as often.
        "isbl_per_class_flat": "hparams/kws_isbl.yaml --isbl_pool_field command "
        "--isbl_pool_mix 0.5 --isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # The control of isbl_per_class_flat: the same class shares, uniform
        # draws within each class (no loss in the draws at all).
        "class_flat_uniform": "hparams/kws_isbl.yaml --isbl_pool_field command "
        "--isbl_pool_mix 0.5 --isbl_alpha 0.0",
        # isbl_per_class_flat with hard-negative mining: keywords uniform
        # within their class, _unknown_ and _silence_ drawn by loss (power 1).
        "isbl_flat_hard_negatives": "hparams/kws_isbl.yaml --isbl_pool_field command "
        "--isbl_pool_mix 0.5 --isbl_alpha 0.0 "
        "--isbl_pool_alpha '{_unknown_: 1.0, _silence_: 1.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # Selective backprop: only the half of each batch with the highest
        # losses stays in the loss (16 of 32 clips per step).
        "selective": "hparams/kws.yaml --keep_hardest 0.5",
        # The same keeping three quarters (24 of 32).
        "selective_75": "hparams/kws.yaml --keep_hardest 0.75",
        # Selective backprop as its authors run it: twice the clips go
        # forward (batches of 64) and the hardest half, 32 like the baseline's
        # batch, is backpropagated; an epoch is half as many steps.
        "selective_b64": "hparams/kws.yaml --batch_size 64 --keep_hardest 0.5",
        # The control of selective_b64: batches of 64, every clip in the loss.
        "baseline_b64": "hparams/kws.yaml --batch_size 64",
        # Negatives subsampled, as KWS recipes train with a share of the
        # unknown words: one negative drawn per four keywords (about 440 of
        # the 1,200 negatives an epoch), uniformly within each pool.
        "negatives_sub_uniform": "hparams/kws_isbl.yaml --isbl_alpha 0.0 "
        "--isbl_pool_mix '{targets: 1.0, negatives: 0.25}'",
        # The same share of negatives, the hardest ones (loss power 1, with
        # isbl_guarded's exploration and guard): Hou et al.'s setting, mining
        # which negatives a fixed negative:keyword ratio is filled with.
        "negatives_sub_hard": "hparams/kws_isbl.yaml "
        "--isbl_pool_alpha '{targets: 0.0, negatives: 1.0}' "
        "--isbl_pool_mix '{targets: 1.0, negatives: 0.25}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # The same two at one negative per two keywords (about 730 an epoch).
        "negatives_half_uniform": "hparams/kws_isbl.yaml --isbl_alpha 0.0 "
        "--isbl_pool_mix '{targets: 1.0, negatives: 0.5}'",
        "negatives_half_hard": "hparams/kws_isbl.yaml "
        "--isbl_pool_alpha '{targets: 0.0, negatives: 1.0}' "
        "--isbl_pool_mix '{targets: 1.0, negatives: 0.5}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # Every class its own pool, the ten keywords drawn equally often (100
        # each: the rare ones about 3.5 times their natural rate, the others
        # 0.77 times), _unknown_ and _silence_ at their natural share (54.5 %
        # of the draws), uniform within each class: rebalancing only.
        "balanced_uniform": "hparams/kws_isbl.yaml --isbl_pool_field command "
        f"--isbl_alpha 0.0 --isbl_pool_mix '{BALANCED_MIX}'",
        # The recipe file of balanced_uniform's draws, for any data: every
        # keyword equally often, _unknown_ and _silence_ at their natural share
        # (pool_mix {"*": equal, ...}; here 99.6 clips' weight per keyword).
        "balanced": "hparams/kws_balanced.yaml",
        # The same shares, _unknown_ and _silence_ drawn by loss (power 1,
        # isbl_guarded's exploration and guard): rare keywords up by
        # rebalancing, false alarms down by hard-negative mining.
        "balanced_hard_negatives": "hparams/kws_isbl.yaml --isbl_pool_field command "
        f"--isbl_alpha 0.0 --isbl_pool_mix '{BALANCED_MIX}' "
        "--isbl_pool_alpha '{_unknown_: 1.0, _silence_: 1.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # The mirror image of isbl_hard_negatives: keywords drawn by loss
        # (power 1), _unknown_ and _silence_ uniformly; the hard keyword clips
        # are mostly the low-SNR ones that make up the false rejects.
        "isbl_hard_keywords": "hparams/kws_isbl.yaml "
        "--isbl_pool_alpha '{targets: 1.0, negatives: 0.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # balanced_uniform with every keyword class drawn by loss (power 1).
        "balanced_hard_keywords": "hparams/kws_isbl.yaml --isbl_pool_field command "
        f"--isbl_alpha 1.0 --isbl_pool_mix '{BALANCED_MIX}' "
        "--isbl_pool_alpha '{_unknown_: 0.0, _silence_: 0.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
        # isbl_hard_negatives with the hardest half of each batch in the loss.
        "selective_hard_negatives": "hparams/kws_isbl.yaml --keep_hardest 0.5 "
        "--isbl_pool_alpha '{targets: 0.0, negatives: 1.0}' "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
    },
    epochs=5,
    # The benchmark set has its noise mixed in already; the recipe's own
    # training augmentation stays off so that every variant sees the same clips.
    extra=["--augment", "False"],
    valid_key="accuracy",
    higher_better=True,
    early_fraction=0.75,
)
SEP = Task(
    "sep",
    "WSJ0Mix/separation",
    {
        "baseline": "hparams/convtasnet.yaml",
        "isbl": "hparams/convtasnet.yaml --sampler isbl",
        # Tzinis et al.'s weighting: softmax(-loss / 2) over batch x sources.
        "robust": "hparams/convtasnet.yaml --reweight_mode robust "
        "--reweight_over sources",
        # robust at half the temperature: the weights twice as sharp.
        "robust_t1": "hparams/convtasnet.yaml --reweight_mode robust "
        "--reweight_over sources --reweight_temperature 1.0",
        # robust at T = 5: losses are in dB, and at T = 2 one source of the
        # 16 can take most of the weight.
        "robust_t5": "hparams/convtasnet.yaml --reweight_mode robust "
        "--reweight_over sources --reweight_temperature 5.0",
        # T = 2 over the 8 mixtures of a batch, not their sources.
        "robust_examples": "hparams/convtasnet.yaml --reweight_mode robust",
        # isbl with the exploration and noise guard of the KWS isbl_guarded.
        "isbl_guarded": "hparams/convtasnet.yaml --sampler isbl "
        "--isbl_unseen_score max --isbl_uniform_mix 0.05 "
        "--isbl_score_clip_quantile 0.95",
    },
    epochs=12,
    # A batch of 8 one-second crops: reweighting acts over 16 numbers.
    extra=["--batch_size", "8", "--training_signal_len", "8000", "--lr", "0.001"],
    valid_key="si-snr",
    higher_better=False,  # the logged validation SI-SNR is a loss (-dB)
    early_fraction=0.80,
)
TASKS = {"kws": KWS, "sep": SEP}

#: Command-line overrides of a CPU-sized model per task (``--quick`` and ``sep``).
TINY = {
    "kws": ["--tdnn_channels", "16", "--emb_dim", "16", "--n_mels", "20"],
    "sep": TINY_OVERRIDES["convtasnet"],
}


# ------------------------------------------------------------------ runs
def run_folder(out, variant, seed):
    return Path(out) / variant / str(seed)


def train(task, variant, seed, data, out, epochs, extra, log, echo=print):
    """Run the recipe's train.py once (skipped when its test results exist)."""
    folder = run_folder(out, variant, seed)
    done = folder / "test_results.csv"
    if done.exists():
        return folder
    # A variant is a YAML file, possibly with its own overrides after it.
    cmd = [sys.executable, "train.py", *shlex.split(task.variants[variant])]
    cmd += ["--seed", str(seed), "--output_folder", str(folder)]
    cmd += ["--number_of_epochs" if task.name == "kws" else "--N_epochs", str(epochs)]
    cmd += ["--noprogressbar"] + (["--data_folder", str(data)] if data else []) + extra
    start = time.time()
    with open(log, "a") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=task.recipe, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} seed {seed} failed (see {log})")
    echo(f"  {variant:>10} seed {seed}: {time.time() - start:.0f} s")
    return folder


def valid_curve(folder, key):
    """Validation metric per epoch from the train log, with the steps so far."""
    curve = {}
    pattern = re.compile(r"epoch: (\d+).* valid " + re.escape(key) + r": ([-\d.e+]+)")
    for line in (folder / "train_log.txt").read_text().splitlines():
        m = pattern.search(line)
        if m:
            curve[int(m.group(1))] = float(m.group(2))
    steps = {}
    stats_file = folder / "mining_stats.jsonl"
    for line in stats_file.read_text().splitlines() if stats_file.exists() else []:
        record = json.loads(line)
        steps[int(record["epoch"])] = int(record["optimizer_step"])
    return [
        {"epoch": e, "value": curve[e], "step": steps.get(e)} for e in sorted(curve)
    ]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------- metrics
def kws_run(folder, subgroups):
    """Per-utterance arrays of one KWS run, in test-ID order."""
    rows = sorted(
        (r for r in read_rows(folder / "test_results.csv") if r["ID"] != "avg"),
        key=lambda r: r["ID"],
    )
    summary = json.loads((folder / "test_summary.json").read_text())
    keywords = set(summary["classes"]) - {"_unknown_", "_silence_"}
    info = [subgroups.get(r["ID"], {}) for r in rows]
    return {
        "ids": np.array([r["ID"] for r in rows]),
        "correct": np.array([int(r["correct"]) for r in rows], dtype=float),
        "score": np.array([float(r["score"]) for r in rows]),
        "target": np.array([r["label"] in keywords for r in rows]),
        "rare": np.array([s.get("rare") == "1" for s in info]),
        "low_snr": np.array([s.get("low_snr") == "1" for s in info]),
        "spoken": np.array([s.get("spoken", r["label"]) for s, r in zip(info, rows)]),
    }


def kws_metric(name):
    """``metric(run, index)`` for a KWS metric name."""

    def mean_over(mask_key):
        def metric(run, idx):
            keep = run[mask_key][idx] if mask_key else np.ones(len(idx), bool)
            return float(run["correct"][idx][keep].mean()) if keep.any() else math.nan

        return metric

    if name == "accuracy":
        return mean_over(None)
    if name in ("rare_accuracy", "low_snr_accuracy"):
        return mean_over(name[: -len("_accuracy")])
    far = float(name.split("@")[1])

    def frr(run, idx):
        t = run["target"][idx]
        return frr_at_far(run["score"][idx][t], run["score"][idx][~t], far)["frr"]

    return frr


KWS_METRICS = ["accuracy", "rare_accuracy", "low_snr_accuracy"] + [
    f"frr@{f}" for f in FARS
]


def frr_breakdown(run, far=FARS[0]):
    """What sets one KWS run's false-reject rate at ``far``.

    At the threshold of :func:`~hardmine.tasks.kws_metrics.frr_at_far`: the
    keyword clips rejected, with how many of them are low-SNR or rare, and
    the negatives accepted (the false alarms the budget allows), with the
    words spoken in them.

    Example
    -------
    >>> run = {"score": np.array([0.9, 0.25, 0.2, 0.8, 0.1, 0.3]),
    ...        "target": np.array([1, 1, 1, 0, 0, 0], bool),
    ...        "low_snr": np.array([0, 1, 1, 1, 0, 0], bool),
    ...        "rare": np.array([0, 0, 1, 0, 0, 0], bool),
    ...        "spoken": np.array(["yes", "no", "up", "bed", "cat", "dog"])}
    >>> b = frr_breakdown(run, far=1 / 3)
    >>> b["rejected"], b["rejected_low_snr"], b["rejected_rare"], b["false_alarms"]
    (2, 2, 1, 1)
    >>> b["alarm_words"]
    {'bed': 1}
    """
    target, score = run["target"], run["score"]
    threshold = frr_at_far(score[target], score[~target], far)["threshold"]
    rejected = target & ~(score >= threshold)
    alarms = ~target & (score >= threshold)
    words, counts = np.unique(run["spoken"][alarms], return_counts=True)
    return {
        "keywords": int(target.sum()),
        "rejected": int(rejected.sum()),
        "rejected_low_snr": int((rejected & run["low_snr"]).sum()),
        "rejected_rare": int((rejected & run["rare"]).sum()),
        "low_snr_keywords": int((target & run["low_snr"]).sum()),
        "rare_keywords": int((target & run["rare"]).sum()),
        "false_alarms": int(alarms.sum()),
        "alarm_words": {str(w): int(c) for w, c in zip(words, counts)},
    }


def breakdown_table(runs, far=FARS[0]):
    """Markdown lines: :func:`frr_breakdown` per variant, summed over seeds."""
    lines = [
        f"What sets FRR at {far:.0%} FAR, summed over seeds: the keyword clips rejected "
        "(low-SNR and rare among them, against their share of the keyword clips) and the "
        "false alarms the budget allows (the words spoken in them, most frequent first):",
        "",
        "| variant | rejected / keyword clips | low-SNR | rare | false alarms | their words |",
        "|---|---|---|---|---|---|",
    ]
    for v, per_seed in runs.items():
        parts = [frr_breakdown(r, far) for r in per_seed.values()]
        total = {k: sum(p[k] for p in parts) for k in parts[0] if k != "alarm_words"}
        words = {}
        for p in parts:
            for w, c in p["alarm_words"].items():
                words[w] = words.get(w, 0) + c
        rejected, keywords = max(total["rejected"], 1), max(total["keywords"], 1)
        top = sorted(words.items(), key=lambda wc: (-wc[1], wc[0]))[:4]
        lines.append(
            f"| {v} | {total['rejected']} / {total['keywords']} | "
            f"{total['rejected_low_snr'] / rejected:.0%} "
            f"(of all {total['low_snr_keywords'] / keywords:.0%}) | "
            f"{total['rejected_rare'] / rejected:.0%} "
            f"(of all {total['rare_keywords'] / keywords:.0%}) | "
            f"{total['false_alarms']} | " + ", ".join(f"{w} {c}" for w, c in top) + " |"
        )
    return lines


def kws_subgroups(data):
    """Test-ID -> subgroup row of the benchmark sidecar."""
    out = {}
    for row in read_rows(Path(data) / SUBGROUPS_FILE):
        word, name = row["path"][: -len(".wav")].split("/", 1)
        out[f"{word}_{name}"] = row
    return out


def guard_flags(folder, subgroups):
    """The noise guard's flags against the set's mislabelled training clips.

    Reads the run's newest sampler checkpoint (as :mod:`hardmine.tools.hardest`
    does) and the benchmark sidecar's ``mislabelled`` and ``low_snr`` columns.

    Returns
    -------
    dict or None
        None for a run whose sampler has no noise guard; else ``flagged`` and
        ``train`` (examples), ``mislabelled`` (training clips filed under
        another word), ``mislabelled_flagged``, ``low_snr_flagged``, and
        ``recall`` (share of the mislabelled clips flagged) and ``precision``
        (share of the flagged that are mislabelled; NaN with none flagged);
        the same four with the prefix ``ever_`` for the examples flagged at
        any point of the run (``ever_persistently_hard``; equal to the
        above for checkpoints saved before that record was kept); and, as a
        control, ``loss_top_recall`` and ``ever_loss_top_recall``: the share
        of the mislabelled clips among the as many examples of highest latest
        loss (the order of :mod:`hardmine.tools.hardest`).
    """
    config = sampler_config(read_saved_hparams(str(Path(folder) / "hyperparams.yaml")))
    if config is None or config[1].get("score_clip_quantile") is None:
        return None
    report = report_for_run(str(folder))
    if report is None:
        return None
    ids = [r["id"] for r in report.rows]
    flagged = {r["id"] for r in report.rows if r.get("persistently_hard")}
    wrong = {i for i in ids if subgroups.get(i, {}).get("mislabelled") == "1"}
    ever = {
        r["id"]
        for r in report.rows
        if r.get("ever_persistently_hard", r.get("persistently_hard"))
    }
    by_loss = [
        r["id"]
        for r in sorted(report.rows, key=lambda r: -r["loss"])
        if math.isfinite(r["loss"])
    ]
    out = {"train": len(ids), "mislabelled": len(wrong)}
    for prefix, chosen in (("", flagged), ("ever_", ever)):
        hit = len(chosen & wrong)
        low = {i for i in chosen if subgroups.get(i, {}).get("low_snr") == "1"}
        out.update(
            {
                f"{prefix}flagged": len(chosen),
                f"{prefix}mislabelled_flagged": hit,
                f"{prefix}low_snr_flagged": len(low),
                f"{prefix}recall": hit / len(wrong) if wrong else math.nan,
                f"{prefix}precision": hit / len(chosen) if chosen else math.nan,
                f"{prefix}loss_top_recall": (
                    len(set(by_loss[: len(chosen)]) & wrong) / len(wrong)
                    if wrong
                    else math.nan
                ),
            }
        )
    return out


def guard_table(guard):
    """Markdown lines for :func:`guard_flags` results, ``{variant: {seed: dict}}``.

    One row per seed for the flags at the final checkpoint and for those
    raised at any point of the run, each with the control of as many
    examples taken by latest loss; then per variant the means over seeds
    with a 95 % t interval (``scipy.stats.t``).
    """
    lines = [
        "Noise guard against the set's mislabelled training clips, per seed: flagged at the "
        "final checkpoint, and flagged at any point of the run (`ever`); `by loss`: recall of "
        "as many examples taken by highest latest loss (the `hardest` ranking):",
        "",
        "| variant | seed | flagged / train | mislabelled flagged | recall | by loss | "
        "precision | low-SNR among flagged | ever flagged | ever mislabelled | ever recall | "
        "ever by loss | ever precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def share(value):
        return "n/a" if math.isnan(value) else f"{value:.2f}"

    for v, per_seed in guard.items():
        for seed, g in per_seed.items():
            lines.append(
                f"| {v} | {seed} | {g['flagged']} / {g['train']} | "
                f"{g['mislabelled_flagged']} of {g['mislabelled']} | {share(g['recall'])} | "
                f"{share(g['loss_top_recall'])} | {share(g['precision'])} | "
                f"{g['low_snr_flagged']} | {g['ever_flagged']} | "
                f"{g['ever_mislabelled_flagged']} | {share(g['ever_recall'])} | "
                f"{share(g['ever_loss_top_recall'])} | {share(g['ever_precision'])} |"
            )
    lines.append("")
    for v, per_seed in guard.items():
        parts = []
        for key in (
            "recall",
            "loss_top_recall",
            "precision",
            "ever_recall",
            "ever_loss_top_recall",
            "ever_precision",
        ):
            values = [g[key] for g in per_seed.values()]
            label = key.replace("_", " ").replace("loss top recall", "recall by loss")
            parts.append(f"{label} {mean_interval(values)}")
        lines.append(f"- {v}: " + "; ".join(parts))
    return lines


def mean_interval(values):
    """``"mean [low, high]"`` of ``values`` with a 95 % t interval (NaN dropped).

    Example
    -------
    >>> mean_interval([0.4, 0.5, 0.6])
    '0.50 [0.25, 0.75]'
    """
    values = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if values.size == 0:
        return "n/a"
    mean = float(values.mean())
    if values.size < 2 or float(values.std()) == 0.0:
        return f"{mean:.2f}"
    low, high = stats.t.interval(
        0.95, values.size - 1, loc=mean, scale=float(stats.sem(values))
    )
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def sep_run(folder, subgroups):
    rows = sorted(
        (r for r in read_rows(folder / "test_results.csv") if r["snt_id"] != "avg"),
        key=lambda r: r["snt_id"],
    )
    names = [r["snt_id"] for r in rows]
    return {
        "ids": np.array(names),
        "si-snr_i": np.array([float(r["si-snr_i"]) for r in rows]),
        "group": np.array([subgroups.get(n, "rest") for n in names]),
    }


SEP_METRICS = ["mean", "median", "p5", "p10"] + [f"mean_{g}" for g in SUBGROUPS]


def sep_metric(name):
    def metric(run, idx):
        v = run["si-snr_i"][idx]
        if name.startswith("mean_"):
            v = v[run["group"][idx] == name[len("mean_") :]]
            return float(v.mean()) if v.size else math.nan
        if name == "mean":
            return float(v.mean())
        if name == "median":
            return float(np.median(v))
        return float(np.percentile(v, float(name[1:])))

    return metric


def sep_subgroups(data):
    info = Path(data) / "wav8k" / "min" / "mixture_info.csv"
    return read_subgroups(info, split="tt") if info.exists() else {}


# ------------------------------------------------------------ statistics
def steps_to_target(curve, target, higher_better):
    """First optimizer step whose validation value reaches ``target`` (or None)."""
    for point in curve:
        reached = (
            point["value"] >= target if higher_better else point["value"] <= target
        )
        if reached:
            return point["step"]
    return None


def analyse(task, runs, curves, metrics, metric_fn, reference="baseline"):
    """Per-variant summaries and paired statistics against ``reference``."""
    seeds = sorted(runs[reference])
    values = {
        v: {
            m: [
                metric_fn(m)(runs[v][s], np.arange(len(runs[v][s]["ids"])))
                for s in seeds
            ]
            for m in metrics
        }
        for v in runs
    }
    summary, paired, steps = {}, {}, {}
    for v in runs:
        summary[v] = {
            m: {
                "mean": float(np.nanmean(x)),
                "std": float(np.nanstd(x, ddof=1)) if len(x) > 1 else math.nan,
                "min": float(np.nanmin(x)),
                "max": float(np.nanmax(x)),
                "per_seed": x,
            }
            for m, x in values[v].items()
        }
        base_total = [curves[reference][s][-1]["step"] for s in seeds]
        targets = [curves[reference][s][-1]["value"] for s in seeds]
        reached = [
            steps_to_target(curves[v][s], t, task.higher_better)
            for s, t in zip(seeds, targets)
        ]
        steps[v] = {
            "steps": reached,
            "baseline_steps": base_total,
            "fraction": [
                (r / b) if r is not None and b else None
                for r, b in zip(reached, base_total)
            ],
        }
        if v == reference:
            continue
        for s in seeds:
            if list(runs[v][s]["ids"]) != list(runs[reference][s]["ids"]):
                raise SystemExit(
                    f"{v} seed {s}: test utterances differ from {reference}"
                )
        paired[v] = {
            m: {
                "seeds": seed_difference(values[v][m], values[reference][m]),
                "utterances": utterance_difference(
                    metric_fn(m),
                    [runs[v][s] for s in seeds],
                    [runs[reference][s] for s in seeds],
                ),
            }
            for m in metrics
        }
    return {
        "reference": reference,
        "seeds": seeds,
        "summary": summary,
        "paired": paired,
        "steps_to_target": steps,
        # Validation points of the reference's runs (one per epoch).
        "validations": min(len(curves[reference][s]) for s in seeds),
    }


# ---------------------------------------------------------------- output
def _pct(task, metric):
    return task.name == "kws"


def fmt(task, metric, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}" if _pct(task, metric) else f"{value:+.2f}"


def table(task, result, metrics):
    """Markdown table: mean ± sd over seeds, and the paired difference."""
    unit = "%" if task.name == "kws" else "dB"
    reference = result.get("reference", "baseline")
    lines = [
        f"| variant | metric ({unit}) | mean ± sd over seeds | Δ vs {reference}, seeds [95 % CI] | "
        "Δ, test utterances [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    for v, per_metric in result["summary"].items():
        for m in metrics:
            s = per_metric[m]
            cell = f"{fmt(task, m, s['mean'])} ± {fmt(task, m, s['std']).lstrip('+')}"
            d_seed = d_utt = ""
            if v in result["paired"]:
                a, b = (
                    result["paired"][v][m]["seeds"],
                    result["paired"][v][m]["utterances"],
                )
                d_seed = (
                    f"{fmt(task, m, a['mean'])} [{fmt(task, m, a['low'])}, {fmt(task, m, a['high'])}]"
                    + (" *" if a["excludes_zero"] else "")
                    + f" p={a['wilcoxon_p']:.3f}"
                )
                d_utt = (
                    f"{fmt(task, m, b['mean'])} [{fmt(task, m, b['low'])}, {fmt(task, m, b['high'])}]"
                    + (" *" if b["excludes_zero"] else "")
                )
            lines.append(f"| {v} | {m} | {cell} | {d_seed} | {d_utt} |")
    lines.append("")
    lines.append(
        f"Steps to the {reference}'s final validation value (fraction of the "
        f"{reference}'s steps):"
    )
    lines.append("")
    for v, st in result["steps_to_target"].items():
        if v == reference:
            continue
        fr = ["never" if f is None else f"{f:.2f}" for f in st["fraction"]]
        limit = task.early_fraction
        early = sum(1 for f in st["fraction"] if f is not None and f <= limit)
        lines.append(
            f"- {v}: {', '.join(fr)} (≤ {limit:.2f} in {early} of {len(fr)} seeds)"
        )
    n_epochs = result.get("validations")
    if n_epochs:
        lines.append("")
        lines.append(early_resolution(n_epochs, task.early_fraction))
    lines.append("")
    lines.append("`*`: the 95 % interval excludes 0.")
    return "\n".join(lines)


def early_resolution(n_epochs, limit):
    """What "within ``limit`` of the steps" can mean with one validation per epoch.

    Example
    -------
    >>> early_resolution(5, 0.75)
    'Validation runs once per epoch: with 5 epochs a fraction is a multiple of 1/5, so ≤ 0.75 means by epoch 3 (0.60 of the steps).'
    >>> early_resolution(8, 0.75)[-37:]
    'means by epoch 6 (0.75 of the steps).'
    >>> early_resolution(1, 0.75).endswith("cannot be met (by epoch 0).")
    True
    """
    last = math.floor(limit * n_epochs + 1e-9)
    head = (
        f"Validation runs once per epoch: with {n_epochs} epochs a fraction is a "
        f"multiple of 1/{n_epochs}, so ≤ {limit:.2f}"
    )
    if last == 0:
        return f"{head} cannot be met (by epoch 0)."
    return f"{head} means by epoch {last} ({last / n_epochs:.2f} of the steps)."


def to_json(value):
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ------------------------------------------------------------------ main
def parse(argv):
    p = argparse.ArgumentParser(description="The quality ruler: variants x seeds")
    p.add_argument("task", nargs="?", default="kws", choices=sorted(TASKS))
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (1..N)")
    p.add_argument("--variants", nargs="+", help="subset of the task's variants")
    p.add_argument("--epochs", type=int, help="training epochs per run")
    p.add_argument(
        "--reference",
        default="baseline",
        help="the variant every other one is paired with, and whose final "
        "validation value defines 'early' (default baseline)",
    )
    p.add_argument("--out", help="run folder (default results/quality/<task>)")
    p.add_argument("--data_folder", help="benchmark set (default: generated, cached)")
    p.add_argument("--quick", action="store_true", help="2 seeds, tiny data and model")
    p.add_argument(
        "--report",
        help="Markdown table to write (default docs/results/quality_<task>.md; "
        "none with --quick)",
    )
    args, extra = p.parse_known_args(argv)
    args.extra = extra  # anything else goes to every train.py, e.g. --lr 0.001
    return args


def run(args, command, echo=print):
    """Train every variant x seed of ``args`` (a :func:`parse` result) and analyse.

    Returns the record that :func:`main` writes as JSON (runs, curves,
    summaries, paired statistics, the Markdown ``report``).
    """
    task = TASKS[args.task]
    variants = args.variants or list(task.variants)
    reference = args.reference
    if reference not in variants:
        variants = [reference] + variants
    unknown = sorted(set(variants) - set(task.variants))
    if unknown:
        raise SystemExit(
            f"unknown variants {unknown}; {args.task} has {list(task.variants)}"
        )
    seeds = list(range(1, (2 if args.quick else args.seeds) + 1))
    # Absolute: the runs start in the recipe's folder, the analysis here.
    out = Path(args.out or ROOT / "results" / "quality" / task.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    extra = list(args.extra) + task.extra
    epochs = args.epochs or (1 if args.quick else task.epochs)
    data = args.data_folder
    if task.name == "kws":
        if args.quick:
            extra += TINY["kws"] + ["--batch_size", "8"]
            data = data or quick_gsc(out / "data" / "gsc")
        data = data or hard_gsc_default()
        subgroups = kws_subgroups(data)
        metrics, metric_fn, reader = KWS_METRICS, kws_metric, kws_run
    else:
        extra += TINY["sep"]
        if args.quick:
            extra += ["--optimizer_step_limit", "2"]
        data = data or default_wsj0mix()
        subgroups = sep_subgroups(data)
        metrics, metric_fn, reader = SEP_METRICS, sep_metric, sep_run
    data = os.path.abspath(data)  # the runs start in the recipe's folder
    log = out / "runs.log"
    echo(f"{task.name}: {variants} x seeds {seeds}, {epochs} epochs; log {log}")
    started = time.time()
    runs, curves = {v: {} for v in variants}, {v: {} for v in variants}
    guard = {}
    for seed in seeds:
        for v in variants:
            folder = train(task, v, seed, data, out, epochs, extra, log, echo)
            runs[v][seed] = reader(folder, subgroups)
            curves[v][seed] = valid_curve(folder, task.valid_key)
            flags = guard_flags(folder, subgroups) if task.name == "kws" else None
            if flags is not None:
                guard.setdefault(v, {})[seed] = flags
    result = analyse(task, runs, curves, metrics, metric_fn, reference)
    report = table(task, result, metrics)
    if task.name == "kws":
        report += "\n\n" + "\n".join(breakdown_table(runs))
    if guard:
        report += "\n\n" + "\n".join(guard_table(guard))
    return {
        "task": task.name,
        "command": command,
        "variants": {v: task.variants[v] for v in variants},
        "epochs": epochs,
        "overrides": extra,
        "data_folder": str(data),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_time_s": round(time.time() - started, 1),
        "curves": curves,
        "noise_guard": guard,
        "report": report,
        **result,
    }


def write(record, json_path, markdown_path=None):
    """Write a :func:`run` record as JSON, and its report as Markdown."""
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(to_json(record), indent=1))
    if markdown_path is not None:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(
            f"Command: `{record['command']}` ({record['wall_time_s'] / 60:.0f} min)\n\n"
            + record["report"]
            + "\n"
        )


def quick_gsc(root):
    """A small benchmark set for ``--quick`` (generated once per output folder)."""
    if not (root / SUBGROUPS_FILE).exists():
        make_hard_gsc(
            str(root),
            n_speakers=8,
            repetitions=1,
            valid_speakers=2,
            test_speakers=2,
            background_seconds=3.0,
        )
    return str(root)
