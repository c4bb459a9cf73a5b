"""Tiny synthetic clips for tests, encoded with the real ffmpeg CLI.

Every frame made by ``marked_frame`` carries its own index as a row of black/white 16-pixel
blocks along the top edge (bit 0 leftmost), which survives lossy codecs, 4:2:0 chroma, GIF
palettes and JPEG; ``read_marker`` reads it back, so a test can check that ``get(i)`` really
returned frame ``i``. A bright square at ``x = 8 * i`` makes motion visible to a human too.

``moving_disc_frames`` draws a colored disc moving over a textured background with its exact
masks, for tracker tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

MARKER_BITS = 9  # up to 512 distinct frames
MARKER_BLOCK = 16
MARKER_MIN_WIDTH = MARKER_BITS * MARKER_BLOCK


def ffmpeg_exe() -> str:
    """The ffmpeg used to build clips (the system one; tests need it anyway)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("tests need ffmpeg on PATH")
    return exe


@lru_cache(maxsize=None)
def ffmpeg_version() -> tuple[int, int]:
    """(major, minor) of the ffmpeg on PATH; git builds count as very new."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, check=True).stdout
    match = re.search(rb"version n?(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (99, 0)


@lru_cache(maxsize=None)
def has_encoder(name: str) -> bool:
    """True when the ffmpeg on PATH can encode with ``name`` (e.g. "libx265")."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, check=True).stdout
    return re.search(rb"^\s*\S+\s+" + re.escape(name.encode()) + rb"\s", out, re.M) is not None


def marked_frame(i: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Frame ``i`` of the marker clip: (H, W, 3) uint8, index in the top band, square at x=8*i."""
    width, height = size
    if width < MARKER_MIN_WIDTH or height < 2 * MARKER_BLOCK:
        raise ValueError(f"marker frames need at least {MARKER_MIN_WIDTH}x{2 * MARKER_BLOCK} pixels")
    frame = np.full((height, width, 3), 70, np.uint8)
    for bit in range(MARKER_BITS):
        on = (i >> bit) & 1
        frame[:MARKER_BLOCK, bit * MARKER_BLOCK:(bit + 1) * MARKER_BLOCK] = 235 if on else 16
    x = (8 * i) % max(1, width - 12)
    top = MARKER_BLOCK + 4
    frame[top:top + 12, x:x + 12] = (250, 220, 40)
    return frame


def read_marker(frame: np.ndarray) -> int:
    """The frame index written by ``marked_frame`` (frame as decoded, un-rotated)."""
    value = 0
    lo, hi = MARKER_BLOCK // 4, 3 * MARKER_BLOCK // 4
    for bit in range(MARKER_BITS):
        x0 = bit * MARKER_BLOCK
        if frame[lo:hi, x0 + lo:x0 + hi].mean() > 128:
            value |= 1 << bit
    return value


def write_clip(
    path, frames: np.ndarray, *, fps: float = 10, codec: str = "libx264", pix_fmt: str | None = "yuv420p",
    extra: tuple[str, ...] = (), vf: str | None = None,
) -> Path:
    """Encode ``frames`` (N, H, W, 3 uint8 RGB) into ``path`` with ffmpeg; returns the path."""
    path = Path(path)
    n, height, width, _ = frames.shape
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "pipe:0",
    ]
    if codec == "gif" and not vf:
        # A palette built from the clip itself keeps the flat grays exact (the default dithers).
        vf = "split[a][b];[a]palettegen=reserve_transparent=0[p];[b][p]paletteuse=dither=none"
    if vf:
        cmd += ["-vf", vf]
    cmd += ["-c:v", codec]
    if pix_fmt:
        cmd += ["-pix_fmt", pix_fmt]
    if codec == "libx265":
        cmd += ["-x265-params", "log-level=error"]
    if codec == "libvpx-vp9":
        cmd += ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "30"]
    cmd += [*extra, str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True, capture_output=True)
    return path


def make_clip(
    path, n_frames: int = 12, size: tuple[int, int] = (160, 120), fps: float = 10, codec: str = "libx264",
    pix_fmt: str | None = "yuv420p", rotate: int | None = None, vfr: bool = False,
    extra: tuple[str, ...] = (),
) -> Path:
    """A clip of ``marked_frame(0..n_frames-1)``.

    ``rotate`` stores display-rotation metadata (degrees, as ffmpeg's ``rotate`` tag) without
    touching the pixels. ``vfr`` gives the first half of the frames a 1/fps duration and the
    rest 2.5/fps, so timestamps are genuinely non-uniform (mp4/mkv targets).
    """
    frames = np.stack([marked_frame(i, size) for i in range(n_frames)])
    path = Path(path)
    vf = None
    if vfr:
        half = n_frames // 2
        step = 1.0 / fps
        vf = f"settb=1/1000,setpts='(if(lt(N,{half}),N*{step},{half * step}+(N-{half})*{2.5 * step}))/TB'"
        extra = ("-fps_mode", "passthrough", "-enc_time_base", "1:1000", *extra)
    if rotate is None:
        return write_clip(path, frames, fps=fps, codec=codec, pix_fmt=pix_fmt, extra=extra, vf=vf)
    plain = path.with_name(path.stem + ".norot" + path.suffix)
    write_clip(plain, frames, fps=fps, codec=codec, pix_fmt=pix_fmt, extra=extra, vf=vf)
    if ffmpeg_version() >= (6, 0):
        # ffmpeg 6 counts -display_rotation counter-clockwise; the old tag counted clockwise.
        cmd = ["-display_rotation:v:0", str(-rotate), "-i", str(plain), "-c", "copy"]
    else:
        cmd = ["-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}"]
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *cmd, str(path)], check=True, capture_output=True
    )
    os.remove(plain)
    return path


def make_jpeg_folder(folder, n: int = 12, size: tuple[int, int] = (160, 120), name: str = "frame{}.jpg") -> Path:
    """Write ``marked_frame(i)`` as PIL JPEGs named ``frame0.jpg .. frame{n-1}.jpg`` (no zero padding,
    so plain string sorting would put frame10 before frame2)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(marked_frame(i, size)).save(folder / name.format(i), quality=95)
    return folder


def make_audio_only(path, seconds: float = 0.5) -> Path:
    """An audio file with no video stream (format from the extension: .wav, .m4a, ...)."""
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", str(path)],
        check=True, capture_output=True,
    )
    return Path(path)


def make_zero_frame_video(path, source) -> Path:
    """A Matroska file whose video stream exists but holds no packets (they are all dropped)."""
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-f", "lavfi", "-i", "sine=d=0.5",
         "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-bsf:v", "noise=drop=1", str(path)],
        check=True, capture_output=True,
    )
    return Path(path)


