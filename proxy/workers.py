"""`serve --workers N`: N proxy processes on one port, and the parent that keeps them running.

One proxy process keeps one core busy at most. Each worker is a whole proxy: its own event
loop, upstream connections, recorder and journal (`<db>.journal/<pid>-<tag>.*`, locked by
that process alone), all writing the same log: SQLite in WAL, where each batch is one
`BEGIN IMMEDIATE` transaction that waits out the busy timeout while a sibling writes, or
PostgreSQL.

The parent (`Supervisor`):

* runs what must happen once before any worker starts (`prepare_log`): the log's
  migrations, so that workers never race on them. Journals that dead processes left are
  adopted under `flock` by whichever worker takes the lock first (`proxy.orphans`), and the
  `/ui/` copy of a PostgreSQL log is refreshed under a lock file of its own: neither races;
* holds the port (`reserve_port`); each worker listens on a socket of its own bound to it
  with SO_REUSEPORT (`listen`), and the kernel spreads new connections over them. (One
  socket shared by every worker, as uvicorn's `--workers` does, was measured too: at 256
  connections its p99 was 3-6 times as long; docs/deployment.md has the figures);
* on SIGTERM or SIGINT, sends SIGTERM to every worker, each of which drains as a single
  process does (stops accepting, finishes the calls in flight, the recorder writes its last
  rows), waits for them all and returns 0;
* replaces a worker that exits on its own (killed, crashed). The replacement adopts the dead
  worker's journal when it starts (`Recorder.start`), so every answered call of the dead
  worker still gets its row; the dead worker's live metric gauges are removed
  (`mark_process_dead`). A worker that fails before it serves (uvicorn's exit code 3)
  stops them all instead: its replacement would fail the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("proxy.workers")

#: The exit code of a worker that failed before it served (uvicorn's `STARTUP_FAILURE`).
STARTUP_FAILURE = 3
#: A worker that dies sooner than this after its start is replaced only this long after it started.
MIN_LIFETIME_S = 1.0
#: The longest wait for a signal before the workers are looked at anyway. SIGCHLD is sent to
#: the process, not to this thread: a thread that does not block it (one a library started)
#: takes it and it is gone, so the exits are also polled for.
REAP_INTERVAL_S = 1.0
#: uvicorn's default listen backlog.
BACKLOG = 2048
WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
PR_SET_PDEATHSIG = 1


def worker_count(flag: int | None, env_value: str | None) -> int:
    """`--workers` if given, else `WORKERS`, else 1; anything but a positive integer is refused."""
    if flag is not None:
        return flag
    if env_value is None or not env_value.strip():
        return 1
    return positive_int(env_value, "WORKERS")


def positive_int(text: str, name: str = "--workers") -> int:
    """`text` as a count of processes (raises ValueError saying what is wrong)."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number of worker processes (1 or more), not {text!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be 1 or more (the number of worker processes), not {value}")
    return value


class PortTaken(OSError):
    """The port is bound already (by another `serve --workers` too, which SO_REUSEPORT alone would let in)."""


def reserve_port(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Hold the port for the workers' sockets (raises PortTaken): a socket bound with
    SO_REUSEPORT that never listens, so it takes no connections, and a name in the abstract
    socket namespace taken after the port, so that a second `serve --workers` on it fails as
    a second `serve` does instead of taking a share of the calls. `port` 0: a free port,
    which `getsockname()` of the first socket tells."""
    try:
        reservation = _reuseport_socket(host, port)
    except OSError as exc:
        raise PortTaken(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    port = reservation.getsockname()[1]
    guard = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        guard.bind(f"\0study-query-llm:port:{port}")
    except OSError:
        reservation.close()
        guard.close()
        raise PortTaken(errno.EADDRINUSE, f"another `serve --workers` listens on port {port} already") from None
    return reservation, guard


def listen(host: str, port: int) -> socket.socket:
    """One worker's listening socket; the kernel spreads new connections over the workers' sockets."""
    sock = _reuseport_socket(host, port)
    try:
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Worker:
    slot: int  # its place among the `count`, which its replacement takes
    started: float  # time.monotonic()


class Supervisor:
    """Runs `target` (one worker's whole life, returning its exit code) in `count` forked processes;
    its argument is True for the very first worker only."""

    def __init__(self, count: int, target: Callable[[bool], int], metrics_dir: str | None = None) -> None:
        self.count = count
        self.target = target
        self.started = 0
        self.metrics_dir = metrics_dir
        self.workers: dict[int, Worker] = {}  # by pid
        self.waiting: dict[int, float] = {}  # slot → when its replacement may start
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        """Start the workers, keep them, drain them on SIGTERM/SIGINT: 0, or 1 if a worker could not start."""
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            for slot in range(self.count):
                self._spawn(slot)
            while self.workers or self.waiting:
                timeout = min([REAP_INTERVAL_S, *(at - time.monotonic() for at in self.waiting.values())])
                info = signal.sigtimedwait(WATCHED, max(0.01, timeout))
                if info is not None and info.si_signo != signal.SIGCHLD:
                    self._stop(signal.Signals(info.si_signo).name)
                self._reap()
                if not self.stopping:
                    self._respawn_due()
        finally:
            while signal.sigtimedwait(WATCHED, 0) is not None:
                pass  # a late signal would end this process by its default action, not with our code
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        return 1 if self.failed else 0

    def _spawn(self, slot: int) -> None:
        parent, first = os.getpid(), self.started == 0
        self.started += 1
        pid = os.fork()
        if pid == 0:  # the worker
            code = STARTUP_FAILURE  # an exception out of `target`: it could not start (or serve)
            try:
                _become_worker(parent)
                code = self.target(first)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = Worker(slot, time.monotonic())
        log.info("worker %d started (%d of %d)", pid, slot + 1, self.count)

    def _stop(self, reason: str) -> None:
        """SIGTERM to every worker (again at every signal: uvicorn counts a second SIGTERM as the same request)."""
        if not self.stopping:
            log.info("%s: draining %d workers", reason, len(self.workers))
        self.stopping = True
        self.waiting.clear()
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._forget_metrics(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code == STARTUP_FAILURE:
                log.error("worker %d could not start: stopping every worker", pid)
                self.failed = True
                self._stop("a worker failed to start")
                continue
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            log.warning("worker %d %s; starting another in its place (it writes the rows left in the journal)", pid, how)
            self.waiting[worker.slot] = worker.started + MIN_LIFETIME_S

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for slot, at in list(self.waiting.items()):
            if at <= now:
                del self.waiting[slot]
                self._spawn(slot)

    def _forget_metrics(self, pid: int) -> None:
        """The dead worker's live gauges leave the sums; its counts stay, as they should."""
        if self.metrics_dir is None:
            return
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, self.metrics_dir)


def _become_worker(parent: int) -> None:
    """In a freshly forked worker: the signals of a lone `serve`, and SIGTERM should the parent
    die (Linux), so that no worker outlives it unnoticed."""
    # The handlers first, then the mask: a SIGTERM that came since the fork is pending, and must
    # meet SIG_DFL (nothing to drain yet), not a handler the parent had, which would swallow it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # before uvicorn takes it
    # Ctrl-C reaches the whole process group: the parent turns it into SIGTERM for every
    # worker; uvicorn, while it runs, hears it too (and one SIGINT is a graceful stop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)
