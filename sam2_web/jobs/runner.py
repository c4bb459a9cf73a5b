"""Run a :class:`~sam2_web.jobs.job.MaskJob` in this process: load the model, open a session on
the clip, add the prompts, propagate with progress, export every format.

The clip is streamed (the engine decodes a few frames ahead and keeps compact results), so
memory stays bounded on long clips. Outputs are staged and published together at the end
(see ``sam2_web.jobs.outputs``). ``run_remote`` in ``sam2_web.jobs.remote`` does the same job
against a running app or Space.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sam2_web.errors import CancelledError, PromptError

from sam2_web.jobs.job import MaskJob
from sam2_web.jobs.prompts import ObjectPrompts
from sam2_web.jobs.outputs import Progress, Staging, export_all, export_one
from sam2_web.speeds import FrameClock, record_frames
from sam2_web.video.cancel import Cancel, cancel_check
from sam2_web.video.passes import pass_frames, reverses


@dataclass(frozen=True)
class JobResult:
    """What a finished job wrote.

    Attributes:
        outputs: ``{format: path}`` of every published output.
        num_frames: frames in the clip (and in every output).
        tracked: ``(first, last)`` frames that were tracked; the others are empty.
        obj_ids: the exported objects.
        notes: what the user should know about the run (e.g. found objects left out).
    """

    outputs: dict[str, Path]
    num_frames: int
    tracked: tuple[int, int]
    obj_ids: list[int]
    notes: tuple[str, ...] = ()


def load_job_predictor(job: MaskJob, progress: Optional[Progress] = None) -> Any:
    """The video predictor a job asks for: ``configs/app.yaml`` + the job's model/device/overrides,
    through the one loader (``sam2_web.models.load_app_predictor``, cached).

    Args:
        progress: receives ``("load", downloaded_bytes, total_bytes)`` during a download.
    Raises:
        UnknownModelError, CheckpointError, HubUnavailableError, ConfigNotFoundError, ConfigError;
        hydra's errors for a malformed override.
    """
    from sam2_web.models import load_app_predictor

    def on_download(done: int, total: int) -> None:
        progress("load", int(done), int(total or 0))

    return load_app_predictor(job.app_overrides(), checkpoint=job.checkpoint,
                              progress=on_download if progress else False)


def read_start_mask(path: Path, width: int, height: int) -> np.ndarray:
    """A start-mask image as an (H, W) bool mask: alpha where there is alpha, else non-black.

    Raises:
        PromptError: unreadable, or not the clip's size.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                values = np.asarray(image.convert("RGBA"))[..., 3]
            else:
                values = np.asarray(image.convert("L"))
    except Image.DecompressionBombError:
        raise PromptError(f"the start mask {path} claims more pixels than are safe to decode; give a mask "
                          "of the clip's size") from None
    except (OSError, ValueError) as exc:
        raise PromptError(f"cannot read the start mask {path} ({exc}); give a PNG or JPEG") from None
    if values.shape != (height, width):
        raise PromptError(
            f"the start mask {path} is {values.shape[1]}x{values.shape[0]} but the clip is {width}x{height}; "
            "give a mask of the clip's size"
        )
    return values > 127 if values.dtype == np.uint8 else values > 0


def add_prompts(session: Any, objects: tuple[ObjectPrompts, ...]) -> None:
    """Give the session every object's start mask, then its clicks and boxes (which refine a
    mask on the same frame)."""
    for obj in objects:
        if obj.start_mask is not None:
            mask = read_start_mask(obj.start_mask.path, session.info.width, session.info.height)
            session.add_mask(obj.start_mask.frame, obj.obj_id, mask)
        for prompt in obj.frames:
            session.add_prompt(
                prompt.frame, obj.obj_id,
                points=np.asarray(prompt.points, np.float32) if prompt.points else None,
                labels=np.asarray(prompt.labels, np.int32) if prompt.points else None,
                box=np.asarray(prompt.box, np.float32) if prompt.box is not None else None,
            )


