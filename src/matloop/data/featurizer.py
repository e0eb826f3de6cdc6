"""Graphs of many items at once: one bad item never stops the rest, and an optional on-disk
:class:`~matloop.data.graph_cache.GraphCache` keyed by content hash + graph parameters skips the
items seen before (looked up straight from compact rows when a source offers them).
"""

from __future__ import annotations

import gc
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

from pymatgen.core import Molecule, Structure

from matloop.data.graph_cache import GraphCache
from matloop.data.graphs import (
    GRAPH_VERSION,
    Atoms,
    GraphArrays,
    GraphError,
    GraphParams,
    checked_atoms,
    checked_graph_arrays,
    compact_atoms,
    content_key,
    to_data,
)

if TYPE_CHECKING:
    from torch_geometric.data import Data


logger = logging.getLogger(__name__)


class Failure(NamedTuple):
    """An item that was skipped, with the reason."""

    item_id: str
    reason: str


class Featurized(NamedTuple):
    """Result of :func:`featurize_items`: graphs in input order (failures left out)."""

    graphs: list[Data]
    failures: list[Failure]
    cache_hits: int


Progress = Callable[[int, int], None]


@contextmanager
def cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collector off for a loop that makes only acyclic objects (arrays, tuples):
    its passes over them cost a fifth of featurizing 100,000 molecules. Reference counting still
    frees everything the loop drops."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@cycle_collection_paused()
def featurize_arrays(
    structures: Sequence[Structure | Molecule],
    ids: Sequence[str],
    params: GraphParams,
    *,
    cache: GraphCache | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, GraphArrays], list[Failure], int]:
    """Compact graphs of many items (id → arrays, input order), failures, and cache hits.

    Graphs are built straight from compact rows, without pymatgen objects, when ``structures``
    offers them (:func:`~matloop.data.graphs.compact_atoms`, as dataset slices do). One bad item
    never stops the rest: its reason goes to the failures. With a ``cache``,
    items are looked up by content hash + params in one batch, and new results (failures found by the
    neighbour search too) are written back in batched transactions. ``progress(done, total)``
    is called about a hundred times over the run when given; long runs also log a line every 10 %.
    """
    if len(structures) != len(ids):
        raise ValueError(f"got {len(structures)} structures but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    total = len(ids)
    param_key = hashlib.sha256(f"{GRAPH_VERSION}:{params.key()}".encode()).hexdigest()[:16]
    result: dict[str, GraphArrays | str] = {}  # id -> graph or reason, gathered in input order below
    hits = 0
    todo: Sequence[int] = range(total)
    compact = compact_atoms(structures) or [None] * total
    keys: dict[int, str] = {}
    if cache is not None:
        keys = {pos: f"{content_key(atoms)}:{param_key}" for pos, atoms in enumerate(compact) if atoms}
        found = cache.get_many(list(keys.values()))
        for pos, key in keys.items():
            if key in found:
                result[ids[pos]] = found[key]
                hits += 1
        todo = [pos for pos in range(total) if ids[pos] not in result]
    checked: list[tuple[str, Atoms, str]] = []
    for pos in todo:
        item_id, atoms = ids[pos], compact[pos]
        try:
            atoms = checked_atoms(structures[pos] if atoms is None else atoms, params)
        except Exception as exc:  # a malformed item must not stop the others
            result[item_id] = _reason(exc)
            continue
        key = keys.get(pos) or (f"{content_key(atoms)}:{param_key}" if cache is not None else "")
        checked.append((item_id, atoms, key))
    cached = cache.get_many([c[2] for c in checked]) if cache is not None else {}
    new: list[tuple[str, GraphArrays | str]] = []
    step = max(1, total // 100)
    log_step = max(2000, total // 10)
    for n, (item_id, atoms, key) in enumerate(checked, start=total - len(checked) + 1):
        entry = cached.get(key)
        if entry is not None:
            hits += 1
        else:
            try:
                entry = checked_graph_arrays(atoms, params)
            except Exception as exc:
                entry = _reason(exc)
            if cache is not None:
                new.append((key, entry))
                if len(new) >= 1000:
                    cache.put_many(new)
                    new = []
        result[item_id] = entry
        if progress is not None and (n % step == 0 or n == total):
            progress(n, total)
        if n % log_step == 0:
            logger.info("featurized %d/%d items", n, total)
    if cache is not None and new:
        cache.put_many(new)
    out: dict[str, GraphArrays] = {}
    failures: list[Failure] = []
    for item_id in ids:
        entry = result[item_id]
        if isinstance(entry, str):
            failures.append(Failure(item_id, entry))
            logger.debug("skipped %s: %s", item_id, entry)
        else:
            out[item_id] = entry
    if progress is not None and not checked:
        progress(total, total)
    logger.info(
        "featurized %d items: %d graphs, %d failures, %d cache hits", total, len(out), len(failures), hits
    )
    return out, failures, hits


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, GraphError) else f"unexpected error: {type(exc).__name__}: {exc}"


def featurize_items(
    structures: Sequence[Structure | Molecule],
    ids: Sequence[str],
    params: GraphParams | None = None,
    *,
    cache: GraphCache | None = None,
    progress: Progress | None = None,
) -> Featurized:
    """Graphs of many items without a workspace: ``(graphs, failures, cache_hits)``.

    Args:
        structures: pymatgen ``Structure`` (periodic) or ``Molecule`` objects.
        ids: one id per item, stored as ``Data.item_id``.
        params: graph parameters (defaults: 6 Å cutoff, 12 neighbours, 40 Gaussians).
        cache: optional on-disk :class:`~matloop.data.graph_cache.GraphCache`.
        progress: optional ``progress(done, total)`` callback.
    """
    params = params or GraphParams()
    arrays, failures, hits = featurize_arrays(structures, ids, params, cache=cache, progress=progress)
    graphs = [to_data(a, params, item_id) for item_id, a in arrays.items()]
    return Featurized(graphs, failures, hits)
