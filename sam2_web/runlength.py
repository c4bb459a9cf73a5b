"""Run-length encoding of binary masks: the one definition behind the engine's compact result
store (row-major, ``sam2_web.video.store``) and COCO RLE (column-major, ``sam2_web.export.rle``).

Runs alternate background/foreground and start with background, so the first run may be 0.
"""

from __future__ import annotations

import numpy as np


def run_lengths(mask: np.ndarray, order: str = "C") -> np.ndarray:
    """Run lengths of a bool mask read in ``order`` ("C": row by row, "F": column by column, as COCO).

    Returns:
        uint32 runs, starting with a (possibly empty) run of False; empty for an empty mask.
    """
    flat = np.asarray(mask, dtype=bool).ravel(order=order)
    if flat.size == 0:
        return np.zeros(0, dtype=np.uint32)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.uint32)


def from_run_lengths(runs: np.ndarray, shape: tuple[int, int], order: str = "C") -> np.ndarray:
    """Inverse of :func:`run_lengths`: the (H, W) bool mask of ``shape``."""
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, np.asarray(runs, dtype=np.int64)).reshape(shape, order=order)
