"""Pretrained foundation models (shipped inside installed wheels) as frozen featurizers.

A structure becomes the pretrained network's pooled crystal feature vector (the input of its
energy read-out), with the network's own energy per atom appended as the last column — the
cheapest fidelity level there is, usable as an extra input. Weights are read only from the
installed package; nothing is downloaded. Vectors are cached on disk by model, package
version and structure hash.

==========  ============  =====================================================================
name        package       vector
==========  ============  =====================================================================
chgnet      ``chgnet``    CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 2023; MPtrj): 64 pooled
                          atom features after the last convolution + energy per atom (eV/atom)
sevennet_0  ``sevenn``    SevenNet-0 (Park et al., J. Chem. Theory Comput. 2024; MPtrj): 128
                          last-layer scalar features, mean over atoms + energy per atom (eV/atom)
==========  ============  =====================================================================
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from matloop.data.embedding_cache import EmbeddingCache
from matloop.data.graphs import structure_hashes
from matloop.errors import ToolInputError, invalid_choice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrained:
    """A pretrained model that ships in a wheel."""

    name: str
    package: str
    model_name: str
    dim: int
    description: str
    vectors: Callable[[Sequence[Structure], str, int], list[np.ndarray | None]]
    """Vectors of structures (None where the model cannot handle one): (structures, model, batch)."""

    @property
    def version(self) -> str:
        """Installed version of the package that holds the weights."""
        return version(self.package)

    def provenance(self) -> dict[str, str]:
        """What a checkpoint records about the featurizer it was trained on."""
        return {
            "backbone": self.name,
            "package": self.package,
            "package_version": self.version,
            "pretrained_model": self.model_name,
        }


@cache
def chgnet_model(model_name: str) -> Any:
    """The pretrained CHGNet ``model_name`` from the installed wheel, shared (deep-copy it to train)."""
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner
        return CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)


def _chgnet_vectors(
    structures: Sequence[Structure], model_name: str, batch_size: int
) -> list[np.ndarray | None]:
    model = chgnet_model(model_name)
    out: list[np.ndarray | None] = [None] * len(structures)
    graphs, where = [], []
    for i, s in enumerate(structures):
        try:
            graphs.append(model.graph_converter(s))
            where.append(i)
        except Exception as exc:  # one bad structure never stops the rest
            log.warning("CHGNet cannot make a graph of item %d: %s", i, exc)
    if graphs:
        preds = model.predict_graph(graphs, task="e", return_crystal_feas=True, batch_size=batch_size)
        preds = [preds] if isinstance(preds, dict) else preds
        for i, p in zip(where, preds, strict=True):
            out[i] = np.append(p["crystal_fea"], p["e"]).astype(np.float32)
    return out


@cache
def sevennet_model(model_name: str) -> tuple[Any, float]:
    """The pretrained SevenNet ``model_name`` (energies only) and its cutoff, from the installed
    wheel, shared (deep-copy it to train)."""
    from sevenn.calculator import SevenNetCalculator

    calc = SevenNetCalculator(model_name, device="cpu")
    model = calc.model
    model.delete_module_by_key("force_output")  # energies only: no position gradients
    model.set_is_batch_data(True)
    model.eval()
    return model, calc.cutoff


def sevennet_graph(structure: Structure, cutoff: float) -> Any:
    """SevenNet's graph of ``structure`` (neighbours within ``cutoff``)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    atoms = AseAtomsAdaptor.get_atoms(structure)
    return AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, cutoff, with_shift=False))


