"""``matloop data list`` and ``matloop data query``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from matloop.cli import app


def test_data_list_shows_sources_with_counts(settings):
    result = CliRunner().invoke(app, ["data", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name, count in [
        ("mp_formation_energy", "3938"),
        ("mp_dielectric", "1056"),
        ("mp_elastic", "1181"),
        ("mp_piezo", "941"),
        ("qm9", "130831"),
    ]:
        line = next(line for line in result.output.splitlines() if f" {name} " in line)
        assert count in line
    assert "materials_project" in result.output


def test_data_query(settings):
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "query", "mp_elastic", "--elements-all", "Si", "--limit", "5"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "5 of 1181" in result.output and "K_VRH" in result.output and "GPa" in result.output
    bad = runner.invoke(app, ["data", "query", "mp_elastic", "--elements-all", "Xx"])
    assert bad.exit_code == 2 and "valid values" in bad.output  # bad input: a usage error


def test_data_query_prints_the_accounting_of_a_users_file(settings, tmp_path):
    from tests.data import defects

    path = str(defects.defect_cif_folder(tmp_path / "cifs"))
    runner = CliRunner()
    result = runner.invoke(app, ["data", "query", "cif_folder", "--path", path], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "4 of 4 crystals from cif_folder" in result.output
    assert "rows: 10 read, 4 kept, 6 rejected, 2 values missing" in result.output
    for line in [*defects.CIF_FOLDER_ISSUES, "latin.cif is not UTF-8; read as Latin-1"]:
        assert line in result.output
    assert "column 'note' not used: mostly not numbers (5 of 5 cells)" in result.output
    assert ".accounting.json (in the workspace)" in result.output
    strict = runner.invoke(
        app, ["data", "query", "cif_folder", "--path", path, "--strict"], env={"COLUMNS": "250"}
    )
    assert strict.exit_code == 2  # the file is bad input
    assert f"(strict mode), got {defects.CIF_FOLDER_ISSUES[0]}" in " ".join(strict.output.split())


def test_data_list_as_json_is_one_document_with_every_source():
    from matloop.data.sources import source_names

    result = CliRunner().invoke(app, ["data", "list", "--json"])
    assert result.exit_code == 0
    sources = json.loads(result.output)
    assert [s["name"] for s in sources] == source_names()
    assert all({"kind", "count", "properties", "units", "status"} <= set(s) for s in sources)


def test_data_query_generates_substitution_candidates_with_their_counts(settings):
    runner = CliRunner()
    args = ["data", "query", "substitution", "--elements", "Li,Mg,O,S", "--max-sites", "6"]
    result = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "crystals from substitution" in result.output and "from 3938 templates" in result.output
    bad = runner.invoke(app, [*args, "--threshold", "1.5"], env={"COLUMNS": "250"})
    assert bad.exit_code == 2 and "threshold: expected a probability in (0, 1], got 1.5" in bad.output
