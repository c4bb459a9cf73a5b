"""What a clip is made of: frame count, per-frame timestamps, size, rotation, codec.

Probing reads the container index only (``ffprobe -show_entries packet=pts_time``): that gives
the exact frame count and the real (possibly variable) frame timestamps without decoding a
single frame, so opening a two-hour clip costs about as much as reading its index. When
``ffprobe`` is missing (only a bundled ``ffmpeg`` is available), we decode once with the
``showinfo`` filter instead, which is slower but needs nothing else.

Every ffmpeg/ffprobe run on a user's file is fenced, because the file may come from anyone
(a public Space): the input is given as ``file:/absolute/path`` (never read as an option or a
URL such as ``concat:a|b``), only the ``file`` protocol is allowed, only the demuxers in
:data:`DEMUXERS` may open it (playlists, concat lists and image sequences, which make ffmpeg
open *other* files, are refused), each run has a wall-clock deadline after which the process is
killed, and the index is read up to ``max_frames`` packets only (:class:`ProbeLimits`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction

from sam2_web.errors import LimitExceededError, VideoReadError
from sam2_web.media.timecode import format_timecode

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mxf", ".mpg", ".ts", ".mts",
                    ".m2ts", ".flv", ".wmv", ".ogv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SUPPORTED = (
    "a video file (mp4, mov, mkv, webm, avi, gif, mxf, mpg, ts/mts, flv, wmv, ogv), "
    "a folder of JPEG/PNG frames, or a list of image paths"
)

# The ffmpeg demuxers allowed to open a clip: the containers above, none of which opens another
# file. Left out on purpose: playlists (hls, dash), lists (concat), image sequences (image2, which
# expands patterns), raw elementary streams (h264, hevc: no index, so counting frames means
# decoding them all), and everything else ffmpeg knows.
DEMUXERS = ("mov", "matroska", "avi", "gif", "mxf", "mpeg", "mpegts", "flv", "asf", "ogg")

# What a refused demuxer is, in words a user knows, and what to do instead.
_REFUSED = {
    "hls": "an HLS playlist (.m3u8), which points to other files",
    "dash": "a DASH manifest, which points to other files",
    "concat": "an ffconcat list, which points to other files",
    "image2": "an image sequence pattern",
    "h264": "a raw H.264 stream without a container",
    "hevc": "a raw H.265 stream without a container",
    "tty": "a text file",
}
_AUDIO_DEMUXERS = ("wav", "mp3", "flac", "aac", "w64", "aiff", "ac3", "amr", "ape", "wv", "tta")

DEFAULT_MAX_FRAMES = 1_000_000  # ~9 h at 30 fps: bounds the index read even without app limits
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ProbeLimits:
    """Bounds on the work of opening a clip, so a hostile file cannot stall or flood a worker.

    Attributes:
        max_frames: at most this many frames (index packets) are read; more is refused.
        max_side: frames larger than this on their long side are refused before any decoding
            (0 = no limit).
        timeout_s: wall-clock seconds for the whole probe; ffprobe is killed when they run out.
        setting: config prefix named in refusals ("limits." gives "raise limits.max_frames"),
            empty to name none.
    """

    max_frames: int = DEFAULT_MAX_FRAMES
    max_side: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    setting: str = ""

    def _raise_hint(self, key: str) -> str:
        return f" (or raise {self.setting}{key})" if self.setting else ""

    def too_many_frames(self, what: str) -> LimitExceededError:
        """The refusal of a clip with more than ``max_frames`` frames."""
        return LimitExceededError(
            f"{what} has more than {self.max_frames} frames; up to {self.max_frames} are accepted here: "
            f"trim it{self._raise_hint('max_frames')}"
        )

    def check_side(self, what: str, width: int, height: int) -> None:
        """Raise LimitExceededError when a ``width`` x ``height`` frame is over ``max_side``."""
        if self.max_side > 0 and max(width, height) > self.max_side:
            raise LimitExceededError(
                f"{what} is {width}x{height}; frames up to {self.max_side} px on the long side are accepted "
                f"here: scale it down{self._raise_hint('max_side')}"
            )


def input_url(path: str) -> str:
    """``path`` as an ffmpeg input that is always a local file: ``file:`` + the absolute path.

    So a name starting with ``-`` is not an option and ``concat:a.mp4|b.mp4`` is not a URL.
    """
    return "file:" + os.path.abspath(path)


def input_options(demuxer: str | None = None) -> list[str]:
    """ffmpeg/ffprobe input options that fence what an input may open (see the module doc).

    Args:
        demuxer: force this demuxer (the one the probe found), so the decoder opens the file
            exactly as it was checked.
    """
    options = ["-protocol_whitelist", "file", "-format_whitelist", ",".join(DEMUXERS)]
    if demuxer:
        options += ["-f", demuxer]
    return options


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
        out = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, check=False,
                             stdin=subprocess.DEVNULL, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
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
    demuxer: str | None = None  # the ffmpeg demuxer that read it; the decoder is forced to use it


class _Run:
    """The fenced ffprobe/ffmpeg runs of one probe, sharing one deadline."""

    def __init__(self, path: str, limits: ProbeLimits):
        self.path = path
        self.url = input_url(path)
        self.limits = limits
        self.deadline = time.monotonic() + max(0.0, float(limits.timeout_s))

    def __call__(self, cmd: list[str]) -> subprocess.CompletedProcess:
        """Run ``cmd`` to completion within the deadline; kill it and raise when it runs out."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.too_slow()
        try:
            return subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False, timeout=remaining)
        except subprocess.TimeoutExpired:  # run() has killed and reaped the process
            raise self.too_slow() from None
        except OSError as exc:  # binary vanished or is not executable
            raise VideoReadError(f"could not run {cmd[0]} to read {self.path}: {exc}. {_INSTALL_HINT}") from exc

    def too_slow(self) -> VideoReadError:
        return VideoReadError(
            f"reading {self.path} took longer than {self.limits.timeout_s:g} s and was stopped; the file is "
            "very long or damaged: trim or re-encode it (e.g. to H.264 MP4)"
        )

    def complaint(self, stderr: bytes) -> str:
        """ffmpeg's last error line, without its "[demuxer @ 0x...]" prefix or the server's path."""
        line = _last_line(stderr).replace(self.url, os.path.basename(self.path))
        return re.sub(r"\[[\w:.-]+ @ 0x[0-9a-f]+\]\s*", "", line)


