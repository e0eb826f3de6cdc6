"""Validation state in the workspace's ``state.sqlite``: batches, jobs, labels, references.

The one place where calculations and their labels live: a campaign reads its labels from here
(:meth:`ValidationStore.collected_labels`), it keeps no copy. Every state change is one SQLite
transaction, so a worker killed at any moment leaves the tables consistent: a job is ``queued``,
``running`` (re-queued when its worker is gone), or finished
(``done``/``failed``/``rejected``/``duplicate``) and then never run again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from monty.json import MontyDecoder, MontyEncoder
from pymatgen.core import Molecule, Structure

from matloop.errors import ToolInputError
from matloop.names import FINISHED_STATUSES, TAKEN_STATUSES, JobStatus
from matloop.workspace import Workspace

_SCHEMA = """
CREATE TABLE IF NOT EXISTS validation_batches (
    batch_id TEXT PRIMARY KEY, level TEXT NOT NULL, executor TEXT NOT NULL,
    slice_id TEXT NOT NULL, created REAL NOT NULL, meta TEXT NOT NULL, collected REAL
);
CREATE TABLE IF NOT EXISTS validation_jobs (
    job_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, item_id TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT, structure TEXT NOT NULL, formula TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, queued_at REAL NOT NULL, started_at REAL, finished_at REAL,
    calc_seconds REAL,
    duplicate_of TEXT, task_doc TEXT, remote_id TEXT
);
CREATE INDEX IF NOT EXISTS validation_jobs_batch ON validation_jobs (batch_id);
CREATE INDEX IF NOT EXISTS validation_jobs_state ON validation_jobs (status);
CREATE TABLE IF NOT EXISTS labels (
    job_id TEXT NOT NULL, property TEXT NOT NULL, value REAL NOT NULL, unit TEXT NOT NULL,
    provenance TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (job_id, property)
);
CREATE TABLE IF NOT EXISTS validation_references (
    level TEXT NOT NULL, element TEXT NOT NULL, energy_per_atom REAL NOT NULL,
    provenance TEXT NOT NULL, PRIMARY KEY (level, element)
);
"""


@dataclass(frozen=True)
class JobRecord:
    """One candidate's calculation as stored (its structure decoded when first read)."""

    job_id: str
    batch_id: str
    item_id: str
    level: str
    executor: str
    status: str
    reason: str | None
    structure_json: str
    formula: str
    attempts: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    calc_seconds: float | None
    duplicate_of: str | None
    task_doc: str | None
    remote_id: str | None

    @cached_property
    def structure(self) -> Structure | Molecule:
        return loads(self.structure_json)


@dataclass(frozen=True)
class Finished:
    """A job's result to store: its labels (property → value, unit) with their provenance, where
    its task document is, and the seconds it took."""

    job: JobRecord
    labels: dict[str, tuple[float, str]]
    provenance: dict[str, Any]
    task_doc: str
    calc_seconds: float


@dataclass(frozen=True)
class LabelRecord:
    """One labelled property of one job."""

    job_id: str
    item_id: str
    level: str
    property: str
    value: float
    unit: str
    provenance: dict[str, Any]


def dumps(obj: Any) -> str:
    """JSON text of a pymatgen object / pydantic document / plain data."""
    return json.dumps(obj, cls=MontyEncoder)


def loads(text: str) -> Any:
    """Inverse of :func:`dumps` (pymatgen objects come back as objects)."""
    return MontyDecoder().process_decoded(json.loads(text))


