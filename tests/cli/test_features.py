"""``matloop data pool`` and ``matloop data featurize``."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from matloop.cli import app


def test_pool_then_featurize_twice_uses_the_cache(settings):
    runner = CliRunner()
    env = {"COLUMNS": "200"}
    pool = runner.invoke(app, ["data", "pool", "--families", "rocksalt", "--max-items", "12"], env=env)
    assert pool.exit_code == 0, pool.output
    slice_id = re.search(r"(slice-\w+): 12 candidates \(12 rocksalt\)", pool.output).group(1)
    first = runner.invoke(app, ["data", "featurize", slice_id], env=env)
    assert first.exit_code == 0, first.output
    assert "12 graphs, 0 skipped, 0 from cache" in first.output
    second = runner.invoke(app, ["data", "featurize", slice_id], env=env)
    assert "12 from cache" in second.output


def test_bad_arguments_exit_with_the_message(settings):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "pool", "--families", "spinel"])
    assert result.exit_code == 1 and "perovskite" in result.output
    result = runner.invoke(app, ["data", "featurize", "slice-missing"])
    assert result.exit_code == 1 and "expected a known slice id" in result.output
