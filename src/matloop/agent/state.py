"""Campaign state in the workspace's ``state.sqlite``: steps, candidates, calculations, labels,
models and the budget ledger.

Every write is its own committed transaction, so a process killed at any moment leaves a
consistent record: a finished step is never redone, a label is never lost, and a budget
reservation made before a calculation is queued is never counted twice (ledger rows are keyed).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from matloop.workspace import Workspace

BudgetKind = Literal["calculations", "cpu_hours", "llm_tokens"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS campaign_steps (
    key TEXT PRIMARY KEY, round INTEGER, tool TEXT, args TEXT, status TEXT, result TEXT,
    started TEXT, finished TEXT);
CREATE TABLE IF NOT EXISTS campaign_candidates (
    item_id TEXT, round INTEGER, selection_id TEXT, strategy TEXT, mean REAL, std REAL, score REAL,
    reason TEXT, PRIMARY KEY (item_id, round));
CREATE TABLE IF NOT EXISTS campaign_calcs (
    batch_id TEXT, item_id TEXT, round INTEGER, level TEXT, status TEXT, reason TEXT,
    PRIMARY KEY (batch_id, item_id));
CREATE TABLE IF NOT EXISTS campaign_labels (
    item_id TEXT, property TEXT, level TEXT, value REAL, unit TEXT, round INTEGER, batch_id TEXT,
    PRIMARY KEY (item_id, property, level));
CREATE TABLE IF NOT EXISTS campaign_models (
    model_id TEXT PRIMARY KEY, round INTEGER, kind TEXT, parent TEXT, n_train INTEGER, metrics TEXT);
CREATE TABLE IF NOT EXISTS campaign_refused (
    scope TEXT, item_id TEXT, reason TEXT, time TEXT, PRIMARY KEY (scope, item_id));
CREATE TABLE IF NOT EXISTS budget_ledger (
    key TEXT PRIMARY KEY, time TEXT, kind TEXT, amount REAL, note TEXT);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CampaignState:
    """Typed access to the campaign tables of one workspace."""

    def __init__(self, workspace: Workspace, *, scope: str = "") -> None:
        self.ws = workspace
        #: ledger-key prefix of the spending this state charges and counts: ``""`` for a campaign
        #: (the whole workspace), ``"<request id>:"`` for one request in a shared workspace
        self.scope = scope
        with self.ws.connect() as db:
            db.executescript(_SCHEMA)

    # -- key/value metadata ---------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.ws.connect() as db:
            db.execute("INSERT OR REPLACE INTO campaign_meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        with self.ws.connect() as db:
            row = db.execute("SELECT value FROM campaign_meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def audit_plan(self) -> dict[str, Any] | None:
        """The campaign's random audit set as drawn (see :mod:`matloop.agent.audit`), or ``None``."""
        return self.meta("audit")

    def set_audit_plan(self, plan: dict[str, Any]) -> None:
        self.set_meta("audit", plan)

    def audit_ids(self) -> set[str]:
        """Items of the campaign's random audit set."""
        return set((self.audit_plan() or {}).get("ids", []))

    # -- memoised steps (what makes resume exact) -----------------------------------------
    def step(self, key: str) -> dict[str, Any] | None:
        """The stored record of a step (``status`` is ``started`` or ``done``), or ``None``."""
        with self.ws.connect() as db:
            row = db.execute("SELECT * FROM campaign_steps WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "args": json.loads(row["args"]), "result": json.loads(row["result"] or "null")}

    def begin_step(self, key: str, round_: int, tool: str, args: dict[str, Any]) -> None:
        with self.ws.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO campaign_steps VALUES (?, ?, ?, ?, 'started', NULL, ?, NULL)",
                (key, round_, tool, json.dumps(args, default=str), _now()),
            )

    def finish_step(self, key: str, result: Any) -> None:
        with self.ws.connect() as db:
            db.execute(
                "UPDATE campaign_steps SET status = 'done', result = ?, finished = ? WHERE key = ?",
                (json.dumps(result, default=str), _now(), key),
            )

    # -- budget ledger --------------------------------------------------------------------
    def charge(self, key: str, kind: BudgetKind, amount: float, note: str = "") -> None:
        """Record a cost once per ``key`` in this scope (a repeated key is ignored, so resume never
        double-counts)."""
        with self.ws.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO budget_ledger VALUES (?, ?, ?, ?, ?)",
                (self.scope + key, _now(), kind, amount, note),
            )

    def spent(self, kind: BudgetKind) -> float:
        """Spending of this scope."""
        return self._sum(kind=kind)

    def charged(self, prefix: str) -> float:
        """Sum of this scope's ledger rows whose key starts with ``prefix``."""
        return self._sum(prefix=prefix)

    def _sum(self, *, kind: BudgetKind | None = None, prefix: str = "") -> float:
        start = self.scope + prefix
        query = "SELECT COALESCE(SUM(amount), 0) FROM budget_ledger WHERE substr(key, 1, ?) = ?"
        params: list[Any] = [len(start), start]
        if kind is not None:
            query, params = query + " AND kind = ?", [*params, kind]
        with self.ws.connect() as db:
            return float(db.execute(query, params).fetchone()[0])

    def ledger(self) -> list[dict[str, Any]]:
        with self.ws.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM budget_ledger ORDER BY rowid")]

    # -- items the guardrails refused (never selectable again) ----------------------------
    def refuse(self, reasons: dict[str, str]) -> None:
        """Record items a guardrail refused to compute in this scope, with the reason (the first stays)."""
        with self.ws.connect() as db:
            db.executemany(
                "INSERT OR IGNORE INTO campaign_refused VALUES (?, ?, ?, ?)",
                [(self.scope, item_id, reason, _now()) for item_id, reason in reasons.items()],
            )

    def refused(self) -> dict[str, str]:
        """Items refused in this scope, and why."""
        with self.ws.connect() as db:
            rows = db.execute(
                "SELECT item_id, reason FROM campaign_refused WHERE scope = ? ORDER BY rowid", (self.scope,)
            )
            return dict(rows.fetchall())

    # -- candidates, calculations, labels, models -----------------------------------------
    def add_candidates(self, round_: int, selection_id: str, strategy: str, candidates: list[dict]) -> None:
        with self.ws.connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO campaign_candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        c["item_id"],
                        round_,
                        selection_id,
                        strategy,
                        c.get("mean"),
                        c.get("std"),
                        c.get("score"),
                        c.get("reason", ""),
                    )
                    for c in candidates
                ],
            )

    def candidates(self) -> list[dict[str, Any]]:
        with self.ws.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM campaign_candidates ORDER BY round, rowid")]

    def add_calcs(self, batch_id: str, round_: int, level: str, statuses: list[dict]) -> None:
        with self.ws.connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO campaign_calcs VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (batch_id, s["item_id"], round_, level, s["status"], s.get("reason") or "")
                    for s in statuses
                ],
            )

    def calcs(self) -> list[dict[str, Any]]:
        with self.ws.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM campaign_calcs ORDER BY rowid")]

    def add_labels(self, round_: int, batch_id: str, labels: list[dict]) -> int:
        """Store labels (first value wins); returns how many were new."""
        with self.ws.connect() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO campaign_labels VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        lb["item_id"],
                        lb["property"],
                        lb["level"],
                        lb["value"],
                        lb.get("unit", ""),
                        round_,
                        batch_id,
                    )
                    for lb in labels
                ],
            )
            return db.total_changes - before

    def labels(self, prop: str | None = None, level: str | None = None) -> list[dict[str, Any]]:
        query, params = "SELECT * FROM campaign_labels WHERE 1=1", []
        if prop:
            query, params = query + " AND property = ?", [*params, prop]
        if level:
            query, params = query + " AND level = ?", [*params, level]
        with self.ws.connect() as db:
            return [dict(r) for r in db.execute(query + " ORDER BY rowid", params)]

    def add_model(
        self, model_id: str, round_: int, kind: str, parent: str | None, n_train: int, metrics: dict
    ) -> None:
        with self.ws.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO campaign_models VALUES (?, ?, ?, ?, ?, ?)",
                (model_id, round_, kind, parent, n_train, json.dumps(metrics, default=str)),
            )

    def models(self) -> list[dict[str, Any]]:
        with self.ws.connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM campaign_models ORDER BY rowid")]
        return [{**r, "metrics": json.loads(r["metrics"])} for r in rows]
