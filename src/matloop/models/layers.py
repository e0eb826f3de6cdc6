"""Graph convolutions of the backbones: gated crystal-graph (CGCNN) and continuous-filter (SchNet)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.conv import MessagePassing

Norm = Literal["batch", "layer", "none"]


class CGConvBlock(MessagePassing):
    r"""Gated crystal-graph convolution with normalisation and a residual connection, after
    `"Crystal Graph Convolutional Neural Networks for an Accurate and Interpretable Prediction
    of Material Properties" <https://doi.org/10.1103/PhysRevLett.120.145301>`_ (Xie & Grossman 2018).

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{x}_i + g\Big(\mathrm{Norm}\Big(\sum_{j \in \mathcal{N}(i)}
        \sigma\left(\mathbf{z}_{i,j} \mathbf{W}_f + \mathbf{b}_f\right)
        \odot g\left(\mathbf{z}_{i,j} \mathbf{W}_s + \mathbf{b}_s\right)\Big)\Big)

    with :math:`\mathbf{z}_{i,j} = [\mathbf{x}_i, \mathbf{x}_j, \mathbf{e}_{i,j}]`, :math:`\sigma`
    the sigmoid and :math:`g` the softplus. The linear maps of the concatenation are split into
    node and edge parts, :math:`\mathbf{z}_{i,j}\mathbf{W} = \mathbf{x}_i\mathbf{W}^{(i)} +
    \mathbf{x}_j\mathbf{W}^{(j)} + \mathbf{e}_{i,j}\mathbf{W}^{(e)}`, so the node parts are
    computed once per atom rather than once per edge (same function, fewer operations).

    Args:
        channels: node feature size (input and output).
        edge_dim: edge feature size.
        norm: ``"batch"`` (as in CGCNN), ``"layer"`` or ``"none"``, applied to the summed messages.
        aggr: message aggregation (``"add"``, ``"mean"``, ``"max"``).
    """

    def __init__(self, channels: int, edge_dim: int, *, norm: Norm = "batch", aggr: str = "add") -> None:
        super().__init__(aggr=aggr)
        self.channels = channels
        self.edge_dim = edge_dim
        self.norm_kind = norm
        # Filter and core gates side by side: output [.., 2 * channels].
        self.lin_dst = nn.Linear(channels, 2 * channels, bias=True)
        self.lin_src = nn.Linear(channels, 2 * channels, bias=False)
        self.lin_edge = nn.Linear(edge_dim, 2 * channels, bias=False)
        self.norm: nn.Module
        if norm == "batch":
            self.norm = nn.BatchNorm1d(channels)
        elif norm == "layer":
            self.norm = nn.LayerNorm(channels)
        elif norm == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {norm!r}")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_dst.reset_parameters()
        self.lin_src.reset_parameters()
        self.lin_edge.reset_parameters()
        if hasattr(self.norm, "reset_parameters"):
            self.norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Updated node features [n_nodes, channels]."""
        out = self.propagate(edge_index, h_dst=self.lin_dst(x), h_src=self.lin_src(x), edge_attr=edge_attr)
        return x + F.softplus(self.norm(out))

    def message(self, h_dst_i: Tensor, h_src_j: Tensor, edge_attr: Tensor) -> Tensor:
        gate, core = (h_dst_i + h_src_j + self.lin_edge(edge_attr)).chunk(2, dim=-1)
        return torch.sigmoid(gate) * F.softplus(core)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.channels}, edge_dim={self.edge_dim}, norm={self.norm_kind!r})"
        )


class CFConvBlock(MessagePassing):
    r"""SchNet interaction block: a continuous-filter convolution with a residual update, after
    `"SchNet – A deep learning architecture for molecules and materials"
    <https://doi.org/10.1063/1.5019779>`_ (Schütt et al. 2018).

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{x}_i + W_3\, g\Big(W_2 \sum_{j \in \mathcal{N}(i)}
        (W_1 \mathbf{x}_j) \odot \big(W_5\, g(W_4 \mathbf{e}_{i,j})\big)\Big)

    with :math:`\mathbf{e}_{i,j}` the Gaussian expansion of the distance (the project's own
    neighbour lists) and :math:`g` the shifted softplus. The filter depends only on the distance,
    so the block is invariant to rotations and translations and smooth in the coordinates.

    Args:
        channels: node feature size (input and output).
        edge_dim: edge feature size (Gaussians of the distance).
        filters: filter width.
    """

    def __init__(self, channels: int, edge_dim: int, *, filters: int | None = None) -> None:
        super().__init__(aggr="add")
        self.channels, self.edge_dim = channels, edge_dim
        self.filters = filters or channels
        self.filter_in = nn.Linear(edge_dim, self.filters)
        self.filter_out = nn.Linear(self.filters, self.filters)
        self.lin_in = nn.Linear(channels, self.filters, bias=False)
        self.lin_mid = nn.Linear(self.filters, channels)
        self.lin_out = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.filter_in, self.filter_out, self.lin_in, self.lin_mid, self.lin_out):
            lin.reset_parameters()

    @staticmethod
    def shifted_softplus(x: Tensor) -> Tensor:
        return F.softplus(x) - math.log(2.0)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Updated node features [n_nodes, channels]."""
        w = self.filter_out(self.shifted_softplus(self.filter_in(edge_attr)))
        m = self.propagate(edge_index, h=self.lin_in(x), w=w)
        return x + self.lin_out(self.shifted_softplus(self.lin_mid(m)))

    def message(self, h_j: Tensor, w: Tensor) -> Tensor:
        return h_j * w

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, edge_dim={self.edge_dim}, filters={self.filters})"