def probe_video(path: str, tools: FFmpegTools, limits: ProbeLimits | None = None) -> ProbedVideo:
    """Read a video file's stream facts and per-frame timestamps without decoding it.

    Args:
        path: the clip.
        tools: the ffmpeg binaries.
        limits: bounds on the work (frames read, frame size, wall-clock time); defaults apply
            when None.
    Raises:
        VideoReadError: the file is missing, empty, unreadable, not an accepted container (a
            playlist, a concat list, ...), has no video stream or no frames, or took longer
            than ``limits.timeout_s`` to read.
        LimitExceededError: more than ``limits.max_frames`` frames, or frames over ``limits.max_side``.
    """
    limits = limits or ProbeLimits()
    check_file(path)
    run = _Run(path, limits)
    if tools.ffprobe is None:
        return _probe_by_decoding(run, tools)
    meta = _run_ffprobe_json(run, tools.ffprobe)
    fmt = meta.get("format", {})
    demuxer = _accepted_demuxer(str(fmt.get("format_name", "")), path)
    stream = _pick_video_stream(meta.get("streams", []), path)
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    # The stream header gives the size before a single frame is decoded: refuse there, not after.
    limits.check_side(path, width, height)
    cap = _packet_cap(limits)
    pts, keyframes, packets_read = _packet_times(run, tools.ffprobe, demuxer, stream["index"], cap)
    if packets_read >= cap:
        raise limits.too_many_frames(path)
    indexed = int(_float(stream.get("nb_frames"), default=0))
    # An MP4/MOV index (which is exact) listing more samples than the file holds means the file
    # was cut short; other containers' frame counts are estimates, so only MP4/MOV is checked.
    if "mp4" in fmt.get("format_name", "") and indexed > packets_read:
        raise VideoReadError(
            f"{path} is truncated: its index lists {indexed} frames but only {packets_read} are in "
            "the file. The upload or export did not finish; re-export or upload it again."
        )
    if pts is None:
        # Some containers (some AVIs) carry no pts: ask the decoder.
        pts = _frame_times(run, tools.ffprobe, demuxer, stream["index"], cap)
        if len(pts) >= cap:
            raise limits.too_many_frames(path)
    if not pts:
        raise VideoReadError(f"{path} has a video stream but no frames in it; re-export the clip.")
    tags = {**_lower_keys(fmt.get("tags", {})), **_lower_keys(stream.get("tags", {}))}
    timecode = tags.get("timecode") or _any_stream_timecode(meta.get("streams", []))
    rotation = _rotation(stream)
    if width <= 0 or height <= 0:
        raise VideoReadError(f"{path}: the video stream has no frame size; the file may be corrupt.")
    time_base = _fraction(stream.get("time_base"))
    container_start = _float(fmt.get("start_time"), default=pts[0])
    return _assemble(
        path, stream["index"], pts, container_start, width, height, rotation,
        codec=stream.get("codec_name", "unknown"), avg_rate=_fraction(stream.get("avg_frame_rate")),
        timecode=timecode, time_base=float(time_base) if time_base else None, keyframes=keyframes,
        demuxer=demuxer,
    )


