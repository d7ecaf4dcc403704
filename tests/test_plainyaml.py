"""The plain YAML reader types scalars as hyperpyyaml does (YAML 1.2)."""

import io

import pytest
import yaml
from hyperpyyaml import load_hyperpyyaml

from hardmine.plainyaml import PlainLoader, Tagged, TagLoader, read_fields

# Scalars on which YAML 1.1 (PyYAML's default) and YAML 1.2 (ruamel.yaml,
# hyperpyyaml) disagree, and some on which they agree.
SCALARS = [
    "yes", "no", "on", "off", "Yes", "NO", "y", "n", "true", "False", "TRUE",
    "1e-6", "-2.5E+3", "1.0e-06", ".inf", "-.Inf", "0.75", "3.", "1_000.5",
    "017", "0o17", "0x1F", "-12", "+7", "1_000", "0b101", "1:30", "190:20:30",
    "null", "~", "", "2026-12-03", "abc", "_unknown_", "1.2.3",
]  # fmt: skip


@pytest.mark.parametrize("loader", [TagLoader, PlainLoader])
def test_scalars_read_as_hyperpyyaml_reads_them(loader):
    text = "".join(f"k{i}: {s}\n" for i, s in enumerate(SCALARS))
    want = dict(load_hyperpyyaml(io.StringIO(text)))
    got = yaml.load(text, Loader=loader)
    assert got == want
    # Types too: True == 1 and 1.0 == 1 would hide a difference.
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}


def test_keyword_pool_names_survive_a_saved_hyperparams_file(tmp_path):
    """The Speech Commands keywords yes/no/on/off as pool names (pool_mix)."""
    path = tmp_path / "hyperparams.yaml"
    path.write_text(
        "seed: 3\n"
        "mining_sampler: !name:hardmine.isbl.ISBLSampler\n"
        "    pool_mix: {yes: 100, no: 100, on: 100, off: 100, _unknown_: 1002}\n"
        "    eps: 1e-6\n"
    )
    fields = read_fields(str(path))
    assert fields["mining_sampler"] == Tagged(
        "name:hardmine.isbl.ISBLSampler",
        {
            "pool_mix": {
                "yes": 100,
                "no": 100,
                "on": 100,
                "off": 100,
                "_unknown_": 1002,
            },
            "eps": 1e-6,
        },
    )
