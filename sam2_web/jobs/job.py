"""The mask job every host hands to the engine: a clip, prompts per object per frame, a model,
a frame range, a tracking direction and what to write where.

Only plain typed data lives here; the prompts (their types and JSON) are ``sam2_web.jobs.prompts``,
running a job is ``sam2_web.jobs.runner``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Optional

from sam2_web.errors import FrameIndexError, PromptError

from sam2_web.find.spec import AutoFind, TextFind
from sam2_web.jobs.prompts import FramePrompt, ObjectPrompts, StartMask, check_finds, check_prompts
from sam2_web.video.passes import DIRECTIONS

__all__ = ["DIRECTIONS", "FramePrompt", "FrameRange", "MaskJob", "ModelSettings", "ObjectPrompts", "OutputSpec",
           "StartMask", "split_overrides"]


@dataclass(frozen=True)
class FrameRange:
    """Inclusive range of frames to track; frames outside it get empty mattes.

    Attributes:
        start: first frame (default 0).
        end: last frame (default None = the clip's last frame).
    """

    start: int = 0
    end: Optional[int] = None

    def resolve(self, num_frames: int) -> tuple[int, int]:
        """``(start, end)`` with ``end`` filled in, both checked against the clip.

        Raises:
            FrameIndexError: a bound outside ``0..num_frames-1`` or ``start > end``.
        """
        end = num_frames - 1 if self.end is None else self.end
        if not 0 <= self.start < num_frames or not 0 <= end < num_frames:
            raise FrameIndexError(
                f"the frame range {self.start}..{end} is outside the clip, which has frames 0..{num_frames - 1}; "
                "fix --start/--end"
            )
        if self.start > end:
            raise FrameIndexError(f"the frame range starts at {self.start} but ends at {end}; --start must be <= --end")
        return self.start, end


@dataclass(frozen=True)
class OutputSpec:
    """What to write and where.

    Attributes:
        out_dir: folder receiving one output per format, named ``<name>_<format>[.ext]``.
        formats: keys of ``sam2_web.export.formats.FORMATS`` (``png``, ``prores``, ``exr`` ...).
        feather_px: soften matte edges by this many pixels (formats with soft edges).
        grow_px: grow (> 0) or shrink (< 0) every mask by this many pixels.
        invert: export the background instead of the objects.
        bit_depth: 8 or 16 (PNG mattes, RGBA PNG, ProRes, FFV1).
        name: file stem of the outputs (default: the clip's file name without extension).
        soft_edges: solve soft alpha around each mask's edge from the frame's colours
            (``sam2_web.matting``); binary formats (index matte, COCO RLE) stay binary.
        edge_band_px: half-width of the soft-edge band in pixels; None picks it from the model's
            mask grid and the object's size.
    """

    out_dir: Path
    formats: tuple[str, ...] = ("png",)
    feather_px: float = 0.0
    grow_px: int = 0
    invert: bool = False
    bit_depth: int = 8
    name: Optional[str] = None
    soft_edges: bool = False
    edge_band_px: Optional[float] = None

    def stem(self, clip: Path) -> str:
        """The file stem of every output of a job on ``clip``."""
        return self.name or Path(clip).stem or "clip"


@dataclass(frozen=True)
class MaskJob:
    """One mask job: the contract between every host adapter and the engine.

    Attributes:
        clip: a video file or a folder of frames.
        objects: the prompted objects (at least one).
        output: formats, edge options and folder.
        model: a registry name or alias (``sam2.1_hiera_t``, ``tiny``, ``facebook/sam2.1-hiera-tiny``);
            ``auto`` (picked for the device, see ``sam2_web.models.auto_model``); None uses the app config's model.
        checkpoint: a local ``.pt`` used instead of the Hub download.
        device: ``auto``/``cpu``/``cuda``/``mps``; None uses the app config's.
        overrides: more hydra overrides of ``configs/app.yaml`` (``++model.image_size=512``,
            ``engine.read_ahead=8`` ...).
        frame_range: frames to track.
        direction: ``both`` (default), ``forward`` or ``backward`` from the earliest prompt.
        normalized: prompt coordinates are fractions (0..1) of the frame size, not pixels.
        auto: also track everything found on a frame (segment everything), or None.
        text: also track what a detector finds for phrases on a frame, or None.
    """

    clip: Path
    objects: tuple[ObjectPrompts, ...]
    output: OutputSpec
    model: Optional[str] = None
    checkpoint: Optional[Path] = None
    device: Optional[str] = None
    overrides: tuple[str, ...] = ()
    frame_range: FrameRange = field(default_factory=FrameRange)
    direction: str = "both"
    normalized: bool = False
    auto: Optional[AutoFind] = None
    text: Optional[TextFind] = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise PromptError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if not self.objects and self.auto is None and self.text is None:
            raise PromptError("the job has no objects; add at least one object with a click, a box or a mask, "
                              "or find them with --auto FRAME or --text \"person, dog\"")
        ids = [o.obj_id for o in self.objects]
        if len(set(ids)) != len(ids):
            raise PromptError(f"object ids must be unique, got {ids}")

    @property
    def obj_ids(self) -> list[int]:
        """Object ids in the order the objects were given."""
        return [o.obj_id for o in self.objects]

    @property
    def names(self) -> dict[int, str]:
        """Display names of the objects that have one."""
        return {o.obj_id: o.name for o in self.objects if o.name}

    def objects_in_pixels(self, width: int, height: int) -> tuple[ObjectPrompts, ...]:
        """The objects with prompt coordinates in pixels of a ``width`` x ``height`` frame."""
        if not self.normalized:
            return self.objects
        return tuple(replace(o, frames=tuple(p.scaled(width, height) for p in o.frames)) for o in self.objects)

    def checked_prompts(self, info) -> tuple[int, int, tuple[ObjectPrompts, ...]]:
        """Resolve the frame range and check the prompts against the clip described by ``info``.

        Args:
            info: the clip's ``VideoInfo`` (frame count and size).
        Returns:
            ``(first, last, objects)``: the frames to track and the objects with pixel coordinates.
        Raises:
            PromptError, FrameIndexError: prompts or range that do not fit the clip.
        """
        first, last = self.frame_range.resolve(info.num_frames)
        objects = self.objects_in_pixels(info.width, info.height)
        check_prompts(objects, num_frames=info.num_frames, width=info.width, height=info.height,
                      frame_range=(first, last))
        check_finds(self.auto, self.text, num_frames=info.num_frames, frame_range=(first, last))
        return first, last, objects

    def app_overrides(self) -> list[str]:
        """Hydra overrides of ``configs/app.yaml`` that select this job's model and device.

        The checkpoint path is not among them (a path is not always valid override syntax); the
        runner sets it on the composed config. The model is given as the job names it: composing
        the app config resolves it (``sam2_web.models.resolve_model``: aliases, ``auto``).
        """
        out: list[str] = []
        if self.model is not None:
            out.append(f"model={self.model}")
        if self.device is not None:
            out.append(f"device={self.device}")
        return out + list(self.overrides)


class ModelSettings(NamedTuple):
    """Which model runs where, as ``KEY=VALUE`` arguments give it (see :func:`split_overrides`).

    Attributes:
        model: the ``model=`` value (a registry name, alias or Hub id), or None.
        checkpoint: the ``checkpoint=`` value (a local ``.pt``), or None.
        device: the ``device=`` value, or None.
        overrides: every other hydra override, in order.
    """

    model: Optional[str]
    checkpoint: Optional[str]
    device: Optional[str]
    overrides: tuple[str, ...]


def split_overrides(items: Sequence[str]) -> ModelSettings:
    """Pull ``model=``, ``checkpoint=`` and ``device=`` (with or without ``+``/``++``) out of hydra
    ``KEY=VALUE`` overrides: they become :class:`MaskJob` fields (registry lookup, path handling).

    Raises:
        ValueError: an item that is not ``KEY=VALUE`` (the message says what to write).
    """
    found: dict[str, Optional[str]] = {"model": None, "checkpoint": None, "device": None}
    rest = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"{item!r} is not a KEY=VALUE override; give e.g. model=sam2.1_hiera_s or device=cuda")
        key, value = item.split("=", 1)
        if key.lstrip("+") in found:
            found[key.lstrip("+")] = value
        else:
            rest.append(item)
    return ModelSettings(found["model"], found["checkpoint"], found["device"], tuple(rest))
