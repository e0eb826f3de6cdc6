"""queue_validation / validation_status / collect_validation end to end with real CHGNet."""

from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from validation_helpers import crystal_slice, perovskite

from matloop.data.slices import load_slice
from matloop.errors import ToolInputError
from matloop.tools import collect_validation, queue_validation, validation_status
from matloop.validation.executors import worker_alive
from matloop.validation.store import ValidationStore


def test_chgnet_perovskite_end_to_end(workspace):
    bad = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    sto = perovskite("Sr", "Ti", 3.95)
    slice_id = crystal_slice(workspace, {"SrTiO3": sto, "SrTiO3-copy": sto.copy(), "bad": bad})

    batch = queue_validation(slice_id, ["SrTiO3", "SrTiO3-copy", "bad"], workspace=workspace)
    assert batch.level == "chgnet" and batch.executor == "local"
    by_id = {s.item_id: s for s in batch.statuses}
    assert by_id["bad"].status == "rejected" and "closer than" in by_id["bad"].reason
    assert by_id["SrTiO3-copy"].status == "duplicate"
    assert by_id["SrTiO3"].status in ("queued", "running")

    result = collect_validation(batch.batch_id, timeout_s=300, workspace=workspace)
    assert not result.pending
    assert [f.item_id for f in result.failures] == ["bad"]
    labels = {(lab.item_id, lab.property): lab for lab in result.labels}
    e_form = labels[("SrTiO3", "formation_energy_per_atom")]
    assert e_form.unit == "eV/atom" and -4.5 < e_form.value < -2.5  # SrTiO3 is strongly bound
    assert labels[("SrTiO3-copy", "formation_energy_per_atom")].value == e_form.value
    assert labels[("SrTiO3-copy", "energy_per_atom")].provenance["duplicate_of"]
    prov = e_form.provenance
    assert prov["level"] == "chgnet" and prov["code"] == "CHGNet" and prov["code_version"]
    assert (workspace.root / prov["task_doc"]).is_file()

    labelled = load_slice(workspace, result.label_slice_id)
    assert labelled.ids == ["SrTiO3", "SrTiO3-copy"]
    assert set(labelled.properties.columns) == {"energy_per_atom@chgnet", "formation_energy_per_atom@chgnet"}
    store = ValidationStore(workspace)
    assert set(store.references("chgnet")) == {"Sr", "Ti", "O"}

    # the same material in a later batch is served from the earlier result, not recomputed
    again = queue_validation(slice_id, ["SrTiO3"], workspace=workspace)
    assert again.statuses[0].status == "duplicate"
    served = collect_validation(again.batch_id, workspace=workspace)
    served_values = {lab.value for lab in served.labels if lab.property == "formation_energy_per_atom"}
    assert served_values == {e_form.value}
    assert validation_status(batch.batch_id, workspace=workspace).counts == {
        "done": 1,
        "duplicate": 1,
        "rejected": 1,
    }


def test_kill_worker_mid_batch_and_resume(workspace):
    items = {
        "SrTiO3": perovskite("Sr", "Ti", 3.95),
        "BaTiO3": perovskite("Ba", "Ti", 4.00),
        "CaTiO3": perovskite("Ca", "Ti", 3.85),
        "SrZrO3": perovskite("Sr", "Zr", 4.15),
    }
    slice_id = crystal_slice(workspace, items)
    batch = queue_validation(slice_id, list(items), workspace=workspace)
    store = ValidationStore(workspace)

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        jobs = store.jobs(batch_id=batch.batch_id)
        statuses = [j.status for j in jobs]
        if "done" in statuses and "running" in statuses:
            break
        time.sleep(0.1)
    pid = int((workspace.root / "calcs" / "worker.lock").read_text())
    os.kill(pid, signal.SIGKILL)
    while worker_alive(workspace):  # the OS drops the dead worker's lock
        time.sleep(0.05)
    before = {j.item_id: j for j in store.jobs(batch_id=batch.batch_id)}
    done_before = {i for i, j in before.items() if j.status == "done"}
    assert done_before and any(j.status == "running" for j in before.values())

    # any tool call restarts the worker, which re-queues the interrupted job
    validation_status(batch.batch_id, workspace=workspace)
    result = collect_validation(batch.batch_id, timeout_s=300, workspace=workspace)
    assert not result.failures and not result.pending
    after = {j.item_id: j for j in store.jobs(batch_id=batch.batch_id)}
    assert all(j.status == "done" for j in after.values())
    # finished jobs never ran again; only the interrupted one ran twice
    assert all(after[i].attempts == 1 and after[i].finished_at == before[i].finished_at for i in done_before)
    assert sum(j.attempts for j in after.values()) == len(items) + 1
    assert len({lab.item_id for lab in result.labels}) == len(items)