def _passes(job: MaskJob, first: int, last: int, num_frames: int) -> tuple[int, list[tuple[bool, int, list[int]]]]:
    """The earliest prompted frame and the job's passes ``(reverse, max_frames, frames)`` in the
    order they run (``sam2_web.video.passes``)."""
    start = min(f for obj in job.objects for f in obj.prompted_frames())
    passes = []
    for reverse in reverses(job.direction):
        count = start - first if reverse else last - start
        passes.append((reverse, count, pass_frames(start, count, reverse, num_frames)))
    return start, passes


def pass_spans(job: MaskJob, first: int, last: int, num_frames: int) -> list[tuple[int, int]]:
    """``(lowest, highest)`` frame each pass of the job produces, in the order they run (an empty
    pass is ``(start + 1, start)``)."""
    start, passes = _passes(job, first, last, num_frames)
    return [(min(frames), max(frames)) if frames else (start + 1, start) for _, _, frames in passes]


def propagate_range(session: Any, job: MaskJob, first: int, last: int, *, progress: Optional[Progress],
                    cancel: Cancel, on_frame: Optional[Callable[[int, int], None]] = None) -> None:
    """Track from the earliest prompted frame forward to ``last`` and/or backward to ``first``.

    Over the whole clip this is exactly the engine's ``propagate(direction=...)``: the same
    passes in the same order. ``on_frame(frame_idx, pass_index)`` is called after each stored
    frame. Raises CancelledError when cancelled (finished frames stay stored).
    """
    start, passes = _passes(job, first, last, session.info.num_frames)
    total = sum(len(frames) for _, _, frames in passes)
    offset = 0
    for index, (reverse, count, frames) in enumerate(passes):
        length = len(frames)
        if length == 0:
            continue

        def report(done: int, _of: int, base: int = offset) -> None:
            if progress:
                progress("track", base + done, total)

        for result in session.propagate(direction="backward" if reverse else "forward", start_frame=start,
                                        max_frames=count, progress=report, cancel=cancel):
            if on_frame is not None:
                on_frame(result.frame_idx, index)
        offset += length


def masks_getter(session: Any, first: int, last: int) -> Callable[[int], Optional[dict[int, np.ndarray]]]:
    """Frame index → ``{obj_id: mask}`` from the session's stored results; None outside the range."""
    def get(i: int) -> Optional[dict[int, np.ndarray]]:
        if not first <= i <= last:
            return None
        result = session.result(i)
        if result is None:
            return None
        return {int(o): result.masks[k] for k, o in enumerate(result.obj_ids)}
    return get


def _timed(progress: Optional[Progress], clock: FrameClock) -> Progress:
    """``progress`` that also times each tracked frame on ``clock``."""
    def report(stage: str, done: int, total: int) -> None:
        if stage == "track":
            clock.tick()
        if progress:
            progress(stage, done, total)
    return report


def _record_speed(predictor: Any, objects: int, clock: FrameClock) -> None:
    """Remember this run's s/frame for the model on this device (the app's estimates and
    ``model=auto`` read it; see ``sam2_web.speeds``)."""
    from sam2_web.models import speed_key

    key = speed_key(predictor)
    if key is not None:
        record_frames(*key, objects, clock.seconds)


