"""Edge operations on full-resolution masks: grow/shrink, feather, invert, union.

Everything here is pure array code (numpy in, numpy out; torch only as a fast CPU kernel
library), so the exporters, the app's previews and the tests share one definition of what
"grow by 2 px" or "feather 4 px" means.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _disc_half_widths(radius: int) -> list[tuple[int, int]]:
    """(row offset, half width) pairs of a Euclidean disc: |dx| <= hw  <=>  dx^2 + dy^2 <= r^2."""
    return [(dy, math.isqrt(radius * radius - dy * dy)) for dy in range(-radius, radius + 1)]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a bool (H, W) mask with a disc of `radius` px; outside counts as empty."""
    h, w = mask.shape
    src = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = torch.zeros((h, w), dtype=torch.bool)
    # A disc is a stack of horizontal segments, one per row offset: a 1-D running max per
    # distinct half width plus a vertical shift costs O(r) passes instead of O(r^2) shifts.
    by_width: dict[int, torch.Tensor] = {}
    for dy, hw in _disc_half_widths(radius):
        if hw not in by_width:
            by_width[hw] = F.max_pool2d(src, (1, 2 * hw + 1), stride=1, padding=(0, hw))[0, 0] > 0
        row = by_width[hw]
        # Output row y takes source row y + dy.
        if dy >= 0:
            out[: h - dy] |= row[dy:]
        else:
            out[-dy:] |= row[: h + dy]
    return out.numpy()


def grow_shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow (px > 0) or shrink (px < 0) a mask by a Euclidean disc of |px| pixels.

    Args:
        mask: (H, W) bool or 0/1 array.
        px: radius in pixels; 0 returns the mask unchanged.

    Returns:
        A new (H, W) bool array. Shrinking treats the area outside the frame as inside the
        mask, so an object cut by the frame edge stays flush with that edge.
    """
    m = np.asarray(mask).astype(bool)
    if px == 0:
        return m.copy()
    if px > 0:
        return _dilate(m, int(px))
    return ~_dilate(~m, int(-px))


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def feather(matte: np.ndarray, px: float) -> np.ndarray:
    """Soften a matte's edges with a separable Gaussian (sigma = px / 2, support 3 sigma).

    The soft band is therefore about 2*px wide around the edge; a pixel whose square
    neighbourhood of radius ``ceil(1.5 * px)`` is uniform keeps its exact value.

    Args:
        matte: (H, W) bool or float array in [0, 1].
        px: feather width in pixels; <= 0 returns a float copy.

    Returns:
        (H, W) float32 array in [0, 1].
    """
    m = np.asarray(matte, dtype=np.float32)
    if px <= 0:
        return m.copy()
    k = _gaussian_kernel(px / 2.0)
    r = (k.numel() - 1) // 2
    t = torch.from_numpy(np.ascontiguousarray(m))[None, None]
    # Replicate padding: the frame border is not an edge of the object.
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    out = t[0, 0].numpy()
    # Summation rounding can leave 0.99999994 deep inside the object; snap so interiors stay exact.
    return np.clip(np.where(out > 1 - 1e-5, 1.0, np.where(out < 1e-5, 0.0, out)), 0.0, 1.0).astype(np.float32)


def quantize(matte: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float matte in [0, 1] -> uint8 (bit_depth 8) or uint16 (bit_depth 16), rounded."""
    if bit_depth == 16:
        return np.round(np.asarray(matte, np.float32) * 65535.0).astype(np.uint16)
    if bit_depth == 8:
        return np.round(np.asarray(matte, np.float32) * 255.0).astype(np.uint8)
    raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")


def union(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Logical OR of several (H, W) bool masks; an empty list gives an all-False (H, W) mask."""
    out = np.zeros(shape, dtype=bool)
    for m in masks:
        out |= m
    return out


def soft_matte(mask: np.ndarray, *, feather_px: float = 0.0, invert: bool = False) -> np.ndarray:
    """Bool mask (already grown/shrunk) -> float32 matte in [0, 1], feathered then inverted.

    Invert comes last so a feathered background matte is the exact complement of the
    feathered object matte.
    """
    m = feather(mask, feather_px) if feather_px > 0 else np.asarray(mask, dtype=np.float32)
    return (1.0 - m).astype(np.float32) if invert else m
