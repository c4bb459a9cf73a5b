"""Input checks of the web app: limits from the config, and "is there a clip / a frame" guards.

Each failure is one of ``sam2_web.errors``' types with a message that says what to do.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam2_web.errors import LimitExceededError, PromptError, VideoReadError
from sam2_web.jobs.prompts import MAX_NAME_CHARS
from sam2_web.media.probe import DEFAULT_MAX_FRAMES, DEFAULT_TIMEOUT_S, ProbeLimits
from sam2_web.ui.state import AppSession

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam2_web.jobs.prompts import ObjectPrompts
    from sam2_web.media.frames import FrameSource
    from sam2_web.media.probe import VideoInfo


@dataclass(frozen=True)
class Limits:
    """Input limits (``limits.*`` in ``configs/app.yaml``); 0 or less means "no limit".

    Attributes:
        max_upload_mb, max_duration_s, max_frames, max_side: what a clip may be.
        max_objects: objects per clip.
        max_points: clicks (points) per object on one frame.
        max_name_chars: characters of an object name.
        probe_timeout_s: wall-clock seconds to read a clip's index before it is refused.
        session_disk_mb: a session's temporary files (tracking memory history, exports).
    """

    max_upload_mb: float = 500
    max_duration_s: float = 600
    max_frames: int = 20000
    max_side: int = 4096
    max_objects: int = 32
    max_points: int = 64
    max_name_chars: int = MAX_NAME_CHARS
    probe_timeout_s: float = 20
    session_disk_mb: float = 4096

    @classmethod
    def from_config(cls, node: Any) -> "Limits":
        """Read the ``limits`` node of the app config (missing keys keep their defaults)."""
        known = cls.__dataclass_fields__
        return cls(**{k: node[k] for k in known if node is not None and k in node})

    def probe_limits(self) -> ProbeLimits:
        """The bounds that apply while a clip is opened (see ``sam2_web.media.probe``)."""
        return ProbeLimits(
            max_frames=self.max_frames if self.max_frames > 0 else DEFAULT_MAX_FRAMES,
            max_side=max(0, int(self.max_side)),
            timeout_s=self.probe_timeout_s if self.probe_timeout_s > 0 else DEFAULT_TIMEOUT_S,
            setting="limits.",
        )


def check_upload(path: str | os.PathLike | None, limits: Limits) -> Path:
    """Check an uploaded file before decoding anything.

    Returns:
        The path.
    Raises:
        VideoReadError: no file, or an empty (0-byte) file.
        LimitExceededError: the file is larger than ``limits.max_upload_mb``.
    """
    if path is None or not str(path):
        raise VideoReadError("no clip uploaded yet; upload a video (or a still image) or pick an example first")
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"the uploaded file {path.name} is gone; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise VideoReadError(f"{path.name} is empty (0 bytes); the upload may have failed, upload it again")
    if limits.max_upload_mb > 0 and size > limits.max_upload_mb * 1024 * 1024:
        raise LimitExceededError(
            f"{path.name} is {size / 1024 / 1024:.1f} MB; this server accepts up to {limits.max_upload_mb:g} MB "
            "per upload: trim or re-encode the clip (or raise limits.max_upload_mb)"
        )
    return path


def check_clip(info: "VideoInfo", limits: Limits) -> None:
    """Check a probed clip's length and size against the limits.

    Raises:
        LimitExceededError: too many frames, too long, or too large a frame, saying by how much.
    """
    duration = info.num_frames / info.fps if info.fps else 0.0
    if limits.max_frames > 0 and info.num_frames > limits.max_frames:
        raise LimitExceededError(
            f"the clip has {info.num_frames} frames; this server accepts up to {limits.max_frames}: "
            "trim it (or raise limits.max_frames)"
        )
    if limits.max_duration_s > 0 and duration > limits.max_duration_s:
        raise LimitExceededError(
            f"the clip lasts {duration:.1f} s; this server accepts up to {limits.max_duration_s:g} s: "
            "trim it (or raise limits.max_duration_s)"
        )
    if limits.max_side > 0 and max(info.width, info.height) > limits.max_side:
        raise LimitExceededError(
            f"the clip is {info.width}x{info.height}; this server accepts frames up to {limits.max_side} px "
            "on the long side: scale it down (or raise limits.max_side)"
        )


def open_checked(path: str | os.PathLike, limits: Limits, name: str, readahead: int = 6) -> "FrameSource":
    """Open a clip once, within the limits, and check it: the returned source is what the
    engine then reads, so the file that is checked is the file that is opened.

    Opening reads the container index only (bounded by ``limits.probe_limits()``: frames read,
    frame size, wall-clock time); no frame is decoded and no model runs.

    Args:
        path: the clip (a file in the session folder).
        name: how the user knows the file; messages use it instead of the server's path.
        readahead: frames the decoder may run ahead.
    Returns:
        An open ``FrameSource``; the caller closes it.
    Raises:
        VideoReadError: not a decodable video/image, not an accepted container, or too slow to read.
        LimitExceededError: over the duration, frame-count or resolution limit.
    """
    from sam2_web.media.frames import open_frames

    try:
        frames = open_frames(path, limits=limits.probe_limits(), readahead=readahead)
    except (VideoReadError, LimitExceededError) as error:
        raise type(error)(_named(str(error), path, name)) from None
    try:
        check_clip(frames.info, limits)
    except BaseException:
        frames.close()
        raise
    return frames


def check_uploaded_clip(path: str | os.PathLike | None, limits: Limits, name: str | None = None) -> Path:
    """:func:`check_upload`, then :func:`open_checked` and close again: a pre-check for callers
    that want to refuse a clip before loading a model. The clip the engine opens must still be
    opened with :func:`open_checked` (a pre-check of another copy proves nothing about it).

    Args:
        name: how the user knows the file (default: its file name); messages use it instead
            of the server's temp path.
    Returns:
        The path.
    Raises:
        VideoReadError: no file, empty, or not a decodable video/image.
        LimitExceededError: over the upload, duration, frame-count or resolution limit.
    """
    src = check_upload(path, limits)
    open_checked(src, limits, name or src.name).close()
    return src


def _named(message: str, path: str | os.PathLike, name: str) -> str:
    """``message`` with the server's path of the clip replaced by the name the user knows."""
    for form in sorted({str(path), os.path.abspath(path)}, key=len, reverse=True):
        message = message.replace(form, name)
    return message