def _packet_cap(limits: ProbeLimits) -> int:
    # Edit lists may discard a few packets (never shown); allow for them so a clip of exactly
    # max_frames shown frames is not refused. The exact count is checked on the shown frames.
    return max(1, int(limits.max_frames)) + 1 + 64


def _accepted_demuxer(format_name: str, path: str) -> str:
    """The first name of ffprobe's ``format_name`` if that demuxer is in DEMUXERS, else refuse."""
    names = [n for n in format_name.split(",") if n]
    for name in names:
        if name in DEMUXERS:
            return name
    raise _refusal(names[0] if names else "unknown", path)


def _sniff(path: str) -> str:
    """A demuxer name for the message about a refused file, from its first bytes (never opened by ffmpeg)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return "unknown"
    if head.lstrip(b"\xef\xbb\xbf").startswith(b"#EXTM3U"):
        return "hls"
    if head.startswith(b"ffconcat"):
        return "concat"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    if head.startswith(b"fLaC"):
        return "flac"
    return "unknown"


def _refusal(demuxer: str, path: str) -> VideoReadError:
    if demuxer in _AUDIO_DEMUXERS:
        return VideoReadError(f"{path} has no video stream (it is {demuxer} audio). Give {SUPPORTED}.")
    what = _REFUSED.get(demuxer, "not a video file in an accepted container" if demuxer == "unknown"
                        else f"a {demuxer!r} file")
    return VideoReadError(f"{path} is {what}; that is not accepted here. Give {SUPPORTED}.")


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
    time_base: float | None, keyframes: list[float], demuxer: str | None,
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
        time_base=time_base, keyframes=tuple(sorted(keyframes)), demuxer=demuxer,
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


_NOT_ON_WHITELIST = re.compile(rb"\[(\w+) @ 0x[0-9a-f]+\] Format not on whitelist")
_PROTOCOL_REFUSED = re.compile(rb"Protocol '([\w-]+)' not on whitelist")

# Bounded header reads (ffmpeg's defaults, pinned so a config elsewhere cannot raise them).
_PROBE_BYTES = ["-probesize", "5000000", "-analyzeduration", "5000000"]


def _run_ffprobe_json(run: _Run, ffprobe: str) -> dict:
    proc = run([ffprobe, "-v", "error", *_PROBE_BYTES, *input_options(), "-print_format", "json",
                "-show_format", "-show_streams", "-i", run.url])
    if proc.returncode != 0:
        _raise_if_fenced(proc.stderr, run.path)
        raise VideoReadError(
            f"{run.path} cannot be read as a video: {run.complaint(proc.stderr)}. "
            f"The file may be corrupt or truncated; supported inputs are {SUPPORTED}."
        )
    try:
        return json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as exc:
        raise VideoReadError(f"{run.path}: ffprobe gave unreadable output ({exc}).") from exc


def _raise_if_fenced(stderr: bytes, path: str) -> None:
    """Turn ffmpeg's "not on whitelist" refusals into a message saying what the file is."""
    if b"Format not on whitelist" in stderr:
        found = _NOT_ON_WHITELIST.search(stderr)  # ffmpeg 7+ no longer names the demuxer
        raise _refusal(found.group(1).decode("ascii", "replace") if found else _sniff(path), path)
    found = _PROTOCOL_REFUSED.search(stderr)
    if found:
        raise VideoReadError(
            f"{path} refers to other files or addresses ({found.group(1).decode('ascii', 'replace')}:), "
            f"which this program does not follow. Give {SUPPORTED}."
        )


