"""Which frames a propagation visits, and in what order: the one definition the tracker runs and
every caller that plans or counts passes (the jobs' frame ranges, progress totals) reads.

The order is the reference's: a forward pass runs from its start frame to the clip's end (or
``max_frames`` further); a backward pass runs from its start frame down to frame 0, revisiting the
start frame itself; "both" is forward, then backward from the same start.
"""

from __future__ import annotations

from typing import Optional

DIRECTIONS = ("both", "forward", "backward")
_REVERSES = {"forward": (False,), "backward": (True,), "both": (False, True)}


def reverses(direction: str) -> tuple[bool, ...]:
    """The passes of ``direction`` in order, as ``reverse`` flags.

    Raises:
        ValueError: ``direction`` is not one of :data:`DIRECTIONS`.
    """
    if direction not in _REVERSES:
        raise ValueError(f"direction must be 'forward', 'backward' or 'both', got {direction!r}")
    return _REVERSES[direction]


def pass_frames(start: int, max_frames: Optional[int], reverse: bool, num_frames: int) -> list[int]:
    """Frames of one pass in processing order.

    Args:
        start: the pass's first frame.
        max_frames: frames to go beyond ``start`` (None: to the clip's end, or frame 0 backwards).
        reverse: a backward pass.
        num_frames: frames in the clip.
    """
    count = num_frames if max_frames is None else max_frames
    if reverse:
        end = max(start - count, 0)
        return list(range(start, end - 1, -1)) if start > 0 else []
    end = min(start + count, num_frames - 1)
    return list(range(start, end + 1))
