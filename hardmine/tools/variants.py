"""Train several variants of one recipe under equal conditions, then compare them.

Usage::

    python -m hardmine.tools.variants recipes/WSJ0Mix/separation/train.py \\
        hparams/sepformer.yaml hparams/sepformer_isbl.yaml \\
        --seeds 1 2 3 --step-budget 2000 --out results/isbl_vs_baseline \\
        -- --N_encoder_out 64 --intra_layers 1 --inter_layers 1 --dual_layers 2 \\
        --nhead 4 --d_ffn 256 --chunk_size 100 --data_folder /data/wsj0-mix/2speakers

Every variant YAML is trained once per seed, one run after the other, each in
``<out>/<variant>/<seed>/`` (``<variant>`` is the YAML file name without
extension), with the same seed (``--seed``), the same budget and the same
extra overrides (everything after ``--``, passed to every run unchanged). The
budget is SpeechBrain's ``--optimizer_step_limit`` (``--step-budget``) and/or
the recipe's epoch count (``--epochs``, written to the field that the YAML's
``epoch_counter`` limit refers to, e.g. ``N_epochs`` or
``number_of_epochs``). Variant YAML paths are taken relative to the current
folder, or else to the recipe's folder; the runs start in the recipe's folder,
as when the recipe is run by hand.

Each run's console output goes to ``<run>/variants_console.txt`` and its wall
time, command and exit status to ``<run>/run_info.json``. A run whose
``test_results.csv`` already exists is not repeated (``--rerun`` forces it;
SpeechBrain then resumes from the run's last checkpoint). A failed run is
reported and the others still run. Finally :func:`hardmine.tools.compare.compare`
compares all runs, writing to ``<out>/compare``.

Example
-------
>>> plan = plan_runs("train.py", ["hparams/a.yaml", "hparams/b.yaml"], [1, 2], "/out",
...                  step_budget=50, check_files=False)
>>> [(r.variant, r.seed) for r in plan]
[('a', 1), ('a', 2), ('b', 1), ('b', 2)]
>>> plan[0].command[2:]
['hparams/a.yaml', '--seed', '1', '--output_folder', '/out/a/1', '--optimizer_step_limit', '50']
"""

import argparse
import json
import os
import subprocess
import sys
import time

from hardmine.plainyaml import Tagged, read_fields
from hardmine.validation import ConfigError, check_int

__all__ = [
    "RunSpec",
    "epoch_field",
    "plan_runs",
    "run_variants",
    "console_tail",
    "main",
]


class RunSpec:
    """One training run: variant name, seed, output folder and command.

    Example
    -------
    >>> RunSpec("isbl", 1, "/out/isbl/1", ["python", "train.py"], "/recipe")
    RunSpec('isbl', seed=1, output_folder='/out/isbl/1')
    """

    def __init__(self, variant, seed, output_folder, command, cwd):
        self.variant = variant
        self.seed = seed
        self.output_folder = output_folder
        self.command = command
        self.cwd = cwd

    def __repr__(self):
        return (
            f"RunSpec({self.variant!r}, seed={self.seed}, "
            f"output_folder={self.output_folder!r})"
        )


def epoch_field(hparams_file):
    """Name of the field holding a recipe's epoch count.

    It is the field the ``epoch_counter``'s ``limit`` refers to
    (``limit: !ref <N_epochs>``), or a plain ``N_epochs`` /
    ``number_of_epochs`` field.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "r.yaml")
    ...     with open(path, "w") as f:
    ...         _ = f.write("n_ep: 3\\nepoch_counter: !new:x.Counter\\n  limit: !ref <n_ep>\\n")
    ...     epoch_field(path)
    'n_ep'
    """
    fields = read_fields(hparams_file)
    counter = fields.get("epoch_counter")
    if isinstance(counter, Tagged) and isinstance(counter.value, dict):
        limit = counter.value.get("limit")
        if isinstance(limit, Tagged) and limit.tag == "ref":
            ref = str(limit.value).strip()
            if ref.startswith("<") and ref.endswith(">") and ref[1:-1] in fields:
                return ref[1:-1]
    for name in ("N_epochs", "number_of_epochs", "epochs"):
        if name in fields and not isinstance(fields[name], Tagged):
            return name
    raise ConfigError(
        "--epochs",
        f"cannot tell which field of {hparams_file} holds the epoch count "
        "(no epoch_counter limit referring to a plain field)",
    )


