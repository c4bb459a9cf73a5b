"""What a job asks to find without clicks, as prompts files, batch manifests and the CLI say it:

* ``"auto": {"frame": 0, "min_area": 500}`` — segment everything on frame 0 and track every
  mask of at least 500 pixels (``sam2-web mask --auto 0 --min-area 500``);
* ``"text": {"frame": 0, "query": "person, dog"}`` — boxes an open-vocabulary detector finds for
  each phrase on frame 0, each tracked as an object named after its phrase
  (``sam2-web mask --text "person, dog" --text-frame 0``); ``box_threshold`` overrides the
  configured one (``find.text`` in ``configs/app.yaml``).

Only plain data and its validation live here (no torch): the finding itself is
``sam2_web.find.auto`` and ``sam2_web.find.text``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from sam2_web.errors import PromptError

AUTO_KEYS = {"frame", "min_area"}
TEXT_KEYS = {"frame", "query", "box_threshold"}
MAX_QUERY_CHARS = 500


@dataclass(frozen=True)
class AutoFind:
    """Segment everything on one frame and track what is found.

    Attributes:
        frame: the frame to search (0 = the clip's first).
        min_area: ignore masks smaller than this many pixels of the clip's frame.
    """

    frame: int = 0
    min_area: int = 0


@dataclass(frozen=True)
class TextFind:
    """Find objects named by phrases on one frame and track them.

    Attributes:
        query: the text as the user typed it, phrases separated by commas or periods.
        frame: the frame to search.
        box_threshold: keep boxes the detector scores above this; None = the configured one
            (whose default is the detector's own).
    """

    query: str
    frame: int = 0
    box_threshold: Optional[float] = None

    @property
    def phrases(self) -> list[str]:
        """The phrases of :attr:`query`, in order, without repeats."""
        return split_phrases(self.query)


def split_phrases(query: str) -> list[str]:
    """``"person, dog. red car"`` → ``["person", "dog", "red car"]`` (lower-cased, repeats dropped)."""
    seen: list[str] = []
    for part in query.replace(".", ",").replace(";", ",").split(","):
        phrase = " ".join(part.split()).lower()
        if phrase and phrase not in seen:
            seen.append(phrase)
    return seen


def parse_auto(value: Any, where: str = "auto") -> AutoFind:
    """Validate ``{"frame": N, "min_area": PX}`` (both optional) into an :class:`AutoFind`.

    Raises:
        PromptError: not a mapping, unknown keys, or values that are not whole numbers >= 0.
    """
    if value is True or value == {}:
        return AutoFind()
    if not isinstance(value, dict):
        raise PromptError(f'{where}: must be like {{"frame": 0, "min_area": 500}}, got {_kind(value)}')
    _no_unknown(value, AUTO_KEYS, where)
    return AutoFind(frame=_whole(value.get("frame", 0), f"{where}.frame"),
                    min_area=_whole(value.get("min_area", 0), f"{where}.min_area"))


def parse_text(value: Any, where: str = "text") -> TextFind:
    """Validate ``{"query": "person, dog", "frame": N, ...}`` (or just the query text) into a
    :class:`TextFind`.

    Raises:
        PromptError: not a mapping or text, unknown keys, an empty query, or thresholds outside 0..1.
    """
    if isinstance(value, str):
        value = {"query": value}
    if not isinstance(value, dict):
        raise PromptError(f'{where}: must be like {{"query": "person, dog", "frame": 0}}, got {_kind(value)}')
    _no_unknown(value, TEXT_KEYS, where)
    query = value.get("query")
    if not isinstance(query, str):
        raise PromptError(f'{where}.query: give the objects to find as text, e.g. "person, dog"')
    check_query(query, f"{where}.query")
    return TextFind(query=query, frame=_whole(value.get("frame", 0), f"{where}.frame"),
                    box_threshold=_threshold(value.get("box_threshold"), f"{where}.box_threshold"))


def check_query(query: str, where: str = "the text") -> None:
    """Raise PromptError for a query with no phrase in it or an absurdly long one."""
    if len(query) > MAX_QUERY_CHARS:
        raise PromptError(f"{where}: {len(query)} characters; name the objects in at most {MAX_QUERY_CHARS}")
    if not split_phrases(query):
        raise PromptError(f'{where} is empty; name what to find, e.g. "person, dog" (phrases separated by commas)')


def check_frame(frame: int, num_frames: int, what: str) -> None:
    """Raise PromptError when ``frame`` is not a frame of a clip of ``num_frames`` frames."""
    if not 0 <= frame < num_frames:
        raise PromptError(f"{what}: frame {frame} is outside the clip, which has {num_frames} frames "
                          f"(0..{num_frames - 1})")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a text", bool: "true/false", type(None): "nothing"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _no_unknown(item: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(item) - allowed)
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise PromptError(f"{where}: must be a whole number, got {value!r}")
    if value < 0 or value > 2**31 - 1:
        raise PromptError(f"{where}: must be between 0 and {2**31 - 1}, got {value!r}")
    return int(value)


def _threshold(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise PromptError(f"{where}: must be a number from 0 to 1, got {value!r}")
    return float(value)
