"""Drawing on source frames: the coloured overlay preview and the simple background effects.

Pure numpy functions of one frame, so the web app can render a single-frame preview with the
exact code the ``overlay``/``effect_*`` exports run on every frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.export.matte import grow_shrink

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


def blur(frame_rgb: np.ndarray, radius: int) -> np.ndarray:
    """Strong smooth blur of radius ~``radius`` px as float32 (H, W, 3).

    Two box passes (close to a Gaussian) run on a copy shrunk by about radius / 4, then
    bilinear upsampling: the result is indistinguishable for a background blur and the cost
    no longer grows with the radius or the frame size.
    """
    img = torch.from_numpy(np.asarray(frame_rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    if radius <= 0:
        return img[0].permute(1, 2, 0).numpy().copy()
    h, w = img.shape[-2:]
    step = max(1, min(radius // 4, h // 4, w // 4))
    small = F.avg_pool2d(img, step, stride=step, ceil_mode=True) if step > 1 else img
    r = max(1, round(radius / step))
    for _ in range(2):
        small = F.avg_pool2d(F.pad(small, (r, r, 0, 0), mode="replicate"), (1, 2 * r + 1), stride=1)
        small = F.avg_pool2d(F.pad(small, (0, 0, r, r), mode="replicate"), (2 * r + 1, 1), stride=1)
    if step > 1:
        small = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return small[0].permute(1, 2, 0).contiguous().numpy()


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
