"""Composition statistics: Magpie element descriptors pooled over the sites of a structure.

The classic composition baseline (Ward et al., npj Comput. Mater. 2, 16028, 2016): for every
Magpie descriptor (from the ``elementembeddings`` wheel, standardised per column), the mean,
standard deviation, minimum and maximum over the sites. Geometry is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matloop.data.graphs import element_table

STATISTICS = ("mean", "std", "min", "max")


def magpie_statistics(numbers: Sequence[np.ndarray]) -> np.ndarray:
    """[n_items, 4·n_descriptors] float64: mean, std, min, max of the site descriptors.

    Args:
        numbers: the atomic numbers of each item's sites (e.g. ``graph.z`` or
            :func:`matloop.data.graphs.atomic_numbers`).
    """
    table = element_table("magpie").astype(np.float64)
    rows = np.empty((len(numbers), len(STATISTICS) * table.shape[1]))
    for i, z in enumerate(numbers):
        sites = table[np.asarray(z, dtype=np.int64)]
        rows[i] = np.concatenate([sites.mean(0), sites.std(0), sites.min(0), sites.max(0)])
    return rows
