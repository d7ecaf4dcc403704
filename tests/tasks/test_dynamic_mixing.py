"""Dynamic mixing: new mixtures every epoch from the training sources.

Tiny WSJ0-2mix and Libri2Mix layouts are generated in a temporary folder and
listed in a training CSV as the recipes' preparation writes it.
"""

import csv
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch

from hardmine.synthetic.layouts import make_librimix, make_wsj0mix
from hardmine.tasks.dynamic_mixing import (
    DynamicMixingDataset,
    SourceTable,
    build_dm_train_set,
    check_dm_fields,
    parse_mixture_id,
)
from hardmine.validation import ConfigError

N = 2000  # samples per file: 0.25 s at 8 kHz


def _write_csv(path, folder, num_spks, noise=False, mix_folder="mix"):
    names = sorted(os.listdir(os.path.join(folder, mix_folder)))
    fields = ["ID", "mix_wav"] + [f"s{i}_wav" for i in range(1, num_spks + 1)]
    fields += ["noise_wav"] if noise else []
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for name in names:
            row = {"ID": name[:-4], "mix_wav": os.path.join(folder, mix_folder, name)}
            for i in range(1, num_spks + 1):
                row[f"s{i}_wav"] = os.path.join(folder, f"s{i}", name)
            if noise:
                row["noise_wav"] = os.path.join(folder, "noise", name)
            writer.writerow(row)
    return str(path)


@pytest.fixture(scope="module")
def wsj(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dm_wsj")
    root = make_wsj0mix(
        str(tmp / "data"), sizes={"tr": 6, "cv": 0, "tt": 0}, seconds=0.25, seed=4
    )
    train = os.path.join(root, "wav8k", "min", "tr")
    return _write_csv(tmp / "train.csv", train, 2)


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dm_libri")
    root = make_librimix(
        str(tmp / "data"),
        sizes={"train": 4, "dev": 0, "test": 0},
        seconds=0.25,
        seed=2,
        with_metadata=False,
    )
    train = os.path.join(root, "wav8k", "min", "train-360")
    return _write_csv(tmp / "train.csv", train, 2, noise=True, mix_folder="mix_both")


def _hparams(**changes):
    return {
        "num_spks": 2,
        "sample_rate": 8000,
        "version": "min",
        "training_signal_len": None,
        "seed": 3,
        "dynamic_mixing": True,
        **changes,
    }


def _speakers(dataset, item):
    sources = parse_mixture_id(item["id"])[2]
    return dataset.sources.speaker_of[sources].tolist()


def test_sources_come_from_the_training_list(wsj):
    dataset = build_dm_train_set(_hparams(), wsj)
    table = dataset.sources
    # Six mixtures of two utterances each, every utterance distinct.
    assert len(table) == 12 and len(dataset) == 6
    assert all(len(i) == 8 and table.speaker_names[s] == i[:3]
               for i, s in zip(table.ids, table.speaker_of, strict=True))  # fmt: skip
    assert all(os.path.basename(p).count("_") == 3 for p in table.paths)


def test_every_epoch_gives_new_mixtures_of_distinct_speakers(wsj):
    dataset = build_dm_train_set(_hparams(dm_mixtures_per_epoch=10), wsj)
    assert len(dataset) == 10
    epochs = {}
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        epochs[epoch] = [dataset[i] for i in range(len(dataset))]
    for items in epochs.values():
        for item in items:
            assert item["audio_problem"] == ""
            first, second = _speakers(dataset, item)
            assert first != second
            sources = torch.stack([item["s1_sig"], item["s2_sig"]])
            # The mixture is the sum of its sources, and nothing clips.
            assert torch.allclose(item["mix_sig"], sources.sum(0), atol=1e-6)
            assert float(item["mix_sig"].abs().max()) <= 1.0
    ids = [{item["id"].split("-s", 1)[1] for item in epochs[e]} for e in (1, 2)]
    assert ids[0] != ids[1]  # other source pairs
    for a, b in zip(epochs[1], epochs[2], strict=True):
        assert not torch.equal(a["mix_sig"][:100], b["mix_sig"][:100])


def test_a_mixture_is_a_function_of_seed_epoch_and_slot(wsj):
    one = build_dm_train_set(_hparams(), wsj)
    two = build_dm_train_set(_hparams(), wsj)  # e.g. in a DataLoader worker
    one.set_epoch(3)
    two.set_epoch(3)
    for slot in (0, 5):
        a, b = one[slot], two[slot]
        assert a["id"] == b["id"]
        assert all(torch.equal(a[k], b[k]) for k in ("mix_sig", "s1_sig", "s2_sig"))
    # A plan (from the source sampler) gives the same item wherever it runs.
    plan = (3, 17, 0, 5)
    assert torch.equal(one[plan]["mix_sig"], two[plan]["mix_sig"])
    other = build_dm_train_set(_hparams(seed=4), wsj)
    other.set_epoch(3)
    assert not torch.equal(other[0]["mix_sig"], one[0]["mix_sig"])
    with pytest.raises(IndexError):
        one[len(one)]


def test_workers_load_what_the_main_process_loads(wsj):
    dataset = build_dm_train_set(_hparams(training_signal_len=1000), wsj)
    dataset.set_epoch(2)
    batches = {}
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=3, num_workers=workers, collate_fn=PaddedBatch
        )
        batches[workers] = list(loader)
    for a, b in zip(batches[0], batches[2], strict=True):
        assert a.id == b.id
        assert torch.equal(a.mix_sig.data, b.mix_sig.data)
        assert a.mix_sig.data.shape[1] == 1000


