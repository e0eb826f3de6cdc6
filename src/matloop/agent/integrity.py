"""A campaign directory's integrity: one process runs it at a time, and its state is never
silently younger than its decision log.

- **Lock**: ``campaign.lock`` holds an OS ``flock`` for as long as a process runs (or resumes)
  the campaign; the OS releases it when that process ends, even after ``kill -9``. A second
  run is refused with the holder's pid. ``status``, ``report`` and ``log`` read without it.
- **State check** before a resume (and before ``status``/``report`` read it): ``state.sqlite``
  must exist, pass SQLite's ``quick_check``, hold the campaign's own record (schema version no
  newer than this release's — an older one is migrated when the state is opened —, the hash of
  the spec it started with, which a resume may extend with more rounds or budget but not
  change) and have charged at least what the append-only ``decisions.jsonl`` says was spent
  (charges are only ever added; releases and refunds are rows of their own). Anything else is an
  error that says what was found; the directory is left untouched, so nothing is ever restarted
  with a fresh budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from matloop.agent.decisions import DecisionLog
from matloop.agent.state import SCHEMA_VERSION
from matloop.errors import MatloopError
from matloop.filelock import holder, is_held, try_flock, write_holder

LOCK_FILE = "campaign.lock"


class CampaignBusy(MatloopError):
    """Another process runs this campaign now."""


class DamagedState(MatloopError):
    """``state.sqlite`` is missing, damaged, emptied or older than the decision log."""


#: Spec fields a resume may change: they extend a campaign (more rounds, more budget, other stop
#: rules), they do not change what it computes or on which pool.
EXTENDABLE = frozenset({"description", "rounds", "budget", "stop", "max_steps"})


def spec_hash(spec_yaml: str) -> str:
    """What identifies a campaign: its spec without the fields a resume may extend."""
    spec = {k: v for k, v in (yaml.safe_load(spec_yaml) or {}).items() if k not in EXTENDABLE}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def campaign_lock(directory: Path) -> Iterator[None]:
    """Hold the campaign's lock for the block, or raise :class:`CampaignBusy` naming the holder."""
    path = directory / LOCK_FILE
    fd = try_flock(path)
    if fd is None:
        raise CampaignBusy(
            f"campaign {directory} is being run by {holder(path) or 'another process'}; wait for it to "
            "finish (matloop campaign status shows its progress) or stop it, then resume"
        )
    try:
        write_holder(fd, f"process {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}")
        yield
    finally:
        os.close(fd)


def running(directory: Path) -> bool:
    """Whether a process runs the campaign in ``directory`` now."""
    return is_held(directory / LOCK_FILE)


def _stored(db_path: Path) -> tuple[dict[str, Any], float] | str:
    """The campaign's metadata and calculations spent, or what is wrong with the file."""
    if not db_path.exists():
        return "is missing"
    if db_path.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=60.0)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                return f"is damaged (SQLite integrity check: {verdict})"
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"campaign_meta", "budget_ledger"} <= tables:
                return "holds no campaign state"
            meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM campaign_meta")}
            (charged,) = db.execute(  # charges only: releases and refunds make the net go down
                "SELECT COALESCE(SUM(amount), 0) FROM budget_ledger"
                " WHERE kind = 'calculations' AND amount > 0"
            ).fetchone()
    except sqlite3.DatabaseError as exc:
        return f"is damaged ({exc})"
    return (meta, float(charged)) if "status" in meta else "holds no campaign state"


def check_state(directory: Path) -> None:
    """Refuse a campaign whose ``state.sqlite`` or ``campaign.yaml`` cannot be trusted (see the
    module docstring). A directory with neither state nor log records never started: it passes."""
    records = DecisionLog(directory / "decisions.jsonl").records()
    logged = max((r.get("cost", {}).get("calculations", 0.0) for r in records), default=0.0)
    state = directory / "state.sqlite"
    found = _stored(state)
    recover = (
        "Nothing was changed. Keep this directory for the record and start a new campaign from its "
        f"spec: matloop campaign run {directory / 'campaign.yaml'} --dir NEW_DIR"
    )
    if isinstance(found, str):
        if not records:
            return
        steps = len({r["step"] for r in records})
        raise DamagedState(
            f"{state} {found}, but decisions.jsonl records {steps} steps and {logged:g} calculations "
            f"spent; resuming would start over with a fresh budget. {recover}"
        )
    meta, charged = found
    if meta.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:  # older ones are migrated
        raise DamagedState(
            f"{state} has campaign schema version {meta['schema_version']}, this matloop reads versions "
            f"up to {SCHEMA_VERSION}; use the matloop release that started it"
        )
    if charged + 1e-6 < logged:  # the net spent of any record is at most what was ever charged
        raise DamagedState(
            f"{state} records {charged:g} calculations ever charged but decisions.jsonl records {logged:g} "
            f"spent: the state is older than the log (restored from a copy, or damaged). {recover}"
        )
    current = spec_hash((directory / "campaign.yaml").read_text())
    if meta.get("spec_hash", current) != current:
        raise DamagedState(
            f"{directory / 'campaign.yaml'} changed since the campaign started (spec hash "
            f"{meta['spec_hash']}, now {current}); a resume may change only {sorted(EXTENDABLE)}. "
            "Restore the rest, or run the edited spec as a new campaign in a new directory"
        )
