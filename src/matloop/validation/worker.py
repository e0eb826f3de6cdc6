"""The local executor's background worker: ``python -P -m matloop.validation.worker WORKSPACE LOCK_FD OWNER``.

One worker per workspace, guarded by an exclusive ``flock`` on ``calcs/worker.lock`` (which
holds the worker's pid; the OS releases the lock even after ``kill -9``). The executor takes
the lock *before* spawning and hands the locked file descriptor to the worker (``LOCK_FD``),
so no second worker can start while the first is still importing. ``-P`` keeps the caller's
working directory off the module path, so a user's ``inspect.py`` cannot shadow the standard
library. On start the worker re-queues jobs left ``running`` by a dead worker, then claims queued
jobs and runs them with the settings of the latest caller: one at a time, or the single points of
a screening level in chunks of ``settings.validation.chunk_size``, one task each. It exits after a few
idle seconds, or after its current job once the process that started it (``OWNER``: the
campaign, or the Python session that queued the work) is gone; the next
``queue_validation``/``validation_status``/``collect_validation`` call starts a new one.
A worker that dies before serving is counted (``calcs/worker-starts``): after
:data:`MAX_STARTS` such starts in a row the executor fails the queued jobs with the worker's
last output instead of respawning it forever.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from matloop.filelock import try_flock, write_holder
from matloop.settings import Settings
from matloop.validation.levels import get_level
from matloop.validation.runner import run_jobs
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace

IDLE_EXIT_S = 3.0
SETTINGS_FILE = "worker-settings.json"
STARTS_FILE = "worker-starts"
MAX_STARTS = 3


def lock_path(workspace: Workspace) -> Path:
    return workspace.dir("calcs") / "worker.lock"


def try_lock(workspace: Workspace) -> int | None:
    """An fd holding this workspace's worker lock, or None when a worker holds it."""
    return try_flock(lock_path(workspace))


def failed_starts(workspace: Workspace) -> int:
    """Workers started since the last one that began serving (each a start that failed or is
    still importing)."""
    path = workspace.dir("calcs") / STARTS_FILE
    return int(path.read_text() or 0) if path.exists() else 0


def set_failed_starts(workspace: Workspace, n: int) -> None:
    (workspace.dir("calcs") / STARTS_FILE).write_text(str(n))


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(workspace: Workspace, lock_fd: int | None = None, owner: int | None = None) -> int:
    """Run queued local jobs until the queue stays empty or process ``owner`` is gone; returns
    the number of jobs run.

    ``lock_fd`` is the already-locked descriptor handed over by the executor; without it
    the worker takes the lock itself (and returns at once if another worker holds it).
    """
    fd = lock_fd if lock_fd is not None else try_lock(workspace)
    if fd is None:
        return 0
    try:
        write_holder(fd, str(os.getpid()))
        set_failed_starts(workspace, 0)
        store = ValidationStore(workspace)
        store.requeue_running("local")
        ran, idle_since = 0, time.monotonic()
        while _alive(owner):
            job = store.claim(executor="local")
            if job is None:
                if time.monotonic() - idle_since > IDLE_EXIT_S:
                    return ran
                time.sleep(0.2)
                continue
            current = Workspace(workspace.root, settings=read_settings(workspace.root))
            jobs = [job]
            if get_level(job.level).single_point is not None:
                jobs += store.claim_more(job.level, current.settings.validation.chunk_size - 1)
            run_jobs(current, jobs)
            ran += len(jobs)
            idle_since = time.monotonic()
        return ran
    finally:
        os.close(fd)


def read_settings(root: Path) -> Settings | None:
    """Settings of the latest caller that queued work (written by the local executor)."""
    path = root / "calcs" / SETTINGS_FILE
    return Settings.model_validate_json(path.read_text()) if path.exists() else None


def main(argv: list[str]) -> int:
    root = Path(argv[1])
    lock_fd = int(argv[2]) if len(argv) > 2 else None
    owner = int(argv[3]) if len(argv) > 3 else None
    serve(Workspace(root, settings=read_settings(root)), lock_fd, owner)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
