"""Whether the SQLite log's files may be written, asked before SQLite touches them.

In WAL mode every connection maps the `-shm` file into memory and writes to it (the WAL
index), readers included. Once the file is immutable (`chattr +i`) the kernel answers the
next write to a page of that mapping with SIGBUS, which kills the process: no error that
SQLite or Python could catch. At low traffic that write is the first after the flag was
set. So the writer asks first (an `access` call per file, a few microseconds per batch) and
treats files it may not write as a database that refuses writes: the rows wait (proxy.recorder).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

#: The files of a SQLite database in WAL mode.
SUFFIXES = ("", "-wal", "-shm")


def unwritable_file(path: Path) -> Path | None:
    """The first of the database's files that exists and may not be written; None when all may."""
    for suffix in SUFFIXES:
        name = f"{path}{suffix}"
        if not os.access(name, os.W_OK) and os.path.exists(name):
            return Path(name)
    return None


def check_writable(path: Path) -> None:
    """Raise sqlite3.OperationalError, as SQLite does for a read-only database, before any
    connection touches files that may not be written."""
    refused = unwritable_file(path)
    if refused is not None:
        raise sqlite3.OperationalError(
            f"attempt to write a readonly database ({refused.name} is read-only or immutable)"
        )
