from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from matloop.active_learning import ALConfig, labels_to_reach, load_dataset, run_simulation, summarise
from matloop.cli import app
from matloop.errors import ToolInputError


@pytest.fixture
def data(settings):
    return load_dataset("mp_dielectric", "band_gap", pool_size=30, test_size=10, settings=settings)


def _config(**kw) -> ALConfig:
    base = dict(
        strategies=["batch_entropy", "random"],
        init=6,
        batch=3,
        rounds=2,
        seeds=1,
        epochs=3,
        finetune_epochs=2,
        patience=2,
        window=(1.0, 3.0),
        model_options={"ensemble_size": 2, "hidden": 16},
    )
    return ALConfig(**(base | kw))


def test_simulation_writes_curves_and_resumes_without_redoing_rounds(data, tmp_path):
    seen: list[tuple[str, int, int]] = []

    def progress(strategy, seed, r, record):
        seen.append((strategy, seed, r))

    summary = run_simulation(data, _config(), tmp_path, progress=progress)
    assert len(seen) == 6
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    for strategy in ("batch_entropy", "random"):
        curve = saved["curves"][strategy]
        assert curve["labels"] == [6, 9, 12]
        assert len(curve["mae_mean"]) == 3 and all(m > 0 for m in curve["mae_mean"])
        assert len(curve["hits_mean"]) == 3
        assert saved["headline"][strategy]["aulc"] > 0
    assert saved["headline"]["random"]["ratio_to_random"] == pytest.approx(1.0)
    test_ids = {data.ids[i] for i in data.test}
    run_dir = tmp_path / "batch_entropy" / "seed_0"
    rounds = [json.loads(p.read_text()) for p in sorted(run_dir.glob("round_*"))]
    chosen = [i for r in rounds for i in r["selected_ids"]]
    assert len(chosen) == len(set(chosen)) == 6 and not set(chosen) & test_ids
    assert not set(chosen) & set(rounds[0]["labelled_ids"])
    first_random = json.loads((tmp_path / "random" / "seed_0" / "round_000.json").read_text())
    assert first_random["labelled_ids"] == rounds[0]["labelled_ids"]  # same initial set

    # Interrupted after round 1 of one strategy: only round 2 of that strategy runs again.
    (tmp_path / "random" / "seed_0" / "round_002.json").unlink()
    seen.clear()
    again = run_simulation(data, _config(), tmp_path, progress=progress)
    assert seen == [("random", 0, 2)]
    assert again["curves"]["batch_entropy"] == summary["curves"]["batch_entropy"]
    seen.clear()
    run_simulation(data, _config(), tmp_path, progress=progress)
    assert seen == []

    # Round states made with other settings are never mixed in; nothing is recomputed or lost.
    n_files = len(list(tmp_path.rglob("round_*.json")))
    with pytest.raises(ToolInputError, match=r"differ in \['batch'\]"):
        run_simulation(data, _config(batch=2), tmp_path, progress=progress)
    assert seen == [] and len(list(tmp_path.rglob("round_*.json"))) == n_files


def test_config_is_validated(data, tmp_path):
    with pytest.raises(ToolInputError, match="valid values are"):
        run_simulation(data, _config(strategies=["entropy", "psychic"]), tmp_path)
    with pytest.raises(ToolInputError, match="pool size 30"):
        run_simulation(data, _config(init=20, batch=10), tmp_path)
    with pytest.raises(ToolInputError, match="window"):
        run_simulation(data, _config(strategies=["in_window"], window=None), tmp_path)


def test_headline_labels_to_reach_random_final_mae():
    assert labels_to_reach(np.array([10, 20, 30]), np.array([1.0, 0.6, 0.4]), 0.8) == pytest.approx(15.0)
    assert labels_to_reach(np.array([10, 20]), np.array([1.0, 0.9]), 0.5) is None

    def run(maes):
        test = [{"mae": m, "nll": 0.0, "spearman_err_std": 0.0} for m in maes]
        labels = (10, 20, 30)
        pairs = zip(labels, test, strict=True)
        return [{"n_labels": n, "test": t, "hits": None, "seconds": 1} for n, t in pairs]

    out = summarise({"random": {0: run([1.0, 0.8, 0.6])}, "entropy": {0: run([1.0, 0.6, 0.5])}})
    assert out["headline"]["random"]["labels_to_reach_random_final"] == pytest.approx(30)
    assert out["headline"]["entropy"]["labels_to_reach_random_final"] == pytest.approx(20)
    assert out["headline"]["entropy"]["ratio_to_random"] == pytest.approx(2 / 3)
    assert out["headline"]["entropy"]["acquired_ratio_to_random"] == pytest.approx(0.5)
    assert out["headline"]["entropy"]["aulc_ratio_to_random"] < 1


def test_cli_runs_a_small_simulation_on_a_bundled_crystal_set(settings, tmp_path):
    out = tmp_path / "al"
    args = ["benchmark", "al", "--dataset", "mp_dielectric", "--target", "band_gap", "--strategies",
            "entropy,random", "--init", "8", "--batch", "4", "--rounds", "1", "--seeds", "1", "--pool",
            "20", "--test", "10", "--ensemble-size", "2", "--hidden", "16", "--epochs", "2",
            "--finetune-epochs", "2", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "labels to reach random" in result.output
    assert json.loads((out / "summary.json").read_text())["curves"]["entropy"]["labels"] == [8, 12]
    bad = CliRunner().invoke(app, [*args[:7], "maxvar", "--out", str(out)])
    assert bad.exit_code == 1 and "valid values are" in bad.output