def moving_disc_frames(
    n_frames: int = 16, size: tuple[int, int] = (256, 192), radius: int = 24, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A red disc crossing a textured background diagonally.

    Returns:
        frames: (N, H, W, 3) uint8 RGB.
        masks: (N, H, W) bool, the disc's exact pixels in each frame.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    # Texture: low-contrast checker + gradient + noise, so the background is not trivially flat.
    checker = ((xx // 16 + yy // 16) % 2) * 30
    background = np.stack(
        [60 + checker + xx * 40 // width, 90 + checker, 70 + yy * 50 // height], axis=-1
    ) + rng.integers(0, 20, size=(height, width, 3))
    background = background.clip(0, 255).astype(np.uint8)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    masks = np.empty((n_frames, height, width), bool)
    for i in range(n_frames):
        t = i / max(1, n_frames - 1)
        cx = radius + t * (width - 2 * radius - 1)
        cy = radius + t * (height - 2 * radius - 1)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        frame = background.copy()
        frame[disc] = (220, 30, 30)
        frames[i], masks[i] = frame, disc
    return frames, masks


def make_moving_disc_clip(
    path, n_frames: int = 16, size: tuple[int, int] = (256, 192), radius: int = 24, fps: float = 10,
) -> tuple[Path, np.ndarray]:
    """The moving disc as a file: an mp4 (H.264, near-lossless) or, for a path without a suffix,
    a folder of JPEGs named 00000.jpg.. (the layout the reference SAM 2 reads). Returns (path, masks)."""
    frames, masks = moving_disc_frames(n_frames, size, radius)
    path = Path(path)
    if path.suffix == "":
        path.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(path / f"{i:05d}.jpg", quality=95)
    else:
        write_clip(path, frames, fps=fps, codec="libx264", pix_fmt="yuv444p", extra=("-crf", "4"))
    return path, masks


def disc_clips(root: Path, n_frames: int, size: tuple[int, int] = (128, 96), radius: int = 14) -> dict:
    """The moving disc both ways the engine reads it, for the engine test modules:
    ``{"folder": JPEG folder, "mp4": H.264 file, "masks": (n, h, w) bool, "root": root}``."""
    root = Path(root)
    folder, masks = make_moving_disc_clip(root / "jpegs", n_frames=n_frames, size=size, radius=radius)
    mp4, _ = make_moving_disc_clip(root / "disc.mp4", n_frames=n_frames, size=size, radius=radius)
    return {"folder": str(folder), "mp4": str(mp4), "masks": masks, "root": root}
