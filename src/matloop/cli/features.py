"""``matloop data featurize`` and ``matloop data pool``: graphs of a slice, prototype candidate pools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from matloop.errors import MatloopError

WorkspaceOption = Annotated[Path | None, typer.Option(help="Workspace directory (default from settings).")]


def featurize_command(
    slice_id: Annotated[str, typer.Argument(help="Slice id from `matloop data query`.")],
    cutoff: Annotated[float | None, typer.Option(help="Neighbour cut-off radius in Å.")] = None,
    max_neighbors: Annotated[int | None, typer.Option(help="Nearest neighbours kept per atom.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Build (or fetch from the cache) the graphs of a slice, with a progress bar."""
    from matloop.tools.featurize import featurize

    columns = (TextColumn("featurizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task("featurize", total=None)
            result = featurize(
                slice_id,
                cutoff=cutoff,
                max_neighbors=max_neighbors,
                workspace=workspace,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except MatloopError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    console = Console()
    console.print(
        f"[bold]{result.feature_set_id}[/bold]: {result.count} graphs, {result.n_failed} skipped, "
        f"{result.cache_hits} from cache, node_dim {result.node_dim}, edge_dim {result.edge_dim}, "
        f"{result.mean_edges_per_atom:.1f} edges/atom, {result.seconds:.1f} s"
    )
    if result.failures:
        table = Table(title="skipped items")
        table.add_column("id")
        table.add_column("reason")
        for failure in result.failures:
            table.add_row(escape(failure.item_id), escape(failure.reason))
        console.print(table)


def pool_command(
    families: Annotated[
        str, typer.Option(help="Comma-separated prototype families.")
    ] = "perovskite,rocksalt,zincblende,wurtzite,fluorite",
    elements: Annotated[str | None, typer.Option(help="Comma-separated allowed elements.")] = None,
    max_items: Annotated[int | None, typer.Option(help="Subsample to at most this many.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subsample.")] = 0,
    workspace: WorkspaceOption = None,
) -> None:
    """Build a charge-balanced prototype candidate pool and store it as a slice."""
    from matloop.data.prototypes import build_prototype_pool
    from matloop.data.slices import save_slice
    from matloop.workspace import resolve_workspace

    def split(text: str) -> list[str]:
        return [s.strip() for s in text.split(",") if s.strip()]

    try:
        pool = build_prototype_pool(
            families=split(families),  # type: ignore[arg-type]
            elements=split(elements) if elements else None,
            max_items=max_items,
            seed=seed,
        )
        slice_id = save_slice(resolve_workspace(workspace), pool)
    except MatloopError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    counts: dict[str, int] = {}
    for item_id in pool.ids:
        family = item_id.split("-", 1)[0]
        counts[family] = counts.get(family, 0) + 1
    summary = ", ".join(f"{n} {family}" for family, n in counts.items())
    Console().print(f"[bold]{slice_id}[/bold]: {len(pool)} candidates ({escape(summary or 'none')})")
