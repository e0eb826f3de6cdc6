"""``matloop model``: train a UQ-GNN (with a progress bar), predict, fine-tune."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from matloop.errors import MatloopError
from matloop.names import BACKBONES

model_app = typer.Typer(help="GNN surrogate models with uncertainty.", no_args_is_help=True)
T = TypeVar("T")
Workspace = Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace directory.")]


def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a tool with a per-epoch progress bar; tool errors become a one-line message."""
    from matloop.models.training import EpochLog

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("training", total=None, info="")

        def progress(e: EpochLog) -> None:
            bar.update(
                task,
                description=f"member {e.member + 1}/{e.n_members}",
                total=e.max_epochs,
                completed=e.epoch,
                info=f"train {e.train_loss:.3f} val {e.val_loss:.3f} best@{e.best_epoch}",
            )

        try:
            return fn(*args, progress=progress, **kwargs)
        except MatloopError as exc:
            raise typer.BadParameter(str(exc)) from None


@model_app.command("train")
def train_command(
    feature_set_id: str,
    target: str,
    method: Annotated[str, typer.Option(help="ensemble, mc_dropout, evidential or gp.")] = "ensemble",
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per network.")] = None,
    seed: int = 0,
    backbone: Annotated[str, typer.Option(help=f"auto or one of {', '.join(BACKBONES)}.")] = "gnn",
    trainable_blocks: Annotated[
        str,
        typer.Option(
            help="With --backbone chgnet (sevennet_0) and --method ensemble, mc_dropout or gp: 1-4 (1-5) or "
            "'all' fine-tunes the pretrained network under that head; 0 keeps it frozen."
        ),
    ] = "0",
    workspace: Workspace = None,
) -> None:
    """Train a surrogate with uncertainty on TARGET of a feature set."""
    from matloop.tools.train import train_uq_gnn

    blocks: int | str = int(trainable_blocks) if trainable_blocks.isdigit() else trainable_blocks
    res = _run(
        train_uq_gnn,
        feature_set_id,
        target,
        method,
        epochs,
        seed,
        backbone=backbone,
        trainable_blocks=blocks,
        workspace=workspace,
    )
    Console().print(
        f"[bold]{res.model_id}[/bold] {res.method} on {res.target} ({res.unit}): "
        f"{res.n_train}/{res.n_val}/{res.n_test} train/val/test, {res.n_skipped} skipped, "
        f"{res.seconds:.1f} s, checkpoint {res.checkpoint_mb:.2f} MB\n"
        + "  ".join(f"{k} {v:.4g}" for k, v in res.metrics.model_dump().items())
    )


@model_app.command("fine-tune")
def fine_tune_command(
    model_id: str,
    feature_set_id: str,
    target: Annotated[str | None, typer.Option(help="Property (default: the model's).")] = None,
    freeze_backbone: Annotated[bool, typer.Option(help="Train only the head.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per network.")] = None,
    seed: int = 0,
    workspace: Workspace = None,
) -> None:
    """Fine-tune MODEL_ID on the labels of a feature set; saves a new model."""
    from matloop.tools.train import fine_tune

    res = _run(
        fine_tune, model_id, feature_set_id, target, freeze_backbone, epochs, seed, workspace=workspace
    )
    before, after = res.metrics_before.model_dump(), res.metrics_after.model_dump()
    Console().print(
        f"[bold]{res.model_id}[/bold] from {res.parent_model_id} on {res.target} ({res.unit})\n"
        + "  ".join(f"{k} {before[k]:.4g}→{after[k]:.4g}" for k in ("mae", "rmse", "miscalibration_area"))
    )


@model_app.command("predict")
def predict_command(
    model_id: str,
    feature_set_id: str,
    workspace: Workspace = None,
) -> None:
    """Summarise a model's predictions (mean, σ) over a feature set."""
    from matloop.tools.train import predict

    try:
        res = predict(model_id, feature_set_id, workspace=workspace)
    except MatloopError as exc:
        raise typer.BadParameter(str(exc)) from None
    table = Table(title=f"{res.model_id}: {res.target} ({res.unit}), {res.count} items")
    for col in ("item", "mean", "σ"):
        table.add_column(col)
    for item in res.lowest + res.highest:
        table.add_row(escape(item.item_id), f"{item.mean:.4g}", f"{item.std:.4g}")
    Console().print(table)


@model_app.command("backbones")
def backbones(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of the table.")] = False,
) -> None:
    """List what a campaign spec's `model.backbone` accepts, with the `model.method` values each takes."""
    from matloop.models.catalog import available_backbones

    infos = available_backbones()
    if as_json:
        print(json.dumps([info.model_dump() for info in infos]))
        return
    table = Table(title="model.backbone values (campaign spec)")
    for col in ("backbone", "kind", "model.method", "options", "description", "status"):
        table.add_column(col)
    for info in infos:
        cells = (info.name, info.kind, ", ".join(info.methods), info.options, info.description, info.status)
        table.add_row(*map(escape, cells))
    Console().print(table)
