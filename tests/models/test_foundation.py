"""The pretrained CHGNet featurizer loads from its wheel, embeds crystals, and caches on disk."""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path

import chgnet
import numpy as np
import pytest
import sevenn
from pymatgen.core import Lattice, Molecule, Structure

from matloop.data.references import reference_structure
from matloop.errors import ToolInputError
from matloop.models.cheap_level import formation_energy
from matloop.models.foundation import PRETRAINED, embed_structures, get_pretrained


def _rocksalt(a: float, cation: str, anion: str) -> Structure:
    fcc = Lattice(0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]))
    return Structure(fcc, [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _crystals() -> list[Structure]:
    return [
        _rocksalt(4.21, "Mg", "O"),
        _rocksalt(5.64, "Na", "Cl"),
        Structure(
            Lattice.cubic(4.0),
            ["Sr", "Ti", "O", "O", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
    ]


@pytest.mark.parametrize(
    ("name", "module", "pattern"),
    [
        ("chgnet", chgnet, "pretrained/0.3.0/*.pth.tar"),
        ("sevennet_0", sevenn, "pretrained_potentials/SevenNet_0*/*.pth"),
    ],
)
def test_weights_ship_in_the_wheel(name, module, pattern):
    assert any(Path(module.__file__).parent.glob(pattern)), (
        f"{name} weights must be inside the installed package"
    )
    provenance = get_pretrained(name).provenance()
    assert provenance["backbone"] == name
    assert provenance["package_version"] == version(provenance["package"])


@pytest.mark.parametrize("name", ["chgnet", "sevennet_0"])
def test_embeddings_shape_energy_and_cache(tmp_path, caplog, name):
    spec = PRETRAINED[name]
    cache = tmp_path / "emb.sqlite"
    with caplog.at_level(logging.INFO, logger="matloop.models.foundation"):
        first = embed_structures(name, _crystals(), cache_path=cache)
        second = embed_structures(name, _crystals()[::-1], cache_path=cache)
    assert first.shape == (3, spec.dim) and np.isfinite(first).all()
    # distinct crystals get distinct vectors; the last column is CHGNet's energy (eV/atom)
    assert np.linalg.norm(first[0] - first[1]) > 1e-3
    assert -7.0 < first[0, -1] < -5.0  # MgO, DFT (PBE) about -6 eV/atom
    np.testing.assert_array_equal(second, first[::-1].astype(np.float32).astype(np.float64))
    assert "3 items, 0 from cache" in caplog.text and "3 items, 3 from cache" in caplog.text


def test_bad_inputs_are_refused():
    with pytest.raises(ToolInputError, match=r"valid values are.*chgnet"):
        get_pretrained("no_such_model")
    molecule = Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]])
    with pytest.raises(ToolInputError, match="expected periodic structures"):
        embed_structures("chgnet", [molecule])


def test_cheap_level_formation_energy(tmp_path):
    """The multi-fidelity input: CHGNet's formation energy per atom of rock-salt MgO against
    elemental references (PBE/MP: about -3.0 eV/atom)."""
    refs = {el: reference_structure(el)[0] for el in ("Mg", "O")}
    mgo = [_rocksalt(4.21, "Mg", "O")]
    energies = embed_structures("chgnet", mgo, cache_path=tmp_path / "emb.sqlite")[:, -1]
    numbers = [np.array([12, 8])]
    fe = formation_energy("chgnet", numbers, energies, refs, cache_path=tmp_path / "emb.sqlite")
    assert -3.6 < fe[0] < -2.4
    with pytest.raises(ToolInputError, match=r"none for \['O'\]"):
        formation_energy("chgnet", numbers, energies, {"Mg": refs["Mg"]})
