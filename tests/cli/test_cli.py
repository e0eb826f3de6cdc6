"""The ``matloop`` command as a whole."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from matloop.cli import app


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"matloop {version('matloop')}"
