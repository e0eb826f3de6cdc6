"""``matloop data query`` filters, ``data show`` and ``data export`` on real bundled slices."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from pymatgen.core import Molecule, Structure
from typer.testing import CliRunner

from matloop.cli import app
from matloop.data.slices import DatasetSlice, load_slice, save_slice
from matloop.tools.dataset import query_dataset

WIDE = {"COLUMNS": "250"}


def _query(*args: str) -> dict:
    result = CliRunner().invoke(app, ["data", "query", "mp_dielectric", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_query_filters_by_property_range_sites_and_elements(workspace):
    out = _query("--range", "band_gap=1:2", "--max-sites", "10", "--n-elements", "2")
    assert out["count"] > 0
    data = load_slice(workspace, out["slice_id"])
    gaps = data.target("band_gap")
    assert ((gaps >= 1) & (gaps <= 2)).all()
    assert all(len(s) <= 10 and len(s.composition.elements) == 2 for s in data.structures)
    same = query_dataset(
        "mp_dielectric", property_ranges={"band_gap": (1, 2)}, max_sites=10, n_elements=2, workspace=workspace
    )
    assert same.count == out["count"]


def test_query_ranges_with_an_open_end_and_repeated(workspace):
    low = _query("--range", "band_gap=:0.5")
    assert low["properties"]["band_gap"]["max"] <= 0.5
    both = _query("--range", "band_gap=3:", "--range", "n=:2")
    assert both["properties"]["band_gap"]["min"] >= 3 and both["properties"]["n"]["max"] <= 2
    assert (
        both["count"]
        == query_dataset(
            "mp_dielectric", property_ranges={"band_gap": (3, None), "n": (None, 2)}, workspace=workspace
        ).count
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--range", "band_gap=2:1"], "minimum <= maximum"),
        (["--range", "nope=1:2"], "'nope'"),
        (["--range", "band_gap=a:2"], "expected a number"),
        (["--range", "band_gap"], "expected PROPERTY=MIN:MAX"),
        (["--n-elements", "0"], "expected n_elements >= 1"),
    ],
)
def test_bad_query_input_is_a_usage_error_in_one_line(settings, args, message):
    result = CliRunner().invoke(app, ["data", "query", "mp_dielectric", *args], env=WIDE)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_show_lists_items_by_id_and_formula(workspace):
    out = _query("--range", "band_gap=1:2", "--limit", "8")
    data = load_slice(workspace, out["slice_id"])
    result = CliRunner().invoke(app, ["data", "show", out["slice_id"], "--limit", "3"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "band_gap (eV)" in result.output and "first 3 of 8" in result.output
    for item_id, structure in list(zip(data.ids, data.structures, strict=True))[:3]:
        line = next(line for line in result.output.splitlines() if f" {item_id} " in line)
        assert structure.composition.reduced_formula in line and "mp_dielectric" in line
    assert data.ids[3] not in result.output
    shown = json.loads(CliRunner().invoke(app, ["data", "show", out["slice_id"], "--json"]).output)
    assert [r["id"] for r in shown] == data.ids
    assert shown[0]["formula"] == data.structures[0].composition.reduced_formula
    assert shown[0]["properties"]["band_gap"] == pytest.approx(data.target("band_gap")[0])


def test_unknown_slice_and_format_are_usage_errors(settings, tmp_path):
    runner = CliRunner()
    show = runner.invoke(app, ["data", "show", "slice-nope"])
    assert show.exit_code == 2 and "expected a known slice id, got 'slice-nope'" in show.output
    export = runner.invoke(
        app, ["data", "export", "slice-nope", "--format", "xyz", "--out", str(tmp_path / "x")]
    )
    assert export.exit_code == 2 and "xyz" in export.output


def _exported(workspace, tmp_path, fmt: str):
    out = _query("--range", "band_gap=1:2", "--limit", "6")
    target = tmp_path / f"out.{fmt}"
    result = CliRunner().invoke(
        app, ["data", "export", out["slice_id"], "--format", fmt, "--out", str(target)], env=WIDE
    )
    assert result.exit_code == 0, result.output
    return load_slice(workspace, out["slice_id"]), target


@pytest.mark.parametrize(("fmt", "source"), [("csv", "table"), ("cif", "cif_folder")])
def test_export_reads_back_as_a_users_source(workspace, tmp_path, fmt, source):
    data, target = _exported(workspace, tmp_path, fmt)
    table = target / "labels.csv" if fmt == "cif" else target
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["formula"] for r in rows] == [s.composition.reduced_formula for s in data.structures]
    if fmt == "cif":
        assert sorted(p.stem for p in target.glob("*.cif")) == sorted(data.ids)
    back = query_dataset(source, path=str(target), workspace=workspace)
    assert back.count == len(data)
    again = load_slice(workspace, back.slice_id)
    order = [again.ids.index(i) for i in data.ids]
    assert [again.structures[k].composition for k in order] == [s.composition for s in data.structures]
    assert again.target("band_gap")[order] == pytest.approx(data.target("band_gap"))


def test_export_json_holds_structures_and_properties(workspace, tmp_path):
    data, target = _exported(workspace, tmp_path, "json")
    records = json.loads(target.read_text())
    assert [r["id"] for r in records] == data.ids
    first = records[0]
    assert Structure.from_dict(first["structure"]).composition.reduced_formula == first["formula"]
    assert first["properties"]["band_gap"] == pytest.approx(data.target("band_gap")[0])


def test_cif_export_of_molecules_says_what_it_needs(workspace, tmp_path):
    co = Molecule(["C", "O"], [[0, 0, 0], [1.13, 0, 0]])
    slice_id = save_slice(
        workspace,
        DatasetSlice(["co"], [co], pd.DataFrame({"gap": [1.0]}), {"gap": "eV"}, "molecule", "test"),
    )
    result = CliRunner().invoke(
        app, ["data", "export", slice_id, "--format", "cif", "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 2 and "expected a slice of crystals for CIF, got molecules" in result.output


def test_bracketed_text_is_printed_as_written(workspace):
    fe = Structure([[2.87, 0, 0], [0, 2.87, 0], [0, 0, 2.87]], ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    slice_id = save_slice(
        workspace,
        DatasetSlice(
            ["Fe[bcc]"], [fe], pd.DataFrame({"e": [0.0]}), {"e": "eV [per atom]"}, "crystal", "mine[1]"
        ),
    )
    result = CliRunner().invoke(app, ["data", "show", slice_id], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Fe[bcc]" in result.output and "mine[1]" in result.output and "e (eV [per atom])" in result.output
