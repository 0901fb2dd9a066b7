"""How far a study has got, on stderr: a tqdm bar on a terminal, plain lines in a log file.

A study can run for hours under `nohup` or CI as well as in a terminal, so without a
terminal the bar's carriage returns give way to one line every `PLAIN_PROGRESS_INTERVAL`
seconds. Either way the run ends with one line that counts what happened.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

#: Without a terminal, a progress line this often (seconds).
PLAIN_PROGRESS_INTERVAL = 10.0


class Progress:
    """A tqdm bar (count, rate, ETA) on a terminal; plain lines every few seconds otherwise.
    Either way `close()` prints one final line."""

    def __init__(self, label: str, total: int, done: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.initial = label, total, done
        self.stream = stream or sys.stderr
        self.done, self.ok, self.failed, self.skipped = done, 0, 0, 0
        self.started = time.monotonic()
        self._next_line = self.started + PLAIN_PROGRESS_INTERVAL
        self._bar = None
        if _isatty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=done, unit="call", desc=label, file=self.stream,
                dynamic_ncols=True, smoothing=0.1, leave=True,
            )

    def advance(self, outcome: str) -> None:
        """`outcome`: "ok", "failed" or "skipped"."""
        self.done += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if self._bar is not None:
            self._bar.update(1)
            if self.failed or self.skipped:
                self._bar.set_postfix(failed=self.failed, skipped=self.skipped, refresh=False)
        elif time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + PLAIN_PROGRESS_INTERVAL
            print(self._line(), file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A message above the bar (a plain print would tear it)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """The final line: what became of the calls, the time taken and the rate."""
        if self._bar is not None:
            self._bar.close()
        elapsed, rate = self._elapsed_and_rate()
        parts = [f"{self.ok} ok", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.initial:
            parts.append(f"{self.initial} done before")
        print(
            f"{self.label}: {self.done}/{self.total} calls ({', '.join(parts)}) in {elapsed:.1f} s, {rate:.1f} calls/s",
            file=self.stream,
            flush=True,
        )

    def _line(self) -> str:
        _, rate = self._elapsed_and_rate()
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "?"
        return f"{self.label}: {self.done}/{self.total} calls, {rate:.1f} calls/s, ETA {eta}"

    def _elapsed_and_rate(self) -> tuple[float, float]:
        """Seconds since the start, and calls per second of this run (not those done before)."""
        elapsed = time.monotonic() - self.started
        return elapsed, (self.done - self.initial) / elapsed if elapsed > 0 else 0.0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
