"""``python -m matloop``: the ``matloop`` command."""

from matloop.cli import app

app(prog_name="matloop")
