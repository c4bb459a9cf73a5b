"""Whole-clip work of the web app: tracking with progress and cancel, and exports."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam2_web.errors import ExportError, PromptError
from sam2_web.speeds import FrameClock
from sam2_web.ui.editing import mask_dict
from sam2_web.ui.limits import check_export_room, check_track_room, require_clip
from sam2_web.ui.speed import duration_text, encoded_frames, record_track
from sam2_web.ui.state import AppSession, SessionBusyError


@dataclass(frozen=True)
class TrackStep:
    """One tracked frame, as the progress display needs it."""

    frame_idx: int
    done: int
    total: int
    s_per_frame: float
    eta_s: float


# --- tracking ---------------------------------------------------------------------------------------

def track(session: AppSession | None, direction: str = "both") -> Iterator[TrackStep]:
    """Propagate the prompts through the clip, yielding after every finished frame.

    The session lock is held for the whole run (clicks wait or are refused meanwhile). Stop by
    setting ``session.cancel``: the engine then raises ``CancelledError`` after the last finished
    frame; those frames are kept and Track again resumes. The frames' times (those that ran the
    image encoder) become this server's s/frame for the model (``ui.speed.record_track``).

    Raises:
        PromptError: no clip, or no prompt on any frame yet.
        SessionBusyError: another Track runs on this session.
        CancelledError: stopped by ``session.cancel``.
    """
    session = require_clip(session)
    if not session.prompts:
        raise PromptError("add at least one click on an object before tracking")
    check_track_room(session)  # limits.session_disk_mb: refused before any work
    if not session.lock.acquire(blocking=False):
        raise SessionBusyError("tracking is already running for this clip; wait for it or press Stop")
    session.cancel.clear()  # a Stop pressed before this run (e.g. during an export) is not for it
    total = [session.info.num_frames]

    def on_progress(done: int, of: int) -> None:
        total[0] = of

    objects = len({p.obj_id for p in session.prompts})
    cached = encoded_frames(session)  # re-tracked from cached features: faster than a first run
    clock = FrameClock()
    try:
        start = time.monotonic()
        done = 0
        for fm in session.engine.propagate(direction=direction, progress=on_progress, cancel=session.cancel):
            if fm.frame_idx in cached:
                clock.skip()
            else:
                clock.tick()
            done += 1
            session.tracked.add(fm.frame_idx)
            session.masks.pop(fm.frame_idx, None)  # the tracked result supersedes a click preview
            per_frame = (time.monotonic() - start) / done
            yield TrackStep(fm.frame_idx, done, max(total[0], done), per_frame,
                            per_frame * max(0, total[0] - done))
    finally:
        try:
            record_track(session, objects, clock)
        finally:
            session.cancel.clear()
            session.lock.release()


def format_step(step: TrackStep) -> str:
    """``"12/24 frames · 0.41 s/frame · ETA 5 s"`` for the progress line."""
    return (f"{step.done}/{step.total} frames · {step.s_per_frame:.2f} s/frame · "
            f"ETA {duration_text(step.eta_s)}")


# --- outputs ----------------------------------------------------------------------------------------

def _all_masks(session: AppSession, ids: Sequence[int]) -> Iterator[dict[int, np.ndarray]]:
    """Masks of every frame in order, one frame in memory at a time."""
    for i in range(session.info.num_frames):
        masks = mask_dict(session, i)
        yield {o: masks[o] for o in ids if o in masks}


def export_masks(session: AppSession | None, fmt: str, out_dir: Path | None = None, **options: Any) -> Path:
    """Write the session's masks (tracked, or clicked where not tracked) as ``fmt``.

    Args:
        fmt: a key of ``sam2_web.export.formats.FORMATS`` (``png_zip``, ``matte_mp4``, ``webm``,
            ``prores``, ``coco_rle``, ``overlay_mp4``, ``effect_blur``, ...).
        out_dir: folder for the file (the session's ``exports`` folder by default).
        options: ``ExportOptions`` fields (``feather_px``, ``background``, ...).
    Returns:
        Path of the written file.
    Raises:
        PromptError: no clip or no object with masks; ExportError from the writer.
    """
    from sam2_web.export.formats import FORMATS, ExportOptions, export

    session = require_clip(session)
    ids = [o.obj_id for o in session.objects if any(p.obj_id == o.obj_id for p in session.prompts)]
    if not ids:
        raise PromptError("nothing to export yet: click on an object (and press Track for the whole clip)")
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    check_export_room(session)  # limits.session_disk_mb
    info = session.info
    # A folder per format keeps the file named after the clip ("ball.zip", frames "ball_00000.png").
    out_dir = Path(out_dir) if out_dir is not None else session.workdir / "exports" / fmt
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(session.source_name or "clip").stem or "clip"
    names = {o.obj_id: o.name for o in session.objects}
    return export(
        fmt, out_dir / stem, _all_masks(session, ids),
        num_frames=info.num_frames, fps=info.fps, width=info.width, height=info.height,
        obj_ids=ids, start_timecode=info.start_timecode, frames=session.engine.frame,
        options=ExportOptions(names=names, **options),
    )


def hex_colour(text: str | None, default: tuple[int, int, int] = (0, 177, 64)) -> tuple[int, int, int]:
    """Parse ``#rrggbb`` (or ``rgb(r, g, b)``/``rgba(...)`` as colour pickers send) to an RGB tuple."""
    if not text:
        return default
    text = text.strip()
    if text.startswith("#") and len(text) == 7:
        return tuple(int(text[k:k + 2], 16) for k in (1, 3, 5))  # type: ignore[return-value]
    if text.startswith("rgb"):
        parts = text[text.index("(") + 1:text.rindex(")")].split(",")[:3]
        return tuple(int(round(float(v))) for v in parts)  # type: ignore[return-value]
    raise PromptError(f"cannot read the colour {text!r}; use #rrggbb")
