"""What a surrogate reads for a set of items: graphs, or fixed-length vectors from a backbone.

A *backbone* names the input side of a surrogate:

=================  ===========================================================================
``gnn``            the project's graph network (CGCNN or SchNet convolutions), trained from
                   scratch on the items' graphs
``chgnet``         frozen CHGNet 0.3.0 crystal features + its energy per atom
``sevennet_0``     frozen SevenNet-0 last-layer scalars + its energy per atom
``magpie``         Magpie composition statistics (mean/std/min/max over sites)
``chgnet+magpie``  both vectors side by side
=================  ===========================================================================

``auto`` picks by the kind of items (:func:`resolve_backbone`). Every backbone but ``gnn``
feeds a vector UQ head (:mod:`matloop.models.vector_uq`), which trains in seconds; pretrained
vectors are cached on disk by structure hash.

Multi-fidelity: a vector head can also read what a cheap validation level computed for each item
(``Items.level_values``: GFN2-xTB HOMO, LUMO, gap and energy of a molecule; CHGNet's static energy
and formation energy per atom of a crystal), appended to the backbone's vector; when that level
computes the target property too, the head learns the label minus the cheap value (Δ-learning)
and adds it back when predicting (:func:`surrogate_inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matloop.data.composition import magpie_statistics
from matloop.data.feature_sets import atomic_numbers
from matloop.data.items import Items
from matloop.errors import ToolInputError, invalid_choice
from matloop.models.foundation import embed_structures
from matloop.names import BACKBONES, BackboneName

Backbone = BackboneName
#: What ``auto`` stands for, per kind of item: in the active-learning suite the frozen-backbone
#: head beat the graph network on crystals (formation-energy discovery, band-gap learning,
#: refractive-index discovery with greedy picks) at a fraction of the time; only the graph
#: network reads molecules.
AUTO_BACKBONES = {"crystal": "chgnet+magpie", "molecule": "gnn"}
#: ``auto`` for molecules with a cheap level's values as inputs: the head on composition statistics
#: and the cheap level beat the graph network on the QM9 gap (``benchmarks/surrogates.py``).
AUTO_WITH_LEVEL_VALUES = {"molecule": "magpie"}


def check_backbone(backbone: str) -> str:
    """``backbone`` if it is one of :data:`BACKBONES`, else :class:`ToolInputError` listing them."""
    if backbone not in BACKBONES:
        raise invalid_choice("a surrogate backbone", backbone, BACKBONES)
    return backbone


def resolve_backbone(backbone: str, kind: str, level_values: bool = False) -> str:
    """``backbone``, with ``auto`` replaced by the default for items of ``kind``: with a cheap
    level's values as inputs (``level_values``), :data:`AUTO_WITH_LEVEL_VALUES`, else
    :data:`AUTO_BACKBONES`."""
    if backbone != "auto":
        return check_backbone(backbone)
    if level_values and kind in AUTO_WITH_LEVEL_VALUES:
        return AUTO_WITH_LEVEL_VALUES[kind]
    return AUTO_BACKBONES.get(kind, "gnn")


def backbone_parts(backbone: str) -> list[str]:
    """The featurizers whose vectors a backbone concatenates (``gnn``: none of them)."""
    if check_backbone(backbone) == "gnn":
        return []
    return backbone.split("+")


def backbone_vectors(backbone: str, items: Items) -> np.ndarray:
    """[n, d] float64 input vectors of a vector backbone; rows the pretrained model cannot
    handle are NaN."""
    if backbone == "gnn":
        raise ToolInputError("expected a vector backbone, got 'gnn' (it reads graphs)")
    parts = []
    for part in backbone_parts(backbone):
        if part == "magpie":
            parts.append(magpie_statistics(atomic_numbers(items.graphs)))
            continue
        if items.structures is None:
            raise ToolInputError(f"expected the items' structures for backbone {backbone!r}, got graphs only")
        parts.append(embed_structures(part, items.structures, cache_path=items.cache_path))
    return np.concatenate(parts, axis=1)


def delta_column(target: str, columns: Sequence[str]) -> str | None:
    """The cheap level's column of the ``target`` property (``<property>@<level>``), which a head
    reading ``columns`` learns the residual to; None when the cheap level does not compute it."""
    prop = target.split("@")[0]
    return next((c for c in columns if c.split("@")[0] == prop and c != target), None)


def surrogate_inputs(
    backbone: str, items: Items, level_columns: Sequence[str] = (), delta: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The input vectors of a vector head for ``items`` (the backbone's vector, then the cheap
    level's ``level_columns``) and the baseline added to its output (None: no Δ); rows the
    backbone cannot embed or without cheap-level values are NaN."""
    x = backbone_vectors(backbone, items)
    if not level_columns:
        return x, None
    missing = [c for c in level_columns if c not in items.level_columns]
    if items.level_values is None or missing:
        raise ToolInputError(
            f"expected the items' values of {list(level_columns)} (queue the cheap level for them first), "
            f"got {list(items.level_columns)}"
        )
    extra = items.level_values[:, [items.level_columns.index(c) for c in level_columns]]
    baseline = extra[:, list(level_columns).index(delta)] if delta is not None else None
    return np.concatenate([x, extra], axis=1), baseline
