"""Run a manifest: decide which jobs are already complete, hand the rest to a worker pool (this
process, or Ray), follow progress, and gather the report.

    report = run_batch(load_manifest("shots.yaml"))                       # in this process
    report = run_batch(manifest, pool=RayPool("local", workers=2))    # on a local Ray
    report.write("shots.report.json"); sys.exit(report.exit_code)

A pool calls back into :class:`BatchRun` (``take``, ``started``, ``progress``,
``finished``, ``died``); the run keeps the queue of units, the live status and the outcomes.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Protocol

from sam2_web.batch import state
from sam2_web.batch.manifest import BatchJob, JobProblem, Manifest
from sam2_web.batch.progress import BatchProgressView, BatchStatus, RunningUnit
from sam2_web.batch.report import CANCELLED, DONE, SKIPPED, BatchReport, JobOutcome, WorkerStats
from sam2_web.batch.units import UnitQueue, split_units
from sam2_web.batch.work import JOB, MERGE, PART, Unit, UnitResult

Observer = Callable[[BatchStatus], None]


class WorkerPool(Protocol):
    """Where units run: :class:`~sam2_web.batch.local.InProcessPool` or
    :class:`~sam2_web.batch.ray_pool.RayPool`."""

    name: str

    def start(self) -> int:
        """Get the workers ready; returns how many there are."""

    def run(self, batch: "BatchRun") -> None:
        """Run units from ``batch.take()`` until it returns None and nothing is in flight."""

    def stop(self) -> list[WorkerStats]:
        """Release the workers; returns their statistics."""


class BatchRun:
    """The units of one run, its live status and its outcomes (what a pool reports into).

    Args:
        jobs: ``(job, fingerprint, units, note)`` for every job to run.
        status: the live numbers (already counting skipped and failed-at-load jobs).
        view: the progress display.
        observer: called with the status after every change (tests watch workers through it).
        retries: how many times a unit is started again after its worker died.
    """

    def __init__(self, jobs: list[tuple[BatchJob, str, list[Unit], Optional[str]]], status: BatchStatus,
                 view: BatchProgressView, observer: Optional[Observer] = None, retries: int = 2):
        self.jobs = {bj.id: bj for bj, _fp, _units, _note in jobs}
        self.notes = {bj.id: note for bj, _fp, _units, note in jobs}
        self.units = {bj.id: units for bj, _fp, units, _note in jobs}
        self.queue = UnitQueue([u for _bj, _fp, units, _note in jobs for u in units])
        self.status = status
        self.view = view
        self.observer = observer
        self.retries = retries
        self.cancel = threading.Event()
        self.outcomes: dict[str, JobOutcome] = {}
        self.attempts: Counter[str] = Counter()
        self._results: dict[str, list[UnitResult]] = {}
        self._first_start: dict[str, float] = {}

    # ------------------------------------------------------------------ pool interface

    def take(self, model_key: Optional[tuple] = None) -> Optional[Unit]:
        """The next unit to run (preferring one for the loaded ``model_key``), or None."""
        if self.cancel.is_set():
            return None
        return self.queue.take(model_key)

    def has_pending(self) -> bool:
        """Units wait to be taken."""
        return bool(self.queue) and not self.cancel.is_set()

    def started(self, unit: Unit, worker: str, pid: int) -> int:
        """A worker starts ``unit``; returns the attempt number (1, then 2... after a worker died)."""
        self.attempts[unit.uid] += 1
        attempt = self.attempts[unit.uid]
        self._first_start.setdefault(unit.job_id, time.monotonic())
        self.status.running[unit.uid] = RunningUnit(unit.uid, unit.job_id, worker, pid, attempt, parts=unit.parts)
        if attempt > 1:
            self.status.retries += 1
        what = unit.uid if unit.kind == JOB else f"{unit.uid} ({_describe(unit)})"
        again = f" (attempt {attempt})" if attempt > 1 else ""
        self.view.message(f"start {what} on {worker}{again}")
        self._notify()
        return attempt

    def progress(self, uid: str, stage: str, done: int, total: int) -> None:
        """Progress of a running unit."""
        running = self.status.running.get(uid)
        if running is None:
            return
        running.stage, running.done, running.total = stage, int(done), int(total)
        self._notify()

    def died(self, unit: Unit, reason: str) -> None:
        """The worker running ``unit`` died; start it again (a bounded number of times) or fail it."""
        running = self.status.running.pop(unit.uid, None)
        worker = running.worker if running else ""
        if unit.job_id in self.outcomes:  # a part of a job that already failed: nothing to redo
            self._notify()
            return
        if self.cancel.is_set():  # the batch stopped its workers itself
            stopped = JobProblem("CancelledError", "the batch was stopped; nothing of this job was written")
            self.finished(unit, UnitResult(unit.uid, False, error=stopped, cancelled=True, worker=worker))
            return
        if self.attempts[unit.uid] <= self.retries:
            self.view.message(f"worker {worker} died running {unit.uid} ({reason}); it runs again")
            self.queue.put_back(unit)
            self._notify()
            return
        tries = self.attempts[unit.uid]
        problem = JobProblem("WorkerDiedError", f"the worker died {tries} time(s) while running this job, the last "
                                                f"time with: {reason}; it may need more memory than a worker has")
        self.finished(unit, UnitResult(unit.uid, False, error=problem, worker=worker))

    def finished(self, unit: Unit, result: UnitResult) -> None:
        """A unit ended (done, failed or cancelled)."""
        self.status.running.pop(unit.uid, None)
        if unit.job_id in self.outcomes:  # a part of a job that already failed
            self._notify()
            return
        self._results.setdefault(unit.job_id, []).append(result)
        if not result.ok:
            if unit.kind == PART:
                self.queue.give_up(unit.job_id)
            self._conclude(unit, result)
        elif unit.kind == PART:
            self.status.part_frames += result.num_frames / unit.parts
            self.queue.part_done(unit)
        else:
            self._conclude(unit, result)
        self._notify()

    # ------------------------------------------------------------------ outcomes

    def _conclude(self, unit: Unit, result: UnitResult) -> None:
        bj = self.jobs[unit.job_id]
        results = self._results[unit.job_id]
        attempts = max(self.attempts[u.uid] for u in self.units[unit.job_id])
        workers = sorted({r.worker for r in results if r.worker})
        split = None
        if unit.kind != JOB:
            parts = [u for u in self.units[unit.job_id] if u.kind == PART]
            split = {"parts": len(parts), "objects": [list(u.obj_ids) for u in parts],
                     "worker_seconds": round(sum(r.seconds for r in results), 3)}
        common = dict(attempts=attempts, split=split, note=self.notes[unit.job_id],
                      worker=workers[0] if len(workers) == 1 else workers or None)
        if result.cancelled:
            outcome = JobOutcome(bj.id, str(bj.clip), CANCELLED, **common)
        elif not result.ok:
            problem = result.error or JobProblem("Error", "unknown error")
            if unit.kind == PART:
                problem = JobProblem(problem.kind, f"part {unit.part} ({_describe(unit)}): {problem.message}")
            outcome = JobOutcome.failed(bj, problem, **common)
        else:
            seconds = result.seconds
            if unit.kind == MERGE:  # the job's wall time, from its first part to the merge
                seconds = time.monotonic() - self._first_start[unit.job_id]
            outcome = JobOutcome(bj.id, str(bj.clip), DONE, frames=result.num_frames, tracked=list(result.tracked),
                                 seconds=seconds, outputs=dict(result.outputs), **common)
        self.outcomes[bj.id] = outcome
        finished_parts = [r for r in results if r.ok and r.uid != result.uid and unit.kind != JOB]
        self.status.part_frames -= sum(r.num_frames / unit.parts for r in finished_parts)
        if outcome.status == DONE:
            self.status.done += 1
            self.status.frames += outcome.frames or 0
            line = (f"done  {bj.id}: {outcome.frames} frames in {outcome.seconds:.1f} s "
                    f"({outcome.s_per_frame:.3f} s/frame)")
        elif outcome.status == CANCELLED:
            line = f"cancelled {bj.id}"
        else:
            self.status.failed += 1
            line = f"FAILED {bj.id}: {outcome.error['message']}"
        self.view.message(line)

    def _notify(self) -> None:
        self.view.update(self.status)
        if self.observer is not None:
            self.observer(self.status)


def _describe(unit: Unit) -> str:
    if unit.kind == PART:
        return f"object(s) {', '.join(map(str, unit.obj_ids))}"
    return "merge of the parts" if unit.kind == MERGE else "whole job"


# --------------------------------------------------------------------------- the batch


def plan(manifest: Manifest, *, force: bool = False) -> tuple[list[tuple[BatchJob, str]], dict[str, JobOutcome]]:
    """Which jobs run, and the outcomes already known (jobs already complete, jobs that cannot run).

    Args:
        force: redo jobs even when their outputs are complete.
    Returns:
        ``([(job, fingerprint), ...] to run, {job id: outcome})``.
    """
    to_run: list[tuple[BatchJob, str]] = []
    known: dict[str, JobOutcome] = {}
    for bj in manifest.jobs:
        if bj.problem is not None or bj.job is None:
            known[bj.id] = JobOutcome.failed(bj, bj.problem or JobProblem("Error", "no job"))
            continue
        digest = state.fingerprint(bj.job)
        record = None if force else state.completed(bj.job, digest)
        if record is None:
            to_run.append((bj, digest))
            continue
        outputs = {fmt: entry["path"] for fmt, entry in record["outputs"].items()}
        known[bj.id] = JobOutcome(bj.id, str(bj.clip), SKIPPED, frames=record.get("num_frames"),
                                  tracked=record.get("tracked"), outputs=outputs,
                                  note="already complete: same job, outputs unchanged since it finished")
    return to_run, known


def run_batch(manifest: Manifest, *, pool: Optional[WorkerPool] = None, force: bool = False,
              view: Optional[BatchProgressView] = None, observer: Optional[Observer] = None,
              retries: int = 2, cancel: Optional[threading.Event] = None) -> BatchReport:
    """Run every job of ``manifest`` that is not already complete.

    Args:
        manifest: from :func:`~sam2_web.batch.manifest.load_manifest`.
        pool: where to run (default: this process, one job after another).
        force: redo complete jobs too.
        view: progress display (default: none).
        observer: called with the live :class:`BatchStatus` after every change.
        retries: times a unit runs again after its worker died (Ray).
        cancel: set it to stop the batch (running jobs stop and leave nothing; finished ones stay).
    Returns:
        The :class:`BatchReport` (``exit_code`` says whether every job succeeded).
    Raises:
        RayUnavailableError: the Ray pool cannot start (not installed, cluster unreachable).
    """
    from sam2_web.batch.local import InProcessPool

    pool = pool or InProcessPool()
    view = view or BatchProgressView("none")
    begin = time.monotonic()
    to_run, known = plan(manifest, force=force)
    skipped = sum(1 for o in known.values() if o.status == SKIPPED)
    status = BatchStatus(jobs=len(manifest.jobs), to_run=len(to_run), skipped=skipped, invalid=len(known) - skipped)
    for outcome in known.values():
        if outcome.status != SKIPPED:
            view.message(f"FAILED {outcome.id}: {outcome.error['message']}")
    workers: list[WorkerStats] = []
    created = _create_out_dirs(bj.job for bj, _fp in to_run)
    batch: Optional[BatchRun] = None
    start_seconds = 0.0
    try:
        if to_run:
            count = pool.start()
            start_seconds = time.monotonic() - begin
            status.started = time.monotonic()  # the ETA counts from when the workers are ready
            jobs = []
            for bj, digest in to_run:
                if bj.split_objects:
                    units, note = split_units(bj.id, bj.job, digest, count)
                else:
                    units, note = [Unit(bj.id, JOB, bj.job, digest)], None
                jobs.append((bj, digest, units, note))
            batch = BatchRun(jobs, status, view, observer, retries)
            if cancel is not None:
                batch.cancel = cancel
            try:
                pool.run(batch)
            except KeyboardInterrupt:  # a second Ctrl-C: the running job cleaned up; report what stands
                batch.cancel.set()
            finally:
                workers = pool.stop()
    finally:
        view.close(status)
        outcomes = dict(known, **(batch.outcomes if batch else {}))
        for bj, _fp in to_run:
            if bj.id not in outcomes:
                outcomes[bj.id] = JobOutcome(bj.id, str(bj.clip), CANCELLED, note="the batch stopped before this job ran")
            if outcomes[bj.id].status != DONE:  # nothing runs any more: remove what its attempts left
                shutil.rmtree(state.work_dir(bj.job), ignore_errors=True)
        _remove_empty(created)
    jobs_out = [outcomes[bj.id] for bj in manifest.jobs]
    cancelled = any(o.status == CANCELLED for o in jobs_out)
    return BatchReport(str(manifest.path), pool.name, time.monotonic() - begin, jobs_out, workers, cancelled,
                       start_seconds)


def _create_out_dirs(jobs: Any) -> list[Path]:
    """Create the output folders up front (so concurrent jobs never race to create or remove
    them); returns those that did not exist, to remove again if they stay empty."""
    created: list[Path] = []
    for job in jobs:
        folder = state.out_dir(job)
        missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue  # the job reports it (with what to do) when it checks its outputs
        created.extend(p for p in missing if p not in created)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for path in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        try:
            path.rmdir()
        except OSError:
            pass
