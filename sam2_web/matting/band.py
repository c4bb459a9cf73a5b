"""The unknown band (trimap) around a tracked mask's edge, and the crop that holds it.

SAM-family models predict masks on a coarse grid (a quarter of the model's input size, e.g. 256
cells across for 1024-px models, 128 for 512-px ones) that is upsampled to the frame; the true
edge lies within a couple of grid cells of the upsampled one. So the band's half-width is a
number of grid cells in frame pixels, capped by the object's own size so a small object is not
swallowed by its band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sam2_web.export.matte import grow_shrink

CELLS = 2.5  # half-width of the band in mask-grid cells: the upsampled edge is off by up to ~2 cells
MIN_BAND_PX = 3
MAX_BAND_PX = 64
OBJECT_FRACTION = 0.25  # the band may be at most this fraction of the object's equivalent diameter


def mask_resolution_of(model) -> int:
    """Cells across a SAM-family model's mask grid: its decoder predicts masks at a quarter of its input size."""
    return max(1, int(getattr(model, "image_size", 1024)) // 4)


def auto_band_px(shape: tuple[int, int], area: int, mask_resolution: int = 256) -> int:
    """Half-width in pixels of the unknown band for an object of ``area`` pixels in a frame of ``shape``.

    Args:
        shape: (H, W) of the frame.
        area: the object's mask area in pixels.
        mask_resolution: cells across the long side of the grid the mask was predicted on
            (the model's input size / 4: 256 for 1024-px models, 128 for 512-px ones).
    Returns:
        The half-width, 0 when the object is too small to have an edge worth solving.
    """
    cell = max(shape) / max(1, int(mask_resolution))
    band = min(MAX_BAND_PX, max(MIN_BAND_PX, round(CELLS * cell)))
    return int(min(band, math.floor(OBJECT_FRACTION * math.sqrt(max(area, 0)))))


@dataclass(frozen=True)
class Band:
    """Where ``alpha_matte`` solves: a crop of the frame and the trimap inside it.

    Attributes:
        rows, cols: the crop (slices of the frame) holding the band plus a margin for the filters.
        unknown: (h, w) bool, the band inside the crop.
        known: (h, w) float32 trimap values outside the band (1 object, 0 background).
        width: the band's half-width in pixels.
    """

    rows: slice
    cols: slice
    unknown: np.ndarray
    known: np.ndarray
    width: int


def find_band(mask: np.ndarray, width: int, margin: int) -> Band | None:
    """The band of half-width ``width`` around ``mask``'s edge, cropped with ``margin`` extra pixels.

    Returns None when there is no edge (empty or full mask, or ``width`` < 1).
    """
    if width < 1 or not mask.any() or mask.all():
        return None
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    pad = width + margin
    rows = slice(max(0, ys[0] - pad), min(h, ys[-1] + pad + 1))
    cols = slice(max(0, xs[0] - pad), min(w, xs[-1] + pad + 1))
    crop = mask[rows, cols]
    inner = grow_shrink(crop, -width)
    unknown = grow_shrink(crop, width) & ~inner
    # A frame edge is not an object edge: shrinking treats outside the frame as object, which
    # keeps a mask cut by the frame flush with it, so the band never hugs the frame border.
    return Band(rows, cols, unknown, inner.astype(np.float32), int(width))
