"""The local executor's background worker: ``python -m matloop.validation.worker WORKSPACE [LOCK_FD]``.

One worker per workspace, guarded by an exclusive ``flock`` on ``calcs/worker.lock`` (which
holds the worker's pid; the OS releases the lock even after ``kill -9``). The executor takes
the lock *before* spawning and hands the locked file descriptor to the worker (``LOCK_FD``),
so no second worker can start while the first is still importing. On start the worker
re-queues jobs left ``running`` by a dead worker, then claims queued jobs one at a time and
runs them with the settings of the latest caller; it exits after a few idle seconds, and the
next ``queue_validation``/``validation_status``/``collect_validation`` call starts a new one.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from matloop.settings import Settings
from matloop.validation.runner import run_job
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace

IDLE_EXIT_S = 3.0
SETTINGS_FILE = "worker-settings.json"


def lock_path(workspace: Workspace) -> Path:
    return workspace.dir("calcs") / "worker.lock"


def try_lock(workspace: Workspace) -> int | None:
    """An fd holding this workspace's worker lock, or None when a worker holds it."""
    return try_flock(lock_path(workspace))


def try_flock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path`` (created if missing), or None when another
    process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def serve(workspace: Workspace, lock_fd: int | None = None) -> int:
    """Run queued local jobs until the queue stays empty; returns the number of jobs run.

    ``lock_fd`` is the already-locked descriptor handed over by the executor; without it
    the worker takes the lock itself (and returns at once if another worker holds it).
    """
    fd = lock_fd if lock_fd is not None else try_lock(workspace)
    if fd is None:
        return 0
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        store = ValidationStore(workspace)
        store.requeue_running("local")
        ran, idle_since = 0, time.monotonic()
        while True:
            job = store.claim(executor="local")
            if job is None:
                if time.monotonic() - idle_since > IDLE_EXIT_S:
                    return ran
                time.sleep(0.2)
                continue
            run_job(Workspace(workspace.root, settings=read_settings(workspace.root)), job)
            ran += 1
            idle_since = time.monotonic()
    finally:
        os.close(fd)


def read_settings(root: Path) -> Settings | None:
    """Settings of the latest caller that queued work (written by the local executor)."""
    path = root / "calcs" / SETTINGS_FILE
    return Settings.model_validate_json(path.read_text()) if path.exists() else None


def main(argv: list[str]) -> int:
    root = Path(argv[1])
    lock_fd = int(argv[2]) if len(argv) > 2 else None
    serve(Workspace(root, settings=read_settings(root)), lock_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
