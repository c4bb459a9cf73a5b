"""What every exporter shares: the clip description, the options, input normalisation (masks
and frames in any accepted shape -> exactly num_frames typed items) and the per-run job.

Kept free of any format knowledge so the writers in ``export.images`` / ``export.video`` read
as "what goes into the file" only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np

from sam2_web.errors import ExportError
from sam2_web.export.matte import feather, soft_matte, union
from sam2_web.media.timecode import normal_timecode, to_fraction

# One frame's masks as callers hand them over: {obj_id: (H, W)} or an (O, H, W) stack ordered
# like ``obj_ids`` (a bare (H, W) array when there is a single object). Bool, 0/1 or 0/255
# arrays (or CPU tensors); a uint8 matte is thresholded at 128. (Not the engine's typed
# ``sam2_web.video.state.FrameMasks``, though one converts to a dict of its masks.)
MasksLike = Union[Mapping[int, np.ndarray], np.ndarray]
# The whole clip: frame-ordered iterable (a short one is padded with empty frames), a
# {frame_index: MasksLike} mapping for sparse results, or a (T, O, H, W) / (T, H, W) array.
MaskSource = Union[Iterable[MasksLike], Mapping[int, MasksLike], np.ndarray]
# The source pictures: ``get_frame(i)`` or a frame-ordered iterable of (H, W, 3) uint8 RGB
# (a ``sam2_web.media.FrameSource``'s ``get`` is one).
FramesLike = Union[Callable[[int], np.ndarray], Iterable[np.ndarray]]


@dataclass(frozen=True)
class ExportClip:
    """The source clip an export must match frame for frame.

    Attributes:
        num_frames: frames in the source; every output has exactly this many.
        fps: exact frame rate.
        width, height: source size in pixels; masks and frames must have it.
        start_frame: number of the first frame, used to name image sequences.
        start_timecode: "HH:MM:SS:FF" (";" for drop frame) of the first frame, or None.
    """

    num_frames: int
    fps: Fraction
    width: int
    height: int
    start_frame: int = 0
    start_timecode: str | None = None

    @classmethod
    def make(cls, num_frames: int, fps: Any, width: int, height: int,
             start_frame: int = 0, start_timecode: str | None = None) -> "ExportClip":
        """Validate plain arguments into an ExportClip; raises ExportError on a bad value."""
        if int(num_frames) <= 0:
            raise ExportError(f"num_frames must be >= 1, got {num_frames}")
        if int(width) <= 0 or int(height) <= 0:
            raise ExportError(f"invalid frame size {width}x{height}")
        try:
            rate = to_fraction(fps)
            timecode = normal_timecode(start_timecode, rate)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        return cls(int(num_frames), rate, int(width), int(height), int(start_frame), timecode)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def rate(self) -> str:
        """The rate as ffmpeg's "num/den" rational."""
        return f"{self.fps.numerator}/{self.fps.denominator}"


