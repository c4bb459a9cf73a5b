"""Frames of a video file, decoded by ffmpeg on demand: forward with read-ahead, backward in
blocks, random access by seeking, every frame identified by its pts."""

from __future__ import annotations

import bisect

import numpy as np

from sam2_web.errors import VideoReadError
from sam2_web.media.decoder import FfmpegReader, decode_command
from sam2_web.media.probe import FFmpegTools, ProbedVideo
from sam2_web.media.source import FrameSource, frozen


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
        # A stream may grow mid-way (the output size is pinned anyway); let the decoder refuse one
        # that grows past 4x the probed area. Decoders count padded buffers, hence the margin.
        w, h = probed.info.width, probed.info.height
        self._max_pixels = 4 * (w + 256) * (h + 256)
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

    def release_buffers(self) -> None:
        # The decoder (an ffmpeg process blocked on its full pipe) and the backward block (up to
        # max_block_bytes) go; the recent-frames cache stays.
        with self._lock:
            self._stop_reader()
            self._block.clear()

    def close(self) -> None:
        with self._lock:
            self._stop_reader()
            self._block.clear()
            super().close()

    def __del__(self):
        # A source dropped without close() must not leave ffmpeg blocked on a full pipe.
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()

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
            raise VideoReadError(
                f"frame {exc.args[0]} of {self.info.path} cannot be decoded; the clip may be damaged"
            ) from exc
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
            frame = frozen(raw)
            if index == i:
                return frame
            if index > i:
                raise _Overshot(i)
            self._remember(index, frame)  # skipped frames may be asked for next (step > 1 scans)

    def _index_of(self, ticks: int | None, seconds: float | None) -> int:
        """The frame a decoded pts belongs to; without a usable pts, the next in order."""
        time_base = self._probed.time_base
        if ticks is not None and time_base:
            exact = ticks * time_base  # pts_time has only 6 significant digits
            # Trust the ticks only if they agree with pts_time, i.e. the time base is right.
            if seconds is None or abs(exact - seconds) <= 1e-5 * max(1.0, abs(seconds)):
                seconds = exact
        if seconds is None:
            return self._reader_next
        pts = self._probed.pts
        j = bisect.bisect_left(pts, seconds)
        best = min((k for k in (j - 1, j) if 0 <= k < len(pts)), key=lambda k: abs(pts[k] - seconds))
        return best if abs(pts[best] - seconds) <= self._pts_tolerance else self._reader_next

    def _start_reader(self, seek: float | None) -> None:
        probed = self._probed
        cmd = decode_command(self._tools, self.info.path, probed.stream_index, seek, self.info.width, self.info.height,
                             demuxer=probed.demuxer, max_pixels=self._max_pixels)
        self._reader = FfmpegReader(cmd, self.info.width, self.info.height, self._readahead)
        self._reader_next = 0 if seek is None else bisect.bisect_left(probed.pts, seek + probed.container_start)
        self._reader_delivered = False
        self.seeks += 1

    def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
