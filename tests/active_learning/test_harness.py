from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from matloop.active_learning.harness import ALConfig, load_dataset, run_simulation
from matloop.active_learning.summary import (
    expected_random_labels,
    labels_to_reach,
    stable_classifier,
    summarise,
)
from matloop.agent.campaign import run_campaign
from matloop.agent.state import CampaignState
from matloop.cli import app
from matloop.data.slices import save_slice
from matloop.errors import ToolInputError
from matloop.models.model import load_checkpoint
from matloop.workspace import Workspace

MODEL = {"ensemble_size": 2, "hidden": 16, "epochs": 3, "patience": 2, "test_fraction": 0.0}


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
        window=(1.0, 3.0),
        model=MODEL,
    )
    return ALConfig(**(base | kw))


def _done_steps(root) -> int:
    lines = (root / "decisions.jsonl").read_text().splitlines()
    return sum(json.loads(line)["phase"] == "done" for line in lines)


def test_simulation_runs_campaigns_writes_curves_and_resumes_without_redoing_work(data, tmp_path):
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
        assert len(curve["test"]["mae_mean"]) == 3 and all(m > 0 for m in curve["test"]["mae_mean"])
        assert len(curve["transductive"]["mae_mean"]) == 3 and len(curve["hits_mean"]) == 3
        assert saved["headline"][strategy]["test"]["aulc_ratio"] > 0
    assert saved["headline"]["random"]["test"]["labels_ratio"] == pytest.approx(1.0)

    test_ids = {data.ids[i] for i in data.test}
    state = CampaignState(Workspace(tmp_path / "batch_entropy" / "seed_0"))
    labels = state.labels("band_gap", "lookup")
    assert len(labels) == 12 and not {lb["item_id"] for lb in labels} & test_ids
    seeds_of = {
        s: {
            lb["item_id"]
            for lb in CampaignState(Workspace(tmp_path / s / "seed_0")).labels()
            if lb["round"] == 0
        }
        for s in ("batch_entropy", "random")
    }
    assert seeds_of["batch_entropy"] == seeds_of["random"]  # one initial set per seed
    picked = [c["item_id"] for c in state.candidates() if c["round"] > 0]
    assert len(picked) == len(set(picked)) == 6 and not set(picked) & seeds_of["random"]

    # A rerun resumes the finished campaigns: no tool runs again and the figures are unchanged.
    root = tmp_path / "random" / "seed_0"
    steps = _done_steps(root)
    seen.clear()
    again = run_simulation(data, _config(), tmp_path, progress=progress)
    assert _done_steps(root) == steps
    assert again["curves"]["batch_entropy"]["test"] == summary["curves"]["batch_entropy"]["test"]

    # Campaigns made with other settings are never mixed in; nothing is recomputed or lost.
    with pytest.raises(ToolInputError, match=r"differ in \['batch'\]"):
        run_simulation(data, _config(batch=2), tmp_path, progress=progress)
    assert _done_steps(root) == steps


def test_an_interrupted_campaign_stops_the_simulation_and_a_rerun_completes_it(data, tmp_path, monkeypatch):
    from matloop.agent.rules import RulesPlanner
    from matloop.errors import CampaignStop, Interrupted

    select = RulesPlanner._select

    def interrupted_in_round_2(self, campaign, rnd, *args):
        if rnd == 2:
            raise Interrupted("SIGTERM")
        return select(self, campaign, rnd, *args)

    monkeypatch.setattr(RulesPlanner, "_select", interrupted_in_round_2)
    config = _config(strategies=["random"])
    with pytest.raises(CampaignStop, match=r"random seed 0: campaign stopped \(interrupted by SIGTERM"):
        run_simulation(data, config, tmp_path)  # never a summary of a cut curve
    assert not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(RulesPlanner, "_select", select)
    summary = run_simulation(data, config, tmp_path)
    assert summary["curves"]["random"]["labels"] == [6, 9, 12]


def test_config_is_validated(data, tmp_path):
    with pytest.raises(ToolInputError, match="valid values are"):
        run_simulation(data, _config(strategies=["entropy", "psychic"]), tmp_path)
    with pytest.raises(ToolInputError, match="pool size 30"):
        run_simulation(data, _config(init=20, batch=10), tmp_path)
    with pytest.raises(ToolInputError, match="window"):
        run_simulation(data, _config(strategies=["in_window"], window=None), tmp_path)
    with pytest.raises(ToolInputError, match="patience"):
        run_simulation(data, _config(model={"patience": 0}), tmp_path)


