"""Exports with soft edges: every format that carries a matte is read back at its own bit depth
(16-bit PNG, EXR half, ProRes 4444's 12-bit alpha, FFV1 8/16-bit, VP9 8-bit) and compared with the
alphas ``sam2_web.matting.MatteStream`` solves for the same frames; binary formats stay binary;
the edge options apply in the documented order; frames are streamed, not buffered."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image

from sam2_web.errors import ExportError
from sam2_web.export.formats import FORMATS, ExportOptions, export
from sam2_web.export.matte import feather, grow_shrink, quantize
from sam2_web.matting import MatteStream, estimate_foreground

T, H, W = 4, 72, 96
MASK_RES = 24  # a coarse mask grid (4 px cells) so the band is a few pixels wide at this size


def _truth(t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` (a soft-edged disc over a two-tone background, moving right) and its hard mask."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    dist = np.hypot(xx - 34 - 3 * t, yy - 36) - 18
    alpha = np.clip(0.5 - dist / 4, 0, 1)  # a 4-px soft ramp
    fg = np.dstack([np.full((H, W), 220.0), 60 + xx, np.full((H, W), 40.0)])
    bg = np.dstack([40 + yy, np.full((H, W), 90.0), np.full((H, W), 200.0)])
    frame = np.round(alpha[..., None] * fg + (1 - alpha[..., None]) * bg).astype(np.uint8)
    # The tracker's mask: the edge a little off, as from a coarse grid.
    mask = np.hypot(xx - 35 - 3 * t, yy - 36) <= 18
    return frame, mask


@pytest.fixture(scope="module")
def clip():
    frames, masks = zip(*(_truth(t) for t in range(T)))
    box = np.zeros((H, W), bool)
    box[4:20, 70:90] = True  # a second object, away from the first
    return list(frames), [{1: m, 2: box} for m in masks]


def _options(**kw) -> ExportOptions:
    return ExportOptions(soft_edges=True, mask_resolution=MASK_RES, **kw)


def _solved(clip, obj_ids=(1,), grow=0, feather_px=0.0, invert=False) -> list[np.ndarray]:
    """What the exports must hold: the union's mask grown, streamed through MatteStream, feathered, inverted."""
    frames, masks = clip
    stream = MatteStream(mask_resolution=MASK_RES)
    out = []
    for frame, m in zip(frames, masks):
        union = np.zeros((H, W), bool)
        for o in obj_ids:
            union |= m[o]
        alpha = stream.update(frame, grow_shrink(union, grow))
        if feather_px:
            alpha = feather(alpha, feather_px)
        out.append(1 - alpha if invert else alpha)
    return out


def _export(fmt, out, clip, options, obj_ids=(1,)):
    frames, masks = clip
    return export(fmt, out, masks, num_frames=T, fps=25, width=W, height=H, obj_ids=[1, 2],
                  frames=frames.__getitem__, options=ExportOptions(**{**options.__dict__, "objects": obj_ids}))


def _decode(path, pix_fmt: str, decoder: str | None = None) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", *(["-c:v", decoder] if decoder else []), "-i", str(path),
           "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    dtype = np.dtype("<u2") if "64" in pix_fmt else np.uint8
    return np.frombuffer(raw, dtype=dtype).reshape(-1, H, W, 4)


def _is_soft(alpha: np.ndarray) -> bool:
    return bool(((alpha > 0.02) & (alpha < 0.98)).sum() > 20)


def test_reference_alphas_are_soft_and_differ_from_the_mask(clip):
    alphas = _solved(clip)
    assert all(_is_soft(a) for a in alphas)
    assert all(np.abs(a - m[1]).sum() > 10 for a, m in zip(alphas, clip[1]))


def test_png_16_bit_holds_the_solved_alpha_exactly(tmp_path, clip):
    out = _export("png", tmp_path / "m", clip, _options(bit_depth=16))
    want = _solved(clip)
    for i in range(T):
        got = np.asarray(Image.open(out / "obj_1" / f"m_{i:05d}.png"))
        assert got.dtype == np.uint16 or got.dtype == np.int32
        np.testing.assert_array_equal(got.astype(np.uint16), quantize(want[i], 16))
        # Real 16-bit steps, which an 8-bit matte scaled up could not give.
        assert (got[(got > 0) & (got < 65535)] % 257 != 0).any()


def test_exr_half_holds_the_solved_alpha(tmp_path, clip):
    import OpenEXR

    out = _export("exr", tmp_path / "e", clip, _options())
    want = _solved(clip)
    for i, f in enumerate(sorted(out.glob("*.exr"))):
        pixels = OpenEXR.File(str(f), separate_channels=True).channels()["obj_1.mask"].pixels
        assert pixels.dtype == np.float16
        np.testing.assert_array_equal(pixels, want[i].astype(np.float16))


@pytest.mark.parametrize("depth", [8, 16])
def test_ffv1_is_exact_at_its_depth_with_decontaminated_colour(tmp_path, clip, depth):
    out = _export("ffv1", tmp_path / "f", clip, _options(bit_depth=depth))
    rgba = _decode(out, "rgba64le" if depth == 16 else "rgba")
    frames = clip[0]
    want = _solved(clip)
    for i in range(T):
        np.testing.assert_array_equal(rgba[i, ..., 3], quantize(want[i], depth))
        colour = estimate_foreground(frames[i], want[i])
        np.testing.assert_array_equal(rgba[i, ..., :3], colour.astype(np.uint16) * 257 if depth == 16 else colour)
        # The edge's colour is the object's, not the source pixel mixed with the background.
        edge = (want[i] > 0.1) & (want[i] < 0.9)
        assert edge.sum() > 10 and (rgba[i, ..., :3][edge] != (frames[i][edge].astype(np.uint16) * (257 if depth == 16 else 1))).any()


