"""The UQ model: GNN member(s), an uncertainty method, target normalisation and σ calibration."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from matloop.data.items import Items
from matloop.errors import ToolInputError
from matloop.models.calibrated import CalibratedModel
from matloop.models.checkpoint import write_checkpoint
from matloop.models.layers import Norm
from matloop.models.network import CrystalGNN, Pooling
from matloop.models.uq import dropout_passes, get_method, mixture
from matloop.names import ConvName

FORMAT = "matloop.uq_gnn"
VERSION = 1
#: Fixed seed of the dropout masks at prediction time, so predictions are reproducible.
PREDICT_SEED = 12345
_TINY = 1e-30


@dataclass
class UQPrediction:
    """Predictive mean, standard deviation and its epistemic part (target units), and pooled
    embeddings [N, D] (of the first member for an ensemble)."""

    mean: np.ndarray
    std: np.ndarray
    embedding: np.ndarray
    epistemic_std: np.ndarray


def strip_graph(graph: Data) -> Data:
    """Only the tensors the network reads (faster batching), with subnormal floats flushed to zero.

    Far tails of the Gaussian distance expansion underflow to subnormal numbers, which make
    CPU matrix products many times slower.
    """
    edge_attr = graph.edge_attr.masked_fill(graph.edge_attr.abs() < _TINY, 0.0)
    return Data(x=graph.x, edge_index=graph.edge_index, edge_attr=edge_attr, num_nodes=graph.num_nodes)


def iter_batches(graphs: Sequence[Data], batch_size: int) -> Iterator[Batch]:
    """Consecutive batches, in order."""
    for start in range(0, len(graphs), batch_size):
        yield Batch.from_data_list(list(graphs[start : start + batch_size]))


class UQModel(CalibratedModel):
    """GNN regressor(s) with a predictive distribution, selected by ``method``.

    Args:
        method: ``"ensemble"``, ``"mc_dropout"``, ``"evidential"`` or ``"gp"``.
        node_dim: node feature size of the graphs.
        edge_dim: edge feature size of the graphs.
        ensemble_size: members of a deep ensemble (1 for the other methods).
        mc_samples: stochastic passes for MC dropout.
        dropout: dropout probability (defaults to 0.1 for MC dropout, 0 otherwise).
        evidential_lambda: weight of the evidence regulariser.
        hidden, n_layers, head_hidden, head_layers, norm, pooling, conv: see :class:`CrystalGNN`.
    """

    def __init__(
        self,
        *,
        method: str = "ensemble",
        node_dim: int,
        edge_dim: int,
        ensemble_size: int = 5,
        mc_samples: int = 20,
        dropout: float | None = None,
        evidential_lambda: float = 0.01,
        hidden: int = 64,
        n_layers: int = 3,
        head_hidden: int = 64,
        head_layers: int = 1,
        norm: Norm = "batch",
        pooling: Pooling = "mean",
        conv: ConvName = "cgcnn",
    ) -> None:
        super().__init__()
        self.uq = get_method(method, evidential_lambda=evidential_lambda)
        if dropout is None:
            dropout = 0.1 if method == "mc_dropout" else 0.0
        if method == "mc_dropout" and dropout <= 0:
            raise ToolInputError(f"expected dropout > 0 for mc_dropout, got {dropout}")
        n_members = ensemble_size if method == "ensemble" else 1
        if n_members < 1:
            raise ToolInputError(f"expected ensemble_size >= 1, got {ensemble_size}")
        self.config: dict[str, Any] = {
            "method": method,
            "node_dim": node_dim,
            "edge_dim": edge_dim,
            "ensemble_size": ensemble_size,
            "mc_samples": mc_samples,
            "dropout": dropout,
            "evidential_lambda": evidential_lambda,
            "hidden": hidden,
            "n_layers": n_layers,
            "head_hidden": head_hidden,
            "head_layers": head_layers,
            "norm": norm,
            "pooling": pooling,
            "conv": conv,
        }
        net_args = {
            k: self.config[k]
            for k in ("hidden", "n_layers", "head_hidden", "head_layers", "norm", "pooling", "conv")
        }
        self.members = nn.ModuleList(
            CrystalGNN(
                node_dim=node_dim, edge_dim=edge_dim, n_outputs=self.uq.n_outputs, dropout=dropout, **net_args
            )
            for _ in range(n_members)
        )

    def check_graphs(self, graphs: Sequence[Data]) -> None:
        """Raise :class:`ToolInputError` for graphs whose feature sizes differ from the model's."""
        for g in graphs:
            got = (int(g.x.shape[1]), int(g.edge_attr.shape[1]))
            if got != (self.config["node_dim"], self.config["edge_dim"]):
                raise ToolInputError(
                    f"expected graphs with node/edge feature sizes ({self.config['node_dim']}, "
                    f"{self.config['edge_dim']}) as the model was trained on, got {got} for item "
                    f"{getattr(g, 'item_id', '?')!r}; featurize with the same settings"
                )

    @torch.no_grad()
    def predict_normalized(
        self, graphs: Sequence[Data], *, batch_size: int = 256
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean, total and epistemic variance (normalised units, before σ calibration) and
        the pooled embeddings of member 0."""
        self.check_graphs(graphs)
        self.eval()
        graphs = [strip_graph(g) for g in graphs]
        parts: list[tuple[Tensor, ...]] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PREDICT_SEED)
            for batch in iter_batches(graphs, batch_size):
                emb = self.members[0].embedding(batch)
                if self.gp is not None:
                    mean, var, epi = self.gp.predict(emb)
                    parts.append((mean, var, epi, emb))
                    continue
                if self.uq.stochastic:
                    outs = dropout_passes(self.members[0], batch, self.config["mc_samples"])
                else:
                    outs = [net(batch) for net in self.members]
                m, v = (
                    torch.stack(t).double() for t in zip(*(self.uq.gaussian(o) for o in outs), strict=True)
                )
                mean, var = mixture(m, v)
                epi = m.var(0, correction=0) + torch.stack(
                    [self.uq.epistemic(o) for o in outs]
                ).double().mean(0)
                parts.append((mean, var, epi, emb))
        if not parts:
            empty = torch.zeros(0, dtype=torch.float64)
            return empty, empty, empty, torch.zeros(0, self.config["hidden"])
        mean, var, epi, emb = (torch.cat(t) for t in zip(*parts, strict=True))
        return mean, var, epi, emb

    def predict_items(self, items: Items) -> UQPrediction:
        """:meth:`predict` on the items' graphs."""
        return self.predict(items.graphs)

    def predict(self, graphs: Sequence[Data], *, batch_size: int = 256) -> UQPrediction:
        """Predictive mean and σ in target units (σ calibration applied) and embeddings."""
        mean, var, epi, emb = self.predict_normalized(graphs, batch_size=batch_size)
        scale = self.sigma_scale * self.y_std
        mu, sigma = self.bound((mean * self.y_std + self.y_mean).numpy(), (var.sqrt() * scale).numpy())
        return UQPrediction(
            mean=mu,
            std=sigma,
            embedding=emb.double().numpy(),
            epistemic_std=np.minimum((epi.clamp_min(0).sqrt() * scale).numpy(), sigma),
        )


def save_checkpoint(model: UQModel, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (init args, weights, metadata) to ``path``."""
    return write_checkpoint(path, FORMAT, VERSION, model, {**model.meta, **(meta or {})})


def load_checkpoint(path: str | Path) -> UQModel:
    """Read a checkpoint written by :func:`save_checkpoint`; problems raise :class:`CheckpointError`."""
    return UQModel.load(path, FORMAT, VERSION)