def run_job(job: MaskJob, *, progress: Optional[Progress] = None, cancel: Cancel = None,
            predictor: Any = None, frames: Any = None, session_options: Optional[dict] = None) -> JobResult:
    """Run ``job`` in this process and publish its outputs.

    Args:
        job: the mask job.
        progress: ``progress(stage, done, total)`` with stage ``load``/``find``/``track``/``export <fmt>``.
        cancel: an Event or callable; checked between frames.
        predictor: an already loaded video predictor (default: load the job's model).
        frames: ``job.clip`` already opened (and checked) as a ``FrameSource``, read as it is;
            the caller closes it (default: open ``job.clip`` here).
        session_options: engine session options (``SessionOptions`` fields: ``temp_dir``,
            ``feature_cache_mb`` ...) overriding the predictor's.
    Returns:
        A :class:`JobResult`.
    Raises:
        PromptError, FrameIndexError: prompts or range that do not fit the clip; ``auto``/``text``
            that found nothing.
        VideoReadError: the clip cannot be read.
        UnknownModelError, CheckpointError, HubUnavailableError: the model cannot be loaded.
        ExportError: the output folder is not writable or a writer failed.
        CancelledError: cancelled; nothing is published.
    """
    from sam2_web.matting.band import mask_resolution_of
    from sam2_web.media.frames import open_frames

    is_cancelled = cancel_check(cancel)
    own_frames = frames is None
    staging = Staging.open(job)  # an unwritable folder fails before minutes of tracking
    notes: tuple[str, ...] = ()
    try:
        with (contextlib.nullcontext(frames) if frames is not None else open_frames(job.clip)) as frames, \
                contextlib.ExitStack() as found_files:
            info = frames.info
            first, last, objects = job.checked_prompts(info)
            if job.text is not None:  # say so before minutes of model loading
                from sam2_web.find.text import require_transformers

                require_transformers()
            if predictor is None:
                predictor = load_job_predictor(job, progress)
            if job.auto is not None or job.text is not None:
                from sam2_web.find.run import find_for_job, temporary_folder

                folder = Path(found_files.enter_context(temporary_folder()))
                found, notes = find_for_job(job, frames, predictor, folder, progress=progress, cancel=cancel)
                objects = objects + found
                job = replace(job, objects=objects, normalized=False, auto=None, text=None)
            session = predictor.open_session(frames, **(session_options or {}))
            try:
                add_prompts(session, objects)
                clock = FrameClock()
                band_grid = mask_resolution_of(predictor)  # the soft edges' automatic band follows it
                if own_frames:  # exports run beside the tracking, each with its own decoder
                    _track_and_export(session, job, staging, first, last, info, _timed(progress, clock),
                                      progress, cancel, band_grid)
                else:
                    propagate_range(session, job, first, last, progress=_timed(progress, clock), cancel=cancel)
                    export_all(job, staging, masks_getter(session, first, last), info=info, frames=frames.get,
                               progress=progress, is_cancelled=is_cancelled, mask_resolution=band_grid)
                _record_speed(predictor, len(objects), clock)
            finally:
                session.close()
        outputs = staging.publish()
    except BaseException:
        staging.discard()
        raise
    return JobResult(outputs, info.num_frames, (first, last), job.obj_ids, notes)


def _track_and_export(session: Any, job: MaskJob, staging: Staging, first: int, last: int, info: Any,
                      track_progress: Progress, progress: Optional[Progress], cancel: Cancel,
                      mask_resolution: int) -> None:
    """Track the job's range while every format is written on its own thread as frames become
    final (see ``sam2_web.jobs.overlap``). Raises what the tracking or an export raised."""
    from sam2_web.export.formats import FORMATS
    from sam2_web.jobs.overlap import ConcurrentExports, FinalFrames
    from sam2_web.media.frames import open_frames

    is_cancelled = cancel_check(cancel)
    final = FinalFrames(pass_spans(job, first, last, info.num_frames))

    def write_one(fmt: str, masks_of: Callable, frames: Optional[Callable]) -> None:
        export_one(job, staging, fmt, masks_of, info=info, frames=frames, progress=progress,
                   is_cancelled=is_cancelled, mask_resolution=mask_resolution)

    exports = ConcurrentExports(write_one, list(job.output.formats), masks_getter(session, first, last), final,
                                lambda: open_frames(job.clip),
                                lambda fmt: FORMATS[fmt].needs_frames or job.output.soft_edges)
    exports.start()
    try:
        propagate_range(session, job, first, last, progress=track_progress,
                        cancel=lambda: is_cancelled() or exports.failed(), on_frame=final.produced)
    except BaseException as exc:
        final.fail(exc)
        with contextlib.suppress(BaseException):
            exports.join()
        own = exports.error()
        if own is not None and isinstance(exc, CancelledError) and not is_cancelled():
            raise own from None  # the export's failure stopped the tracking: report that
        raise
    final.finish()
    exports.join()
