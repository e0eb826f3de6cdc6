"""A workspace: a directory holding every artefact a campaign makes, addressed by id.

Big objects (dataset slices, graph sets, models, calculations) live in files under the
workspace; the SQLite file ``state.sqlite`` indexes them so tools pass short ids around.
Modules that need tables of their own create them with ``CREATE TABLE IF NOT EXISTS``
through :meth:`Workspace.connect`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matloop.errors import ToolInputError
from matloop.settings import Settings, get_settings

_ARTIFACTS_SQL = """
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    created TEXT NOT NULL,
    meta TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Artifact:
    """One registered object: its id, kind (``slice``, ``features``, ``model`` ...), file and metadata."""

    id: str
    kind: str
    path: Path
    created: str
    meta: dict[str, Any]


class _Connections(threading.local):
    """This thread's open connections, one per database file, and how deep each is in
    :meth:`Workspace.connect` blocks."""

    def __init__(self) -> None:
        self.open: dict[Path, tuple[tuple[int, int, int], sqlite3.Connection]] = {}
        self.depth: dict[Path, int] = {}


_CONNECTIONS = _Connections()
#: connections inherited through a fork: never used nor closed in the child (closing them could
#: release the parent's locks on the file)
_INHERITED: list[sqlite3.Connection] = []


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """(process, device, inode) of ``path`` now, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return os.getpid(), st.st_dev, st.st_ino


def _connection(path: Path) -> sqlite3.Connection:
    """This thread's connection to ``path``, opened on first use and kept open: opening one costs
    more than most queries, and a connection that stays open means no close is ever the last one,
    which would checkpoint the write-ahead log (and sync the file) after every transaction. A new
    one is opened in a forked child and when the file was replaced (deleted, restored)."""
    identity = _file_identity(path)
    held = _CONNECTIONS.open.get(path)
    if held is not None and held[0] == identity:
        return held[1]
    if held is not None:
        if held[0][0] != os.getpid():
            _INHERITED.append(held[1])
        else:
            held[1].close()
    db = sqlite3.connect(path, timeout=60.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=60000")
    identity = _file_identity(path)
    assert identity is not None  # setting WAL mode wrote the file
    _CONNECTIONS.open[path] = (identity, db)
    return db


class Workspace:
    """A directory with ``state.sqlite`` and one sub-directory per artefact kind."""

    def __init__(self, root: str | Path, *, settings: Settings | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = settings or get_settings()
        with self.connect() as db:
            db.execute(_ARTIFACTS_SQL)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Workspace:
        """The default workspace named by the settings."""
        settings = settings or get_settings()
        return cls(settings.workspace, settings=settings)

    @property
    def db_path(self) -> Path:
        return self.root / "state.sqlite"

    def dir(self, name: str) -> Path:
        """Sub-directory ``name`` of the workspace, created on first use."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's SQLite connection in WAL mode, as one transaction: commits on success,
        rolls back on error. A block inside another on the same file is part of the outer
        transaction. Commits are not synced to disk one by one (``synchronous=NORMAL``): a crashed
        process loses nothing, a power cut at most the last transactions, and the file stays
        consistent either way."""
        path, depth = self.db_path, _CONNECTIONS.depth
        db = _connection(path) if not depth.get(path) else _CONNECTIONS.open[path][1]
        depth[path] = depth.get(path, 0) + 1
        try:
            yield db
            if depth[path] == 1:
                db.commit()
        except BaseException:
            if depth[path] == 1:
                db.rollback()
            raise
        finally:
            depth[path] -= 1

    @staticmethod
    def new_id(kind: str, digits: int = 8) -> str:
        """A fresh id such as ``slice-3f9a1c2e``: ``digits`` random hex digits. Eight make a
        collision unlikely among thousands of ids (artefacts, batches); kinds made by the hundred
        thousand (calculations) need 16 (among 10⁶ ids, a chance of 3·10⁻⁸)."""
        return f"{kind}-{uuid.uuid4().hex[:digits]}"

    def save_artifact(
        self,
        kind: str,
        suffix: str,
        write: Callable[[Path], object],
        meta: dict[str, Any],
        *,
        artifact_id: str | None = None,
    ) -> Artifact:
        """Write a new artefact with ``write(path)`` (when it returns a path, that is the file it
        wrote) under the kind's folder (``slices``, ``features``, ``models``, ``selections`` ...) and
        record it; ``artifact_id`` defaults to a fresh ``<kind>-…`` id."""
        artifact_id = artifact_id or self.new_id(kind)
        folder = kind if kind.endswith("s") else f"{kind}s"
        path = self.dir(folder) / f"{artifact_id}{suffix}"
        written = write(path)
        return self.register(kind, artifact_id, written if isinstance(written, Path) else path, meta)

    def register(self, kind: str, artifact_id: str, path: Path, meta: dict[str, Any]) -> Artifact:
        """Record an artefact whose file has already been written."""
        created = datetime.now(UTC).isoformat(timespec="seconds")
        rel = path.resolve().relative_to(self.root) if path.is_absolute() else path
        with self.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO artifacts (id, kind, path, created, meta) VALUES (?, ?, ?, ?, ?)",
                (artifact_id, kind, str(rel), created, json.dumps(meta, default=str)),
            )
        return Artifact(artifact_id, kind, self.root / rel, created, meta)

    def artifact(self, artifact_id: str, kind: str | None = None) -> Artifact:
        """Look up an artefact; an unknown id raises :class:`ToolInputError` listing known ones."""
        with self.connect() as db:
            row = db.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        if row is None or (kind is not None and row["kind"] != kind):
            known = [a.id for a in self.artifacts(kind)][-20:]
            what = f"{kind} id" if kind else "id"
            raise ToolInputError(f"expected a known {what}, got {artifact_id!r}; valid values are {known}")
        return Artifact(
            row["id"], row["kind"], self.root / row["path"], row["created"], json.loads(row["meta"])
        )

    def artifacts(self, kind: str | None = None) -> list[Artifact]:
        """All artefacts (of one kind), oldest first."""
        query = "SELECT * FROM artifacts" + (" WHERE kind = ?" if kind else "") + " ORDER BY rowid"
        with self.connect() as db:
            rows = db.execute(query, (kind,) if kind else ()).fetchall()
        return [
            Artifact(r["id"], r["kind"], self.root / r["path"], r["created"], json.loads(r["meta"]))
            for r in rows
        ]


def resolve_workspace(workspace: Workspace | str | Path | None) -> Workspace:
    """Accept a workspace, a path, or ``None`` (the settings' default)."""
    if isinstance(workspace, Workspace):
        return workspace
    if workspace is None:
        return Workspace.from_settings()
    return Workspace(workspace)
