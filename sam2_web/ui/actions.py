"""What the web app does, as plain functions of an :class:`~sam2_web.ui.state.AppSession`: open a
clip, objects, clicks and boxes, undo, tracking with progress and cancel, exports.

No Gradio here: the callbacks in ``layout.py`` and the endpoints in ``api.py`` only translate
components to these calls and errors to ``gr.Error``, so all of it is tested without a browser.
The clip's objects, prompts and masks live in the engine session (``session.video``); these
functions check the user's input against the app's limits and ask the engine. A click runs the
model on that one frame only; coordinates are pixels of the original frame.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam2_web.errors import ExportError, LimitExceededError, PromptError, UnknownObjectError
from sam2_web.jobs.prompts import MAX_OBJECT_ID
from sam2_web.media.probe import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from sam2_web.speeds import FrameClock
from sam2_web.ui.limits import (
    Limits,
    check_export_room,
    check_frame,
    check_name,
    check_track_room,
    check_upload,
    open_checked,
    require_clip,
    whole_number,
)
from sam2_web.ui.speed import duration_text, encoded_frames, record_track
from sam2_web.ui.state import CLICK_MODES, AppSession, Candidates, PendingCorner
from sam2_web.video.edits import Click
from sam2_web.video.state import FrameMasks

if TYPE_CHECKING:
    from sam2_web.media.probe import VideoInfo
    from sam2_web.ui.fair import FrameTurns
    from sam2_web.ui.gpu import LeasePolicy
    from sam2_web.video.predictor import SAM2VideoPredictor
    from sam2_web.video.session import VideoSession

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


def attach_clip(session: AppSession, predictor: "SAM2VideoPredictor", path: str | os.PathLike | None,
                limits: Limits, name: str | None = None) -> None:
    """Give ``session`` the uploaded clip, checked and opened once (``session.frames``), with its
    disk budget; no engine session yet (see :func:`open_clip`; ``/segment`` runs a job on it).

    The upload is first linked into the session folder, and that copy is opened once: its probe
    is checked against the limits and the same open source is what the engine reads, so the
    file that is checked is the file that is opened (a playlist resolving differently from two
    folders, or a file swapped in between, cannot slip past the limits).

    Raises:
        VideoReadError: not a decodable video/image, empty, missing, or not an accepted container.
        LimitExceededError: over the upload, duration, frame-count or resolution limit.
    """
    src = check_upload(path, limits)
    shown_name = _display_name(name or src.name)
    session.close_video()
    session.source_path, session.source_name = None, ""
    session.current, session.pending, session.frame_idx, session.candidates = None, None, 0, None
    kept = _keep_copy(src, session.workdir)
    try:
        session.frames = open_checked(kept, limits, shown_name, readahead=predictor.default_options.read_ahead)
    except BaseException:
        kept.unlink(missing_ok=True)
        raise
    session.source_path = kept
    session.source_name = shown_name
    session.history_bytes_per_frame = predictor.history_bytes_per_frame()
    session.disk_budget_mb = max(0.0, float(limits.session_disk_mb))


def open_clip(session: AppSession, predictor: "SAM2VideoPredictor", path: str | os.PathLike | None,
              limits: Limits, name: str | None = None, *, first_object: bool = True) -> "VideoInfo":
    """Open an uploaded clip (or still image) in ``session``, replacing any previous one
    (:func:`attach_clip`, then an engine session on it).

    Objects and prompts start fresh; with ``first_object`` one object ("object 1") is made and
    selected, as the UI starts (API clients make their own).

    Returns:
        The clip's ``VideoInfo``.
    Raises:
        VideoReadError: not a decodable video/image, empty, missing, or not an accepted container.
        LimitExceededError: over the upload, duration, frame-count or resolution limit.
    """
    attach_clip(session, predictor, path, limits, name)
    try:
        session.video = _open_video(session, predictor)
    except BaseException:
        session.close_video()
        raise
    if first_object:
        add_object(session, limits)
    return session.video.info


def _display_name(name: str, limit: int = 120) -> str:
    """The uploader's file name as messages and export names show it: printable, not too long."""
    name = "".join(c for c in str(name) if c.isprintable()).strip() or "clip"
    if len(name) > limit:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:limit - len(ext) - 1] + dot + ext) if dot and len(ext) < 10 else name[:limit]
    return name


def _open_video(session: AppSession, predictor: "SAM2VideoPredictor") -> "VideoSession":
    """An engine session on ``session.frames`` with this session's share of the feature cache."""
    return predictor.open_session(session.frames, **session_options(session, predictor))


