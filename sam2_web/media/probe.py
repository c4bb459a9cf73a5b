"""What a clip is made of: frame count, per-frame timestamps, size, rotation, codec.

Probing reads the container index only (``ffprobe -show_entries packet=pts_time``): that gives
the exact frame count and the real (possibly variable) frame timestamps without decoding a
single frame, so opening a two-hour clip costs about as much as reading its index. When
``ffprobe`` is missing (only a bundled ``ffmpeg`` is available), we decode once with the
``showinfo`` filter instead, which is slower but needs nothing else.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction

from sam2_web.errors import VideoReadError
from sam2_web.media.timecode import format_timecode

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mxf", ".mpg", ".ts")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SUPPORTED = (
    "a video file (mp4, mov, mkv, webm, avi, gif, ... anything ffmpeg decodes), "
    "a folder of JPEG/PNG frames, or a list of image paths"
)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a clip that the engine and the UI need, all known before any frame is decoded.

    Attributes:
        num_frames: number of frames the source yields.
        fps: average frame rate (frames per second).
        width, height: frame size in pixels as delivered, i.e. after rotation is applied.
        timestamps: presentation time of each frame in seconds, the first frame at 0.0.
        start_timecode: the container's start timecode ("HH:MM:SS:FF", ";" if drop-frame), if any.
        codec: codec name as ffmpeg spells it ("h264", "prores", ...) or "jpeg"/"png"/"array".
        rotation: counter-clockwise degrees (0/90/180/270) applied to the stored picture for
            display; delivered frames equal ``np.rot90(stored, rotation // 90)``.
        path: the file or folder the frames come from (None for in-memory frames).
        is_vfr: True when frame durations vary (variable frame rate).
        start_time: presentation time of the first frame in the container, in seconds.
    """

    num_frames: int
    fps: float
    width: int
    height: int
    timestamps: tuple[float, ...]
    start_timecode: str | None
    codec: str
    rotation: int
    path: str | None
    is_vfr: bool
    start_time: float = 0.0

    def timecode(self, frame_idx: int) -> str:
        """Format frame ``frame_idx`` as "HH:MM:SS:FF" for display.

        With a start timecode the frame is counted from it at the nominal rate (as editors do,
        drop-frame when the start timecode uses ";"); otherwise the frame's own timestamp is used,
        which stays truthful for variable-frame-rate clips. Raises ``FrameIndexError`` for an index
        outside the clip.
        """
        return format_timecode(self, frame_idx)


@dataclass(frozen=True)
class FFmpegTools:
    """Paths of the ffmpeg binaries to run; ``ffprobe`` is None when only ffmpeg is available."""

    ffmpeg: str
    ffprobe: str | None
    version: tuple[int, int] = (99, 0)  # ffmpeg's (major, minor); git builds count as newest

    @property
    def passthrough(self) -> tuple[str, ...]:
        """Options that emit every coded frame exactly once (no duplicates or drops for VFR)."""
        # -fps_mode exists from ffmpeg 5.1 on; -vsync before it (and it is gone in 7).
        return ("-fps_mode", "passthrough") if self.version >= (5, 1) else ("-vsync", "passthrough")

    @property
    def showinfo(self) -> str:
        """The per-frame logging filter; its plane checksums are skipped where ffmpeg allows."""
        return "showinfo=checksum=0" if self.version >= (5, 0) else "showinfo"


_INSTALL_HINT = (
    "ffmpeg is needed to read video files but was not found. Install it "
    "(Debian/Ubuntu: `sudo apt install ffmpeg`, macOS: `brew install ffmpeg`, "
    "Windows: `winget install ffmpeg`) or `pip install imageio-ffmpeg`, which bundles a binary. "
    "Folders of JPEG/PNG frames work without ffmpeg."
)


