"""CP2K PBE static on 2-atom MgO through the local executor (real DFT, ~30-60 s on 2 cores)."""

from __future__ import annotations

import pytest
from validation_helpers import crystal_slice, rocksalt

from matloop.tools import collect_validation, queue_validation
from matloop.validation.cp2k import cp2k_data_dir, dzvp_basis_overrides


@pytest.mark.slow
def test_cp2k_static_mgo(workspace):
    slice_id = crystal_slice(workspace, {"MgO": rocksalt("Mg", "O", 4.21)})
    batch = queue_validation(slice_id, ["MgO"], level="cp2k", workspace=workspace)
    result = collect_validation(batch.batch_id, timeout_s=500, workspace=workspace)
    assert not result.failures and not result.pending, result.failures
    by = {lab.property: lab for lab in result.labels}
    assert by["energy"].unit == "eV" and -2300 < by["energy"].value < -2000  # ~ -2161.7 eV
    assert by["energy_per_atom"].value == pytest.approx(by["energy"].value / 2)
    calc = workspace.root / "calcs"
    assert not list(calc.rglob("CP2K-RESTART.kp*")), "k-point restart files are deleted after parsing"
    assert list(calc.rglob("cp2k.out*"))

    data_dir = cp2k_data_dir(workspace.settings.cache_dir)
    assert set(dzvp_basis_overrides(rocksalt("Mg", "O", 4.21), data_dir)) == {"Mg", "O"}
