"""Editing a session: open a clip, objects, clicks and boxes, undo, and the masks they give.

A click runs the model on that one frame only (``VideoSession.add_prompt``); coordinates are
pixels of the original frame.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sam2_web.errors import LimitExceededError, PromptError, UnknownObjectError
from sam2_web.jobs.prompts import MAX_OBJECT_ID
from sam2_web.media.probe import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from sam2_web.ui.limits import (
    Limits,
    check_frame,
    check_name,
    check_upload,
    history_bytes_per_frame,
    open_checked,
    require_clip,
    whole_number,
)
from sam2_web.ui.state import (
    CLICK_MODES,
    AppSession,
    BoxPrompt,
    ClickPrompt,
    PendingCorner,
    Prompt,
    TrackedObject,
)

MIN_BOX_SIDE = 2.0  # pixels; a "box" thinner than this is a double click, not a box


# --- clip -----------------------------------------------------------------------------------------

def _keep_copy(src: Path, workdir: Path) -> Path:
    """Keep the upload in the session folder: Gradio's cache may be cleaned before we are done."""
    suffix = src.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        suffix = ".video"  # the name is the uploader's; only known extensions are kept
    target = workdir / ("source" + suffix)
    if target.exists():
        target.unlink()
    try:
        os.link(src, target)  # same file system: free
    except OSError:
        shutil.copyfile(src, target)
    return target


def open_clip(session: AppSession, predictor: Any, path: str | os.PathLike | None, limits: Limits,
              name: str | None = None) -> Any:
    """Open an uploaded clip (or still image) in ``session``, replacing any previous one.

    Objects, prompts and masks start fresh with one object ("object 1") selected.

    The upload is first linked into the session folder, and that copy is opened once: its probe
    is checked against the limits and the same open source is what the engine reads, so the
    file that is checked is the file that is opened (a playlist resolving differently from two
    folders, or a file swapped in between, cannot slip past the limits).

    Returns:
        The clip's ``VideoInfo``.
    Raises:
        VideoReadError: not a decodable video/image, empty, missing, or not an accepted container.
        LimitExceededError: over the upload, duration, frame-count or resolution limit.
    """
    src = check_upload(path, limits)
    shown_name = _display_name(name or src.name)
    session.close_engine()
    _reset(session)
    kept = _keep_copy(src, session.workdir)
    try:
        session.frames = open_checked(kept, limits, shown_name, readahead=_engine_option(predictor, "read_ahead", 4))
        session.engine = _open_engine(session, predictor)
    except BaseException:
        session.close_engine()
        kept.unlink(missing_ok=True)
        raise
    session.source_path = kept
    session.source_name = shown_name
    session.history_bytes_per_frame = history_bytes_per_frame(predictor)
    session.disk_budget_mb = max(0.0, float(limits.session_disk_mb))
    add_object(session, limits)
    return session.engine.info


def _display_name(name: str, limit: int = 120) -> str:
    """The uploader's file name as messages and export names show it: printable, not too long."""
    name = "".join(c for c in str(name) if c.isprintable()).strip() or "clip"
    if len(name) > limit:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:limit - len(ext) - 1] + dot + ext) if dot and len(ext) < 10 else name[:limit]
    return name


def _engine_option(predictor: Any, name: str, default: Any) -> Any:
    return getattr(getattr(predictor, "default_options", None), name, default)


def _open_engine(session: AppSession, predictor: Any) -> Any:
    """An engine session on ``session.frames`` with this session's share of the feature cache."""
    want = float(_engine_option(predictor, "feature_cache_mb", 1024))
    grant = session.reserve_features(want)
    return predictor.open_session(session.frames, temp_dir=str(session.workdir), feature_cache_mb=grant)


def _reset(session: AppSession) -> None:
    session.source_path = None
    session.source_name = ""
    session.objects.clear()
    session.prompts.clear()
    session.masks.clear()
    session.tracked.clear()
    session.pending = None
    session.current = None
    session.next_obj_id = 1
    session.frame_idx = 0


