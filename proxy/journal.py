"""The journal: each log row on disk, in this process's own files, before its answer leaves.

`Journal.append(lines)` is one `os.write` of calls' journal lines (`proxy.logrow`) on an
`O_APPEND` descriptor. The lines are then in the kernel's page cache, which outlives the
process: a `kill -9`, the OOM killer or a container's SIGKILL cannot take them back. It does
not outlive the machine: a power cut or a kernel crash loses what the kernel had not yet
written out, unless the journal is synced (`sync=True`, the `power` durability: the
descriptors written to are listed by `unsynced()` for `proxy.group_commit` to fdatasync).

Files, in a directory next to the database (`log.db.journal/`, mode 0700, files 0600):

* `<id>.lock`: held with `flock(LOCK_EX)` for as long as the process lives; `<id>` is the
  process id and a random tag (in a container every run is pid 1). A lock that can be taken
  belongs to a process that died: `proxy.orphans` then adopts its files. A lock is published
  already locked (made under a temporary name, then `link`ed), so no one can see it unlocked.
* `<id>.<seq>.jsonl`: the segments, one line per call; a new one past `segment_bytes`.

The recorder tells the journal when rows are in the database (`settle`): a segment whose
rows are all there is deleted, or truncated if it is the one being appended to (one
`ftruncate` per commit at most). A clean shutdown with every row written leaves no file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from .private_files import open_private, private_dir

SEGMENT_BYTES = 4 * 1024 * 1024
APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class Segment:
    """One journal file: its size, the rows appended to it and how many are in the database."""

    __slots__ = ("seq", "path", "fd", "size", "rows", "settled")

    def __init__(self, seq: int, path: Path, fd: int) -> None:
        self.seq, self.path, self.fd = seq, path, fd
        self.size = self.rows = self.settled = 0


class Journal:
    def __init__(self, directory: str | os.PathLike[str], *, sync: bool = False,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.sync = sync
        self._unsynced: dict[int, None] = {}  # descriptors written since `unsynced()` (sync only)
        self.id: str | None = None
        self.current: Segment | None = None
        self.segments: dict[int, Segment] = {}  # by seq: every file not yet deleted
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None

    def __repr__(self) -> str:
        return f"Journal({str(self.directory)!r}, id={self.id!r})"

    @property
    def is_open(self) -> bool:
        return self.current is not None

    @property
    def unsettled(self) -> int:
        """Rows in the journal that are not yet in the database."""
        return sum(s.rows - s.settled for s in self.segments.values())

    def lock_path(self, journal_id: str | None = None) -> Path:
        return self.directory / f"{journal_id or self.id}.lock"

    def open(self) -> None:
        """Create the directory, publish this process's lock and its first segment (raises OSError)."""
        private_dir(self.directory)
        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_fd = publish_lock(self.lock_path())
        if self._lock_fd is None:  # a random tag taken: cannot happen by chance
            raise FileExistsError(self.lock_path())
        try:
            if self.sync:
                self._dir_fd = os.open(self.directory, os.O_RDONLY)
            self._new_segment(0)
        except OSError:
            self.close()
            raise

    def append(self, lines: bytes, rows: int = 1) -> Segment:
        """Append `rows` rows' lines with one write; return the segment holding them.

        Raises OSError (disk full, ...) with nothing of the lines left in the file.
        """
        segment = self.current
        assert segment is not None, "the journal is not open"
        start = segment.size
        try:
            written = os.write(segment.fd, lines)
            while written < len(lines):  # a regular file takes it all unless the disk is full
                written += os.write(segment.fd, lines[written:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, start)
            raise
        segment.size = start + written
        segment.rows += rows
        if self.sync:
            self._unsynced[segment.fd] = None
        if segment.size >= self.segment_bytes:
            self._new_segment(segment.seq + 1)
        return segment

    def unsynced(self) -> list[int]:
        """The descriptors written since the last call (for the sync of `power`)."""
        fds = list(self._unsynced)
        self._unsynced.clear()
        return fds

    def end(self) -> tuple[Segment, int]:
        """Where the next line goes."""
        assert self.current is not None
        return self.current, self.current.size

    def following(self, segment: Segment) -> Segment | None:
        """The segment after `segment` (None if it is the current one)."""
        return self.segments.get(segment.seq + 1)

    def settle(self, segment: Segment, rows: int) -> None:
        """`rows` of `segment` are in the database: drop the file once all of its rows are."""
        segment.settled += rows
        if segment.settled < segment.rows:
            return
        if segment is not self.current:
            self._remove(segment)
        elif segment.size:
            os.ftruncate(segment.fd, 0)
            segment.size = segment.rows = segment.settled = 0

    def close(self) -> int:
        """Close the files; delete them if every row is in the database, else keep them for the
        next start (the lock is released either way). Returns the rows left on disk."""
        left = self.unsettled
        for segment in list(self.segments.values()):
            if segment.settled >= segment.rows:
                self._remove(segment)
            else:
                os.close(segment.fd)
        self.segments.clear()
        self.current = None
        if self._lock_fd is not None:
            if not left:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.lock_path())
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        return left

    def _new_segment(self, seq: int) -> None:
        path = self.directory / f"{self.id}.{seq:06d}.jsonl"
        fd = open_private(path, APPEND_FLAGS)
        self.current = self.segments[seq] = Segment(seq, path, fd)
        if self._dir_fd is not None:
            self._unsynced[self._dir_fd] = None  # the new file's name must survive a power cut too

    def _remove(self, segment: Segment) -> None:
        if self.segments.get(segment.seq) is not segment:
            return  # already removed
        del self.segments[segment.seq]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)
        os.close(segment.fd)


# -- locks and reading, shared with proxy.orphans --------------------------------------------


def publish_lock(path: Path) -> int | None:
    """Create `path` already locked (temporary name, flock, then link): the descriptor, or None
    if `path` exists. Nobody can find it unlocked, so nobody mistakes it for a dead process's."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = open_private(temporary, os.O_RDWR | os.O_EXCL | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.link(temporary, path)
    except FileExistsError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return fd


def take_lock(path: Path) -> int | None:
    """Lock an existing `path` without waiting: the descriptor, or None if a live process holds
    it (or it went away meanwhile)."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # removed (and maybe made again) meanwhile
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def read_lines(path: Path, offset: int, end: int | None, max_lines: int) -> tuple[list[bytes], int, bytes]:
    """Whole lines of `path` from `offset`, up to `end` (None: the end of the file) and at most
    `max_lines`: (lines, the offset after them, a last line without its newline: a torn write)."""
    lines: list[bytes] = []
    with open(path, "rb") as file:
        file.seek(offset)
        while len(lines) < max_lines and (end is None or offset < end):
            line = file.readline(-1 if end is None else end - offset)
            if not line.endswith(b"\n"):
                return lines, offset, line
            lines.append(line)
            offset += len(line)
    return lines, offset, b""