def sevennet_crystal_vectors(model: Any, graphs: Sequence[Any]) -> Any:
    """[n, 129] tensor: the last layer's scalars, mean over atoms, and the energy per atom of each
    graph — differentiable with respect to the model's parameters."""
    import sevenn._keys as keys
    import torch
    from torch_geometric.data import Batch
    from torch_geometric.utils import scatter

    last_block = [name for name in model._modules if name.endswith("_equivariant_gate")][-1]
    captured: dict[str, Any] = {}
    hook = model._modules[last_block].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("x", out[keys.NODE_FEATURE])
    )
    batch = Batch.from_data_list([g.clone() for g in graphs])  # the model writes into its input
    try:
        result = model(batch)
    finally:
        hook.remove()
    pooled = scatter(captured["x"], batch.batch, dim=0, dim_size=len(graphs), reduce="mean")
    energy = result[keys.PRED_TOTAL_ENERGY].reshape(-1) / torch.bincount(batch.batch)
    return torch.cat([pooled, energy.reshape(-1, 1)], dim=1)


def _sevennet_vectors(
    structures: Sequence[Structure], model_name: str, batch_size: int
) -> list[np.ndarray | None]:
    import torch

    model, cutoff = sevennet_model(model_name)
    out: list[np.ndarray | None] = [None] * len(structures)
    for start in range(0, len(structures), batch_size):
        graphs, where = [], []
        for i in range(start, min(start + batch_size, len(structures))):
            try:
                graphs.append(sevennet_graph(structures[i], cutoff))
                where.append(i)
            except Exception as exc:  # one bad structure never stops the rest
                log.warning("SevenNet cannot make a graph of item %d: %s", i, exc)
        if not graphs:
            continue
        with torch.no_grad():
            vectors = sevennet_crystal_vectors(model, graphs).numpy()
        for row, i in enumerate(where):
            out[i] = vectors[row].astype(np.float32)
    return out


PRETRAINED: dict[str, Pretrained] = {
    "chgnet": Pretrained(
        "chgnet",
        "chgnet",
        "0.3.0",
        65,
        "CHGNet 0.3.0 crystal features (64) + energy per atom",
        _chgnet_vectors,
    ),
    "sevennet_0": Pretrained(
        "sevennet_0",
        "sevenn",
        "7net-0",
        129,
        "SevenNet-0 last-layer scalars (128, mean over atoms) + energy per atom",
        _sevennet_vectors,
    ),
}


def get_pretrained(name: str) -> Pretrained:
    """The pretrained model called ``name``; unknown names raise listing the valid ones."""
    if name not in PRETRAINED:
        raise invalid_choice("a pretrained backbone", name, PRETRAINED)
    return PRETRAINED[name]


def embed_structures(
    name: str,
    structures: Sequence[Structure],
    *,
    cache_path: Path | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """[n, dim] float64 vectors of ``structures`` from the pretrained model ``name``.

    Items the model cannot handle (e.g. an isolated atom) get a row of NaN. With
    ``cache_path``, vectors are read from and written to the on-disk cache.
    """
    spec = get_pretrained(name)
    prefix = f"{spec.name}:{spec.model_name}:{spec.version}:"
    keys = [prefix + h for h in structure_hashes(structures)]
    cache_db = EmbeddingCache(cache_path) if cache_path is not None else None
    try:
        found = cache_db.get_many(keys) if cache_db is not None else {}
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            todo = [structures[i] for i in missing]
            for i, s in zip(missing, todo, strict=True):
                if not isinstance(s, Structure):
                    raise ToolInputError(
                        f"expected periodic structures for {name}, got {type(s).__name__} at item {i}"
                    )
            new = spec.vectors(todo, spec.model_name, batch_size)
            fresh = {keys[i]: v for i, v in zip(missing, new, strict=True) if v is not None}
            if cache_db is not None and fresh:
                cache_db.put_many(fresh.items())
            found.update(fresh)
    finally:
        if cache_db is not None:
            cache_db.close()
    log.info("%s embeddings: %d items, %d from cache", name, len(keys), len(keys) - len(missing))
    nan = np.full(spec.dim, np.nan)
    return np.stack([found.get(k, nan) for k in keys]).astype(np.float64) if keys else np.zeros((0, spec.dim))
