"""Exclusive OS file locks (``flock``): held by an open descriptor, released by the OS when the
process that holds it ends, even after ``kill -9``."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


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


def is_held(path: Path) -> bool:
    """Whether some process holds the lock on ``path`` now."""
    if not path.exists():
        return False
    fd = try_flock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def write_holder(fd: int, text: str) -> None:
    """Record who holds the lock (read back by :func:`holder`)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)


def holder(path: Path) -> str:
    """What the lock's holder wrote about itself, or an empty string."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""
