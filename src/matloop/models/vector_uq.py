"""UQ heads on fixed-length vectors: pretrained-model embeddings or composition statistics.

Three heads, all in normalised target units with σ recalibrated on the validation split:

- ``mlp_ensemble``: K small mean–variance MLPs (Gaussian NLL after an MSE warm-up), each
  trained on its own bootstrap resample; the prediction is their Gaussian mixture.
- ``mlp_dropout``: one such MLP with dropout after every hidden layer, predicting with T
  stochastic passes under a fixed seed (Monte-Carlo dropout): the mixture of the passes, so σ² is
  the mean aleatoric variance plus the variance of the means.
- ``gp``: an ARD-kernel Gaussian process (exact below ``GP_EXACT_MAX`` items, inducing
  points above) — σ grows with the distance from the training vectors.

A :class:`VectorUQModel` saves to a checkpoint with its init args, weights and metadata
(including the pretrained featurizer's name and package version) and loads with
``weights_only=True``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from matloop.errors import ToolInputError, invalid_choice
from matloop.models.calibrated import CalibratedModel
from matloop.models.checkpoint import write_checkpoint
from matloop.models.gp import EmbeddingGP
from matloop.models.inputs import Items, surrogate_inputs
from matloop.models.model import PREDICT_SEED, UQPrediction
from matloop.models.options import VECTOR_METHODS
from matloop.models.training import GP_EXACT_MAX, bootstrap_positions
from matloop.models.uq import Ensemble, MCDropout, UQMethod, dropout_passes, mixture

FORMAT = "matloop.vector_uq"
VERSION = 1


def _mlp(in_dim: int, hidden: int, layers: int, n_out: int, dropout: float = 0.0) -> nn.Sequential:
    parts: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        parts += [nn.Linear(width, hidden), nn.SiLU()]
        if dropout > 0:
            parts.append(nn.Dropout(dropout))
        width = hidden
    parts.append(nn.Linear(width, n_out))
    return nn.Sequential(*parts)


class VectorUQModel(CalibratedModel):
    """μ and σ from a fixed-length vector per item.

    Args:
        method: ``"mlp_ensemble"``, ``"mlp_dropout"`` or ``"gp"``.
        in_dim: vector length.
        ensemble_size: MLP members (``mlp_ensemble``).
        hidden: MLP width.
        layers: hidden layers per MLP.
        dropout: dropout probability of ``mlp_dropout`` (default 0.1; the other heads have none).
        mc_samples: stochastic passes of ``mlp_dropout`` per prediction.
        backbone: where the vectors come from (:data:`matloop.models.inputs.BACKBONES`), so
            that :meth:`predict_items` can compute them; None for vectors given directly.
        level_columns: a cheap level's columns (``<property>@<level>``) appended to the vectors.
        delta: the one of them whose value the head's output is added to (Δ-learning).
    """

    def __init__(
        self,
        *,
        method: str = "mlp_ensemble",
        in_dim: int,
        ensemble_size: int = 5,
        hidden: int = 64,
        layers: int = 2,
        dropout: float | None = None,
        mc_samples: int = 20,
        backbone: str | None = None,
        level_columns: Sequence[str] = (),
        delta: str | None = None,
    ) -> None:
        super().__init__()
        if method not in VECTOR_METHODS:
            raise invalid_choice("a vector UQ head", method, VECTOR_METHODS)
        if dropout is None:
            dropout = 0.1 if method == "mlp_dropout" else 0.0
        if method == "mlp_dropout" and not (0 < dropout < 1 and mc_samples >= 2):
            raise ToolInputError(
                f"expected dropout in (0, 1) and mc_samples >= 2 for mlp_dropout, got {dropout}, {mc_samples}"
            )
        self.config: dict[str, Any] = {
            "method": method,
            "in_dim": in_dim,
            "ensemble_size": ensemble_size,
            "hidden": hidden,
            "layers": layers,
            "dropout": dropout,
            "mc_samples": mc_samples,
            "backbone": backbone,
            "level_columns": list(level_columns),
            "delta": delta,
        }
        n_members = {"mlp_ensemble": ensemble_size, "mlp_dropout": 1}.get(method, 0)
        self.members = nn.ModuleList(_mlp(in_dim, hidden, layers, 2, dropout) for _ in range(n_members))
        self.uq = MCDropout() if method == "mlp_dropout" else Ensemble()
        self.register_buffer("x_mean", torch.zeros(in_dim, dtype=torch.float64))
        self.register_buffer("x_std", torch.ones(in_dim, dtype=torch.float64))

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(method={c['method']}, in_dim={c['in_dim']}, members={len(self.members)})"
        )

    def _x(self, x: np.ndarray) -> Tensor:
        x = check_vectors(x, self.config["in_dim"])
        return self.standardise(torch.as_tensor(x, dtype=torch.float64))

    def standardise(self, x: Tensor) -> Tensor:
        """Float32 inputs of the MLPs: ``x`` minus the training mean, over the training spread."""
        return ((x.double() - self.x_mean) / self.x_std).float()

    @torch.no_grad()
    def predict_normalized(self, x: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, total and epistemic variance in normalised units, before σ calibration."""
        xt = self._x(x)
        if self.gp is not None:
            return self.gp.predict(xt)
        self.eval()
        if self.uq.stochastic:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(PREDICT_SEED)
                outs = dropout_passes(self.members[0], xt, self.config["mc_samples"])
        else:
            outs = [net(xt) for net in self.members]
        m, v = (torch.stack(t).double() for t in zip(*(self.uq.gaussian(o) for o in outs), strict=True))
        mean, var = mixture(m, v)
        return mean, var, m.var(0, correction=0)

    def predict(self, x: np.ndarray) -> UQPrediction:
        """Mean, calibrated σ and epistemic σ in target units; the embedding is the standardised
        input. Rows with NaN (items the pretrained model cannot handle) get the prior: the
        training mean and standard deviation."""
        x = check_vectors(x, self.config["in_dim"], allow_nan=True)
        ok = np.isfinite(x).all(axis=1)
        n = len(x)
        mean, std, epi = (
            np.full(n, float(self.y_mean)),
            np.full(n, float(self.y_std)),
            np.full(n, float(self.y_std)),
        )
        if ok.any():
            m, var, e = self.predict_normalized(x[ok])
            scale = self.sigma_scale * self.y_std
            mean[ok], std[ok] = self.bound(
                (m * self.y_std + self.y_mean).numpy(), (var.sqrt() * scale).numpy()
            )
            epi[ok] = np.minimum((e.clamp_min(0).sqrt() * scale).numpy(), std[ok])
        emb = np.zeros_like(x)
        emb[ok] = self._x(x[ok]).double().numpy()
        return UQPrediction(mean=mean, std=std, embedding=emb, epistemic_std=epi)

    def predict_items(self, items: Items, cheap_only: bool = False) -> UQPrediction:
        """:meth:`predict` on the items' vectors from this model's backbone (and cheap level); a Δ
        head's cheap level is added to the mean (items without it get the training labels' mean).

        ``cheap_only``: the cheap level's value plus the mean training offset, σ the offsets'
        spread — the Δ head's prior, nothing learned per item (a Δ head only)."""
        backbone = self.config["backbone"]
        if backbone is None:
            raise ToolInputError("expected a model that records its backbone, got one trained on raw vectors")
        if cheap_only and self.config.get("delta") is None:
            raise ToolInputError(
                "expected a surrogate that learns the target minus a cheap level's value (a vector head "
                "with a cheap level computing the target) to rank by that level, got one with cheap level "
                f"columns {self.config.get('level_columns') or 'none'}"
            )
        x, baseline = surrogate_inputs(
            backbone, items, self.config.get("level_columns", ()), self.config.get("delta")
        )
        pred = self.predict(x)
        if cheap_only:
            pred.mean[:] = float(self.y_mean)
            pred.std[:] = pred.epistemic_std[:] = float(self.y_std)
        if baseline is not None:
            known = np.isfinite(baseline)
            pred.mean[known] += baseline[known]
            pred.mean[~known] = self.meta["label_mean"]
        return pred


