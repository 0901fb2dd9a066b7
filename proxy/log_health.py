"""What `/healthz` says about the log: its counters, and `ok`, `degraded` (with the conditions
that hold) or `refusing` (HTTP 503: the proxy refuses calls because it could not log them).

Conditions, each true while it lasts:

* `database_unwritable`: the last write to the database failed (locked, read-only, full, down);
* `writer_behind`: a row has waited more than a second to reach the database;
* `rows_only_on_disk`: rows wait in the journal only (past the memory bound), or journals left
  by an earlier run are not in the database yet;
* `journal_unwritable`: the journal cannot be written (or, with `power`, synced): new rows are
  in memory only, and would not survive the death of the process;
* `rows_lost`: rows were dropped since start (only with `serve_unlogged`, or at shutdown when
  no disk took them);
* `refusing_calls`: no row can be kept (journal unwritable, memory full): calls get 503.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recorder import Recorder

#: A row that has waited longer than this means the writer is behind.
BEHIND_S = 1.0


def stats(recorder: Recorder) -> dict[str, Any]:
    """The recorder's counters (the table of `/healthz` fields in docs/durability.md)."""
    backlog = recorder.backlog
    oldest = backlog.oldest()
    return {
        "durability": recorder.durability,
        "pending": recorder.pending,
        "in_memory": len(backlog.memory),
        "memory_bytes": backlog.memory_bytes,
        "memory_limit_bytes": backlog.memory_limit,
        "on_disk_only": backlog.on_disk_only,
        "lag_seconds": round(time.monotonic() - oldest, 3) if oldest is not None else 0.0,
        "journal": str(recorder.journal.directory),
        "journaled": backlog.journaled,
        "earlier_journals": len(backlog.orphans),
        "written": recorder.written,
        "replayed": recorder.replayed,
        "degraded": recorder.degraded,
        "failed_batches": recorder.writer.failed_batches,
        "refused": recorder.writer.refused,
        "torn": recorder.torn,
        "lost": recorder.lost + backlog.lost + recorder.writer.lost,
        "refused_calls": recorder.refused_calls,
    }


def health(recorder: Recorder) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for `/healthz`."""
    stats = recorder.stats()
    backlog, commit = recorder.backlog, recorder.commit
    checks = {
        "database_unwritable": recorder.degraded,
        "writer_behind": stats["lag_seconds"] > BEHIND_S,
        "rows_only_on_disk": bool(backlog.on_disk_only or backlog.orphans),
        "journal_unwritable": backlog.journal_down or bool(commit is not None and commit.failed),
        "rows_lost": bool(stats["lost"]),
        "refusing_calls": not recorder.accepting,
    }
    conditions = [name for name, holds in checks.items() if holds]
    status = "refusing" if not recorder.accepting else "degraded" if conditions else "ok"
    return (200 if recorder.accepting else 503), {"status": status, "conditions": conditions, "log": stats}