@dataclass(frozen=True)
class ExportOptions:
    """How masks become mattes, and per-format knobs. Defaults give a plain 8-bit matte.

    Attributes:
        objects: object ids to export, in this order (index matte values, overlay stacking);
            None exports every id passed to ``export``.
        names: display names per object id, used for folders, EXR channels and legends;
            missing ids are called ``obj_<id>``.
        grow_px: grow (> 0) or shrink (< 0) each binary mask by a disc of this radius.
        feather_px: soften the edges (Gaussian, sigma = feather_px / 2); only formats with
            soft edges (see ``FORMATS``) use it, binary ones (index matte, RLE) ignore it.
        invert: export the background instead of the object(s).
        bit_depth: 8 or 16 for PNG mattes/RGBA PNG, ProRes and FFV1 input precision.
        name: file stem of image sequences; defaults to the output's name.
        crf: quality for lossy codecs (lower is better); None picks a per-codec default.
        overlay_alpha: fill opacity of the overlay preview.
        blur_px: background blur radius of the "blur" effect.
        background: RGB colour of the "replace" effect.
        dim: brightness kept on the background by the "highlight" effect.
        soft_edges: solve a soft alpha around each mask's edge from the source colours
            (``sam2_web.matting``) in the formats with soft edges; binary ones (index matte, COCO
            RLE, overlay) stay binary. Needs ``frames=``. Order: grow/shrink the mask, solve the
            soft edge around it, feather, invert.
        edge_band_px: half-width of the band solved for soft edges; None picks it from the frame
            size, ``mask_resolution`` and the object's size.
        matte_method: ``guided`` (default, no weights) or ``vitmatte`` (see ``sam2_web.matting``).
        mask_resolution: cells across the long side of the model's mask grid (its input size / 4).
    """

    objects: tuple[int, ...] | None = None
    names: Mapping[int, str] | None = None
    grow_px: int = 0
    feather_px: float = 0.0
    invert: bool = False
    bit_depth: int = 8
    name: str | None = None
    crf: int | None = None
    overlay_alpha: float = 0.5
    blur_px: int = 15
    background: tuple[int, int, int] = (0, 177, 64)
    dim: float = 0.3
    soft_edges: bool = False
    edge_band_px: float | None = None
    matte_method: str = "guided"
    mask_resolution: int = 256

    def matte_options(self):
        """The ``sam2_web.matting.MatteOptions`` the soft edges use."""
        from sam2_web.matting import MatteOptions

        return MatteOptions(method=self.matte_method, band_px=self.edge_band_px,
                            mask_resolution=int(self.mask_resolution))

    def validate(self) -> None:
        """Raise ExportError for an option value no format can honour."""
        from sam2_web.errors import MattingError

        if self.soft_edges:
            try:
                self.matte_options().validate()
            except MattingError as exc:
                raise ExportError(str(exc)) from None
        if self.bit_depth not in (8, 16):
            raise ExportError(f"bit_depth must be 8 or 16, got {self.bit_depth}")
        if self.feather_px < 0:
            raise ExportError(f"feather_px must be >= 0, got {self.feather_px}; use grow_px < 0 to shrink")
        if int(self.grow_px) != self.grow_px:
            raise ExportError(f"grow_px must be a whole number of pixels, got {self.grow_px}")
        if not 0.0 <= self.overlay_alpha <= 1.0 or not 0.0 <= self.dim <= 1.0:
            raise ExportError("overlay_alpha and dim must be between 0 and 1")
        if self.blur_px < 0:
            raise ExportError(f"blur_px must be >= 0, got {self.blur_px}")


def object_labels(obj_ids: Sequence[int], names: Mapping[int, str] | None) -> dict[int, str]:
    """Filesystem- and EXR-safe unique label per object id (``obj_<id>`` unless named)."""
    labels: dict[int, str] = {}
    for o in obj_ids:
        raw = (names or {}).get(o) or f"obj_{o}"
        label = re.sub(r"[^A-Za-z0-9_-]+", "_", str(raw)).strip("_") or f"obj_{o}"
        if label in labels.values():
            label = f"{label}_{o}"
        labels[o] = label
    return labels


def _as_bool(mask: Any, clip: ExportClip, obj_id: int, index: int) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != clip.shape:
        raise ExportError(
            f"mask of object {obj_id} at frame {index} has shape {arr.shape} but the clip is "
            f"{clip.height}x{clip.width} (HxW); upscale masks to the source size before exporting"
        )
    # uint8 mattes (0..255) are cut at mid-grey; everything else is "non-zero = object".
    return arr > (127 if arr.dtype == np.uint8 and arr.max(initial=0) > 1 else 0)


def _frame_dict(item: Any, obj_ids: Sequence[int], clip: ExportClip, index: int) -> dict[int, np.ndarray]:
    empty = np.zeros(clip.shape, dtype=bool)
    if item is None:
        return {o: empty for o in obj_ids}
    if isinstance(item, Mapping):
        return {o: _as_bool(item[o], clip, o, index) if o in item else empty for o in obj_ids}
    arr = np.asarray(item)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != len(obj_ids):
        raise ExportError(
            f"frame {index}: got a mask array of shape {arr.shape} for {len(obj_ids)} objects; "
            "pass {obj_id: (H, W)} per frame or an (O, H, W) stack ordered like obj_ids"
        )
    return {o: _as_bool(arr[k], clip, o, index) for k, o in enumerate(obj_ids)}


def iter_masks(source: MaskSource, obj_ids: Sequence[int], clip: ExportClip) -> Iterator[dict[int, np.ndarray]]:
    """Yield exactly ``clip.num_frames`` dicts {obj_id: (H, W) bool}, one per source frame.

    Missing objects and missing trailing frames come out empty, so outputs always have the
    source's frame count.

    Raises:
        ExportError: a mask of the wrong size, or more frames than the clip has.
    """
    if isinstance(source, Mapping):
        bad = [k for k in source if not 0 <= int(k) < clip.num_frames]
        if bad:
            raise ExportError(f"mask frames {bad[:5]} are outside the clip's 0..{clip.num_frames - 1}")
        for i in range(clip.num_frames):
            yield _frame_dict(source.get(i), obj_ids, clip, i)
        return
    count = 0
    for item in source:
        if count >= clip.num_frames:
            raise ExportError(f"got more mask frames than the clip's {clip.num_frames}; pass num_frames of the source")
        yield _frame_dict(item, obj_ids, clip, count)
        count += 1
    for i in range(count, clip.num_frames):
        yield _frame_dict(None, obj_ids, clip, i)


