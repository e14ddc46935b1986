"""One writer per output folder: an exclusive OS file lock on `<folder>/.lock`.

Two trainings, embeddings, evaluations or runner sweeps writing into one folder would interleave
their logs and overwrite each other's checkpoints without a word. The lock is `fcntl.flock` on an
open file, so the operating system drops it when the holder exits or is killed (even by kill -9):
there is never a stale lock to clean up. The file holds the holder's pid, host and start time, so
a second writer's error says who holds the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class FolderLockedError(ValueError):
    """Another live process holds the folder's lock; the message names it (a ValueError, so every
    entry point reports it as one `error:` line)."""


class RunLock:
    """An exclusive lock on `folder` held from `acquire()` until `release()` or process exit."""

    def __init__(self, folder: str | Path, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created_folder = False

    def acquire(self) -> RunLock:
        """Take the lock or fail at once (no waiting) naming the holder."""
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = _held(self.folder, self.what, fd)
            os.close(fd)
            raise error from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder_info()).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self, remove_created: bool = False) -> None:
        """Drop the lock (the file stays; an unlocked file means nobody holds the folder).
        `remove_created`: a writer that failed before writing anything leaves no folder behind,
        so a folder this lock created and that holds only the lock file is removed."""
        if self._fd is None:
            return
        if remove_created and self._created_folder and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
            self.path.unlink()  # while still holding it, so no one else locks the removed file
            self.folder.rmdir()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.release(remove_created=exc_type is not None)


def refuse_if_held(folder: str | Path, what: str = "run") -> None:
    """Fail at once if another live process holds `folder`, creating nothing: a command calls this
    before its slow start-up (torch, CLIP), and its writer still takes the lock itself later."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:  # no lock file: nobody holds the folder
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _held(Path(folder), what, fd) from None
    finally:
        os.close(fd)  # drops the probe's own lock, if it got one


def _held(folder: Path, what: str, fd: int) -> FolderLockedError:
    return FolderLockedError(
        f"{folder} is in use by another {what} ({_read_holder(fd)}); wait for it to finish, "
        f"stop it, or choose another folder"
    )


def holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _read_holder(fd: int) -> str:
    """'pid 123 on host, since ...' from the lock file (the holder may still be writing it)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    holder = f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
    if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        holder += ": this process itself, whose earlier writer was not closed (e.g. a Trainer never run)"
    return holder