def session_options(session: AppSession, predictor: "SAM2VideoPredictor") -> dict[str, Any]:
    """The engine options of an app session: its temp files in the session folder, its share of
    the server's feature-cache budget, its SAMURAI switch (when set)."""
    grant = session.reserve_features(predictor.default_options.feature_cache_mb)
    options: dict[str, Any] = {"temp_dir": str(session.workdir), "feature_cache_mb": grant}
    if session.samurai is not None:
        options["samurai"] = session.samurai
    return options


def set_samurai(session: AppSession, predictor: "SAM2VideoPredictor", on: bool) -> None:
    """Turn SAMURAI's motion-aware memory on or off for this session: the clip is re-opened on
    the same model with the switch and every object's prompts replayed (tracked results are
    dropped: they came from the other memory).

    Raises:
        ConfigError: ``on`` with a model whose decoder has no multimask tracking output.
    """
    before = session.samurai
    session.samurai = bool(on)
    try:
        switch_model(session, predictor, session.model)
    except BaseException:
        session.samurai = before
        raise


def switch_model(session: AppSession, predictor: "SAM2VideoPredictor", model: str) -> None:
    """Re-open the session's clip on another model and replay every object's prompts on it.

    Tracked results are dropped (they came from the old model); click masks are recomputed.
    """
    session.model = model
    if session.source_path is None or session.frames is None:
        return
    old = session.video
    session.video = _open_video(session, predictor)  # the same checked frame source
    session.history_bytes_per_frame = predictor.history_bytes_per_frame()
    if old is not None:
        try:
            session.video.replay(old)
        finally:
            old.close()


# --- objects --------------------------------------------------------------------------------------

def add_object(session: AppSession, limits: Limits, name: str | None = None) -> int:
    """Add a new object, select it, and return its id.

    Raises:
        LimitExceededError: the session already has ``limits.max_objects`` objects.
    """
    video = require_clip(session).video
    name = check_name(name, limits)
    _check_object_count(len(video.object_names), limits, "; remove one first (or raise limits.max_objects)")
    session.current = video.add_object(name=name or None)
    session.pending = None
    return session.current


def _check_object_count(count: int, limits: Limits, hint: str = " (limits.max_objects)") -> None:
    if limits.max_objects > 0 and count >= limits.max_objects:
        raise LimitExceededError(f"this server tracks up to {limits.max_objects} objects per clip{hint}")


def _object(session: AppSession, obj_id: Any) -> int:
    names = session.video.object_names
    obj = whole_number(obj_id, "the object id") if obj_id is not None else None
    if obj not in names:
        known = ", ".join(f"{o} ({n})" for o, n in names.items()) or "none yet"
        raise UnknownObjectError(f"there is no object {obj_id}; objects: {known}. Add one with 'Add object'")
    return obj


def select_object(session: AppSession, obj_id: int) -> int:
    """Make ``obj_id`` the object the next clicks go to (UnknownObjectError if there is none)."""
    session.current = _object(require_clip(session), obj_id)
    session.pending = None
    return session.current


def rename_object(session: AppSession, obj_id: int, name: str, limits: Limits = Limits()) -> None:
    """Rename an object (names label exports: folders, channels, COCO categories).

    Raises:
        UnknownObjectError, PromptError (an empty name), LimitExceededError (a name over
        ``limits.max_name_chars``).
    """
    obj = _object(require_clip(session), obj_id)
    name = check_name(name, limits)
    if not name:
        raise PromptError("type a name for the object first")
    session.video.rename_object(obj, name)


def remove_object(session: AppSession, obj_id: int) -> None:
    """Remove an object with its prompts and masks; the newest other object becomes selected."""
    obj = _object(require_clip(session), obj_id)
    session.video.remove_object(obj)
    if session.pending is not None and session.pending.obj_id == obj:
        session.pending = None
    if session.current == obj:
        session.current = next(reversed(session.video.object_names), None)


def ensure_object(session: AppSession, obj_id: int, limits: Limits, name: str | None = None) -> int:
    """Return object ``obj_id``, creating it with that id (for API clients that pick their ids).

    Raises:
        PromptError: an id that is not a whole number from 1 to ``MAX_OBJECT_ID``, or a bad name;
        LimitExceededError: too many objects, or a name over ``limits.max_name_chars``.
    """
    obj_id = whole_number(obj_id, "the object id")
    if not 1 <= obj_id <= MAX_OBJECT_ID:
        raise PromptError(f"object ids are whole numbers from 1 to {MAX_OBJECT_ID}, got {obj_id}")
    name = check_name(name, limits)
    video = require_clip(session).video
    if obj_id not in video.object_names:
        _check_object_count(len(video.object_names), limits)
    video.add_object(obj_id, name or None)
    session.current = obj_id
    return obj_id


