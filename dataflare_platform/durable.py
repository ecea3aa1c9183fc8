"""Durable-file helpers shared by the event log and the file-based connectors: write
under a temporary name and fsync, rename into place (atomic on POSIX), fsync the
directory so the rename itself survives a power cut, and an exclusive writer lock that
dies with its process."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from dataflare_platform.errors import ConflictError


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """All of ``data`` at ``path`` or the previous content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    tmp.replace(path)
    if fsync:
        fsync_dir(path.parent)


class WriterLock:
    """An exclusive ``flock`` on a file: one writer per directory. The kernel drops it
    when the holder exits, SIGKILL included, so a crashed writer never blocks a restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, timeout_s: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ConflictError(
                        f"another writer holds {self.path} (waited {timeout_s:g} s)"
                    ) from None
                time.sleep(0.1)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
