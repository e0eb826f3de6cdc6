"""Training: one loop for every member and method, early stopping, σ recalibration, fine-tuning."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from matloop.errors import ToolInputError
from matloop.models.gp import EmbeddingGP
from matloop.models.model import UQModel, iter_batches, strip_graph
from matloop.models.network import CrystalGNN
from matloop.models.uq import UQMethod

log = logging.getLogger(__name__)

#: Training sets larger than this get the inducing-point GP.
GP_EXACT_MAX = 3000


@dataclass
class EpochLog:
    """One epoch of one member, passed to the progress callback."""

    member: int
    n_members: int
    epoch: int
    max_epochs: int
    train_loss: float
    val_loss: float
    best_epoch: int


ProgressCallback = Callable[[EpochLog], None]


@dataclass
class TrainOptions:
    """Optimisation settings shared by fitting and fine-tuning."""

    epochs: int = 100
    patience: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_epochs: int = 5
    gp_iterations: int = 100
    gp_inducing: int = 512
    bootstrap: bool = False
    """Train each ensemble member on its own resample (with replacement) of the training set."""


def check_data(graphs: Sequence[Data], y: np.ndarray, what: str) -> np.ndarray:
    """Validated float targets; empty sets, NaN targets and ragged feature sizes raise."""
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(graphs) == 0:
        raise ToolInputError(f"expected a non-empty {what} set, got 0 graphs")
    if len(graphs) != len(y):
        raise ValueError(f"{what}: {len(graphs)} graphs but {len(y)} targets")
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        ids = [getattr(graphs[i], "item_id", str(i)) for i in bad[:5]]
        raise ToolInputError(
            f"expected finite targets in the {what} set, got {len(bad)} NaN/inf (first: {ids}); "
            "drop unlabelled items"
        )
    dims = {(int(g.x.shape[1]), int(g.edge_attr.shape[1])) for g in graphs}
    if len(dims) > 1:
        raise ToolInputError(
            f"expected one node/edge feature size in the {what} set, got {sorted(dims)}; "
            "featurize all items alike"
        )
    return y


def _shuffled_batches(
    graphs: list[Data], y: Tensor, batch_size: int, gen: torch.Generator
) -> list[tuple[Batch, Tensor]]:
    order = torch.randperm(len(graphs), generator=gen)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:  # batch norm needs more than one graph
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return [(Batch.from_data_list([graphs[int(i)] for i in c]), y[c]) for c in chunks]


def _set_frozen(net: CrystalGNN, frozen: bool) -> None:
    for module in net.backbone_modules():
        for p in module.parameters():
            p.requires_grad_(not frozen)


def _train_mode(net: CrystalGNN, freeze_backbone: bool) -> None:
    net.train()
    if freeze_backbone:  # frozen batch-norm statistics and no backbone dropout
        for module in net.backbone_modules():
            module.eval()
        net.dropout.eval()


@torch.no_grad()
def refresh_batch_norm(net: CrystalGNN, graphs: list[Data], batch_size: int) -> None:
    """Set batch-norm running statistics to their exact averages over ``graphs``.

    With few optimisation steps per epoch (small training sets) the exponential running
    averages lag far behind the weights, and evaluation-mode outputs go wrong.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for batch in iter_batches(graphs, batch_size):
        net.embedding(batch)
    for m in norms:
        m.momentum = 0.1
    net.eval()


