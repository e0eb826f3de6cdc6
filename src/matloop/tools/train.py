"""The training tools: ``train_uq_gnn``, ``predict`` and ``fine_tune``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from matloop.data.feature_sets import GraphSet, load_graphs
from matloop.data.slices import load_slice
from matloop.errors import ToolInputError, invalid_choice
from matloop.models.checkpoint import data_hash
from matloop.models.finetuned import FINE_TUNABLE, FineTunedPretrained, fit_finetuned
from matloop.models.foundation import PRETRAINED
from matloop.models.inputs import (
    Backbone,
    backbone_parts,
    delta_column,
    resolve_backbone,
    surrogate_inputs,
)
from matloop.models.metrics import UQMetrics, uq_metrics
from matloop.models.model import UQModel
from matloop.models.options import VECTOR_HEADS, TrainableBlocks, check_trainable_blocks
from matloop.models.saved import Surrogate, load_model, save_model
from matloop.models.training import ProgressCallback, TrainOptions, fine_tune_uq_model, fit_uq_model
from matloop.models.vector_uq import fit_vector_model
from matloop.names import LevelName, UQMethod
from matloop.validation.level_values import model_items, with_level_values
from matloop.workspace import Workspace, resolve_workspace


class _FitSummary(BaseModel):
    """What training and fine-tuning both report."""

    target: str = Field(description="Property the model predicts.")
    unit: str = Field(description="Unit of the target.")
    method: str = Field(description="Uncertainty method.")
    n_train: int = Field(description="Training items.")
    n_val: int = Field(description="Validation items (early stopping, σ recalibration).")
    n_test: int = Field(description="Held-out test items the metrics are computed on.")
    n_skipped: int = Field(description="Items skipped because their target is missing (NaN).")
    metrics_split: Literal["test", "val", "train"] = Field(description="Split the metrics come from.")
    epochs_run: int = Field(description="Epochs run, summed over ensemble members.")
    checkpoint_mb: float = Field(description="Size of the saved model file (MB).")


class TrainResult(_FitSummary):
    model_id: str = Field(
        description="Id of the trained model; pass it to predict, fine_tune, select_candidates."
    )
    feature_set_id: str = Field(description="Feature set the model was trained on.")
    metrics: UQMetrics = Field(description="Accuracy and calibration on the held-out split.")
    sigma_scale: float = Field(
        description="σ recalibration factor fitted on the validation split (1 = none)."
    )
    seconds: float = Field(description="Wall time of training.")


class FineTuneResult(_FitSummary):
    model_id: str = Field(description="Id of the new, fine-tuned model.")
    parent_model_id: str = Field(description="Model that was fine-tuned (unchanged).")
    freeze_backbone: bool = Field(description="Whether only the heads were trained.")
    metrics_before: UQMetrics = Field(description="Parent model on the held-out split.")
    metrics_after: UQMetrics = Field(description="Fine-tuned model on the held-out split.")
    seconds: float = Field(description="Wall time of fine-tuning.")


class ItemPrediction(BaseModel):
    item_id: str = Field(description="Dataset id.")
    mean: float = Field(description="Predicted mean.")
    std: float = Field(description="Predicted standard deviation.")


class PredictResult(BaseModel):
    model_id: str = Field(description="Model used.")
    feature_set_id: str = Field(description="Graphs predicted.")
    target: str = Field(description="Predicted property.")
    unit: str = Field(description="Unit of mean and σ.")
    count: int = Field(description="Items predicted.")
    mean_min: float = Field(description="Smallest predicted mean.")
    mean_max: float = Field(description="Largest predicted mean.")
    mean_avg: float = Field(description="Average predicted mean.")
    std_avg: float = Field(description="Average predicted σ.")
    std_max: float = Field(description="Largest predicted σ.")
    lowest: list[ItemPrediction] = Field(description="Up to 5 items with the lowest predicted mean.")
    highest: list[ItemPrediction] = Field(description="Up to 5 items with the highest predicted mean.")


def _check_ids(ids: list[str], known: dict[str, int], feature_set_id: str) -> None:
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ToolInputError(
            f"expected ids of feature set {feature_set_id}, got {len(unknown)} unknown (first: {unknown[:5]})"
        )


class _Labelled:
    """Graphs of one feature set with finite targets, split train/val/test by a seed."""

    def __init__(
        self,
        ws: Workspace,
        feature_set_id: str,
        target: str,
        train_ids: list[str] | None,
        *,
        seed: int,
        val_fraction: float,
        test_fraction: float,
        cheap_level: str | None = None,
    ) -> None:
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= frac < 1.0:
                raise ToolInputError(f"expected {name} in [0, 1), got {frac}")
        if val_fraction + test_fraction >= 1.0:
            raise ToolInputError(
                f"expected val_fraction + test_fraction < 1, got {val_fraction + test_fraction}"
            )
        gs: GraphSet = load_graphs(feature_set_id, workspace=ws)
        self.kind = str(gs.meta.get("kind", ""))
        data = load_slice(ws, gs.meta["slice_id"])
        if target not in data.properties.columns:
            raise invalid_choice(
                f"a target property of slice {gs.meta['slice_id']}", target, data.properties.columns
            )
        self.target, self.unit = target, data.units.get(target, "")
        values = dict(zip(data.ids, data.target(target), strict=True))
        pos = {item_id: k for k, item_id in enumerate(gs.ids)}
        ids = gs.ids
        if train_ids is not None:
            _check_ids(train_ids, pos, feature_set_id)
            ids = list(dict.fromkeys(train_ids))
        labelled = [i for i in ids if np.isfinite(values.get(i, np.nan))]
        self.n_skipped = len(ids) - len(labelled)
        if not labelled:
            raise ToolInputError(
                f"expected items with a {target!r} value, got none among {len(ids)} items of {feature_set_id}"
            )
        order = np.random.default_rng(seed).permutation(len(labelled))
        n = len(labelled)
        n_test = round(test_fraction * n) if n >= 10 else 0
        n_val = max(2, round(val_fraction * n)) if n >= 5 and val_fraction > 0 else 0
        split = {
            "test": [labelled[k] for k in order[:n_test]],
            "val": [labelled[k] for k in order[n_test : n_test + n_val]],
            "train": [labelled[k] for k in order[n_test + n_val :]],
        }
        self.ids = split
        everything = with_level_values(gs.items(ws), gs.ids, ws, cheap_level)
        self.items = {name: everything.take([pos[i] for i in part]).built() for name, part in split.items()}
        self.y = {name: np.array([values[i] for i in part], dtype=np.float64) for name, part in split.items()}
        self.eval_split: Literal["test", "val", "train"] = "test" if n_test else ("val" if n_val else "train")

    def evaluate(self, model: Surrogate) -> UQMetrics:
        pred = model.predict_items(self.items[self.eval_split])
        return uq_metrics(self.y[self.eval_split], pred.mean, pred.std)

    def meta(self) -> dict[str, Any]:
        return {
            "n_train": len(self.ids["train"]),
            "n_val": len(self.ids["val"]),
            "n_test": len(self.ids["test"]),
            "data_hash": data_hash(self.ids["train"], self.y["train"]),
            "split_ids": self.ids,
        }


def _options(ws: Workspace) -> TrainOptions:
    cfg = ws.settings.train
    return TrainOptions(
        epochs=cfg.epochs,
        patience=cfg.patience,
        batch_size=cfg.batch_size,
        lr=cfg.learning_rate,
        bootstrap=cfg.bootstrap,
    )


def train_uq_gnn(
    feature_set_id: str,
    target: str,
    method: UQMethod = "ensemble",
    epochs: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    recalibrate: bool = True,
    backbone: Literal["auto"] | Backbone = "gnn",
    cheap_level: LevelName | None = None,
    trainable_blocks: TrainableBlocks = 0,
    *,
    train_ids: list[str] | None = None,
    progress: ProgressCallback | None = None,
    workspace: Workspace | str | Path | None = None,
) -> TrainResult:
    """Train a graph neural network with uncertainty on one property of a feature set.

    Items without a value of ``target`` are skipped. The labelled items are split at random
    (seeded) into train / validation (early stopping, σ recalibration) / test (metrics).

    Args:
        feature_set_id: id returned by ``featurize``.
        target: property column of the featurized slice to learn.
        method: uncertainty method: "ensemble" (deep ensemble, default), "mc_dropout",
            "evidential" or "gp" (Gaussian process on the GNN embeddings).
        epochs: maximum training epochs per network (default from settings); early stopping may end sooner.
        seed: random seed for the split, initialisation and shuffling.
        val_fraction: fraction of labelled items used for validation.
        test_fraction: fraction of labelled items held out for the reported metrics.
        recalibrate: scale σ so that it is calibrated on the validation split.
        backbone: "gnn" (the graph network, trained from scratch; default) or a frozen
            pretrained/composition featurizer under a small head that trains in seconds:
            "chgnet", "sevennet_0", "magpie", "chgnet+magpie" (method "ensemble", "mc_dropout" or "gp");
            "auto" picks "chgnet+magpie" for crystals, "gnn" for molecules ("magpie" with a
            cheap_level).
        cheap_level: a cheap validation level already computed for the items ("chgnet_static" for
            crystals, "xtb" for molecules: queue_validation at that level first): its results
            become inputs of a vector head, and the head learns the label minus the cheap level's
            value of the same property where it computes one (multi-fidelity Δ-learning, e.g.
            DFT formation energies minus CHGNet's).
        trainable_blocks: with backbone "chgnet" or "sevennet_0" and method "ensemble", "mc_dropout"
            or "gp", fine-tune the pretrained network under the head instead of keeping it frozen: N
            trains its last N interaction blocks (CHGNet has 4, SevenNet-0 5) and its read-out, "all"
            every pretrained parameter (minutes instead of seconds); 0 (default) keeps it frozen. The
            GP is fitted on the vectors of the network fine-tuned under the MLP ensemble.
    """
    ws = resolve_workspace(workspace)
    if epochs is not None and epochs < 1:
        raise ToolInputError(f"expected epochs >= 1, got {epochs}")
    data = _Labelled(
        ws,
        feature_set_id,
        target,
        train_ids,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        cheap_level=cheap_level,
    )
    backbone = resolve_backbone(backbone, data.kind, level_values=cheap_level is not None)
    if backbone == "gnn" and cheap_level is not None:
        raise ToolInputError(
            f"expected a vector backbone to read cheap level {cheap_level!r} (or 'auto'), got 'gnn'"
        )
    trainable_blocks = check_trainable_blocks(trainable_blocks)
    heads = f"one of {list(VECTOR_HEADS)}"
    if trainable_blocks != 0 and (backbone not in FINE_TUNABLE or method not in VECTOR_HEADS or cheap_level):
        raise ToolInputError(
            f"expected backbone {' or '.join(map(repr, FINE_TUNABLE))}, method {heads} and no cheap level "
            f"to fine-tune pretrained layers (trainable_blocks={trainable_blocks!r}), got backbone "
            f"{backbone!r}, method {method!r}, cheap level {cheap_level!r}"
        )
    if backbone != "gnn" and method not in VECTOR_HEADS:
        raise ToolInputError(f"expected method {heads} on backbone {backbone!r}, got {method!r}")
    start = time.perf_counter()
    if backbone == "gnn":
        model: Surrogate = fit_uq_model(
            data.items["train"].graphs,
            data.y["train"],
            data.items["val"].graphs,
            data.y["val"],
            method=method,
            seed=seed,
            epochs=epochs,
            recalibrate_sigma=recalibrate,
            options=_options(ws),
            progress=progress,
            ensemble_size=ws.settings.train.ensemble_size,
            hidden=ws.settings.train.hidden,
            conv=ws.settings.train.conv,
        )
    elif trainable_blocks != 0:
        model = _fit_finetuned(
            ws, data, backbone, trainable_blocks, seed, epochs, head=VECTOR_HEADS[method], progress=progress
        )
    else:
        model = _fit_vector(ws, data, backbone, VECTOR_HEADS[method], seed, epochs)
    metrics = data.evaluate(model)
    model_id, shared = _save_trained(
        ws,
        data,
        model,
        metrics,
        start,
        target=target,
        method=method,
        feature_set_id=feature_set_id,
        backbone=backbone,
        cheap_level=cheap_level,
    )
    return TrainResult(
        model_id=model_id,
        feature_set_id=feature_set_id,
        metrics=metrics,
        sigma_scale=float(model.sigma_scale),
        **shared,
    )


def _save_trained(
    ws: Workspace, data: _Labelled, model: Any, metrics: UQMetrics, start: float, **meta: Any
) -> tuple[str, dict[str, Any]]:
    """Save a model ``train_uq_gnn`` or ``fine_tune`` made (started at ``start``), with the
    metadata both record (``meta`` adds the caller's own: target, method, feature set ...);
    returns its id and the result fields both report (:class:`_FitSummary` and ``seconds``)."""
    seconds = time.perf_counter() - start
    saved = {"unit": data.unit, **meta, "metrics": metrics.model_dump(), "metrics_split": data.eval_split}
    model_id = save_model(ws, model, {**saved, **data.meta()})
    shared = {
        "target": meta["target"],
        "method": meta["method"],
        "unit": data.unit,
        "n_train": len(data.ids["train"]),
        "n_val": len(data.ids["val"]),
        "n_test": len(data.ids["test"]),
        "n_skipped": data.n_skipped,
        "metrics_split": data.eval_split,
        "epochs_run": int(model.meta["epochs_run"]),
        "checkpoint_mb": round(model.meta["checkpoint_bytes"] / 1e6, 3),
        "seconds": round(seconds, 2),
    }
    return model_id, shared


def _fit_finetuned(
    ws: Workspace,
    data: _Labelled,
    backbone: str,
    trainable_blocks: TrainableBlocks,
    seed: int,
    epochs: int | None,
    *,
    head: str = "mlp_ensemble",
    start: FineTunedPretrained | None = None,
    progress: ProgressCallback | None = None,
) -> FineTunedPretrained:
    """A pretrained network fine-tuned under a vector head (``start``'s head when given; items the
    network cannot handle are left out)."""
    train, val = data.items["train"].structures, data.items["val"].structures
    if train is None or val is None:
        raise ToolInputError(f"expected the items' structures to fine-tune {backbone}, got graphs only")
    return fit_finetuned(
        train,
        data.y["train"],
        val,
        data.y["val"],
        backbone=backbone,
        method=head,
        trainable_blocks=trainable_blocks,
        seed=seed,
        start=start,
        progress=progress,
        ensemble_size=ws.settings.train.ensemble_size,
        **({"epochs": epochs} if epochs is not None else {}),
    )


def _fit_vector(
    ws: Workspace, data: _Labelled, backbone: str, head: str, seed: int, epochs: int | None
) -> Surrogate:
    """A vector head on the backbone's vectors (and the cheap level's values); items the backbone
    cannot embed or without cheap values are left out of training (they keep the prior)."""
    columns = data.items["train"].level_columns
    delta = delta_column(data.target, columns)
    x, y = {}, dict(data.y)
    for name, items in data.items.items():
        x[name], baseline = surrogate_inputs(backbone, items, columns, delta)
        if baseline is not None:
            x[name][~np.isfinite(baseline)] = np.nan
            y[name] = y[name] - baseline
    ok = {name: np.isfinite(v).all(axis=1) for name, v in x.items()}
    if ok["train"].sum() < 2:
        raise ToolInputError(
            f"expected ≥ 2 training items that {backbone} can embed, got {int(ok['train'].sum())}"
        )
    cfg = ws.settings.train
    provenance = [PRETRAINED[p].provenance() for p in backbone_parts(backbone) if p in PRETRAINED]
    return fit_vector_model(
        x["train"][ok["train"]],
        y["train"][ok["train"]],
        x["val"][ok["val"]],
        y["val"][ok["val"]],
        method=head,
        seed=seed,
        bootstrap=True,
        ensemble_size=cfg.ensemble_size,
        backbone=backbone,
        level_columns=columns,
        delta=delta,
        meta={"pretrained": provenance, "label_mean": float(data.y["train"].mean())},
        **({"epochs": epochs} if epochs is not None else {}),
    )


def fine_tune(
    model_id: str,
    feature_set_id: str,
    target: str | None = None,
    freeze_backbone: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    train_ids: list[str] | None = None,
    progress: ProgressCallback | None = None,
    workspace: Workspace | str | Path | None = None,
) -> FineTuneResult:
    """Continue training a model on new labels (optionally of another property); saves a new model.

    Args:
        model_id: model to start from (it is not modified).
        feature_set_id: graphs with the new labels.
        target: property to learn (default: the model's own target). A different property
            re-normalises the output (transfer learning, e.g. pretrain on formation energy).
        freeze_backbone: keep the graph convolutions (or a fine-tuned pretrained network) fixed and
            train only the output heads. A fine-tuned pretrained network otherwise keeps training
            the layers it trained.
        epochs: maximum epochs per network (default from settings).
        seed: random seed for the split and shuffling.
        val_fraction: fraction of labelled items used for validation.
        test_fraction: fraction of labelled items held out for the reported metrics.
    """
    ws = resolve_workspace(workspace)
    if epochs is not None and epochs < 1:
        raise ToolInputError(f"expected epochs >= 1, got {epochs}")
    parent = load_model(ws, model_id)
    if not isinstance(parent, UQModel | FineTunedPretrained):
        raise ToolInputError(
            f"expected a graph-network or fine-tuned pretrained model, got {model_id} on the frozen "
            f"backbone {parent.config['backbone']!r}; train a new one with train_uq_gnn (it takes seconds, "
            "or pass trainable_blocks to fine-tune the pretrained network)"
        )
    target = target or parent.meta.get("target")
    if not target:
        raise ToolInputError(f"expected a target for model {model_id}, which records none")
    data = _Labelled(
        ws,
        feature_set_id,
        target,
        train_ids,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    if isinstance(parent, UQModel):
        parent.check_graphs(data.items["train"].graphs)
    before = data.evaluate(parent)
    start = time.perf_counter()
    tuned: Surrogate
    if isinstance(parent, FineTunedPretrained):
        blocks = 0 if freeze_backbone else parent.config["trainable_blocks"]
        backbone = parent.pretrained
        tuned = _fit_finetuned(ws, data, backbone, blocks, seed, epochs, start=parent, progress=progress)
    else:
        tuned = fine_tune_uq_model(
            parent,
            data.items["train"].graphs,
            data.y["train"],
            data.items["val"].graphs,
            data.y["val"],
            freeze_backbone=freeze_backbone,
            epochs=epochs,
            seed=seed,
            new_target=target != parent.meta.get("target"),
            options=_options(ws),
            progress=progress,
        )
    after = data.evaluate(tuned)
    new_id, shared = _save_trained(
        ws,
        data,
        tuned,
        after,
        start,
        target=target,
        method=str(parent.meta.get("method", parent.method)),
        feature_set_id=feature_set_id,
        backbone=parent.meta.get("backbone", "gnn"),
        parent_model_id=model_id,
        metrics_before=before.model_dump(),
    )
    return FineTuneResult(
        model_id=new_id,
        parent_model_id=model_id,
        freeze_backbone=freeze_backbone,
        metrics_before=before,
        metrics_after=after,
        **shared,
    )


def predict(
    model_id: str,
    feature_set_id: str,
    ids: list[str] | None = None,
    *,
    workspace: Workspace | str | Path | None = None,
) -> PredictResult:
    """Predict mean and σ of a model's target for the graphs of a feature set (summary only).

    Args:
        model_id: id returned by ``train_uq_gnn`` or ``fine_tune``.
        feature_set_id: id returned by ``featurize``.
        ids: restrict to these item ids (default: all).
    """
    ws = resolve_workspace(workspace)
    model = load_model(ws, model_id)
    gs = load_graphs(feature_set_id, workspace=ws)
    pos = {item_id: k for k, item_id in enumerate(gs.ids)}
    if ids is not None:
        _check_ids(ids, pos, feature_set_id)
    chosen = list(ids) if ids is not None else list(gs.ids)
    if not chosen:
        raise ToolInputError(f"expected at least one item to predict, got none in {feature_set_id}")
    pred = model.predict_items(model_items(gs, ws, model.meta).take([pos[i] for i in chosen]))
    order = np.argsort(pred.mean)

    def items(idx: np.ndarray) -> list[ItemPrediction]:
        return [
            ItemPrediction(item_id=chosen[k], mean=float(pred.mean[k]), std=float(pred.std[k])) for k in idx
        ]

    return PredictResult(
        model_id=model_id,
        feature_set_id=feature_set_id,
        target=str(model.meta.get("target", "")),
        unit=str(model.meta.get("unit", "")),
        count=len(chosen),
        mean_min=float(pred.mean.min()),
        mean_max=float(pred.mean.max()),
        mean_avg=float(pred.mean.mean()),
        std_avg=float(pred.std.mean()),
        std_max=float(pred.std.max()),
        lowest=items(order[:5]),
        highest=items(order[::-1][:5]),
    )
