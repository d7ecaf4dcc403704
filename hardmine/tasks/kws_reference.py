"""Reference (holdout) losses for keyword spotting: what training cannot remove.

The ISBL sampler can score an example by its loss in excess of a reference
loss (``isbl_reference_epochs`` in the KWS recipe, the sampler's
``reference``): the part of the loss that training can still remove, in the
spirit of RHO-LOSS (Mindermann et al., 2022). A mislabelled clip or a clip
drowned in noise keeps a high loss under any model, so its reference loss is
high too and it stops attracting the draws; a learnable clip the model has
not learned yet keeps a large excess.

:func:`write_reference_losses` makes the references by K-fold holdout on the
training set itself, so no other data is needed and none leaks in: the
examples are split into ``folds`` parts (seeded), and for each part a copy
of the recipe's freshly initialised model is trained on the other parts for
``epochs`` epochs (the recipe's optimizer, batch size and learning rate, no
augmentation, shuffled with the seed) and then scores the held-out part. The
result, one row ``ID, loss`` per training example, goes to a CSV file that
the sampler reads; a run that finds the file from the same settings keeps it.

Example
-------
>>> folds_of(["a", "b", "c", "d", "e"], folds=2, seed=0).tolist()
[1, 0, 0, 0, 1]
"""

import copy
import csv
import json
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from speechbrain.dataio.batch import PaddedBatch

from hardmine.tasks.kws import log_posteriors
from hardmine.validation import ConfigError, check_int

__all__ = ["folds_of", "reference_file", "write_reference_losses"]

logger = logging.getLogger(__name__)


def reference_file(epochs, path):
    """``path`` when reference losses are asked for (``epochs > 0``), else None.

    The recipes pass this to the sampler's ``reference`` so that
    ``isbl_reference_epochs: 0`` leaves the sampler as it is.

    Example
    -------
    >>> reference_file(0, "ref.csv") is None, reference_file(2, "ref.csv")
    (True, 'ref.csv')
    """
    epochs = check_int("isbl_reference_epochs", epochs, minimum=0)
    return os.fspath(path) if epochs > 0 else None


def folds_of(ids, folds, seed):
    """Fold number of each id: a seeded split into ``folds`` near-equal parts."""
    folds = check_int("isbl_reference_folds", folds, minimum=2)
    if len(ids) < folds:
        raise ConfigError(
            "isbl_reference_folds",
            f"{folds} folds need {folds} examples, got {len(ids)}",
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    fold = np.empty(len(ids), dtype=np.int64)
    fold[order] = np.arange(len(ids)) % folds
    return fold


def _loader(dataset, indices, batch_size, shuffle, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, [int(i) for i in indices]),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=PaddedBatch,
        drop_last=shuffle and len(indices) > batch_size,  # BatchNorm: no batch of 1
    )


def _batch_losses(modules, batch, device):
    wavs, lens = batch.sig
    logp = log_posteriors(modules, wavs.to(device), lens.to(device))
    targets = batch.command_encoded.data.reshape(-1).to(device)
    return F.nll_loss(logp, targets, reduction="none")


def write_reference_losses(
    path,
    modules,
    opt_class,
    train_data,
    epochs,
    folds=2,
    seed=0,
    batch_size=32,
    lr=None,
    device="cpu",
):
    """Train the K holdout models and write each training example's loss to ``path``.

    Arguments
    ---------
    path : str
        CSV file to write (columns ``ID``, ``loss``, ``fold``); a JSON file
        next to it records the settings, and a run with the same settings
        keeps the existing file.
    modules : dict
        The recipe's modules (``compute_features``, ``mean_var_norm``,
        ``embedding_model``, ``classifier``), copied before training.
    opt_class : callable
        The recipe's optimizer factory (takes the parameters).
    train_data : DynamicItemDataset
        The training set (items with ``id``, ``sig``, ``command_encoded``).
    epochs : int
        Training epochs of each holdout model (>= 1).
    folds : int
        Number of parts (>= 2): each model trains on ``folds - 1`` of them.
    seed : int
        Seed of the split, the initial weights' copies and the shuffling.
    batch_size : int
        Examples per batch.
    lr : float, optional
        Learning rate (None: the optimizer factory's).
    device : str
        Where to train.

    Returns
    -------
    dict
        Example id -> reference loss.
    """
    epochs = check_int("isbl_reference_epochs", epochs, minimum=1)
    ids = list(train_data.data_ids)
    settings = {
        "epochs": epochs,
        "folds": folds,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "examples": len(ids),
    }
    meta = os.path.splitext(path)[0] + ".json"
    if os.path.isfile(path) and os.path.isfile(meta):
        with open(meta, encoding="utf-8") as f:
            if json.load(f) == settings:
                with open(path, newline="", encoding="utf-8") as g:
                    return {row["ID"]: float(row["loss"]) for row in csv.DictReader(g)}
    fold = folds_of(ids, folds, seed)
    position = {name: i for i, name in enumerate(ids)}
    losses = np.full(len(ids), np.nan)
    rng_state = torch.get_rng_state()  # the run itself starts as without references
    for k in range(folds):
        torch.manual_seed(seed + k)
        model = torch.nn.ModuleDict(copy.deepcopy(dict(modules))).to(device)
        options = {} if lr is None else {"lr": lr}
        optimizer = opt_class(model.parameters(), **options)
        train_idx, held_idx = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model.train()
        for epoch in range(epochs):
            for batch in _loader(train_data, train_idx, batch_size, True, seed + epoch):
                loss = _batch_losses(model, batch, device).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            for batch in _loader(train_data, held_idx, batch_size, False, seed):
                values = _batch_losses(model, batch, device).cpu().numpy()
                losses[[position[name] for name in batch.id]] = values
        logger.info(
            "reference fold %d/%d: %d examples, mean held-out loss %.3f",
            k + 1,
            folds,
            held_idx.size,
            float(np.nanmean(losses[held_idx])),
        )
    torch.set_rng_state(rng_state)
    bad = [ids[i] for i in np.flatnonzero(~np.isfinite(losses))]
    if bad:
        # An unreadable clip scores its reference as 0: its excess is its loss,
        # and the sampler's quarantine handles a non-finite training loss.
        logger.warning(
            "reference loss not finite for %d clips, e.g. %s", len(bad), bad[0]
        )
        losses[~np.isfinite(losses)] = 0.0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "loss", "fold"])
        for name, value, part in zip(ids, losses, fold, strict=True):
            writer.writerow([name, f"{value:.6f}", int(part)])
    os.replace(tmp, path)
    with open(meta, "w", encoding="utf-8") as f:
        json.dump(settings, f)
    return dict(zip(ids, losses.tolist(), strict=True))