def _variant_file(path, recipe_dir, check):
    if not check:
        return path
    for candidate in (path, os.path.join(recipe_dir, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(
        f"variant YAML {path} not found (looked in the current folder and in {recipe_dir})"
    )


def plan_runs(
    train_script,
    variant_files,
    seeds,
    out,
    step_budget=None,
    epochs=None,
    extra=(),
    python=None,
    check_files=True,
    names=None,
    seed_folders=True,
):
    """The runs to do, in order (variant by variant, seeds inside).

    Arguments
    ---------
    train_script : str
        The recipe's ``train.py``.
    variant_files : list of str
        YAML files, one per variant; their names (without extension) must
        differ.
    seeds : list of int
        Seeds; every variant runs with each.
    out : str
        Root of the output folders.
    step_budget : int, optional
        ``--optimizer_step_limit`` of every run.
    epochs : int, optional
        Epoch count of every run.
    extra : list of str
        Further command-line arguments for every run.
    python : str, optional
        Interpreter (default: the current one).
    check_files : bool
        Whether to check that the files exist (and resolve them).
    names : list of str, optional
        Variant names, one per file (default: the file names without
        extension).
    seed_folders : bool
        True: runs go to ``<out>/<variant>/<seed>``; False (one seed only):
        to ``<out>/<variant>``.

    Returns
    -------
    list of RunSpec

    Example
    -------
    >>> plan = plan_runs("train.py", ["a.yaml", "b.yaml"], [7], "/out", check_files=False,
    ...                  names=["baseline", "mined"], seed_folders=False)
    >>> [(r.variant, r.output_folder) for r in plan]
    [('baseline', '/out/baseline'), ('mined', '/out/mined')]
    """
    if not variant_files:
        raise ConfigError("variants", "give at least one variant YAML file")
    if not seeds:
        raise ConfigError("--seeds", "give at least one seed")
    seeds = [check_int("--seeds", s, minimum=0) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds", f"repeated seed in {seeds}")
    if step_budget is not None:
        step_budget = check_int("--step-budget", step_budget, minimum=1)
    if epochs is not None:
        epochs = check_int("--epochs", epochs, minimum=1)
    if check_files:
        if not os.path.isfile(train_script):
            raise FileNotFoundError(f"recipe script {train_script} does not exist")
        train_script = os.path.abspath(train_script)
    recipe_dir = os.path.dirname(train_script) or "."
    out = os.path.abspath(out) if check_files else out
    python = python or sys.executable

    if not seed_folders and len(seeds) > 1:
        raise ConfigError("--seeds", "several seeds need a folder per seed")
    if names is None:
        names = [os.path.splitext(os.path.basename(p))[0] for p in variant_files]
    elif len(names) != len(variant_files):
        raise ConfigError(
            "names", f"{len(names)} names for {len(variant_files)} variant files"
        )
    files = {}
    for name, path in zip(names, variant_files):
        if name in files:
            raise ConfigError(
                "variants", f"{files[name]} and {path} would share the folder {name}/"
            )
        files[name] = path

    plan = []
    for name, path in files.items():
        yaml_path = _variant_file(path, recipe_dir, check_files)
        budget = []
        if step_budget is not None:
            budget += ["--optimizer_step_limit", str(step_budget)]
        if epochs is not None:
            budget += [f"--{epoch_field(yaml_path)}", str(epochs)]
        for seed in seeds:
            folder = os.path.join(out, name)
            if seed_folders:
                folder = os.path.join(folder, str(seed))
            command = [python, train_script, yaml_path, "--seed", str(seed)]
            command += ["--output_folder", folder] + budget + list(extra)
            plan.append(RunSpec(name, seed, folder, command, recipe_dir))
    return plan


def _done(spec):
    return os.path.isfile(os.path.join(spec.output_folder, "test_results.csv"))


def console_tail(path, lines=15):
    """The last ``lines`` lines of a run's console file (empty if unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def run_variants(plan, rerun=False, echo=print, env=None, progress=None):
    """Run the planned trainings one after the other.

    Arguments
    ---------
    plan : list of RunSpec
        From :func:`plan_runs`.
    rerun : bool
        Run again even if a run's test results exist (SpeechBrain then
        resumes from the run's last checkpoint).
    echo : callable
        Receives each status message.
    env : dict, optional
        Environment of the runs (default: this process's).
    progress : callable, optional
        ``progress(spec, line)`` receives every line of a run's console
        output as it comes (all of it also goes to ``variants_console.txt``).

    Returns
    -------
    list of dict
        Per run: ``variant``, ``seed``, ``output_folder``, ``status``
        (``"done"``, ``"skipped"`` or ``"failed"``), ``returncode``,
        ``wall_time_s``.
    """
    outcomes = []
    total = len(plan)
    for n, spec in enumerate(plan, start=1):
        tag = f"[{n}/{total}] {spec.variant} seed {spec.seed}"
        if not rerun and _done(spec):
            echo(f"{tag}: already has test results in {spec.output_folder}, skipped")
            outcomes.append(
                {
                    "variant": spec.variant,
                    "seed": spec.seed,
                    "output_folder": spec.output_folder,
                    "status": "skipped",
                    "returncode": None,
                    "wall_time_s": None,
                }
            )
            continue
        os.makedirs(spec.output_folder, exist_ok=True)
        console = os.path.join(spec.output_folder, "variants_console.txt")
        echo(f"{tag}: training in {spec.output_folder}")
        start = time.perf_counter()
        with open(console, "w", encoding="utf-8") as handle:
            proc = subprocess.Popen(
                spec.command,
                cwd=spec.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                errors="replace",
                bufsize=1,
            )
            for line in proc.stdout:
                handle.write(line)
                if progress is not None:
                    progress(spec, line.rstrip("\n"))
            returncode = proc.wait()
        elapsed = time.perf_counter() - start
        status = "done" if returncode == 0 else "failed"
        info = {
            "variant": spec.variant,
            "seed": spec.seed,
            "command": spec.command,
            "cwd": spec.cwd,
            "returncode": returncode,
            "wall_time_s": elapsed,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with open(
            os.path.join(spec.output_folder, "run_info.json"), "w", encoding="utf-8"
        ) as handle:
            json.dump(info, handle, indent=2)
            handle.write("\n")
        if status == "done":
            echo(f"{tag}: finished in {elapsed:.1f} s")
        else:
            echo(
                f"{tag}: FAILED (exit {returncode}) after {elapsed:.1f} s; "
                f"last lines of {console}:\n{console_tail(console)}"
            )
        outcomes.append(
            {
                "variant": spec.variant,
                "seed": spec.seed,
                "output_folder": spec.output_folder,
                "status": status,
                "returncode": returncode,
                "wall_time_s": elapsed,
            }
        )
    return outcomes


def main(argv=None, echo=print):
    """Command line: plan, run, then compare."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m hardmine.tools.variants",
        description="Train variants of one recipe with the same seeds and budget, "
        "one after the other, then compare them. Arguments after '--' go to every run.",
    )
    parser.add_argument("train_script", help="the recipe's train.py")
    parser.add_argument("variants", nargs="+", help="variant YAML files")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234])
    parser.add_argument("--step-budget", type=int, help="optimizer steps per run")
    parser.add_argument("--epochs", type=int, help="epoch count per run")
    parser.add_argument(
        "--out", default="results/variants", help="root of the run folders"
    )
    parser.add_argument(
        "--rerun", action="store_true", help="run again even if test results exist"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands and stop"
    )
    parser.add_argument("--top", type=int, default=5, help="hardest examples shown")
    args = parser.parse_args(argv)
    try:
        plan = plan_runs(
            args.train_script,
            args.variants,
            args.seeds,
            args.out,
            step_budget=args.step_budget,
            epochs=args.epochs,
            extra=extra,
        )
    except (OSError, ValueError) as err:
        echo(f"error: {err}")
        return 2
    if args.dry_run:
        for spec in plan:
            echo(f"(cd {spec.cwd} && {' '.join(spec.command)})")
        return 0
    outcomes = run_variants(plan, rerun=args.rerun, echo=echo)
    failed = [o for o in outcomes if o["status"] == "failed"]
    usable = [o["output_folder"] for o in outcomes if o["status"] != "failed"]
    code = 1 if failed else 0
    if failed:
        echo(
            "Failed runs: "
            + ", ".join(f"{o['variant']} seed {o['seed']}" for o in failed)
        )
    if usable:
        from hardmine.tools.compare import compare

        out = os.path.join(os.path.abspath(args.out), "compare")
        try:
            compare(usable, out, top=args.top, echo=echo)
        except (OSError, ValueError) as err:
            echo(f"error while comparing: {err}")
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
