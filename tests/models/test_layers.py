"""The convolution computes the CGCNN update; the network handles crystals and molecules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pymatgen.core import Molecule
from torch_geometric.data import Batch

from matloop.data.graphs import GraphParams, build_graph
from matloop.models.layers import CGConvBlock
from matloop.models.network import CrystalGNN


def test_block_matches_concatenated_cgcnn_formula():
    torch.manual_seed(0)
    conv = CGConvBlock(8, 5, norm="none")
    x, e = torch.randn(6, 8), torch.randn(10, 5)
    edge_index = torch.randint(0, 6, (2, 10))
    src, dst = edge_index
    # z_ij = [x_i, x_j, e_ij] with i the receiving atom; W = [W_dst; W_src; W_edge]
    z = torch.cat([x[dst], x[src], e], dim=1)
    w = torch.cat([conv.lin_dst.weight, conv.lin_src.weight, conv.lin_edge.weight], dim=1)
    gate, core = (z @ w.T + conv.lin_dst.bias).chunk(2, dim=1)
    messages = torch.sigmoid(gate) * F.softplus(core)
    expected = x + F.softplus(torch.zeros_like(x).index_add_(0, dst, messages))
    torch.testing.assert_close(conv(x, edge_index, e), expected)
    assert repr(conv) == "CGConvBlock(8, edge_dim=5, norm='none')"


def test_network_on_molecules_and_crystals(crystal_data):
    params = GraphParams(cutoff=5.0, max_neighbors=8, n_gaussians=20)
    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    graphs = [build_graph(water, params, "water"), crystal_data["train"][0][0]]
    net = CrystalGNN(
        node_dim=graphs[0].x.shape[1], edge_dim=params.n_gaussians, n_outputs=2, pooling="attention"
    )
    net.eval()
    out = net(Batch.from_data_list(graphs))
    assert out.shape == (2, 2) and torch.isfinite(out).all()
