"""The registry of dataset sources, with an on-disk cache of parsed sources.

========================  ==========  ===================================================
source                    kind        where the data come from
========================  ==========  ===================================================
``qm9``                   molecule    the ``qm9pack`` package (extra ``matloop[qm9]``)
``mp_formation_energy``   crystal     bundled (Materials Project via matminer 0.4.2)
``mp_dielectric``         crystal     bundled
``mp_elastic``            crystal     bundled
``mp_piezo``              crystal     bundled
``matbench``              either      a matbench JSON(.gz) file (``path``)
``table``                 either      a CSV/JSON table with a structure column (``path``)
``cif_folder``            crystal     a folder of CIF files plus a labels CSV (``path``)
``ase_db``                either      an ASE database (``path``)
``materials_project``     crystal     mp-api (``MP_API_KEY`` and network; extra ``matloop[mp]``)
``substitution``          crystal     generated: ion substitution of another crystal source
                                      (:mod:`matloop.data.substitution`)
========================  ==========  ===================================================

Parsed sources (all but the bundled ones, which are stored parsed) are cached as parquet under
``settings.cache_dir / "datasets"``, keyed by the source, the input files' sizes and
modification times, and the options, so a second load of QM9 takes about a second. Users' files
and Materials Project answers carry their accounting (rows read, kept, rejected and why; see
:mod:`matloop.data.accounting`) in the table's metadata, cached with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from matloop.data.accounting import Accounting
from matloop.data.bundled import BUNDLED, CorruptDataError, bundled_info, load_bundled
from matloop.data.materials_project import (
    MP_UNITS,
    MPQuery,
    fetch_materials_project,
    mp_api_key,
    mp_installed,
)
from matloop.data.qm9 import QM9_COUNT, QM9_UNITS, qm9_data_dir, qm9_installed, read_qm9
from matloop.data.readers import read_ase_db, read_cif_folder, read_matbench, read_table_file
from matloop.data.slices import DatasetSlice
from matloop.data.substitution import SubstitutionQuery, generate_substitutions
from matloop.data.table import SourceTable, read_table, write_table
from matloop.errors import ToolInputError, invalid_choice
from matloop.names import SourceName
from matloop.settings import Settings, get_settings

CACHE_VERSION = 2


class SourceInfo(BaseModel):
    """One dataset source as listed by ``matloop data list``."""

    name: str = Field(description="Source name to pass to query_dataset.")
    kind: str = Field(description="'crystal', 'molecule' or 'crystal or molecule'.")
    count: int | None = Field(description="Number of items, when known without a path.")
    properties: list[str] = Field(description="Property names (empty when they depend on the file).")
    units: dict[str, str] = Field(description="Unit of each property.")
    status: str = Field(description="Whether it can be loaded now, and what it needs otherwise.")
    description: str = Field(description="Where the data come from.")


@dataclass(frozen=True)
class _Source:
    name: str
    kind: str
    description: str
    reader: Callable[[Path, int | None], SourceTable] | None = None  # sources read from a user path


_FILE_SOURCES = (
    _Source("matbench", "crystal or molecule", "matbench-format JSON(.gz) (path=file)", read_matbench),
    _Source("table", "crystal or molecule", "CSV/JSON with a CIF/POSCAR/dict structure", read_table_file),
    _Source("cif_folder", "crystal", "folder of CIF files plus labels.csv / id_prop.csv", read_cif_folder),
    _Source("ase_db", "crystal or molecule", "ASE database file (.db/.json)", read_ase_db),
)
_SOURCES: dict[str, _Source] = {
    "qm9": _Source("qm9", "molecule", "QM9, B3LYP/6-31G(2df,p) (Ramakrishnan 2014) from qm9pack"),
    **{name: _Source(name, "crystal", spec.description) for name, spec in BUNDLED.items()},
    **{s.name: s for s in _FILE_SOURCES},
    "materials_project": _Source("materials_project", "crystal", "Materials Project summaries via mp-api"),
    "substitution": _Source(
        "substitution",
        "crystal",
        "new crystals by data-mined ion substitution of a crystal source (elements=...)",
    ),
}


def source_names() -> list[str]:
    return list(_SOURCES)


def _source(name: str) -> _Source:
    if name not in _SOURCES:
        raise invalid_choice("a dataset source", name, _SOURCES)
    return _SOURCES[name]


def available_sources() -> list[SourceInfo]:
    """Every source with its size, properties, units and whether it can be loaded now."""
    infos = [
        SourceInfo(
            name="qm9",
            kind="molecule",
            count=QM9_COUNT,
            properties=list(QM9_UNITS),
            units=dict(QM9_UNITS),
            status="ready" if qm9_installed() else "needs the extra: pip install 'matloop[qm9]'",
            description=_SOURCES["qm9"].description,
        )
    ]
    for name in BUNDLED:
        try:
            count, units = bundled_info(name)
            status = "ready (bundled)"
        except Exception as exc:
            count, units, status = None, {}, f"damaged bundled file: {exc}"
        infos.append(
            SourceInfo(
                name=name,
                kind="crystal",
                count=count,
                properties=list(units),
                units=units,
                status=status,
                description=_SOURCES[name].description,
            )
        )
    for source in _FILE_SOURCES:
        infos.append(
            SourceInfo(
                name=source.name,
                kind=source.kind,
                count=None,
                properties=[],
                units={},
                status="needs path=...",
                description=source.description,
            )
        )
    if not mp_installed():
        mp_status = "needs the extra: pip install 'matloop[mp]'"
    elif mp_api_key() is None:
        mp_status = "needs MP_API_KEY and network"
    else:
        mp_status = "MP_API_KEY set; needs network"
    infos.append(
        SourceInfo(
            name="materials_project",
            kind="crystal",
            count=None,
            properties=list(MP_UNITS),
            units=dict(MP_UNITS),
            status=mp_status,
            description=_SOURCES["materials_project"].description,
        )
    )
    infos.append(
        SourceInfo(
            name="substitution",
            kind="crystal",
            count=None,
            properties=[],
            units={},
            status="needs elements=[...] (templates: a crystal source, default mp_formation_energy)",
            description=_SOURCES["substitution"].description,
        )
    )
    return infos


def _fingerprint(path: Path) -> list[Any]:
    """What identifies the input files' content: names, sizes, modification times."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _cached(cache_dir: Path, name: str, key: dict[str, Any], build: Callable[[], SourceTable]) -> SourceTable:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, name, key], sort_keys=True).encode()).hexdigest()
    path = cache_dir / "datasets" / f"{name}-{digest[:16]}.parquet"
    if path.is_file():
        try:
            table = read_table(path)
        except Exception:  # a damaged cache file is rebuilt
            path.unlink(missing_ok=True)
        else:
            table.from_cache = True
            return table
    table = build()
    write_table(table, path)
    return table


