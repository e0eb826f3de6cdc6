"""The campaign report of real campaigns at level ``lookup``: provenance, formulas, the model's
kind, equal parity axes, integer label ticks, and what it says when there is not enough data yet."""

from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from matloop.agent.campaign import Campaign, CampaignSpec, run_campaign
from matloop.agent.report import (
    learning_curve_figure,
    parity_figure,
    prospective_pairs,
    render_report,
    write_report,
)

FIXTURES = Path(__file__).parent / "fixtures" / "schema_v1"


def _spec(max_steps: int = 200) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "name": "report",
            "planner": "rules",
            "pool": {"source": "mp_formation_energy", "max_items": 80},
            "target": {"property": "formation_energy_per_atom", "goal": "window", "window": [None, -2.0]},
            "level": "lookup",
            "model": {"backbone": "magpie", "ensemble_size": 2, "cheap_level": "none"},
            "seed_size": 6,
            "batch_size": 4,
            "rounds": 2,
            "budget": {"calculations": 30, "cpu_hours": 10, "llm_tokens": 0},
            "audit": {"min_items": 6, "fraction": 0.2},
            "max_steps": max_steps,
        }
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Campaign]:
    """A finished campaign, and one stopped right after round 0 (its seed and first audit labels
    in, no model yet), sharing one cache."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MATLOOP_CACHE_DIR", str(root / "cache"))
        mp.setenv("MATLOOP_WORKSPACE", str(root / "ws"))
        return {
            "finished": run_campaign(_spec(), root / "finished"),
            "round 0": run_campaign(_spec(max_steps=6), root / "round0"),
        }


def _text(html: str) -> str:
    """The page without its inlined images (base64 may spell anything)."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def _no_nan(html: str) -> None:
    assert not re.search(r"\bnan\b", _text(html), re.IGNORECASE)


def _rows(html: str, *header: str) -> list[list[str]]:
    """The cells of the table with this header row."""
    head = "".join(f"<th>{h}</th>" for h in header)
    table = re.search(rf"<table><tr>{re.escape(head)}</tr>.*?</table>", html, re.S)
    assert table is not None, header
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table.group(0))][1:]


def test_a_finished_report_gives_provenance_formulas_and_the_models_kind(runs):
    campaign = runs["finished"]
    html = (campaign.ws.root / "report.html").read_text()
    _no_nan(html)
    assert "Status: <b>finished</b> — completed 2 rounds</p>" in html
    for package in ("matloop", "torch", "pymatgen", "chgnet", "atomate2", "jobflow"):
        assert f"<td>{package}</td><td>{metadata.version(package)}</td>" in html
    assert "<td>seed</td><td>0</td>" in html and "<td>level</td><td>lookup</td>" in html
    assert re.search(r"<td>started</td><td>\d{4}-\d\d-\d\d \d\d:\d\d UTC</td>", html)
    assert "<summary>The campaign's spec" in html and "max_items: 80" in html
    assert "model: MLP ensemble on frozen magpie vectors." in html
    formulas = {c["item_id"]: c["formula"] for c in campaign.state.calcs()}
    candidates = _rows(html, "round", "item", "formula", "strategy", "μ", "σ", "score", "label", "reason")
    assert len(candidates) == len(campaign.state.candidates())
    for row in candidates:
        assert row[2] == formulas[row[1]] and re.fullmatch(r"[A-Z][A-Za-z0-9().]*", row[2])
    audit = _rows(html, "item", "formula", "label")
    assert {r[0]: r[1] for r in audit} == {i: formulas[i] for i in campaign.audit.ids()}
    models = re.findall(r"<td>(model-[0-9a-f]+)</td><td>([^<]*)</td>", html)
    assert [m[0] for m in models] == [m["model_id"] for m in campaign.state.models()]
    assert {m[1] for m in models} == {"MLP ensemble on frozen magpie vectors"}
    # three figures with their "How", the comparison with random among them, and the parity plot
    assert html.count("data:image/png") == html.count("<i>How:</i>") == 4
    assert "not enough data yet" not in html


def test_parity_axes_are_equal_with_the_diagonal(runs):
    campaign = runs["finished"]
    pairs = prospective_pairs(campaign)
    assert len(pairs) == 8  # two rounds of four picks
    fig = parity_figure(pairs, level="lookup", unit="eV/atom")
    ax = fig.axes[0]
    assert ax.get_xlim() == ax.get_ylim()
    lo, hi = ax.get_xlim()
    values = [p["label"] for p in pairs] + [p["mean"] for p in pairs]
    assert lo < min(values) and max(values) < hi
    assert ax.get_aspect() == 1.0
    diagonal = ax.lines[-1].get_xydata()
    assert (diagonal[:, 0] == diagonal[:, 1]).all() and tuple(diagonal[:, 0]) == (lo, hi)


def test_the_learning_curve_counts_labels_in_whole_numbers(runs):
    summary = runs["finished"].audit.summary()
    assert [r.labels for r in summary.rounds] == [6, 10, 14]
    for rounds in (summary.rounds, summary.rounds[:1]):  # one point: matplotlib alone ticks 5.95, 6.0 ...
        ax = learning_curve_figure(summary.model_copy(update={"rounds": rounds}), "eV/atom").axes[0]
        ax.figure.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_a_report_after_round_0_says_what_each_figure_needs(runs):
    campaign = runs["round 0"]
    assert campaign.state.meta("status") == "stopped" and not campaign.state.models()
    html = (campaign.ws.root / "report.html").read_text()
    _no_nan(html)
    for needs in (
        "not enough data yet: needs a model from round 1 on",  # the headline's audit MAE
        "not enough data yet: needs models from at least 2 rounds",  # learning curve
        "not enough data yet: needs labels of items a model picked",  # parity
    ):
        assert needs in html
    assert "model: none trained yet." in html
    assert "<p>None trained yet.</p>" in html
    # the round-0 labels are enough to compare hits with the audit's hit rate: that figure shows
    assert html.count("data:image/png") == 1 and "Found vs expected" in html


def test_a_running_campaign_has_no_dangling_reason_and_text_is_escaped(runs, tmp_path):
    directory = Path(shutil.copytree(runs["round 0"].ws.root, tmp_path / "c"))
    campaign = Campaign(directory, CampaignSpec.from_yaml(directory / "campaign.yaml"))
    campaign.state.set_meta("status", "running")
    campaign.state.set_meta("reason", "")
    assert "Status: <b>running</b></p>" in render_report(campaign)
    campaign.state.set_meta("reason", "<script>alert(1)</script>")
    html = render_report(campaign)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.usefixtures("settings")
def test_a_schema_1_campaign_reports_without_nan(tmp_path):
    directory = Path(shutil.copytree(FIXTURES / "finished", tmp_path / "finished"))
    campaign = Campaign(directory, CampaignSpec.from_yaml(directory / "campaign.yaml"))
    html = write_report(campaign).read_text()
    _no_nan(html)  # its models' own R² is NaN: the table says n/a
    assert "<td>n/a</td>" in html
    assert "model: MLP ensemble on frozen magpie vectors." in html
    assert "<td>mp-10390</td><td>Ta2O5</td>" in html