def switch_model(session: AppSession, predictor: Any, model: str) -> None:
    """Re-open the session's clip on another model and replay every prompt on it.

    Tracked results are dropped (they came from the old model); click masks are recomputed.
    """
    session.model = model
    if session.source_path is None or session.frames is None:
        return
    old, session.engine = session.engine, None
    if old is not None:
        old.close()  # the frame source stays open: the new engine reads the same checked clip
    session.engine = _open_engine(session, predictor)
    session.history_bytes_per_frame = history_bytes_per_frame(predictor)
    session.masks.clear()
    session.tracked.clear()
    for frame_idx, obj_id in dict.fromkeys((p.frame_idx, p.obj_id) for p in session.prompts):
        _apply(session, frame_idx, obj_id, replay=True)


# --- objects --------------------------------------------------------------------------------------

def add_object(session: AppSession, limits: Limits, name: str | None = None) -> TrackedObject:
    """Add a new object, select it, and return it.

    Raises:
        LimitExceededError: the session already has ``limits.max_objects`` objects.
    """
    name = check_name(name, limits)
    if limits.max_objects > 0 and len(session.objects) >= limits.max_objects:
        raise LimitExceededError(
            f"this server tracks up to {limits.max_objects} objects per clip; remove one first "
            "(or raise limits.max_objects)"
        )
    obj = TrackedObject(session.next_obj_id, name or f"object {session.next_obj_id}")
    session.next_obj_id += 1
    session.objects.append(obj)
    session.current = obj.obj_id
    session.pending = None
    return obj


def _object(session: AppSession, obj_id: Any) -> TrackedObject:
    obj = session.object(whole_number(obj_id, "the object id")) if obj_id is not None else None
    if obj is None:
        known = ", ".join(f"{o.obj_id} ({o.name})" for o in session.objects) or "none yet"
        raise UnknownObjectError(f"there is no object {obj_id}; objects: {known}. Add one with 'Add object'")
    return obj


def select_object(session: AppSession, obj_id: int) -> TrackedObject:
    """Make ``obj_id`` the object the next clicks go to (UnknownObjectError if there is none)."""
    obj = _object(session, obj_id)
    session.current = obj.obj_id
    session.pending = None
    return obj


def rename_object(session: AppSession, obj_id: int, name: str, limits: Limits = Limits()) -> TrackedObject:
    """Rename an object (names label exports: folders, channels, COCO categories).

    Raises:
        UnknownObjectError, PromptError (an empty name), LimitExceededError (a name over
        ``limits.max_name_chars``).
    """
    obj = _object(session, obj_id)
    name = check_name(name, limits)
    if not name:
        raise PromptError("type a name for the object first")
    obj.name = name
    return obj


def remove_object(session: AppSession, obj_id: int) -> None:
    """Remove an object, its prompts and its masks; another object becomes selected."""
    obj = _object(session, obj_id)
    if any(p.obj_id == obj.obj_id for p in session.prompts):
        session.engine.remove_object(obj.obj_id)
    session.prompts = [p for p in session.prompts if p.obj_id != obj.obj_id]
    session.objects.remove(obj)
    for frame_idx in list(session.masks):
        session.masks[frame_idx] = _without(session.masks[frame_idx], obj.obj_id)
    if session.pending is not None and session.pending.obj_id == obj.obj_id:
        session.pending = None
    if session.current == obj.obj_id:
        session.current = session.objects[-1].obj_id if session.objects else None


def _without(frame_masks: Any, obj_id: int) -> Any:
    """A FrameMasks without one object (same type, so the rest of the code need not care)."""
    if obj_id not in frame_masks.obj_ids:
        return frame_masks
    keep = [k for k, o in enumerate(frame_masks.obj_ids) if o != obj_id]
    return type(frame_masks)(
        frame_idx=frame_masks.frame_idx,
        obj_ids=[frame_masks.obj_ids[k] for k in keep],
        masks=frame_masks.masks[keep],
        scores=frame_masks.scores[keep],
    )


