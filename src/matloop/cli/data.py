"""``matloop data``: the datasets matloop can read."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from matloop.errors import MatloopError

if TYPE_CHECKING:
    from matloop.tools.dataset import ReadAccounting

data_app = typer.Typer(help="Datasets: list sources, query slices.", no_args_is_help=True)


def _symbols(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


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
    workspace: str | None = typer.Option(None, help="Workspace directory (default from settings)."),
) -> None:
    """Filter a source, store the slice in the workspace and print its statistics.

    For a user's file it also prints what reading did: rows read, kept and rejected, and why; for
    ``substitution`` what generation did: candidates generated, rejected and why, deduplicated.
    """
    from matloop.tools.dataset import query_dataset

    try:
        result = query_dataset(
            source,  # type: ignore[arg-type]
            elements=_symbols(elements),
            templates=templates,
            threshold=threshold,
            elements_all=_symbols(elements_all),
            elements_any=_symbols(elements_any),
            elements_none=_symbols(elements_none),
            max_sites=max_sites,
            limit=limit,
            sample=sample,
            seed=seed,
            path=path,
            strict=strict,
            workspace=workspace,
        )
    except MatloopError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
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
    if result.accounting is not None:
        _print_accounting(console, result.accounting)
    if (g := result.generation) is not None:
        console.print(
            f"generated {g.generated} new candidates from {g.templates} templates "
            f"({g.substitutions} substitutions; rejected {g.rejected}; {g.duplicates} duplicates; "
            f"{g.known_phases} known phases; templates not used {g.templates_rejected})"
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
