"""Graph regressor: element embedding → graph convolutions (CGCNN or SchNet) → pooling → MLP head."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn.aggr import AttentionalAggregation, MeanAggregation

from matloop.errors import invalid_choice
from matloop.models.layers import CFConvBlock, CGConvBlock, Norm
from matloop.names import ConvName

Pooling = Literal["mean", "attention"]


class CrystalGNN(nn.Module):
    """Graph regressor for crystals and molecules (graphs from :func:`matloop.data.graphs.build_graph`).

    The *backbone* (``embed``, ``convs``, ``pool``) maps a graph to a fixed-length embedding; the
    *head* (an MLP) maps the embedding to ``n_outputs`` numbers whose meaning the uncertainty
    method decides (a mean and a variance, the four Normal-Inverse-Gamma parameters, ...).

    Args:
        node_dim: node feature size of the input graphs.
        edge_dim: edge feature size of the input graphs.
        n_outputs: head outputs.
        hidden: node and embedding width.
        n_layers: graph convolutions.
        head_hidden: width of the head's hidden layers.
        head_layers: hidden layers in the head.
        dropout: dropout probability on node features after each convolution and in the head.
        norm: normalisation inside each convolution (``"batch"``, ``"layer"``, ``"none"``).
        pooling: ``"mean"`` over atoms (intensive targets) or gated ``"attention"``.
        conv: ``"cgcnn"`` (gated crystal-graph convolution, normalised by ``norm``) or
            ``"schnet"`` (continuous-filter convolution; ``norm`` is not used), which suits molecules.
    """

    def __init__(
        self,
        *,
        node_dim: int,
        edge_dim: int,
        n_outputs: int = 1,
        hidden: int = 64,
        n_layers: int = 3,
        head_hidden: int = 64,
        head_layers: int = 1,
        dropout: float = 0.0,
        norm: Norm = "batch",
        pooling: Pooling = "mean",
        conv: ConvName = "cgcnn",
    ) -> None:
        super().__init__()
        self.node_dim, self.edge_dim, self.n_outputs = node_dim, edge_dim, n_outputs
        self.embed = nn.Linear(node_dim, hidden)
        self.convs: nn.ModuleList
        if conv == "cgcnn":
            self.convs = nn.ModuleList(CGConvBlock(hidden, edge_dim, norm=norm) for _ in range(n_layers))
        elif conv == "schnet":
            self.convs = nn.ModuleList(CFConvBlock(hidden, edge_dim) for _ in range(n_layers))
        else:
            raise invalid_choice("a graph convolution", conv, ("cgcnn", "schnet"))
        self.dropout = nn.Dropout(dropout)
        if pooling == "mean":
            self.pool: nn.Module = MeanAggregation()
        elif pooling == "attention":
            self.pool = AttentionalAggregation(gate_nn=nn.Linear(hidden, 1))
        else:
            raise ValueError(f"pooling must be 'mean' or 'attention', got {pooling!r}")
        layers: list[nn.Module] = []
        width = hidden
        for _ in range(head_layers):
            layers += [nn.Linear(width, head_hidden), nn.Softplus(), nn.Dropout(dropout)]
            width = head_hidden
        layers.append(nn.Linear(width, n_outputs))
        self.head = nn.Sequential(*layers)

    def backbone_modules(self) -> list[nn.Module]:
        """The modules that make the embedding (frozen when only the head is fine-tuned)."""
        return [self.embed, self.convs, self.pool]

    def embedding(self, batch: Batch) -> Tensor:
        """Pooled graph embeddings [n_graphs, hidden]."""
        x = self.embed(batch.x)
        for conv in self.convs:
            x = self.dropout(conv(x, batch.edge_index, batch.edge_attr))
        return self.pool(x, batch.batch, dim_size=batch.num_graphs)

    def forward(self, batch: Batch) -> Tensor:
        """Raw head outputs [n_graphs, n_outputs]."""
        return self.head(self.dropout(self.embedding(batch)))