# --- prompts --------------------------------------------------------------------------------------

def set_mode(session: AppSession, mode: str) -> None:
    """Set what a click does: ``positive``, ``negative`` point or ``box`` corner (PromptError otherwise)."""
    if mode not in CLICK_MODES:
        raise PromptError(f"unknown click mode {mode!r}; use one of {', '.join(CLICK_MODES)}")
    session.mode = mode  # type: ignore[assignment]
    session.pending = None


def _current_object(session: AppSession) -> int:
    if session.current is None or session.object(session.current) is None:
        raise PromptError("there is no object to add clicks to; press 'Add object' first")
    return session.current


def _check_point_count(count: int, limits: Limits) -> None:
    if limits.max_points > 0 and count > limits.max_points:
        raise LimitExceededError(
            f"{count} points for one object on one frame; this server takes up to {limits.max_points}: "
            "undo some, or draw a box around the object instead"
        )


def _check_point(session: AppSession, x: float, y: float) -> tuple[float, float]:
    info = session.info
    if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in (x, y)) \
            or not (math.isfinite(x) and math.isfinite(y)):
        raise PromptError(f"a point is two numbers (x, y) in pixels, got ({x!r}, {y!r})")
    if not (0 <= x < info.width and 0 <= y < info.height):
        raise PromptError(f"the point ({x:.0f}, {y:.0f}) is outside the {info.width}x{info.height} frame")
    return float(x), float(y)


def click(session: AppSession | None, frame_idx: int, x: float, y: float, limits: Limits = Limits()) -> Any | None:
    """Handle a click on frame ``frame_idx`` at pixel (x, y) according to the session's mode.

    A point click runs the model on this frame and returns its ``FrameMasks``. In box mode the
    first click only stores a corner (returns None); the second completes the box and runs it.

    Raises:
        PromptError: no clip, no object, a point outside the frame, or a degenerate box.
        LimitExceededError: the object has ``limits.max_points`` clicks on this frame already.
    """
    session = require_clip(session)
    frame_idx = check_frame(session, frame_idx)
    obj_id = _current_object(session)
    x, y = _check_point(session, x, y)
    if session.mode != "box":
        clicks = sum(1 for p in session.prompts
                     if isinstance(p, ClickPrompt) and p.frame_idx == frame_idx and p.obj_id == obj_id)
        _check_point_count(clicks + 1, limits)
    if session.mode == "box":
        corner = session.pending
        if corner is None or corner.frame_idx != frame_idx or corner.obj_id != obj_id:
            session.pending = PendingCorner(frame_idx, obj_id, x, y)
            return None
        session.pending = None
        x0, x1 = sorted((corner.x, x))
        y0, y1 = sorted((corner.y, y))
        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            raise PromptError("the two box corners are (almost) the same point; click two opposite corners")
        # One box per object per frame (as SAM 2 is trained): a new box replaces the old one.
        session.prompts = [p for p in session.prompts
                           if not (isinstance(p, BoxPrompt) and p.frame_idx == frame_idx and p.obj_id == obj_id)]
        session.prompts.append(BoxPrompt(frame_idx, obj_id, x0, y0, x1, y1))
    else:
        session.prompts.append(ClickPrompt(frame_idx, obj_id, x, y, session.mode == "positive"))
    return _apply(session, frame_idx, obj_id)


def _prompt_kwargs(prompts: Sequence[Prompt]) -> dict[str, Any]:
    """``add_prompt`` arguments for a set of prompts (the last box wins: one box per frame)."""
    points = [p for p in prompts if isinstance(p, ClickPrompt)]
    boxes = [p for p in prompts if isinstance(p, BoxPrompt)]
    kwargs: dict[str, Any] = {}
    if points:
        kwargs["points"] = np.array([[p.x, p.y] for p in points], dtype=np.float32)
        kwargs["labels"] = np.array([1 if p.positive else 0 for p in points], dtype=np.int32)
    if boxes:
        b = boxes[-1]
        kwargs["box"] = np.array([b.x0, b.y0, b.x1, b.y1], dtype=np.float32)
    return kwargs


