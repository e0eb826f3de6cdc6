"""The local executor's background worker: ``python -m matloop.validation.worker WORKSPACE``.

One worker per workspace (an exclusive ``flock`` on ``calcs/worker.lock``, which holds its
pid; the OS releases the lock even after ``kill -9``). On start it re-queues jobs left
``running`` by a dead worker, then claims queued jobs one at a time and runs them with the
settings of the latest caller; it exits after a few idle seconds, and the next
``queue_validation``/``validation_status``/``collect_validation`` call starts a new one.
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


def serve(workspace: Workspace) -> int:
    """Run queued local jobs until the queue stays empty; returns the number of jobs run."""
    with open(lock_path(workspace), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another worker is alive
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
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


def read_settings(root: Path) -> Settings | None:
    """Settings of the latest caller that queued work (written by the local executor)."""
    path = root / "calcs" / SETTINGS_FILE
    return Settings.model_validate_json(path.read_text()) if path.exists() else None


def main(argv: list[str]) -> int:
    root = Path(argv[1])
    serve(Workspace(root, settings=read_settings(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
