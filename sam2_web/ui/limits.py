"""Input checks of the web app: limits from the config, and "is there a clip / a frame" guards.

Each failure is one of ``sam2_web.errors``' types with a message that says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam2_web.errors import LimitExceededError, PromptError, VideoReadError
from sam2_web.ui.state import AppSession


@dataclass(frozen=True)
class Limits:
    """Input limits (``limits.*`` in ``configs/app.yaml``); 0 or less means "no limit"."""

    max_upload_mb: float = 500
    max_duration_s: float = 600
    max_frames: int = 20000
    max_side: int = 4096
    max_objects: int = 32

    @classmethod
    def from_config(cls, node: Any) -> "Limits":
        """Read the ``limits`` node of the app config (missing keys keep their defaults)."""
        known = cls.__dataclass_fields__
        return cls(**{k: node[k] for k in known if node is not None and k in node})


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


def check_clip(info: Any, limits: Limits) -> None:
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


def check_uploaded_clip(path: str | os.PathLike | None, limits: Limits, name: str | None = None) -> Path:
    """:func:`check_upload`, then probe the clip (container index only, no decoding) and
    :func:`check_clip` it, so an over-limit clip costs no model work.

    Args:
        name: how the user knows the file (default: its file name); messages use it instead
            of the server's temp path.
    Returns:
        The path.
    Raises:
        VideoReadError: no file, empty, or not a decodable video/image.
        LimitExceededError: over the upload, duration, frame-count or resolution limit.
    """
    from sam2_web.media.frames import open_frames

    src = check_upload(path, limits)
    try:
        with open_frames(src) as frames:
            check_clip(frames.info, limits)
    except VideoReadError as error:
        raise VideoReadError(str(error).replace(str(src), name or src.name)) from None
    return src


def require_clip(session: AppSession | None) -> AppSession:
    """Return ``session`` if it has a clip open.

    Raises:
        PromptError: no session or no clip yet (a click or Track before any upload).
    """
    if session is None or not session.has_clip:
        raise PromptError("upload a clip (or pick an example) first, then click on the frame")
    return session


def check_frame(session: AppSession, frame_idx: int) -> int:
    """Validate a frame index against the open clip (PromptError with the valid range)."""
    n = session.info.num_frames
    idx = int(frame_idx)
    if not 0 <= idx < n:
        raise PromptError(f"frame {idx} is outside the clip; pick a frame from 0 to {n - 1}")
    return idx
