"""Items a surrogate trains on or predicts: their graphs and, lazily, their structures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pymatgen.core import Molecule, Structure
from torch_geometric.data import Data


@dataclass(frozen=True)
class Items:
    """Items to train on or predict, aligned: their graphs and, for pretrained backbones, their
    structures (any sequence; dataset slices keep them lazy) and the embedding cache."""

    graphs: Sequence[Data]
    structures: Sequence[Structure | Molecule] | None = None
    cache_path: Path | None = None

    def __len__(self) -> int:
        return len(self.graphs)

    def take(self, positions: Sequence[int]) -> Items:
        """The items at ``positions``, in that order."""
        structures = self.structures
        if structures is not None:
            take = getattr(structures, "take", None)
            structures = take(positions) if take is not None else [structures[i] for i in positions]
        return replace(self, graphs=[self.graphs[i] for i in positions], structures=structures)
