"""Prompts: the typed prompts of a job and the prompts JSON (``docs/prompts.schema.json``) that
describes them. This is the one prompts parser: the CLI, the editor plugins and the web app's
``/segment`` all read prompts through it.

Two shapes are accepted, so one file works for the CLI, the plugins and the web app's ``/segment``:

* by object (the documented one)::

    {"version": 1, "coordinates": "pixels",
     "objects": [{"id": 1, "name": "runner",
                  "frames": [{"frame": 0, "points": [[320, 180]], "labels": [1]},
                             {"frame": 40, "box": [100, 80, 300, 400]}],
                  "mask": {"frame": 0, "path": "runner_start.png"}}]}

* flat, as the web API takes it: ``[{"frame": 0, "object": 1, "points": [[x, y]], "labels": [1],
  "box": [...], "name": "...", "normalized": false}, ...]`` (or ``{"prompts": [...]}``).

Objects can also be found without clicks (``sam2_web.find.spec``): ``"auto": {"frame": 0,
"min_area": 500}`` segments everything on a frame, ``"text": {"frame": 0, "query": "person, dog"}``
asks a detector; either may stand beside ``objects`` / ``prompts`` or alone.

Validation happens in two steps. :func:`parse_prompts` checks what the file alone can tell
(unknown keys, types, negative coordinates, missing fields) and :func:`check_prompts` what needs
the clip (frames outside the clip or the frame range, coordinates outside the frame). Every
problem is a ``PromptError`` naming the JSON path, e.g. ``objects[0].frames[1].points[2]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from sam2_web.documents import DocumentError, LongNumber, parse_document, read_document, short_repr
from sam2_web.errors import LimitExceededError, PromptError
from sam2_web.find.spec import AutoFind, TextFind, check_frame, parse_auto, parse_text

SCHEMA_VERSION = 1
_FIND_KEYS = {"auto", "text"}
_TOP_KEYS = {"$schema", "version", "coordinates", "objects"} | _FIND_KEYS
_OBJECT_KEYS = {"id", "name", "frames", "mask"}
_FRAME_KEYS = {"frame", "points", "labels", "box"}
_MASK_KEYS = {"frame", "path"}
_FLAT_KEYS = {"frame", "object", "obj_id", "points", "labels", "box", "name", "normalized"}
_COORDINATES = ("pixels", "normalized")
MAX_OBJECT_ID = 2**31 - 1  # ids travel as JSON numbers, int32 tensors and COCO ids
MAX_FRAME = 2**31 - 1  # far beyond any clip; bounds what a message has to print
# The one rule for object names (CLI, batch, plugins, the app's clicks, /set_prompts and /segment):
# a name becomes part of file and folder names (at most 255 bytes each) and of EXR channel names.
MAX_NAME_CHARS = 64


@dataclass(frozen=True)
class FramePrompt:
    """The clicks and/or box given for one object on one frame, in pixels of the source frame.

    Attributes:
        frame: frame index, 0 = the clip's first frame.
        points: ``(x, y)`` clicks; x to the right, y down, from the top-left corner.
        labels: one per point, 1 = on the object, 0 = not on the object.
        box: ``(x0, y0, x1, y1)`` around the object, or None.
    """

    frame: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: Optional[tuple[float, float, float, float]] = None

    def scaled(self, sx: float, sy: float) -> "FramePrompt":
        """The same prompt with x multiplied by ``sx`` and y by ``sy`` (normalized → pixels)."""
        box = None if self.box is None else (self.box[0] * sx, self.box[1] * sy, self.box[2] * sx, self.box[3] * sy)
        return replace(self, points=tuple((x * sx, y * sy) for x, y in self.points), box=box)


@dataclass(frozen=True)
class StartMask:
    """A mask image that seeds an object on one frame (instead of, or besides, clicks).

    Attributes:
        frame: frame index the mask belongs to.
        path: a PNG/JPEG the size of the clip; non-zero (or non-transparent) pixels are the object.
    """

    frame: int
    path: Path


@dataclass(frozen=True)
class ObjectPrompts:
    """Everything the user said about one object.

    Attributes:
        obj_id: the object's number (>= 0); index mattes use it as the pixel value.
        name: display name used for folders, EXR channels and legends (None: ``obj_<id>``).
        frames: prompts, at most one entry per frame, sorted by frame.
        start_mask: an optional seed mask.
    """

    obj_id: int
    name: Optional[str] = None
    frames: tuple[FramePrompt, ...] = ()
    start_mask: Optional[StartMask] = None

    def prompted_frames(self) -> list[int]:
        """Frames that carry a prompt or the start mask, sorted."""
        found = {p.frame for p in self.frames}
        if self.start_mask is not None:
            found.add(self.start_mask.frame)
        return sorted(found)


@dataclass(frozen=True)
class PromptSet:
    """Parsed prompts, not yet checked against a clip.

    Attributes:
        objects: the objects in file order (may be empty when ``auto`` or ``text`` is given).
        normalized: coordinates are fractions of the frame size (0..1) rather than pixels.
        auto: segment everything on a frame and track what is found, or None.
        text: find objects named by phrases on a frame and track them, or None.
    """

    objects: tuple[ObjectPrompts, ...]
    normalized: bool = False
    auto: Optional[AutoFind] = None
    text: Optional[TextFind] = None


# --------------------------------------------------------------------------- reading


def load_prompts(path: str | Path, *, max_name_chars: int = MAX_NAME_CHARS) -> PromptSet:
    """Read and validate a prompts JSON file; relative mask paths are taken from its folder.

    The file is read by the bounded loader (``sam2_web.documents``: size, nesting, long numbers).

    Args:
        path: the file.
        max_name_chars: longest object name (see :func:`check_object_name`).
    Raises:
        PromptError: the file is missing, too large, not JSON, or not valid prompts (the message
            names the JSON path of the problem and what to write instead).
        LimitExceededError: an object name longer than ``max_name_chars``.
    """
    path = Path(path)
    try:
        data = read_document(path, fmt="json", what="prompts file")
    except DocumentError as exc:
        raise PromptError(str(exc)) from None
    return parse_prompts(data, base_dir=path.parent, max_name_chars=max_name_chars)


def prompts_from_json(text: str, *, source: str = "the prompts", base_dir: str | Path = ".",
                      max_name_chars: int = MAX_NAME_CHARS) -> PromptSet:
    """Decode prompts JSON text (by the bounded loader, ``sam2_web.documents``) and validate it
    with :func:`parse_prompts`.

    Args:
        text: the JSON text (either shape, see the module doc).
        source: how messages name the text (a file path, "prompts", ...).
        base_dir: folder that relative start-mask paths are relative to.
        max_name_chars: longest object name (see :func:`check_object_name`).
    Raises:
        PromptError: not JSON (with line and column), too large or nested too deeply, or not
            valid prompts.
        LimitExceededError: an object name longer than ``max_name_chars``.
    """
    try:
        data = parse_document(text, fmt="json", source=source)
    except DocumentError as exc:
        raise PromptError(str(exc)) from None
    return parse_prompts(data, base_dir=base_dir, max_name_chars=max_name_chars)


def parse_prompts(data: Any, *, base_dir: str | Path = ".", max_name_chars: int = MAX_NAME_CHARS) -> PromptSet:
    """Validate decoded prompts JSON (either shape, see the module doc) into a :class:`PromptSet`.

    Args:
        data: the decoded JSON value.
        base_dir: folder that relative start-mask paths are relative to.
        max_name_chars: longest object name (see :func:`check_object_name`).
    Raises:
        PromptError: unknown keys, wrong types, negative coordinates, missing fields, an object
            without any prompt, duplicate ids, or mixed pixel/normalized coordinates.
        LimitExceededError: an object name longer than ``max_name_chars``.
    """
    if isinstance(data, dict) and ("objects" in data or (_FIND_KEYS & set(data) and "prompts" not in data)):
        return replace(_parse_by_object(data, Path(base_dir), max_name_chars), **_parse_finds(data))
    if isinstance(data, dict) and set(data) <= {"prompts", "$schema"} | _FIND_KEYS and "prompts" in data:
        return replace(_parse_flat(data["prompts"], "prompts", max_name_chars), **_parse_finds(data))
    if isinstance(data, list):
        return _parse_flat(data, "", max_name_chars)
    if isinstance(data, dict):
        unknown = sorted(set(data) - _TOP_KEYS)
        hint = f"unknown key(s) {unknown}; " if unknown else ""
        raise PromptError(f'{hint}the prompts need an "objects" list: {{"objects": [{{"id": 1, "frames": [...]}}]}}')
    raise PromptError(f"the prompts must be a JSON object with an \"objects\" list, got {_kind(data)}")


def _parse_by_object(data: dict, base_dir: Path, max_name_chars: int) -> PromptSet:
    _no_unknown(data, _TOP_KEYS, "the top level")
    version = data.get("version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION:
        raise PromptError(f"version: this program reads prompts version {SCHEMA_VERSION}, got {_shown(version)}")
    coordinates = data.get("coordinates", "pixels")
    if coordinates not in _COORDINATES:
        raise PromptError(f"coordinates: must be \"pixels\" or \"normalized\", got {_shown(coordinates)}")
    raw_objects = data.get("objects", [])
    if not isinstance(raw_objects, list) or not (raw_objects or _FIND_KEYS & set(data)):
        raise PromptError("objects: give a non-empty list of objects, e.g. [{\"id\": 1, \"frames\": [...]}]")
    normalized = coordinates == "normalized"
    objects = [_parse_object(item, f"objects[{k}]", base_dir, normalized, max_name_chars)
               for k, item in enumerate(raw_objects)]
    _unique_ids(objects)
    return PromptSet(tuple(objects), normalized)


def _parse_object(item: Any, where: str, base_dir: Path, normalized: bool, max_name_chars: int) -> ObjectPrompts:
    if not isinstance(item, dict):
        raise PromptError(f"{where}: each object must be like {{\"id\": 1, \"frames\": [...]}}, got {_kind(item)}")
    _no_unknown(item, _OBJECT_KEYS, where)
    if "id" not in item:
        raise PromptError(f"{where}: missing \"id\" (the object's number, e.g. 1)")
    obj_id = _whole(item["id"], f"{where}.id", MAX_OBJECT_ID)
    name = check_object_name(item.get("name"), f"{where}.name", max_name_chars)
    raw_frames = item.get("frames", [])
    if not isinstance(raw_frames, list):
        raise PromptError(f"{where}.frames: must be a list of {{\"frame\": N, ...}}, got {_kind(raw_frames)}")
    entries = [_parse_frame(entry, f"{where}.frames[{k}]", normalized) for k, entry in enumerate(raw_frames)]
    mask = None
    if item.get("mask") is not None:
        mask = _parse_mask(item["mask"], f"{where}.mask", base_dir)
    if not entries and mask is None:
        raise PromptError(f"{where}: object {obj_id} has no prompt; give \"frames\" (points or a box) or a \"mask\"")
    return ObjectPrompts(obj_id=obj_id, name=name, frames=_merge(entries, where),
                         start_mask=mask)


def _parse_frame(entry: Any, where: str, normalized: bool) -> FramePrompt:
    if not isinstance(entry, dict):
        raise PromptError(f"{where}: must be like {{\"frame\": 0, \"points\": [[x, y]]}}, got {_kind(entry)}")
    _no_unknown(entry, _FRAME_KEYS, where)
    if "frame" not in entry:
        raise PromptError(f"{where}: missing \"frame\" (the frame index, 0 = first frame)")
    return _frame_prompt(entry, where, normalized)


def _frame_prompt(entry: dict, where: str, normalized: bool) -> FramePrompt:
    """Points/labels/box of one frame entry (shared by both shapes)."""
    frame = _whole(entry["frame"], f"{where}.frame", MAX_FRAME)
    points = _points(entry.get("points"), f"{where}.points", normalized)
    labels = _labels(entry.get("labels"), len(points), f"{where}.labels")
    box = None if entry.get("box") is None else _box(entry["box"], f"{where}.box", normalized)
    if not points and box is None:
        raise PromptError(f"{where}: give points or a box for frame {frame} (\"points\" with \"labels\", or \"box\")")
    return FramePrompt(frame=frame, points=points, labels=labels, box=box)


def _parse_mask(entry: Any, where: str, base_dir: Path) -> StartMask:
    if not isinstance(entry, dict):
        raise PromptError(f"{where}: must be {{\"frame\": N, \"path\": \"mask.png\"}}, got {_kind(entry)}")
    _no_unknown(entry, _MASK_KEYS, where)
    for key in ("frame", "path"):
        if key not in entry:
            raise PromptError(f"{where}: missing \"{key}\"; write {{\"frame\": N, \"path\": \"mask.png\"}}")
    path = entry["path"]
    if not isinstance(path, str) or not path:
        raise PromptError(f"{where}.path: must be a file path, got {_shown(path)}")
    full = Path(path) if Path(path).is_absolute() else base_dir / path
    return StartMask(frame=_whole(entry["frame"], f"{where}.frame", MAX_FRAME), path=full)


def _parse_flat(items: Any, where: str, max_name_chars: int) -> PromptSet:
    if not isinstance(items, list) or not items:
        raise PromptError(f"{where or 'the prompts'}: give a non-empty list of prompts")
    by_id: dict[int, list[FramePrompt]] = {}
    names: dict[int, Optional[str]] = {}
    flags = set()
    for k, item in enumerate(items):
        here = f"{where}[{k}]"
        if not isinstance(item, dict):
            raise PromptError(f"{here}: must be like {{\"frame\": 0, \"object\": 1, \"points\": [[x, y]]}}")
        _no_unknown(item, _FLAT_KEYS, here)
        if "object" in item and "obj_id" in item:
            raise PromptError(f"{here}: give \"object\" or \"obj_id\", not both")
        if "frame" not in item:
            raise PromptError(f"{here}: missing \"frame\" (the frame index, 0 = first frame)")
        obj_key = "object" if "object" in item else "obj_id"
        if obj_key not in item:
            raise PromptError(f"{here}: missing \"object\" (the object's number, e.g. 1)")
        obj_id = _whole(item[obj_key], f"{here}.{obj_key}", MAX_OBJECT_ID)
        normalized = item.get("normalized", False)
        if not isinstance(normalized, bool):
            raise PromptError(f"{here}.normalized: must be true or false, got {_shown(normalized)}")
        flags.add(normalized)
        by_id.setdefault(obj_id, []).append(_frame_prompt(item, here, normalized))
        name = check_object_name(item.get("name"), f"{here}.name", max_name_chars)
        if name is not None:
            names[obj_id] = name
    if len(flags) > 1:
        raise PromptError("mix of normalized and pixel coordinates; use one kind in the whole file")
    objects = tuple(ObjectPrompts(obj_id=o, name=names.get(o), frames=_merge(entries, f"object {o}"))
                    for o, entries in by_id.items())
    return PromptSet(objects, normalized=flags == {True})


def _parse_finds(data: dict) -> dict:
    """The ``auto`` / ``text`` searches of a prompts mapping, as PromptSet fields."""
    found = {}
    if data.get("auto") is not None:
        found["auto"] = parse_auto(data["auto"])
    if data.get("text") is not None:
        found["text"] = parse_text(data["text"])
    return found


def check_finds(auto: Optional[AutoFind], text: Optional[TextFind], *, num_frames: int,
                frame_range: tuple[int, int]) -> None:
    """Check the frames of the ``auto`` / ``text`` searches against the clip and the tracked range.

    Raises:
        PromptError: a frame outside the clip or the range.
    """
    first, last = frame_range
    for what, find in (("auto", auto), ("text", text)):
        if find is None:
            continue
        check_frame(find.frame, num_frames, what)
        if not first <= find.frame <= last:
            raise PromptError(f"{what}: frame {find.frame} is outside the tracked range {first}..{last}; "
                              "widen --start/--end")


def flat_prompts(objects: tuple[ObjectPrompts, ...]) -> list[dict]:
    """Clicks and boxes of ``objects`` in the flat shape (the one every ``/segment`` server reads);
    :func:`parse_prompts` reads them back into the same objects. Start masks are not included.
    """
    items = []
    for obj in objects:
        for p in obj.frames:
            item: dict[str, Any] = {"frame": p.frame, "object": obj.obj_id}
            if p.points:
                item["points"] = [[float(x), float(y)] for x, y in p.points]
                item["labels"] = [int(v) for v in p.labels]
            if p.box is not None:
                item["box"] = [float(v) for v in p.box]
            if obj.name:
                item["name"] = obj.name
            items.append(item)
    return items


# --------------------------------------------------------------------------- checking against a clip


def check_prompts(objects: tuple[ObjectPrompts, ...], *, num_frames: int, width: int, height: int,
                  frame_range: tuple[int, int] | None = None) -> None:
    """Check pixel prompts against the clip they will run on.

    Args:
        objects: prompts in pixels (see :meth:`MaskJob.objects_in_pixels`).
        num_frames, width, height: the clip.
        frame_range: inclusive ``(start, end)`` the job tracks; prompts must lie inside it.
    Raises:
        PromptError: a frame outside the clip or the range, a point or box outside the frame,
            or a start-mask file that does not exist.
    """
    first, last = frame_range if frame_range is not None else (0, num_frames - 1)
    for obj in objects:
        where = f"object {obj.obj_id}"
        for prompt in obj.frames:
            _check_frame(prompt.frame, num_frames, first, last, where)
            for k, (x, y) in enumerate(prompt.points):
                # Pixel (x, y) covers [x, x+1): the last column is width - 1 (the app checks the same).
                if x >= width or y >= height:
                    raise PromptError(
                        f"{where}, frame {prompt.frame}: point #{k} ({x:g}, {y:g}) is outside the "
                        f"{width}x{height} frame; coordinates are pixels from the top-left corner"
                    )
            if prompt.box is not None:
                x0, y0, x1, y1 = prompt.box
                if x1 > width or y1 > height:
                    raise PromptError(
                        f"{where}, frame {prompt.frame}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) reaches outside "
                        f"the {width}x{height} frame"
                    )
        if obj.start_mask is not None:
            _check_frame(obj.start_mask.frame, num_frames, first, last, f"{where} mask")
            if not obj.start_mask.path.is_file():
                raise PromptError(f"{where}: the start mask {obj.start_mask.path} does not exist")


def _check_frame(frame: int, num_frames: int, first: int, last: int, where: str) -> None:
    if frame >= num_frames:
        raise PromptError(
            f"{where}: frame {frame} is outside the clip, which has {num_frames} frames (0..{num_frames - 1})"
        )
    if not first <= frame <= last:
        raise PromptError(f"{where}: frame {frame} is outside the tracked range {first}..{last}; widen --start/--end")


# --------------------------------------------------------------------------- small validators


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float, LongNumber)) else type(value).__name__
    )


def _no_unknown(item: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        listed = ", ".join(map(repr, unknown))
        raise PromptError(f"{where}: unknown key(s) {listed}; allowed: {', '.join(sorted(allowed))}")


_shown = short_repr


def _whole(value: Any, where: str, maximum: int | None = None) -> int:
    # bool is an int in Python but "true" as a frame number is a mistake.
    # (an int is never converted to float: 10**400 would overflow)
    if isinstance(value, LongNumber):  # more digits than any field takes (the loader kept the text)
        bound = f"at most {maximum}" if maximum is not None else "a smaller number"
        raise PromptError(f"{where}: out of range: must be >= 0 and {bound}, got {value}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise PromptError(f"{where}: must be a whole number, got {_shown(value)}")
    if value < 0:
        raise PromptError(f"{where}: must be >= 0, got {_shown(value)}")
    if maximum is not None and value > maximum:
        raise PromptError(f"{where}: must be at most {maximum}, got {_shown(value)}")
    return int(value)


def check_object_name(value: Any, where: str = "the object name", max_chars: int = MAX_NAME_CHARS) -> Optional[str]:
    """The one rule for an object's name, wherever it comes from (prompts files, ``/segment``,
    ``/set_prompts``, clicks in the app): printable text, surrounding spaces dropped, at most
    ``max_chars`` characters (it becomes part of file names and EXR channel names).

    Args:
        value: the name as given; None or blank text means "no name".
        where: how messages name the field (``objects[0].name``).
        max_chars: longest name; 0 or less: no length limit (the app's ``limits.max_name_chars``).
    Returns:
        The stripped name, or None for no name.
    Raises:
        PromptError: not text, or with line breaks, tabs or other control characters.
        LimitExceededError: longer than ``max_chars``.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise PromptError(f"{where}: must be text, got {_shown(value)}")
    name = value.strip()
    if not name:
        return None
    if 0 < max_chars < len(name):
        raise LimitExceededError(f"{where}: {len(name)} characters long; use at most {max_chars}")
    if not name.isprintable():
        raise PromptError(f"{where}: must be plain text, without line breaks, tabs or other control characters")
    return name


def _coordinate(value: Any, where: str, normalized: bool) -> float:
    if isinstance(value, LongNumber):
        raise PromptError(f"{where}: out of range: coordinates are pixels of the frame (or fractions of it), "
                          f"got {value}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PromptError(f"{where}: must be a number, got {_shown(value)}")
    if value < 0:
        raise PromptError(f"{where}: {_shown(value)} is negative; coordinates are measured from the top-left corner")
    if normalized and value > 1:
        raise PromptError(f"{where}: {_shown(value)} is above 1, but normalized coordinates are fractions of the frame size")
    return float(value)


def _points(value: Any, where: str, normalized: bool) -> tuple[tuple[float, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PromptError(f"{where}: must be a list of [x, y] pairs, got {_kind(value)}")
    points = []
    for k, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise PromptError(f"{where}[{k}]: must be an [x, y] pair, got {_shown(pair)}")
        points.append((_coordinate(pair[0], f"{where}[{k}][0]", normalized),
                       _coordinate(pair[1], f"{where}[{k}][1]", normalized)))
    return tuple(points)


def _labels(value: Any, count: int, where: str) -> tuple[int, ...]:
    if value is None:
        return (1,) * count  # clicks without labels are positive clicks
    if not isinstance(value, list):
        raise PromptError(f"{where}: must be a list of 1 (object) / 0 (not object), got {_kind(value)}")
    if len(value) != count:
        raise PromptError(f"{where}: {len(value)} labels for {count} points; give one label per point")
    for k, label in enumerate(value):
        if isinstance(label, bool) or label not in (0, 1):
            raise PromptError(f"{where}[{k}]: must be 1 (on the object) or 0 (not on the object), got {_shown(label)}")
    return tuple(int(v) for v in value)


def _box(value: Any, where: str, normalized: bool) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4:
        raise PromptError(f"{where}: must be [x0, y0, x1, y1], got {_shown(value)}")
    x0, y0, x1, y1 = (_coordinate(v, f"{where}[{k}]", normalized) for k, v in enumerate(value))
    if x1 <= x0 or y1 <= y0:
        raise PromptError(f"{where}: [x0, y0, x1, y1] needs x0 < x1 and y0 < y1 (top-left, bottom-right), got {value}")
    return (x0, y0, x1, y1)


def _merge(entries: list[FramePrompt], where: str) -> tuple[FramePrompt, ...]:
    """One prompt per frame: points of repeated frames are joined; two boxes on a frame clash."""
    merged: dict[int, FramePrompt] = {}
    for entry in entries:
        old = merged.get(entry.frame)
        if old is None:
            merged[entry.frame] = entry
            continue
        if old.box is not None and entry.box is not None:
            raise PromptError(f"{where}: two boxes on frame {entry.frame}; an object takes one box per frame")
        merged[entry.frame] = FramePrompt(entry.frame, old.points + entry.points, old.labels + entry.labels,
                                          old.box if old.box is not None else entry.box)
    return tuple(merged[f] for f in sorted(merged))


def _unique_ids(objects: list[ObjectPrompts]) -> None:
    seen: set[int] = set()
    for obj in objects:
        if obj.obj_id in seen:
            raise PromptError(f"objects: id {obj.obj_id} is used twice; give every object its own id")
        seen.add(obj.obj_id)
