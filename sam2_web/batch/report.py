"""The batch's JSON report: per job its status, frames, seconds, seconds per frame, worker, and
its outputs or its error; per worker its jobs, model loads and peak memory; and the exit code.

Job statuses: ``done`` (ran and published its outputs), ``skipped`` (already complete from an
earlier run), ``failed`` (see ``error``), ``cancelled`` (the batch was stopped first).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from sam2_web.batch.manifest import BatchJob, JobProblem

DONE, SKIPPED, FAILED, CANCELLED = "done", "skipped", "failed", "cancelled"

# Exit codes of `sam2-web batch` (besides 0 = every job done or skipped, 1 = unexpected error,
# 2 = usage error or invalid manifest, 130 = cancelled).
EXIT_JOBS_FAILED = 6
EXIT_NO_ENGINE = 7


@dataclass
class JobOutcome:
    """What became of one manifest job.

    Attributes:
        id: the job's id.
        clip: the clip.
        status: ``done``, ``skipped``, ``failed`` or ``cancelled``.
        frames: frames in the clip (and in each output), when known.
        tracked: ``[first, last]`` tracked frames.
        seconds: time the job took on its worker(s), model loading excluded.
        worker: who ran it (several names for a job split by object).
        attempts: how many times its longest-tried unit started (> 1: a worker died and it was retried).
        outputs: ``{format: path}`` of its published outputs.
        error: ``{"type": ..., "message": ...}`` when it failed.
        split: ``{"parts": n, "objects": [[ids], ...]}`` when it was split by object.
        note: why a requested split did not happen, or how a skip was decided.
    """

    id: str
    clip: str
    status: str
    frames: Optional[int] = None
    tracked: Optional[list[int]] = None
    seconds: Optional[float] = None
    worker: Any = None
    attempts: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    error: Optional[dict[str, str]] = None
    split: Optional[dict[str, Any]] = None
    note: Optional[str] = None

    @property
    def s_per_frame(self) -> Optional[float]:
        """Seconds per frame of the clip (None until the job ran)."""
        if self.status != DONE or not self.frames or self.seconds is None:
            return None
        return self.seconds / self.frames

    def to_json(self) -> dict:
        data = asdict(self)
        data["s_per_frame"] = None if self.s_per_frame is None else round(self.s_per_frame, 4)
        if self.seconds is not None:
            data["seconds"] = round(self.seconds, 3)
        return data

    @classmethod
    def failed(cls, job: "BatchJob", problem: "JobProblem", **more: Any) -> "JobOutcome":
        """A job that failed with ``problem``."""
        return cls(job.id, str(job.clip), FAILED, error={"type": problem.kind, "message": problem.message}, **more)


@dataclass
class WorkerStats:
    """One worker over the whole batch.

    Attributes:
        name: ``label@host pid N`` (a Ray worker restarted after its process died reports its last process).
        units: units it finished (jobs, parts, merges).
        model_loads: how many times it loaded a model.
        load_seconds: time spent loading models.
        peak_rss_mb: its peak resident memory (MiB).
        peak_gpu_mb: the GPU memory it reserved at most (MiB), None when it used no GPU.
    """

    name: str
    units: int = 0
    model_loads: int = 0
    load_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: Optional[float] = None


@dataclass
class BatchReport:
    """The whole batch.

    Attributes:
        manifest: the manifest file.
        pool: ``in-process``, ``ray local`` or ``ray <address>``.
        seconds: wall time of the batch.
        jobs: one outcome per manifest job, in manifest order.
        workers: per-worker statistics.
        cancelled: the batch was stopped (Ctrl-C) before every job ran.
        start_seconds: time the pool took to get its workers ready (Ray start-up, 0 in-process).
    """

    manifest: str
    pool: str
    seconds: float
    jobs: list[JobOutcome]
    workers: list[WorkerStats] = field(default_factory=list)
    cancelled: bool = False
    start_seconds: float = 0.0

    def count(self, status: str) -> int:
        """Jobs with ``status``."""
        return sum(1 for j in self.jobs if j.status == status)

    @property
    def ok(self) -> bool:
        """Every job is done or was already complete."""
        return all(j.status in (DONE, SKIPPED) for j in self.jobs)

    @property
    def exit_code(self) -> int:
        """0 every job done or skipped, 130 cancelled, 6 at least one job failed."""
        if self.cancelled:
            return 130
        return 0 if self.ok else EXIT_JOBS_FAILED

    def to_json(self) -> dict:
        frames = sum(j.frames or 0 for j in self.jobs if j.status == DONE)
        busy = sum(j.seconds or 0.0 for j in self.jobs if j.status == DONE)
        return {
            "manifest": self.manifest,
            "pool": self.pool,
            "seconds": round(self.seconds, 3),
            "start_seconds": round(self.start_seconds, 3),
            "summary": {
                "jobs": len(self.jobs), **{s: self.count(s) for s in (DONE, SKIPPED, FAILED, CANCELLED)},
                "frames": frames,
                "s_per_frame": round(busy / frames, 4) if frames else None,
                "jobs_per_hour": round(self.count(DONE) * 3600.0 / self.seconds, 1) if self.seconds > 0 else None,
            },
            "exit_code": self.exit_code,
            "jobs": [j.to_json() for j in self.jobs],
            "workers": [asdict(w) for w in self.workers],
        }

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically: a complete file or the previous one)."""
        path = Path(path).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
