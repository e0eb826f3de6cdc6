"""The ``query_dataset`` tool: filter a dataset source and store the result as a slice.

For users' files and Materials Project answers the result also says what reading did: rows read,
kept and rejected, values left missing, each with its reason (the first few in the result, all
of them in a JSON file next to the slice in the workspace).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pymatgen.core import Element

from matloop.data.accounting import Accounting
from matloop.data.cells import split_header
from matloop.data.materials_project import MPQuery
from matloop.data.slices import save_slice
from matloop.data.sources import SourceName, load_table
from matloop.data.substitution import DEFAULT_THRESHOLD, SubstitutionCounts, SubstitutionQuery
from matloop.data.table import SourceTable
from matloop.errors import ToolInputError, invalid_choice
from matloop.workspace import Workspace, resolve_workspace

_SYMBOLS = frozenset(e.symbol for e in Element)
_SHOWN_PROBLEMS = 10
_SHOWN_NOTES = 5


class PropertyStats(BaseModel):
    unit: str = Field(description="Unit of the property.")
    count: int = Field(description="Items with a value (not NaN).")
    mean: float | None = Field(description="Mean over items with a value.")
    std: float | None = Field(description="Standard deviation over items with a value.")
    min: float | None = Field(description="Smallest value.")
    max: float | None = Field(description="Largest value.")


class ReadAccounting(BaseModel):
    read: int = Field(description="Rows read from the input.")
    kept: int = Field(description="Rows kept; later tools only ever see these.")
    rejected: int = Field(description="Rows left out, each with its reason.")
    bad_cells: int = Field(description="Values left missing in kept rows, each with its reason.")
    problems: list[str] = Field(
        description=f"The first {_SHOWN_PROBLEMS} rejected rows and bad cells, each with its reason."
    )
    unused_columns: dict[str, str] = Field(
        description=f"Columns not read as properties, with the reason (the first {_SHOWN_PROBLEMS})."
    )
    notes: list[str] = Field(description=f"Remarks on whole files (the first {_SHOWN_NOTES}).")
    report_file: str = Field(description="Workspace file listing every problem.")


class QueryResult(BaseModel):
    slice_id: str = Field(description="Id of the stored dataset slice; pass it to featurize.")
    source: str = Field(description="Dataset source the slice came from.")
    kind: str = Field(description="'crystal' or 'molecule'.")
    count: int = Field(description="Number of items in the slice.")
    source_count: int = Field(description="Number of items in the source before filtering.")
    properties: dict[str, PropertyStats] = Field(description="Statistics and unit of each property.")
    elements: list[str] = Field(description="Elements present in the slice.")
    seed: int = Field(description="Seed used for random sampling.")
    from_cache: bool = Field(description="Whether the parsed source was read from the on-disk cache.")
    accounting: ReadAccounting | None = Field(
        default=None, description="What reading a user's file did with each row (None for curated sources)."
    )
    generation: SubstitutionCounts | None = Field(
        default=None, description="For 'substitution': candidates generated, rejected (why), deduplicated."
    )


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def property_stats(values: np.ndarray, unit: str) -> PropertyStats:
    """Count, mean, std, min and max of the non-NaN values."""
    v = values[~np.isnan(values)]
    if not len(v):
        return PropertyStats(unit=unit, count=0, mean=None, std=None, min=None, max=None)
    return PropertyStats(
        unit=unit,
        count=len(v),
        mean=_round(v.mean()),
        std=_round(v.std()),
        min=_round(v.min()),
        max=_round(v.max()),
    )


def _check_elements(what: str, symbols: list[str] | None, present: set[str], *, must_exist: bool) -> set[str]:
    """Validate element symbols; ``must_exist`` also rejects elements absent from the source."""
    if symbols is None:
        return set()
    for symbol in symbols:
        if symbol not in _SYMBOLS or (must_exist and symbol not in present):
            raise invalid_choice(f"{what} to be element symbols present in this source", symbol, present)
    return set(symbols)


def _check_range(what: str, low: float | None, high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise ToolInputError(f"expected {what} minimum <= maximum, got ({low}, {high})")


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ToolInputError(f"expected {name} >= 1, got {value}")


def _mp_query(
    elements_all: list[str] | None,
    elements_none: list[str] | None,
    elements: tuple[int | None, int | None],
    sites: tuple[int | None, int | None],
    ranges: dict[str, tuple[float | None, float | None]],
) -> MPQuery:
    """Server-side filters for the Materials Project (the rest are applied locally)."""

    def bounds(low, high, lo_default, hi_default):
        return None if low is None and high is None else (low or lo_default, high or hi_default)

    return MPQuery(
        elements=elements_all,
        exclude_elements=elements_none,
        num_elements=bounds(*elements, 1, 20),
        num_sites=bounds(*sites, 1, 10_000),
        ranges={
            k: (lo if lo is not None else -1e9, hi if hi is not None else 1e9)
            for k, (lo, hi) in ranges.items()
        },
    )


def query_dataset(
    source: SourceName,
    properties: list[str] | None = None,
    elements: list[str] | None = None,
    elements_all: list[str] | None = None,
    elements_any: list[str] | None = None,
    elements_none: list[str] | None = None,
    n_elements: int | None = None,
    min_elements: int | None = None,
    max_elements: int | None = None,
    min_sites: int | None = None,
    max_sites: int | None = None,
    property_ranges: dict[str, tuple[float | None, float | None]] | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    path: str | None = None,
    strict: bool = False,
    templates: str = "mp_formation_energy",
    threshold: float = DEFAULT_THRESHOLD,
    *,
    workspace: Workspace | str | Path | None = None,
) -> QueryResult:
    """Select items from a dataset source by elements, size and property ranges; store them as a slice.

    Args:
        source: dataset: "qm9" (molecules; homo, lumo, gap in eV), "mp_formation_energy",
            "mp_dielectric", "mp_elastic", "mp_piezo" (bundled Materials Project crystals),
            "matbench", "table", "cif_folder", "ase_db" (a user's file, needs path) or
            "materials_project" (needs MP_API_KEY and network), or "substitution" (new crystals by
            data-mined ion substitution of the ``templates`` source's structures, made of
            ``elements``; charge balanced, not a known phase).
        properties: property columns to keep (default: all).
        elements: keep items made only of these elements; for "substitution" (where it is
            required) the elements the generated candidates are made of.
        elements_all: keep items containing all of these elements.
        elements_any: keep items containing at least one of these elements.
        elements_none: drop items containing any of these elements.
        n_elements: keep items with exactly this many distinct elements.
        min_elements: keep items with at least this many distinct elements.
        max_elements: keep items with at most this many distinct elements.
        min_sites: keep items with at least this many sites (atoms).
        max_sites: keep items with at most this many sites (atoms).
        property_ranges: {property: [min, max]} to keep (either bound may be null); items without
            a value of that property are dropped.
        limit: keep at most this many items (the first ones after filtering).
        sample: keep a random sample of this many items (seeded), before any limit.
        seed: seed of the random sample.
        path: file or folder for the user-file sources.
        strict: fail on the first row or cell of the file that cannot be used, instead of
            leaving it out and reporting it.
        templates: for "substitution": the crystal source whose structures are substituted
            (a user's file with ``path``).
        threshold: for "substitution": the smallest substitution probability kept, in (0, 1].
    """
    ws = resolve_workspace(workspace)
    ranges = dict(property_ranges or {})
    _check_positive(
        n_elements=n_elements,
        min_elements=min_elements,
        max_elements=max_elements,
        min_sites=min_sites,
        max_sites=max_sites,
        limit=limit,
        sample=sample,
    )
    _check_range("number of elements", min_elements, max_elements)
    _check_range("number of sites", min_sites, max_sites)
    for name, bounds in ranges.items():
        if len(bounds) != 2:
            raise ToolInputError(f"expected [min, max] for property range {name!r}, got {list(bounds)}")
        _check_range(f"property range {name!r}", *bounds)
    mp_query = None
    if source == "materials_project":
        mp_query = _mp_query(
            elements_all, elements_none, (min_elements, max_elements), (min_sites, max_sites), ranges
        )
    substitution = None
    if source == "substitution":
        substitution = SubstitutionQuery(
            templates=templates, elements=elements or [], threshold=threshold, max_sites=max_sites
        )
    table = load_table(
        source,
        path,
        max_rows=(limit or sample) if source == "materials_project" else None,
        mp_query=mp_query,
        substitution=substitution,
        strict=strict,
        settings=ws.settings,
    )
    keep = _check_properties(table, properties, ranges)

    of_item = table.elements()
    present = set().union(*of_item) if of_item else set()
    only = _check_elements("elements", elements, present, must_exist=False)
    need_all = _check_elements("elements_all", elements_all, present, must_exist=True)
    need_any = _check_elements("elements_any", elements_any, present, must_exist=True)
    forbid = _check_elements("elements_none", elements_none, present, must_exist=False)

    n_el = np.fromiter((len(e) for e in of_item), dtype=np.int64, count=len(of_item))
    n_sites = table.nsites()
    steps: list[tuple[str, np.ndarray]] = []
    if only:
        steps.append(("elements", np.array([e <= only for e in of_item], dtype=bool)))
    if need_all:
        steps.append(("elements_all", np.array([need_all <= e for e in of_item], dtype=bool)))
    if need_any:
        steps.append(("elements_any", np.array([not need_any.isdisjoint(e) for e in of_item], dtype=bool)))
    if forbid:
        steps.append(("elements_none", np.array([forbid.isdisjoint(e) for e in of_item], dtype=bool)))
    if n_elements is not None:
        steps.append(("n_elements", n_el == n_elements))
    if min_elements is not None or max_elements is not None:
        steps.append(("min/max_elements", _within(n_el, min_elements, max_elements)))
    if min_sites is not None or max_sites is not None:
        steps.append(("min/max_sites", _within(n_sites, min_sites, max_sites)))
    for name, (low, high) in ranges.items():
        steps.append((f"property_ranges[{name}]", _within(table.frame[name].to_numpy(np.float64), low, high)))

    mask = np.ones(len(table), dtype=bool)
    trail = [f"source {len(table)}"]
    for label, step in steps:
        mask &= step
        trail.append(f"{label} {int(mask.sum())}")
    positions = np.flatnonzero(mask)
    if sample is not None and sample < len(positions):
        positions = np.sort(np.random.default_rng(seed).choice(positions, size=sample, replace=False))
    if limit is not None:
        positions = positions[:limit]
    if not len(positions):
        raise ToolInputError(
            "expected a query matching at least one item, got none; items left after each filter: "
            + " -> ".join(trail)
        )

    data = table.to_slice(positions, keep)
    query = {
        "source": source,
        "path": path,
        "templates": templates if substitution is not None else None,
        "threshold": threshold if substitution is not None else None,
        "elements": elements,
        "elements_all": elements_all,
        "elements_any": elements_any,
        "elements_none": elements_none,
        "n_elements": n_elements,
        "min_elements": min_elements,
        "max_elements": max_elements,
        "min_sites": min_sites,
        "max_sites": max_sites,
        "property_ranges": ranges,
        "limit": limit,
        "sample": sample,
        "seed": seed,
    }
    data.meta = {**data.meta, "query": {k: v for k, v in query.items() if v not in (None, {}, [])}}
    slice_id = ws.new_id("slice")
    account = Accounting.of(table.meta)
    report = None if account is None else _write_accounting(ws, slice_id, account, table)
    if report is not None:
        data.meta["accounting"] = report.model_dump(exclude={"problems", "unused_columns", "notes"})
    save_slice(ws, data, slice_id=slice_id)
    return QueryResult(
        slice_id=slice_id,
        source=source,
        kind=table.kind,
        count=len(data),
        source_count=len(table),
        properties={name: property_stats(data.target(name), data.units[name]) for name in keep},
        elements=sorted(set().union(*(of_item[i] for i in positions))),
        seed=seed,
        from_cache=table.from_cache,
        accounting=report,
        generation=SubstitutionCounts.model_validate(table.meta["substitution"])
        if "substitution" in table.meta
        else None,
    )


def _write_accounting(
    ws: Workspace, slice_id: str, account: Accounting, table: SourceTable
) -> ReadAccounting:
    """Write every problem of reading ``table`` next to the slice; return the short form for the result."""
    path = ws.dir("slices") / f"{slice_id}.accounting.json"
    full = {
        "source": table.source,
        "path": table.meta.get("path"),
        "read": account.read,
        "kept": account.kept,
        "rejected": [i.message for i in account.rejected],
        "bad_cells": [i.message for i in account.bad_cells],
        "unused_columns": account.unused_columns,
        "notes": account.notes,
    }
    path.write_text(json.dumps(full, indent=1, ensure_ascii=False))
    return ReadAccounting(
        read=account.read,
        kept=account.kept,
        rejected=len(account.rejected),
        bad_cells=len(account.bad_cells),
        problems=account.summary(_SHOWN_PROBLEMS),
        unused_columns=dict(list(account.unused_columns.items())[:_SHOWN_PROBLEMS]),
        notes=account.notes[:_SHOWN_NOTES],
        report_file=str(path.relative_to(ws.root)),
    )


def _within(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """``low <= values <= high`` with open bounds for None; NaN is never within."""
    mask = ~np.isnan(values.astype(np.float64))
    if low is not None:
        mask &= values >= low
    if high is not None:
        mask &= values <= high
    return mask


def _check_properties(table: SourceTable, properties: list[str] | None, ranges: dict[str, Any]) -> list[str]:
    """The property columns to keep; unknown names raise listing the valid ones."""
    unused = (account.unused_columns if (account := Accounting.of(table.meta)) else {}).items()
    for name in [*(properties or []), *ranges]:
        if name not in table.properties:
            error = invalid_choice(f"a property of source {table.source!r}", name, table.properties)
            why = [
                f"column {header!r} was not read: {reason}"
                for header, reason in unused
                if split_header(header)[0] == name
            ]
            raise ToolInputError("; ".join([str(error), *why])) if why else error
    return list(properties) if properties is not None else table.properties