def _apply(session: AppSession, frame_idx: int, obj_id: int, *, replay: bool = False) -> Any:
    """Send the prompts of (frame, object) to the engine and store the frame's masks.

    Every call sends the whole set (``clear_old_points=True``). The engine also refines from the
    frame's previous mask, so the result depends on the click history, not only on the set;
    ``replay`` (undo, model switch) clears the frame and re-sends the history one click at a
    time, which reproduces the masks as if the removed click had never been made.
    """
    engine = session.engine
    mine = [p for p in session.prompts if p.frame_idx == frame_idx and p.obj_id == obj_id]
    if not mine:
        if any(p.obj_id == obj_id for p in session.prompts):
            result = engine.clear_frame(frame_idx, obj_id)
        else:
            # The engine refuses to track an object without prompts, so forget it entirely.
            if obj_id in engine.object_ids:
                engine.remove_object(obj_id)
            result = _without(session.masks[frame_idx], obj_id) if frame_idx in session.masks else None
    else:
        if replay and obj_id in engine.object_ids:
            engine.clear_frame(frame_idx, obj_id)
        for k in range(1 if replay else len(mine), len(mine) + 1):
            result = engine.add_prompt(frame_idx, obj_id, clear_old_points=True, **_prompt_kwargs(mine[:k]))
    if result is None:
        session.masks.pop(frame_idx, None)
    else:
        session.masks[frame_idx] = result
    session.tracked.discard(frame_idx)
    return result


def undo(session: AppSession | None) -> int | None:
    """Undo the last click (or a pending box corner); returns the frame it was on, or None.

    Raises:
        PromptError: no clip open.
    """
    session = require_clip(session)
    if session.pending is not None:
        frame_idx = session.pending.frame_idx
        session.pending = None
        return frame_idx
    if not session.prompts:
        return None
    last = session.prompts.pop()
    _apply(session, last.frame_idx, last.obj_id, replay=True)
    return last.frame_idx


def clear_frame(session: AppSession | None, frame_idx: int) -> None:
    """Remove every click of every object on ``frame_idx``."""
    session = require_clip(session)
    frame_idx = check_frame(session, frame_idx)
    session.pending = None
    touched = {p.obj_id for p in session.prompts if p.frame_idx == frame_idx}
    session.prompts = [p for p in session.prompts if p.frame_idx != frame_idx]
    for obj_id in sorted(touched):
        _apply(session, frame_idx, obj_id)


def ensure_object(session: AppSession, obj_id: int, limits: Limits, name: str | None = None) -> TrackedObject:
    """Return object ``obj_id``, creating it with that id (for API clients that pick their ids).

    Raises:
        PromptError: an id that is not a whole number from 1 to ``MAX_OBJECT_ID``, or a bad name;
        LimitExceededError: too many objects, or a name over ``limits.max_name_chars``.
    """
    obj_id = whole_number(obj_id, "the object id")
    if not 1 <= obj_id <= MAX_OBJECT_ID:
        raise PromptError(f"object ids are whole numbers from 1 to {MAX_OBJECT_ID}, got {obj_id}")
    name = check_name(name, limits)
    obj = session.object(obj_id)
    if obj is None:
        if limits.max_objects > 0 and len(session.objects) >= limits.max_objects:
            raise LimitExceededError(
                f"this server tracks up to {limits.max_objects} objects per clip (limits.max_objects)"
            )
        obj = TrackedObject(obj_id, f"object {obj_id}")
        session.objects.append(obj)
        session.next_obj_id = max(session.next_obj_id, obj_id + 1)
    if name:
        obj.name = name
    session.current = obj_id
    return obj


