"""Campaign state in the workspace's ``state.sqlite``: what is the campaign's own — steps,
candidates, its validation batches and the rounds it collected them in, models, items refused
and the budget ledger.

Calculations and labels live in the validation store (:mod:`matloop.validation.store`), once;
the campaign reads them through :meth:`CampaignState.labels`, :meth:`CampaignState.calcs` and
:meth:`CampaignState.used_ids`. Every write is its own committed transaction, so a process
killed at any moment leaves a consistent record: a finished step is never redone, a label is
never lost, and a budget reservation made before a calculation is queued is never counted
twice (ledger rows are keyed). A state written by an older schema is migrated when opened.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Literal

from matloop.names import JOB_STATUSES
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace

#: Version of the campaign tables in ``state.sqlite``: 1 kept copies of labels and calculations
#: (``campaign_labels``, ``campaign_calcs``); 2 reads them from the validation store.
SCHEMA_VERSION = 2

BudgetKind = Literal["calculations", "cpu_hours", "llm_tokens"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS campaign_steps (key TEXT PRIMARY KEY, step INTEGER, result TEXT);
CREATE TABLE IF NOT EXISTS campaign_candidates (
    item_id TEXT, round INTEGER, selection_id TEXT, strategy TEXT, mean REAL, std REAL, score REAL,
    reason TEXT, PRIMARY KEY (item_id, round));
CREATE TABLE IF NOT EXISTS campaign_batches (
    batch_id TEXT PRIMARY KEY, queued_round INTEGER, collected_round INTEGER);
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
        self.store = ValidationStore(workspace)
        with self.ws.connect() as db:
            db.executescript(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")  # one process migrates; the others find it done
            if _table_exists(db, "campaign_labels"):
                _migrate_v1(db)

    # -- key/value metadata ---------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.ws.connect() as db:
            db.execute("INSERT OR REPLACE INTO campaign_meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        with self.ws.connect() as db:
            row = db.execute("SELECT value FROM campaign_meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def audit_plan(self) -> dict[str, Any] | None:
        """The campaign's random audit set as drawn (see :mod:`matloop.agent.audit_set`), or ``None``."""
        return self.meta("audit")

    def set_audit_plan(self, plan: dict[str, Any]) -> None:
        self.set_meta("audit", plan)

    def audit_ids(self) -> set[str]:
        """Items of the campaign's random audit set."""
        return set((self.audit_plan() or {}).get("ids", []))

    # -- results of finished keyed steps (what makes resume exact) -------------------------
    def step(self, key: str) -> dict[str, Any] | None:
        """A finished step: its ``step`` number in the decision log (which records the call) and
        its full ``result``; ``None`` while it has not finished."""
        with self.ws.connect() as db:
            row = db.execute("SELECT * FROM campaign_steps WHERE key = ?", (key,)).fetchone()
        return None if row is None else {**dict(row), "result": json.loads(row["result"])}

    def finish_step(self, key: str, step: int, result: Any) -> None:
        with self.ws.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO campaign_steps (key, step, result) VALUES (?, ?, ?)",
                (key, step, json.dumps(result, default=str)),
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

    def add_batch(self, batch_id: str, round_: int) -> None:
        """A validation batch this campaign queued in round ``round_``."""
        with self.ws.connect() as db:
            db.execute("INSERT OR IGNORE INTO campaign_batches VALUES (?, ?, NULL)", (batch_id, round_))

    def collected(self, batch_id: str, round_: int) -> None:
        """The campaign collected the batch in round ``round_`` (its first collection counts)."""
        with self.ws.connect() as db:
            db.execute("INSERT OR IGNORE INTO campaign_batches VALUES (?, NULL, NULL)", (batch_id,))
            db.execute(
                "UPDATE campaign_batches SET collected_round = COALESCE(collected_round, ?)"
                " WHERE batch_id = ?",
                (round_, batch_id),
            )

    def _rounds(self, column: str) -> dict[str, int]:
        with self.ws.connect() as db:
            rows = db.execute(f"SELECT batch_id, {column} FROM campaign_batches WHERE {column} IS NOT NULL")
            return dict(rows.fetchall())

    def calcs(self, statuses: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The workspace's calculations (store rows; those in one of ``statuses``) with the round
        their batch was queued in."""
        rounds = self._rounds("queued_round")
        return [{**c, "round": rounds.get(c["batch_id"], 0)} for c in self.store.calculations(statuses)]

    def labels(self, prop: str | None = None, level: str | None = None) -> list[dict[str, Any]]:
        """The campaign's labels: those ``collect_validation`` handed out, one per item, property
        and level (the first collected; a duplicate served from another job's labels counts
        once), with the round the campaign collected them in (0 for a batch collected outside a
        campaign's rounds)."""
        rounds = self._rounds("collected_round")
        rows = [
            {**lb, "round": rounds.get(lb["batch_id"], 0)} for lb in self.store.collected_labels(prop, level)
        ]
        first: dict[tuple[str, str, str], dict[str, Any]] = {}
        for lb in sorted(rows, key=lambda r: r["round"]):  # stable: queue order within a round
            first.setdefault((lb["item_id"], lb["property"], lb["level"]), lb)
        return list(first.values())

    def used_ids(self, level: str) -> set[str]:
        """Items not to select again: labelled at ``level`` or sent to a calculation at it (failed
        ones too, see :data:`matloop.names.JOB_STATUSES`), or refused by a guardrail."""
        return self.store.taken_ids(JOB_STATUSES, level=level) | set(self.refused())

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


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute(query, (name,)).fetchone() is not None


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Schema 1 → 2, in the caller's transaction: the rounds of the campaign's batches come from
    its copies (``campaign_calcs``: queued; ``campaign_labels``: collected), each batch it
    collected is marked collected in the store as of its newest label the copy held, then the
    copies go; a step keeps only its finished result (the decision log records the call)."""
    db.execute(
        "INSERT OR IGNORE INTO campaign_batches"
        " SELECT batch_id, MIN(round), NULL FROM campaign_calcs GROUP BY batch_id"
    )
    collected = db.execute(
        "SELECT c.batch_id, MIN(c.round), MAX(l.created) FROM campaign_labels c"
        " JOIN validation_jobs j ON j.batch_id = c.batch_id AND j.item_id = c.item_id"
        " JOIN labels l ON l.job_id = COALESCE(j.duplicate_of, j.job_id)"
        " AND l.property = c.property GROUP BY c.batch_id"
    ).fetchall()
    for batch_id, round_, created in collected:
        db.execute("INSERT OR IGNORE INTO campaign_batches VALUES (?, NULL, NULL)", (batch_id,))
        db.execute("UPDATE campaign_batches SET collected_round = ? WHERE batch_id = ?", (round_, batch_id))
        db.execute("UPDATE validation_batches SET collected = ? WHERE batch_id = ?", (created, batch_id))
    db.execute("DROP TABLE campaign_labels")
    db.execute("DROP TABLE campaign_calcs")
    db.execute("DELETE FROM campaign_steps WHERE status != 'done'")
    for column in ("round", "tool", "args", "status", "started", "finished"):
        db.execute(f"ALTER TABLE campaign_steps DROP COLUMN {column}")
    db.execute("ALTER TABLE campaign_steps ADD COLUMN step INTEGER")
    db.execute(
        "INSERT OR REPLACE INTO campaign_meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),)
    )
