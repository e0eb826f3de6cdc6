from __future__ import annotations

import numpy as np
import pytest

from matloop.data.prototypes import FAMILIES, MIN_BOND, build_prototype_pool
from matloop.errors import ToolInputError


@pytest.fixture(scope="module")
def pool():
    return build_prototype_pool()


def test_pool_has_every_family_unique_ids_and_no_labels(pool):
    assert 500 <= len(pool) <= 5000
    assert len(set(pool.ids)) == len(pool.ids)
    assert {i.split("-", 1)[0] for i in pool.ids} == set(FAMILIES)
    assert pool.kind == "crystal"
    assert list(pool.properties.columns) == []
    assert {"perovskite-SrTiO3", "rocksalt-MgO", "zincblende-GaAs", "wurtzite-ZnO", "fluorite-CaF2"} <= set(
        pool.ids
    )


def test_every_candidate_is_charge_balanced(pool):
    unbalanced = [
        i for i, s in zip(pool.ids, pool.structures, strict=True) if not s.composition.oxi_state_guesses()
    ]
    assert unbalanced == []


def test_no_atoms_closer_than_min_bond(pool):
    too_close = [
        i
        for i, s in zip(pool.ids, pool.structures, strict=True)
        if len(s.get_neighbor_list(r=MIN_BOND - 1e-3)[0])
    ]
    assert too_close == []


def test_known_prototypes_have_sane_geometry(pool):
    by_id = dict(zip(pool.ids, pool.structures, strict=True))
    srtio3 = by_id["perovskite-SrTiO3"]
    assert srtio3.composition.reduced_formula == "SrTiO3"
    assert srtio3.get_space_group_info()[0] == "Pm-3m"
    assert srtio3.lattice.a == pytest.approx(3.905, rel=0.05)  # experiment 3.905 Å
    mgo = by_id["rocksalt-MgO"]
    assert mgo.get_space_group_info()[0] == "Fm-3m"
    assert mgo.get_neighbor_list(r=2.3)[3].min() == pytest.approx(2.106, rel=0.05)  # a/2 of 4.21 Å
    assert by_id["zincblende-GaAs"].get_space_group_info()[0] == "F-43m"
    assert by_id["wurtzite-ZnO"].get_space_group_info()[0] == "P6_3mc"
    assert by_id["fluorite-CaF2"].composition.reduced_formula == "CaF2"


def test_subsample_is_deterministic_and_seeded(pool):
    a = build_prototype_pool(max_items=50, seed=3)
    b = build_prototype_pool(max_items=50, seed=3)
    c = build_prototype_pool(max_items=50, seed=4)
    assert a.ids == b.ids and len(a) == 50
    assert a.ids != c.ids
    assert set(a.ids) <= set(pool.ids)
    assert np.allclose(
        a.structures[0].lattice.matrix, pool.structures[pool.ids.index(a.ids[0])].lattice.matrix
    )


def test_families_and_elements_restrict_the_pool():
    oxides = build_prototype_pool(families=("rocksalt",), elements=["Mg", "Ca", "Sr", "Ba", "O", "S"])
    assert set(oxides.ids) == {f"rocksalt-{a}{x}" for a in ("Mg", "Ca", "Sr", "Ba") for x in ("O", "S")}
    assert all(set(s.symbol_set) <= {"Mg", "Ca", "Sr", "Ba", "O", "S"} for s in oxides.structures)


def test_bad_arguments_list_valid_values():
    with pytest.raises(ToolInputError, match="perovskite"):
        build_prototype_pool(families=("spinel",))  # type: ignore[arg-type]
    with pytest.raises(ToolInputError, match="Xx"):
        build_prototype_pool(elements=["Xx", "O"])
