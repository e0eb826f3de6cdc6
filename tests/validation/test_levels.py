"""xTB, CHGNet static, SevenNet and VASP levels with the real codes (VASP: inputs only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from ase.build import molecule
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Molecule, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from scipy.spatial.transform import Rotation
from validation_helpers import crystal_slice, perovskite, rocksalt
from validation_helpers import molecule_slice as make_molecule_slice

from matloop.data.embedding_cache import EmbeddingCache
from matloop.data.graphs import structure_hash, structure_hashes
from matloop.data.slices import DatasetSlice, save_slice
from matloop.models.foundation import embed_structures
from matloop.tools import collect_validation, queue_validation
from matloop.validation.levels import LevelContext, get_level
from matloop.validation.sanity import VOLUME_CELL_WIDTH, distance_cell, molecule_distances, volume_cell
from matloop.validation.store import StoredStructures, ValidationStore, dumps
from matloop.validation.vasp import write_vasp_inputs
from matloop.workspace import Workspace


def test_xtb_labels_molecules_through_local_worker(workspace, molecule_slice):
    batch = queue_validation(molecule_slice, ["CH4", "H2O", "C6H6"], level="xtb", workspace=workspace)
    result = collect_validation(batch.batch_id, timeout_s=120, workspace=workspace)
    assert not result.failures and not result.pending
    by = {(lab.item_id, lab.property): lab.value for lab in result.labels}
    for name in ("CH4", "H2O", "C6H6"):
        assert by[(name, "energy")] < 0
        assert by[(name, "gap")] == by[(name, "lumo")] - by[(name, "homo")] > 0
    assert by[("C6H6", "gap")] < by[("CH4", "gap")]  # conjugation narrows the gap
    assert {lab.provenance["code"] for lab in result.labels} == {"tblite GFN2-xTB"}


def test_xtb_single_points_are_reused_across_workspaces(settings, workspace, molecule_slice, tmp_path):
    ids = ["CH4", "H2O", "NH3"]
    batch = queue_validation(molecule_slice, ids, level="xtb", workspace=workspace)
    ran = collect_validation(batch.batch_id, timeout_s=120, workspace=workspace)
    other = Workspace(tmp_path / "other", settings=settings)
    batch = queue_validation(make_molecule_slice(other), ids, level="xtb", workspace=other)
    again = collect_validation(batch.batch_id, timeout_s=120, workspace=other)
    assert len(ran.labels) == 4 * len(ids) and not again.failures
    values = {(lb.item_id, lb.property): lb.value for lb in ran.labels}
    assert {(lb.item_id, lb.property): lb.value for lb in again.labels} == values
    assert all(lb.provenance["task_doc"].startswith("calculations.sqlite:xtb:tblite-") for lb in again.labels)
    jobs = ValidationStore(other).jobs(batch_id=batch.batch_id)
    assert not any((other.root / "calcs" / j.job_id).exists() for j in jobs)
    assert all(j.calc_seconds > 0 for j in jobs)  # what the calculation cost when it ran


def test_stored_structures_hash_as_the_structures_they_hold():
    """A worker keys the calculation cache from its jobs' stored JSON, without decoding it; the
    queue from the pool's structures: the keys agree, odd sites included."""
    ordered = perovskite("Sr", "Ti", 3.95)
    disordered = ordered.copy()
    disordered.replace(0, {"Sr": 0.5, "Ba": 0.5})
    charged = ordered.copy()
    charged.add_oxidation_state_by_guess()
    slab_lattice = Lattice(ordered.lattice.matrix, pbc=(True, True, False))
    slab = Structure(slab_lattice, ordered.species, ordered.frac_coords)
    items = [ordered, disordered, charged, slab, Molecule(["C", "O"], [[0, 0, 0], [0, 0, 1.13]])]
    stored = StoredStructures([dumps(item) for item in items])
    assert structure_hashes(stored) == [structure_hash(item) for item in items]
    assert [row is None for row in stored.columns()["species"]] == [False, True, True, True, False]
    assert stored[1] == disordered


