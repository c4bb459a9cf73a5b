"""Mattes of a clip that do not flicker where nothing moves.

Solved frame by frame, an edge's alpha shimmers: sensor noise changes the colours a little and the
tracked mask's edge hops by a grid cell, so a static hairline's alpha jumps from frame to frame.
``MatteStream`` keeps the previous frame and alpha of one object and, where the picture has not
changed, blends the new alpha towards the old one (an exponential average); where it has changed
the new alpha is used as solved, so motion never lags. Only the new frame's soft pixels (its solved
edge band) are blended: outside it the alpha stays the tracked mask, as ``alpha_matte`` gives it,
so a mask that changes over a static background leaves no trail. It holds one frame and one
alpha, never the clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.matting.alpha import MatteOptions, alpha_matte, as_float, check_image

KEEP = 0.75  # weight of the previous alpha where the picture is static
STATIC_DIFF = 0.03  # mean colour change (0..1) above which a pixel counts as moving
_WINDOW = 5  # px: the change is averaged over this window so single noisy pixels do not count


def static_weight(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per pixel, 1 where two (H, W, 3) frames (uint8, or float in 0..1) agree, falling to 0 at
    ``STATIC_DIFF`` of change."""
    diff = torch.from_numpy(np.abs(as_float(current) - as_float(previous)).mean(axis=2))[None, None]
    local = F.avg_pool2d(diff, _WINDOW, stride=1, padding=_WINDOW // 2, count_include_pad=False)[0, 0].numpy()
    return np.clip(1.0 - local / STATIC_DIFF, 0.0, 1.0)


class MatteStream:
    """Soft alphas of one object through a clip, frame after frame, steady where nothing moves.

    Example::

        stream = MatteStream(mask_resolution=128)
        for frame, mask in zip(frames, masks):
            alpha = stream.update(frame, mask)

    Args:
        options: a ``MatteOptions``; keywords override its fields (as for ``alpha_matte``).
    """

    def __init__(self, options: MatteOptions | None = None, **kwargs: Any) -> None:
        self.options = MatteOptions.of(options, **kwargs)
        self._image: np.ndarray | None = None
        self._alpha: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous frame (call it at a cut, or before a jump to another part of the clip)."""
        self._image = None
        self._alpha = None

    def update(self, image: Any, mask: Any) -> np.ndarray:
        """The alpha of the next frame: ``alpha_matte`` of it, averaged with the last one where static.

        Args:
            image: (H, W, 3) RGB frame (uint8, or float in 0..1).
            mask: (H, W) tracked mask of the object on that frame.
        Returns:
            (H, W) float32 alpha in [0, 1].
        Raises:
            MattingError, MattingUnavailableError: as ``alpha_matte``.
        """
        img = check_image(image)
        alpha = alpha_matte(img, mask, self.options)
        prev_img, prev_alpha = self._image, self._alpha
        self._image = img.copy()  # the caller may reuse its frame buffer
        if prev_img is None or prev_img.shape != img.shape:
            self._alpha = alpha
            return alpha
        changed = (alpha != prev_alpha) & (alpha > 0) & (alpha < 1)
        if changed.any():
            # Only where the alpha differs is there anything to average; work on that box.
            ys, xs = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
            pad = _WINDOW
            rows = slice(max(0, ys[0] - pad), ys[-1] + pad + 1)
            cols = slice(max(0, xs[0] - pad), xs[-1] + pad + 1)
            keep = KEEP * static_weight(prev_img[rows, cols], img[rows, cols]) * changed[rows, cols]
            region = alpha[rows, cols]
            alpha[rows, cols] = region + keep * (prev_alpha[rows, cols] - region)
        self._alpha = alpha
        return alpha
