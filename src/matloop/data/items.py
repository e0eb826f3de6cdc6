"""Items a surrogate trains on or predicts: their graphs, lazily their structures, and the values a
cheap level computed for them (surrogate inputs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Molecule, Structure

if TYPE_CHECKING:
    from torch_geometric.data import Data


def _take(items: Sequence, positions: Sequence[int]) -> Sequence:
    """``items`` at ``positions``: a lazy sequence's own view when it has one (``take``)."""
    take = getattr(items, "take", None)
    return take(positions) if take is not None else [items[i] for i in positions]


@dataclass(frozen=True)
class Items:
    """Items to train on or predict, aligned: their graphs and, for pretrained backbones, their
    structures (any sequence; dataset slices keep them lazy) and the embedding cache; for a
    multi-fidelity surrogate, an [items, columns] array of a cheap level's values (NaN: none),
    columns named ``<property>@<level>``."""

    graphs: Sequence[Data]
    structures: Sequence[Structure | Molecule] | None = None
    cache_path: Path | None = None
    level_values: np.ndarray | None = None
    level_columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.graphs)

    def take(self, positions: Sequence[int]) -> Items:
        """The items at ``positions``, in that order."""
        structures = None if self.structures is None else _take(self.structures, positions)
        values = None if self.level_values is None else self.level_values[list(positions)]
        return replace(self, graphs=_take(self.graphs, positions), structures=structures, level_values=values)

    def built(self) -> Items:
        """These items with their graphs built once (a training set, read every epoch)."""
        return replace(self, graphs=list(self.graphs))

    def with_level_values(self, columns: Sequence[str], values: np.ndarray) -> Items:
        """These items with a cheap level's ``values`` ([items, columns]) as extra inputs."""
        values = np.asarray(values, dtype=np.float64).reshape(len(self), len(columns))
        return replace(self, level_values=values, level_columns=tuple(columns))