def test_prores_alpha_is_finer_than_8_bits(tmp_path, clip):
    out = _export("prores", tmp_path / "p", clip, _options(bit_depth=16))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=pix_fmt", "-of", "csv=p=0", str(out)],
                           check=True, capture_output=True, text=True).stdout.strip()
    assert probe.startswith("yuva444p")
    alpha = _decode(out, "rgba64le")[..., 3].astype(np.int64)
    want = _solved(clip)
    for i in range(T):
        err = np.abs(alpha[i] - quantize(want[i], 16).astype(np.int64))
        print(f"prores frame {i}: worst alpha error {err.max() / 65535 * 4095:.2f} 12-bit steps")
        assert err.max() <= 6 * 16  # within a few 12-bit steps
    soft = alpha[(alpha > 0) & (alpha < 65535)]
    assert len(np.unique(soft)) > 20 and (soft % 257 != 0).any()


def test_vp9_alpha_is_8_bit_and_close(tmp_path, clip):
    out = _export("webm", tmp_path / "v", clip, _options())
    alpha = _decode(out, "rgba", decoder="libvpx-vp9")[..., 3].astype(np.int64)
    want = _solved(clip)
    for i in range(T):
        err = np.abs(alpha[i] - quantize(want[i], 8).astype(np.int64))
        print(f"vp9 frame {i}: mean alpha error {err.mean():.2f}/255, worst {err.max()}")
        assert err.mean() <= 3 and err.max() <= 40
    assert len(np.unique(alpha[(alpha > 8) & (alpha < 247)])) > 10


def test_rgba_png_carries_the_union_alpha_and_foreground(tmp_path, clip):
    out = _export("rgba_png", tmp_path / "c", clip, _options(), obj_ids=(1, 2))
    want = _solved(clip, obj_ids=(1, 2))
    for i in range(T):
        rgba = np.asarray(Image.open(out / f"c_{i:05d}.png"))
        np.testing.assert_array_equal(rgba[..., 3], quantize(want[i], 8))
        np.testing.assert_array_equal(rgba[..., :3], estimate_foreground(clip[0][i], want[i]))


def test_order_is_grow_then_soft_edge_then_feather_then_invert(tmp_path, clip):
    out = _export("png", tmp_path / "o", clip, _options(bit_depth=16, grow_px=2, feather_px=1.5, invert=True))
    want = _solved(clip, grow=2, feather_px=1.5, invert=True)
    for i in range(T):
        got = np.asarray(Image.open(out / "obj_1" / f"o_{i:05d}.png")).astype(np.uint16)
        np.testing.assert_array_equal(got, quantize(want[i], 16))


@pytest.mark.parametrize("fmt", ["index_png", "coco_rle", "overlay_mp4"])
def test_binary_formats_stay_binary(tmp_path, clip, fmt):
    assert not FORMATS[fmt].soft_edges and FORMATS[fmt].alpha == "binary"
    soft = _export(fmt, tmp_path / "soft", clip, _options(name="x"), obj_ids=(1, 2))
    hard = _export(fmt, tmp_path / "hard", clip, ExportOptions(name="x"), obj_ids=(1, 2))
    if soft.is_dir():
        names = sorted(p.name for p in soft.iterdir())
        assert names == sorted(p.name for p in hard.iterdir())
        for name in names:
            if name.endswith(".png"):
                assert set(np.unique(np.asarray(Image.open(soft / name)))) <= {0, 1, 2}
                np.testing.assert_array_equal(np.asarray(Image.open(soft / name)), np.asarray(Image.open(hard / name)))
    elif soft.suffix == ".json":
        import json

        a, b = json.loads(soft.read_text()), json.loads(hard.read_text())
        assert a["annotations"] == b["annotations"] and len(a["annotations"]) == 2 * T
    else:
        np.testing.assert_array_equal(_decode(soft, "rgba"), _decode(hard, "rgba"))


def test_soft_edges_need_the_frames(tmp_path, clip):
    with pytest.raises(ExportError, match="frames="):
        export("png", tmp_path / "x", clip[1], num_frames=T, fps=25, width=W, height=H, obj_ids=[1, 2],
               options=_options())
    with pytest.raises(ExportError, match="matting method"):
        export("png", tmp_path / "x", clip[1], num_frames=T, fps=25, width=W, height=H, obj_ids=[1, 2],
               frames=clip[0].__getitem__, options=_options(matte_method="magic"))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fmt", ["png", "prores"])
def test_frames_are_streamed_not_buffered(tmp_path, clip, fmt):
    """The frames are decoded as the export reaches them: never more than two ahead of the writer."""
    frames, masks = clip
    n = 12
    asked: list[int] = []
    ahead: list[int] = []

    def get(i):
        asked.append(i)
        return frames[i % T]

    def progress(done, total):
        ahead.append(len(asked) - done)

    export(fmt, tmp_path / "s", [masks[i % T] for i in range(n)], num_frames=n, fps=25, width=W, height=H,
           obj_ids=[1, 2], frames=get, options=_options(), progress=progress)
    assert asked == list(range(n))  # each frame read once, in order, even when the writer also draws on it
    assert len(ahead) == n and max(ahead) <= 2
