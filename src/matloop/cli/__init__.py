"""The ``matloop`` command: one sub-command group per area, each in its own module."""

from __future__ import annotations

import typer

from matloop.cli.benchmark import benchmark_app
from matloop.cli.campaign import ask_command, campaign_app, set_debug
from matloop.cli.data import data_app
from matloop.cli.features import featurize_command, pool_command
from matloop.cli.model import model_app

app = typer.Typer(
    name="matloop",
    help="Autonomous, uncertainty-driven materials-discovery campaigns.",
    no_args_is_help=True,
    add_completion=False,
)
app.callback()(set_debug)
data_app.command("featurize")(featurize_command)
data_app.command("pool")(pool_command)
app.add_typer(data_app, name="data")
app.add_typer(campaign_app, name="campaign")
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(model_app, name="model")
app.command("ask")(ask_command)