def find_tools(search_path: str | None = None, allow_bundled: bool = True) -> FFmpegTools:
    """Locate ffmpeg (and ffprobe if present).

    Args:
        search_path: the PATH string to search; None means the process PATH.
        allow_bundled: fall back to the binary shipped with the ``imageio-ffmpeg`` package.

    Returns:
        The tools found. ffprobe is looked up on the path and next to ffmpeg.

    Raises:
        VideoReadError: ffmpeg is nowhere to be found; the message says how to install it.
    """
    ffmpeg = shutil.which("ffmpeg", path=search_path)
    if ffmpeg is None and allow_bundled:
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            ffmpeg = None
    if ffmpeg is None:
        raise VideoReadError(_INSTALL_HINT)
    ffprobe = shutil.which("ffprobe", path=search_path)
    if ffprobe is None:
        sibling = os.path.join(os.path.dirname(ffmpeg), "ffprobe" + (".exe" if os.name == "nt" else ""))
        ffprobe = sibling if os.path.isfile(sibling) and os.access(sibling, os.X_OK) else None
    return FFmpegTools(ffmpeg=ffmpeg, ffprobe=ffprobe, version=ffmpeg_version(ffmpeg))


@functools.lru_cache(maxsize=8)  # asked on every open; a binary's version does not change
def ffmpeg_version(ffmpeg: str) -> tuple[int, int]:
    """(major, minor) of an ffmpeg binary; (99, 0) for git builds, which print no release number.

    Raises:
        VideoReadError: the binary cannot be run.
    """
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, check=False).stdout
    except OSError as exc:
        raise VideoReadError(f"could not run {ffmpeg}: {exc}. {_INSTALL_HINT}") from exc
    match = re.search(rb"version n?(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (99, 0)


@dataclass(frozen=True)
class ProbedVideo:
    """A probe's result: the public info plus what the decoder needs to seek."""

    info: VideoInfo
    stream_index: int  # absolute index of the chosen video stream in the container
    pts: tuple[float, ...]  # absolute presentation time of each frame, sorted
    container_start: float  # the container's start time; ffmpeg's -ss is relative to it
    time_base: float | None = None  # seconds per pts tick of the stream, if known
    keyframes: tuple[float, ...] = ()  # absolute pts of keyframes, sorted (may be empty)


def probe_video(path: str, tools: FFmpegTools) -> ProbedVideo:
    """Read a video file's stream facts and per-frame timestamps without decoding it.

    Raises:
        VideoReadError: the file is missing, empty, unreadable, has no video stream or no frames.
    """
    check_file(path)
    if tools.ffprobe is None:
        return _probe_by_decoding(path, tools)
    meta = _run_ffprobe_json(tools.ffprobe, path)
    stream = _pick_video_stream(meta.get("streams", []), path)
    pts, keyframes, packets_read = _packet_times(tools.ffprobe, path, stream["index"])
    fmt = meta.get("format", {})
    indexed = int(_float(stream.get("nb_frames"), default=0))
    # An MP4/MOV index (which is exact) listing more samples than the file holds means the file
    # was cut short; other containers' frame counts are estimates, so only MP4/MOV is checked.
    if "mp4" in fmt.get("format_name", "") and indexed > packets_read:
        raise VideoReadError(
            f"{path} is truncated: its index lists {indexed} frames but only {packets_read} are in "
            "the file. The upload or export did not finish; re-export or upload it again."
        )
    if pts is None:
        # Some containers (raw elementary streams, some AVIs) carry no pts: ask the decoder.
        pts = _frame_times(tools.ffprobe, path, stream["index"])
    if not pts:
        raise VideoReadError(f"{path} has a video stream but no frames in it; re-export the clip.")
    tags = {**_lower_keys(fmt.get("tags", {})), **_lower_keys(stream.get("tags", {}))}
    timecode = tags.get("timecode") or _any_stream_timecode(meta.get("streams", []))
    rotation = _rotation(stream)
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width <= 0 or height <= 0:
        raise VideoReadError(f"{path}: the video stream has no frame size; the file may be corrupt.")
    time_base = _fraction(stream.get("time_base"))
    container_start = _float(fmt.get("start_time"), default=pts[0])
    return _assemble(
        path, stream["index"], pts, container_start, width, height, rotation,
        codec=stream.get("codec_name", "unknown"), avg_rate=_fraction(stream.get("avg_frame_rate")),
        timecode=timecode, time_base=float(time_base) if time_base else None, keyframes=keyframes,
    )


def check_file(path: str) -> None:
    """Raise ``VideoReadError`` unless ``path`` is an existing, non-empty file."""
    if not os.path.exists(path):
        raise VideoReadError(f"{path} does not exist. Give {SUPPORTED}.")
    if not os.path.isfile(path):
        raise VideoReadError(f"{path} is not a file. Give {SUPPORTED}.")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path} is empty (0 bytes); the upload or export did not finish.")


