from __future__ import annotations

from matloop.agent.decisions import Decision, DecisionLog


def test_log_is_append_only_json_lines_and_scrubs_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value-123456")
    log = DecisionLog(tmp_path / "decisions.jsonl")
    log.write(
        Decision(
            1,
            "planned",
            "c",
            0,
            "llm",
            "featurize",
            {"slice_id": "s", "api_key": "hunter2222"},
            rationale="using key sk-test-secret-value-123456",
        )
    )
    log.write(Decision(1, "done", "c", 0, "llm", "featurize", result={"ok": True}))
    text = (tmp_path / "decisions.jsonl").read_text()
    assert "sk-test-secret" not in text and "hunter2222" not in text
    assert len(text.splitlines()) == 2
    with open(tmp_path / "decisions.jsonl", "a") as fh:  # a torn line from a crash is skipped
        fh.write('{"step": 2, "pha')
    assert [r["phase"] for r in log.records()] == ["planned", "done"]
    assert log.next_step() == 2 and log.steps() == 1
