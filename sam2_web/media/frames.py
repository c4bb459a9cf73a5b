"""Frame sources: a clip's frames one at a time, decoded on demand with bounded memory.

The engine walks a clip forward, backward (reverse propagation from the last prompted frame),
and jumps when the user clicks a frame. Every source here serves all three patterns while
holding only a handful of frames:

* forward: one ffmpeg process decodes ahead on a background thread (``readahead`` frames);
* backward: blocks of ``reverse_block`` frames are decoded forward once and served in reverse;
* jumps: a new ffmpeg process seeks to the frame (slower, but exact).

Frames are ``(H, W, 3) uint8`` RGB arrays at the clip's own resolution with rotation applied.
They are read-only because a source may hand the same array out twice; copy before editing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from sam2_web.errors import LimitExceededError, VideoReadError
from sam2_web.media.probe import (
    IMAGE_EXTENSIONS,
    SUPPORTED,
    FFmpegTools,
    ProbeLimits,
    VideoInfo,
    check_file,
    find_tools,
    probe_video,
)
from sam2_web.media.source import FrameSource, frozen
from sam2_web.media.video_source import VideoFileSource

__all__ = ["ArraySource", "FrameSource", "ImageFilesSource", "VideoFileSource", "natural_key", "open_frames"]

DEFAULT_FOLDER_FPS = 30.0


class ImageFilesSource(FrameSource):
    """Frames stored as image files (a folder of JPEG/PNG, or an explicit list of paths)."""

    def __init__(self, paths: Sequence[str], info: VideoInfo, cache: int = 4):
        """Wrap ``paths`` (already checked by ``open_frames``) described by ``info``."""
        super().__init__(info, cache)
        self._paths = list(paths)

    @property
    def paths(self) -> list[str]:
        """The image files in frame order."""
        return list(self._paths)

    def _load(self, i: int, backward: bool) -> np.ndarray:
        path = self._paths[i]
        try:
            with Image.open(path) as image:
                frame = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise _bomb(path) from exc
        except (OSError, ValueError) as exc:
            raise VideoReadError(f"frame {i} ({path}) cannot be read: {exc}") from exc
        if frame.shape[:2] != (self.info.height, self.info.width):
            raise VideoReadError(
                f"frame {i} ({path}) is {frame.shape[1]}x{frame.shape[0]} but the clip is "
                f"{self.info.width}x{self.info.height}; all frames must have the same size."
            )
        return frozen(frame)


class ArraySource(FrameSource):
    """Frames already in memory as an ``(N, H, W, 3) uint8`` array (ComfyUI, tests)."""

    def __init__(self, frames: np.ndarray, info: VideoInfo):
        """Wrap ``frames`` without copying; the array is served through read-only views."""
        super().__init__(info, cache=1)
        self._frames = frames

    @property
    def buffered_frames(self) -> int:
        return 0  # the caller owns the array; we hold nothing extra

    def _fetch(self, i: int, backward: bool) -> np.ndarray:
        if self._closed:
            raise VideoReadError("this frame source is closed; open the clip again")
        return frozen(self._frames[i])


def open_frames(
    source, *, fps: float | None = None, readahead: int = 6, cache: int = 4, reverse_block: int = 24,
    tools: FFmpegTools | None = None, limits: ProbeLimits | None = None,
) -> FrameSource:
    """Open a clip for frame-by-frame reading.

    Args:
        source: a video file path (anything ffmpeg decodes), a folder of JPEG/PNG frames (natural
            sort: "frame2" before "frame10"), a single image path, a list of image paths, or an
            ``(N, H, W, 3) uint8`` array.
        fps: frame rate for image folders, lists and arrays (default 30); ignored for video files,
            which carry their own timing.
        readahead: frames decoded ahead of the consumer by the background thread (video files).
        cache: recently returned frames kept for repeated access.
        reverse_block: frames decoded at once when walking a video backward.
        tools: ffmpeg binaries to use; found on PATH (or imageio-ffmpeg's) when None.
        limits: bounds on what may be opened (frame count, frame size, probe time), checked
            before any frame is decoded; defaults apply when None.

    Returns:
        A ``FrameSource``; close it (or use ``with``) to stop its decoder.

    Raises:
        VideoReadError: the source does not exist, cannot be decoded, is not an accepted
            container, or holds no frames; also when ffmpeg is needed and not installed.
        LimitExceededError: over ``limits`` (too many frames, frames too large).
    """
    limits = limits or ProbeLimits()
    if isinstance(source, np.ndarray):
        return _open_array(source, fps)
    if isinstance(source, (list, tuple)):
        return _open_image_list([os.fspath(p) for p in source], fps, None, cache, limits)
    path = os.fspath(source)
    if os.path.isdir(path):
        return _open_image_list(_list_images(path), fps, path, cache, limits)
    check_file(path)
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return _open_image_list([path], fps, path, cache, limits)
    tools = tools or find_tools()
    probed = probe_video(path, tools, limits)
    return VideoFileSource(probed, tools, readahead=readahead, cache=cache, reverse_block=reverse_block)


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: "frame2" < "frame10"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name))


def _list_images(folder: str) -> list[str]:
    names = [
        n for n in os.listdir(folder)
        if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")  # skip macOS "._x.jpg"
        and os.path.isfile(os.path.join(folder, n))
    ]
    if not names:
        found = "it is empty" if not os.listdir(folder) else "it has no .jpg/.jpeg/.png files"
        raise VideoReadError(f"the folder {folder} holds no frames ({found}). Give {SUPPORTED}.")
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def _open_image_list(paths: list[str], fps: float | None, where: str | None, cache: int,
                     limits: ProbeLimits) -> ImageFilesSource:
    if not paths:
        raise VideoReadError(f"the list of frames is empty. Give {SUPPORTED}.")
    if len(paths) > limits.max_frames:
        raise limits.too_many_frames(where or "the list of frames")
    first_of_size: dict[tuple[int, int], str] = {}
    formats = set()
    for path in paths:
        check_file(path)
        try:
            # Only headers are read here; the pixels are decoded when a frame is asked for.
            with Image.open(path, formats=_IMAGE_FORMATS) as image:
                size = image.size
                if _orientation(image) in (5, 6, 7, 8):  # EXIF says the picture is turned 90°
                    size = (size[1], size[0])
                formats.add((image.format or "image").lower())
        except Image.DecompressionBombError as exc:
            raise _bomb(path) from exc
        except (OSError, ValueError) as exc:
            raise VideoReadError(f"{path} is not a readable image ({exc}). Frames must be JPEG or PNG.") from exc
        limits.check_side(path, *size)
        first_of_size.setdefault(size, path)
        if len(first_of_size) > 1:
            (a, pa), (b, pb) = first_of_size.items()
            raise VideoReadError(
                f"frames differ in size: {pa} is {a[0]}x{a[1]}, {pb} is {b[0]}x{b[1]}; "
                "resize them to one size first."
            )
    width, height = next(iter(first_of_size))
    codec = formats.pop() if len(formats) == 1 else "mixed"
    return ImageFilesSource(paths, _still_info(len(paths), width, height, fps, codec, where), cache)


# Frames are JPEG or PNG: PIL is not asked to guess among its other, rarer readers.
_IMAGE_FORMATS = ("JPEG", "PNG", "MPO")


def _bomb(path: str) -> LimitExceededError:
    """The refusal of an image whose header claims more pixels than PIL will decode."""
    return LimitExceededError(
        f"{path} claims more pixels than are safe to decode (over {2 * Image.MAX_IMAGE_PIXELS:,}); "
        "a real photo or frame is far smaller: scale it down or give another image"
    )


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))  # EXIF Orientation tag
    except (OSError, ValueError, TypeError):
        return 1


def _open_array(frames: np.ndarray, fps: float | None) -> ArraySource:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VideoReadError(
            f"an in-memory clip must be an (N, H, W, 3) uint8 array, got {frames.shape} {frames.dtype}"
        )
    if frames.shape[0] == 0:
        raise VideoReadError("the in-memory clip has zero frames")
    n, h, w, _ = frames.shape
    return ArraySource(frames, _still_info(n, w, h, fps, "array", None))


def _still_info(n: int, width: int, height: int, fps: float | None, codec: str, path: str | None) -> VideoInfo:
    rate = float(fps) if fps else DEFAULT_FOLDER_FPS
    if rate <= 0:
        raise VideoReadError(f"fps must be positive, got {fps}")
    return VideoInfo(
        num_frames=n, fps=rate, width=width, height=height, timestamps=tuple(i / rate for i in range(n)),
        start_timecode=None, codec=codec, rotation=0, path=path, is_vfr=False,
    )
