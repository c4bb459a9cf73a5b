"""Progress across a batch: jobs done, frames done and an ETA, as a tqdm bar on a terminal,
plain lines otherwise, or nothing.

:class:`BatchStatus` holds the live numbers (the runner updates it, views and observers read
it); the ETA assumes the remaining jobs go at the pace of the finished ones, counting the
running jobs' finished share.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

# Share of a job that is done when its tracking is done (exports take the rest).
_TRACK_SHARE = 0.85


@dataclass
class RunningUnit:
    """A unit a worker is running right now.

    Attributes:
        uid: the unit; job_id: its job.
        worker: the worker's name; pid: its process id.
        attempt: 1 for the first try, more after a worker died.
        stage: ``start``, ``load``, ``track`` or ``export <format>``; done/total: within it.
        parts: how many parts the unit's job was split into (1: not split).
    """

    uid: str
    job_id: str
    worker: str
    pid: int
    attempt: int = 1
    stage: str = "start"
    done: int = 0
    total: int = 0
    parts: int = 1

    def share(self) -> float:
        """Fraction of the unit's job this unit has done so far (0..1)."""
        if self.stage == "track" and self.total:
            share = _TRACK_SHARE * self.done / self.total
        elif self.stage.startswith("export"):
            share = _TRACK_SHARE + (1 - _TRACK_SHARE) * (self.done / self.total if self.total else 0)
        else:
            share = 0.0
        return share / self.parts


@dataclass
class BatchStatus:
    """Live numbers of a batch.

    Attributes:
        jobs: jobs in the manifest; to_run: those that run (not complete, not invalid).
        done, failed: jobs of this run that finished, by outcome.
        skipped: jobs already complete; invalid: jobs that could not start (e.g. bad prompts).
        frames: frames of the jobs done so far; part_frames: the share of finished parts of split
            jobs that are not done yet.
        running: units in flight, by unit id.
        retries: units started again after their worker died.
        started: ``time.monotonic()`` at the start.
    """

    jobs: int
    to_run: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    invalid: int = 0
    frames: int = 0
    part_frames: float = 0.0
    retries: int = 0
    running: dict[str, RunningUnit] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Jobs of this run that finished (done or failed)."""
        return self.done + self.failed

    def frames_done(self) -> int:
        """Frames of finished jobs plus frames tracked so far by running ones."""
        tracking = sum(r.done / r.parts for r in self.running.values() if r.stage == "track")
        exporting = sum(r.total / r.parts for r in self.running.values() if r.stage.startswith("export"))
        return self.frames + int(self.part_frames + tracking + exporting)

    def eta(self) -> Optional[float]:
        """Seconds until every job finished, or None before anything finished."""
        progress = self.finished + sum(r.share() for r in self.running.values())
        elapsed = time.monotonic() - self.started
        if progress <= 0 or elapsed <= 0:
            return None
        return max(0.0, elapsed * (self.to_run - progress) / progress)


def format_seconds(seconds: Optional[float]) -> str:
    """``H:MM:SS`` or ``?``."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class BatchProgressView:
    """Shows a :class:`BatchStatus` as a tqdm bar (``bar``), lines (``lines``) or not (``none``).

    ``auto`` picks a bar on a terminal, lines otherwise. Lines mode prints one line per started
    and finished job and a summary at most every ``every`` seconds.
    """

    def __init__(self, mode: str = "auto", stream: Any = None, every: float = 10.0):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self.every = every
        self._bar: Any = None
        self._last_line = 0.0
        self._lock = threading.Lock()

    def _summary(self, status: BatchStatus) -> str:
        return (f"{status.finished}/{status.to_run} jobs, {status.frames_done()} frames, "
                f"{len(status.running)} running, eta {format_seconds(status.eta())}")

    def update(self, status: BatchStatus) -> None:
        """Refresh the display with the latest numbers."""
        with self._lock:
            if self.mode == "bar":
                if self._bar is None:
                    from tqdm import tqdm

                    self._bar = tqdm(total=status.to_run, unit="job", file=self.stream, desc="batch",
                                     bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} jobs "
                                                "[{elapsed}{postfix}]")
                self._bar.set_postfix_str(f"{status.frames_done()} frames, eta {format_seconds(status.eta())}",
                                          refresh=False)
                self._bar.update(status.finished - self._bar.n)
            elif self.mode == "lines" and time.monotonic() - self._last_line >= self.every:
                self._last_line = time.monotonic()
                print(f"batch: {self._summary(status)}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """Print one line (job started/finished) without breaking the bar."""
        with self._lock:
            if self.mode == "none":
                return
            if self._bar is not None:
                self._bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def close(self, status: Optional[BatchStatus] = None) -> None:
        """Finish the display (a last summary line in lines mode)."""
        with self._lock:
            if self._bar is not None:
                if status is not None:
                    self._bar.update(status.finished - self._bar.n)
                self._bar.close()
                self._bar = None
            elif self.mode == "lines" and status is not None:
                print(f"batch: {self._summary(status)}", file=self.stream, flush=True)
