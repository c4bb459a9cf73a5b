"""Frame rates and SMPTE timecodes ("HH:MM:SS:FF", "HH:MM:SS;FF" for drop frame): the one place
that reads a rate or a timecode, for showing frame positions the way editors do and for writing
a start timecode into exports.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from sam2_web.errors import FrameIndexError

if TYPE_CHECKING:
    from sam2_web.media.probe import VideoInfo

_TC = re.compile(r"^(\d{1,2}):(\d\d):(\d\d)([:;.,])(\d\d)$")
# Float rates that are really NTSC rationals (29.97 means 30000/1001, not 2997/100).
_NTSC_BASES = (24, 30, 48, 60, 120, 240)
# Drop frame only exists at these rates; elsewhere a drop separator is read as non-drop.
_DROP_FRAME_RATES = (Fraction(30000, 1001), Fraction(60000, 1001))


def to_fraction(fps: Any) -> Fraction:
    """Frame rate as an exact Fraction.

    Accepts int, float, Fraction, a "num/den" or decimal string, or a (num, den) pair. Floats
    within 0.002 of an NTSC rate (24000/1001, 30000/1001, ...) snap to it; other floats are
    rounded to the nearest fraction with a denominator <= 1001.

    Raises:
        ValueError: for a missing, non-positive or unparsable rate.
    """
    try:
        if isinstance(fps, Fraction):
            rate = fps
        elif isinstance(fps, (tuple, list)) and len(fps) == 2:
            rate = Fraction(int(fps[0]), int(fps[1]))
        elif isinstance(fps, int):
            rate = Fraction(fps)
        elif isinstance(fps, str) and "/" in fps:
            num, den = fps.split("/")
            rate = Fraction(int(num), int(den))
        else:
            value = float(fps)
            rate = Fraction(value).limit_denominator(1001)
            for base in _NTSC_BASES:
                ntsc = Fraction(base * 1000, 1001)
                if abs(value - float(ntsc)) < 0.002:
                    rate = ntsc
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ValueError(f"fps {fps!r} is not a frame rate; pass e.g. 25, 29.97 or '30000/1001'") from exc
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def nominal_rate(rate: Fraction) -> int:
    """Frames counted per timecode second: the rate rounded (30 for 29.97), at least 1."""
    return max(1, round(rate))


def parse_timecode(text: str) -> tuple[tuple[int, int, int, int], bool]:
    """``(hh, mm, ss, ff)`` and whether the separator before the frames marks drop frame.

    Raises:
        ValueError: the text does not look like HH:MM:SS:FF.
    """
    found = _TC.match(text.strip())
    if not found:
        raise ValueError(f"timecode {text!r} must look like HH:MM:SS:FF (or HH:MM:SS;FF for drop frame)")
    hh, mm, ss, sep, ff = found.groups()
    return (int(hh), int(mm), int(ss), int(ff)), sep != ":"


def normal_timecode(text: str | None, rate: Fraction) -> str | None:
    """"H:MM:SS:FF"-like text -> "HH:MM:SS:FF", or "HH:MM:SS;FF" for drop frame (None stays None).

    Drop frame only exists at 30000/1001 and 60000/1001; elsewhere a drop separator is read as
    non-drop (the numbers are the same) rather than rejected, since ffmpeg would refuse it.

    Raises:
        ValueError: malformed, or not a valid time at ``rate``.
    """
    if text is None:
        return None
    (hh, mm, ss, ff), drop = parse_timecode(text)
    if mm > 59 or ss > 59 or ff >= nominal_rate(rate):
        raise ValueError(f"timecode {text!r} is not a valid time at {float(rate):.3f} fps")
    drop = drop and rate in _DROP_FRAME_RATES
    return f"{hh:02d}:{mm:02d}:{ss:02d}{';' if drop else ':'}{ff:02d}"


def format_timecode(info: "VideoInfo", frame_idx: int) -> str:
    """Timecode of ``frame_idx`` in ``info``'s clip; see ``VideoInfo.timecode``."""
    if not 0 <= frame_idx < info.num_frames:
        raise FrameIndexError(frame_out_of_range(frame_idx, info.num_frames))
    if info.start_timecode:
        try:
            rate = to_fraction(info.fps)
            (hh, mm, ss, ff), drop = parse_timecode(info.start_timecode)
        except ValueError:
            pass  # unreadable metadata: fall back to the frame's own time below
        else:
            fps, drop = nominal_rate(rate), drop and rate in _DROP_FRAME_RATES
            return _from_frames(_to_frames(hh, mm, ss, ff, fps, drop) + frame_idx, fps, drop)
    fps = max(1, int(round(info.fps)))
    seconds = info.timestamps[frame_idx]
    whole = int(math.floor(seconds + 1e-9))
    ff = min(fps - 1, int(round((seconds - whole) * fps)))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}:{ff:02d}"


def frame_out_of_range(frame_idx: int, num_frames: int) -> str:
    """The message for an index outside a clip of ``num_frames`` frames."""
    return f"frame {frame_idx} is outside the clip (0–{num_frames - 1})"


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
