"""``matloop data``: the datasets matloop can read, and the slices made from them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from matloop.data.export import EXPORT_FORMATS
from matloop.errors import MatloopError, ToolInputError

if TYPE_CHECKING:
    from matloop.data.slices import DatasetSlice
    from matloop.tools.dataset import ReadAccounting

data_app = typer.Typer(help="Datasets: list sources, query, show and export slices.", no_args_is_help=True)
Workspace = Annotated[str | None, typer.Option(help="Workspace directory (default from settings).")]
#: The export formats as a typer choice (the list itself is :data:`matloop.data.export.EXPORT_FORMATS`).
ExportChoice = Enum("ExportChoice", {f: f for f in EXPORT_FORMATS}, type=str)  # type: ignore[misc]
SliceId = Annotated[str, typer.Argument(help="Slice id from `matloop data query`.")]


def _symbols(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


@contextmanager
def _tool_errors() -> Iterator[None]:
    """A tool's complaint about its input is a usage error (exit 2), any other matloop error exit 1;
    either as one line on stderr."""
    try:
        yield
    except MatloopError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, ToolInputError) else 1) from exc


def _bound(text: str, spec: str) -> float | None:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise typer.BadParameter(
            f"expected a number or nothing on each side of ':', got {text!r} in {spec!r}"
        )
    return value


def parse_ranges(specs: list[str]) -> dict[str, tuple[float | None, float | None]]:
    """``["band_gap=1:2", "n=:3"]`` → ``{"band_gap": (1.0, 2.0), "n": (None, 3.0)}``."""
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for spec in specs:
        name, eq, bounds = spec.partition("=")
        low, colon, high = bounds.partition(":")
        if not eq or not colon or not name.strip():
            raise typer.BadParameter(
                "expected PROPERTY=MIN:MAX (either end may be left out: band_gap=1:, band_gap=:2), "
                f"got {spec!r}"
            )
        ranges[name.strip()] = (_bound(low, spec), _bound(high, spec))
    return ranges


@data_app.command("list")
def list_sources(
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of the table."),
) -> None:
    """List the dataset sources with their size, properties and units."""
    from matloop.data.sources import available_sources

    sources = available_sources()
    if as_json:
        print(json.dumps([info.model_dump() for info in sources]))
        return
    table = Table(title="matloop dataset sources")
    for col in ("source", "kind", "items", "properties", "status"):
        table.add_column(col)
    for info in sources:
        props = ", ".join(f"{p} ({info.units[p]})" for p in info.properties)
        cells = (info.name, info.kind, str(info.count or "-"), props, info.status)
        table.add_row(*map(escape, cells))
    Console().print(table)


@data_app.command("query")
def query(
    source: str = typer.Argument(..., help="Source name (see `matloop data list`)."),
    path: str | None = typer.Option(None, help="File or folder for user sources."),
    elements_all: str | None = typer.Option(None, help="Comma-separated elements all required."),
    elements_any: str | None = typer.Option(None, help="Comma-separated elements, at least one."),
    elements_none: str | None = typer.Option(None, help="Comma-separated elements excluded."),
    ranges: Annotated[
        list[str] | None,
        typer.Option(
            "--range",
            help="PROPERTY=MIN:MAX, repeatable; an end may be left out (band_gap=1:2, band_gap=:2, "
            "band_gap=1:).",
        ),
    ] = None,
    n_elements: int | None = typer.Option(None, help="Exactly this many distinct elements."),
    min_elements: int | None = typer.Option(None, help="At least this many distinct elements."),
    max_elements: int | None = typer.Option(None, help="At most this many distinct elements."),
    min_sites: int | None = typer.Option(None, help="Smallest number of sites/atoms."),
    max_sites: int | None = typer.Option(None, help="Largest number of sites/atoms."),
    limit: int | None = typer.Option(None, help="Keep at most this many items."),
    sample: int | None = typer.Option(None, help="Random sample of this many items."),
    seed: int = typer.Option(0, help="Seed of the random sample."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first unusable row or cell."),
    elements: str | None = typer.Option(
        None, help="Comma-separated elements the items are made of (source substitution: required)."
    ),
    templates: str = typer.Option("mp_formation_energy", help="Source substitution: structures substituted."),
    threshold: float = typer.Option(
        1e-3, help="Source substitution: smallest substitution probability kept."
    ),
    show: int = typer.Option(5, help="Items of the slice listed by name after the statistics."),
    as_json: bool = typer.Option(False, "--json", help="The query's result as one JSON document."),
    workspace: Workspace = None,
) -> None:
    """Filter a source, store the slice in the workspace and print its statistics and first items.

    For a user's file it also prints what reading did: rows read, kept and rejected, and why; for
    ``substitution`` what generation did: candidates generated, rejected and why, deduplicated.
    Bad input (an unknown source, element or property, a range whose minimum exceeds its maximum)
    exits with code 2.
    """
    from matloop.data.slices import load_slice
    from matloop.tools.dataset import query_dataset
    from matloop.workspace import resolve_workspace

    property_ranges = parse_ranges(ranges or [])
    with _tool_errors():
        ws = resolve_workspace(workspace)
        result = query_dataset(
            source,  # type: ignore[arg-type]
            elements=_symbols(elements),
            templates=templates,
            threshold=threshold,
            elements_all=_symbols(elements_all),
            elements_any=_symbols(elements_any),
            elements_none=_symbols(elements_none),
            n_elements=n_elements,
            min_elements=min_elements,
            max_elements=max_elements,
            min_sites=min_sites,
            max_sites=max_sites,
            property_ranges=property_ranges or None,
            limit=limit,
            sample=sample,
            seed=seed,
            path=path,
            strict=strict,
            workspace=ws,
        )
    if as_json:
        print(result.model_dump_json())
        return
    table = Table(
        title=f"{result.slice_id}: {result.count} of {result.source_count} {result.kind}s from {source}"
    )
    for col in ("property", "unit", "count", "mean", "std", "min", "max"):
        table.add_column(col)
    for name, s in result.properties.items():
        table.add_row(
            escape(name),
            escape(s.unit),
            str(s.count),
            *(f"{v:.4g}" if v is not None else "-" for v in (s.mean, s.std, s.min, s.max)),
        )
    console = Console()
    console.print(table)
    if show > 0 and result.count:
        console.print(items_table(load_slice(ws, result.slice_id), show, result.slice_id))
    if result.accounting is not None:
        _print_accounting(console, result.accounting)
    if (g := result.generation) is not None:
        console.print(
            f"generated {g.generated} new candidates from {g.templates} templates "
            f"({g.substitutions} substitutions; rejected {g.rejected}; {g.duplicates} duplicates; "
            f"{g.known_phases} known phases; templates not used {g.templates_rejected})"
        )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return escape(str(value))


def items_table(data: DatasetSlice, limit: int, slice_id: str) -> Table:
    """The first ``limit`` items of a slice: id, formula, source and every property (with its unit)."""
    top = data.subset(data.ids[:limit])
    shown = f"first {len(top)} of {len(data)}" if len(top) < len(data) else f"all {len(data)}"
    table = Table(
        title=f"{escape(slice_id)}: {shown} items (more: matloop data show {escape(slice_id)} --limit N)"
    )
    for col in ("id", "formula", "source"):
        table.add_column(col, no_wrap=True)
    for name in top.properties.columns:
        unit = top.units.get(name, "")
        table.add_column(escape(f"{name} ({unit})" if unit else name), justify="right")
    for item_id, formula, row in zip(
        top.ids, top.formulas(), top.properties.itertuples(index=False), strict=True
    ):
        table.add_row(escape(item_id), escape(formula), escape(top.source), *map(_cell, row))
    return table


@data_app.command("show")
def show_slice(
    slice_id: SliceId,
    limit: int = typer.Option(20, min=1, help="Items shown (the first ones of the slice)."),
    as_json: bool = typer.Option(False, "--json", help="The items as one JSON list (no structures)."),
    workspace: Workspace = None,
) -> None:
    """List a slice's items by name: id, reduced formula, source and property values."""
    from matloop.data.slices import load_slice
    from matloop.workspace import resolve_workspace

    with _tool_errors():
        data = load_slice(resolve_workspace(workspace), slice_id)
    if as_json:
        from matloop.data.export import slice_records

        records = slice_records(data.subset(data.ids[:limit]))
        print(
            json.dumps(
                [{k: v for k, v in r.items() if k != "structure"} | {"source": data.source} for r in records]
            )
        )
        return
    Console().print(items_table(data, limit, slice_id))