def _assemble(
    path: str, stream_index: int, pts: list[float], container_start: float, width: int, height: int,
    rotation: int, *, codec: str, avg_rate: Fraction | None, timecode: str | None,
    time_base: float | None, keyframes: list[float],
) -> ProbedVideo:
    pts = sorted(pts)
    first = pts[0]
    relative = tuple(t - first for t in pts)
    is_vfr = _is_variable(relative, time_base or 1e-3)
    measured = (len(pts) - 1) / (pts[-1] - first) if len(pts) > 1 and pts[-1] > first else None
    # The container's average rate is exact for constant rates (30000/1001), but for VFR some
    # containers report a guessed nominal rate instead: measure it from the frames then.
    if avg_rate and avg_rate > 0 and not (is_vfr and measured):
        fps = float(avg_rate)
    else:
        fps = measured or 30.0
    if rotation in (90, 270):
        width, height = height, width
    info = VideoInfo(
        num_frames=len(pts), fps=fps, width=width, height=height, timestamps=relative,
        start_timecode=timecode, codec=codec, rotation=rotation, path=path,
        is_vfr=is_vfr, start_time=first,
    )
    return ProbedVideo(
        info=info, stream_index=stream_index, pts=tuple(pts), container_start=container_start,
        time_base=time_base, keyframes=tuple(sorted(keyframes)),
    )