def test_chgnet_static_labels_crystals_as_given(workspace):
    """The crystals' screening level: CHGNet's energy per atom of the structure as given (the same
    number as its embedding's last column) and its formation energy against relaxed references."""
    items = {
        "MgO": rocksalt("Mg", "O", 4.21),
        "MgO-strained": rocksalt("Mg", "O", 4.6),
        "NaCl": rocksalt("Na", "Cl", 5.64),
    }
    batch = queue_validation(
        crystal_slice(workspace, items), list(items), level="chgnet_static", workspace=workspace
    )
    result = collect_validation(batch.batch_id, timeout_s=300, workspace=workspace)
    assert not result.failures and not result.pending
    by = {(lab.item_id, lab.property): lab.value for lab in result.labels}
    cache = workspace.settings.cache_dir / EmbeddingCache.FILE
    energies = embed_structures("chgnet", list(items.values()), cache_path=cache)[:, -1]
    np.testing.assert_allclose([by[(i, "energy_per_atom")] for i in items], energies, rtol=1e-6)
    assert -3.6 < by[("MgO", "formation_energy_per_atom")] < -2.4  # PBE/MP: about -3.0 eV/atom
    assert -2.6 < by[("NaCl", "formation_energy_per_atom")] < -1.6  # PBE/MP: about -2.1 eV/atom
    assert by[("MgO-strained", "energy_per_atom")] > by[("MgO", "energy_per_atom")]  # not relaxed
    assert {lab.provenance["code"] for lab in result.labels} == {"CHGNet 0.3.0"}


def test_copies_within_the_tolerance_are_duplicates_whichever_fingerprint_cell_they_fall_in(workspace):
    """Rotated copies of ethane with every atom moved 0.004 Å (every distance within 0.008 Å) are
    duplicates of the first, also those whose distance fingerprint lands in a neighbouring cell;
    a copy with the C-C bond stretched by 0.05 Å is not; a later batch finds the stored one."""
    rng = np.random.default_rng(0)
    ethane = AseAtomsAdaptor.get_molecule(molecule("C2H6"))

    def moved(stretch: float = 0.0) -> Molecule:
        axis, angle = rng.normal(size=3), rng.uniform(0, 2 * np.pi)
        rotation = Rotation.from_rotvec(angle * axis / np.linalg.norm(axis)).as_matrix()
        shifts = rng.normal(size=(len(ethane), 3))
        coords = ethane.cart_coords + 0.004 * shifts / np.linalg.norm(shifts, axis=1, keepdims=True)
        coords[ethane.indices_from_symbol("C")[1]] += [0.0, 0.0, stretch]  # C-C along z
        return Molecule(ethane.species, coords @ rotation.T)

    copies = [moved() for _ in range(30)]
    cells = {distance_cell(molecule_distances(m)) for m in copies}
    assert len(cells) > 1  # the copies straddle a cell boundary
    items = {"first": ethane, **{f"copy-{k}": m for k, m in enumerate(copies)}, "stretched": moved(0.05)}
    data = DatasetSlice(
        list(items), list(items.values()), pd.DataFrame(index=range(len(items))), {}, "molecule", "test"
    )
    slice_id = save_slice(workspace, data)
    batch = queue_validation(slice_id, list(items), level="xtb", workspace=workspace)
    status = {s.item_id: s for s in batch.statuses}
    first = ValidationStore(workspace).jobs(batch_id=batch.batch_id)[0].job_id
    assert {status[f"copy-{k}"].reason for k in range(30)} == {f"same structure as calculation {first}"}
    assert status["first"].status != "duplicate" and status["stretched"].status != "duplicate"
    again = queue_validation(slice_id, ["copy-3"], level="xtb", workspace=workspace)
    assert again.statuses[0].reason == f"same structure as calculation {first}"


def test_crystal_copies_taken_as_given_are_duplicates_whichever_volume_cell_they_fall_in(workspace):
    """At a level that takes crystals as given: copies of MgO within 0.2 % of its lattice constant,
    on both sides of a volume-cell boundary, and its 2×1×1 supercell are duplicates of the first;
    MgO 3 % larger and another formula are not."""
    probe = rocksalt("Mg", "O", 4.2)
    boundary = np.exp(round(np.log(probe.volume / len(probe)) / VOLUME_CELL_WIDTH) * VOLUME_CELL_WIDTH)
    a0 = 4.2 * (boundary / (probe.volume / len(probe))) ** (1 / 3)  # volume per atom on a boundary
    copies = {
        f"copy-{k}": rocksalt("Mg", "O", a0 * (1 + e)) for k, e in enumerate((-0.002, -0.001, 0.001, 0.002))
    }
    assert len({volume_cell(s) for s in copies.values()}) == 2
    supercell = rocksalt("Mg", "O", a0).make_supercell([2, 1, 1])
    items = {
        "first": rocksalt("Mg", "O", a0), **copies, "supercell": supercell,
        "larger": rocksalt("Mg", "O", a0 * 1.03), "CaO": rocksalt("Ca", "O", a0),
    }  # fmt: skip
    batch = queue_validation(
        crystal_slice(workspace, items), list(items), level="chgnet_static", workspace=workspace
    )
    status = {s.item_id: s for s in batch.statuses}
    first = ValidationStore(workspace).jobs(batch_id=batch.batch_id)[0].job_id
    assert {status[k].reason for k in [*copies, "supercell"]} == {f"same structure as calculation {first}"}
    assert all(status[k].status != "duplicate" for k in ("first", "larger", "CaO"))