def _pick_video_stream(streams: list[dict], path: str) -> dict:
    for stream in streams:
        # Cover art in audio files shows up as a one-picture "video" stream: not a clip.
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get("attached_pic"):
            return stream
    kinds = ", ".join(sorted({s.get("codec_type", "?") for s in streams})) or "nothing"
    raise VideoReadError(
        f"{path} has no video stream (it contains: {kinds}). Give {SUPPORTED}."
    )


def _packet_times(
    run: _Run, ffprobe: str, demuxer: str, index: int, cap: int,
) -> tuple[list[float] | None, list[float], int]:
    """Sorted pts of the packets that are shown (None when the container gives no usable pts),
    the keyframes' pts, and the number of packets read including discarded ones (at most ``cap``)."""
    proc = run(
        [ffprobe, "-v", "error", *input_options(demuxer), "-select_streams", str(index),
         "-read_intervals", f"%+#{cap}", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0",
         "-i", run.url],
    )
    if proc.returncode != 0:
        raise VideoReadError(f"{run.path}: reading the frame index failed: {run.complaint(proc.stderr)}.")
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


def _frame_times(run: _Run, ffprobe: str, demuxer: str, index: int, cap: int) -> list[float]:
    proc = run(
        [ffprobe, "-v", "error", *input_options(demuxer), "-select_streams", str(index),
         "-read_intervals", f"%+#{cap}", "-show_entries", "frame=best_effort_timestamp_time",
         "-of", "csv=p=0", "-i", run.url],
    )
    if proc.returncode != 0:
        raise VideoReadError(f"{run.path}: decoding to count frames failed: {run.complaint(proc.stderr)}.")
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
_INPUT_FORMAT = re.compile(r"Input #0, ([\w,]+), from")
_STREAM_SIZE = re.compile(r"Video: [^\n]*?, (\d{1,6})x(\d{1,6})[ ,\[]")


def _probe_by_decoding(run: _Run, tools: FFmpegTools) -> ProbedVideo:
    """Probe without ffprobe: decode once through ``showinfo`` and read ffmpeg's log."""
    path, limits = run.path, run.limits
    base = [tools.ffmpeg, "-hide_banner", "-nostdin", "-nostats", *_PROBE_BYTES]
    # First the header alone (ffmpeg prints it and stops: no output given), so the container and
    # the frame size are checked before anything is decoded.
    header = run([*base, *input_options(), "-i", run.url])
    _raise_if_fenced(header.stderr, path)
    text = header.stderr.decode("utf-8", "replace")
    found = _INPUT_FORMAT.search(text)
    if found is None:
        raise VideoReadError(f"{path} cannot be read as a video: {run.complaint(header.stderr)}.")
    demuxer = _accepted_demuxer(found.group(1), path)
    stream = _STREAM.search(text)
    if stream is None:
        raise VideoReadError(f"{path} has no video stream. Give {SUPPORTED}.")
    size = _STREAM_SIZE.search(text, stream.start())
    if size:
        limits.check_side(path, int(size.group(1)), int(size.group(2)))
    cap = _packet_cap(limits)
    proc = run(
        [*base, "-copyts", *input_options(demuxer), "-i", run.url, "-map", "0:v:0", "-an", "-sn", "-dn",
         "-frames:v", str(cap), *tools.passthrough, "-vf", tools.showinfo, "-f", "null", "-"],
    )
    log = proc.stderr.decode("utf-8", "replace")
    stream = _STREAM.search(log)
    if stream is None:
        if proc.returncode != 0 and "Stream #" not in log:
            raise VideoReadError(f"{path} cannot be read as a video: {run.complaint(proc.stderr)}.")
        raise VideoReadError(f"{path} has no video stream. Give {SUPPORTED}.")
    frames = _SHOWINFO.findall(log)
    if len(frames) >= cap:
        raise limits.too_many_frames(path)
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
        timecode=tc.group(1) if tc else None, time_base=time_base, keyframes=keyframes, demuxer=demuxer,
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
