"""One ffmpeg process decoding a clip forward, with a bounded read-ahead thread.

The thread keeps at most ``readahead`` decoded frames queued, so ffmpeg works while the model
works but memory cannot grow: when the queue is full the thread blocks, ffmpeg's pipe fills and
ffmpeg itself stalls.

Each frame comes with its presentation time, read from ffmpeg's ``showinfo`` log on stderr, so
the caller knows *which* frame it got rather than assuming a seek landed where it asked: some
containers (MPEG-TS, AVCHD .mts) seek to the next keyframe instead of the previous one.
"""

from __future__ import annotations

import collections
import queue
import re
import subprocess
import threading
from dataclasses import dataclass

import numpy as np

from sam2_web.errors import VideoReadError
from sam2_web.media.probe import FFmpegTools, input_options, input_url

_SHOWINFO = re.compile(rb"\bn:\s*\d+\s+pts:\s*(\S+)\s+pts_time:(\S+)")
STALL_S = 120.0  # a frame normally takes milliseconds; a 4K intra frame well under a second


@dataclass(frozen=True)
class _EndOfStream:
    """Queued after the last frame; carries ffmpeg's complaint if it stopped on an error."""

    error: str | None


def decode_command(
    tools: FFmpegTools, path: str, stream_index: int, seek_seconds: float | None, width: int, height: int,
    *, demuxer: str | None = None, max_pixels: int | None = None,
) -> list[str]:
    """The ffmpeg command that writes frames as raw RGB24 to stdout and their pts to stderr.

    ``-ss`` before ``-i`` seeks near the target and then, because we decode, drops frames earlier
    than the target. ``-copyts`` keeps the container's timestamps so they match the probe's.
    Passthrough timing emits each coded frame exactly once, so VFR clips are not padded with
    duplicates. Autorotation stays on (ffmpeg's default), and ``-s`` pins the output size so a
    stream that changes resolution mid-way cannot break the byte framing.

    The input is fenced as the probe's was (``sam2_web.media.probe.input_options``): a local file
    only, opened by ``demuxer`` (the one the probe checked) when given; ``max_pixels`` makes the
    decoder refuse a frame larger than that (a stream that grows mid-way) instead of decoding it.
    """
    cmd = [tools.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info", "-copyts",
           *input_options(demuxer)]
    if max_pixels:
        cmd += ["-max_pixels", str(int(max_pixels))]
    if seek_seconds is not None and seek_seconds > 0:
        cmd += ["-ss", f"{seek_seconds:.6f}"]
    cmd += [
        "-i", input_url(path), "-map", f"0:{stream_index}", "-an", "-sn", "-dn", *tools.passthrough,
        "-vf", tools.showinfo, "-sws_flags", "bicubic+accurate_rnd+full_chroma_int",
        "-s", f"{width}x{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    return cmd


class FfmpegReader:
    """Frames of a clip in decode-output order, each with its presentation time.

    Not thread-safe for several consumers; the owning source serialises access.
    """

    def __init__(self, cmd: list[str], width: int, height: int, readahead: int, stall_s: float = STALL_S):
        """Start ffmpeg running ``cmd`` (see ``decode_command``). Raises VideoReadError if it cannot run.

        ``stall_s``: seconds ``read`` waits for the next frame before it kills ffmpeg and fails.
        """
        self._stall_s = float(stall_s)
        self._shape = (height, width, 3)
        self._frame_bytes = height * width * 3
        self._frames: queue.Queue = queue.Queue(maxsize=max(1, readahead))
        self._times: queue.Queue = queue.Queue()  # one (pts, pts_time) per frame, from stderr
        self._log_tail: collections.deque[str] = collections.deque(maxlen=8)
        self._closing = threading.Event()
        self._finished = False
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise VideoReadError(f"could not start ffmpeg ({cmd[0]}): {exc}") from exc
        self._log_thread = threading.Thread(target=self._watch_log, name="sam2_web-ffmpeg-log", daemon=True)
        self._thread = threading.Thread(target=self._pump, name="sam2_web-decode", daemon=True)
        self._log_thread.start()
        self._thread.start()

    @property
    def queued(self) -> int:
        """Decoded frames waiting in the read-ahead queue."""
        return self._frames.qsize()

    def read(self) -> tuple[tuple[int | None, float | None], np.ndarray]:
        """The next decoded frame, blocking, with its pts as ffmpeg logged it: the integer pts
        (in the stream's time base) and ``pts_time`` in seconds (6 significant digits); either is
        None when ffmpeg gave none.

        Raises:
            VideoReadError: the stream ended (cleanly or on an error) before another frame.
        """
        if self._finished:
            raise VideoReadError("the decoder has no more frames")
        try:
            item = self._frames.get(timeout=self._stall_s)
        except queue.Empty:
            # A decoder that produces nothing for this long is stuck on a hostile or broken
            # file: stop it rather than hold a worker forever.
            self._finished = True
            self.close()
            raise VideoReadError(
                f"the decoder produced no frame for {self._stall_s:g} s and was stopped; the clip may be damaged"
            ) from None
        if isinstance(item, _EndOfStream):
            self._finished = True
            raise VideoReadError(item.error or "end of stream")
        return item

    def close(self) -> None:
        """Stop ffmpeg and the threads, and drop queued frames. Safe to call twice."""
        self._closing.set()
        if self._proc.poll() is None:
            self._proc.kill()
        while self._thread.is_alive():
            self._drain()
            self._thread.join(timeout=0.05)
        self._drain()
        self._proc.wait()
        self._log_thread.join()
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()

    def _drain(self) -> None:
        while True:
            try:
                self._frames.get_nowait()
            except queue.Empty:
                return

    def _put(self, item) -> bool:
        # Poll so that close() can always stop a thread blocked on a full queue.
        while not self._closing.is_set():
            try:
                self._frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self) -> None:
        error: str | None = None
        try:
            pipe = self._proc.stdout
            while True:
                buf = bytearray(self._frame_bytes)
                view = memoryview(buf)
                got = 0
                while got < self._frame_bytes:
                    n = pipe.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < self._frame_bytes:
                    error = self._exit_error()
                    break
                # showinfo logs a frame before it is written to stdout, so its pts is already
                # on the way; (None, None) means the log ended without one.
                pts = self._times.get()
                frame = np.frombuffer(buf, dtype=np.uint8).reshape(self._shape)
                if not self._put((pts, frame)):
                    return
        except (OSError, ValueError) as exc:  # pipe closed under us by close()
            error = str(exc)
        self._put(_EndOfStream(error=error))

    def _watch_log(self) -> None:
        try:
            for line in self._proc.stderr:
                match = _SHOWINFO.search(line)
                if match:
                    self._times.put((_number(match.group(1), int), _number(match.group(2), float)))
                elif line.strip() and b"Parsed_showinfo" not in line:
                    self._log_tail.append(line.decode("utf-8", "replace").strip())
        except (OSError, ValueError):
            pass  # stderr closed by close(); nothing left to report
        finally:
            # Unblock a pump waiting for a pts that will never come.
            self._times.put((None, None))

    def _exit_error(self) -> str | None:
        """ffmpeg's complaint if it failed, None if it simply reached the end of the clip."""
        if self._closing.is_set():
            return None
        code = self._proc.wait()
        self._log_thread.join()
        if code == 0:
            return None
        return self._log_tail[-1] if self._log_tail else f"ffmpeg exited with code {code}"


def _number(text: bytes, kind):
    try:
        return kind(text)
    except ValueError:  # "NOPTS"
        return None