# --- a session's disk ---------------------------------------------------------------------------

def session_disk_bytes(session: AppSession) -> int:
    """Bytes of the session's own files: its folder without the uploaded clip (which counts
    against ``max_upload_mb``)."""
    total = 0
    keep = session.source_path.resolve() if session.source_path is not None else None
    for folder, _, files in os.walk(session.workdir):
        for name in files:
            path = Path(folder) / name
            if keep is not None and path == keep:
                continue
            try:
                total += path.lstat().st_size
            except OSError:
                continue  # removed while we walked
    return total


def check_track_room(session: AppSession, objects: int | None = None) -> None:
    """Refuse a Track whose memory history could outgrow the session's disk budget
    (``session.disk_budget_mb``, from ``limits.session_disk_mb``).

    The engine keeps at most one history file per frame and object (tracking again replaces
    them), so the clip's length x the prompted objects x ``session.history_bytes_per_frame``
    (the memory bank's own figure, ``SAM2VideoPredictor.history_bytes_per_frame``) bounds the
    history; the session's exports are added. The refusal comes before any work.

    Args:
        objects: objects to be tracked (default: those with prompts in the session).
    Raises:
        LimitExceededError: over the budget, saying what fits.
    """
    info = session.frames.info if session.frames is not None else None
    budget = session.disk_budget_mb * 2**20
    if budget <= 0 or info is None:
        return
    if objects is None:
        objects = len(session.video.prompted_objects())
    frames = info.num_frames
    per_frame = max(1, session.history_bytes_per_frame)
    need = frames * objects * per_frame + _folder_bytes(session.workdir / "exports")
    if need > budget:
        fit = int(budget // per_frame)
        raise LimitExceededError(
            f"tracking {frames} frames x {objects} object(s) needs about {_mb(need)} of this session's "
            f"storage; this server allows {_mb(budget)} per session, about {fit} frames x objects: "
            "track fewer objects or a shorter clip (or raise limits.session_disk_mb)"
        )


def check_job_prompts(objects: "Sequence[ObjectPrompts]", limits: Limits) -> None:
    """The app's limits on parsed prompts (``sam2_web.jobs.prompts.ObjectPrompts``) that the parser
    does not know: points per object and frame, as for clicks and ``/set_prompts`` (names are
    checked by the parser, given ``limits.max_name_chars``).

    Raises:
        LimitExceededError.
    """
    for obj in objects:
        for prompt in obj.frames:
            if 0 < limits.max_points < len(prompt.points):
                raise LimitExceededError(
                    f"object {obj.obj_id}, frame {prompt.frame}: {len(prompt.points)} points; this server takes "
                    f"up to {limits.max_points} per object and frame: use fewer, or a box"
                )


def check_export_room(session: AppSession) -> None:
    """Refuse an export when the session's files already fill its disk budget.

    Raises:
        LimitExceededError: the budget is used up; saying what to do.
    """
    budget = session.disk_budget_mb * 2**20
    if budget <= 0:
        return
    used = session_disk_bytes(session)
    if used >= budget:
        raise LimitExceededError(
            f"this session's files take {_mb(used)}, its limit ({_mb(budget)}, limits.session_disk_mb): "
            "download what you exported, then open the clip again to start afresh"
        )


def _mb(nbytes: float) -> str:
    mb = nbytes / 2**20
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.2g} MB"


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


def require_clip(session: AppSession | None) -> AppSession:
    """Return ``session`` if it has a clip open.

    Raises:
        PromptError: no session or no clip yet (a click or Track before any upload).
    """
    if session is None or not session.has_clip:
        raise PromptError("upload a clip (or pick an example) first, then click on the frame")
    return session


def check_frame(session: AppSession, frame_idx: Any) -> int:
    """Validate a frame index against the open clip (PromptError with the valid range).

    A frame is a whole number: ``2.5`` (or ``True``, or ``"2"``) is refused, never rounded.
    """
    n = session.info.num_frames
    idx = whole_number(frame_idx, "frame")
    if not 0 <= idx < n:
        raise PromptError(f"frame {idx} is outside the clip; pick a frame from 0 to {n - 1}")
    return idx


def whole_number(value: Any, what: str) -> int:
    """``value`` as an int if it is a whole number (``3`` or ``3.0``), else PromptError."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PromptError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise PromptError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def check_name(name: Any, limits: Limits) -> str:
    """An object name by the one rule (``sam2_web.jobs.prompts.check_object_name``: printable
    text, at most ``limits.max_name_chars``); "" for none.

    Raises:
        PromptError: not text, or with control characters. LimitExceededError: too long.
    """
    from sam2_web.jobs.prompts import check_object_name

    return check_object_name(name, "the object name", limits.max_name_chars) or ""
