"""Durable-file helpers shared by the event log and the file-based connectors: write
under a temporary name and fsync, rename into place (atomic on POSIX), fsync the
directory so the rename itself survives a power cut, and an exclusive writer lock that
dies with its process."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import IO

from dataflare_platform.errors import ConflictError, CorruptInputError


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


def open_lock_file(path: Path) -> IO[bytes]:
    """Open (creating it 0600) the lock file ``path`` for ``flock``.

    Something else in its place is refused naming it, never followed or waited on: a
    symlink (it could point anywhere the process may write), a directory, or a FIFO
    (``O_NONBLOCK`` so opening one cannot hang).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except IsADirectoryError:
        raise CorruptInputError(path, _NOT_A_LOCK_FILE.format(kind="a directory")) from None
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise CorruptInputError(path, _NOT_A_LOCK_FILE.format(kind="a symlink")) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise CorruptInputError(path, _NOT_A_LOCK_FILE.format(kind=kind))
    return os.fdopen(fd, "r+b")


_NOT_A_LOCK_FILE = (
    "the lock file is {kind}: move it aside (it is recreated as an empty file on the next start)"
)


class WriterLock:
    """An exclusive ``flock`` on a file: one writer per directory. The kernel drops it
    when the holder exits, SIGKILL included, so a crashed writer never blocks a restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, timeout_s: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open_lock_file(self.path)
        fd = os.dup(handle.fileno())
        handle.close()
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