def check_vectors(x: np.ndarray, dim: int | None = None, *, allow_nan: bool = False) -> np.ndarray:
    """Float64 [n, d] vectors; the wrong width, or NaN rows unless allowed, raise
    :class:`ToolInputError`."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise ToolInputError(f"expected vectors of shape [n, {dim or 'd'}], got {list(x.shape)}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad) and not allow_nan:
        raise ToolInputError(
            f"expected finite feature vectors, got NaN/inf in rows {bad[:5].tolist()}; drop them"
        )
    return x


def _train_member(
    net: nn.Module,
    uq: UQMethod,
    x: Tensor,
    y: Tensor,
    xv: Tensor,
    yv: Tensor,
    *,
    epochs: int,
    patience: int,
    lr: float,
    weight_decay: float,
    seed: int,
    batch_size: int,
) -> int:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = min(20, epochs // 4)
    best, best_epoch, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
    epoch = 0
    for epoch in range(1, epochs + 1):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            uq.loss(net(x[idx]), y[idx], warmup=epoch <= warmup).backward()
            opt.step()
        if epoch <= warmup:
            continue
        net.eval()
        with torch.no_grad():
            val = float(uq.loss(net(xv), yv, warmup=False))
        if math.isfinite(val) and val < best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(net.state_dict())
        if epoch - best_epoch >= patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return epoch


def fit_vector_model(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    method: str = "mlp_ensemble",
    seed: int = 0,
    epochs: int = 400,
    patience: int = 40,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    bootstrap: bool = True,
    gp_iterations: int = 150,
    gp_inducing: int = 512,
    meta: dict[str, Any] | None = None,
    **model_args: Any,
) -> VectorUQModel:
    """Train a :class:`VectorUQModel`; the validation split early-stops the MLPs and calibrates σ.

    Args:
        x, y: training vectors [n, d] and targets.
        x_val, y_val: validation vectors and targets. With fewer than 2 (a handful of labels),
            the MLPs early-stop on their training loss and σ is not recalibrated.
        method: ``"mlp_ensemble"``, ``"mlp_dropout"`` or ``"gp"``.
        seed: member k uses ``seed + 1000 k`` (initialisation, bootstrap resample, shuffling).
        bootstrap: each member of ``mlp_ensemble`` trains on its own resample of the training set
            (the single dropout MLP always sees the training set itself).
        meta: extra metadata to keep (e.g. the featurizer's provenance).
        model_args: ``ensemble_size``, ``hidden``, ``layers``, ``dropout``, ``mc_samples``.
    """
    x = check_vectors(x)
    x_val = check_vectors(x_val, x.shape[1])
    y, y_val = np.asarray(y, dtype=np.float64).ravel(), np.asarray(y_val, dtype=np.float64).ravel()
    if len(y) != len(x) or len(y_val) != len(x_val) or len(y) < 2:
        raise ToolInputError(
            f"expected matching vectors and targets with ≥ 2 training items, got "
            f"{len(x)}/{len(y)} training and {len(x_val)}/{len(y_val)} validation"
        )
    recalibrate = len(y_val) >= 2
    if not recalibrate:
        x_val, y_val = x, y
    if not (np.isfinite(y).all() and np.isfinite(y_val).all()):
        raise ToolInputError("expected finite targets, got NaN/inf; drop unlabelled items")
    torch.manual_seed(seed)
    model = VectorUQModel(method=method, in_dim=x.shape[1], **model_args)
    model.x_mean.copy_(torch.from_numpy(x.mean(0)))
    model.x_std.copy_(torch.from_numpy(np.where(x.std(0) > 1e-8, x.std(0), 1.0)))
    model.set_targets(y)
    xt, xv = model._x(x), model._x(x_val)
    yt = ((torch.from_numpy(y) - model.y_mean) / model.y_std).float()
    yv = ((torch.from_numpy(y_val) - model.y_mean) / model.y_std).float()
    start = time.perf_counter()
    bootstrap = bootstrap and method == "mlp_ensemble"
    if method == "gp":
        n_inducing = gp_inducing if len(x) > GP_EXACT_MAX else None
        model.gp = EmbeddingGP(xt, yt, n_inducing=n_inducing, seed=seed, ard=True)
        model.gp.fit(iterations=gp_iterations)
    epochs_run = 0
    for k, net in enumerate(model.members):
        pick = bootstrap_positions(len(xt), seed + 1000 * k) if bootstrap else torch.arange(len(xt))
        torch.manual_seed(seed + 1000 * k)
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        epochs_run += _train_member(
            net,
            model.uq,
            xt[pick],
            yt[pick],
            xv,
            yv,
            epochs=epochs,
            patience=patience,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed + 1000 * k,
            batch_size=batch_size,
        )
    if recalibrate:
        model.recalibrate(x_val, y_val)
    model.meta = {
        **(meta or {}),
        "seed": seed,
        "n_train": len(y),
        "bootstrap": bootstrap,
        "epochs_run": epochs_run,
        "train_seconds": time.perf_counter() - start,
    }
    return model


def save_vector_model(model: VectorUQModel, path: str | Path) -> Path:
    """Write init args, weights (GP included) and metadata to ``path``."""
    return write_checkpoint(path, FORMAT, VERSION, model, model.meta)


def load_vector_model(path: str | Path) -> VectorUQModel:
    """Read a checkpoint of :func:`save_vector_model`; problems raise :class:`CheckpointError`."""
    return VectorUQModel.load(path, FORMAT, VERSION)
