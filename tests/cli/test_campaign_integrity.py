"""A campaign directory under a hostile user: two processes, kill -9, SIGTERM, a damaged state,
an edited spec, bad specs — through the real command line, on real campaign directories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from matloop.agent.integrity import running
from matloop.cli import app

#: A fast campaign: bundled Materials Project crystals whose labels the lookup level reveals.
SPEC = {
    "name": "lookup",
    "pool": {"source": "mp_formation_energy", "max_items": 60},
    "target": {"property": "formation_energy_per_atom", "goal": "minimize"},
    "level": "lookup",
    "model": {"backbone": "magpie", "cheap_level": "none", "ensemble_size": 2},
    "seed_size": 6,
    "batch_size": 3,
    "rounds": 2,
    "budget": {"calculations": 20},
    "audit": {"fraction": 0.1, "min_items": 2},
}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``matloop ARGS`` in a new process (the real exit code and output)."""
    return subprocess.run(
        [sys.executable, "-m", "matloop", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def _spec_file(tmp_path: Path, name: str = "spec.yaml", **override) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**SPEC, **override}))
    return path


def _start(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "matloop", "campaign", "run", str(spec), "--dir", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _logged_tool(out: Path, tool: str) -> bool:
    log = out / "decisions.jsonl"
    return log.exists() and f'"tool": "{tool}"' in log.read_text()


def _spent(out: Path) -> float:
    with sqlite3.connect(out / "state.sqlite") as db:
        (total,) = db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM budget_ledger WHERE kind = 'calculations'"
        ).fetchone()
    return float(total)


def test_one_process_per_campaign_and_kill_9_releases_it(settings, tmp_path):
    out = tmp_path / "c"
    first = _start(_spec_file(tmp_path, rounds=12, budget={"calculations": 60}), out)
    try:
        _wait_for(lambda: _logged_tool(out, "featurize"))
        os.killpg(first.pid, signal.SIGSTOP)  # frozen mid-campaign, lock held: no race with its end
        assert running(out)
        second = _cli("campaign", "resume", str(out))
        assert second.returncode == 1
        assert f"is being run by process {first.pid}" in second.stdout
        status = _cli("campaign", "status", str(out))  # readers need no lock
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not running(out)
    status = _cli("campaign", "status", str(out))
    assert "stopped mid-round" in status.stdout and "resume to continue" in status.stdout
    resumed = _cli("campaign", "resume", str(out))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "finished" in resumed.stdout
    steps = [r["step"] for r in map(json.loads, (out / "decisions.jsonl").read_text().splitlines())]
    assert steps == sorted(steps)