def test_headline_learning_figures():
    assert labels_to_reach(np.array([10, 20, 30]), np.array([1.0, 0.6, 0.4]), 0.8) == pytest.approx(15.0)
    assert labels_to_reach(np.array([10, 20]), np.array([1.0, 0.9]), 0.5) is None

    def run(maes):
        labels = (10, 20, 30)
        return [
            {"n_labels": n, "test": {"mae": m}, "transductive": None, "hits": None, "seconds": {}}
            for n, m in zip(labels, maes, strict=True)
        ]

    out = summarise({"random": {0: run([1.0, 0.8, 0.6])}, "entropy": {0: run([1.0, 0.6, 0.5])}})
    head = out["headline"]["entropy"]["test"]
    assert out["headline"]["random"]["test"]["labels_to_reach_random_final"] == pytest.approx(30)
    assert head["labels_to_reach_random_final"] == pytest.approx(20)
    assert head["labels_ratio"] == pytest.approx(2 / 3) and head["labels_ratio_ci90"] == [
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
    ]
    assert head["aulc_ratio"] < 1


def test_headline_discovery_figures():
    # 2 targets among 9 items: random needs h·10/3 labels in expectation for h hits
    assert expected_random_labels(1, 2, 9) == pytest.approx(10 / 3)
    assert expected_random_labels(2, 2, 9) == pytest.approx(20 / 3)

    def run(hits):
        return [
            {"n_labels": n, "test": None, "transductive": None, "hits": h, "seconds": {}}
            for n, h in zip((2, 4, 6), hits, strict=True)
        ]

    records = {"random": {0: run([0, 0, 1]), 1: run([0, 1, 1])}, "ei": {0: run([0, 2, 2]), 1: run([1, 1, 2])}}
    out = summarise(records, hits_total=2, pool_size=9)
    d = out["headline"]["ei"]["discovery"]
    assert d["hits_mean"] == 2 and d["recall"] == 1.0 and d["enhancement_factor"] == pytest.approx(2.0)
    # seed 0 reached 2 hits at 4 labels, seed 1 at 6: AF = mean(20/3/4, 20/3/6)
    assert d["acceleration_factor"] == pytest.approx((20 / 3 / 4 + 20 / 3 / 6) / 2)
    # random: 1 hit, reached at 6 labels (seed 0) and at 4 labels (seed 1)
    assert out["headline"]["random"]["discovery"]["acceleration_factor"] == pytest.approx(
        (10 / 3 / 6 + 10 / 3 / 4) / 2
    )


def test_stable_classifier_scores_as_matbench_discovery():
    """10 crystals, 4 stable (prevalence 0.4); the model calls 5 stable, 3 of them rightly:
    precision 3/5, recall 3/4, F1 2·0.6·0.75/1.35 = 2/3, DAF 0.6/0.4 = 1.5."""
    true = np.array([-0.1, 0.0, -0.02, -0.3, 0.1, 0.2, 0.05, 0.3, 0.4, 0.5])
    predicted = np.array([-0.2, 0.01, -0.05, -0.1, -0.01, 0.0, 0.2, 0.3, 0.4, 0.5])
    scores = stable_classifier(predicted, true)
    assert scores["n"] == 10 and scores["prevalence"] == pytest.approx(0.4)
    assert (scores["precision"], scores["recall"]) == (pytest.approx(0.6), pytest.approx(0.75))
    assert scores["f1"] == pytest.approx(2 / 3) and scores["daf"] == pytest.approx(1.5)
    nothing = stable_classifier(np.ones(4), np.array([-1.0, 1.0, 1.0, 1.0]))
    assert (nothing["precision"], nothing["recall"], nothing["f1"], nothing["daf"]) == (0, 0, 0, 0)
    within = stable_classifier(predicted, true, threshold=0.025)  # near-stable counts
    assert within["prevalence"] == pytest.approx(0.4) and within["precision"] == pytest.approx(4 / 6)


