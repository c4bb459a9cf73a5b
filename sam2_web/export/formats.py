"""Export masks in the formats editors and compositors ingest: one entry point, ``export``,
and the ``FORMATS`` table the CLI, the web app (its menu and API) and the plugins list choices from.

Every output has exactly the source's frame count, rate and size, is written under a hidden
temporary name next to the target and renamed into place only once complete, and every
failure is an ``ExportError`` that says what to do.

Example::

    export("prores", "out/shot", masks, num_frames=info.num_frames, fps=info.fps,
           width=info.width, height=info.height, start_timecode=info.start_timecode,
           obj_ids=[1, 2], frames=reader.get, options=ExportOptions(feather_px=2))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sam2_web.errors import ExportError
from sam2_web.export import images
from sam2_web.export import video
from sam2_web.export.common import (
    ExportClip,
    ExportJob,
    FrameMasks,
    ExportOptions,
    FramesLike,
    MaskSource,
    iter_frames,
    iter_masks,
    object_labels,
)
from sam2_web.export.output import check_output, ffmpeg_exe
from sam2_web.export.preview import EFFECTS, PALETTE, apply_effect, color_of, overlay
from sam2_web.export.matte import grow_shrink

__all__ = ["FORMATS", "ExportFormat", "ExportOptions", "export", "overlay", "apply_effect", "color_of", "PALETTE"]


@dataclass(frozen=True)
class ExportFormat:
    """One entry of ``FORMATS``.

    Attributes:
        name: key passed to ``export``.
        extension: file suffix (".mov"), or "" when the output is a folder of files.
        description: one line for menus.
        lossless: the decoded matte equals the exported one bit for bit.
        needs_frames: uses the source pictures (``frames=`` is required).
        soft_edges: honours ``feather_px`` and ``soft_edges`` (binary formats ignore both and stay binary).
        alpha: how its matte is stored (bit depth), for the formats table.
        per_object: keeps objects apart; otherwise the objects are merged into one matte.
        uses_ffmpeg: encodes through ffmpeg.
        web: the web app and its API offer it (one file a browser or an API client downloads).
        menu: its label in the web app's download menu; "" when the menu does not list it (the
            app offers the preview and the effects through their own buttons).
    """

    name: str
    extension: str
    description: str
    lossless: bool
    needs_frames: bool
    soft_edges: bool
    per_object: bool
    uses_ffmpeg: bool
    writer: Callable[[ExportJob, Path], Path]
    alpha: str = ""
    web: bool = False
    menu: str = ""


def _table(*formats: ExportFormat) -> dict[str, ExportFormat]:
    return {f.name: f for f in formats}


# Flags in field order: lossless, needs_frames, soft_edges, per_object, uses_ffmpeg.
FORMATS: dict[str, ExportFormat] = _table(
    ExportFormat("png", "", "Grey matte PNG sequence, a folder per object (8/16-bit)",
                 True, False, True, True, False, images.write_matte_pngs, alpha="8/16-bit"),
    ExportFormat("png_zip", ".zip", "Grey matte PNG sequence per object, zipped",
                 True, False, True, True, False, images.write_matte_zip, alpha="8/16-bit",
                 web=True, menu="PNG matte sequence (.zip)"),
    ExportFormat("rgba_png", "", "RGBA PNG sequence: source colour, matte as alpha",
                 True, True, True, False, False, images.write_rgba_pngs, alpha="8/16-bit"),
    ExportFormat("prores", ".mov", "ProRes 4444 with alpha (.mov)",
                 False, True, True, False, True, video.write_prores, alpha="12-bit (yuva444p12le)",
                 web=True, menu="RGBA cut-out, ProRes 4444 (.mov)"),
    ExportFormat("webm", ".webm", "WebM VP9 with alpha",
                 False, True, True, False, True, video.write_webm, alpha="8-bit, lossy",
                 web=True, menu="RGBA cut-out, WebM VP9 alpha (.webm)"),
    ExportFormat("ffv1", ".mkv", "FFV1 lossless RGB + alpha (.mkv)",
                 True, True, True, False, True, video.write_ffv1, alpha="8/16-bit"),
    ExportFormat("matte_mp4", ".mp4", "H.264 grey luma matte (.mp4)",
                 False, False, True, False, True, video.write_matte_mp4, alpha="8-bit luma, lossy",
                 web=True, menu="Matte video, H.264 (.mp4)"),
    ExportFormat("index_png", "", "Index matte PNG sequence (value = object number) + legend.json; binary by definition",
                 True, False, False, True, False, images.write_index_pngs, alpha="binary"),
    ExportFormat("exr", "", "OpenEXR sequence, half float, one named channel per object",
                 True, False, True, True, False, images.write_exr, alpha="half float"),
    ExportFormat("coco_rle", ".json", "COCO RLE JSON, one annotation per object per frame; binary by definition",
                 True, False, False, True, False, images.write_coco_rle, alpha="binary",
                 web=True, menu="COCO RLE (.json)"),
    ExportFormat("overlay_mp4", ".mp4", "Preview: coloured masks and outlines over the video",
                 False, True, False, True, True, video.write_overlay_mp4, alpha="binary", web=True),
    *(ExportFormat(f"effect_{kind}", ".mp4", f"Effect: {kind} the background",
                   False, True, True, False, True, partial(video.write_effect_mp4, kind=kind), alpha="blend", web=True)
      for kind in EFFECTS),
)


def _output_path(spec: ExportFormat, out_path: str | Path) -> Path:
    path = Path(out_path)
    # Append rather than replace: "shot.v2" must become "shot.v2.mov", not "shot.mov".
    if spec.extension and path.suffix.lower() != spec.extension:
        path = path.with_name(path.name + spec.extension)
    return path


def _resolve_ids(masks: MaskSource, obj_ids: Sequence[int] | None, options: ExportOptions) -> tuple[MaskSource, list[int]]:
    """All object ids in the order the mask arrays use, peeking at the masks when not given."""
    if obj_ids is not None:
        return masks, [int(o) for o in obj_ids]
    if options.objects is not None:
        return masks, [int(o) for o in options.objects]
    if isinstance(masks, Mapping):
        found = {int(o) for item in masks.values() if isinstance(item, Mapping) for o in item}
        if found or not masks:
            return masks, sorted(found)
    elif not isinstance(masks, np.ndarray):
        it = iter(masks)
        first = next(it, None)
        masks = itertools.chain([first], it) if first is not None else iter(())
        if isinstance(first, Mapping):
            return masks, sorted(int(o) for o in first)
    raise ExportError("pass obj_ids=[...] naming the objects (in the order of the mask arrays)")


def _prepared(stream: Iterator[dict[int, np.ndarray]], ids: Sequence[int], px: int, total: int,
              progress: Callable[[int, int], None] | None,
              frames: Iterator[np.ndarray] | None = None) -> Iterator[FrameMasks]:
    """The selected objects' masks, grown/shrunk (with their source frame when ``frames`` is given);
    reports each frame once the writer is done with it."""
    for done, masks in enumerate(stream):
        out = FrameMasks({o: grow_shrink(masks[o], px) if px else masks[o] for o in ids})
        if frames is not None:
            out.frame = next(frames)
        yield out
        # The writer asks for the next frame only after writing this one.
        if progress is not None:
            progress(done + 1, total)


def export(
    fmt: str,
    out_path: str | Path,
    masks: MaskSource,
    *,
    num_frames: int,
    fps: Any,
    width: int,
    height: int,
    obj_ids: Sequence[int] | None = None,
    start_frame: int = 0,
    start_timecode: str | None = None,
    frames: FramesLike | None = None,
    options: ExportOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the masks of a clip in format ``fmt`` and return the path written.

    Args:
        fmt: a key of ``FORMATS``.
        out_path: target file (the format's extension is appended when missing) or folder.
            An existing output is replaced only once the new one is complete.
        masks: per frame, in frame order, ``{obj_id: (H, W) bool/uint8}`` or an (O, H, W) stack
            ordered like ``obj_ids``; or ``{frame_index: ...}`` for sparse results; or a
            (T, O, H, W) array. Frames or objects without a mask export as empty.
        num_frames, fps, width, height: the source clip; fps may be a float (29.97 is read
            as 30000/1001), a Fraction, "num/den" or (num, den).
        obj_ids: every tracked object, in mask-array order; None reads them from the first
            frame's dict.
        start_frame: number of the first frame in image-sequence file names and COCO ids.
        start_timecode: "HH:MM:SS:FF" of the first frame, written into .mov/.mp4/EXR/JSON.
        frames: source RGB frames (callable ``get_frame(i)`` or iterable), required by formats
            with ``needs_frames``.
        options: an ``ExportOptions`` (objects subset, grow/feather/invert, bit depth, ...).
        progress: called as ``progress(frames_done, num_frames)`` after each frame; raising
            from it (e.g. ``CancelledError``) stops the export and leaves nothing behind.

    Returns:
        The output path (with extension).

    Raises:
        ExportError: unknown format or bad option, frames missing, masks of the wrong size,
            an unwritable output folder (checked before encoding), or an encoder failure
            (with ffmpeg's last error lines). Nothing is left at the target on failure.
    """
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    options = options or ExportOptions()
    options.validate()
    clip = ExportClip.make(num_frames, fps, width, height, start_frame, start_timecode)
    target = _output_path(spec, out_path)
    check_output(target, folder=not spec.extension)  # before peeking at (maybe costly) masks
    masks, all_ids = _resolve_ids(masks, obj_ids, options)
    selected = [int(o) for o in options.objects] if options.objects is not None else list(all_ids)
    unknown = [o for o in selected if o not in all_ids]
    if unknown:
        raise ExportError(f"objects {unknown} are not among the exported masks' objects {all_ids}")
    if not selected:
        raise ExportError("there are no objects to export; add an object or pass obj_ids")
    if spec.needs_frames and frames is None:
        raise ExportError(f"format {fmt!r} draws on the source video: pass frames= (a get_frame(i) callable)")
    soft = bool(options.soft_edges and spec.soft_edges)
    if soft and frames is None:
        raise ExportError("soft edges are solved from the source colours: pass frames= (a get_frame(i) callable)")
    if spec.uses_ffmpeg:
        ffmpeg_exe()  # fail before any work when ffmpeg is missing
    source = iter_frames(frames, clip) if frames is not None and (spec.needs_frames or soft) else None
    for_masks = for_writer = None
    if soft and spec.needs_frames:
        # One decode feeds both: the writer and the masks advance in step, so tee holds a frame or two.
        for_masks, for_writer = itertools.tee(source, 2)
    elif soft:
        for_masks = source
    else:
        for_writer = source
    job = ExportJob(
        clip=clip,
        obj_ids=tuple(selected),
        labels=object_labels(selected, options.names),
        options=options,
        masks=_prepared(iter_masks(masks, all_ids, clip), selected, int(options.grow_px), clip.num_frames, progress,
                        for_masks),
        frames=for_writer,
        soft_edges=soft,
    )
    return spec.writer(job, target)
