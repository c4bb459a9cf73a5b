"""Generate the web demo's example clips and still image into ``assets/``.

The examples are drawn here, not downloaded, so the project owns them and they stay tiny
(each well under 300 KB). Re-run after changing a scene:

    python scripts/make_assets.py            # writes assets/*.mp4 and assets/still.jpg
    python scripts/make_assets.py --out DIR  # somewhere else

Scenes are deterministic (fixed seeds), so re-running gives the same pictures; the mp4 bytes
may differ across ffmpeg versions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 320, 192


def _backdrop(seed: int, tint: tuple[int, int, int]) -> Image.Image:
    """A soft textured background: smooth noise plus a gradient, so the model has texture to see."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (HEIGHT // 8, WIDTH // 8, 3))
    noise = np.asarray(
        Image.fromarray(np.uint8(np.clip(128 + 40 * noise, 0, 255))).resize((WIDTH, HEIGHT), Image.BICUBIC),
        dtype=np.float32,
    )
    ramp = np.linspace(0.6, 1.0, WIDTH, dtype=np.float32)[None, :, None]
    base = np.asarray(tint, dtype=np.float32)[None, None, :] * ramp
    return Image.fromarray(np.uint8(np.clip(0.55 * base + 0.45 * noise, 0, 255)))


def _shaded_disc(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, colour) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour, outline=(20, 20, 20), width=2)
    hi = tuple(min(255, c + 70) for c in colour)
    draw.ellipse((cx - r * 0.5, cy - r * 0.6, cx - r * 0.1, cy - r * 0.2), fill=hi)


def scene_ball(t: float, bg: Image.Image) -> Image.Image:
    """A red ball rolling left to right in front of a static green box."""
    img = bg.copy()
    draw = ImageDraw.Draw(img)
    draw.rectangle((200, 70, 260, 150), fill=(40, 150, 70), outline=(10, 60, 20), width=3)
    cx = 40 + t * 240
    cy = 110 - 40 * np.sin(np.pi * t)
    _shaded_disc(draw, cx, cy, 26, (210, 40, 40))
    return img


def scene_crossing(t: float, bg: Image.Image) -> Image.Image:
    """Two objects that cross, one passing behind the other: a test for object identity."""
    img = bg.copy()
    draw = ImageDraw.Draw(img)
    ax = 30 + t * 220
    draw.rounded_rectangle((ax, 60, ax + 60, 130), radius=10, fill=(40, 80, 200), outline=(10, 20, 80), width=3)
    bx = 260 - t * 200
    _shaded_disc(draw, bx, 110, 30, (240, 190, 30))
    return img


def scene_grow(t: float, bg: Image.Image) -> Image.Image:
    """A flower-like shape that grows and turns: a changing silhouette."""
    img = bg.copy()
    draw = ImageDraw.Draw(img)
    r = 25 + 35 * t
    angle = t * np.pi / 2
    pts = []
    for k in range(10):
        a = angle + k * np.pi / 5
        rr = r if k % 2 == 0 else r * 0.55
        pts.append((160 + rr * np.cos(a), 96 + rr * np.sin(a)))
    draw.polygon(pts, fill=(170, 60, 190), outline=(60, 10, 70))
    return img


CLIPS = {
    "ball.mp4": (scene_ball, 1, (90, 120, 170)),
    "crossing.mp4": (scene_crossing, 2, (160, 140, 110)),
    "grow.mp4": (scene_grow, 3, (70, 130, 110)),
}
FRAMES = 24
FPS = 12


def write_clip(path: Path, scene, seed: int, tint) -> None:
    """Render ``FRAMES`` frames of ``scene`` and encode them as a small H.264 mp4."""
    bg = _backdrop(seed, tint)
    writer = imageio.get_writer(
        path, fps=FPS, codec="libx264", quality=None, macro_block_size=16,
        ffmpeg_params=["-crf", "26", "-preset", "veryslow"],
    )
    try:
        for k in range(FRAMES):
            writer.append_data(np.asarray(scene(k / (FRAMES - 1), bg)))
    finally:
        writer.close()


def write_still(path: Path) -> None:
    """A still image (the app treats it as a one-frame clip)."""
    img = scene_crossing(0.25, _backdrop(4, (120, 110, 150))).filter(ImageFilter.SMOOTH)
    img.save(path, quality=85)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "assets")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (scene, seed, tint) in CLIPS.items():
        write_clip(args.out / name, scene, seed, tint)
    write_still(args.out / "still.jpg")
    for path in sorted(args.out.iterdir()):
        print(f"{path.name:14s} {path.stat().st_size / 1024:7.1f} KB")


if __name__ == "__main__":
    main()