def test_benchmark_and_a_lookup_campaign_pick_the_same_items(settings, tmp_path):
    """One engine: `matloop benchmark al` and a user's lookup campaign on the same pool, same
    seed and settings, pick exactly the same items in the same order for 3 rounds."""
    out = tmp_path / "al"
    args = ["benchmark", "al", "--dataset", "mp_dielectric", "--target", "band_gap", "--strategies",
            "batch_entropy", "--init", "8", "--batch", "4", "--rounds", "3", "--seeds", "1",
            "--pool", "40", "--test", "10", "--ensemble-size", "2", "--hidden", "16", "--epochs", "4",
            "--patience", "3", "--backbone", "gnn", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "strategies vs random sampling" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["curves"]["batch_entropy"]["labels"] == [8, 12, 16, 20]

    bench = CampaignState(Workspace(out / "batch_entropy" / "seed_0"))
    data = load_dataset("mp_dielectric", "band_gap", pool_size=40, test_size=10, settings=settings)
    root = tmp_path / "campaign"
    save_slice(Workspace(root), data.pool_slice(), slice_id="my-pool")
    spec = {
        "name": "user",
        "pool": {"slice_id": "my-pool"},
        "target": {"property": "band_gap"},
        "level": "lookup",
        "model": {"method": "ensemble", "backbone": "gnn", "epochs": 4, "finetune_epochs": 30,
                  "patience": 3, "ensemble_size": 2, "hidden": 16, "test_fraction": 0.0},
        "strategy": "batch_entropy",
        "seed_size": 8,
        "batch_size": 4,
        "rounds": 3,
        "budget": {"calculations": 20, "llm_tokens": 0},
        "audit": "off",
        "planner": "rules",
    }  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    campaign = run_campaign(tmp_path / "spec.yaml", root)

    def picks(state: CampaignState) -> list[list[str]]:
        rows = state.candidates()
        return [[c["item_id"] for c in rows if c["round"] == r] for r in (1, 2, 3)]

    assert picks(campaign.state) == picks(bench) and all(len(p) == 4 for p in picks(bench))

    # every option reaches the training code: the models record the patience they ran with
    models = [load_checkpoint(p) for p in sorted((out / "batch_entropy" / "seed_0").rglob("*.pt"))]
    assert models and all(m.meta["options"]["patience"] == 3 for m in models)
    assert {m.meta["options"]["epochs"] for m in models} == {4}

    bad = CliRunner().invoke(app, [*args[:7], "maxvar", "--out", str(out)])
    assert bad.exit_code == 1 and "valid values are" in bad.output
    bad = CliRunner().invoke(app, [*args[:-2], "--backbone", "mace", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 1 and "invalid model settings" in bad.output and "backbone" in bad.output


def test_explicit_seed_lists_and_a_data_seed_run_exactly_those(settings, tmp_path):
    """``--seeds 11,12 --data-seed 7``: campaigns for seeds 11 and 12 on the split of seed 7."""
    out = tmp_path / "al"
    args = ["benchmark", "al", "--dataset", "mp_dielectric", "--target", "band_gap", "--strategies",
            "random", "--init", "4", "--batch", "2", "--rounds", "1", "--seeds", "11,12", "--data-seed",
            "7", "--pool", "20", "--test", "6", "--ensemble-size", "2", "--hidden", "8", "--epochs", "2",
            "--patience", "2", "--backbone", "gnn", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "random").iterdir()) == ["seed_11", "seed_12"]
    assert json.loads((out / "summary.json").read_text())["curves"]["random"]["seeds"] == [11, 12]
    split_7 = load_dataset(
        "mp_dielectric", "band_gap", pool_size=20, test_size=6, data_seed=7, settings=settings
    )
    split_0 = load_dataset(
        "mp_dielectric", "band_gap", pool_size=20, test_size=6, data_seed=0, settings=settings
    )
    assert (
        json.loads((out / "settings.json").read_text())["split"]
        == split_7.split_hash()
        != split_0.split_hash()
    )
    with pytest.raises(ToolInputError, match="expected seeds: a count ≥ 1 or distinct seeds, got"):
        _config(seeds=[3, 3]).validate(split_7)


def test_round_seconds_leave_out_the_time_no_process_ran_the_campaign():
    from matloop.active_learning.harness import _round_seconds

    def record(second, rnd, phase, step, **result):
        return {"time": f"2026-01-01T00:00:{second:02d}+00:00", "round": rnd, "phase": phase,
                "step": step, "result": result or None}  # fmt: skip

    records = [
        record(0, 0, "note", 1, run="started"),
        record(1, 1, "planned", 2),
        record(4, 1, "done", 2),
        record(5, 1, "planned", 3),  # killed while this tool ran; resumed 40 s later
        record(45, 0, "note", 4, run="resumed"),
        record(46, 1, "planned", 5),
        record(50, 1, "done", 5),
    ]
    seconds = _round_seconds(records)
    assert seconds[1] == {"wall": 1 + 3 + 1 + 1 + 4, "tools": 3 + 4}
    assert seconds[0] == {"wall": 0.0, "tools": 0.0}