def _is_variable(times: tuple[float, ...], tick: float) -> bool:
    """True when frame durations differ by more than timestamp rounding can explain."""
    if len(times) < 3:
        return False
    durations = sorted(b - a for a, b in zip(times, times[1:]))
    median = durations[len(durations) // 2]
    # Millisecond time bases (webm, mkv) round 1/30 s to 33 or 34 ms: that is not VFR.
    slack = 1.5 * tick + 1e-6
    return durations[0] < median - slack or durations[-1] > median + slack


def _run(cmd: list[str], path: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:  # binary vanished or is not executable
        raise VideoReadError(f"could not run {cmd[0]} to read {path}: {exc}. {_INSTALL_HINT}") from exc


def _run_ffprobe_json(ffprobe: str, path: str) -> dict:
    proc = _run([ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path], path)
    if proc.returncode != 0:
        raise VideoReadError(
            f"{path} cannot be read as a video: {_last_line(proc.stderr)}. "
            f"The file may be corrupt or truncated; supported inputs are {SUPPORTED}."
        )
    try:
        return json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as exc:
        raise VideoReadError(f"{path}: ffprobe gave unreadable output ({exc}).") from exc


def _pick_video_stream(streams: list[dict], path: str) -> dict:
    for stream in streams:
        # Cover art in audio files shows up as a one-picture "video" stream: not a clip.
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get("attached_pic"):
            return stream
    kinds = ", ".join(sorted({s.get("codec_type", "?") for s in streams})) or "nothing"
    raise VideoReadError(
        f"{path} has no video stream (it contains: {kinds}). Give {SUPPORTED}."
    )


def _packet_times(ffprobe: str, path: str, index: int) -> tuple[list[float] | None, list[float], int]:
    """Sorted pts of the packets that are shown (None when the container gives no usable pts),
    the keyframes' pts, and the number of packets read including discarded ones."""
    proc = _run(
        [ffprobe, "-v", "error", "-select_streams", str(index),
         "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0", path],
        path,
    )
    if proc.returncode != 0:
        raise VideoReadError(f"{path}: reading the frame index failed: {_last_line(proc.stderr)}.")
    times: list[float | None] = []
    keyframes: list[float] = []
    packets = 0
    for line in proc.stdout.decode("ascii", "replace").splitlines():
        pts_text, _, flags = line.strip().partition(",")
        if not pts_text and not flags:
            continue
        packets += 1
        if "D" not in flags:  # packets an edit list discards are never shown
            times.append(_float(pts_text, default=None))
            if "K" in flags and times[-1] is not None:
                keyframes.append(times[-1])
    if any(t is None for t in times) or len(set(times)) != len(times):
        return None, [], packets  # missing or duplicate pts: the container's timing cannot be trusted
    return sorted(times), keyframes, packets


def _frame_times(ffprobe: str, path: str, index: int) -> list[float]:
    proc = _run(
        [ffprobe, "-v", "error", "-select_streams", str(index),
         "-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0", path],
        path,
    )
    if proc.returncode != 0:
        raise VideoReadError(f"{path}: decoding to count frames failed: {_last_line(proc.stderr)}.")
    lines = [ln.strip().rstrip(",") for ln in proc.stdout.decode("ascii", "replace").splitlines() if ln.strip()]
    times = [_float(ln, default=None) for ln in lines]
    if any(t is None for t in times):
        # No usable timestamps at all: number the frames at 25 fps, the ffmpeg default.
        return [i / 25.0 for i in range(len(times))]
    return times


_SHOWINFO = re.compile(r"\bn:\s*\d+\s+pts:\s*(-?\d+)\s+pts_time:(\S+).*?\bs:(\d+)x(\d+).*?iskey:(\d)")
_TBN = re.compile(r"(\d+(?:\.\d+)?)(k?) tbn")
_STREAM = re.compile(r"Stream #0:(\d+)[^:]*: Video: (\w+)")
_START = re.compile(r"Duration: [^,]+, start: (-?[\d.]+)")
_ROTATION = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.I)
_RATE = re.compile(r"(\d+(?:\.\d+)?) fps")
_TIMECODE = re.compile(r"timecode\s*:\s*(\d\d:\d\d:\d\d[:;]\d\d)")


def _probe_by_decoding(path: str, tools: FFmpegTools) -> ProbedVideo:
    """Probe without ffprobe: decode once through ``showinfo`` and read ffmpeg's log."""
    proc = _run(
        [tools.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-copyts", "-i", path,
         "-map", "0:v:0", "-an", "-sn", "-dn",
         *tools.passthrough, "-vf", tools.showinfo, "-f", "null", "-"],
        path,
    )
    log = proc.stderr.decode("utf-8", "replace")
    stream = _STREAM.search(log)
    if stream is None:
        if proc.returncode != 0 and "Stream #" not in log:
            raise VideoReadError(f"{path} cannot be read as a video: {_last_line(proc.stderr)}.")
        raise VideoReadError(f"{path} has no video stream. Give {SUPPORTED}.")
    frames = _SHOWINFO.findall(log)
    if not frames:
        raise VideoReadError(f"{path} has a video stream but no frames in it; re-export the clip.")
    start_match = _START.search(log)
    container_start = float(start_match.group(1)) if start_match else 0.0
    tbn = _TBN.search(log[stream.start():])
    time_base = 1.0 / (float(tbn.group(1)) * (1000 if tbn.group(2) else 1)) if tbn else None
    # -copyts keeps the container's times; ticks x time base beat pts_time's 6 digits.
    pts = [int(ticks) * time_base if time_base else float(t) for ticks, t, _, _, _ in frames]
    keyframes = [t for t, frame in zip(pts, frames) if frame[4] == "1"]
    rot_match = _ROTATION.search(log)
    rotation = int(round(float(rot_match.group(1)))) % 360 if rot_match else 0
    width, height = int(frames[0][2]), int(frames[0][3])
    if rotation in (90, 270):  # showinfo saw the frames already rotated; _assemble swaps again
        width, height = height, width
    rate = _RATE.search(log[stream.start():])
    tc = _TIMECODE.search(log)
    return _assemble(
        path, int(stream.group(1)), pts, container_start, width, height, rotation,
        codec=stream.group(2), avg_rate=Fraction(rate.group(1)).limit_denominator(1001) if rate else None,
        timecode=tc.group(1) if tc else None, time_base=time_base, keyframes=keyframes,
    )


def _rotation(stream: dict) -> int:
    """Counter-clockwise display rotation, preferring the display matrix the decoder applies."""
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    tag = _lower_keys(stream.get("tags", {})).get("rotate")
    if tag is not None:
        # The legacy tag counts clockwise.
        return int(round(-float(tag))) % 360
    return 0


def _any_stream_timecode(streams: list[dict]) -> str | None:
    for stream in streams:
        tc = _lower_keys(stream.get("tags", {})).get("timecode")
        if tc:
            return tc
    return None


def _lower_keys(tags: dict) -> dict:
    return {str(k).lower(): v for k, v in (tags or {}).items()}


def _fraction(text: str | None) -> Fraction | None:
    if not text:
        return None
    try:
        num, _, den = str(text).partition("/")
        value = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(text, default):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no details from ffmpeg"