def set_prompts(session: AppSession | None, frame_idx: int, obj_id: int, *,
                points: Any = (), labels: Any = (), box: Any = None, limits: Limits = Limits()) -> Any:
    """Replace the prompts of one object on one frame (API clients send them all at once).

    The values are checked by the one prompts parser (``sam2_web.jobs.prompts``, as for
    ``/segment``, the CLI and the plugins): whole-number frames, finite non-negative numbers,
    labels exactly 1 or 0, a box with x0 < x1 and y0 < y1, everything inside the frame. Nothing
    is rounded or clipped: a value that does not fit is refused with what to send instead.

    Args:
        points: [[x, y], ...] pixels of the original frame; labels: 1 positive / 0 negative each.
        box: [x0, y0, x1, y1] or None.
        limits: ``max_points`` per object and frame.
    Returns:
        The frame's ``FrameMasks`` after one model call on that frame.
    Raises:
        PromptError: no clip, unknown object, malformed values, points outside the frame, or
            no point and no box; LimitExceededError: more than ``limits.max_points`` points.
    """
    from sam2_web.jobs.prompts import check_prompts, parse_prompts

    session = require_clip(session)
    frame_idx = check_frame(session, frame_idx)
    _object(session, obj_id)
    if isinstance(points, list):
        _check_point_count(len(points), limits)
    item = {"frame": frame_idx, "object": int(obj_id), "points": _listed(points), "labels": _listed(labels)}
    if box is not None:
        item["box"] = box
    info = session.info
    try:
        parsed = parse_prompts([item]).objects
        check_prompts(parsed, num_frames=info.num_frames, width=info.width, height=info.height)
    except PromptError as error:
        # The parser names JSON paths of a list ("[0].points[1][0]"); here there is one prompt.
        raise PromptError(re.sub(r"^\[0\](?:\.|: )", "", str(error))) from None
    prompt = parsed[0].frames[0]
    new: list[Prompt] = [ClickPrompt(frame_idx, obj_id, x, y, bool(v)) for (x, y), v in zip(prompt.points, prompt.labels)]
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            raise PromptError(f"the box {list(prompt.box)} is less than {MIN_BOX_SIDE:g} px wide or high; "
                              "give two opposite corners of the object")
        new.append(BoxPrompt(frame_idx, obj_id, x0, y0, x1, y1))
    session.prompts = [p for p in session.prompts if not (p.frame_idx == frame_idx and p.obj_id == obj_id)]
    session.prompts.extend(new)
    return _apply(session, frame_idx, obj_id)


def _listed(value: Any) -> Any:
    """Points/labels as the parser reads them: tuples become lists, anything else is left for
    the parser to refuse with a message."""
    if isinstance(value, tuple):
        return [_listed(v) for v in value]
    if isinstance(value, list):
        return [_listed(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def prompts_on(session: AppSession, frame_idx: int) -> list[Prompt]:
    """The prompts drawn on ``frame_idx`` (all objects)."""
    return [p for p in session.prompts if p.frame_idx == frame_idx]


# --- masks of a frame -------------------------------------------------------------------------------

def masks_at(session: AppSession, frame_idx: int) -> Any | None:
    """The masks to show on a frame: from a click made since the last tracking run, else the
    tracked result, else None."""
    if frame_idx in session.masks and frame_idx not in session.tracked:
        return session.masks[frame_idx]
    stored = session.engine.result(frame_idx) if session.engine is not None else None
    if stored is not None:
        live = {o.obj_id for o in session.objects}
        for obj_id in [o for o in stored.obj_ids if o not in live]:
            stored = _without(stored, obj_id)
    return stored


def mask_dict(session: AppSession, frame_idx: int) -> dict[int, np.ndarray]:
    """``{obj_id: (H, W) bool}`` of a frame (empty when nothing is known there)."""
    fm = masks_at(session, frame_idx)
    if fm is None:
        return {}
    return {int(o): np.asarray(fm.masks[k], dtype=bool) for k, o in enumerate(fm.obj_ids)}
