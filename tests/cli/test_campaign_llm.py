"""``matloop ask`` and ``matloop campaign`` with a language model that is unreachable, refuses the
request or only talks: one clear line, a logged hand-over, and counts that match the log."""

from __future__ import annotations

import re

import yaml
from tests.agent.fake_openai import Status, Text
from typer.testing import CliRunner

from matloop.agent.campaign import Campaign, CampaignSpec
from matloop.cli import app

SMALL = {
    "name": "talker",
    "planner": "llm",
    "pool": {"source": "mp_dielectric", "max_items": 12},
    "target": {"property": "band_gap"},
    "level": "lookup",  # labels from the dataset: the hand-over is under test, not a calculation
    "seed_size": 3,
    "batch_size": 2,
    "rounds": 1,
    "model": {"epochs": 2},
    "budget": {"calculations": 7, "llm_tokens": 50_000},
    "audit": {"fraction": 0.1, "min_items": 2},
}


def _env(url: str, **extra: str) -> dict[str, str]:
    return {"MATLOOP_LLM__BASE_URL": url, "MATLOOP_LLM__MODEL": "fake", **extra}


def test_ask_with_an_unreachable_model_says_so_in_one_line_and_answers_by_rules(settings, fake_openai):
    server = fake_openai(lambda body, n: Text(tokens=1))
    url = server.url
    server.close()
    out = CliRunner().invoke(
        app,
        ["ask", "How many crystals in mp_dielectric have a band gap between 1 and 2 eV?"],
        env=_env(url, MATLOOP_LLM__MAX_RETRIES="0"),
    )
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.output
    notice = [line for line in out.output.splitlines() if "cannot reach" in line]
    assert len(notice) == 1 and "http://127.0.0.1" in notice[0] and "MATLOOP_LLM__BASE_URL" in notice[0]
    assert notice[0].endswith("falling back to the rules planner")
    assert re.search(r"\d+ items in mp_dielectric", out.output)
    assert "planner rules (fallback)" in out.output


def test_ask_for_the_llm_planner_without_a_model_says_what_to_set(settings, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = CliRunner().invoke(app, ["ask", "--planner", "llm", "How many crystals in mp_dielectric?"])
    assert out.exit_code == 0 and "Traceback" not in out.output
    assert "no language model configured: set OPENAI_API_KEY, or MATLOOP_LLM__BASE_URL" in out.output


def test_errors_are_one_line_unless_debug(settings, tmp_path):
    (tmp_path / "empty").mkdir()
    out = CliRunner().invoke(app, ["campaign", "resume", str(tmp_path / "empty")])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "error: expected a campaign directory with campaign.yaml" in out.output
    debug = CliRunner().invoke(app, ["--debug", "campaign", "resume", str(tmp_path / "empty")])
    assert debug.exit_code == 1 and type(debug.exception).__name__ == "ToolInputError"


def test_a_model_that_only_talks_hands_the_campaign_over_and_the_counts_match(
    settings, tmp_path, fake_openai
):
    ramble = "I think the best approach would be to consider many perovskites carefully. " * 4
    server = fake_openai(lambda body, n: Text(tokens=40, word=ramble[:40]))
    spec = tmp_path / "talker.yaml"
    spec.write_text(yaml.safe_dump(SMALL))
    out_dir = tmp_path / "talker"
    runner = CliRunner()
    run = runner.invoke(app, ["campaign", "run", str(spec), "--dir", str(out_dir)], env=_env(server.url))
    assert run.exit_code == 0, run.output
    campaign = Campaign(out_dir, CampaignSpec.from_yaml(out_dir / "campaign.yaml"))
    records = campaign.log.records()
    notes = [r["rationale"] for r in records if r["phase"] == "note"]
    assert any(
        "no valid progress in 3 model turns" in n and "falling back to the rules planner" in n for n in notes
    )
    assert len(server.requests) == 3
    assert campaign.state.meta("status") == "finished"
    assert len(campaign.own_labels()) == 5 and campaign.audit.summary().labelled == 2  # seed 3 + round 1
    planners = {r["planner"] for r in records if r["phase"] == "planned"}
    assert planners == {
        "audit",
        "llm",
        "rules (fallback)",
    }  # the status call at start, then the rules planner
    counts = re.search(r"\d+ steps: .*records\)", run.output).group(0)
    log = runner.invoke(app, ["campaign", "log", str(out_dir)])
    assert counts in log.output  # the terminal and the log say the same
    status = runner.invoke(app, ["campaign", "status", str(out_dir)])
    assert status.exit_code == 0 and "steps:" in status.output
    assert ramble[:30] not in status.output  # the model's text is never a table cell
    report = (out_dir / "report.html").read_text()
    assert "Decisions by planner" in report and "<td>rules (fallback)</td>" in report


def test_a_server_that_refuses_the_request_mid_campaign_hands_over(
    settings, tmp_path, fake_openai, monkeypatch
):
    from matloop.agent.campaign import run_campaign

    server = fake_openai(lambda body, n: Status(400, "Requested tokens (9000) exceed context window of 2048"))
    for key, value in _env(server.url).items():
        monkeypatch.setenv(key, value)
    campaign = run_campaign(CampaignSpec.model_validate({**SMALL, "name": "refused"}), tmp_path / "refused")
    notes = [r["rationale"] for r in campaign.log.records() if r["phase"] == "note"]
    assert any("HTTP 400" in n and "--n_ctx" in n and "falling back" in n for n in notes)
    assert len(server.requests) == 1  # a refusal is not retried
    assert campaign.state.meta("status") == "finished"
    assert len(campaign.own_labels()) == 5
