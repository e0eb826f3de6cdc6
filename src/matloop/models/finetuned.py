"""Pretrained networks as fine-tunable backbones under any of the vector UQ heads.

A pretrained network (weights read from its installed wheel, never downloaded) turns a crystal
into its pooled features and energy per atom — at the start exactly the vector of the frozen
featurizer (:mod:`matloop.models.foundation`) — and a head of
:class:`~matloop.models.vector_uq.VectorUQModel`, whose prediction path this model shares, turns
that vector into μ and σ: ``mlp_ensemble`` (K bootstrapped mean–variance MLPs), ``mlp_dropout``
(one such MLP with dropout, T stochastic passes of the head only: the network stays
deterministic) or ``gp`` (an ARD Gaussian process).

============  ==================================================================================
backbone      what ``trainable_blocks`` = N trains (``"all"``: every parameter but the fixed ones)
============  ==================================================================================
chgnet        CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 2023): the last N of its 4 interaction
              blocks (atom convolution, with the bond and angle updates of the same block) and the
              read-out (layer norm, energy MLP); "all" leaves out only the elemental reference
              energies (AtomRef), which CHGNet itself keeps fixed
sevennet_0    SevenNet-0 (Park et al., J. Chem. Theory Comput. 2024): the last N of its 5
              interaction blocks (self-interactions, convolution, gate) and the read-out (two
              linear layers and the per-species energy scale)
============  ==================================================================================

Training is linear probing, then fine-tuning (Kumar et al., ICLR 2022): the MLP heads are first
fitted on the pretrained vectors (seconds; each ensemble head on its own bootstrap resample),
then the trainable part of the network and the heads train together on the Gaussian NLL — one
shared backbone, each ensemble head's loss on its own resample, the dropout head's with its
dropout on — with early stopping on the validation NLL of the predictive mixture, counted from
the linear probe (so the validation NLL never ends worse than the frozen featurizer's). σ is
recalibrated on the validation split afterwards. The GP head has no gradient path of its own:
the network is fine-tuned under the MLP ensemble exactly as above (the heads cost nothing next
to the network, and this is the objective whose early stopping the benchmarks measured), then
the ensemble is dropped and the ARD GP is fitted on the fine-tuned network's vectors (exact, or
inducing points on large sets) and recalibrated on the validation split. With
``trainable_blocks=0`` only the head trains (``train_uq_gnn`` routes that case to the frozen
featurizer's cached vectors; ``fine_tune`` uses it to retrain only the head).

A checkpoint holds the whole fine-tuned network (CHGNet about 1.9 MB, SevenNet-0 about 3.7 MB)
and records the pretrained model and the version of the package it started from; it loads
wherever that package is installed.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pymatgen.core import Structure
from torch import Tensor, nn

from matloop.data.items import Items
from matloop.errors import ToolInputError, invalid_choice
from matloop.models.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from matloop.models.foundation import (
    chgnet_model,
    get_pretrained,
    sevennet_crystal_vectors,
    sevennet_graph,
    sevennet_model,
)
from matloop.models.model import UQPrediction
from matloop.models.options import (
    FINE_TUNABLE_BLOCKS,
    VECTOR_METHODS,
    TrainableBlocks,
    check_trainable_blocks,
)
from matloop.models.training import EpochLog, ProgressCallback, bootstrap_positions
from matloop.models.vector_uq import VectorUQModel, fit_vector_model

log = logging.getLogger(__name__)

FORMAT = "matloop.finetuned_pretrained"
VERSION = 1
#: The head's own arguments, which a fine-tune of a saved model keeps.
HEAD_ARGS = ("ensemble_size", "hidden", "layers", "dropout", "mc_samples")


class FineTunedPretrained(VectorUQModel):
    """μ and σ of crystals from a (partly) trainable pretrained network under a vector UQ head
    (``method``: ``mlp_ensemble``, the default, ``mlp_dropout`` or ``gp``). Subclasses say how
    the network is loaded, makes graphs and vectors, and which of its parts are its blocks.

    Args:
        trainable_blocks: 0 to :attr:`n_blocks` (the last N interaction blocks and the read-out
            train) or ``"all"``.
        head_args: :class:`VectorUQModel`'s (``method``, ``ensemble_size``, ``hidden``,
            ``layers``, ``dropout``, ``mc_samples``).
    """

    pretrained: ClassVar[str]
    """Name in :data:`matloop.models.foundation.PRETRAINED`."""
    n_blocks: ClassVar[int]

    def __init__(self, *, trainable_blocks: TrainableBlocks = 1, **head_args: Any) -> None:
        spec = get_pretrained(self.pretrained)
        head_args = {"method": "mlp_ensemble", "in_dim": spec.dim, **head_args, "backbone": spec.name}
        super().__init__(**head_args)
        self.network = self._load(spec.model_name)
        trainable_blocks = check_trainable_blocks(trainable_blocks, self.n_blocks)
        self.config["trainable_blocks"] = trainable_blocks
        self.network.requires_grad_(False)
        for module in self.trainable_modules(trainable_blocks):
            module.requires_grad_(True)

    def __repr__(self) -> str:
        c = self.config
        return f"{type(self).__name__}(method={c['method']}, trainable_blocks={c['trainable_blocks']!r})"

    def _load(self, model_name: str) -> nn.Module:
        """A private, trainable copy of the pretrained network."""
        raise NotImplementedError

    def trainable_modules(self, trainable_blocks: TrainableBlocks) -> list[nn.Module]:
        """The parts of the network that train for ``trainable_blocks``."""
        raise NotImplementedError

    def _graph(self, structure: Structure) -> Any:
        raise NotImplementedError

    def crystal_vectors(self, graphs: Sequence[Any]) -> Tensor:
        """[n, in_dim] pooled features and energy per atom of ``graphs`` (differentiable)."""
        raise NotImplementedError

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The network's parameters that train."""
        return [p for p in self.network.parameters() if p.requires_grad]

    def graphs(self, structures: Sequence[Any]) -> list[Any]:
        """The network's graphs of ``structures``; None for one it cannot handle."""
        out: list[Any] = []
        for i, s in enumerate(structures):
            if not isinstance(s, Structure):
                raise ToolInputError(
                    f"expected periodic structures for the fine-tuned {self.pretrained}, got "
                    f"{type(s).__name__} at item {i}"
                )
            try:
                out.append(self._graph(s))
            except Exception as exc:  # one bad structure never stops the rest
                log.warning("%s cannot make a graph of item %d: %s", self.pretrained, i, exc)
                out.append(None)
        return out

    @torch.no_grad()
    def vectors(self, graphs: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """[n, in_dim] float64 vectors of ``graphs`` (rows of NaN where a graph is None)."""
        out = np.full((len(graphs), self.config["in_dim"]), np.nan)
        where = [i for i, g in enumerate(graphs) if g is not None]
        for start in range(0, len(where), batch_size):
            part = where[start : start + batch_size]
            out[part] = self.crystal_vectors([graphs[i] for i in part]).double().numpy()
        return out

    def member_outputs(self, vectors: Tensor) -> list[Tensor]:
        """Raw outputs of every head on ``vectors`` (differentiable)."""
        z = self.standardise(vectors)
        return [net(z) for net in self.members]

    def predict_items(self, items: Items) -> UQPrediction:
        """:meth:`predict` on the vectors of the items' structures from this model's network."""
        if items.structures is None:
            raise ToolInputError(
                f"expected the items' structures for the fine-tuned {self.pretrained}, got graphs only"
            )
        return self.predict(self.vectors(self.graphs(items.structures)))


class FineTunedCHGNet(FineTunedPretrained):
    """CHGNet 0.3.0 under the heads (4 interaction blocks)."""

    pretrained = "chgnet"
    n_blocks = FINE_TUNABLE_BLOCKS[pretrained]

    def _load(self, model_name: str) -> nn.Module:
        return copy.deepcopy(chgnet_model(model_name))

    def trainable_modules(self, trainable_blocks: TrainableBlocks) -> list[nn.Module]:
        net = self.network
        if trainable_blocks == "all":
            return [m for name, m in net.named_children() if name != "composition_model"]
        if trainable_blocks == 0:
            return []
        first = net.n_conv - trainable_blocks
        blocks: list[nn.Module] = [net.readout_norm, net.mlp]
        for layers in (net.atom_conv_layers, net.bond_conv_layers, net.angle_layers):
            blocks += [layer for k, layer in enumerate(layers) if k >= first and layer is not None]
        return blocks

    def _graph(self, structure: Structure) -> Any:
        return self.network.graph_converter(structure)

    def crystal_vectors(self, graphs: Sequence[Any]) -> Tensor:
        with warnings.catch_warnings():  # CHGNet converts a grad-tracking volume to a float
            warnings.filterwarnings("ignore", "Converting a tensor with requires_grad", UserWarning)
            out = self.network(list(graphs), task="e", return_crystal_feas=True)
        return torch.cat([out["crystal_fea"], out["e"].reshape(-1, 1)], dim=1)


class FineTunedSevenNet(FineTunedPretrained):
    """SevenNet-0 under the heads (5 interaction blocks)."""

    pretrained = "sevennet_0"
    n_blocks = FINE_TUNABLE_BLOCKS[pretrained]
    READOUT = ("reduce_input_to_hidden", "reduce_hidden_to_energy", "rescale_atomic_energy")

    def _load(self, model_name: str) -> nn.Module:
        model, self.cutoff = sevennet_model(model_name)
        return copy.deepcopy(model)

    def trainable_modules(self, trainable_blocks: TrainableBlocks) -> list[nn.Module]:
        modules = self.network._modules
        if trainable_blocks == "all":
            return list(modules.values())
        if trainable_blocks == 0:
            return []
        first = self.n_blocks - trainable_blocks
        blocks = [
            m
            for name, m in modules.items()
            if name.split("_")[0].isdigit() and int(name.split("_")[0]) >= first
        ]
        return blocks + [modules[name] for name in self.READOUT]

    def _graph(self, structure: Structure) -> Any:
        return sevennet_graph(structure, self.cutoff)

    def crystal_vectors(self, graphs: Sequence[Any]) -> Tensor:
        return sevennet_crystal_vectors(self.network, graphs)


#: The fine-tunable backbones, by backbone name.
FINE_TUNABLE: dict[str, type[FineTunedPretrained]] = {
    cls.pretrained: cls for cls in (FineTunedCHGNet, FineTunedSevenNet)
}


def _validation_nll(model: FineTunedPretrained, graphs: list[Any], y: Tensor) -> float:
    """Gaussian NLL of the heads' mixture on ``graphs`` (normalised units, before σ calibration)."""
    mean, var, _ = model.predict_normalized(model.vectors(graphs))
    return float(F.gaussian_nll_loss(mean, y, var, full=True))


def _usable(
    model: FineTunedPretrained, structures: Sequence[Any], y: np.ndarray
) -> tuple[list[Any], np.ndarray]:
    graphs = model.graphs(structures)
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != len(graphs):
        raise ToolInputError(f"expected one target per structure, got {len(y)} targets for {len(graphs)}")
    keep = [i for i, g in enumerate(graphs) if g is not None and np.isfinite(y[i])]
    return [graphs[i] for i in keep], y[keep]


def _train_jointly(
    model: FineTunedPretrained,
    opt: torch.optim.Optimizer,
    graphs: list[Any],
    y: np.ndarray,
    val_graphs: list[Any],
    y_val: np.ndarray,
    seed: int,
    epochs: int,
    patience: int,
    batch_size: int,
    progress: ProgressCallback | None,
) -> tuple[int, int]:
    """Backbone and MLP heads on the Gaussian NLL, ensemble head k weighting each item by how
    often its bootstrap resample holds it (the dropout head: once each); keeps the state of the
    best validation NLL (epoch 0: the linear probe). Returns (epochs run, best epoch)."""
    n, k_members = len(graphs), len(model.members)
    yt = ((torch.from_numpy(y) - model.y_mean) / model.y_std).float()
    yv = (torch.from_numpy(y_val) - model.y_mean) / model.y_std
    if model.method == "mlp_ensemble":
        counts = torch.stack(
            [torch.bincount(bootstrap_positions(n, seed + 1000 * k), minlength=n) for k in range(k_members)]
        )
    else:
        counts = torch.ones(k_members, n, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    best = _validation_nll(model, val_graphs, yv)
    best_epoch, best_state, epoch = 0, copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            outputs = model.member_outputs(model.crystal_vectors([graphs[i] for i in idx]))
            losses = []
            for k, out in enumerate(outputs):
                rows = torch.repeat_interleave(torch.arange(len(idx)), counts[k, idx])
                if len(rows):
                    losses.append(model.uq.loss(out[rows], yt[idx][rows], warmup=False))
            if losses:
                loss = torch.stack(losses).sum() / k_members
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
        val = _validation_nll(model, val_graphs, yv)
        if math.isfinite(val) and val < best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
        log.info("fine-tune epoch %d/%d: validation NLL %.4f (best epoch %d)", epoch, epochs, val, best_epoch)
        if progress is not None:
            progress(EpochLog(0, 1, epoch, epochs, total / n, val, best_epoch))
        if epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return epoch, best_epoch


def _gp_head(
    tuned: FineTunedPretrained,
    graphs: list[Any],
    y: np.ndarray,
    val_graphs: list[Any],
    y_val: np.ndarray,
    seed: int,
) -> FineTunedPretrained:
    """``tuned``'s network under an ARD GP fitted on its vectors, in place of its MLP heads (σ
    recalibrated on ``val_graphs`` when it holds ≥ 2 items)."""
    args = {k: tuned.config[k] for k in HEAD_ARGS}
    model = type(tuned)(method="gp", trainable_blocks=tuned.config["trainable_blocks"], **args)
    model.network.load_state_dict(tuned.network.state_dict())
    model.eval()
    head = fit_vector_model(
        model.vectors(graphs), y, model.vectors(val_graphs), y_val, method="gp", seed=seed
    )
    model.gp = head.gp
    model.load_state_dict(head.state_dict(), strict=False)  # the network is not the head's
    return model.eval()


def fit_finetuned(
    structures: Sequence[Any],
    y: np.ndarray,
    val_structures: Sequence[Any],
    y_val: np.ndarray,
    *,
    backbone: str = "chgnet",
    method: str = "mlp_ensemble",
    trainable_blocks: TrainableBlocks = 1,
    seed: int = 0,
    epochs: int = 40,
    patience: int = 8,
    lr: float = 1e-4,
    backbone_lr: float = 1e-4,
    weight_decay: float = 1e-4,
    batch_size: int = 16,
    start: FineTunedPretrained | None = None,
    meta: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    **head_args: Any,
) -> FineTunedPretrained:
    """Fit a head on a pretrained network's vectors, then fine-tune its trainable part with it.

    Args:
        structures, y: training crystals and targets (items the network cannot handle are left out).
        val_structures, y_val: validation split: early stopping and σ recalibration (with fewer
            than 2 items, the training set early-stops and σ is not recalibrated).
        backbone: a name of :data:`FINE_TUNABLE` (``start``'s when given).
        method: the head (``start``'s when given): ``"mlp_ensemble"``, ``"mlp_dropout"`` or
            ``"gp"`` (the network is fine-tuned under the MLP ensemble, then the GP is fitted on
            its vectors; module docstring).
        trainable_blocks: 0 to the network's number of blocks, or ``"all"`` (module docstring).
        seed: seeds the heads (member k: ``seed + 1000 k``, also its bootstrap resample), shuffling
            and dropout.
        epochs: maximum epochs of the joint fine-tuning (the linear probe has its own early stopping).
        patience: epochs without a better validation NLL before the fine-tuning stops.
        lr, backbone_lr: AdamW learning rates of the heads and of the network's trainable part in the
            joint phase (the linear probe has its own). On the dielectric band gap (N = 100, CHGNet),
            heads at 1e-3 overfitted (test MAE +4 % over the frozen featurizer, against +0.3 to
            +1.3 % at 1e-4) and a backbone at 1e-3 never beat the probe on validation.
        start: a fine-tuned model whose network weights to continue from (the head is refitted).
        meta: extra metadata to keep.
        progress: called after every fine-tuning epoch.
        head_args: ``ensemble_size``, ``hidden``, ``layers``, ``dropout``, ``mc_samples``.
    """
    if epochs < 1:
        raise ToolInputError(f"expected epochs >= 1, got {epochs}")
    begin = time.perf_counter()
    torch.manual_seed(seed)
    if start is not None:
        backbone, method = start.pretrained, start.method
        head_args = {k: start.config[k] for k in HEAD_ARGS} | head_args
    if backbone not in FINE_TUNABLE:
        raise invalid_choice("a fine-tunable backbone", backbone, FINE_TUNABLE)
    if method not in VECTOR_METHODS:
        raise invalid_choice("a head of a fine-tuned backbone", method, VECTOR_METHODS)
    objective = "mlp_ensemble" if method == "gp" else method  # the MLP heads the network trains with
    model = FINE_TUNABLE[backbone](method=objective, trainable_blocks=trainable_blocks, **head_args)
    if start is not None:
        model.network.load_state_dict(start.network.state_dict())
    graphs, y = _usable(model, structures, y)
    val_graphs, y_val = _usable(model, val_structures, y_val)
    if len(graphs) < 2:
        raise ToolInputError(f"expected ≥ 2 training crystals that {backbone} can handle, got {len(graphs)}")
    recalibrate = len(val_graphs) >= 2
    stop_graphs, y_stop = (val_graphs, y_val) if recalibrate else (graphs, y)
    trainable = model.backbone_parameters()
    probe_epochs = epochs_run = best_epoch = 0
    if trainable or method != "gp":  # a GP on a frozen network needs no MLP heads
        probe = fit_vector_model(
            model.vectors(graphs),
            y,
            model.vectors(val_graphs),
            y_val,
            method=objective,
            seed=seed,
            **head_args,
        )
        model.load_state_dict(probe.state_dict(), strict=False)
        probe_epochs = int(probe.meta["epochs_run"])
    if trainable:
        opt = torch.optim.AdamW(
            [{"params": trainable, "lr": backbone_lr}, {"params": model.members.parameters(), "lr": lr}],
            weight_decay=weight_decay,
        )
        epochs_run, best_epoch = _train_jointly(
            model, opt, graphs, y, stop_graphs, y_stop, seed, epochs, patience, batch_size, progress
        )
        if recalibrate:
            model.recalibrate(model.vectors(val_graphs), y_val)
    if method == "gp":
        model = _gp_head(model, graphs, y, val_graphs, y_val, seed)
    model.meta = {
        **(meta or {}),
        "pretrained": [get_pretrained(backbone).provenance()],
        "trainable_blocks": model.config["trainable_blocks"],
        "trainable_parameters": sum(p.numel() for p in trainable),
        "finetune_heads": objective,
        "seed": seed,
        "n_train": len(y),
        "bootstrap": objective == "mlp_ensemble",
        "probe_epochs": probe_epochs,
        "finetune_epochs": epochs_run,
        "best_finetune_epoch": best_epoch,
        "epochs_run": probe_epochs + epochs_run,
        "train_seconds": time.perf_counter() - begin,
    }
    return model


def save_finetuned(model: FineTunedPretrained, path: str | Path) -> Path:
    """Write init args, the fine-tuned network's and heads' weights and metadata to ``path``."""
    return write_checkpoint(path, FORMAT, VERSION, model, model.meta)


def load_finetuned(path: str | Path) -> FineTunedPretrained:
    """Read a checkpoint of :func:`save_finetuned`. The architecture comes from the installed
    package of the pretrained model; without it, or on a corrupt file, :class:`CheckpointError`."""
    blob = read_checkpoint(path, FORMAT, VERSION)
    backbone = blob["init_args"].get("backbone")
    if backbone not in FINE_TUNABLE:
        raise CheckpointError(f"checkpoint {path} has no fine-tunable backbone, got {backbone!r}")
    spec = get_pretrained(backbone)
    origin = json.loads(blob["meta_json"]).get("pretrained", [{}])[0]
    if find_spec(spec.package) is None:
        wanted = f"{spec.package}=={origin.get('package_version')}"
        raise CheckpointError(
            f"checkpoint {path} fine-tunes {backbone} {origin.get('pretrained_model')}: it needs the "
            f"{spec.package} package (`pip install {wanted}`)"
        )
    model = FINE_TUNABLE[backbone].load(path, FORMAT, VERSION)
    if origin.get("package_version") != spec.version:
        log.warning(
            "%s was fine-tuned from %s %s; %s %s is installed (the weights are the checkpoint's own)",
            path,
            spec.package,
            origin.get("package_version"),
            spec.package,
            spec.version,
        )
    return model
