"""Synthetic crystal graphs with a learnable target, in- and out-of-distribution."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Element, Lattice, Structure

from matloop.data.graphs import GraphParams, build_graph

CATIONS = ["Li", "Na", "K", "Rb", "Mg", "Ca", "Sr", "Ba"]
ANIONS = ["F", "Cl", "Br", "I", "O", "S", "Se"]
PARAMS = GraphParams(cutoff=5.0, max_neighbors=8, n_gaussians=20)


def target(structure: Structure) -> float:
    """A smooth function of composition and volume (what the network must learn)."""
    chi = [Element(str(s.specie)).X for s in structure]
    return float(np.ptp(chi) + 0.1 * structure.volume / len(structure))


def rocksalt(a_el: str, b_el: str, rng: np.random.Generator) -> Structure:
    radius = Element(a_el).atomic_radius + Element(b_el).atomic_radius
    a = 2.0 * float(radius) * rng.uniform(0.95, 1.05)
    lattice = Lattice(0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]))  # primitive fcc cell
    return Structure(lattice, [a_el, b_el], [[0, 0, 0], [0.5, 0.5, 0.5]])


def make_set(pairs, n: int, seed: int):
    """``n`` rocksalt graphs drawn from ``pairs`` with their targets."""
    rng = np.random.default_rng(seed)
    graphs, y = [], []
    for k in range(n):
        a_el, b_el = pairs[rng.integers(len(pairs))]
        s = rocksalt(a_el, b_el, rng)
        graphs.append(build_graph(s, PARAMS, f"{a_el}{b_el}-{seed}-{k}"))
        y.append(target(s))
    return graphs, np.array(y)


ID_PAIRS = [(a, b) for a in CATIONS for b in ANIONS]
OOD_PAIRS = [("Cs", "Te"), ("La", "N"), ("Au", "Pt"), ("W", "C"), ("U", "Ir"), ("Hf", "B")]


@pytest.fixture(scope="session")
def crystal_data():
    """Train / val / in-distribution test / out-of-distribution graphs and targets."""
    return {
        "train": make_set(ID_PAIRS, 120, seed=1),
        "val": make_set(ID_PAIRS, 30, seed=2),
        "test": make_set(ID_PAIRS, 30, seed=3),
        "ood": make_set(OOD_PAIRS, 30, seed=4),
    }