def test_bad_arguments_raise_tool_input_errors(workspace, molecule_slice):
    slice_id = crystal_slice(workspace, {"SrTiO3": perovskite("Sr", "Ti", 3.95)})
    with pytest.raises(ToolInputError, match="valid values are"):
        queue_validation(slice_id, ["SrTiO3"], level="dft", workspace=workspace)
    with pytest.raises(ToolInputError, match="expected item ids"):
        queue_validation(slice_id, ["nope"], workspace=workspace)
    with pytest.raises(ToolInputError, match="molecule"):
        queue_validation(molecule_slice, ["CH4"], level="chgnet", workspace=workspace)
    with pytest.raises(ToolInputError, match="never runs locally"):
        queue_validation(slice_id, ["SrTiO3"], level="vasp", workspace=workspace)
    with pytest.raises(ToolInputError, match="validation batch id"):
        validation_status("valbatch-unknown", workspace=workspace)


def test_lookup_reveals_slice_labels(workspace):
    slice_id = crystal_slice(
        workspace,
        {"a": perovskite("Sr", "Ti", 3.95), "b": perovskite("Ba", "Ti", 4.0)},
        {"formation_energy_per_atom": [-3.5, float("nan")]},
    )
    result = collect_validation(
        queue_validation(slice_id, ["a", "b"], level="lookup", workspace=workspace).batch_id,
        workspace=workspace,
    )
    assert [(lab.item_id, lab.value) for lab in result.labels] == [("a", -3.5)]
    assert result.failures[0].item_id == "b"
    labelled = load_slice(workspace, result.label_slice_id)
    assert list(labelled.properties.columns) == ["formation_energy_per_atom@lookup"]


def test_crash_and_wall_time_fail_without_blocking_the_batch(workspace, molecule_slice):
    from pymatgen.core import Molecule

    from matloop.data.slices import DatasetSlice, save_slice
    from matloop.settings import Settings, ValidationSettings
    from matloop.workspace import Workspace

    uranium = Molecule(["U", "U"], [[0, 0, 0], [0, 0, 2.8]])  # outside GFN2-xTB's parametrisation
    methane = load_slice(workspace, molecule_slice).structures[0]
    data = DatasetSlice(
        ["U2", "CH4"], [uranium, methane], pd.DataFrame(index=range(2)), {}, "molecule", "test"
    )
    result = collect_validation(
        queue_validation(
            save_slice(workspace, data), ["U2", "CH4"], level="xtb", workspace=workspace
        ).batch_id,
        timeout_s=120,
        workspace=workspace,
    )
    assert [f.item_id for f in result.failures] == ["U2"] and result.failures[0].status == "failed"
    assert result.failures[0].reason
    assert {lab.item_id for lab in result.labels} == {"CH4"}

    # far shorter than a relaxation (the elemental references ship, so no reference job runs first)
    short = Workspace(workspace.root, settings=Settings(validation=ValidationSettings(walltime_s=0.02)))
    slice_id = crystal_slice(
        short, {"SrTiO3": perovskite("Sr", "Ti", 3.95), "BaTiO3": perovskite("Ba", "Ti", 4.0)}
    )
    result = collect_validation(
        queue_validation(slice_id, ["SrTiO3", "BaTiO3"], workspace=short).batch_id,
        timeout_s=120,
        workspace=short,
    )
    assert [f.status for f in result.failures] == ["failed", "failed"]
    reasons = [f.reason for f in result.failures]
    assert any("WallTimeExceeded: wall time of 0.02 s exceeded" in r for r in reasons), reasons
