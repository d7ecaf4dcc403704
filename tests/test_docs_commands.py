"""Every shell command the documentation shows still fits the code.

The ```bash blocks of README.md, benchmarks/README.md and docs/*.md are read
command by command (``cd`` is followed). What each kind of command is checked
against:

- ``make X``: the Makefile has the target (``make test`` is CI itself);
- a recipe's ``train.py`` (also under ``torchrun``): the YAML file exists and
  loads with hyperpyyaml with the command's own overrides, so every handle it
  names exists and every value passes its checks (training itself needs the
  corpus the command names; tests/recipes trains each recipe);
- ``python -m module ...`` and ``python <script>.py ...``: the module or
  script exists and declares every option the command gives (read from its
  source, so the check needs no run).

The "Comparing variants" commands also run as written in
tests/tools/test_compare.py.
"""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
DOCUMENTS += sorted((ROOT / "docs").glob("*.md"))


def bash_commands():
    """(document, cwd, argv) for every command of every ```bash block."""
    out = []
    for doc in DOCUMENTS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        inside, lang, cwd, pending = False, "", ROOT, ""
        for line in lines:
            if line.startswith("```"):
                inside, lang = (not inside), line[3:].strip()
                cwd = ROOT
                continue
            if not inside or lang not in ("bash", "sh"):
                continue
            text = pending + line.split(" #")[0].rstrip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if not text.strip() or text.strip().startswith("#"):
                continue
            argv = shlex.split(text)
            if argv[0] == "cd":  # a recipe folder, or the user's own folder
                cwd = (cwd / argv[1]).resolve()
                continue
            if argv[0] in ("ln", "cp", "mkdir", "export"):
                continue  # plain shell, nothing of the project's to check
            out.append((doc.name, cwd, argv))
    return out


COMMANDS = bash_commands()


def _id(cmd):
    return f"{cmd[0]}: {' '.join(cmd[2])[:60]}"


def test_the_documents_show_commands():
    kinds = {argv[0] for _, _, argv in COMMANDS}
    assert {"make", "python"} <= kinds, kinds


def _strip_python(argv):
    while argv and (argv[0] in ("nice", "-n") or argv[0].lstrip("-").isdigit()):
        argv = argv[1:]
    if argv and argv[0].endswith("python") or argv and argv[0].endswith("python3"):
        return argv[1:]
    if argv and argv[0] == "torchrun":
        rest = argv[1:]
        while rest and rest[0].startswith("--"):
            rest = rest[2:] if "=" not in rest[0] else rest[1:]
        return rest
    return None


@pytest.mark.slow
@pytest.mark.parametrize("cmd", COMMANDS, ids=[_id(c) for c in COMMANDS])
def test_documented_command_fits_the_code(cmd, tmp_path):
    doc, cwd, argv = cmd
    if not cwd.is_dir():  # the user's own recipe folder
        cwd = tmp_path
    if argv[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert argv[1] in targets, f"{doc}: Makefile has no target {argv[1]}"
        return
    args = _strip_python(argv)
    assert args is not None, f"{doc}: unrecognised command {argv}"
    if args[0] == "-m":
        spec = importlib.util.find_spec(args[1])
        assert spec, f"{doc}: no module {args[1]}"
        source, options = Path(spec.origin).read_text(), args[2:]
    else:
        script = (cwd / args[0]).resolve()
        assert script.exists(), f"{doc}: no script {args[0]} in {cwd}"
        if script.name == "train.py":
            hparams_file, _, overrides = sb.parse_arguments(args[1:])
            overrides = overrides.replace("results/", f"{tmp_path}/results/")
            with open(cwd / hparams_file) as fin:
                load_hyperpyyaml(fin, overrides)
            return
        source, options = script.read_text(), args[1:]
        # A thin entry point parses its options in the module it runs.
        for package, name in re.findall(
            r"^from (hardmine[\w.]*) import (\w+)$", source, re.M
        ):
            if importlib.util.find_spec(package).submodule_search_locations:
                spec = importlib.util.find_spec(f"{package}.{name}")
                if spec is not None:
                    source += Path(spec.origin).read_text()
    if "--" in options:  # what follows goes on to the recipe's train.py
        options = options[: options.index("--")]
    for option in (a.split("=")[0] for a in options if a.startswith("--")):
        assert f'"{option}"' in source, f"{doc}: {args[:2]} declares no {option}"
