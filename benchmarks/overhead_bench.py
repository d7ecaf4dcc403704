"""Training-step overhead of HardMiningBrain with every mining feature on.

Two brains train the recipe's tiny SepFormer (``recipes/WSJ0Mix/separation/
hparams/sepformer.yaml`` with the overrides of
``hardmine.tasks.separation.TINY_OVERRIDES["sepformer"]``, modules built from
that YAML) side by side in one process, on the embedded default WSJ0-2mix set
(batches of 4 mixtures of 2 s at 8 kHz, read through the recipe's own data
pipeline):

* ``plain``: ``speechbrain.core.Brain`` with the same forward pass and the
  mean negative SI-SNR as loss, its loader shuffling with SpeechBrain's
  sampler;
* ``mined``: the recipe's ``SeparationBrain`` (a ``HardMiningBrain``) with
  the loss limit, the threshold filter (-30), robust softmax reweighting
  whose temperature is set by a capacity controller, and the ISBL batch
  sampler with ``db_to_power`` scores, all built from the shared YAML
  fragments in ``hparams/``.

Both start from the same weights and seed. One step is what SpeechBrain's
fit loop does per batch: fetch the next batch from the training loader
(sampler draw, audio loading, collation) and ``fit_batch`` (forward,
per-example losses, mining, backward, clipping, Adam step). After a warm-up
(not counted) the two sides alternate in blocks (A B B A A B ...) so that
changes in machine load hit both. The overhead is reported from the pooled
medians and means of all step times, and per block pair (ratio of the two
block medians, for wall time and for process CPU time, which is less
sensitive to other jobs on the machine) with its spread and a bootstrap
interval over the pairs. A third comparison runs ``fit_batch`` of both
brains on one fixed batch, the plain model taking the mined model's weights
before each block pair: it isolates the brain's code path from the data
drawn and from the weights each side reached.

The mining pipeline is also timed on its own, without the model: per batch,
the ISBL draw, ``observe`` and the loss policies (bad-audio mask, threshold,
reweighting with the controller step, loss limit, backward through the
weighted sum), against a plain ``losses.mean()`` and its backward.

Prints a table and writes ``overhead_bench.json`` next to this script.
Usage: ``python benchmarks/overhead_bench.py [--blocks 16 --steps 8 --threads 1]``.
"""

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

from hardmine.synthetic.layouts import default_wsj0mix
from hardmine.tasks import separation

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "WSJ0Mix" / "separation"
BATCH_SIZE = 4
SIGNAL_LEN = 16000  # 2 s at 8 kHz

#: Every mining feature on, built from the project's YAML fragments.
MINING_YAML = """
batch_size: {batch_size}
seed: {seed}
loss_limit: !include:{root}/hparams/loss_limit.yaml
    loss_upper_lim: 999999
threshold_filter: !include:{root}/hparams/threshold.yaml
    threshold: -30
reweighting: !include:{root}/hparams/reweight.yaml
    mode: robust
    temperature: 2.0
    capacity: {capacity}
    capacity_lr: 0.1
mining_sampler: !include:{root}/hparams/isbl.yaml
    batch_size: !ref <batch_size>
    alpha: 0.75
    eps: 0.000001
    transform: db_to_power
    seed: !ref <seed>
"""


class PlainSeparationBrain(sb.Brain):
    """``sb.Brain`` running the recipe's forward pass with a mean loss."""

    separate = separation.SeparationBrain.separate
    compute_forward = separation.SeparationBrain.compute_forward

    def compute_objectives(self, predictions, batch, stage):
        estimates, targets = predictions
        return get_si_snr_with_pitwrapper(targets, estimates).mean()