def train_member(
    net: CrystalGNN,
    uq: UQMethod,
    train: tuple[list[Data], Tensor],
    val: tuple[list[Data], Tensor] | None,
    opts: TrainOptions,
    *,
    seed: int,
    member: int = 0,
    n_members: int = 1,
    freeze_backbone: bool = False,
    warmup: bool = True,
    progress: ProgressCallback | None = None,
) -> int:
    """Train one network in place with early stopping on the validation loss; returns epochs run."""
    gen = torch.Generator().manual_seed(seed)
    _set_frozen(net, freeze_backbone)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    val_batches = list(iter_batches(val[0], 512)) if val is not None else []
    warmup_epochs = min(opts.warmup_epochs, opts.epochs // 2) if warmup else 0
    best, best_epoch, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
    epoch = 0
    for epoch in range(1, opts.epochs + 1):
        in_warmup = epoch <= warmup_epochs
        _train_mode(net, freeze_backbone)
        total, count = 0.0, 0
        for batch, yb in _shuffled_batches(train[0], train[1], opts.batch_size, gen):
            opt.zero_grad()
            loss = uq.loss(net(batch), yb, warmup=in_warmup)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
        train_loss = total / count
        if not freeze_backbone:
            refresh_batch_norm(net, train[0], opts.batch_size)
        if val is not None:
            net.eval()
            with torch.no_grad():
                out = torch.cat([net(b) for b in val_batches])
                val_loss = float(uq.loss(out, val[1], warmup=False))
        else:
            val_loss = train_loss
        if not in_warmup and math.isfinite(val_loss) and val_loss < best:
            best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(net.state_dict())
        log.info(
            "member %d/%d epoch %d/%d train %.4f val %.4f (best %d)",
            member + 1,
            n_members,
            epoch,
            opts.epochs,
            train_loss,
            val_loss,
            best_epoch,
        )
        if progress is not None:
            progress(EpochLog(member, n_members, epoch, opts.epochs, train_loss, val_loss, best_epoch))
        if not in_warmup and epoch - best_epoch >= opts.patience:
            break
    net.load_state_dict(best_state)
    _set_frozen(net, False)
    net.eval()
    return epoch


def _normalised(model: UQModel, graphs: Sequence[Data], y: np.ndarray) -> tuple[list[Data], Tensor]:
    z = (torch.as_tensor(y, dtype=torch.float64) - model.y_mean) / model.y_std
    return [strip_graph(g) for g in graphs], z.float()


def bootstrap_positions(n: int, seed: int) -> Tensor:
    """Positions of a resample of ``n`` items with replacement, of the same size (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n,), generator=gen)


def bootstrap_sample(data: tuple[list[Data], Tensor], seed: int) -> tuple[list[Data], Tensor]:
    """A resample of ``data`` with replacement, of the same size (seeded)."""
    pick = bootstrap_positions(len(data[0]), seed)
    return [data[0][int(i)] for i in pick], data[1][pick]


def _fit_members(
    model: UQModel,
    train: tuple[list[Data], Tensor],
    val: tuple[list[Data], Tensor] | None,
    opts: TrainOptions,
    *,
    seed: int,
    freeze_backbone: bool,
    warmup: bool,
    progress: ProgressCallback | None,
) -> int:
    epochs_run = 0
    for k, net in enumerate(model.members):
        epochs_run += train_member(
            net,
            model.uq,
            bootstrap_sample(train, seed + 1000 * k) if opts.bootstrap and len(model.members) > 1 else train,
            val,
            opts,
            seed=seed + 1000 * k,
            member=k,
            n_members=len(model.members),
            freeze_backbone=freeze_backbone,
            warmup=warmup,
            progress=progress,
        )
    if model.uq.fits_on_embeddings:
        with torch.no_grad():
            emb = torch.cat([model.members[0].embedding(b) for b in iter_batches(train[0], 512)])
        n_inducing = opts.gp_inducing if len(emb) > GP_EXACT_MAX else None
        model.gp = EmbeddingGP(emb, train[1], n_inducing=n_inducing, seed=seed)
        model.gp.fit(iterations=opts.gp_iterations)
    return epochs_run


def fit_uq_model(
    train_graphs: Sequence[Data],
    train_y: np.ndarray,
    val_graphs: Sequence[Data],
    val_y: np.ndarray,
    *,
    method: str = "ensemble",
    seed: int = 0,
    epochs: int | None = None,
    recalibrate_sigma: bool = True,
    options: TrainOptions | None = None,
    progress: ProgressCallback | None = None,
    **model_args: Any,
) -> UQModel:
    """Train a :class:`UQModel` from graphs and targets.

    Args:
        train_graphs, train_y: training set (targets in the property's unit).
        val_graphs, val_y: validation set for early stopping and σ recalibration (may be empty).
        method: uncertainty method name.
        seed: seeds initialisation, shuffling and dropout; member k uses ``seed + 1000 k``.
        epochs: maximum epochs per member (default from ``options``).
        recalibrate_sigma: fit a σ scale on the validation set.
        options: optimisation settings.
        progress: called after every epoch with an :class:`EpochLog`.
        model_args: keyword arguments of :class:`UQModel` (``ensemble_size``, ``hidden``, ...).
    """
    train_y = check_data(train_graphs, train_y, "training")
    has_val = len(val_graphs) > 0
    val_y = check_data(val_graphs, val_y, "validation") if has_val else np.zeros(0)
    opts = dataclasses.replace(options or TrainOptions(), **({"epochs": epochs} if epochs else {}))
    node_dim, edge_dim = int(train_graphs[0].x.shape[1]), int(train_graphs[0].edge_attr.shape[1])
    torch.manual_seed(seed)
    model = UQModel(method=method, node_dim=node_dim, edge_dim=edge_dim, **model_args)
    if has_val:
        model.check_graphs(val_graphs)
    model.set_targets(train_y)
    start = time.perf_counter()
    train = _normalised(model, train_graphs, train_y)
    val = _normalised(model, val_graphs, val_y) if has_val else None
    epochs_run = _fit_members(
        model, train, val, opts, seed=seed, freeze_backbone=False, warmup=True, progress=progress
    )
    if recalibrate_sigma and has_val:
        model.recalibrate(val_graphs, val_y)
    model.meta.update(
        {
            "seed": seed,
            "epochs_run": epochs_run,
            "train_seconds": time.perf_counter() - start,
            "n_train": len(train_y),
            "options": dataclasses.asdict(opts),
        }
    )
    return model


def fine_tune_uq_model(
    model: UQModel,
    graphs: Sequence[Data],
    y: np.ndarray,
    val_graphs: Sequence[Data],
    val_y: np.ndarray,
    *,
    freeze_backbone: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    new_target: bool = False,
    recalibrate_sigma: bool = True,
    options: TrainOptions | None = None,
    progress: ProgressCallback | None = None,
) -> UQModel:
    """A copy of ``model`` trained further on new data; the original is untouched.

    Args:
        model: the trained (or pretrained) model.
        graphs, y: new training data.
        val_graphs, val_y: validation data (may be empty).
        freeze_backbone: train only the heads (the embedding networks stay fixed).
        epochs: maximum epochs per member.
        seed: seeds shuffling and dropout.
        new_target: the targets are another property (transfer learning): re-normalise on the
            new data and warm up with MSE; the heads start from their trained weights.
        recalibrate_sigma: refit the σ scale on the validation set.
        options: optimisation settings.
        progress: per-epoch callback.
    """
    y = check_data(graphs, y, "training")
    model.check_graphs(graphs)
    has_val = len(val_graphs) > 0
    val_y = check_data(val_graphs, val_y, "validation") if has_val else np.zeros(0)
    if has_val:
        model.check_graphs(val_graphs)
    opts = dataclasses.replace(options or TrainOptions(), **({"epochs": epochs} if epochs else {}))
    tuned = copy.deepcopy(model)
    tuned.gp = None
    torch.manual_seed(seed)
    if new_target:
        tuned.set_targets(y)
    else:
        tuned.widen_range(y)
    tuned.sigma_scale.fill_(1.0)
    start = time.perf_counter()
    train = _normalised(tuned, graphs, y)
    val = _normalised(tuned, val_graphs, val_y) if has_val else None
    epochs_run = _fit_members(
        tuned,
        train,
        val,
        opts,
        seed=seed,
        freeze_backbone=freeze_backbone,
        warmup=new_target,
        progress=progress,
    )
    if recalibrate_sigma and has_val:
        tuned.recalibrate(val_graphs, val_y)
    tuned.meta = {
        **model.meta,
        "seed": seed,
        "epochs_run": epochs_run,
        "train_seconds": time.perf_counter() - start,
        "n_train": len(y),
        "freeze_backbone": freeze_backbone,
        "options": dataclasses.asdict(opts),
    }
    return tuned