def test_lengths_follow_the_version_rule(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, length in enumerate((800, 1200, 2000)):
        paths.append(str(tmp_path / f"{i}.wav"))
        sf.write(paths[-1], 0.1 * rng.standard_normal(length), 8000)
    table = SourceTable(paths, ["a", "b", "c"], ["x", "y", "z"])
    for version, limit, expected in (
        ("min", None, 800),
        ("min", 500, 500),
        ("max", None, 2000),
        ("max", 1500, 1500),
    ):
        dataset = DynamicMixingDataset(
            table, 3, 8000, 4, version=version, training_signal_len=limit
        )
        item = dataset[0]
        assert item["mix_sig"].shape[0] == expected, (version, limit)
        if version == "max" and limit is None:
            # The shortest source (800 samples) is zero-padded at its end.
            index = parse_mixture_id(item["id"])[2].index(0)
            padded = item[f"s{index + 1}_sig"]
            assert float(padded[800:].abs().max()) == 0.0
            assert float(padded[:800].abs().max()) > 0.0


@pytest.mark.parametrize(("speed", "ratio"), [(90, 10 / 9), (110, 10 / 11)])
def test_speed_perturbation_changes_the_length_as_set(tmp_path, speed, ratio):
    rng = np.random.default_rng(1)
    paths = [str(tmp_path / f"{i}.wav") for i in range(2)]
    for path in paths:
        sf.write(path, 0.1 * rng.standard_normal(1800), 8000)
    table = SourceTable(paths, ["a", "b"], ["x", "y"])
    plain = DynamicMixingDataset(table, 2, 8000, 1)
    perturbed = DynamicMixingDataset(
        table, 2, 8000, 1, speed_perturb=True, speeds=[speed]
    )
    assert plain[0]["mix_sig"].shape[0] == 1800
    length = perturbed[0]["s1_sig"].shape[0]
    assert abs(length - 1800 * ratio) <= 1, length
    assert perturbed[0]["s1_sig"].shape == perturbed[0]["mix_sig"].shape


def test_a_broken_source_is_flagged_not_nan(wsj, tmp_path):
    dataset = build_dm_train_set(_hparams(), wsj)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    dataset.sources.paths[3] = str(broken)  # this dataset's own table
    item = dataset[(1, 0, 3, 0)]
    assert "broken.wav: unreadable" in item["audio_problem"]
    assert all(torch.isfinite(item[k]).all() for k in ("mix_sig", "s1_sig"))
    assert item["mix_sig"].shape == item["s2_sig"].shape
    assert dataset[(1, 1, 0, 5)]["audio_problem"] == ""


def test_librimix_mixtures_get_noise(libri):
    noisy = build_dm_train_set(_hparams(mixture="both"), libri)
    clean = build_dm_train_set(_hparams(mixture="clean"), libri)
    assert len(noisy.noise_paths) == 4 and not clean.noise_paths
    assert noisy.sources.speaker_names == sorted(
        {i.split("-")[0] for i in noisy.sources.ids}
    )
    for dataset, has_noise in ((noisy, True), (clean, False)):
        dataset.set_epoch(1)
        item = dataset[0]
        assert item["audio_problem"] == ""
        residual = item["mix_sig"] - item["s1_sig"] - item["s2_sig"]
        assert (float(residual.abs().max()) > 1e-3) == has_noise
        if has_noise:
            level = residual.abs().mean()
            assert 10 ** (-38 / 20) * 0.9 * 0.5 < level < 10 ** (-30 / 20) * 1.01


def test_a_source_folder_of_speakers_is_resampled(tmp_path):
    rng = np.random.default_rng(2)
    for speaker in ("103", "1034", "211"):
        chapter = tmp_path / "src" / speaker / "4211"
        chapter.mkdir(parents=True)
        for utt in range(2):
            sf.write(
                chapter / f"{speaker}-4211-{utt:04d}.flac",
                0.1 * rng.standard_normal(3200),
                16000,
            )
    (tmp_path / "src" / "README.txt").write_text("not a speaker")
    table = SourceTable.from_folder(str(tmp_path / "src"))
    assert table.speaker_names == ["103", "1034", "211"]
    assert table.ids[0] == "103/4211/103-4211-0000"
    dataset = DynamicMixingDataset(table, 2, 8000, 2)
    item = dataset[1]
    assert item["audio_problem"] == "" and item["mix_sig"].shape[0] == 1600
    with pytest.raises(ConfigError, match="^dm_source_folder: "):
        SourceTable.from_folder(str(tmp_path / "nowhere"))


def test_too_few_speakers_and_unreadable_names_are_config_errors(tmp_path):
    table = SourceTable(["a.wav", "b.wav"], ["a", "b"], ["x", "x"])
    with pytest.raises(ConfigError, match="^num_spks: .*2 distinct speakers"):
        DynamicMixingDataset(table, 2, 8000)
    with pytest.raises(ConfigError, match="^dynamic_mixing: cannot read 2 speakers"):
        SourceTable.from_rows([{"s1_wav": "/x/mix001.wav", "s2_wav": "/y"}], 2)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dynamic_mixing": "yes"}, "dynamic_mixing"),
        ({"dm_mixtures_per_epoch": 0}, "dm_mixtures_per_epoch"),
        ({"dm_gain_low": "loud"}, "dm_gain_low"),
        ({"dm_gain_low": -10.0, "dm_gain_high": -20.0}, "dm_gain_high"),
        ({"dm_noise_gain_high": float("nan")}, "dm_noise_gain_high"),
        ({"dm_source_folder": ""}, "dm_source_folder"),
        ({"speed_perturb": 1}, "speed_perturb"),
        ({"speed_perturb_speeds": []}, "speed_perturb_speeds"),
        ({"speed_perturb_speeds": [95, -5]}, "speed_perturb_speeds"),
        ({"dynamic_mixing": False, "speed_perturb": True}, "speed_perturb"),
        ({"dynamic_mixing": False, "dm_source_folder": "/x"}, "dm_source_folder"),
    ],
)
def test_fields_are_validated(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        check_dm_fields(_hparams(**changes))


def test_the_recipes_check_the_fields_before_preparing_data():
    from hardmine.tasks.separation import check_hparams

    valid = {
        "num_spks": 2,
        "sample_rate": 8000,
        "version": "min",
        "batch_size": 1,
        "N_epochs": 1,
        "lr": 0.001,
        "clip_grad_norm": 5,
        "kernel_size": 16,
        "dynamic_mixing": True,
    }
    check_hparams(valid)
    with pytest.raises(ConfigError, match="^dm_gain_low: "):
        check_hparams({**valid, "dm_gain_low": "x"})
    with pytest.raises(ConfigError, match="^speed_perturb: "):
        check_hparams({**valid, "dynamic_mixing": False, "speed_perturb": True})


def _tiny_brain(**hparams):
    from speechbrain.lobes.models.conv_tasnet import MaskNet
    from speechbrain.lobes.models.dual_path import Decoder, Encoder
    from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

    from hardmine.tasks.separation import SeparationBrain

    modules = {
        "encoder": Encoder(kernel_size=16, out_channels=8),
        "masknet": MaskNet(8, 8, 8, 3, 1, 1, 2),
        "decoder": Decoder(
            in_channels=8, out_channels=1, kernel_size=16, stride=8, bias=False
        ),
    }
    hparams = {"num_spks": 2, "loss": get_si_snr_with_pitwrapper, **hparams}
    return SeparationBrain(modules, hparams=hparams, run_opts={"device": "cpu"})


def test_the_brain_batches_dm_items_and_hands_the_dataset_its_epoch(wsj):
    import speechbrain as sb

    dataset = build_dm_train_set(_hparams(), wsj)
    brain = _tiny_brain()
    loader = brain.make_dataloader(dataset, sb.Stage.TRAIN, batch_size=3)
    brain.on_stage_start(sb.Stage.TRAIN, 3)
    assert dataset.epoch == 3
    batch = next(iter(loader))
    assert isinstance(batch, PaddedBatch) and len(batch.id) == 3
    assert [parse_mixture_id(i)[:2] for i in batch.id] == [(3, 0), (3, 1), (3, 2)]
    assert batch.audio_problem == ["", "", ""]


def test_a_mining_sampler_of_stored_mixtures_is_refused(wsj):
    import functools

    import speechbrain as sb

    from hardmine.isbl import ISBLSampler

    dataset = build_dm_train_set(_hparams(), wsj)
    brain = _tiny_brain(mining_sampler=functools.partial(ISBLSampler, batch_size=2))
    with pytest.raises(ConfigError, match="^sampler: with dynamic_mixing: True"):
        brain.make_dataloader(dataset, sb.Stage.TRAIN, batch_size=2)