class Stream:
    """Endless batches from a training loader, one epoch after the other."""

    def __init__(self, brain, loader):
        self.brain = brain
        self.loader = loader
        self.epoch = 1
        self._start_epoch()

    def _start_epoch(self):
        sampler = getattr(self.brain, "train_sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.iterator = iter(self.loader)

    def next(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.epoch += 1
            self._start_epoch()
            return next(self.iterator)


def load_model_hparams(work_dir, seed):
    """The recipe's SepFormer YAML with the tiny overrides, as train.py loads it."""
    hparams_file = RECIPE / "hparams" / "sepformer.yaml"
    # The overrides as SpeechBrain's command line turns them into YAML.
    _, _, tiny = sb.parse_arguments(
        [str(hparams_file), *separation.TINY_OVERRIDES["sepformer"]]
    )
    overrides = {
        **yaml.safe_load(tiny),
        "seed": seed,
        "output_folder": str(work_dir / "recipe"),
        "batch_size": BATCH_SIZE,
        "training_signal_len": SIGNAL_LEN,
        "num_workers": 0,
    }
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    separation.check_hparams(hparams)
    return hparams, overrides


def build_train_set(hparams, work_dir):
    sys.path.insert(0, str(RECIPE))
    from prepare_wsj0mix import prepare_wsjmix

    csv_files = prepare_wsjmix(
        datapath=default_wsj0mix(),
        savepath=str(work_dir / "csv"),
        n_spks=2,
        fs=8000,
        version="min",
    )
    return separation.build_datasets(hparams, csv_files)["train"]


def make_brains(hparams, mining, seed):
    run_opts = {"device": "cpu", "noprogressbar": True, "max_grad_norm": 5.0}
    modules = hparams["modules"]
    plain_modules = copy.deepcopy(modules)  # same initial weights
    mined = separation.SeparationBrain(
        modules=modules,
        opt_class=hparams["optimizer"],
        hparams={"num_spks": 2, "loss": hparams["loss"], **mining},
        run_opts=run_opts,
    )
    plain = PlainSeparationBrain(
        modules=plain_modules,
        opt_class=hparams["optimizer"],
        hparams={"num_spks": 2},
        run_opts=run_opts,
    )
    for brain in (plain, mined):
        brain.on_fit_start()
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        brain.modules.train()
    torch.manual_seed(seed)
    return plain, mined


def timed_step(brain, stream):
    """One training step; returns (wall s, process CPU s, loss)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    batch = stream.next()
    brain.step += 1
    loss = brain.fit_batch(batch)
    return (
        time.perf_counter() - start,
        time.process_time() - cpu_start,
        float(loss),
    )


def block_order(blocks):
    """A B, B A, A B, ...: each side goes first in half of the pairs."""
    order = []
    for i in range(blocks):
        pair = [("plain", i), ("mined", i)]
        order += pair if i % 2 == 0 else pair[::-1]
    return order


def pair_overheads(per_block):
    """Overhead of each block pair: median(mined block) / median(plain block) - 1."""
    return np.array(
        [
            np.median(bm) / np.median(bp) - 1.0
            for bp, bm in zip(per_block["plain"], per_block["mined"])
        ]
    )


def pair_summary(overheads, resamples, seed):
    """Mean, sd and range of per-pair overheads, with a bootstrap 95 % interval.

    The block pairs are resampled (with replacement), so the interval
    reflects how much the overhead moves from one stretch of machine load
    to the next.
    """
    rng = np.random.default_rng(seed)
    n = overheads.size
    means = overheads[rng.integers(0, n, (resamples, n))].mean(axis=1)
    return {
        "mean": float(overheads.mean()),
        "sd": float(overheads.std(ddof=1)) if n > 1 else 0.0,
        "min": float(overheads.min()),
        "max": float(overheads.max()),
        "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
        "per_pair": [float(v) for v in overheads],
    }


def same_state_ab(plain, mined, batch, pairs, steps):
    """``fit_batch`` of both brains on one batch from the same weights.

    Before each block pair the plain model takes the mined model's weights,
    so the two sides differ only in the brain's code path (mining on or
    off), not in the data or in the weights reached by training.

    Returns
    -------
    dict
        Side -> list of blocks, each an array of CPU seconds per step.
    """
    blocks = {"plain": [], "mined": []}
    brains = {"plain": plain, "mined": mined}
    for side in ("plain", "mined"):
        brains[side].fit_batch(batch)  # warm-up
    for side, i in block_order(pairs):
        if (side == "plain") == (i % 2 == 0):  # first block of the pair
            plain.modules.load_state_dict(mined.modules.state_dict())
        times = np.empty(steps)
        for k in range(steps):
            start = time.process_time()
            brains[side].step += 1
            brains[side].fit_batch(batch)
            times[k] = time.process_time() - start
        blocks[side].append(times)
    return blocks


def time_pipeline(mined, train_set, repeats, seed):
    """Per-batch cost of the mining work alone (no model), in microseconds."""
    sampler = mined.live_sampler
    ids_all = sampler.ids
    gen = torch.Generator().manual_seed(seed)

    def draw_stream():
        epoch = 1000
        while True:
            sampler.set_epoch(epoch)
            yield from iter(sampler)
            epoch += 1

    draws = draw_stream()

    class FakeBatch:
        def __init__(self, ids):
            self.id = ids
            self.audio_problem = [""] * len(ids)

    def losses_like():
        # Negative SI-SNR values in the range of an early tiny model (dB).
        return (torch.randn(BATCH_SIZE, generator=gen) * 3.0 - 2.0).requires_grad_()

    results = {}

    def run(name, body):
        times = np.empty(repeats)
        for k in range(repeats):
            start = time.perf_counter()
            body()
            times[k] = time.perf_counter() - start
        results[name] = {
            "median_us": float(np.median(times) * 1e6),
            "mean_us": float(times.mean() * 1e6),
        }

    def plain_reduce():
        losses_like().mean().backward()

    def draw_only():
        next(draws)

    def observe_only():
        ids = [ids_all[i] for i in next(draws)]
        sampler.observe(ids, losses_like().detach())

    def policies_only():
        losses = losses_like()
        batch = FakeBatch([ids_all[i] for i in range(BATCH_SIZE)])
        keep_sampler, mined.live_sampler = mined.live_sampler, None
        try:
            bad = mined._bad_audio_mask(batch, losses, sb.Stage.TRAIN)
            mined._training_loss(losses, batch, bad).backward()
        finally:
            mined.live_sampler = keep_sampler

    def full_pipeline():
        batch = FakeBatch([ids_all[i] for i in next(draws)])
        losses = losses_like()
        bad = mined._bad_audio_mask(batch, losses, sb.Stage.TRAIN)
        mined._training_loss(losses, batch, bad).backward()

    for name, body in (
        ("plain mean + backward", plain_reduce),
        ("ISBL draw", draw_only),
        ("ISBL observe", observe_only),
        (
            "policies (mask, threshold, reweight+controller, limit) + backward",
            policies_only,
        ),
        ("full mining pipeline (draw + observe + policies)", full_pipeline),
    ):
        body()  # warm-up
        run(name, body)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=16, help="block pairs")
    parser.add_argument("--steps", type=int, default=8, help="steps per block")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps per side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--capacity", type=float, default=0.2, help="KL capacity (nats)"
    )
    parser.add_argument("--pipeline-repeats", type=int, default=2000)
    parser.add_argument(
        "--same-state-pairs",
        type=int,
        default=8,
        help="block pairs of the same-batch, same-weights comparison",
    )
    parser.add_argument("--same-state-steps", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    if min(args.blocks, args.steps, args.threads, args.pipeline_repeats) < 1:
        parser.error("--blocks, --steps, --threads and --pipeline-repeats must be >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        hparams, overrides = load_model_hparams(work_dir, args.seed)
        mining = load_hyperpyyaml(
            MINING_YAML.format(
                root=ROOT,
                batch_size=BATCH_SIZE,
                seed=args.seed,
                capacity=args.capacity,
            )
        )
        train_set = build_train_set(hparams, work_dir)
        plain, mined = make_brains(hparams, mining, args.seed)
        streams = {
            "plain": Stream(
                plain,
                plain.make_dataloader(
                    train_set,
                    sb.Stage.TRAIN,
                    batch_size=BATCH_SIZE,
                    shuffle=True,
                    num_workers=0,
                ),
            ),
            "mined": Stream(
                mined,
                mined.make_dataloader(
                    train_set, sb.Stage.TRAIN, batch_size=BATCH_SIZE, num_workers=0
                ),
            ),
        }
        brains = {"plain": plain, "mined": mined}
        if type(mined.live_sampler).__name__ != "ISBLSampler":
            raise SystemExit("the mined brain did not build the ISBL sampler")
        shape = tuple(streams["plain"].next().mix_sig[0].shape)
        if shape != (BATCH_SIZE, SIGNAL_LEN):
            raise SystemExit(f"unexpected batch shape {shape}")

        for side in ("plain", "mined"):
            for _ in range(args.warmup):
                timed_step(brains[side], streams[side])

        per_block = {"plain": [], "mined": []}
        cpu_block = {"plain": [], "mined": []}
        losses = {"plain": [], "mined": []}
        cpu_start = time.process_time()
        wall_start = time.perf_counter()
        load_start = os.getloadavg()[0]
        for side, _ in block_order(args.blocks):
            times, cpu_times = np.empty(args.steps), np.empty(args.steps)
            for k in range(args.steps):
                times[k], cpu_times[k], loss = timed_step(brains[side], streams[side])
                losses[side].append(loss)
            per_block[side].append(times)
            cpu_block[side].append(cpu_times)
            print(
                f"  {side:5} block {len(per_block[side])}: median "
                f"{np.median(times) * 1e3:.1f} ms/step",
                flush=True,
            )
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start
        load_end = os.getloadavg()[0]

        fixed_batch = streams["plain"].next()
        same_state = same_state_ab(
            plain, mined, fixed_batch, args.same_state_pairs, args.same_state_steps
        )
        pipeline = time_pipeline(mined, train_set, args.pipeline_repeats, args.seed)
        mining_stats = mined._epoch_statistics()
        filtered = int(mining_stats.get("examples_filtered", 0))
        skipped = int(mining_stats.get("batches_skipped", 0))
        beta = float(mined.reweighting.controller.beta)

    sides = {}
    for side in ("plain", "mined"):
        allt = np.concatenate(per_block[side])
        allc = np.concatenate(cpu_block[side])
        sides[side] = {
            "steps": int(allt.size),
            "median_ms": float(np.median(allt) * 1e3),
            "mean_ms": float(allt.mean() * 1e3),
            "std_ms": float(allt.std(ddof=1) * 1e3),
            "cpu_median_ms": float(np.median(allc) * 1e3),
            "cpu_mean_ms": float(allc.mean() * 1e3),
            "block_medians_ms": [float(np.median(b) * 1e3) for b in per_block[side]],
            "block_means_ms": [float(b.mean() * 1e3) for b in per_block[side]],
            "step_times_ms": [round(float(t) * 1e3, 3) for t in allt],
            "step_cpu_ms": [round(float(t) * 1e3, 3) for t in allc],
            # Training sanity: mean loss (negative SI-SNR, dB) of the first
            # and last timed block.
            "loss_first_block": float(np.mean(losses[side][: args.steps])),
            "loss_last_block": float(np.mean(losses[side][-args.steps :])),
        }
    p, m = sides["plain"], sides["mined"]
    overhead_median = m["median_ms"] / p["median_ms"] - 1.0
    overhead_mean = m["mean_ms"] / p["mean_ms"] - 1.0
    overhead_cpu = m["cpu_median_ms"] / p["cpu_median_ms"] - 1.0
    paired = {
        "wall": pair_summary(pair_overheads(per_block), args.bootstrap, args.seed),
        "cpu": pair_summary(pair_overheads(cpu_block), args.bootstrap, args.seed + 1),
    }
    paired["cpu_same_batch_same_weights"] = pair_summary(
        pair_overheads(same_state), args.bootstrap, args.seed + 2
    )
    pipeline_full = pipeline["full mining pipeline (draw + observe + policies)"]
    plain_reduce = pipeline["plain mean + backward"]
    pipeline_share = (pipeline_full["median_us"] - plain_reduce["median_us"]) / (
        p["median_ms"] * 1e3
    )

    print()
    print(
        f"Tiny SepFormer, batch {BATCH_SIZE} x {SIGNAL_LEN / 8000:g} s at 8 kHz, "
        f"{args.threads} torch thread(s), {args.blocks} block pairs x {args.steps} steps"
    )
    header = (
        f"{'side':<8}{'steps':>6}{'median ms':>11}{'mean ms':>10}{'sd ms':>8}"
        f"{'CPU median ms':>15}"
    )
    print(header)
    print("-" * len(header))
    for side in ("plain", "mined"):
        s = sides[side]
        print(
            f"{side:<8}{s['steps']:>6}{s['median_ms']:>11.1f}{s['mean_ms']:>10.1f}"
            f"{s['std_ms']:>8.1f}{s['cpu_median_ms']:>15.1f}"
        )
    print()
    print(
        f"overhead of pooled steps: medians {overhead_median * 100:+.2f} %, "
        f"means {overhead_mean * 100:+.2f} %, CPU-time medians "
        f"{overhead_cpu * 100:+.2f} %"
    )
    for clock, label in (
        ("wall", "wall time"),
        ("cpu", "CPU time"),
        ("cpu_same_batch_same_weights", "CPU time, one batch, same weights"),
    ):
        r = paired[clock]
        print(
            f"overhead per block pair ({label}, ratio of block medians): mean "
            f"{r['mean'] * 100:+.2f} % [bootstrap 95 % {r['ci95'][0] * 100:+.2f} .. "
            f"{r['ci95'][1] * 100:+.2f} %], sd {r['sd'] * 100:.2f} %, range "
            f"{r['min'] * 100:+.2f} .. {r['max'] * 100:+.2f} %"
        )
    print()
    print(f"Mining pipeline alone ({args.pipeline_repeats} batches each, no model)")
    width = max(len(k) for k in pipeline)
    print(f"{'part':<{width}}{'median us':>11}{'mean us':>10}")
    for name, r in pipeline.items():
        print(f"{name:<{width}}{r['median_us']:>11.1f}{r['mean_us']:>10.1f}")
    print(
        f"pipeline minus plain mean = {pipeline_share * 100:.3f} % of a plain step "
        f"(median); during the timed steps: {filtered} examples filtered, "
        f"{skipped} batches skipped, controller temperature {beta:.3f}"
    )
    print(
        f"load average {load_start:.1f} -> {load_end:.1f}; process CPU "
        f"{cpu:.0f} s over {wall:.0f} s wall"
    )

    out = Path(__file__).with_suffix(".json")
    out.write_text(
        json.dumps(
            {
                "benchmark": "HardMiningBrain step overhead, tiny SepFormer",
                "python": platform.python_version(),
                "torch": torch.__version__,
                "speechbrain": sb.__version__,
                "machine": platform.machine(),
                "cpu_count_note": "shared 2-core machine; other jobs may run",
                "torch_threads": args.threads,
                "batch_size": BATCH_SIZE,
                "signal_len": SIGNAL_LEN,
                "model_overrides": {
                    k: v for k, v in overrides.items() if k not in ("output_folder",)
                },
                "mining": {k: repr(v) for k, v in mining.items()},
                "blocks": args.blocks,
                "steps_per_block": args.steps,
                "warmup_steps_per_side": args.warmup,
                "block_order": [s for s, _ in block_order(args.blocks)],
                "sides": sides,
                "overhead_pooled_median": overhead_median,
                "overhead_pooled_mean": overhead_mean,
                "overhead_pooled_cpu_median": overhead_cpu,
                "overhead_per_block_pair": paired,
                "pipeline_us": pipeline,
                "pipeline_share_of_plain_step": pipeline_share,
                "examples_filtered": filtered,
                "batches_skipped": skipped,
                "controller_temperature": beta,
                "wall_s": wall,
                "process_cpu_s": cpu,
                "load_average_1min": [load_start, load_end],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
