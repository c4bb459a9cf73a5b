"""Edge operations on full-resolution masks: grow/shrink, feather, invert, union.

Everything here is pure numpy, so the exporters, the app's previews and the tests share one
definition of what "grow by 2 px" or "feather 4 px" means.
"""

from __future__ import annotations

import math

import numpy as np


def _row_windows(mask: np.ndarray, half_widths: set[int]) -> dict[int, np.ndarray]:
    """For each half width hw: out[y, x] = any(mask[y, x - hw : x + hw + 1]), zero outside."""
    h, w = mask.shape
    pad = max(half_widths)
    padded = np.zeros((h, w + 2 * pad), dtype=bool)
    padded[:, pad : pad + w] = mask
    # levels[j][:, x] = any over the 2**j columns starting at x. Any window length L is then
    # the OR of two (overlapping) power-of-two windows, so each width costs one pass.
    levels = [padded]
    span = 1
    while 2 * span <= 2 * pad + 1:
        prev = levels[-1]
        nxt = prev.copy()
        nxt[:, :-span] |= prev[:, span:]
        levels.append(nxt)
        span *= 2
    out = {}
    for hw in half_widths:
        length = 2 * hw + 1
        j = length.bit_length() - 1
        start = pad - hw
        second = start + length - (1 << j)
        out[hw] = levels[j][:, start : start + w] | levels[j][:, second : second + w]
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a bool (H, W) mask with a disc of `radius` px; outside counts as empty."""
    h, w = mask.shape
    # Rows further than the frame's height add nothing, and a segment wider than the frame
    # covers the whole row: so a radius of any size costs at most 2H passes of W-wide rows.
    reach = min(radius, h - 1)
    # (row offset, half width) of the disc's rows: |dx| <= hw  <=>  dx^2 + dy^2 <= r^2.
    spans = [(dy, min(math.isqrt(radius * radius - dy * dy), w)) for dy in range(-reach, reach + 1)]
    # A disc is a stack of horizontal segments, one per row offset: O(r) whole-frame passes
    # instead of O(r^2) shifted copies.
    rows = _row_windows(mask, {hw for _, hw in spans})
    out = np.zeros_like(mask, dtype=bool)
    for dy, hw in spans:
        row = rows[hw]
        # Output row y takes source row y + dy.
        if dy >= 0:
            out[: h - dy] |= row[dy:]
        else:
            out[-dy:] |= row[: h + dy]
    return out


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


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur_axis(img: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    r = (len(kernel) - 1) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    # Edge padding: the frame border is not an edge of the object.
    padded = np.pad(img, pad, mode="edge")
    n = img.shape[axis]
    out = np.zeros_like(img)
    # A weighted sum of shifted copies: a few dozen vectorised passes beat a generic conv on CPU.
    for i, weight in enumerate(kernel):
        out += weight * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
    return out


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
    r = (len(k) - 1) // 2
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return np.zeros_like(m)
    # Only the object's bounding box grown by the kernel radius can change; outside it the
    # matte stays 0. The crop's own edges are 0 too (or the frame edge), so edge padding
    # there gives the same values as blurring the whole frame.
    y0, y1 = max(0, rows[0] - r), min(m.shape[0], rows[-1] + r + 1)
    x0, x1 = max(0, cols[0] - r), min(m.shape[1], cols[-1] + r + 1)
    out = np.zeros_like(m)
    out[y0:y1, x0:x1] = _blur_axis(_blur_axis(m[y0:y1, x0:x1], k, 0), k, 1)
    # Summation rounding can leave 0.99999994 deep inside the object; snap so interiors stay exact.
    out[out > 1.0 - 1e-5] = 1.0
    out[out < 1e-5] = 0.0
    return out


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
