"""What a worker does with one unit of a batch: run a whole job, track one part of a job split
by object, or merge the parts into the job's outputs. The same code runs in this process (the
default) and inside a Ray actor.

Every unit starts by removing what an earlier, killed attempt of it left in the job's work
folder (``sam2_web.batch.state``), runs the job with ``sam2_web.jobs.run_job`` into that
folder, then publishes the outputs into the output folder together
(``sam2_web.export.output.StagedOutputs``) and writes the completion marker last.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from sam2_web.errors import CancelledError, Sam2WebError
from sam2_web.jobs import MaskJob, OutputSpec, load_job_predictor, run_job
from sam2_web.video.cancel import cancel_check

from sam2_web.batch import state
from sam2_web.batch.manifest import JobProblem

# (unit id, stage, done, total): stage is "load", "track" or "export <format>".
Report = Callable[[str, str, int, int], None]
PART_STEM = "part"

JOB, PART, MERGE = "job", "part", "merge"


class SplitRefusedError(Sam2WebError, RuntimeError):
    """A part of a split job met a model whose outputs couple the objects (non-overlapping masks)."""


@dataclass(frozen=True)
class Unit:
    """One piece of work for a worker.

    Attributes:
        job_id: the manifest job it belongs to.
        kind: ``job`` (the whole job), ``part`` (some of its objects) or ``merge`` (of the parts).
        job: the whole mask job (its outputs are the final ones).
        fingerprint: the job's fingerprint, recorded in its completion marker.
        part: the part's number (parts and merge).
        obj_ids: the objects a part tracks.
        parts: how many parts the job was split into.
    """

    job_id: str
    kind: str
    job: MaskJob
    fingerprint: str
    part: int = 0
    obj_ids: tuple[int, ...] = ()
    parts: int = 1

    @property
    def uid(self) -> str:
        """Unique name of the unit within a batch."""
        if self.kind == PART:
            return f"{self.job_id}#part{self.part}"
        return self.job_id if self.kind == JOB else f"{self.job_id}#merge"

    @property
    def model_key(self) -> tuple:
        """Units with the same key share a loaded model (merges need none: ``()``)."""
        return () if self.kind == MERGE else model_key(self.job)


@dataclass
class UnitResult:
    """What a unit did.

    Attributes:
        uid: the unit's id.
        ok: it finished and (for a job or merge) published its outputs.
        seconds: time on the worker, model loading excluded.
        num_frames: frames of the clip (0 if unknown).
        tracked: ``(first, last)`` tracked frames.
        outputs: ``{format: path}`` (a part: its private PNG mattes).
        error: what went wrong, when not ``ok``.
        cancelled: it stopped because the batch was cancelled.
        worker: the worker that ran it.
    """

    uid: str
    ok: bool
    seconds: float = 0.0
    num_frames: int = 0
    tracked: tuple[int, int] = (0, 0)
    outputs: dict[str, str] = field(default_factory=dict)
    error: Optional[JobProblem] = None
    cancelled: bool = False
    worker: str = ""


def model_key(job: MaskJob) -> tuple:
    """What decides which loaded model a job needs (model, device, overrides, checkpoint)."""
    return tuple(job.app_overrides()) + (str(job.checkpoint) if job.checkpoint else "",)


def worker_name(label: str) -> str:
    """``label@host pid N``: who ran a unit, for the report."""
    return f"{label}@{socket.gethostname()} pid {os.getpid()}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux keeps ``ru_maxrss`` across fork + exec, so a worker started by a bigger process would
    report its parent's peak; the process's own high-water mark (``VmHWM``) is read instead where
    ``/proc`` has it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    scale = 2 ** 20 if sys.platform == "darwin" else 1024.0  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def peak_gpu_mb() -> Optional[float]:
    """Peak GPU memory this process reserved (torch's allocator), in MiB; None without CUDA use."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_reserved() / 2 ** 20, 1)


class ModelLoads:
    """A worker's model loads: the predictor each job asks for, from the one model cache
    (``sam2_web.models.load_predictor``, which keeps the ``keep`` most recent), and what loading cost.

    Attributes:
        loads: how many models were loaded (cache misses) for this worker's jobs.
        load_seconds: time spent loading them.
    """

    def __init__(self, keep: int = 1):
        from sam2_web.loading import set_cache_size

        set_cache_size(max(1, keep))
        self.loads = 0
        self.load_seconds = 0.0

    def get(self, job: MaskJob) -> Any:
        """The predictor ``job`` asks for, loaded on first use.

        Raises:
            UnknownModelError, CheckpointError, HubUnavailableError, ConfigNotFoundError, hydra errors.
        """
        from sam2_web.loading import load_stats

        loads, seconds = load_stats()
        try:
            return load_job_predictor(job)
        finally:
            after_loads, after_seconds = load_stats()
            self.loads += after_loads - loads
            self.load_seconds += after_seconds - seconds


# --------------------------------------------------------------------------- running units


def execute(unit: Unit, models: ModelLoads, *, worker: str, report: Optional[Report] = None,
            cancel: Any = None) -> UnitResult:
    """Run ``unit`` and say what happened; a failing job is a result, not an exception.

    Args:
        unit: the unit.
        models: this worker's loaded models.
        worker: the worker's name, for the report.
        report: receives ``(unit id, stage, done, total)`` progress.
        cancel: an Event or callable that stops the job between frames.
    Returns:
        A :class:`UnitResult` (``ok`` false with the error's type and message on failure; the
        job's work folder is removed then, so nothing half-done stays).
    Raises:
        KeyboardInterrupt: passed on (after the same clean-up).
    """
    def progress(stage: str, done: int, total: int) -> None:
        if report is not None:
            report(unit.uid, stage, done, total)

    start = time.perf_counter()
    load_before = models.load_seconds
    try:
        if unit.kind == JOB:
            result = _run_whole(unit, models, progress, cancel)
        elif unit.kind == PART:
            result = _run_part(unit, models, progress, cancel)
        else:
            result = _merge(unit, progress, cancel)
    except CancelledError as exc:
        _clean_after_failure(unit)
        return UnitResult(unit.uid, False, error=JobProblem.of(exc), cancelled=True, worker=worker)
    except KeyboardInterrupt:
        _clean_after_failure(unit)
        raise
    except Exception as exc:  # any failure of this job stays with this job
        _clean_after_failure(unit)
        return UnitResult(unit.uid, False, seconds=time.perf_counter() - start, error=JobProblem.of(exc),
                          worker=worker)
    result.seconds = time.perf_counter() - start - (models.load_seconds - load_before)
    result.worker = worker
    return result


def _clean_after_failure(unit: Unit) -> None:
    if unit.kind == PART:
        shutil.rmtree(_part_dir(unit.job, unit.part), ignore_errors=True)
    elif unit.kind == MERGE:
        shutil.rmtree(state.work_dir(unit.job) / "merged", ignore_errors=True)
    else:
        shutil.rmtree(state.work_dir(unit.job), ignore_errors=True)


def _targets(job: MaskJob) -> dict[str, tuple[str, bool]]:
    """``{format: (output file name, is a folder)}``."""
    from sam2_web.export.formats import FORMATS
    from sam2_web.jobs.outputs import target_path

    return {fmt: (target_path(state.out_dir(job), state.stem(job), fmt).name, not FORMATS[fmt].extension)
            for fmt in job.output.formats}


def check_targets(job: MaskJob) -> None:
    """Fail before any work if the job's outputs may not be written where it asks (the checks
    ``run_job`` makes: formats, a plain output name, never the input clip, never a folder that
    sam2-web did not write, a writable folder). Leaves nothing behind: the output folder exists
    already (the batch creates them up front), so only an empty staging folder comes and goes.

    Raises:
        ExportError: with what to do.
    """
    from sam2_web.jobs.outputs import Staging

    Staging.open(job).discard()


def _staged(job: MaskJob, folder: Path) -> Any:
    """The job's outputs staged in ``folder`` (inside its work folder), ready to publish."""
    from sam2_web.export.output import StagedOutputs

    targets = dict(_targets(job).values())
    return StagedOutputs(state.out_dir(job), folder, targets)


def _publish(job: MaskJob, fingerprint: str, folder: Path, num_frames: int, tracked: tuple[int, int]) -> dict[str, str]:
    """Publish the outputs staged in ``folder`` together, then the completion marker.

    A kill in between leaves published outputs without a marker: a re-run redoes the job.
    """
    names = {fmt: name for fmt, (name, _folder) in _targets(job).items()}
    published = _staged(job, folder).publish()
    outputs = {fmt: published[name] for fmt, name in names.items()}
    state.commit_marker(job, state.prepare_marker(job, fingerprint, outputs, num_frames, tracked))
    shutil.rmtree(state.work_dir(job), ignore_errors=True)
    return {fmt: str(path) for fmt, path in outputs.items()}


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)  # what a killed attempt left
    folder.mkdir(parents=True)
    return folder