# --- prompts --------------------------------------------------------------------------------------

def set_mode(session: AppSession, mode: str) -> None:
    """Set what a click does: ``positive``, ``negative`` point or ``box`` corner (PromptError otherwise)."""
    if mode not in CLICK_MODES:
        raise PromptError(f"unknown click mode {mode!r}; use one of {', '.join(CLICK_MODES)}")
    session.mode = mode  # type: ignore[assignment]
    session.pending = None


def _current_object(session: AppSession) -> int:
    if session.current is None or session.current not in session.video.object_names:
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


def click(session: AppSession | None, frame_idx: int, x: float, y: float,
          limits: Limits = Limits()) -> FrameMasks | None:
    """Handle a click on frame ``frame_idx`` at pixel (x, y) according to the session's mode.

    A point click runs the model on this frame and returns its ``FrameMasks``. In box mode the
    first click only stores a corner (returns None); the second completes the box and runs it.

    Raises:
        PromptError: no clip, no object, a point outside the frame, or a degenerate box.
        LimitExceededError: the object has ``limits.max_points`` clicks on this frame already.
    """
    session = require_clip(session)
    frame_idx = check_frame(session, frame_idx)
    x, y = _check_point(session, x, y)
    video = session.video
    picked = _picked_candidate(session, frame_idx, x, y)
    if picked is not None:  # a click on a proposed object makes it an object
        return _take_candidates(session, [picked], limits)
    obj_id = _current_object(session)
    if session.mode != "box":
        clicks = sum(1 for p in video.prompts(frame_idx, obj_id) if isinstance(p, Click))
        _check_point_count(clicks + 1, limits)
        return video.add_click(frame_idx, obj_id, x, y, positive=session.mode == "positive")
    corner = session.pending
    if corner is None or corner.frame_idx != frame_idx or corner.obj_id != obj_id:
        session.pending = PendingCorner(frame_idx, obj_id, x, y)
        return None
    session.pending = None
    x0, x1 = sorted((corner.x, x))
    y0, y1 = sorted((corner.y, y))
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        raise PromptError("the two box corners are (almost) the same point; click two opposite corners")
    return video.set_box(frame_idx, obj_id, (x0, y0, x1, y1))  # one box per object and frame


# --- finding objects ----------------------------------------------------------------------------------

def find_objects(session: AppSession | None, frame_idx: int, *, options: dict | None = None,
                 progress: Any = None) -> int:
    """"Find objects" on ``frame_idx``: segment everything there and keep the masks as candidates
    (UI state) for the user to pick by clicking, or all at once (:func:`add_candidates`).

    Args:
        options: ``SAM2AutomaticMaskGenerator`` options (the app config's ``find.auto``).
        progress: ``progress(done, total)`` per encoder pass and decoder batch.
    Returns:
        How many candidates were found.
    Raises:
        PromptError: no clip, or nothing found (the message says what to try).
    """
    from sam2_web.find.run import find_candidates, no_candidates_message

    session = require_clip(session)
    frame_idx = check_frame(session, frame_idx)
    records = find_candidates(session.video.model, session.video.frame(frame_idx), options=options,
                              progress=progress, cancel=session.cancel)
    session.candidates = Candidates(frame_idx, tuple(records)) if records else None
    if not records:
        raise PromptError(no_candidates_message(frame_idx, 0))
    return len(records)


def dismiss_candidates(session: AppSession) -> None:
    """Forget the proposed objects (nothing was made of them)."""
    session.candidates = None


def add_candidates(session: AppSession | None, min_area: int = 0, limits: Limits = Limits()) -> list[str]:
    """"Add all": every candidate of at least ``min_area`` pixels becomes an object ("object N"),
    the largest first, within ``limits.max_objects``; returns what the user should be told.

    Raises:
        PromptError: no candidates (press "Find objects" first), or none that large.
        LimitExceededError: the clip has ``limits.max_objects`` objects already.
    """
    session = require_clip(session)
    if session.candidates is None:
        raise PromptError('no proposed objects: press "Find objects" on a frame first')
    records = [r for r in session.candidates.records if r["area"] >= max(1, int(min_area))]
    if not records:
        raise PromptError(f"no proposed object has {int(min_area)} pixels or more; lower the minimum size")
    return _take_candidates(session, records, limits, notes=True)


