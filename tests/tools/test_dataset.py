"""The query_dataset tool: every filter, statistics, errors, and the stored slice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matloop.data.bundled import load_bundled
from matloop.data.qm9 import qm9_data_dir
from matloop.data.slices import load_slice
from matloop.errors import ToolInputError
from matloop.tools import query_dataset


@pytest.fixture(scope="module")
def fe_table():
    return load_bundled("mp_formation_energy")


@pytest.fixture(scope="module")
def diel_table():
    return load_bundled("mp_dielectric")


def _elements(workspace, slice_id):
    return [set(s.composition.chemical_system.split("-")) for s in load_slice(workspace, slice_id).structures]


def test_whole_set_and_stats(workspace, fe_table):
    result = query_dataset("mp_piezo", workspace=workspace)
    assert result.count == result.source_count == 941 and result.kind == "crystal"
    stats = result.properties["eij_max"]
    values = load_bundled("mp_piezo").frame["eij_max"].to_numpy()
    assert stats.unit == "C/m^2" and stats.count == 941
    assert stats.mean == pytest.approx(values.mean(), rel=1e-5)
    assert stats.std == pytest.approx(values.std(), rel=1e-5)
    assert (stats.min, stats.max) == (
        pytest.approx(values.min(), rel=1e-5),
        pytest.approx(values.max(), rel=1e-5),
    )
    data = load_slice(workspace, result.slice_id)
    assert len(data) == 941 and data.units == {"eij_max": "C/m^2"} and data.source == "mp_piezo"
    assert isinstance(data.structures[0], Structure)


def test_element_filters(workspace, diel_table):
    r = query_dataset("mp_dielectric", elements_all=["Li", "O"], workspace=workspace)
    assert r.count > 0 and all({"Li", "O"} <= e for e in _elements(workspace, r.slice_id))
    expected = sum({"Li", "O"} <= e for e in diel_table.elements())
    assert r.count == expected
    r = query_dataset("mp_dielectric", elements_any=["Li", "Na"], workspace=workspace)
    assert r.count == sum(bool({"Li", "Na"} & e) for e in diel_table.elements())
    r = query_dataset("mp_dielectric", elements_none=["O", "F"], workspace=workspace)
    assert r.count == sum(not ({"O", "F"} & e) for e in diel_table.elements())
    assert "O" not in r.elements and "F" not in r.elements


def test_size_filters(workspace, diel_table):
    n_el = np.array([len(e) for e in diel_table.elements()])
    r = query_dataset("mp_dielectric", n_elements=2, workspace=workspace)
    assert r.count == (n_el == 2).sum()
    r = query_dataset("mp_dielectric", min_elements=3, max_elements=4, workspace=workspace)
    assert r.count == ((n_el >= 3) & (n_el <= 4)).sum()
    r = query_dataset("mp_dielectric", min_sites=4, max_sites=8, workspace=workspace)
    assert r.count == ((diel_table.nsites() >= 4) & (diel_table.nsites() <= 8)).sum()
    assert all(4 <= len(s) <= 8 for s in load_slice(workspace, r.slice_id).structures)


def test_property_ranges_and_selection(workspace, fe_table):
    r = query_dataset(
        "mp_formation_energy",
        properties=["formation_energy_per_atom"],
        property_ranges={"formation_energy_per_atom": (-1.0, None), "e_above_hull": (None, 0.0)},
        workspace=workspace,
    )
    frame = fe_table.frame
    assert r.count == ((frame["formation_energy_per_atom"] >= -1) & (frame["e_above_hull"] <= 0)).sum()
    assert list(r.properties) == ["formation_energy_per_atom"]
    assert r.properties["formation_energy_per_atom"].min >= -1.0


def test_limit_and_seeded_sample(workspace, fe_table):
    r = query_dataset("mp_formation_energy", limit=7, workspace=workspace)
    assert load_slice(workspace, r.slice_id).ids == fe_table.ids[:7]
    a = query_dataset("mp_formation_energy", sample=25, seed=3, workspace=workspace)
    b = query_dataset("mp_formation_energy", sample=25, seed=3, workspace=workspace)
    c = query_dataset("mp_formation_energy", sample=25, seed=4, workspace=workspace)
    ids_a, ids_b, ids_c = (load_slice(workspace, x.slice_id).ids for x in (a, b, c))
    assert ids_a == ids_b and ids_a != ids_c and len(set(ids_a)) == 25 and a.seed == 3
    d = query_dataset("mp_formation_energy", sample=25, limit=5, seed=3, workspace=workspace)
    assert load_slice(workspace, d.slice_id).ids == ids_a[:5]
    meta = workspace.artifact(a.slice_id).meta
    assert meta["query"]["sample"] == 25 and meta["query"]["seed"] == 3


def test_nan_labels_are_counted_and_range_drops_them(workspace, tmp_path):
    rows = [
        {
            "id": f"c{k}",
            "structure": Structure(Lattice.cubic(4 + k), ["K", "Br"], [[0, 0, 0], [0.5] * 3]).as_dict(),
            "gap [eV]": (np.nan if k == 1 else float(k)),
        }
        for k in range(4)
    ]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(rows))
    r = query_dataset("table", path=str(path), workspace=workspace)
    assert r.count == 4 and r.properties["gap"].count == 3 and r.properties["gap"].unit == "eV"
    r = query_dataset("table", path=str(path), property_ranges={"gap": (None, None)}, workspace=workspace)
    assert r.count == 3


def test_qm9_tool_in_ev(workspace, tmp_path):
    pd.read_csv(qm9_data_dir() / "qm9_part1.csv", nrows=40).to_csv(tmp_path / "qm9_part1.csv", index=False)
    r = query_dataset("qm9", path=str(tmp_path), properties=["gap"], max_sites=5, workspace=workspace)
    data = load_slice(workspace, r.slice_id)
    assert r.kind == "molecule" and data.ids[0] == "qm9-000001" and r.properties["gap"].unit == "eV"
    assert data.target("gap")[0] == pytest.approx(13.736, abs=1e-3)
    assert all(len(m) <= 5 for m in data.structures)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"properties": ["gap"]}, r"valid values are \['band_gap', 'n'"),
        ({"property_ranges": {"bandgap": (0, 1)}}, "valid values are"),
        ({"elements_all": ["Xx"]}, "present in this source, got 'Xx'; valid values are .*'O'"),
        ({"elements_any": ["U"]}, "got 'U'"),
        ({"elements_none": ["Qq"]}, "got 'Qq'"),
        ({"min_sites": 10, "max_sites": 2}, "minimum <= maximum"),
        ({"property_ranges": {"band_gap": (5, 1)}}, "minimum <= maximum"),
        ({"property_ranges": {"band_gap": (5,)}}, r"\[min, max\]"),
        ({"limit": 0}, "limit >= 1"),
        (
            {"property_ranges": {"band_gap": (100, None)}},
            r"at least one item.*source 1056 -> property_ranges\[band_gap\] 0",
        ),
    ],
)
def test_bad_input_is_fixable(workspace, kwargs, match):
    with pytest.raises(ToolInputError, match=match):
        query_dataset("mp_dielectric", **kwargs, workspace=workspace)


def test_absent_element_in_none_filter_is_harmless(workspace):
    r = query_dataset("mp_dielectric", elements_none=["U"], workspace=workspace)
    assert r.count == 1056


def test_unknown_source(workspace):
    with pytest.raises(ToolInputError, match=r"valid values are .*mp_formation_energy"):
        query_dataset("oqmd", workspace=workspace)  # type: ignore[arg-type]


def test_a_users_file_is_accounted_row_by_row(workspace, tmp_path):
    """Read, kept and rejected rows with reasons in the result; every problem in a workspace file."""
    from tests.data import defects

    from matloop.tools import featurize

    result = query_dataset("table", path=str(defects.defect_csv(tmp_path / "mine.csv")), workspace=workspace)
    acc = result.accounting
    assert (acc.read, acc.kept, acc.rejected, acc.bad_cells) == (13, 9, 4, 4)
    assert acc.problems == defects.TABLE_ISSUES
    assert acc.unused_columns == {"note": "mostly not numbers (13 of 13 cells)"}
    assert result.count == result.source_count == 9
    assert result.properties["band_gap"].count == 4 and result.properties["band_gap"].max == 7.8
    full = json.loads((workspace.root / acc.report_file).read_text())
    assert full["rejected"] + full["bad_cells"] == [
        *(m for m in defects.TABLE_ISSUES if ", band_gap:" not in m),
        *(m for m in defects.TABLE_ISSUES if ", band_gap:" in m),
    ]
    assert (full["read"], full["kept"]) == (13, 9)
    # rejected rows never reach later tools
    data = load_slice(workspace, result.slice_id)
    assert data.ids == list(defects.TABLE_KEPT)
    assert data.meta["accounting"]["rejected"] == 4
    graphs = featurize(result.slice_id, workspace=workspace)
    assert graphs.count == 9 and graphs.n_failed == 0


def test_long_problem_lists_are_capped_for_the_llm_and_complete_on_disk(workspace, tmp_path):
    from tests.data import defects

    rows = [f'ok{k},"{defects.cif(defects.MGO)}",{k}' for k in range(3)]
    rows += [f'bad{k},"{defects.truncated_cif()}",1' for k in range(15)]
    rows += [f'text{k},"{defects.cif(defects.SI)}",x{k}' for k in range(2)]
    path = tmp_path / "many.csv"
    path.write_text("id,cif,y\n" + "\n".join(rows) + "\n")
    result = query_dataset("table", path=str(path), workspace=workspace)
    acc = result.accounting
    assert (acc.read, acc.kept, acc.rejected, acc.bad_cells) == (20, 5, 15, 2)
    assert len(acc.problems) == 11 and acc.problems[-1] == "... and 7 more"
    assert acc.problems[0] == f"row 4 (id 'bad0'): {defects.TRUNCATED}"
    assert len(json.dumps(result.model_dump())) < 4000  # the summary the LLM sees stays short
    full = json.loads((workspace.root / acc.report_file).read_text())
    assert len(full["rejected"]) == 15 and full["bad_cells"] == [
        "row 19 (id 'text0'), y: 'x0' is not a number",
        "row 20 (id 'text1'), y: 'x1' is not a number",
    ]


def test_strict_mode_and_a_column_that_is_not_numbers(workspace, tmp_path):
    from tests.data import defects

    path = str(defects.defect_csv(tmp_path / "mine.csv"))
    with pytest.raises(ToolInputError, match=r"\(strict mode\), got row 3 \(id 'trunc'\): CIF parse error"):
        query_dataset("table", path=path, strict=True, workspace=workspace)
    assert workspace.artifacts("slice") == []
    text = tmp_path / "text.csv"
    gaps = ["3.1 eV", "abc", "n.a.", "?", "1.0"]
    text.write_text(
        "id,cif,band_gap [eV]\n"
        + "\n".join(f'r{k},"{defects.cif(defects.MGO)}",{g}' for k, g in enumerate(gaps))
        + "\n"
    )
    with pytest.raises(ToolInputError) as err:
        query_dataset("table", path=str(text), properties=["band_gap"], workspace=workspace)
    assert str(err.value) == (
        "expected a property of source 'table', got 'band_gap'; valid values are []; "
        "column 'band_gap [eV]' was not read: mostly not numbers (3 of 5 cells)"
    )


def test_curated_sources_have_no_accounting(workspace):
    assert query_dataset("mp_piezo", limit=3, workspace=workspace).accounting is None