def _run_whole(unit: Unit, models: ModelLoads, progress: Report, cancel: Any) -> UnitResult:
    job = unit.job
    state.clear_marker(job)
    check_targets(job)
    staged = _fresh(state.work_dir(job)) / "out"
    predictor = models.get(job)
    private = replace(job, output=replace(job.output, out_dir=staged))
    result = run_job(private, progress=progress, cancel=cancel, predictor=predictor)
    outputs = _publish(job, unit.fingerprint, staged, result.num_frames, result.tracked)
    return UnitResult(unit.uid, True, num_frames=result.num_frames, tracked=result.tracked, outputs=outputs)


def _part_dir(job: MaskJob, part: int) -> Path:
    return state.work_dir(job) / f"part-{part}"


def _run_part(unit: Unit, models: ModelLoads, progress: Report, cancel: Any) -> UnitResult:
    job = unit.job
    state.clear_marker(job)
    folder = _fresh(_part_dir(job, unit.part))
    predictor = models.get(job)
    if getattr(predictor, "non_overlap_masks", False):
        raise SplitRefusedError("this model keeps one object per pixel (engine.non_overlap_masks), so its objects "
                                "cannot be tracked apart; run the job without split_objects")
    # Unnamed objects: the part's mattes land in obj_<id> folders the merge can find.
    objects = tuple(replace(o, name=None) for o in job.objects if o.obj_id in unit.obj_ids)
    part = replace(job, objects=objects, output=OutputSpec(folder, formats=("png",), name=PART_STEM))
    result = run_job(part, progress=progress, cancel=cancel, predictor=predictor)
    return UnitResult(unit.uid, True, num_frames=result.num_frames, tracked=result.tracked,
                      outputs={"png": str(result.outputs["png"])})