@data_app.command("export")
def export(
    slice_id: SliceId,
    fmt: Annotated[
        ExportChoice,
        typer.Option(
            "--format",
            help="csv: one row per item (id, formula, properties, structure as pymatgen JSON); "
            "cif: a folder with one <id>.cif per crystal and labels.csv (ids and properties); "
            "json: a list of {id, formula, structure (pymatgen as_dict), properties}. "
            "The csv and the cif folder read back with `matloop data query table|cif_folder --path OUT`.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="File (csv, json) or new/empty folder (cif) to write.")],
    workspace: Workspace = None,
) -> None:
    """Write a slice's structures and properties to a file or folder other programs read."""
    from matloop.data.export import export_slice
    from matloop.data.slices import load_slice
    from matloop.workspace import resolve_workspace

    with _tool_errors():
        data = load_slice(resolve_workspace(workspace), slice_id)
        path = export_slice(data, fmt.value, out)
    Console().print(
        f"{len(data)} items of {escape(slice_id)} → {escape(str(path))} ({fmt.value})", highlight=False
    )


def _print_accounting(console: Console, acc: ReadAccounting) -> None:
    """Rows read/kept/rejected, the first problems with their reasons, unused columns and notes."""
    cells = f", {acc.bad_cells} value{'s' if acc.bad_cells > 1 else ''} missing" if acc.bad_cells else ""
    table = Table(title=f"rows: {acc.read} read, {acc.kept} kept, {acc.rejected} rejected{cells}")
    table.add_column("problem")
    for line in acc.problems:
        table.add_row(escape(line))
    for header, reason in acc.unused_columns.items():
        table.add_row(escape(f"column {header!r} not used: {reason}"))
    for note in acc.notes:
        table.add_row(escape(note))
    if table.row_count:
        console.print(table)
        console.print(f"every problem: {escape(str(acc.report_file))} (in the workspace)")
    else:
        console.print(escape(str(table.title)))