def find_by_text(session: AppSession | None, frame_idx: int, query: str, *, settings: Any = None,
                 limits: Limits = Limits()) -> list[str]:
    """"Find: person, dog" on ``frame_idx``: each box the text detector finds becomes an object
    named after its phrase, prompted with that box; returns what the user should be told.

    Raises:
        PromptError: no clip, an empty query, or nothing found.
        MissingExtraError: the ``text`` extra is not installed; HubUnavailableError: no detector.
        LimitExceededError: no room left under ``limits.max_objects``.
    """
    from sam2_web.find.run import find_by_text as detect
    from sam2_web.find.run import find_settings

    session = require_clip(session)
    frame_idx = check_frame(session, frame_idx)
    video = session.video
    settings = replace(settings or find_settings(), max_objects=_room(video, limits))
    found = detect(video.frame(frame_idx), query or "", frame_idx, first_id=video.next_object_id, settings=settings)
    if not found.objects:
        raise PromptError(f'nothing found for "{query.strip()}" on frame {frame_idx}; try other words, another frame, '
                          "or a lower find.text.box_threshold")
    for obj in found.objects:
        video.add_object(obj.obj_id, obj.name)
        obj.add_to(video)
    session.current = found.objects[0].obj_id
    return list(found.notes)


def _room(video: Any, limits: Limits) -> int:
    """Objects that may still be made (0: no limit); LimitExceededError when none may."""
    if limits.max_objects <= 0:
        return 0
    room = limits.max_objects - len(video.object_names)
    if room <= 0:
        _check_object_count(len(video.object_names), limits)
    return room


def _picked_candidate(session: AppSession, frame_idx: int, x: float, y: float) -> dict | None:
    from sam2_web.find.run import pick_candidate

    candidates = session.candidates
    if candidates is None or candidates.frame_idx != frame_idx:
        return None
    k = pick_candidate(candidates.records, x, y)
    return None if k is None else candidates.records[k]


def _take_candidates(session: AppSession, records: list, limits: Limits, notes: bool = False) -> Any:
    """Make ``records`` objects ("object N", a mask prompt each) and drop them from the candidates;
    returns the last frame's masks (a click) or the notes for the user (``notes``)."""
    from sam2_web.find.objects import objects_from_records

    video = session.video
    frame_idx = session.candidates.frame_idx
    found = objects_from_records(records, frame_idx, first_id=video.next_object_id, max_objects=_room(video, limits))
    result = None
    for obj in found.objects:
        video.add_object(obj.obj_id, obj.name)
        result = obj.add_to(video)
    taken = {id(r) for r in records[:len(found.objects)]}
    left = tuple(r for r in session.candidates.records if id(r) not in taken)
    session.candidates = Candidates(frame_idx, left) if left else None
    if found.objects:
        session.current = found.objects[0].obj_id
    return list(found.notes) if notes else result


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
    return session.video.undo()


def clear_frame(session: AppSession | None, frame_idx: int) -> None:
    """Remove every click of every object on ``frame_idx``."""
    session = require_clip(session)
    frame_idx = check_frame(session, frame_idx)
    session.pending = None
    session.video.clear_frame(frame_idx)


def set_prompts(session: AppSession | None, frame_idx: int, obj_id: int, *,
                points: Any = (), labels: Any = (), box: Any = None, limits: Limits = Limits()) -> FrameMasks:
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
    obj_id = _object(session, obj_id)
    if isinstance(points, list):
        _check_point_count(len(points), limits)
    item = {"frame": frame_idx, "object": obj_id, "points": _listed(points), "labels": _listed(labels)}
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
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            raise PromptError(f"the box {list(prompt.box)} is less than {MIN_BOX_SIDE:g} px wide or high; "
                              "give two opposite corners of the object")
    return session.video.add_prompt(
        frame_idx, obj_id,
        points=np.asarray(prompt.points, np.float32) if prompt.points else None,
        labels=np.asarray(prompt.labels, np.int32) if prompt.points else None,
        box=np.asarray(prompt.box, np.float32) if prompt.box is not None else None,
    )


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


# --- masks of a frame -------------------------------------------------------------------------------