def test_level_table_gives_a_duplicate_its_originals_values(workspace):
    methane = AseAtomsAdaptor.get_molecule(molecule("CH4"))
    ids = ["methane", "CH4", "H2O"]
    data = DatasetSlice(
        ids=ids,
        structures=[methane, methane.copy(), AseAtomsAdaptor.get_molecule(molecule("H2O"))],
        properties=pd.DataFrame(index=range(3)),
        units={},
        kind="molecule",
        source="test",
    )
    batch = queue_validation(save_slice(workspace, data), ids, level="xtb", workspace=workspace)
    assert [s.status for s in batch.statuses] == ["queued", "duplicate", "queued"]
    collect_validation(batch.batch_id, timeout_s=120, workspace=workspace)
    properties, values = ValidationStore(workspace).level_table("xtb", [*ids, "unknown"])
    assert properties == ["energy", "gap", "homo", "lumo"]
    np.testing.assert_array_equal(values[0], values[1])
    assert np.isfinite(values[:3]).all() and np.isnan(values[3]).all()
    assert not np.array_equal(values[0], values[2])


def test_sevenn_formation_energy_offline_weights(workspace, tmp_path):
    flow = get_level("sevenn").build(rocksalt("Mg", "O", 4.21), LevelContext(workspace.settings, {}))
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(flow, store=store, create_folders=True, root_dir=tmp_path, ensure_success=True, log=False)
    doc = flow.output.resolve(store)
    assert doc.level == "sevenn" and doc.code == "SevenNet"
    assert set(doc.references) == {"Mg", "O"}
    assert -4.0 < doc.properties["formation_energy_per_atom"] < -2.0  # MgO: about -3 eV/atom


def test_vasp_inputs_written_with_potcar_spec(tmp_path):
    files = write_vasp_inputs(rocksalt("Mg", "O", 4.21), tmp_path / "vasp")
    assert files == ["INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"]
    assert (tmp_path / "vasp" / "POTCAR.spec").read_text().split() == ["Mg_pv", "O"]
    incar = (tmp_path / "vasp" / "INCAR").read_text()
    assert "ENCUT = 520" in incar and "ISIF = 3" in incar


def test_shipped_chgnet_references_are_what_the_level_computes(tmp_path):
    """A new workspace starts with the shipped CHGNet references: each is the energy per atom the
    level's own reference job computes (checked here for two elements, relaxed again)."""
    from matloop.data.references import bundled_references
    from matloop.models.cheap_level import chgnet_references
    from matloop.validation.makers import FormationEnergyMaker

    shipped = bundled_references("chgnet")
    assert len(shipped) >= 90 and len(bundled_references("chgnet_static", "structures")) >= 90
    flow = FormationEnergyMaker().make(rocksalt("Mg", "O", 4.21))  # no known references: relaxes them
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(flow, store=store, create_folders=True, root_dir=tmp_path, ensure_success=True, log=False)
    doc = flow.output.resolve(store)
    for el in ("Mg", "O"):
        assert abs(doc.references[el] - shipped[el]) < 1e-4, el
    with_shipped = FormationEnergyMaker(references=shipped).make(rocksalt("Mg", "O", 4.21))
    assert len(with_shipped.jobs) == 2  # the relaxation and the summary: no reference job
    relaxed = chgnet_references({"Mg", "O"}, tmp_path / "empty-cache")
    assert not (tmp_path / "empty-cache").exists()  # nothing relaxed: they ship
    assert relaxed["O"].composition.reduced_formula == "O2"
