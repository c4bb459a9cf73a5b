"""SMPTE-style timecodes ("HH:MM:SS:FF") for showing frame positions the way editors do."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from sam2_web.errors import FrameIndexError

if TYPE_CHECKING:
    from sam2_web.media.probe import VideoInfo

_TC = re.compile(r"^(\d{1,2}):(\d\d):(\d\d)([:;.,])(\d\d)$")


def format_timecode(info: "VideoInfo", frame_idx: int) -> str:
    """Timecode of ``frame_idx`` in ``info``'s clip; see ``VideoInfo.timecode``."""
    if not 0 <= frame_idx < info.num_frames:
        raise FrameIndexError(frame_out_of_range(frame_idx, info.num_frames))
    rate = max(1, int(round(info.fps)))
    parsed = _parse(info.start_timecode) if info.start_timecode else None
    if parsed is not None:
        (hh, mm, ss, ff), drop = parsed
        drop = drop and rate in (30, 60)  # drop-frame only exists for 29.97 and 59.94
        start = _to_frames(hh, mm, ss, ff, rate, drop)
        return _from_frames(start + frame_idx, rate, drop)
    seconds = info.timestamps[frame_idx]
    whole = int(math.floor(seconds + 1e-9))
    ff = min(rate - 1, int(round((seconds - whole) * rate)))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}:{ff:02d}"


def frame_out_of_range(frame_idx: int, num_frames: int) -> str:
    """The message for an index outside a clip of ``num_frames`` frames."""
    return f"frame {frame_idx} is outside the clip (0–{num_frames - 1})"


def _parse(text: str) -> tuple[tuple[int, int, int, int], bool] | None:
    match = _TC.match(text.strip())
    if not match:
        return None
    hh, mm, ss, sep, ff = match.groups()
    return (int(hh), int(mm), int(ss), int(ff)), sep in ";,"


def _dropped_per_minute(rate: int) -> int:
    return 2 * (rate // 30)


def _to_frames(hh: int, mm: int, ss: int, ff: int, rate: int, drop: bool) -> int:
    total_minutes = 60 * hh + mm
    frames = (3600 * hh + 60 * mm + ss) * rate + ff
    if drop:
        # Labels :00 and :01 (x2 at 60) are skipped every minute except each tenth minute.
        frames -= _dropped_per_minute(rate) * (total_minutes - total_minutes // 10)
    return frames


def _from_frames(frames: int, rate: int, drop: bool) -> str:
    if drop:
        d = _dropped_per_minute(rate)
        per_10min = rate * 600 - 9 * d
        per_min = rate * 60 - d
        tens, rem = divmod(frames, per_10min)
        skipped = 9 * d * tens
        if rem > d:
            skipped += d * ((rem - d) // per_min)
        frames += skipped
    ff = frames % rate
    secs = frames // rate
    sep = ";" if drop else ":"
    return f"{secs // 3600 % 24:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}{sep}{ff:02d}"
