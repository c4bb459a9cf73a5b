"""Exports: every format is written, read back with an independent reader (ffprobe/ffmpeg,
PIL, OpenEXR, pycocotools) and compared with the masks that went in; edge options against a
brute-force reference; failures leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_web.errors import CancelledError, ExportError
from sam2_web.media.timecode import to_fraction
from sam2_web.export.output import MARKER
from sam2_web.export.formats import FORMATS, ExportOptions, apply_effect, color_of, export, overlay
from sam2_web.export.matte import grow_shrink

T, H, W = 10, 64, 96
START = 1001
TC = "01:00:00:00"
RATE = Fraction(30000, 1001)


# --------------------------------------------------------------------------- fixtures/helpers


def _clip_masks() -> list[dict[int, np.ndarray]]:
    """A disc moving right (obj 1) and a box moving down (obj 2) that overlap mid-clip."""
    yy, xx = np.mgrid[:H, :W]
    out = []
    for t in range(T):
        disc = (xx - 20 - 5 * t) ** 2 + (yy - 32) ** 2 <= 12**2
        box = (np.abs(xx - 50) <= 9) & (np.abs(yy - 14 - 3 * t) <= 7)
        out.append({1: disc, 2: box})
    return out


def _clip_frames() -> list[np.ndarray]:
    """Smooth colour gradients that change per frame (compress well, still distinct)."""
    yy, xx = np.mgrid[:H, :W]
    return [np.dstack([(xx * 2 + 7 * t) % 256, (yy * 3 + 11 * t) % 256, ((xx + yy) + 5 * t) % 256]).astype(np.uint8)
            for t in range(T)]


@pytest.fixture(scope="module")
def masks():
    return _clip_masks()


@pytest.fixture(scope="module")
def frames():
    return _clip_frames()


def _export(fmt, out, masks, frames=None, options=None, **kw):
    args = dict(num_frames=T, fps=RATE, width=W, height=H, obj_ids=[1, 2], start_frame=START,
                start_timecode=TC, frames=(frames.__getitem__ if frames is not None else None), options=options)
    args.update(kw)
    return export(fmt, out, masks, **args)


def _probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames,r_frame_rate,width,height,pix_fmt:stream_tags:format_tags", "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    stream = json.loads(out)["streams"][0]
    return stream


def _decode(path: Path, pix_fmt: str, channels: int, decoder: str | None = None, size=(H, W)) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", *(["-c:v", decoder] if decoder else []), "-i", str(path),
           "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    dtype = np.dtype("<u2") if "64" in pix_fmt or "16" in pix_fmt else np.uint8
    return np.frombuffer(raw, dtype=dtype).reshape(-1, *size, channels)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _union(m: dict) -> np.ndarray:
    return m[1] | m[2]


def _check_video_stream(path: Path, pix_fmt_prefix: str, timecode: str | None = TC, rate: Fraction = RATE) -> dict:
    s = _probe(path)
    assert int(s["nb_read_frames"]) == T
    assert Fraction(s["r_frame_rate"]) == rate
    assert (s["width"], s["height"]) == (W, H)
    assert s["pix_fmt"].startswith(pix_fmt_prefix), s["pix_fmt"]
    if timecode is not None:
        assert s.get("tags", {}).get("timecode") == timecode
    return s


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- table


def test_formats_table_lists_every_format_with_its_traits():
    expected = {"png", "png_zip", "rgba_png", "prores", "webm", "ffv1", "matte_mp4", "index_png", "exr",
                "coco_rle", "overlay_mp4", "effect_blur", "effect_grey", "effect_replace", "effect_highlight"}
    assert set(FORMATS) == expected
    assert FORMATS["prores"].extension == ".mov" and FORMATS["prores"].needs_frames
    assert FORMATS["ffv1"].lossless and not FORMATS["webm"].lossless
    assert FORMATS["png"].extension == "" and not FORMATS["png"].needs_frames


# --------------------------------------------------------------------------- image sequences


def test_png_matte_sequence_is_exact_and_numbered_from_start_frame(tmp_path, masks):
    out = _export("png", tmp_path / "shot", masks)
    assert out == tmp_path / "shot"
    for o in (1, 2):
        files = sorted((out / f"obj_{o}").iterdir())
        assert [f.name for f in files] == [f"shot_{START + i:05d}.png" for i in range(T)]
        for i, f in enumerate(files):
            img = Image.open(f)
            assert img.mode == "L" and img.size == (W, H)
            np.testing.assert_array_equal(np.asarray(img), masks[i][o].astype(np.uint8) * 255)


def test_png_matte_16_bit(tmp_path, masks):
    out = _export("png", tmp_path / "m16", masks, options=ExportOptions(bit_depth=16, names={2: "the box"}))
    f = out / "the_box" / f"m16_{START + 4:05d}.png"
    img = Image.open(f)
    assert img.mode.startswith("I;16") or img.mode == "I"
    np.testing.assert_array_equal(np.asarray(img).astype(np.int64), masks[4][2].astype(np.int64) * 65535)


def test_png_zip_holds_the_same_sequence(tmp_path, masks):
    out = _export("png_zip", tmp_path / "dl", masks)
    assert out.suffix == ".zip"
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert len(names) == 2 * T and f"obj_2/dl_{START + T - 1:05d}.png" in names
        with zf.open(f"obj_1/dl_{START + 3:05d}.png") as fh:
            np.testing.assert_array_equal(np.asarray(Image.open(fh)), masks[3][1].astype(np.uint8) * 255)


def test_rgba_png_is_source_colour_with_matte_alpha(tmp_path, masks, frames):
    out = _export("rgba_png", tmp_path / "cut", masks, frames)
    assert (out / MARKER).is_file()
    files = sorted(out.glob("*.png"))
    assert len(files) == T and files[0].name == f"cut_{START:05d}.png"
    for i, f in enumerate(files):
        img = np.asarray(Image.open(f))
        assert img.shape == (H, W, 4)
        np.testing.assert_array_equal(img[..., :3], frames[i])
        np.testing.assert_array_equal(img[..., 3], _union(masks[i]).astype(np.uint8) * 255)


def test_rgba_png_16_bit_read_by_ffmpeg(tmp_path, masks, frames):
    out = _export("rgba_png", tmp_path / "deep", masks, frames, options=ExportOptions(bit_depth=16, feather_px=2))
    f = out / f"deep_{START + 6:05d}.png"
    assert _probe(f)["pix_fmt"] == "rgba64be"
    px = _decode(f, "rgba64le", 4)[0]
    np.testing.assert_array_equal(px[..., :3], frames[6].astype(np.uint16) * 257)
    soft = px[..., 3][(px[..., 3] > 0) & (px[..., 3] < 65535)]
    assert soft.size > 0 and np.any(soft % 257 != 0)  # true 16-bit steps in the alpha


def test_index_matte_later_object_wins_and_legend(tmp_path, masks):
    out = _export("index_png", tmp_path / "ids", masks)
    legend = json.loads((out / "legend.json").read_text())
    assert legend["objects"] == [{"index": 1, "obj_id": 1, "name": "obj_1"}, {"index": 2, "obj_id": 2, "name": "obj_2"}]
    assert legend["background"] == 0 and legend["fps"] == "30000/1001" and legend["start_frame"] == START
    overlapped = 0
    for i in range(T):
        got = np.asarray(Image.open(out / f"ids_{START + i:05d}.png"))
        want = np.zeros((H, W), np.uint8)
        want[masks[i][1]] = 1
        want[masks[i][2]] = 2
        np.testing.assert_array_equal(got, want)
        overlapped += int((masks[i][1] & masks[i][2]).sum())
    assert overlapped > 0  # the fixture really exercises the overlap rule


def test_exr_named_half_channels(tmp_path, masks):
    import OpenEXR

    out = _export("exr", tmp_path / "comp", masks, options=ExportOptions(names={1: "ball"}))
    files = sorted(out.glob("*.exr"))
    assert [f.name for f in files] == [f"comp_{START + i:05d}.exr" for i in range(T)]
    for i, f in enumerate(files):
        exr = OpenEXR.File(str(f), separate_channels=True)
        ch = exr.channels()
        assert set(ch) == {"ball.mask", "obj_2.mask"}
        assert ch["ball.mask"].pixels.dtype == np.float16 and ch["ball.mask"].pixels.shape == (H, W)
        np.testing.assert_array_equal(ch["ball.mask"].pixels, masks[i][1].astype(np.float16))
        np.testing.assert_array_equal(ch["obj_2.mask"].pixels, masks[i][2].astype(np.float16))
    header = OpenEXR.File(str(files[0]), header_only=True).header()
    assert Fraction(header["framesPerSecond"]) == RATE and header["timecode"] == TC


def test_coco_rle_decodes_with_pycocotools(tmp_path, masks):
    from pycocotools import mask as cocomask

    out = _export("coco_rle", tmp_path / "anno", masks)
    doc = json.loads(out.read_text())
    assert doc["info"]["num_frames"] == T and doc["info"]["fps"] == "30000/1001"
    assert [im["id"] for im in doc["images"]] == [START + i for i in range(T)]
    assert len(doc["annotations"]) == 2 * T
    for ann in doc["annotations"]:
        i, o = ann["image_id"] - START, ann["track_id"]
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(cocomask.decode(rle).astype(bool), masks[i][o])
        assert ann["area"] == int(cocomask.area(rle)) == int(masks[i][o].sum())
        np.testing.assert_allclose(ann["bbox"], cocomask.toBbox(rle))
        assert ann["category_id"] == o


# --------------------------------------------------------------------------- video files


def test_prores_4444_alpha(tmp_path, masks, frames):
    out = _export("prores", tmp_path / "alpha", masks, frames)
    assert out.name == "alpha.mov"
    _check_video_stream(out, "yuva444p")
    rgba = _decode(out, "rgba", 4)
    assert rgba.shape[0] == T
    worst = min(_iou(rgba[i, ..., 3] >= 128, _union(masks[i])) for i in range(T))
    print(f"prores worst alpha IoU {worst:.4f}")
    assert worst >= 0.99


def test_webm_vp9_alpha_needs_libvpx_decoder(tmp_path, masks, frames):
    out = _export("webm", tmp_path / "alpha", masks, frames)
    s = _check_video_stream(out, "yuv", timecode=None)
    assert s["tags"].get("alpha_mode") == "1"  # the matroska flag saying an alpha side stream exists
    rgba = _decode(out, "rgba", 4, decoder="libvpx-vp9")
    assert rgba.shape[0] == T
    worst = min(_iou(rgba[i, ..., 3] >= 128, _union(masks[i])) for i in range(T))
    print(f"webm worst alpha IoU {worst:.4f}")
    assert worst >= 0.99
    # The native decoder drops alpha: everything would come back opaque.
    assert (_decode(out, "rgba", 4)[..., 3] == 255).all()


def test_ffv1_is_bit_exact(tmp_path, masks, frames):
    out = _export("ffv1", tmp_path / "lossless", masks, frames, start_timecode=None)
    _check_video_stream(out, "bgra", timecode=None)
    rgba = _decode(out, "rgba", 4)
    assert rgba.shape[0] == T
    for i in range(T):
        np.testing.assert_array_equal(rgba[i, ..., :3], frames[i])
        np.testing.assert_array_equal(rgba[i, ..., 3], _union(masks[i]).astype(np.uint8) * 255)


def test_ffv1_16_bit_keeps_feathered_precision(tmp_path, masks, frames):
    out = _export("ffv1", tmp_path / "deep", masks, frames, options=ExportOptions(bit_depth=16, feather_px=2))
    _check_video_stream(out, "gbrap16", timecode=None)
    rgba = _decode(out, "rgba64le", 4)
    png = _export("png", tmp_path / "ref", masks, options=ExportOptions(bit_depth=16, feather_px=2, objects=(1,)))
    # Single object so the PNG reference equals the union alpha of the video.
    ref = _export("ffv1", tmp_path / "deep1", masks, frames, options=ExportOptions(bit_depth=16, feather_px=2, objects=(1,)))
    alpha1 = _decode(ref, "rgba64le", 4)[..., 3]
    for i in range(T):
        want = np.asarray(Image.open(png / "obj_1" / f"ref_{START + i:05d}.png")).astype(np.uint16)
        np.testing.assert_array_equal(alpha1[i], want)
    assert len(np.unique(rgba[..., 3])) > 50  # real 16-bit steps, not 8-bit ones scaled


def test_matte_mp4_grey(tmp_path, masks):
    out = _export("matte_mp4", tmp_path / "luma", masks)
    _check_video_stream(out, "yuv420p")
    grey = _decode(out, "gray", 1)[..., 0]
    worst = min(_iou(grey[i] >= 128, _union(masks[i])) for i in range(T))
    print(f"matte mp4 worst IoU {worst:.4f}")
    assert grey.shape[0] == T and worst >= 0.99


def test_drop_frame_timecode_and_float_rate(tmp_path, masks):
    out = _export("matte_mp4", tmp_path / "df", masks, fps=29.97, start_timecode="10:00:00;00")
    s = _check_video_stream(out, "yuv420p", timecode="10:00:00;00")
    assert s["r_frame_rate"] == "30000/1001"


def test_odd_frame_size_keeps_size_and_alpha(tmp_path):
    h, w = 63, 95  # 4:2:0 cannot hold odd sizes: H.264 falls back to 4:4:4, VP9 pads internally
    yy, xx = np.mgrid[:h, :w]
    odd = [{1: (xx - 30 - 3 * t) ** 2 + (yy - 30) ** 2 <= 15**2} for t in range(T)]
    pics = [np.full((h, w, 3), 90, np.uint8)] * T
    kw = dict(num_frames=T, fps=24, width=w, height=h, obj_ids=[1])
    mp4 = export("matte_mp4", tmp_path / "odd", odd, **kw)
    webm = export("webm", tmp_path / "odd", odd, frames=pics, **kw)
    for path, pix in ((mp4, "yuv444p"), (webm, "yuv420p")):
        s = _probe(path)
        assert (s["width"], s["height"], int(s["nb_read_frames"]), s["pix_fmt"]) == (w, h, T, pix)
    grey = _decode(mp4, "gray", 1, size=(h, w))[..., 0]
    alpha = _decode(webm, "rgba", 4, decoder="libvpx-vp9", size=(h, w))[..., 3]
    worst = min(min(_iou(grey[i] >= 128, odd[i][1]), _iou(alpha[i] >= 128, odd[i][1])) for i in range(T))
    print(f"odd size worst IoU {worst:.4f}")
    assert worst >= 0.99


@pytest.mark.parametrize("fps, want", [(25, "25/1"), ("24000/1001", "24000/1001"), (23.976, "24000/1001"),
                                       (12.5, "25/2"), ((60000, 1001), "60000/1001")])
def test_rate_conversion(fps, want):
    assert to_fraction(fps) == Fraction(want)


def test_integer_rate_in_output(tmp_path, masks):
    out = _export("matte_mp4", tmp_path / "pal", masks, fps=25, start_timecode=None)
    s = _check_video_stream(out, "yuv420p", timecode=None, rate=Fraction(25))
    assert s["r_frame_rate"] == "25/1"


def test_overlay_preview_video_and_function(tmp_path, masks, frames):
    f0 = frames[5]
    img = overlay(f0, masks[5], [1, 2], alpha=0.5)
    outside = ~(masks[5][1] | masks[5][2])
    np.testing.assert_array_equal(img[outside], f0[outside])
    # Inside object 2 only (not on its outline): half frame, half its palette colour.
    yy, xx = 25, 58
    assert masks[5][2][yy, xx] and not masks[5][1][yy, xx]
    want = np.round(f0[yy, xx].astype(np.float32) * 0.5 + np.asarray(color_of(2)) * 0.5)
    np.testing.assert_array_equal(img[yy, xx], want)
    # Outline pixels carry the exact colour.
    assert (img[masks[5][2]] == np.asarray(color_of(2), np.uint8)).all(axis=-1).any()
    assert color_of(1) != color_of(2)
    stacked = overlay(f0, np.stack([masks[5][1], masks[5][2]]), [1, 2], alpha=0.5)
    np.testing.assert_array_equal(stacked, img)

    out = _export("overlay_mp4", tmp_path / "preview", masks, frames)
    _check_video_stream(out, "yuv420p")
    rgb = _decode(out, "rgb24", 3)
    err = np.abs(rgb[5].astype(np.int16) - img.astype(np.int16)).mean()
    print(f"overlay mp4 mean abs error vs overlay(): {err:.2f}")
    assert err < 6


@pytest.mark.parametrize("kind", ["blur", "grey", "replace", "highlight"])
def test_effects(tmp_path, masks, frames, kind):
    m = _union(masks[2]).astype(np.float32)
    img = apply_effect(frames[2], m, kind, background=(0, 255, 0), dim=0.25, blur_px=5)
    inside, outside = m > 0, m == 0
    np.testing.assert_array_equal(img[inside], frames[2][inside])  # the object is untouched
    bg = img[outside].astype(np.int16)
    if kind == "replace":
        assert (bg == [0, 255, 0]).all()
    elif kind == "grey":
        assert (bg[:, 0] == bg[:, 1]).all() and (bg[:, 1] == bg[:, 2]).all()
    elif kind == "highlight":
        assert np.abs(bg - np.round(frames[2][outside] * 0.25)).max() <= 1
    else:
        src = frames[2].astype(np.float32)
        assert np.abs(np.diff(img.astype(np.float32), axis=1))[outside[:, 1:]].mean() < np.abs(np.diff(src, axis=1))[outside[:, 1:]].mean()
    out = _export(f"effect_{kind}", tmp_path / kind, masks, frames)
    _check_video_stream(out, "yuv420p")


# --------------------------------------------------------------------------- edge options


def _brute_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d2 = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
    return (d2 <= r * r).any(axis=-1) if len(ys) else np.zeros_like(mask)


def _brute_erode(mask: np.ndarray, r: int) -> np.ndarray:
    # Outside the frame counts as inside the object: only in-frame background erodes.
    return ~_brute_dilate(~mask, r)


def test_grow_and_shrink_match_brute_force_disc():
    rng = np.random.default_rng(0)
    for r in (1, 2, 3, 5, 8, 17, 18, 22, 23, 40):  # also radii past the frame's height and width
        m = rng.random((18, 23)) < 0.08
        m[5:12, 6:15] = True
        np.testing.assert_array_equal(grow_shrink(m, r), _brute_dilate(m, r))
        np.testing.assert_array_equal(grow_shrink(m, -r), _brute_erode(m, r))
    # A radius of any size costs at most 2H row passes (it used to build 2r + 1 of them).
    np.testing.assert_array_equal(grow_shrink(m, 2_000_000_000), _brute_dilate(m, 40))
    np.testing.assert_array_equal(grow_shrink(m, -2_000_000_000), _brute_erode(m, 40))


def test_grow_shrink_invert_in_export(tmp_path, masks):
    grown = _export("png", tmp_path / "g", masks, options=ExportOptions(grow_px=2, objects=(1,)))
    shrunk = _export("png", tmp_path / "s", masks, options=ExportOptions(grow_px=-2, objects=(1,)))
    inv = _export("png", tmp_path / "i", masks, options=ExportOptions(invert=True, objects=(1,)))
    for i in range(T):
        name = f"{{}}_{START + i:05d}.png"
        g = np.asarray(Image.open(grown / "obj_1" / name.format("g"))) > 0
        s = np.asarray(Image.open(shrunk / "obj_1" / name.format("s"))) > 0
        v = np.asarray(Image.open(inv / "obj_1" / name.format("i")))
        np.testing.assert_array_equal(g, _brute_dilate(masks[i][1], 2))
        np.testing.assert_array_equal(s, _brute_erode(masks[i][1], 2))
        np.testing.assert_array_equal(v, (~masks[i][1]).astype(np.uint8) * 255)
        # Frame 0's disc (r = 12) is fully in frame: growing/shrinking by 2 px adds/removes
        # about a 2 px ring, pi * (14^2 - 12^2) and pi * (12^2 - 10^2) pixels.
        if i == 0:
            area = int(masks[0][1].sum())
            print(f"disc area {area}, grown {int(g.sum())}, shrunk {int(s.sum())}")
            # Discrete discs sum to a bit less than continuous ones, hence the lower bound.
            assert 0.8 * np.pi * 52 < int(g.sum()) - area < 1.05 * np.pi * 52
            assert 0.8 * np.pi * 44 < area - int(s.sum()) < 1.05 * np.pi * 44


def test_feather_is_soft_only_near_edges(tmp_path, masks):
    px = 3
    out = _export("png", tmp_path / "f", masks, options=ExportOptions(feather_px=px, bit_depth=16, objects=(1,)))
    reach = int(np.ceil(1.5 * px))
    for i in (0, 5):
        m = masks[i][1]
        got = np.asarray(Image.open(out / "obj_1" / f"f_{START + i:05d}.png")).astype(np.int64)
        padded = np.pad(m, reach, mode="edge")
        win = np.lib.stride_tricks.sliding_window_view(padded, (2 * reach + 1, 2 * reach + 1))
        uniform = win.all(axis=(-1, -2)) | ~win.any(axis=(-1, -2))
        np.testing.assert_array_equal(got[uniform], m[uniform].astype(np.int64) * 65535)
        soft = (got > 0) & (got < 65535)
        assert soft.sum() > 0 and not (soft & uniform).any()
        assert abs(got.sum() / 65535 - m.sum()) < 0.03 * m.sum()  # a blur moves no mass


# --------------------------------------------------------------------------- frame accounting


def test_short_and_sparse_masks_still_give_every_frame(tmp_path, masks):
    out = _export("png", tmp_path / "short", masks[:4], options=ExportOptions(objects=(1,)))
    files = sorted((out / "obj_1").iterdir())
    assert len(files) == T
    assert not np.asarray(Image.open(files[-1])).any()

    sparse = {2: {1: masks[2][1]}, 7: {2: masks[7][2]}}
    out = _export("coco_rle", tmp_path / "sparse", sparse)
    doc = json.loads(out.read_text())
    areas = {(a["image_id"] - START, a["track_id"]): a["area"] for a in doc["annotations"]}
    assert len(areas) == 2 * T and areas[(2, 1)] > 0 and areas[(7, 2)] > 0
    assert sum(v > 0 for v in areas.values()) == 2


def test_stacked_array_masks(tmp_path, masks):
    stack = np.stack([np.stack([m[1], m[2]]) for m in masks])  # (T, O, H, W)
    out = _export("index_png", tmp_path / "stk", stack)
    got = np.asarray(Image.open(out / f"stk_{START + 9:05d}.png"))
    assert (got == 1).sum() == (masks[9][1] & ~masks[9][2]).sum()


def test_too_many_mask_frames_is_an_error(tmp_path, masks):
    with pytest.raises(ExportError, match="more mask frames"):
        _export("png", tmp_path / "long", masks + masks[:1])
    assert _no_leftovers(tmp_path) == []


# --------------------------------------------------------------------------- failures


def test_unwritable_folder_fails_up_front(tmp_path, masks):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    consumed = []

    def watched():
        for m in masks:
            consumed.append(1)
            yield m

    with pytest.raises(ExportError, match="folder"):
        _export("png", blocker / "sub" / "out", watched())
    with pytest.raises(ExportError, match="folder"):  # obj_ids read from the masks: still no peek first
        _export("coco_rle", blocker / "out", watched(), obj_ids=None)
    with pytest.raises(ExportError, match="folder|write"):
        _export("prores", Path("/proc/sam2_web_export/out"), watched(), frames=_clip_frames())
    assert consumed == []  # checked before any encoding
    assert _no_leftovers(tmp_path) == ["not_a_folder"]


class _Boom(RuntimeError):
    pass


def _failing(masks, after=3):
    for i, m in enumerate(masks):
        if i == after:
            raise _Boom("tracker crashed")
        yield m


@pytest.mark.parametrize("fmt", ["png", "png_zip", "rgba_png", "index_png", "exr", "coco_rle", "prores", "webm",
                                 "ffv1", "matte_mp4", "overlay_mp4"])
def test_mid_stream_failure_leaves_nothing(tmp_path, masks, frames, fmt):
    with pytest.raises(_Boom):
        _export(fmt, tmp_path / "out", _failing(masks), frames if FORMATS[fmt].needs_frames else None)
    assert _no_leftovers(tmp_path) == []


def test_progress_reports_every_frame_and_can_cancel(tmp_path, masks, frames):
    seen = []
    _export("prores", tmp_path / "p", masks, frames, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i + 1, T) for i in range(T)]

    def cancel(done, total):
        if done == 4:
            raise CancelledError("stopped by the user")

    with pytest.raises(CancelledError):
        _export("exr", tmp_path / "c", masks, progress=cancel)
    assert _no_leftovers(tmp_path) == ["p.mov"]


def test_failed_rewrite_keeps_the_previous_output(tmp_path, masks):
    first = _export("matte_mp4", tmp_path / "keep", masks)
    before = first.read_bytes()
    with pytest.raises(_Boom):
        _export("matte_mp4", tmp_path / "keep", _failing(masks))
    assert first.read_bytes() == before and _no_leftovers(tmp_path) == ["keep.mp4"]
    # A successful rewrite replaces a folder output whole.
    _export("png", tmp_path / "seq", masks)
    _export("png", tmp_path / "seq", masks, options=ExportOptions(objects=(2,)))
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == [MARKER, "obj_2"]


def test_a_folder_the_user_made_is_never_replaced(tmp_path, masks):
    mine = tmp_path / "Desktop"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="choose a new name"):
        _export("png", mine, masks)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert _no_leftovers(tmp_path) == ["Desktop"]


def test_failure_removes_folders_it_created(tmp_path, masks):
    with pytest.raises(_Boom):
        _export("png", tmp_path / "new" / "deeper" / "out", _failing(masks))
    assert _no_leftovers(tmp_path) == []


def test_ffmpeg_error_is_reported_with_its_message(tmp_path, masks, frames):
    with pytest.raises(ExportError, match="ffmpeg failed|ffmpeg stopped") as err:
        _export("webm", tmp_path / "bad", masks, frames, options=ExportOptions(crf=999))
    assert "crf" in str(err.value).lower() or "value" in str(err.value).lower()
    assert _no_leftovers(tmp_path) == []


def test_bad_inputs_are_export_errors(tmp_path, masks, frames):
    with pytest.raises(ExportError, match="unknown export format"):
        _export("gif", tmp_path / "x", masks)
    with pytest.raises(ExportError, match="frames="):
        _export("prores", tmp_path / "x", masks)
    with pytest.raises(ExportError, match="upscale"):
        _export("png", tmp_path / "x", [{1: np.zeros((32, 48), bool)}])
    with pytest.raises(ExportError, match="bit_depth"):
        _export("png", tmp_path / "x", masks, options=ExportOptions(bit_depth=12))
    with pytest.raises(ExportError, match="timecode"):
        _export("png", tmp_path / "x", masks, start_timecode="1 hour")
    with pytest.raises(ExportError, match="not among"):
        _export("png", tmp_path / "x", masks, options=ExportOptions(objects=(7,)))
    assert _no_leftovers(tmp_path) == []