def load_table(
    name: str,
    path: str | Path | None = None,
    *,
    max_rows: int | None = None,
    mp_query: MPQuery | None = None,
    substitution: SubstitutionQuery | None = None,
    strict: bool = False,
    settings: Settings | None = None,
) -> SourceTable:
    """Parse (or fetch from the cache) one source as a :class:`SourceTable`.

    Args:
        name: a source name (see :func:`available_sources`).
        path: the file or folder for user sources; for ``qm9`` a folder with ``qm9_part*.csv``;
            for a bundled set a copy of its file.
        max_rows: read only the first rows (quick runs and tests).
        mp_query: server-side filters for ``materials_project``.
        substitution: what ``substitution`` generates; its templates come from the source
            ``substitution.templates`` (read from ``path`` for a user's file).
        strict: raise a :class:`ToolInputError` on the first rejected row or bad cell (see
            :mod:`matloop.data.accounting`) instead of leaving them out.
        settings: where the cache lives (default: :func:`get_settings`).
    """
    table = _load(name, path, max_rows, mp_query, substitution, settings)
    account = Accounting.of(table.meta)
    if strict and account is not None:
        account.check_strict(name)
    return table


def _load(
    name: str,
    path: str | Path | None,
    max_rows: int | None,
    mp_query: MPQuery | None,
    substitution: SubstitutionQuery | None,
    settings: Settings | None,
) -> SourceTable:
    source = _source(name)
    if name == "substitution":
        query = substitution or SubstitutionQuery()
        crystal = [n for n, s in _SOURCES.items() if "crystal" in s.kind and n != name]
        if query.templates not in crystal:
            raise ToolInputError(
                f"templates: expected a crystal source of known structures, got {query.templates!r}; "
                f"valid values are {crystal}"
            )
        templates = _load(query.templates, path, None, mp_query, None, settings)
        ids = hashlib.sha256("\n".join(templates.ids).encode()).hexdigest()
        key = {"query": query.model_dump(), "templates": ids, "max_rows": max_rows}
        cache_dir = (settings or get_settings()).cache_dir
        return _cached(
            cache_dir,
            name,
            key,
            lambda: generate_substitutions(
                templates, query.elements, threshold=query.threshold, max_sites=query.max_sites
            )[0].head(max_rows),
        )
    if name in BUNDLED:
        return load_bundled(name, Path(path) if path is not None else None).head(max_rows)
    cache_dir = (settings or get_settings()).cache_dir
    if name == "materials_project":
        query = mp_query or MPQuery()
        key: dict[str, Any] = {"query": query.model_dump(), "max_rows": max_rows}
        return _cached(cache_dir, name, key, lambda: fetch_materials_project(query, max_rows=max_rows))
    file = Path(path).expanduser() if path is not None else None
    if file is not None and not file.exists():
        raise ToolInputError(f"expected an existing file or folder for source {name!r}, got {str(path)!r}")
    if name == "qm9":
        key = {"files": _fingerprint(file or qm9_data_dir()), "max_rows": max_rows}
        return _cached(cache_dir, name, key, lambda: read_qm9(file, max_rows))
    if file is None:
        raise ToolInputError(f"expected a path for source {name!r} ({source.description}), got none")
    reader = source.reader
    assert reader is not None
    key = {"files": _fingerprint(file), "max_rows": max_rows}
    return _cached(cache_dir, name, key, lambda: reader(file, max_rows))


def load_source(
    name: str,
    path: str | Path | None = None,
    *,
    max_rows: int | None = None,
    settings: Settings | None = None,
) -> DatasetSlice:
    """One whole source as a :class:`DatasetSlice` (structures are built on first access)."""
    return load_table(name, path, max_rows=max_rows, settings=settings).to_slice()


__all__ = [
    "CorruptDataError",
    "SourceInfo",
    "SourceName",
    "available_sources",
    "load_source",
    "load_table",
    "source_names",
]