def iter_frames(frames: FramesLike, clip: ExportClip) -> Iterator[np.ndarray]:
    """Yield the source's ``num_frames`` RGB frames as (H, W, 3) uint8, from a callable
    ``get_frame(i)`` or a frame-ordered iterable.

    Raises:
        ExportError: a frame of the wrong size/type, or fewer frames than the clip has.
    """
    it: Iterator[np.ndarray] | None = None if callable(frames) else iter(frames)
    for i in range(clip.num_frames):
        if it is None:
            frame = frames(i)  # type: ignore[operator]
        else:
            try:
                frame = next(it)
            except StopIteration:
                raise ExportError(f"the frame source ended after {i} of {clip.num_frames} frames") from None
        arr = np.asarray(frame)
        if arr.ndim != 3 or arr.shape[:2] != clip.shape or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise ExportError(
                f"frame {i} is {arr.dtype} {arr.shape}; expected uint8 ({clip.height}, {clip.width}, 3) RGB"
            )
        yield arr[..., :3]


# --------------------------------------------------------------------------- one export run


class FrameMasks(dict):
    """One frame's ``{obj_id: (H, W) bool}``; ``frame`` is the source picture when soft edges need it."""

    frame: np.ndarray | None = None


@dataclass
class ExportJob:
    """Everything a writer needs, already validated: the clip, the objects in output order,
    their labels, the options, and per-frame streams (masks already grown/shrunk).

    ``masks`` yields exactly ``clip.num_frames`` dicts; ``frames`` is None for formats that do
    not use the source pictures.
    """

    clip: ExportClip
    obj_ids: tuple[int, ...]
    labels: dict[int, str]
    options: ExportOptions
    masks: Iterator[dict[int, np.ndarray]]
    frames: Iterator[np.ndarray] | None = None
    soft_edges: bool = False
    _streams: dict = field(default_factory=dict)

    def matte(self, mask: np.ndarray, frame: np.ndarray | None = None, key: Any = None) -> np.ndarray:
        """One bool mask -> float32 matte with the soft-edge/feather/invert options applied.

        Args:
            mask: the (already grown/shrunk) mask.
            frame: the source frame; soft edges are solved only when it is given and the job
                has ``soft_edges``.
            key: which stream of mattes this is (an object id, or "all" for the union): soft
                edges keep each steady over time (``sam2_web.matting.MatteStream``).
        """
        if not (self.soft_edges and frame is not None):
            return soft_matte(mask, feather_px=self.options.feather_px, invert=self.options.invert)
        from sam2_web.errors import MattingError
        from sam2_web.matting import MatteStream

        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = MatteStream(self.options.matte_options())
        try:
            alpha = stream.update(frame, mask)
        except MattingError as exc:
            raise ExportError(f"soft edges: {exc}") from None
        if self.options.feather_px > 0:
            alpha = feather(alpha, self.options.feather_px)
        return (1.0 - alpha).astype(np.float32) if self.options.invert else alpha

    def object_matte(self, masks: Mapping[int, np.ndarray], obj_id: int) -> np.ndarray:
        """Float32 matte of one object on one frame (per-object formats)."""
        return self.matte(masks[obj_id], getattr(masks, "frame", None), obj_id)

    def combined(self, masks: Mapping[int, np.ndarray]) -> np.ndarray:
        """Float32 matte of the union of all exported objects (single-alpha formats).

        With soft edges the union's edge is solved as one (where two objects touch there is no edge).
        """
        merged = union([masks[o] for o in self.obj_ids], self.clip.shape)
        return self.matte(merged, getattr(masks, "frame", None), "all")

    def cutout(self, masks: Mapping[int, np.ndarray], frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB colour and float32 alpha of an RGBA cut-out of the exported objects on one frame.

        With soft edges the colour is the estimated foreground (``sam2_web.matting.estimate_foreground``):
        edge pixels lose the old background's spill, so no halo shows over a new background.
        """
        alpha = self.combined(masks)
        if not self.soft_edges:
            return frame, alpha
        from sam2_web.matting import estimate_foreground

        return estimate_foreground(frame, alpha), alpha

    def stem(self, target: Path) -> str:
        """File stem for the frames of an image sequence written to ``target``."""
        return self.options.name or target.name.split(".")[0] or "frame"

    def frame_number(self, index: int) -> int:
        """Number in file names of the ``index``-th exported frame (counts from start_frame)."""
        return self.clip.start_frame + index