def mask_dict(session: AppSession, frame_idx: int) -> dict[int, np.ndarray]:
    """``{obj_id: (H, W) bool}`` of a frame: the engine's latest masks there (from a click or from
    tracking, whichever came last); empty when nothing is known there."""
    result = session.video.result(frame_idx) if session.video is not None else None
    if result is None:
        return {}
    return {int(o): np.asarray(result.masks[k], dtype=bool) for k, o in enumerate(result.obj_ids)}


# --- tracking ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackStep:
    """One tracked frame, as the progress display needs it."""

    frame_idx: int
    done: int
    total: int
    s_per_frame: float
    eta_s: float


def track(session: AppSession | None, direction: str = "both", *,
          leases: "LeasePolicy | None" = None, turns: "FrameTurns | None" = None,
          client: str = "local") -> Iterator[TrackStep]:
    """Propagate the prompts through the clip, yielding after every finished frame.

    The session is held for the whole run (clicks are refused meanwhile). Stop by setting
    ``session.cancel``: the engine then raises ``CancelledError`` after the last finished
    frame; those frames are kept and Track again resumes. The frames' times (those that ran the
    image encoder) become this server's s/frame for the model (``ui.speed.record_track``).
    On a ZeroGPU Space the Track runs in GPU leases sized from its work (``leases``, the
    ``gpu:`` settings; see ``ui.gpu.track_in_leases``), each resuming where the last stopped.
    With ``turns`` (``sam2_web.ui.fair.FrameTurns``), each frame is computed in a turn of
    ``client``, so that Tracks of several clients share the server fairly.

    Raises:
        PromptError: no clip, or no prompt on any frame yet.
        SessionBusyError: another Track runs on this session.
        CancelledError: stopped by ``session.cancel``.
    """
    session = require_clip(session)
    objects = len(session.video.prompted_objects())
    if not objects:
        raise PromptError("add at least one click on an object before tracking")
    check_track_room(session)  # limits.session_disk_mb: refused before any work
    with session.exclusive():
        session.cancel.clear()  # a Stop pressed before this run (e.g. during an export) is not for it
        total = [session.info.num_frames]

        def on_progress(done: int, of: int) -> None:
            total[0] = of

        cached = encoded_frames(session)  # re-tracked from cached features: faster than a first run
        clock = FrameClock()
        try:
            start = time.monotonic()
            done = 0
            frames = _propagate(session, direction, objects, leases, on_progress)
            if turns is not None:
                frames = turns.each(client, frames)
            for fm in frames:
                if fm.frame_idx in cached:
                    clock.skip()
                else:
                    clock.tick()
                done += 1
                per_frame = (time.monotonic() - start) / done
                yield TrackStep(fm.frame_idx, done, max(total[0], done), per_frame,
                                per_frame * max(0, total[0] - done))
        finally:
            try:
                record_track(session, objects, clock)
            finally:
                session.cancel.clear()


def _propagate(session: AppSession, direction: str, objects: int, leases: "LeasePolicy | None",
               progress: Any) -> Iterator[FrameMasks]:
    """The engine's propagation: in one go, or in GPU leases on a ZeroGPU Space."""
    from sam2_web.ui.gpu import track_in_leases, zero_gpu
    from sam2_web.ui.speed import session_speed
    from sam2_web.video.passes import pass_frames, reverses

    video = session.video
    if not zero_gpu():
        return video.propagate(direction=direction, progress=progress, cancel=session.cancel)
    start = min(p.frame_idx for p in video.prompts())
    frames = sum(len(pass_frames(start, None, r, video.num_frames)) for r in reverses(direction))
    return track_in_leases(video, frames=frames, objects=objects, speed=session_speed(session), policy=leases,
                           progress=progress, cancel=session.cancel, direction=direction)


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
        options: ``ExportOptions`` fields (``feather_px``, ``background``, ``soft_edges``,
            ``edge_band_px`` ...); soft edges get their band from the session's model.
    Returns:
        Path of the written file.
    Raises:
        PromptError: no clip or no object with masks; ExportError from the writer.
    """
    from sam2_web.export.formats import FORMATS, ExportOptions, export
    from sam2_web.matting.band import mask_resolution_of

    session = require_clip(session)
    video = session.video
    options.setdefault("mask_resolution", mask_resolution_of(video.model))
    ids = video.prompted_objects()
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
    ids = [o for o in video.object_names if o in ids]  # in the order the objects were made
    return export(
        fmt, out_dir / stem, _all_masks(session, ids),
        num_frames=info.num_frames, fps=info.fps, width=info.width, height=info.height,
        obj_ids=ids, start_timecode=info.start_timecode, frames=video.frame,
        options=ExportOptions(names=video.object_names, **options),
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
