"""Soft edges (``sam2_web.matting``): alpha from a tracked mask and its frame, bad input, temporal
steadiness, foreground colour, the checkerboard preview."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_web.errors import MattingError
from sam2_web.export.matte import grow_shrink
from sam2_web.matting import MatteStream, alpha_matte, checkerboard, cutout_preview, estimate_foreground
from sam2_web.matting.band import auto_band_px

H, W = 90, 120


def _scene(shift: float = 0.0, noise: float = 0.0, seed: int = 0):
    """A soft-edged disc (a 5-px ramp) over a two-tone background; its true alpha and a coarse mask."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    dist = np.hypot(xx - 60, yy - 45) - 25
    alpha = np.clip(0.5 - dist / 5, 0, 1)
    fg = np.dstack([np.full((H, W), 230.0), np.full((H, W), 150.0), 40 + xx / 2])
    bg = np.dstack([np.full((H, W), 30.0), 60 + yy, np.full((H, W), 170.0)])
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    # The mask a coarse (4-px) grid gives: right radius, blocky edge, shifted by the tracker's jitter.
    coarse = np.hypot((xx // 4) * 4 + 2 - 60 - shift, (yy // 4) * 4 + 2 - 45) <= 25
    return np.clip(np.round(img), 0, 255).astype(np.uint8), alpha.astype(np.float32), coarse


def test_alpha_beats_the_mask_on_a_soft_edge():
    image, truth, mask = _scene()
    alpha = alpha_matte(image, mask, mask_resolution=30)
    assert alpha.shape == (H, W) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    hard = np.abs(mask - truth).sum()
    soft = np.abs(alpha - truth).sum()
    print(f"SAD hard {hard:.1f}, soft {soft:.1f}")
    assert soft < 0.6 * hard
    # Outside the band nothing changes.
    far_in = np.hypot(*np.mgrid[:H, :W] - np.array([45, 60])[:, None, None]) < 10
    assert (alpha[far_in] == 1).all() and (alpha[:5] == 0).all()


def test_band_width_follows_the_mask_grid_and_the_object():
    assert auto_band_px((720, 1280), 200_000, 256) == round(2.5 * 1280 / 256)
    assert auto_band_px((720, 1280), 200_000, 128) == round(2.5 * 1280 / 128)
    assert auto_band_px((720, 1280), 100, 256) == 2  # a small object gets a narrow band
    assert auto_band_px((720, 1280), 1, 256) == 0
    image, _, mask = _scene()
    narrow = alpha_matte(image, mask, band_px=1)
    wide = alpha_matte(image, mask, band_px=6)
    changed = lambda a: int((a != mask).sum())  # noqa: E731
    assert 0 < changed(narrow) < changed(wide)


@pytest.mark.parametrize("fill", [False, True])
def test_empty_and_full_masks_come_back_as_they_are(fill):
    image, _, _ = _scene()
    alpha = alpha_matte(image, np.full((H, W), fill))
    assert alpha.shape == (H, W) and alpha.dtype == np.float32
    assert (alpha == float(fill)).all()


def test_one_pixel_object_and_objects_at_the_frame_edge():
    image, _, _ = _scene()
    dot = np.zeros((H, W), bool)
    dot[40, 50] = True
    np.testing.assert_array_equal(alpha_matte(image, dot), dot.astype(np.float32))
    corner = np.zeros((H, W), bool)
    corner[:30, :40] = True
    alpha = alpha_matte(image, corner, band_px=4)
    assert alpha.shape == (H, W)
    assert (alpha[:20, :30] == 1).all()  # the frame edge is not an object edge


def test_mask_encodings_and_float_images_agree():
    image, _, mask = _scene()
    want = alpha_matte(image, mask)
    np.testing.assert_array_equal(alpha_matte(image, mask.astype(np.uint8) * 255), want)
    np.testing.assert_array_equal(alpha_matte(image, torch.from_numpy(mask)), want)
    np.testing.assert_allclose(alpha_matte(image.astype(np.float32) / 255, mask), want, atol=1e-5)
    rgba = np.dstack([image, np.full((H, W), 255, np.uint8)])
    np.testing.assert_array_equal(alpha_matte(rgba, mask), want)


@pytest.mark.parametrize("case, match", [
    ("mask_size", "upsample the mask"),
    ("image_shape", r"\(H, W, 3\)"),
    ("nan_image", "NaN"),
    ("nan_mask", "NaN"),
    ("float_range", "0..1"),
    ("method", "unknown matting method"),
    ("option", "unknown matting option"),
    ("band", "band_px"),
])
def test_bad_input_is_a_clear_error(case, match):
    image, _, mask = _scene()
    args, kwargs = (image, mask), {}
    if case == "mask_size":
        args = (image, mask[:-1])
    elif case == "image_shape":
        args = (image[..., 0], mask)
    elif case == "nan_image":
        bad = image.astype(np.float32) / 255
        bad[3, 3, 1] = np.nan
        args = (bad, mask)
    elif case == "nan_mask":
        bad = mask.astype(np.float32)
        bad[0, 0] = np.nan
        args = (image, bad)
    elif case == "float_range":
        args = (image.astype(np.float32), mask)
    elif case == "method":
        kwargs = {"method": "magic"}
    elif case == "option":
        kwargs = {"radius": 3}
    elif case == "band":
        kwargs = {"band_px": -1}
    with pytest.raises(MattingError, match=match):
        alpha_matte(*args, **kwargs)


def test_stream_is_steadier_than_per_frame_where_nothing_moves():
    """A static shot: sensor noise and a mask edge that hops by a cell; the stream flickers less."""
    frames = [_scene(shift=(2.0 if t % 2 else 0.0), noise=2.0, seed=t) for t in range(8)]
    stream = MatteStream(mask_resolution=30)
    per_frame = [alpha_matte(img, m, mask_resolution=30) for img, m, _ in [(f[0], f[2], None) for f in frames]]
    streamed = [stream.update(img, m) for img, _, m in frames]
    flicker = lambda seq: np.mean([np.abs(b - a).mean() for a, b in zip(seq, seq[1:])])  # noqa: E731
    print(f"flicker per frame {flicker(per_frame):.5f}, stream {flicker(streamed):.5f}")
    assert flicker(streamed) < 0.6 * flicker(per_frame)
    assert streamed[0].shape == (H, W)


def test_stream_follows_motion_at_once():
    """Where the picture changes the new alpha is used as solved: no ghost of the old position."""
    a_img, _, a_mask = _scene()
    b_img, _, b_mask = (np.roll(x, 30, axis=1) for x in _scene())
    stream = MatteStream(mask_resolution=30)
    stream.update(a_img, a_mask)
    moved = stream.update(b_img, b_mask)
    solved = alpha_matte(b_img, b_mask, mask_resolution=30)
    # Only pixels whose colour did not change (flat background on both frames) may keep some old alpha.
    assert np.abs(moved - solved).max() < 0.05 and np.abs(moved - solved).mean() < 1e-3
    old_only = a_mask & ~grow_shrink(b_mask, 8)
    assert old_only.sum() > 100 and (moved[old_only] == 0).all()
    stream.reset()
    np.testing.assert_array_equal(stream.update(a_img, a_mask), alpha_matte(a_img, a_mask, mask_resolution=30))


def test_foreground_removes_the_background_spill():
    image, truth, _ = _scene()
    fg_true = np.array([230.0, 150.0])  # red and green of the object are flat
    fg = estimate_foreground(image, truth)
    edge = (truth > 0.15) & (truth < 0.85)
    before = np.abs(image[edge][:, :2] - fg_true).mean()
    after = np.abs(fg[edge][:, :2].astype(np.float32) - fg_true).mean()
    print(f"edge colour error: source {before:.1f}, estimated {after:.1f}")
    assert after < 0.5 * before
    np.testing.assert_array_equal(fg[truth == 1], image[truth == 1])
    np.testing.assert_array_equal(fg[truth == 0], image[truth == 0])
    np.testing.assert_array_equal(estimate_foreground(image, np.zeros((H, W), np.float32)), image)


def test_checkerboard_preview():
    image, truth, _ = _scene()
    board = checkerboard(H, W, 8)
    assert board.shape == (H, W, 3) and set(np.unique(board)) == {153, 204}
    assert board[0, 0, 0] != board[0, 8, 0] and board[0, 0, 0] == board[8, 8, 0]
    out = cutout_preview(image, truth, square=8)
    np.testing.assert_array_equal(out[truth == 1], image[truth == 1])
    np.testing.assert_array_equal(out[truth == 0], board[truth == 0])
    with pytest.raises(ValueError):
        cutout_preview(image, truth[:-1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m cuda there)")
def test_the_gpu_gives_the_cpus_alpha():
    """The default method is the same code on a GPU: same alpha up to float rounding (TF32 off)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        image, _, mask = _scene(noise=2.0)
        cpu = alpha_matte(image, mask, mask_resolution=30)
        gpu = alpha_matte(image, mask, mask_resolution=30, device="cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = before
    assert np.abs(gpu - cpu).max() < 1e-3
    fg = estimate_foreground(image, cpu, device="cuda")
    assert np.abs(fg.astype(int) - estimate_foreground(image, cpu).astype(int)).max() <= 1
