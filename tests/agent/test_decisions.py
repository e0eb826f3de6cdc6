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


def test_next_step_follows_other_writers_a_torn_line_and_a_replaced_file(tmp_path):
    path = tmp_path / "decisions.jsonl"
    log, other = DecisionLog(path), DecisionLog(path)
    assert log.next_step() == 1
    log.write(Decision(1, "planned", "c", 0, "rules", "featurize"))
    assert log.next_step() == 2
    other.write(Decision(2, "planned", "c", 0, "rules", "train_uq_gnn"))  # another writer
    assert log.next_step() == 3
    with open(path, "a") as fh:  # a crash tore the next record; it counts once it is whole
        fh.write('{"step": 7, "phase": "pla')
    assert log.next_step() == 3
    with open(path, "a") as fh:
        fh.write('nned"}\n')
    assert log.next_step() == 8
    path.unlink()  # a restored, shorter log is read afresh
    DecisionLog(path).write(Decision(4, "note", "c", 0, "rules", ""))
    assert log.next_step() == 5
    path.unlink()
    assert log.next_step() == 1