class PartMasks:
    """Frame index → ``{obj_id: mask}`` read back from the parts' PNG mattes."""

    def __init__(self, job: MaskJob, parts: int, num_frames: int):
        self.files: dict[int, list[Path]] = {}
        for k in range(parts):
            folder = _part_dir(job, k) / f"{PART_STEM}_png"
            for sub in sorted(folder.glob("obj_*")):
                obj_id = int(sub.name[len("obj_"):])
                self.files[obj_id] = sorted(sub.glob(f"{PART_STEM}_*.png"))
        missing = [o for o in job.obj_ids if len(self.files.get(o, ())) != num_frames]
        if missing:
            raise RuntimeError(f"the tracked masks of object(s) {missing} are incomplete; run the job again")

    def __call__(self, i: int) -> dict[int, Any]:
        import numpy as np
        from PIL import Image

        out = {}
        for obj_id, files in self.files.items():
            with Image.open(files[i]) as image:
                out[obj_id] = np.asarray(image) > 127
        return out


def _merge(unit: Unit, progress: Report, cancel: Any) -> UnitResult:
    from sam2_web.jobs.outputs import Staging, export_all
    from sam2_web.media.frames import open_frames

    job = unit.job
    check_targets(job)
    folder = _fresh(state.work_dir(job) / "merged")
    names = {fmt: name for fmt, (name, _folder) in _targets(job).items()}
    with open_frames(job.clip) as frames:
        info = frames.info
        first, last = job.frame_range.resolve(info.num_frames)
        masks = PartMasks(job, unit.parts, info.num_frames)
        staging = Staging(_staged(job, folder), names)
        export_all(job, staging, masks, info=info, frames=frames.get, progress=progress,
                   is_cancelled=cancel_check(cancel))
    outputs = _publish(job, unit.fingerprint, folder, info.num_frames, (first, last))
    return UnitResult(unit.uid, True, num_frames=info.num_frames, tracked=(first, last), outputs=outputs)
