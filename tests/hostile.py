"""Hostile uploads for the hardening tests, each written by the test that needs it (nothing is
stored in the repository): playlists that point elsewhere, concat lists, files whose names look
like options or URLs, a clip with very many tiny frames, frames too large to decode, a PNG
decompression bomb, and a stand-in "ffprobe" that never answers.

Also the app a hardening test runs against: ``app.py`` on loopback with small limits, so every
limit is reached with files of a few kilobytes.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import psutil

from clips import ffmpeg_exe

# Limits of the app the hostile tests talk to (hydra overrides of configs/app.yaml).
MAX_FRAMES = 50
MAX_SIDE = 512
MAX_POINTS = 8
MAX_NAME_CHARS = 24
MAX_OBJECTS = 4
# The hardening tests send many requests from one loopback client on purpose: per-client sharing
# (sessions per client, heavy-call rate) is off here (as appserver.ONE_CLIENT) and tested on its
# own in test_fair_share.py.
HARDENED = (
    f"limits.max_frames={MAX_FRAMES}", f"limits.max_side={MAX_SIDE}", f"limits.max_points={MAX_POINTS}",
    f"limits.max_name_chars={MAX_NAME_CHARS}", f"limits.max_objects={MAX_OBJECTS}", "limits.probe_timeout_s=10",
    "server.sessions_per_client=0", "server.heavy_burst=0",
)


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


def ts_segment(path: Path, frames: int = 10, size: str = "64x48") -> Path:
    """A small MPEG-TS clip: what a playlist's entries point to."""
    _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=10", "-frames:v", str(frames),
            "-pix_fmt", "yuv420p", "-c:v", "mpeg4", "-f", "mpegts", str(path))
    return path


def hls_live_playlist(path: Path, segment: str) -> Path:
    """An HLS *live* playlist (no end marker, a day-long target duration): ffprobe without a
    fence waits for the next segment forever."""
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:100000\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:100000.0,\n{segment}\n"
    )
    return path


def hls_playlist(path: Path, entries: list[str], repeat: int = 1) -> Path:
    """A finished (VOD) HLS playlist whose entries (relative or absolute) are repeated ``repeat``
    times: from the right folder it opens as ``repeat`` x the entries' frames."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for _ in range(repeat):
        for entry in entries:
            lines += ["#EXTINF:1.0,", entry]
    path.write_text("\n".join(lines + ["#EXT-X-ENDLIST", ""]))
    return path


def concat_list(path: Path, entries: list[str]) -> Path:
    """An ffconcat script naming other files."""
    path.write_text("ffconcat version 1.0\n" + "".join(f"file '{e}'\n" for e in entries))
    return path


def tiny_frame_mkv(path: Path, frames: int) -> Path:
    """An mkv with ``frames`` 16x16 frames at 1000 fps: a few hundred kB whose full index is long
    to read. Built by remuxing a 1000-frame clip in a loop, so it takes about a second."""
    one = path.with_name(path.stem + "_1000.mkv")
    _ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:r=1000", "-frames:v", "1000", "-c:v", "mpeg4",
            "-g", "1000", str(one))
    _ffmpeg("-stream_loop", str(max(0, frames // 1000 - 1)), "-i", str(one), "-c", "copy", str(path))
    one.unlink()
    return path


def wide_clip(path: Path, width: int, height: int = 16, frames: int = 3, fmt: str | None = None) -> Path:
    """A clip wider than the side limit (``fmt="h264"`` writes a raw H.264 stream, no container)."""
    args = ["-f", "lavfi", "-i", f"color=c=gray:s={width}x{height}:r=10", "-frames:v", str(frames),
            "-pix_fmt", "yuv420p", "-c:v", "libx264" if fmt == "h264" else "mpeg4"]
    if fmt:
        args += ["-f", fmt]
    _ffmpeg(*args, str(path))
    return path


def bomb_png(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A valid grey PNG of ``width`` x ``height`` pixels (200 Mpx by default) in about 200 kB:
    decoding it would take ``width * height`` bytes, at least."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = 100
    block = (b"\0" * (width + 1)) * rows  # filter byte + one grey byte per pixel, 100 rows at a time
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(block) for _ in range(height // rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def yaml_bomb(levels: int = 12, width: int = 9) -> str:
    """A "billion laughs" YAML value (flow style, fits any field): anchors nested ``levels`` deep,
    each a list of ``width`` aliases of the one before, so ``width ** levels`` strings in a few
    hundred bytes (9**12 = 282 billion). PyYAML shares the repeats; whatever walks or prints the
    value (a check's message) expands them."""
    levels_text = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    levels_text += [f"&l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, levels + 1)]
    return "[" + ", ".join(levels_text) + "]"


def yaml_merge_bomb(levels: int = 40) -> str:
    """The same growth through merge keys: each mapping merges the one before twice (``<<``),
    which PyYAML's constructor copies, doubling the work ``levels`` times."""
    lines = ["m0: &m0 {k0: 1}"]
    lines += [f"m{k}: &m{k} {{<<: [*m{k - 1}, *m{k - 1}], k{k}: 1}}" for k in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def never_answering_ffprobe(path: Path) -> Path:
    """A stand-in "ffprobe" that prints nothing and sleeps: an input that stalls the real one."""
    path.write_text("#!/bin/sh\nexec sleep 300\n")
    path.chmod(0o755)
    return path


def media_children(pid: int, allowed: str | None = None) -> list[str]:
    """Command lines of ffmpeg/ffprobe (or sleep stand-in) processes under ``pid`` still running,
    except those whose command line contains ``allowed`` (a live session's own decoder)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            name, cmdline = child.name(), " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if name.startswith(("ffmpeg", "ffprobe", "sleep")) and not (allowed and allowed in cmdline):
            found.append(cmdline)
    return found
