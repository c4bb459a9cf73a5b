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

import bisect
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from sam2_web.errors import FrameIndexError, VideoReadError
from sam2_web.io.decoder import FfmpegReader, decode_command
from sam2_web.io.probe import (
    IMAGE_EXTENSIONS, SUPPORTED, FFmpegTools, ProbedVideo, VideoInfo, check_file, find_tools, probe_video,
)
from sam2_web.io.timecode import frame_out_of_range

DEFAULT_FOLDER_FPS = 30.0


class FrameSource:
    """Random and sequential access to a clip's frames; use as a context manager or ``close()``.

    Subclasses implement ``_load(i)``; this class does range checks, the small recent-frames
    cache, iteration and locking (one consumer at a time, callers may be on several threads).
    """

    def __init__(self, info: VideoInfo, cache: int):
        self.info = info
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, cache)
        self._lock = threading.RLock()
        self._closed = False

    def __len__(self) -> int:
        return self.info.num_frames

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def buffered_frames(self) -> int:
        """Decoded frames this source holds right now (caches plus read-ahead queues)."""
        return len(self._cache)

    def get(self, i: int) -> np.ndarray:
        """Frame ``i`` as a read-only ``(H, W, 3) uint8`` RGB array (negative ``i`` counts from the end).

        Raises:
            FrameIndexError: ``i`` is outside the clip.
            VideoReadError: the frame cannot be decoded, or the source is closed.
        """
        return self._fetch(self._check_index(i), backward=False)

    def get_resized(self, i: int, size: int | tuple[int, int]) -> np.ndarray:
        """Frame ``i`` scaled with PIL bicubic to ``size`` (an int for a square, or ``(width, height)``).

        Raises the same errors as ``get``.
        """
        width, height = (size, size) if isinstance(size, int) else size
        image = Image.fromarray(self.get(i)).resize((int(width), int(height)), Image.BICUBIC)
        return _frozen(np.asarray(image))

    def iter_range(self, start: int, stop: int, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for ``index in range(start, stop, step)``.

        Forward (step > 0) and backward (step < 0) scans both decode each frame about once;
        ``iter_range(n - 1, -1, -1)`` walks the whole clip from its last frame to its first.

        Raises:
            FrameIndexError: ``start`` is outside the clip, or ``step`` is 0.
        """
        if step == 0:
            raise FrameIndexError("iter_range step must not be 0 (use 1 for forward, -1 for backward)")
        indices = range(start, stop, step)
        if len(indices) == 0:
            return
        for end in (indices[0], indices[-1]):
            if not 0 <= end < self.info.num_frames:
                raise FrameIndexError(frame_out_of_range(end, self.info.num_frames))
        for i in indices:
            yield i, self._fetch(i, backward=step < 0)

    def close(self) -> None:
        """Release decoders and cached frames. Further reads raise ``VideoReadError``."""
        with self._lock:
            self._closed = True
            self._cache.clear()

    def _check_index(self, i: int) -> int:
        n = self.info.num_frames
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise FrameIndexError(f"frame index must be an integer, got {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise FrameIndexError(frame_out_of_range(int(i), n))
        return j

    def _fetch(self, i: int, backward: bool) -> np.ndarray:
        with self._lock:
            if self._closed:
                raise VideoReadError("this frame source is closed; open the clip again")
            frame = self._cache.get(i)
            if frame is not None:
                self._cache.move_to_end(i)
                return frame
            frame = self._load(i, backward)
            self._remember(i, frame)
            return frame

    def _remember(self, i: int, frame: np.ndarray) -> None:
        self._cache[i] = frame
        self._cache.move_to_end(i)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _load(self, i: int, backward: bool) -> np.ndarray:
        raise NotImplementedError


class _Overshot(Exception):
    """The decoder's first frame came after the one wanted: the seek landed too late."""


class VideoFileSource(FrameSource):
    """Frames of a video file, decoded by an ffmpeg subprocess.

    Every decoded frame is identified by its pts, looked up in the probe's frame list, so a seek
    that lands on the wrong frame is detected and retried from further back, never trusted.
    """

    def __init__(
        self, probed: ProbedVideo, tools: FFmpegTools, *, readahead: int = 6, cache: int = 4,
        reverse_block: int = 24, max_block_bytes: int = 192 * 2**20,
    ):
        """Wrap a probed file. ``reverse_block`` is capped so a block never exceeds ``max_block_bytes``."""
        super().__init__(probed.info, cache)
        self._probed = probed
        self._tools = tools
        self._readahead = max(1, readahead)
        frame_bytes = probed.info.width * probed.info.height * 3
        self._block_size = int(max(2, min(reverse_block, max_block_bytes // max(1, frame_bytes))))
        # Farther than this ahead of the running decoder, seeking beats decoding through.
        self._skip_limit = max(2 * self._readahead, self._block_size)
        gaps = [b - a for a, b in zip(probed.pts, probed.pts[1:])]
        # A decoded pts must be this close to a probed one to name it (half the tightest gap).
        self._pts_tolerance = 0.5 * min(gaps) if gaps else 1.0
        self._reader: FfmpegReader | None = None
        self._reader_next = 0  # index of the frame the reader should deliver next
        self._reader_delivered = False  # has the reader produced any frame yet
        self._block: dict[int, np.ndarray] = {}
        self._last: int | None = None
        self.seeks = 0  # decoder restarts, for tests and benchmarks

    @property
    def buffered_frames(self) -> int:
        queued = self._reader.queued if self._reader is not None else 0
        return len(self._cache) + len(self._block) + queued

    @property
    def block_size(self) -> int:
        """Frames decoded per block when walking backward."""
        return self._block_size

    def close(self) -> None:
        with self._lock:
            self._stop_reader()
            self._block.clear()
            super().close()

    def _load(self, i: int, backward: bool) -> np.ndarray:
        last, self._last = self._last, i
        frame = self._block.get(i)
        if frame is not None:
            return frame
        if self._reader is not None and self._reader_next <= i < self._reader_next + self._skip_limit:
            try:
                return self._read_through(i)
            except _Overshot:
                pass  # frames went missing on the way; seek afresh below
        # A get() one frame behind the previous one is a backward walk even without the hint.
        if backward or (last is not None and 0 < last - i <= 2):
            return self._load_block_ending_at(i)
        self._block.clear()
        return self._seek_to(i)

    def _load_block_ending_at(self, i: int) -> np.ndarray:
        self._block.clear()
        first = max(0, i - self._block_size + 1)
        try:
            self._block[first] = self._seek_to(first)
            for index in range(first + 1, i + 1):
                self._block[index] = self._read_through(index)
        except _Overshot as exc:  # a frame in the middle of the block cannot be decoded
            raise VideoReadError(f"frame {exc.args[0]} of {self.info.path} cannot be decoded; the clip may be damaged") from exc
        finally:
            self._stop_reader()  # the next block starts elsewhere; do not keep decoding ahead
        return self._block[i]

    def _seek_to(self, i: int) -> np.ndarray:
        """Start a decoder that reaches frame ``i`` and return that frame."""
        for seek in self._seek_plan(i):
            self._stop_reader()
            self._start_reader(seek)
            try:
                return self._read_through(i)
            except _Overshot:
                continue
        raise VideoReadError(
            f"frame {i} of {self.info.path} cannot be decoded (the decoder skips it); the clip may be damaged"
        )

    def _seek_plan(self, i: int) -> list[float | None]:
        """Seek times to try in turn (None = from the start), each further back than the last."""
        pts, start = self._probed.pts, self._probed.container_start
        if i == 0:
            return [None]
        # Aim between frame i-1 and frame i: ffmpeg drops frames before the target, and half a
        # frame of margin makes float rounding of pts harmless.
        plan = [0.5 * (pts[i - 1] + pts[i]) - start]
        # Some demuxers (MPEG-TS) land on the next keyframe: aim just before the keyframe two
        # keyframes back, then give up on seeking altogether.
        keys = [k for k in self._probed.keyframes if k <= pts[i]]
        back = keys[-2] if len(keys) >= 2 else (pts[i] - 10.0 if not self._probed.keyframes else None)
        if back is not None and back > pts[0]:
            plan.append(back - self._pts_tolerance - start)
        plan.append(None)
        return plan

    def _read_through(self, i: int) -> np.ndarray:
        """Read the running decoder up to frame ``i``; raises _Overshot if it is already past it."""
        while True:
            try:
                (ticks, seconds), raw = self._reader.read()
            except VideoReadError as exc:
                delivered = self._reader_delivered
                self._stop_reader()  # the next request starts a fresh decoder
                if not delivered:
                    raise _Overshot(i) from exc  # a seek past the last keyframe yields nothing
                raise VideoReadError(
                    f"decoding {self.info.path} stopped before frame {i} ({exc}). "
                    "The clip may be truncated or damaged; re-export it and try again."
                ) from exc
            index = self._index_of(ticks, seconds)
            self._reader_next = index + 1
            self._reader_delivered = True
            frame = _frozen(raw)
            if index == i:
                return frame
            if index > i:
                raise _Overshot(i)
            self._remember(index, frame)  # skipped frames may be asked for next (step > 1 scans)

    def _index_of(self, ticks: int | None, seconds: float | None) -> int:
        """The frame a decoded pts belongs to; without a usable pts, the next in order."""
        time_base = self._probed.time_base
        if ticks is not None and time_base and (seconds is None or abs(ticks * time_base - seconds) <= 1e-5 * max(1.0, abs(seconds))):
            seconds = ticks * time_base  # exact, where pts_time has only 6 significant digits
        if seconds is None:
            return self._reader_next
        pts = self._probed.pts
        j = bisect.bisect_left(pts, seconds)
        best = min((k for k in (j - 1, j) if 0 <= k < len(pts)), key=lambda k: abs(pts[k] - seconds))
        return best if abs(pts[best] - seconds) <= self._pts_tolerance else self._reader_next

    def _start_reader(self, seek: float | None) -> None:
        probed = self._probed
        cmd = decode_command(self._tools, self.info.path, probed.stream_index, seek, self.info.width, self.info.height)
        self._reader = FfmpegReader(cmd, self.info.width, self.info.height, self._readahead)
        self._reader_next = 0 if seek is None else bisect.bisect_left(probed.pts, seek + probed.container_start)
        self._reader_delivered = False
        self.seeks += 1

    def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


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
        except (OSError, ValueError) as exc:
            raise VideoReadError(f"frame {i} ({path}) cannot be read: {exc}") from exc
        if frame.shape[:2] != (self.info.height, self.info.width):
            raise VideoReadError(
                f"frame {i} ({path}) is {frame.shape[1]}x{frame.shape[0]} but the clip is "
                f"{self.info.width}x{self.info.height}; all frames must have the same size."
            )
        return _frozen(frame)


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
        return _frozen(self._frames[i])


def open_frames(
    source, *, fps: float | None = None, readahead: int = 6, cache: int = 4, reverse_block: int = 24,
    tools: FFmpegTools | None = None,
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

    Returns:
        A ``FrameSource``; close it (or use ``with``) to stop its decoder.

    Raises:
        VideoReadError: the source does not exist, cannot be decoded, or holds no frames;
            also when ffmpeg is needed and not installed.
    """
    if isinstance(source, np.ndarray):
        return _open_array(source, fps)
    if isinstance(source, (list, tuple)):
        return _open_image_list([os.fspath(p) for p in source], fps, None, cache)
    path = os.fspath(source)
    if os.path.isdir(path):
        return _open_image_list(_list_images(path), fps, path, cache)
    check_file(path)
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return _open_image_list([path], fps, path, cache)
    tools = tools or find_tools()
    probed = probe_video(path, tools)
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


def _open_image_list(paths: list[str], fps: float | None, where: str | None, cache: int) -> ImageFilesSource:
    if not paths:
        raise VideoReadError(f"the list of frames is empty. Give {SUPPORTED}.")
    first_of_size: dict[tuple[int, int], str] = {}
    formats = set()
    for path in paths:
        check_file(path)
        try:
            # Only headers are read here; the pixels are decoded when a frame is asked for.
            with Image.open(path) as image:
                size = image.size
                if _orientation(image) in (5, 6, 7, 8):  # EXIF says the picture is turned 90°
                    size = (size[1], size[0])
                formats.add((image.format or "image").lower())
        except (OSError, ValueError) as exc:
            raise VideoReadError(f"{path} is not a readable image ({exc}). Frames must be JPEG or PNG.") from exc
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


def _frozen(frame: np.ndarray) -> np.ndarray:
    view = frame.view()
    view.flags.writeable = False
    return view
