"""The source registry, the parsed-source cache and the Materials Project source offline."""

from __future__ import annotations

import json
import sys
import typing

import pytest
from pymatgen.core import Lattice, Structure

from matloop.data.materials_project import MPQuery, check_reachable, fetch_materials_project
from matloop.data.sources import SourceName, available_sources, load_source, load_table, source_names
from matloop.errors import MissingExtraError, ToolInputError


def test_registry_matches_the_literal():
    assert set(source_names()) == set(typing.get_args(SourceName))
    infos = {s.name: s for s in available_sources()}
    assert set(infos) == set(source_names())
    assert infos["mp_formation_energy"].count == 3938 and infos["mp_piezo"].count == 941
    assert infos["mp_dielectric"].units["band_gap"] == "eV"
    assert infos["qm9"].count == 130_831 and infos["qm9"].units["gap"] == "eV"
    assert infos["table"].status.startswith("needs path")


def test_bad_names_and_paths(settings, tmp_path):
    with pytest.raises(ToolInputError, match=r"valid values are .*mp_elastic"):
        load_source("mp_elastics", settings=settings)
    with pytest.raises(ToolInputError, match="expected a path"):
        load_source("table", settings=settings)
    with pytest.raises(ToolInputError, match="existing file"):
        load_source("ase_db", tmp_path / "nothing.db", settings=settings)


def _write_table(path, n):
    rows = [
        {
            "id": f"x{k}",
            "structure": Structure(Lattice.cubic(4 + k), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]).as_dict(),
            "y": float(k),
        }
        for k in range(n)
    ]
    path.write_text(json.dumps(rows))


def test_cache_hit_and_invalidation(settings, tmp_path):
    path = tmp_path / "t.json"
    _write_table(path, 3)
    first = load_table("table", path, settings=settings)
    second = load_table("table", path, settings=settings)
    assert not first.from_cache and second.from_cache and second.ids == first.ids
    assert second.to_slice().structures[1].lattice.a == pytest.approx(5.0)
    _write_table(path, 4)  # a changed file is parsed again
    third = load_table("table", path, settings=settings)
    assert not third.from_cache and len(third) == 4
    assert len(load_table("table", path, max_rows=2, settings=settings)) == 2


def test_damaged_cache_is_rebuilt(settings, tmp_path):
    path = tmp_path / "t.json"
    _write_table(path, 3)
    load_table("table", path, settings=settings)
    (cached,) = settings.cache_dir.glob("datasets/table-*.parquet")
    cached.write_bytes(b"garbage")
    table = load_table("table", path, settings=settings)
    assert not table.from_cache and len(table) == 3
    assert load_table("table", path, settings=settings).from_cache


def test_materials_project_needs_a_key(settings, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ToolInputError, match=r"MP_API_KEY.*bundled source"):
        load_source("materials_project", settings=settings)


def test_materials_project_without_mp_api_names_the_extra(monkeypatch):
    monkeypatch.setenv("MP_API_KEY", "not-a-real-key")
    monkeypatch.setitem(sys.modules, "mp_api", None)  # as on a machine without the extra
    with pytest.raises(MissingExtraError, match=r"pip install 'matloop\[mp\]'"):
        fetch_materials_project(MPQuery(elements=["Li"]))


def test_materials_project_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("MP_API_KEY", "not-a-real-key")
    # .invalid never resolves (RFC 2606), so this is the offline path on any machine
    with pytest.raises(ToolInputError, match="network access to the Materials Project"):
        fetch_materials_project(MPQuery(elements=["Li"]), endpoint="https://api.example.invalid/")
    # nothing listens on the discard port: the connection is refused at once
    with pytest.raises(ToolInputError, match="network access"):
        check_reachable("http://127.0.0.1:9/", timeout_s=1.0)
