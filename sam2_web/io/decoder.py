"""One ffmpeg process decoding a run of frames forward, with a bounded read-ahead thread.

The thread keeps at most ``readahead`` decoded frames queued, so ffmpeg works while the model
works but memory cannot grow: when the queue is full the thread blocks, ffmpeg's pipe fills and
ffmpeg itself stalls.
"""

from __future__ import annotations

import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

from sam2_web.errors import VideoReadError
from sam2_web.io.probe import FFmpegTools


@dataclass(frozen=True)
class _EndOfStream:
    """Queued after the last frame; carries ffmpeg's complaint if it stopped early."""

    error: str | None


def decode_command(
    tools: FFmpegTools, path: str, stream_index: int, seek_seconds: float | None, count: int | None,
    width: int, height: int,
) -> list[str]:
    """The ffmpeg command that writes frames as raw RGB24 to stdout.

    ``-ss`` before ``-i`` seeks to the keyframe before the target and then, because we decode,
    drops every frame earlier than the target: the first frame out is the first one at or after
    ``seek_seconds``. Passthrough timing emits each coded frame exactly once, so VFR clips are
    not padded with duplicates. Autorotation stays on (ffmpeg's default), and ``-s`` pins the
    output size so a stream that changes resolution mid-way cannot break the byte framing.
    """
    cmd = [tools.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
    if seek_seconds is not None and seek_seconds > 0:
        cmd += ["-ss", f"{seek_seconds:.6f}"]
    cmd += ["-i", path, "-map", f"0:{stream_index}", "-an", "-sn", "-dn", *tools.passthrough]
    if count is not None:
        cmd += ["-frames:v", str(count)]
    cmd += [
        "-sws_flags", "bicubic+accurate_rnd+full_chroma_int",
        "-s", f"{width}x{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    return cmd


class FfmpegReader:
    """Frames ``start, start+1, ...`` of a clip, decoded by ffmpeg ahead of the consumer.

    Not thread-safe for several consumers; the owning source serialises access.
    """

    def __init__(self, cmd: list[str], start: int, stop: int, width: int, height: int, readahead: int):
        """Start ffmpeg; ``cmd`` must emit frame ``start`` first. Raises VideoReadError if it cannot run."""
        self.next_index = start
        self.stop = stop
        self._shape = (height, width, 3)
        self._frame_bytes = height * width * 3
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, readahead))
        self._closing = threading.Event()
        self._finished = False
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on it
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log
            )
        except OSError as exc:
            self._log.close()
            raise VideoReadError(f"could not start ffmpeg ({cmd[0]}): {exc}") from exc
        self._thread = threading.Thread(target=self._pump, name="sam2_web-decode", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Decoded frames waiting in the read-ahead queue."""
        return self._queue.qsize()

    def read(self) -> np.ndarray:
        """The next frame (index ``next_index``), blocking until ffmpeg delivers it.

        Raises:
            VideoReadError: ffmpeg ended before this frame (corrupt or truncated clip).
        """
        if self._finished:
            raise VideoReadError(f"the decoder has no frame {self.next_index}")
        item = self._queue.get()
        if isinstance(item, _EndOfStream):
            self._finished = True
            detail = f": {item.error}" if item.error else ""
            raise VideoReadError(
                f"decoding stopped before frame {self.next_index}{detail}. "
                "The clip may be truncated or damaged; re-export it and try again."
            )
        self.next_index += 1
        return item

    def close(self) -> None:
        """Stop ffmpeg and the thread, and drop queued frames. Safe to call twice."""
        self._closing.set()
        if self._proc.poll() is None:
            self._proc.kill()
        while self._thread.is_alive():
            self._drain()
            self._thread.join(timeout=0.05)
        self._drain()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _put(self, item) -> bool:
        # Poll so that close() can always stop a thread blocked on a full queue.
        while not self._closing.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self) -> None:
        error: str | None = None
        try:
            pipe = self._proc.stdout
            for _ in range(self.next_index, self.stop):
                buf = bytearray(self._frame_bytes)
                view = memoryview(buf)
                got = 0
                while got < self._frame_bytes:
                    n = pipe.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < self._frame_bytes:
                    error = self._ffmpeg_error()
                    break
                frame = np.frombuffer(buf, dtype=np.uint8).reshape(self._shape)
                if not self._put(frame):
                    return
        except (OSError, ValueError) as exc:  # pipe closed under us by close()
            error = str(exc)
        self._put(_EndOfStream(error=error))

    def _ffmpeg_error(self) -> str | None:
        if self._closing.is_set():
            return None
        self._proc.wait()
        self._log.seek(0)
        lines = [ln.strip() for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1] if lines else f"ffmpeg exited with code {self._proc.returncode}"
