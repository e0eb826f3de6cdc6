"""The bundled Materials Project sets: counts, units, sanity checks, damaged files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pymatgen.core import Structure

from matloop.data.bundled import (
    BUNDLE_DIR,
    BUNDLED,
    CHECKSUM_FILE,
    CorruptDataError,
    check_bundled,
    load_bundled,
)
from matloop.data.sources import load_source

EXPECTED = {"mp_formation_energy": 3938, "mp_dielectric": 1056, "mp_elastic": 1181, "mp_piezo": 941}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_units_and_structures(name, settings):
    data = load_source(name, settings=settings)
    assert len(data) == EXPECTED[name]
    assert data.kind == "crystal" and data.source == name
    assert all(i.startswith("mp-") for i in data.ids)
    assert set(data.units) == set(data.properties.columns)
    assert all(unit and unit != "unknown" for unit in data.units.values())
    for target in BUNDLED[name].targets:
        assert not np.isnan(data.target(target)).any()
    structures = list(data.structures)
    assert all(isinstance(s, Structure) and len(s) > 0 and s.volume > 1 for s in structures)


def test_formation_energy_values():
    table = load_bundled("mp_formation_energy")
    frame = table.frame.set_index("id")
    assert table.units["formation_energy_per_atom"] == "eV/atom"
    assert frame["formation_energy_per_atom"].between(-6, 4).all()
    # elemental As has a positive energy above hull in this set; per-cell energy = per-atom x sites
    n = table.nsites()
    np.testing.assert_allclose(
        table.frame["formation_energy"], table.frame["formation_energy_per_atom"] * n, atol=1e-6
    )
    mp10 = table.to_slice([table.ids.index("mp-10")]).structures[0]
    assert mp10.composition.reduced_formula == "As"


def test_dielectric_units():
    table = load_bundled("mp_dielectric")
    assert table.units["band_gap"] == "eV"
    assert table.units["n"] == "dimensionless"
    assert (table.frame["n"] >= 1).all()


def test_max_rows_keeps_the_first_rows():
    assert load_bundled("mp_piezo").head(5).ids == load_bundled("mp_piezo").ids[:5]


def test_truncated_file_is_a_clear_error(tmp_path):
    spec = BUNDLED["mp_dielectric"]
    copy = tmp_path / spec.file
    shutil.copy(BUNDLE_DIR / spec.file, copy)
    assert len(load_bundled("mp_dielectric", copy)) == spec.rows  # an intact copy loads
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    with pytest.raises(CorruptDataError, match="corrupt or truncated"):
        load_bundled("mp_dielectric", copy)
    with pytest.raises(CorruptDataError, match="missing"):
        load_bundled("mp_dielectric", tmp_path / "absent.parquet")


def test_content_checks():
    spec = BUNDLED["mp_formation_energy"]
    good = load_bundled(spec.name)
    check_bundled(good, spec)
    with pytest.raises(CorruptDataError, match="expected 3938 rows, got 10"):
        check_bundled(good.head(10), spec)
    nan = load_bundled(spec.name)
    nan.frame.loc[3, "formation_energy_per_atom"] = np.nan
    with pytest.raises(CorruptDataError, match="1 NaN values of 'formation_energy_per_atom'"):
        check_bundled(nan, spec)
    hot = load_bundled(spec.name)
    hot.frame.loc[0, "formation_energy_per_atom"] = 50.0
    with pytest.raises(CorruptDataError, match="outside"):
        check_bundled(hot, spec)
    broken = load_bundled(spec.name)
    broken.frame.at[5, "coords"] = broken.frame.at[5, "coords"][:-1]
    with pytest.raises(CorruptDataError, match="sites and coordinates"):
        check_bundled(broken, spec)


def test_provenance_and_checksums_cover_every_set():
    provenance = (BUNDLE_DIR / "PROVENANCE.md").read_text()
    sums = (BUNDLE_DIR / CHECKSUM_FILE).read_text()
    for spec in BUNDLED.values():
        assert spec.file in sums and spec.name in provenance
    for needle in ("Faber", "Petousis", "de Jong", "CC-BY 4.0", "BSD", "pip download", "matminer==0.4.2"):
        assert needle in provenance
