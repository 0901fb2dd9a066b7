"""Journals left by processes that died (and spool files of earlier versions): adopted, replayed.

A process that dies leaves its journal behind with rows that may not be in the database. The
kernel released its `flock` when it died, so the next process to look (at start, and again
while its database cannot be written) can take that lock: the journal is then adopted, its
lock held by its new owner so that no sibling replays it as well. The lock of a process that
is still running cannot be taken, so a live sibling's journal is never touched. Segments
whose lock file is missing are adopted by publishing a lock for them (`publish_lock` fails
if someone else did first).

An adopted journal is replayed file by file, in order, a batch at a time; its offset moves
only once a batch is in the database, so a replay cut short (the database locked again)
starts where it stopped, and rows written twice are skipped by `Store.write`. Each file is
deleted once read to its end, the lock file last. A line with no newline at the very end of
a file is a write cut short by the crash: it is skipped and counted (`torn`), and kept in
the `.bad` file with any line that cannot be read, never dropped silently.

`<db>.spool.jsonl` (and `.replaying`), the spool of earlier versions, holds the same lines
and is adopted the same way, with the lock taken on the file itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .journal import publish_lock, read_lines, take_lock


@dataclass
class Orphan:
    """One dead process's journal (or one old spool file), and where its replay stands."""

    name: str
    lock_fd: int
    files: list[Path]
    lock_path: Path | None = None  # None: the lock is on the (single) file itself
    offset: int = 0  # in files[0]: the rows before it are in the database

    def read(self, max_lines: int) -> tuple[list[bytes], int, bytes]:
        """The next lines of the current file (blocking): (lines, offset after them, torn tail)."""
        return read_lines(self.files[0], self.offset, None, max_lines)

    def next_file(self) -> None:
        """The current file is in the database: delete it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.files.pop(0))
        self.offset = 0

    def finish(self) -> None:
        """Every file is replayed: remove the lock file, then release it."""
        if self.lock_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
        self.release()

    def release(self) -> None:
        """Give the journal up (at shutdown): its files stay for the next start."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def adopt(directory: Path, own_id: str | None, legacy_spools: Sequence[Path] = ()) -> list[Orphan]:
    """Every journal in `directory` whose process is gone (not `own_id`), and every old spool
    file that no one holds: locked by us now, oldest file first."""
    found: list[Orphan] = []
    for path in legacy_spools:  # `.replaying` first: it holds the older rows
        if path.is_file() and (fd := take_lock(path)) is not None:
            found.append(Orphan(path.name, fd, [path]))
    if not directory.is_dir():
        return found
    segments: dict[str, list[Path]] = {}
    for path in directory.glob("*.jsonl"):
        segments.setdefault(path.name.split(".", 1)[0], []).append(path)
    locks = {path.name[: -len(".lock")] for path in directory.glob("*.lock")}
    for journal_id in sorted(locks | set(segments)):
        if journal_id == own_id or journal_id.startswith("."):
            continue
        lock_path = directory / f"{journal_id}.lock"
        fd = take_lock(lock_path) if journal_id in locks else publish_lock(lock_path)
        if fd is None:
            continue  # a live process's journal (or another starter adopted it first)
        files = sorted(p for p in directory.glob(f"{journal_id}.*.jsonl"))  # again, under the lock
        orphan = Orphan(journal_id, fd, files, lock_path)
        if files:
            found.append(orphan)
        else:
            orphan.finish()  # a lock with nothing left: a process that died between two files
    return found
