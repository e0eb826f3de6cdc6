"""The decision log: one JSON line per planner step, append-only, on disk before the action runs.

Each step writes a ``planned`` record (tool, arguments, rationale, guardrail verdicts, cost so
far) and fsyncs it before the tool is called, then an outcome record (``done``, ``error`` or
``rejected``) with the result summary under the same step number. Outcomes and notes are
flushed to the operating system, not synced one by one: a crashed process loses none of them,
a power cut at most those since the last ``planned`` record (as the state file's transactions).
Nothing secret is written: keys that look like credentials are masked and known secret values
are scrubbed from strings.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Phase = Literal["planned", "done", "error", "rejected", "note"]

_SECRET_KEY = re.compile(
    r"(api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|authorization)", re.IGNORECASE
)
_SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,})")


@dataclass
class Decision:
    """One planner step (or its outcome)."""

    step: int
    phase: Phase
    campaign: str
    round: int
    planner: str
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    cost: dict[str, float] = field(default_factory=dict)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return _SECRET_VALUE.sub("***", value)
    return value


class DecisionLog:
    """Append-only ``decisions.jsonl``; every record is flushed when written, and a ``planned``
    record (an action about to run) fsynced with everything before it."""

    def __init__(self, path: str | Path, *, secrets: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        env_secrets = tuple(v for k, v in os.environ.items() if _SECRET_KEY.search(k) and len(v) >= 8)
        self._secrets = tuple(s for s in (*secrets, *env_secrets) if s)
        self._scanned = (0, 0)  # (inode, bytes) of the whole records next_step has read
        self._last_step = 0  # the largest step among them

    def write(self, decision: Decision) -> None:
        """Append one record; fsync the log when it plans an action."""
        record = _scrub(asdict(decision), self._secrets)
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            if decision.phase == "planned":
                os.fsync(fh.fileno())

    def records(self) -> list[dict[str, Any]]:
        """All records, oldest first (a torn last line from a crash is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def next_step(self) -> int:
        """The number the next step gets (continues across resumes). Reads only the records
        written since the last call, so a long campaign's log is not re-read at every step."""
        if not self.path.exists():
            self._scanned, self._last_step = (0, 0), 0
            return 1
        with open(self.path, "rb") as fh:
            inode, size = os.fstat(fh.fileno()).st_ino, fh.seek(0, os.SEEK_END)
            if inode != self._scanned[0] or size < self._scanned[1]:  # another file: read it all
                self._scanned, self._last_step = (inode, 0), 0
            fh.seek(self._scanned[1])
            tail = fh.read()
        whole = tail[: tail.rfind(b"\n") + 1]  # a torn last line from a crash waits
        self._scanned = (inode, self._scanned[1] + len(whole))
        for line in whole.splitlines():
            try:
                self._last_step = max(self._last_step, int(json.loads(line)["step"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return self._last_step + 1

    def steps(self) -> int:
        """Number of planner steps logged."""
        return len({r["step"] for r in self.records() if r["phase"] in ("planned", "rejected")})