def test_sigterm_stops_cleanly_and_resume_finishes(settings, tmp_path):
    out = tmp_path / "c"
    proc = subprocess.Popen(
        [sys.executable, "-m", "matloop", "campaign", "run", str(_spec_file(tmp_path)), "--dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(lambda: _logged_tool(out, "train_uq_gnn"))
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, output
    assert "stopped" in output and "interrupted by SIGTERM; resume to continue" in output
    assert not running(out)
    resumed = _cli("campaign", "resume", str(out))
    assert resumed.returncode == 0 and "finished" in resumed.stdout


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished campaign directory (copy it before changing it)."""
    root = tmp_path_factory.mktemp("finished")
    env = {"MATLOOP_CACHE_DIR": str(root / "cache"), "MATLOOP_WORKSPACE": str(root / "ws")}
    done = _cli("campaign", "run", str(_spec_file(root)), "--dir", str(root / "c"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "c"


@pytest.mark.parametrize("damage", ["emptied", "truncated", "older copy"])
def test_a_damaged_state_is_refused_and_nothing_is_spent(settings, tmp_path, finished, damage):
    out = Path(shutil.copytree(finished, tmp_path / "c"))
    state = out / "state.sqlite"
    spent = _spent(out)
    if damage == "emptied":
        for path in out.glob("state.sqlite*"):
            path.unlink()
        state.write_bytes(b"")
    elif damage == "truncated":  # the write-ahead log checkpointed, then half the file lost
        with sqlite3.connect(state) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = state.read_bytes()
        state.write_bytes(data[: len(data) // 2])
    else:  # a copy of the state from before the last calculations were charged
        with sqlite3.connect(state) as db:
            db.execute("DELETE FROM budget_ledger WHERE kind = 'calculations' AND key LIKE 'calc:r%'")
    # everything but the lock's holder line and SQLite's shared-memory index stays as it was
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix not in (".lock", ".sqlite-shm")}

    resumed = _cli("campaign", "resume", str(out))
    assert resumed.returncode == 1
    assert "Nothing was changed" in resumed.stdout and "matloop campaign run" in resumed.stdout
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before
    status = CliRunner().invoke(app, ["campaign", "status", str(out)])
    assert status.exit_code == 1 and "state.sqlite" in status.output
    if damage == "older copy":
        assert f"decisions.jsonl records {spent:g} spent" in resumed.stdout


def test_a_changed_spec_is_refused_at_resume_and_an_extended_one_runs(settings, tmp_path, finished):
    out = Path(shutil.copytree(finished, tmp_path / "c"))
    spec = yaml.safe_load((out / "campaign.yaml").read_text())
    spec["target"]["goal"] = "maximize"
    (out / "campaign.yaml").write_text(yaml.safe_dump(spec))
    resumed = CliRunner().invoke(app, ["campaign", "resume", str(out)])
    assert resumed.exit_code == 1 and "changed since the campaign started" in resumed.output
    spec["target"]["goal"], spec["budget"]["calculations"], spec["rounds"] = "minimize", 26, 4
    (out / "campaign.yaml").write_text(yaml.safe_dump(spec))  # extended: more budget and rounds
    resumed = CliRunner().invoke(app, ["campaign", "resume", str(out)])
    assert resumed.exit_code == 0 and "finished" in resumed.output, resumed.output


BAD_SPECS = {
    "unknown key": ({**SPEC, "rouns": 3}, "rouns: unknown field; valid fields are"),
    "bad goal": ({**SPEC, "target": {"goal": "biggest"}}, "target.goal: expected 'learn'"),
    "negative budget": ({**SPEC, "budget": {"calculations": -5}}, "budget.calculations: expected"),
    "unknown level": ({**SPEC, "level": "dft"}, "level: expected 'chgnet'"),
    "rounds in words": ({**SPEC, "rounds": "four"}, "rounds: expected a valid integer"),
    "reversed window": (
        {**SPEC, "target": {"goal": "window", "window": [3.0, 1.0]}},
        "low < high, got [3.0, 1.0]",
    ),
    "nan window": ({**SPEC, "target": {"goal": "window", "window": [float("nan"), 2]}}, "finite numbers"),
    "unknown element": ({**SPEC, "elements": {"forbidden": ["Pb", "Xx"]}}, "element symbols"),
    "property the level cannot compute": (
        {**SPEC, "level": "chgnet", "target": {"property": "band_gap_typo"}},
        "target.property: expected a property level 'chgnet' computes",
    ),
    "cheap arm without hits": ({**SPEC, "cheap_arm": True}, "cheap_arm: expected a target window"),
    "missing pool source": ({**SPEC, "pool": {"source": "nowhere"}}, "pool: source: expected one of"),
    "missing pool file": (
        {**SPEC, "pool": {"source": "table", "query": {"path": "/no/such/file.csv"}}},
        "query.path: expected an existing file",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_specs_are_refused_in_one_line_before_anything_is_made(tmp_path, case):
    spec, message = BAD_SPECS[case]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["campaign", "run", str(path), "--dir", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "",
            "expected a mapping of campaign fields (name, pool, target, level, budget, ...), got an empty",
        ),
        ("- a\n- b\n", "got a list"),
        ("name: x\n\tlevel: chgnet\n", "expected valid YAML, got found character '\\t'"),
    ],
)
def test_unreadable_spec_files_are_refused(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    result = _cli("campaign", "run", str(path), "--dir", str(tmp_path / "out"))
    assert result.returncode == 1 and message in result.stdout, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_element_names_read_as_symbols(tmp_path):
    from matloop.agent.spec import CampaignSpec

    spec = CampaignSpec.from_dict({"elements": {"forbidden": ["Pb", "oxygen", "Cadmium"]}})
    assert spec.elements.forbidden == ["Pb", "O", "Cd"]


def test_an_item_a_guardrail_refused_is_never_selected_again(settings, tmp_path):
    from matloop.agent.campaign import run_campaign
    from matloop.agent.spec import CampaignSpec

    strict = settings.model_copy(
        update={"validation": settings.validation.model_copy(update={"max_sites": 6})}
    )  # most bundled crystals are larger: the sanity check refuses them
    spec = CampaignSpec.from_dict({**SPEC, "rounds": 4, "audit": "off"})
    campaign = run_campaign(spec, tmp_path / "c", settings=strict)
    refused = campaign.state.refused()
    assert refused and all("exceeds the limit of 6" in why for why in refused.values())
    picked = [
        item_id
        for r in campaign.log.records()
        if r["phase"] == "planned" and r["tool"] == "queue_validation"
        for item_id in r["arguments"]["item_ids"]
    ]
    asked = [c["item_id"] for c in campaign.state.candidates()]
    assert len(asked) == len(set(asked))  # nothing refused (or labelled) was offered twice
    assert not set(picked) & set(refused)
    assert "refused by a guardrail" in (tmp_path / "c" / "report.html").read_text()
