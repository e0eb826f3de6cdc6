"""``matloop benchmark``: simulated active-learning campaigns on labelled datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from matloop.errors import MatloopError

benchmark_app = typer.Typer(help="Benchmarks: active learning against random sampling.", no_args_is_help=True)


def _window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise typer.BadParameter(f"expected lo,hi (two numbers), got {text!r}")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise typer.BadParameter(f"expected lo,hi (two numbers), got {text!r}") from None


def _seeds(text: str) -> int | list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected a count or seeds such as 11,12,13, got {text!r}") from None
    return values[0] if len(values) == 1 and "," not in text else values


@benchmark_app.command("al")
def active_learning(
    dataset: str = typer.Option("qm9", help="Dataset source (see `matloop data list`)."),
    target: str = typer.Option("gap", help="Property to learn."),
    strategies: str = typer.Option(
        "entropy,batch_entropy,max_std,random", help="Comma-separated strategies."
    ),
    init: int = typer.Option(100, help="Initial labelled items (shared by all strategies)."),
    batch: int = typer.Option(25, help="Items acquired per round."),
    rounds: int = typer.Option(20, help="Acquisition rounds."),
    seeds: str = typer.Option(
        "3", help="Seeds (initial sets and model seeds): a count N (0..N-1) or 11,12,13."
    ),
    pool: int = typer.Option(3000, help="Selectable pool size."),
    test: int = typer.Option(1000, help="Fixed test-set size (never selectable)."),
    method: str = typer.Option("ensemble", help="UQ method: ensemble, mc_dropout, evidential, gp."),
    backbone: str = typer.Option(
        "auto", help="Surrogate backbone: auto, gnn, chgnet, sevennet_0, magpie, chgnet+magpie."
    ),
    ensemble_size: int = typer.Option(3, help="Members of a deep ensemble."),
    hidden: int = typer.Option(64, help="GNN width."),
    epochs: int = typer.Option(100, help="Maximum epochs when training from scratch."),
    finetune_epochs: int = typer.Option(30, help="Maximum epochs of each warm-start fine-tune."),
    patience: int = typer.Option(10, help="Early-stopping patience in epochs."),
    warm_start: bool = typer.Option(
        False, "--warm-start", help="Fine-tune the previous round's model instead of retraining."
    ),
    goal: str = typer.Option(
        "learn", help="learn, window, minimize or maximize (the campaign's goal; minimise/maximise work too)."
    ),
    window: str | None = typer.Option(None, help="lo,hi target window (goal window; also counts hits)."),
    data_seed: int = typer.Option(0, help="Seed of the pool/test split."),
    out: str | None = typer.Option(None, help="Output directory (default al-<dataset>-<target>)."),
) -> None:
    """Pool-based active learning vs random sampling, run as campaigns with the rules planner at
    level lookup: JSON + PNG learning curves, resumable."""
    from matloop.active_learning.harness import ALConfig, load_dataset, run_simulation

    console = Console()
    out_dir = Path(out or f"al-{dataset}-{target}")
    config = ALConfig(
        strategies=[s.strip() for s in strategies.split(",") if s.strip()],
        init=init,
        batch=batch,
        rounds=rounds,
        seeds=_seeds(seeds),
        goal=goal,  # type: ignore[arg-type]
        window=_window(window),
        model={
            "method": method,
            "backbone": backbone,
            "epochs": epochs,
            "finetune_epochs": finetune_epochs,
            "patience": patience,
            "warm_start": warm_start,
            "hidden": hidden,
            "ensemble_size": ensemble_size,
            "test_fraction": 0.0,
        },
    )
    logging.getLogger("matloop").setLevel(logging.WARNING)
    try:
        with console.status(f"loading {dataset} and building graphs"):
            data = load_dataset(dataset, target, pool_size=pool, test_size=test, data_seed=data_seed)
        config.validate(data)
        total = len(config.strategies) * len(config.seed_list) * (config.rounds + 1)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("active learning", total=total)

            def progress(strategy: str, seed: int, r: int, record: dict[str, Any]) -> None:
                mae = (record["test"] or record["transductive"] or {}).get("mae", float("nan"))
                bar.update(
                    task,
                    advance=1,
                    description=f"{strategy} seed {seed} round {r}: {record['n_labels']} labels, "
                    f"MAE {mae:.4g}",
                )

            summary = run_simulation(data, config, out_dir, progress=progress)
    except MatloopError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    print_summary(console, summary)
    console.print(escape(f"results: {out_dir / 'summary.json'}, {out_dir / 'learning_curve.png'}"))


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """Headline table: labels to reach random's final test MAE, ratio with its interval, AULC,
    final MAE; hits, recall, enhancement and acceleration for discovery."""
    unit = summary.get("unit", "")
    table = Table(title=f"{summary.get('dataset', '')}: strategies vs random sampling")
    columns = (
        "strategy",
        "labels",
        "ratio (90% CI)",
        "AULC ratio",
        f"final MAE ({unit})",
        "hits",
        "recall",
        "EF",
        "AF",
    )
    for col in columns:
        table.add_column(col)

    def fmt(v: float | None, spec: str = ".3g") -> str:
        return "–" if v is None else format(v, spec)

    for strategy, h in summary["headline"].items():
        t, d = h.get("test") or {}, h.get("discovery") or {}
        ci = t.get("labels_ratio_ci90") or [None, None]
        table.add_row(
            strategy,
            fmt(t.get("labels_to_reach_random_final"), ".0f"),
            f"{fmt(t.get('labels_ratio'))} ({fmt(ci[0])}–{fmt(ci[1])})" if t else "–",
            fmt(t.get("aulc_ratio")),
            f"{t['final_mae_mean']:.4g} ± {t['final_mae_std']:.2g}" if t else "–",
            fmt(d.get("hits_mean"), ".1f"),
            fmt(d.get("recall"), ".2f"),
            fmt(d.get("enhancement_factor"), ".2f"),
            fmt(d.get("acceleration_factor"), ".2f"),
        )
    console.print(table)
