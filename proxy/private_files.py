"""Log files readable by their owner only, whatever the umask: the log holds every prompt.

Files are created with mode 0600 and directories with 0700, and the mode is set again with
`fchmod`/`chmod` after creation, because `open(…, 0o600)` only ever removes bits the umask
names: a umask of 022 leaves 0600 alone, but the explicit mode is what the docs promise.

SQLite creates a database's `-wal` and `-shm` files itself, later, and gives them the mode
of the database file (its unix VFS `fchmod`s a new file to the main file's permissions, past
the umask). So the database file is created here, empty and 0600, before SQLite opens it; an
existing one (and its `-wal`/`-shm`) is narrowed to 0600.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def open_private(path: Path, flags: int) -> int:
    """`os.open` with O_CREAT and mode 0600, set again on the descriptor (umask-proof)."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def append_private(path: Path, data: bytes) -> None:
    """Append `data` to a private file (created 0600 if missing)."""
    fd = open_private(path, os.O_WRONLY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """Make `path` (and missing parents) a directory only its owner can enter."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    with contextlib.suppress(PermissionError):  # not ours: leave it as the operator made it
        os.chmod(path, DIR_MODE)
    return path


def prepare_sqlite_file(path: Path) -> None:
    """Before SQLite opens `path`: create it empty and 0600, or narrow an existing one (and
    the files SQLite keeps beside it) to 0600, so that SQLite's own files come out 0600 too."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(open_private(path, os.O_WRONLY | os.O_EXCL))
        return
    except FileExistsError:
        pass
    except OSError:  # an unwritable place: SQLite will say so, and the recorder copes with it
        return
    for suffix in SQLITE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chmod(f"{path}{suffix}", FILE_MODE)
