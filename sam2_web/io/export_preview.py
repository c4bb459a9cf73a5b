"""Drawing on source frames: the coloured overlay preview and the simple background effects.

Pure numpy functions of one frame, so the web app can render a single-frame preview with the
exact code the ``overlay``/``effect_*`` exports run on every frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sam2_web.io.matte import grow_shrink

# Ten well separated colours (RGB); an object keeps its colour by id, whatever else is shown.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)

EFFECTS = ("blur", "grey", "replace", "highlight")


def color_of(obj_id: int) -> tuple[int, int, int]:
    """The fixed palette colour (RGB) of an object id."""
    return PALETTE[int(obj_id) % len(PALETTE)]


def _outline(mask: np.ndarray) -> np.ndarray:
    # Thickness scales with the frame so the outline stays visible at 4K and thin at 96 px.
    width = max(1, min(mask.shape) // 300)
    return mask & ~grow_shrink(mask, -width)


def overlay(frame_rgb: np.ndarray, masks: Mapping[int, np.ndarray] | np.ndarray,
            obj_ids: Sequence[int], alpha: float = 0.5) -> np.ndarray:
    """Draw each object as a translucent fill plus an opaque outline in its palette colour.

    Args:
        frame_rgb: (H, W, 3) uint8 source frame.
        masks: {obj_id: (H, W)} or an (O, H, W) stack ordered like ``obj_ids``; non-zero = object.
        obj_ids: objects to draw, bottom to top (later ones cover earlier ones).
        alpha: fill opacity in [0, 1].

    Returns:
        A new (H, W, 3) uint8 frame.
    """
    out = np.asarray(frame_rgb, dtype=np.float32)[..., :3].copy()
    for k, obj_id in enumerate(obj_ids):
        if isinstance(masks, Mapping):
            if obj_id not in masks:
                continue
            m = np.asarray(masks[obj_id]) > 0
        else:
            m = np.asarray(masks[k]) > 0
        if not m.any():
            continue
        color = np.asarray(color_of(obj_id), dtype=np.float32)
        out[m] = out[m] * (1.0 - alpha) + color * alpha
        out[_outline(m)] = color
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _box_blur_axis(img: np.ndarray, radius: int, axis: int) -> np.ndarray:
    # Running sums make the cost independent of the radius.
    pad = [(0, 0)] * img.ndim
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = img.shape[axis]
    hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return ((hi - lo) / (2 * radius + 1)).astype(np.float32)


def blur(frame_rgb: np.ndarray, radius: int) -> np.ndarray:
    """Strong smooth blur (two separable box passes, close to a Gaussian) as float32 (H, W, 3)."""
    img = np.asarray(frame_rgb, dtype=np.float32)
    if radius <= 0:
        return img.copy()
    for _ in range(2):
        img = _box_blur_axis(_box_blur_axis(img, radius, 0), radius, 1)
    return img


def apply_effect(frame_rgb: np.ndarray, matte: np.ndarray, kind: str, *, blur_px: int = 15,
                 background: tuple[int, int, int] = (0, 177, 64), dim: float = 0.3) -> np.ndarray:
    """Change the background (where ``matte`` is 0) and keep the object (where it is 1).

    Args:
        frame_rgb: (H, W, 3) uint8 source frame.
        matte: (H, W) float in [0, 1] (soft edges blend); invert it to affect the object instead.
        kind: "blur", "grey", "replace" (solid ``background`` colour) or "highlight" (darken
            the background to ``dim`` of its brightness).

    Returns:
        (H, W, 3) uint8 frame.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    src = np.asarray(frame_rgb, dtype=np.float32)[..., :3]
    if kind == "blur":
        bg = blur(src, blur_px)
    elif kind == "grey":
        luma = src @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # BT.709 weights
        bg = np.repeat(luma[..., None], 3, axis=2)
    elif kind == "replace":
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32), src.shape)
    elif kind == "highlight":
        bg = src * dim
    else:
        raise ValueError(f"unknown effect {kind!r}; choose one of {', '.join(EFFECTS)}")
    a = np.asarray(matte, dtype=np.float32)[..., None]
    return np.clip(np.round(src * a + bg * (1.0 - a)), 0, 255).astype(np.uint8)
