"""hardmine as an installed wheel: a recipe in an unrelated folder mines with it.

Builds the wheel from the sources, installs it into a scratch folder, and in
a folder outside the repository runs the README's "Mining from your own
recipe" example: ``python -m hardmine.fragments --copy hparams/mining``,
then one training step of a HardMiningBrain subclass whose YAML includes the
copied fragments. The child processes run ``python -S`` with an explicit
``PYTHONPATH`` (the scratch install, then the virtualenv's site-packages), so
no ``.pth`` file is processed: the editable install of this checkout (a
``__editable__`` finder loaded from a ``.pth`` file) cannot shadow the wheel,
and each child checks that every hardmine module it loaded comes from the
scratch install.
"""

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

TRAIN_PY = '''\
"""The README's train.py sketch, completed with a small random data set."""
import json
import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset

import hardmine
from hardmine import HardMiningBrain


class MyBrain(HardMiningBrain):
    def compute_forward(self, batch, stage):
        return self.modules.model(batch.x.data)

    def compute_objectives(self, predictions, batch, stage):
        return ((predictions - batch.y.data) ** 2).mean(dim=1)  # shape [B]


def random_set(n, dim):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, 1, generator=g)
    data = {}
    for i in range(n):
        x = torch.randn(dim, generator=g)
        data[f"ex{i}"] = {"x_raw": x.tolist(), "y_raw": (x @ w).tolist()}
    dataset = DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("x_raw", "y_raw")
    @sb.utils.data_pipeline.provides("x", "y")
    def tensors(x, y):
        yield torch.tensor(x)
        yield torch.tensor(y)

    dataset.add_dynamic_item(tensors)
    dataset.set_output_keys(["id", "x", "y"])
    return dataset


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    model = hparams["model"]
    train_set = random_set(32, model.in_features)
    brain = MyBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
    )
    before = [p.detach().clone() for p in model.parameters()]
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        train_loader_kwargs={"batch_size": hparams["batch_size"]},
    )
    policies = (brain.loss_limit, brain.threshold_filter, brain.reweighting)
    print("REPORT " + json.dumps({
        "hardmine": hardmine.__file__,
        "modules": sorted(
            getattr(m, "__file__", None) or "?"
            for name, m in sys.modules.items()
            if name == "hardmine" or name.startswith("hardmine.")
        ),
        "sys_path": sys.path,
        "meta_path": [repr(f) for f in sys.meta_path],
        "optimizer_step": brain.optimizer_step,
        "weights_changed": any(
            not torch.equal(a, b) for a, b in zip(before, model.parameters())
        ),
        "sampler": type(brain.live_sampler).__module__ + "." + type(brain.live_sampler).__name__,
        "policies": [type(p).__module__ for p in policies],
        "threshold": brain.threshold_filter.threshold,
        "reweight_mode": brain.reweighting.mode,
        "alpha": hparams["mining_sampler"].keywords["alpha"],
        "examples": brain.mining_stats["examples"],
        "stats_file": os.path.isfile(
            os.path.join(hparams["output_folder"], "mining_stats.jsonl")
        ),
    }))
'''


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def _bdist_wheel_available():
    """Whether the virtualenv can build a wheel without build isolation."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(x) for x in re.findall(r"\d+", version)[:2])
    return (major, minor) >= (70, 1)  # bdist_wheel moved into setuptools


def build_and_install(tmp_path):
    """Build the wheel from a copy of the sources; install it into a scratch folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # A copy, so that building writes no build/ or egg-info into the checkout.
    shutil.copytree(
        ROOT / "hardmine",
        src / "hardmine",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dist = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist)]
    if _bdist_wheel_available():
        # The virtualenv's setuptools (pyproject's build-system) builds it.
        cmd.append("--no-build-isolation")
    _run([*cmd, str(src)])
    (wheel,) = dist.glob("hardmine-*.whl")
    scratch = tmp_path / "scratch"
    _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile"]
        + ["--target", str(scratch), str(wheel)]
    )
    return wheel, scratch


def isolated_env(scratch):
    """Environment for ``python -S``: the scratch install, then the site-packages."""
    paths = sysconfig.get_paths()
    site_dirs = list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(scratch), *site_dirs])
    env["PYTHONNOUSERSITE"] = "1"
    return env


def readme_recipe_yaml():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(
        r"^## Mining from your own recipe\n(.*?)(?=^## )", text, re.M | re.S
    ).group(1)
    (yaml_text,) = re.findall(r"^```yaml\n(.*?)^```", section, re.M | re.S)
    return yaml_text


def test_wheel_recipe_outside_the_repository(tmp_path):
    wheel, scratch = build_and_install(tmp_path)
    # The wheel carries the fragments as package data.
    installed = scratch / "hardmine" / "hparams"
    assert sorted(p.name for p in installed.glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "hardmine" / "hparams").glob("*.yaml")
    )
    assert not (ROOT / "build").exists()

    recipe = tmp_path / "elsewhere" / "my_recipe"
    (recipe / "hparams").mkdir(parents=True)
    assert ROOT not in recipe.resolve().parents
    env = isolated_env(scratch)
    python = [sys.executable, "-S"]

    printed = _run([*python, "-m", "hardmine.fragments", "--path"], cwd=recipe, env=env)
    assert printed.stdout.strip() == str(installed)
    _run(
        [*python, "-m", "hardmine.fragments", "--copy", "hparams/mining"],
        cwd=recipe,
        env=env,
    )
    for fragment in installed.glob("*.yaml"):
        copied = recipe / "hparams" / "mining" / fragment.name
        assert copied.read_bytes() == fragment.read_bytes()

    (recipe / "hparams" / "train.yaml").write_text(readme_recipe_yaml())
    (recipe / "train.py").write_text(TRAIN_PY)
    done = _run(
        [*python, "train.py", "hparams/train.yaml", "--device", "cpu"]
        + ["--optimizer_step_limit", "1", "--isbl_alpha", "0.5", "--noprogressbar"],
        cwd=recipe,
        env=env,
        timeout=300,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("REPORT "))
    report = json.loads(line[len("REPORT ") :])

    # Every hardmine module came from the wheel, none from this checkout.
    assert Path(report["hardmine"]).is_relative_to(scratch)
    assert report["modules"] and all(
        Path(f).is_relative_to(scratch) for f in report["modules"]
    )
    assert not any("editable" in f.lower() for f in report["meta_path"])
    assert not any(p and Path(p).resolve() == ROOT for p in report["sys_path"])

    # One training step with every fragment switched on.
    assert report["optimizer_step"] == 1 and report["weights_changed"]
    assert report["sampler"] == "hardmine.isbl.ISBLSampler"
    assert report["policies"] == [
        "hardmine.loss_limit",
        "hardmine.threshold",
        "hardmine.reweighting",
    ]
    assert report["threshold"] == pytest.approx(1e-4)
    assert report["reweight_mode"] == "robust"
    assert report["alpha"] == 0.5  # the command-line handle reached the fragment
    assert report["examples"] == 8  # one batch of the YAML's batch_size
    assert report["stats_file"]
