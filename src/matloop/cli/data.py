"""``matloop data``: the datasets matloop can read."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(help="Datasets: list sources, query slices.", no_args_is_help=True)


@data_app.command("list")
def list_sources() -> None:
    """List the dataset sources with their size, properties and units."""
    from matloop.data.sources import available_sources

    table = Table(title="matloop dataset sources")
    for col in ("source", "kind", "items", "properties", "status"):
        table.add_column(col)
    for info in available_sources():
        table.add_row(info.name, info.kind, str(info.count or "-"), ", ".join(info.properties), info.status)
    Console().print(table)
