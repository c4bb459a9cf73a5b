"""The frame-source interface every clip reader implements: range checks, a small cache of
recent frames, forward/backward iteration and locking."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
from PIL import Image

from sam2_web.errors import FrameIndexError, VideoReadError
from sam2_web.media.probe import VideoInfo
from sam2_web.media.timecode import frame_out_of_range


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
        return frozen(np.asarray(image))

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

    def release_buffers(self) -> None:
        """Let go of frames decoded for reads that may never come (a decoder running ahead, a
        block kept for walking backward); the few most recent frames stay. The source stays
        open: later reads decode again. Sessions call this when a propagation pass ends, so an
        idle session does not hold a pass's worth of frames."""

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



def frozen(frame: np.ndarray) -> np.ndarray:
    view = frame.view()
    view.flags.writeable = False
    return view