class StoredStructures(Sequence):
    """Structures as stored (:func:`dumps` text), each decoded when read. :meth:`columns` reads
    the compact rows that content hashes need straight from the JSON, without building pymatgen
    objects (:func:`~matloop.data.graphs.compact_atoms`)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, k: int) -> Structure | Molecule:  # type: ignore[override]
        return loads(self.texts[k])

    def columns(self) -> dict[str, list]:
        """Element symbols, coordinates (fractional for a crystal, with its lattice) and lattice of
        each structure; species None where the compact form does not hold it (a disordered or
        charged site, a crystal not periodic in three dimensions): that one is decoded instead."""
        rows: dict[str, list] = {"species": [], "coords": [], "lattice": []}
        for text in self.texts:
            d = json.loads(text)
            sites, lattice = d.get("sites", []), d.get("lattice")
            simple = all(
                len(site["species"]) == 1
                and site["species"][0].get("occu") == 1
                and set(site["species"][0]) <= {"element", "occu"}
                for site in sites
            ) and (lattice is None or all(lattice.get("pbc", (True,) * 3)))
            rows["species"].append([site["species"][0]["element"] for site in sites] if simple else None)
            rows["coords"].append([site["abc" if lattice else "xyz"] for site in sites])
            rows["lattice"].append(lattice["matrix"] if lattice else None)
        return rows


#: Attempts after which a job that took its worker down each time fails instead of running again.
MAX_ATTEMPTS = 3

#: Jobs ``j`` with their batch ``b`` (a job's level and executor are its batch's).
_JOBS = "validation_jobs j JOIN validation_batches b ON b.batch_id = j.batch_id"
#: The same with the batches leading, for queries on one level: SQLite would otherwise walk the
#: status index through every finished job of every level (0.2 s at 100,000 jobs against 6 ms).
_LEVEL_JOBS = "validation_batches b CROSS JOIN validation_jobs j ON j.batch_id = b.batch_id"
#: ... and the labels ``l`` each finished job serves: its own, or (a duplicate) its original's.
_LABELS = "JOIN labels l ON l.job_id = COALESCE(j.duplicate_of, j.job_id)"
_SERVED = f"{_JOBS} {_LABELS}"
_LEVEL_SERVED = f"{_LEVEL_JOBS} {_LABELS}"
_SERVES = "j.status IN ('done', 'duplicate')"
#: Jobs of the batches of one executor (a parameter).
_OF_EXECUTOR = "batch_id IN (SELECT batch_id FROM validation_batches WHERE executor = ?)"


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an older release up to date, in the caller's transaction: batches
    record their latest collection; a job's level and executor, a label's item and level are
    read from the batch and the job, no longer copied."""
    columns = {
        t: {r[1] for r in db.execute(f"PRAGMA table_info({t})")}
        for t in ("validation_batches", "validation_jobs", "labels")
    }
    if "collected" not in columns["validation_batches"]:
        db.execute("ALTER TABLE validation_batches ADD COLUMN collected REAL")
    if "level" in columns["validation_jobs"]:
        db.execute("DROP INDEX IF EXISTS validation_jobs_status")
        db.execute("ALTER TABLE validation_jobs DROP COLUMN level")
        db.execute("ALTER TABLE validation_jobs DROP COLUMN executor")
    if "level" in columns["labels"]:
        db.execute("ALTER TABLE labels DROP COLUMN item_id")
        db.execute("ALTER TABLE labels DROP COLUMN level")


#: A job's columns with its batch's level and executor (as :class:`JobRecord` fields).
_JOB_COLUMNS = "j.*, b.level, b.executor"


def _marks(values: Collection[Any]) -> str:
    """SQL placeholders for ``values``: ``?,?,?``."""
    return ",".join("?" * len(values))


def _job(row: Any) -> JobRecord:
    data = dict(row)
    data["structure_json"] = data.pop("structure")
    return JobRecord(**data)


