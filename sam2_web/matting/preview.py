"""A cut-out over a checkerboard: how people see transparency (the app's soft-edge preview)."""

from __future__ import annotations

import numpy as np

LIGHT, DARK = 204, 153  # the usual grey squares of image editors


def checkerboard(height: int, width: int, square: int = 16) -> np.ndarray:
    """(H, W, 3) uint8 grey checkerboard with ``square``-px squares."""
    yy, xx = np.mgrid[0:height, 0:width]
    board = np.where(((yy // square) + (xx // square)) % 2 == 0, LIGHT, DARK).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def cutout_preview(frame_rgb: np.ndarray, alpha: np.ndarray, foreground: np.ndarray | None = None,
                   square: int | None = None) -> np.ndarray:
    """The object cut out by ``alpha`` and laid over a checkerboard.

    Args:
        frame_rgb: (H, W, 3) uint8 frame.
        alpha: (H, W) float alpha in [0, 1] (a bool mask works too: hard edges).
        foreground: (H, W, 3) uint8 decontaminated colour (``estimate_foreground``); None uses the frame.
        square: checker size in px; None scales it with the frame (about 1/40 of the short side, >= 4).
    Returns:
        (H, W, 3) uint8 picture.
    Raises:
        ValueError: alpha or foreground of another size than the frame.
    """
    frame = np.asarray(frame_rgb)[..., :3]
    a = np.asarray(alpha, dtype=np.float32)
    h, w = frame.shape[:2]
    if a.shape != (h, w):
        raise ValueError(f"alpha is {a.shape} but the frame is {(h, w)}")
    colour = frame if foreground is None else np.asarray(foreground)[..., :3]
    if colour.shape != frame.shape:
        raise ValueError(f"foreground is {colour.shape} but the frame is {frame.shape}")
    size = square if square is not None else max(4, min(h, w) // 40)
    board = checkerboard(h, w, size).astype(np.float32)
    out = colour.astype(np.float32) * a[..., None] + board * (1.0 - a[..., None])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
