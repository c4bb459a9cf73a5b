"""Writers of video files through ffmpeg: ProRes 4444 / VP9 / FFV1 with alpha, an H.264 luma
matte, and H.264 previews (coloured overlay, background effects).

Frames are piped raw into ffmpeg at the source's exact rational rate with ``-frames:v`` set
to the source's count, so an output can never gain or lose frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sam2_web.export.common import ExportJob
from sam2_web.export.output import FfmpegPipe, atomic_output
from sam2_web.export.preview import apply_effect, overlay
from sam2_web.export.matte import quantize

# RGB -> YUV with the HD matrix, tagged as such, so players/editors show the colours we meant.
_BT709 = ["-vf", "scale=out_color_matrix=bt709:out_range=tv",
          "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]


def _timecode_args(job: ExportJob) -> list[str]:
    return ["-timecode", job.clip.start_timecode] if job.clip.start_timecode else []


def _rgba_frames(job: ExportJob, bit_depth: int) -> Iterator[np.ndarray]:
    """Source RGB (the estimated foreground with soft edges) plus the combined matte as alpha,
    8-bit or 16-bit (little endian)."""
    assert job.frames is not None
    sixteen = bit_depth == 16
    for masks, frame in zip(job.masks, job.frames):
        colour, matte = job.cutout(masks, frame)
        alpha = quantize(matte, bit_depth)
        rgb = colour.astype(np.uint16) * 257 if sixteen else colour
        yield np.dstack([rgb, alpha]).astype("<u2" if sixteen else np.uint8)


def _encode(job: ExportJob, target: Path, in_pix_fmt: str, out_args: Sequence[str], container: str,
            frames: Iterator[np.ndarray]) -> Path:
    with atomic_output(target) as tmp:
        with FfmpegPipe(job.clip, in_pix_fmt, out_args, tmp, container) as pipe:
            for frame in frames:
                pipe.write(frame)
    return target


def write_prores(job: ExportJob, target: Path) -> Path:
    """ProRes 4444 ``.mov`` (yuva444p10le): source colour plus the matte as alpha."""
    args = ["-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le", "-alpha_bits", "16",
            "-vendor", "apl0", *_BT709, *_timecode_args(job)]
    depth = job.options.bit_depth
    return _encode(job, target, "rgba64le" if depth == 16 else "rgba", args, "mov", _rgba_frames(job, depth))


def write_webm(job: ExportJob, target: Path) -> Path:
    """VP9 ``.webm`` with alpha (yuva420p). Read it back with the libvpx-vp9 *decoder*
    (``ffmpeg -c:v libvpx-vp9 -i ...``): ffmpeg's native vp9 decoder drops the alpha."""
    crf = job.options.crf if job.options.crf is not None else 15
    # auto-alt-ref must be off: libvpx cannot encode alternate reference frames with alpha.
    args = ["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-auto-alt-ref", "0", "-b:v", "0", "-crf", str(crf),
            "-deadline", "good", "-cpu-used", "4", "-row-mt", "1", *_BT709]
    # yuva420p is 8-bit: a 16-bit input would only be rounded again.
    return _encode(job, target, "rgba", args, "webm", _rgba_frames(job, 8))


def write_ffv1(job: ExportJob, target: Path) -> Path:
    """Lossless FFV1 ``.mkv`` in RGB + alpha (bgra, or gbrap16le at 16 bit): decodes bit-exact."""
    sixteen = job.options.bit_depth == 16
    args = ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1",
            "-pix_fmt", "gbrap16le" if sixteen else "bgra"]
    return _encode(job, target, "rgba64le" if sixteen else "rgba", args, "matroska",
                   _rgba_frames(job, job.options.bit_depth))


def _h264_args(job: ExportJob, default_crf: int) -> list[str]:
    crf = job.options.crf if job.options.crf is not None else default_crf
    # 4:2:0 needs even sizes; odd-sized clips get 4:4:4 rather than a resized matte.
    even = job.clip.width % 2 == 0 and job.clip.height % 2 == 0
    return ["-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p" if even else "yuv444p",
            "-movflags", "+faststart", *_timecode_args(job)]


def write_matte_mp4(job: ExportJob, target: Path) -> Path:
    """H.264 ``.mp4`` grey matte (white = object) of the union of the objects, for editors
    that take a luma matte."""
    frames = (quantize(job.combined(masks), 8) for masks in job.masks)
    return _encode(job, target, "gray", _h264_args(job, default_crf=8), "mp4", frames)


def write_overlay_mp4(job: ExportJob, target: Path) -> Path:
    """H.264 ``.mp4`` preview: source frames with each object's translucent fill and outline."""
    assert job.frames is not None
    frames = (overlay(frame, masks, job.obj_ids, alpha=job.options.overlay_alpha)
              for masks, frame in zip(job.masks, job.frames))
    return _encode(job, target, "rgb24", [*_h264_args(job, default_crf=18), *_BT709], "mp4", frames)


def write_effect_mp4(job: ExportJob, target: Path, kind: str) -> Path:
    """H.264 ``.mp4`` with the background changed by ``kind`` (blur, grey, replace, highlight);
    with ``invert`` the objects are changed instead (e.g. blur a face)."""
    assert job.frames is not None
    o = job.options
    frames = (apply_effect(frame, job.combined(masks), kind, blur_px=o.blur_px, background=o.background, dim=o.dim)
              for masks, frame in zip(job.masks, job.frames))
    return _encode(job, target, "rgb24", [*_h264_args(job, default_crf=18), *_BT709], "mp4", frames)