class ValidationStore:
    """Typed access to the validation tables of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        with workspace.connect() as db:
            db.executescript(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")  # one process migrates; the others find it done
            _migrate(db)

    # batches and jobs -------------------------------------------------------------------
    def add_batch(
        self, batch_id: str, level: str, executor: str, slice_id: str, jobs: list[dict[str, Any]]
    ) -> None:
        """Insert a batch and its jobs (dicts with job_id, item_id, status, reason, structure, and
        the structure's reduced formula when known, ...)."""
        now = time.time()
        with self.workspace.connect() as db:
            db.execute(
                "INSERT INTO validation_batches VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (batch_id, level, executor, slice_id, now, "{}"),
            )
            for job in jobs:
                structure = job["structure"]
                db.execute(
                    "INSERT INTO validation_jobs (job_id, batch_id, item_id, status,"
                    " reason, structure, formula, queued_at, duplicate_of, finished_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job["job_id"],
                        batch_id,
                        job["item_id"],
                        job["status"],
                        job.get("reason"),
                        dumps(structure),
                        job.get("formula") or structure.composition.reduced_formula,
                        now,
                        job.get("duplicate_of"),
                        now if job["status"] in FINISHED_STATUSES else None,
                    ),
                )

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch row; an unknown id raises :class:`ToolInputError` listing recent ones."""
        with self.workspace.connect() as db:
            row = db.execute("SELECT * FROM validation_batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                known = [
                    r[0]
                    for r in db.execute(
                        "SELECT batch_id FROM validation_batches ORDER BY created DESC LIMIT 20"
                    )
                ]
                raise ToolInputError(
                    f"expected a known validation batch id, got {batch_id!r}; valid values are {known}"
                )
        return dict(row)

    def set_batch_meta(self, batch_id: str, meta: dict[str, Any]) -> None:
        """Replace the batch's metadata (what was derived from it, e.g. its labelled slice)."""
        with self.workspace.connect() as db:
            db.execute(
                "UPDATE validation_batches SET meta = ? WHERE batch_id = ?", (json.dumps(meta), batch_id)
            )

    def mark_collected(self, batch_id: str, at: float) -> None:
        """Record that the batch's labels stored by time ``at`` were handed out (collected)."""
        with self.workspace.connect() as db:
            db.execute(
                "UPDATE validation_batches SET collected = MAX(COALESCE(collected, ?), ?) WHERE batch_id = ?",
                (at, at, batch_id),
            )

    def collected_labels(self, prop: str | None = None, level: str | None = None) -> list[dict[str, Any]]:
        """Labels a collection handed out: of each job of a collected batch that is done (or a
        duplicate of a done job), stored by the batch's latest collection; in queue order. An item
        computed twice appears twice (the caller keeps the first)."""
        where, params = "", []
        for column, value in (("l.property", prop), ("b.level", level)):
            if value:
                where, params = f"{where} AND {column} = ?", [*params, value]
        with self.workspace.connect() as db:
            rows = db.execute(
                "SELECT j.item_id, l.property, b.level, l.value, l.unit, j.batch_id"
                f" FROM {_SERVED if level is None else _LEVEL_SERVED}"
                f" WHERE {_SERVES} AND l.created <= b.collected{where}"
                " ORDER BY j.rowid, l.rowid",
                params,
            )
            return [dict(r) for r in rows]

    def calculations(self, statuses: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Every job (or those in one of ``statuses``) as ``batch_id, item_id, formula, level,
        status, reason`` (queue order; structures not decoded)."""
        where, params = (
            ("", []) if statuses is None else (f" WHERE j.status IN ({_marks(statuses)})", list(statuses))
        )
        with self.workspace.connect() as db:
            rows = db.execute(
                "SELECT j.batch_id, j.item_id, j.formula, b.level, j.status, j.reason"
                f" FROM {_JOBS}{where} ORDER BY j.rowid",
                params,
            )
            return [dict(r) for r in rows]

    def label_counts(self) -> dict[str, int]:
        """Items with a collected label (as :meth:`collected_labels`), per ``property@level``."""
        with self.workspace.connect() as db:
            rows = db.execute(
                f"SELECT l.property || '@' || b.level, COUNT(DISTINCT j.item_id) FROM {_SERVED}"
                f" WHERE {_SERVES} AND l.created <= b.collected GROUP BY 1 ORDER BY 1"
            )
            return dict(rows.fetchall())

    def version(self) -> tuple[int, int, float]:
        """Stored labels, jobs and the sum of the batches' collection times: it changes whenever
        a calculation is queued, a label lands or a batch is collected (three counts, no rows)."""
        with self.workspace.connect() as db:
            return db.execute(
                "SELECT (SELECT COUNT(*) FROM labels), (SELECT COUNT(*) FROM validation_jobs),"
                " (SELECT COALESCE(SUM(collected), 0) FROM validation_batches)"
            ).fetchone()

    def formulas(self, item_ids: Collection[str]) -> dict[str, str]:
        """The reduced formula of each of ``item_ids`` that has a calculation here."""
        ids, found = list(item_ids), {}
        with self.workspace.connect() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = f"SELECT item_id, formula FROM validation_jobs WHERE item_id IN ({_marks(chunk)})"
                found |= dict(db.execute(query, chunk).fetchall())
        return found

    def taken_ids(self, statuses: Collection[str] = TAKEN_STATUSES, level: str | None = None) -> set[str]:
        """Items of this workspace with a label, or with a job in one of ``statuses`` (by default
        queued, running, done or a duplicate), at ``level`` or at any: the items not to select or
        queue again."""
        marks = _marks(statuses)
        jobs, where, params = (_JOBS, "", []) if level is None else (_LEVEL_JOBS, " AND b.level = ?", [level])
        labelled = "EXISTS (SELECT 1 FROM labels l WHERE l.job_id = j.job_id)"
        with self.workspace.connect() as db:
            query = f"SELECT DISTINCT j.item_id FROM {jobs} WHERE (j.status IN ({marks}) OR {labelled})"
            query += where
            return {r[0] for r in db.execute(query, [*sorted(statuses), *params])}

    def level_table(self, level: str, item_ids: list[str]) -> tuple[list[str], np.ndarray]:
        """Every property computed at ``level`` (sorted) and an [items, properties] array of their
        values for ``item_ids`` (NaN where an item has none; a duplicate has its original's)."""
        with self.workspace.connect() as db:
            rows = db.execute(
                f"SELECT j.item_id, l.property, l.value FROM {_LEVEL_SERVED} WHERE {_SERVES} AND b.level = ?",
                (level,),
            ).fetchall()
        properties = sorted({r[1] for r in rows})
        row_of = {item_id: k for k, item_id in enumerate(item_ids)}
        col_of = {prop: k for k, prop in enumerate(properties)}
        table = np.full((len(item_ids), len(properties)), np.nan)
        for item_id, prop, value in rows:
            if item_id in row_of:
                table[row_of[item_id], col_of[prop]] = value
        return properties, table

    def jobs(self, *, batch_id: str | None = None, job_ids: list[str] | None = None) -> list[JobRecord]:
        """Jobs of a batch (insertion order) or with the given ids."""
        with self.workspace.connect() as db:
            if batch_id is not None:
                rows = db.execute(
                    f"SELECT {_JOB_COLUMNS} FROM {_JOBS} WHERE j.batch_id = ? ORDER BY j.rowid", (batch_id,)
                ).fetchall()
            else:
                ids = job_ids or []
                marks = _marks(ids)
                query = f"SELECT {_JOB_COLUMNS} FROM {_JOBS} WHERE j.job_id IN ({marks})"
                rows = db.execute(query, ids).fetchall()
        return [_job(r) for r in rows]

    def job_states(self, batch_id: str) -> list[tuple[str, str, str | None]]:
        """``(item_id, status, reason)`` of every job of a batch, in queue order (no structure
        decoded: a 100,000-item batch reads in a fraction of a second)."""
        with self.workspace.connect() as db:
            rows = db.execute(
                "SELECT item_id, status, reason FROM validation_jobs WHERE batch_id = ? ORDER BY rowid",
                (batch_id,),
            )
            return [(r[0], r[1], r[2]) for r in rows]

    def unfinished_count(self, batch_id: str) -> int:
        """Jobs of a batch not finished yet, or duplicates of an unfinished calculation (read
        without decoding structures, for polling)."""
        finished = sorted(FINISHED_STATUSES)
        marks = _marks(finished)
        with self.workspace.connect() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM validation_jobs j"
                " LEFT JOIN validation_jobs o ON o.job_id = j.duplicate_of"
                f" WHERE j.batch_id = ? AND (j.status NOT IN ({marks}) OR o.status NOT IN ({marks}))",
                (batch_id, *finished, *finished),
            ).fetchone()
        return int(n)

    def batch_size(self, batch_id: str) -> int:
        """Jobs in a batch."""
        with self.workspace.connect() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM validation_jobs WHERE batch_id = ?", (batch_id,)
            ).fetchone()
        return int(n)

    def jobs_with_status(self, status: JobStatus, *, executor: str) -> list[JobRecord]:
        """All jobs of ``executor`` in state ``status``."""
        with self.workspace.connect() as db:
            rows = db.execute(
                f"SELECT {_JOB_COLUMNS} FROM {_JOBS} WHERE j.status = ? AND b.executor = ? ORDER BY j.rowid",
                (status, executor),
            ).fetchall()
        return [_job(r) for r in rows]

    def comparable_jobs(self, level: str, formulas: Collection[str]) -> list[JobRecord]:
        """Original (non-duplicate) jobs at ``level`` with one of these reduced formulas that are
        not failed, in queue order (one query; only those structures are decoded)."""
        with self.workspace.connect() as db:
            rows = db.execute(
                f"SELECT {_JOB_COLUMNS} FROM {_LEVEL_JOBS} WHERE b.level = ?"
                " AND j.status IN ('queued', 'running', 'done') ORDER BY j.rowid",
                (level,),
            )
            return [_job(r) for r in rows if r["formula"] in formulas]

    def count(self, executor: str, statuses: tuple[str, ...] = ("queued", "running")) -> int:
        """Number of jobs of ``executor`` in these states."""
        marks = _marks(statuses)
        with self.workspace.connect() as db:
            (n,) = db.execute(
                f"SELECT COUNT(*) FROM validation_jobs WHERE {_OF_EXECUTOR} AND status IN ({marks})",
                (executor, *statuses),
            ).fetchone()
        return int(n)

    def claim(self, *, executor: str = "local") -> JobRecord | None:
        """Atomically move the oldest queued job of ``executor`` to ``running`` (None when none is
        queued, or another process claimed it first)."""
        with self.workspace.connect() as db:
            row = db.execute(
                f"SELECT job_id FROM validation_jobs WHERE status = 'queued' AND {_OF_EXECUTOR}"
                " ORDER BY rowid LIMIT 1",
                (executor,),
            ).fetchone()
        claimed = self.claim_ids([row[0]], executor=executor) if row is not None else []
        return claimed[0] if claimed else None

    def claim_ids(
        self,
        job_ids: Sequence[str],
        *,
        executor: str,
        remote_id: str | None = None,
        reason: str | None = None,
    ) -> list[JobRecord]:
        """Atomically move these jobs of ``executor`` to ``running``, in one transaction; returns
        those claimed, in the order given.

        With ``remote_id`` (where they run, e.g. a Slurm job id) that is recorded too, and a job
        already ``running`` under the same ``remote_id`` is claimed again: the attempt that
        held it there is gone.
        """
        claimed = []
        with self.workspace.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            for job_id in job_ids:
                cur = db.execute(
                    "UPDATE validation_jobs SET status = 'running', attempts = attempts + 1, started_at = ?,"
                    " remote_id = COALESCE(?, remote_id), reason = COALESCE(?, reason)"
                    f" WHERE job_id = ? AND {_OF_EXECUTOR}"
                    " AND (status = 'queued' OR (status = 'running' AND remote_id = ?))",
                    (time.time(), remote_id, reason, job_id, executor, remote_id),
                )
                if cur.rowcount:
                    claimed.append(job_id)
        by_id = {job.job_id: job for job in self.jobs(job_ids=claimed)} if claimed else {}
        return [by_id[job_id] for job_id in claimed]

    def claim_more(self, level: str, n: int, *, executor: str = "local") -> list[JobRecord]:
        """Atomically move up to ``n`` more queued jobs of ``level`` (the oldest) to ``running``:
        the rest of a chunk of single points that run as one task."""
        with self.workspace.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            ids = [
                r[0]
                for r in db.execute(
                    f"SELECT j.job_id FROM {_JOBS} WHERE j.status = 'queued' AND b.executor = ?"
                    " AND b.level = ? ORDER BY j.rowid LIMIT ?",
                    (executor, level, n),
                )
            ]
            db.executemany(
                "UPDATE validation_jobs SET status = 'running', attempts = attempts + 1, started_at = ?"
                " WHERE job_id = ?",
                [(time.time(), job_id) for job_id in ids],
            )
        return self.jobs(job_ids=ids) if ids else []

    def transition(
        self, job_id: str, old: JobStatus, new: JobStatus, reason: str | None, *, remote_id: str | None = None
    ) -> bool:
        """Move a job from ``old`` to ``new`` only if it is still ``old`` (and held by ``remote_id``
        when given); returns whether it moved. Never overwrites a state someone else just set."""
        return job_id in self.transition_many([job_id], old, new, reason, remote_id=remote_id)

    def transition_many(
        self,
        job_ids: Sequence[str],
        old: JobStatus,
        new: JobStatus,
        reason: str | None = None,
        *,
        remote_id: str | None = None,
    ) -> set[str]:
        """:meth:`transition` for many jobs in one transaction; returns those that moved."""
        finished = time.time() if new in FINISHED_STATUSES else None
        held = " AND remote_id = ?" if remote_id is not None else ""
        moved = set()
        with self.workspace.connect() as db:
            for job_id in job_ids:
                cur = db.execute(
                    "UPDATE validation_jobs SET status = ?, reason = ?, finished_at = ?"
                    f" WHERE job_id = ? AND status = ?{held}",
                    (new, reason, finished, job_id, old, *([remote_id] if remote_id is not None else [])),
                )
                if cur.rowcount == 1:
                    moved.add(job_id)
        return moved

    def status_counts(self, executor: str | None = None) -> dict[str, int]:
        """Number of jobs per state (of one executor, or all)."""
        query = "SELECT status, COUNT(*) FROM validation_jobs"
        args: tuple[str, ...] = ()
        if executor is not None:
            query, args = f"{query} WHERE {_OF_EXECUTOR}", (executor,)
        with self.workspace.connect() as db:
            rows = db.execute(query + " GROUP BY status", args).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def requeue_running(self, executor: str) -> tuple[int, int]:
        """Put jobs left ``running`` by a dead worker back in the queue, except those whose worker
        died during each of :data:`MAX_ATTEMPTS` attempts: they fail. Returns (re-queued, failed)."""
        with self.workspace.connect() as db:
            failed = db.execute(
                "UPDATE validation_jobs SET status = 'failed', finished_at = ?, reason ="
                " 'its worker died during each of ' || attempts || ' attempts (see calcs/worker.log)'"
                f" WHERE status = 'running' AND attempts >= ? AND {_OF_EXECUTOR}",
                (time.time(), MAX_ATTEMPTS, executor),
            ).rowcount
            requeued = db.execute(
                "UPDATE validation_jobs SET status = 'queued', reason = 're-queued after worker restart'"
                f" WHERE status = 'running' AND {_OF_EXECUTOR}",
                (executor,),
            ).rowcount
        return requeued, failed

    def set_status(self, job_id: str, status: JobStatus, reason: str | None = None, **fields: Any) -> None:
        """Update a job's state (and optional columns such as ``remote_id``)."""
        extra = "".join(f", {k} = ?" for k in fields)
        finished = time.time() if status in FINISHED_STATUSES else None
        with self.workspace.connect() as db:
            db.execute(
                f"UPDATE validation_jobs SET status = ?, reason = ?, finished_at = ?{extra} WHERE job_id = ?",
                (status, reason, finished, *fields.values(), job_id),
            )

    def finish(self, results: Sequence[Finished]) -> None:
        """Mark the jobs of ``results`` ``done`` and write their labels, in one transaction."""
        now = time.time()
        with self.workspace.connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.job.job_id, prop, float(value), unit, json.dumps(r.provenance), now)
                    for r in results
                    for prop, (value, unit) in r.labels.items()
                ],
            )
            db.executemany(
                "UPDATE validation_jobs SET status = 'done', reason = NULL, finished_at = ?,"
                " calc_seconds = ?, task_doc = ? WHERE job_id = ?",
                [(now, r.calc_seconds, r.task_doc, r.job.job_id) for r in results],
            )

    def labels(self, job_ids: list[str]) -> list[LabelRecord]:
        """Labels of these jobs."""
        marks = _marks(job_ids)
        with self.workspace.connect() as db:
            rows = db.execute(
                f"SELECT l.*, j.item_id, b.level FROM {_JOBS} JOIN labels l ON l.job_id = j.job_id"
                f" WHERE l.job_id IN ({marks}) ORDER BY l.rowid",
                job_ids,
            ).fetchall()
        return [
            LabelRecord(
                r["job_id"],
                r["item_id"],
                r["level"],
                r["property"],
                r["value"],
                r["unit"],
                json.loads(r["provenance"]),
            )
            for r in rows
        ]

    def formation_energies(self, level: str) -> list[tuple[str, str, float]]:
        """``(item id, formula, formation energy per atom)`` of every item labelled at ``level``:
        the points of the convex hull at that level (:mod:`matloop.stability`)."""
        with self.workspace.connect() as db:
            rows = db.execute(
                f"SELECT j.item_id, j.formula, l.value FROM {_LEVEL_SERVED} WHERE {_SERVES} AND b.level = ?"
                " AND l.property = 'formation_energy_per_atom' ORDER BY j.rowid",
                (level,),
            ).fetchall()
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    # elemental references ---------------------------------------------------------------
    def references(self, level: str) -> dict[str, float]:
        """Cached elemental reference energies (eV/atom) at ``level``."""
        with self.workspace.connect() as db:
            rows = db.execute(
                "SELECT element, energy_per_atom FROM validation_references WHERE level = ?", (level,)
            ).fetchall()
        return {r[0]: float(r[1]) for r in rows}

    def add_references(self, level: str, energies: dict[str, float], provenance: dict[str, Any]) -> None:
        """Cache elemental reference energies; existing ones are kept (computed once per element)."""
        with self.workspace.connect() as db:
            for element, energy in energies.items():
                db.execute(
                    "INSERT OR IGNORE INTO validation_references VALUES (?, ?, ?, ?)",
                    (level, element, float(energy), json.dumps(provenance)),
                )
