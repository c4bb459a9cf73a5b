"""Mask post-processing on any device: hole filling, sprinkle removal, non-overlap.

The reference fills holes with a CUDA-only connected-components kernel and silently skips the
step when the kernel is missing (always, on CPU and Apple GPUs). We label components on the CPU
with a vectorised union-find instead, so the step runs everywhere with the same definition:

* components use 8-connectivity (a diagonal neighbour joins a component), as the reference's
  kernel does;
* a *hole* is a connected component of background (score <= 0) with area <= ``max_area``
  low-res pixels; its scores become 0.1 (just above the threshold);
* a *sprinkle* is a connected component of foreground (score > 0, after holes are filled)
  with area <= ``max_area``; its scores become -0.1. The reference 1.1.0 only fills holes,
  so sprinkle removal is a separate switch.
"""

from __future__ import annotations

import numpy as np
import torch

from sam2_web.components import connected_components

HOLE_SCORE = 0.1
SPRINKLE_SCORE = -0.1

def _small_components(mask: np.ndarray, max_area: int) -> np.ndarray:
    labels, areas = connected_components(mask)
    return (labels > 0) & (areas <= max_area)


def fill_holes_and_sprinkles(
    scores: torch.Tensor, max_area: int, *, remove_sprinkles: bool = True
) -> torch.Tensor:
    """Fill small background holes and (optionally) delete small foreground specks.

    Args:
        scores: (B, 1, H, W) mask logits (any device, float); usually the low-res masks.
        max_area: components up to this many pixels are changed; 0 returns ``scores`` as is.
        remove_sprinkles: also set small foreground components to -0.1.
    Returns:
        A new tensor like ``scores`` (same device and dtype).
    Raises:
        ValueError: if ``scores`` is not 4-D with one channel, or ``max_area`` is negative.
    """
    if max_area < 0:
        raise ValueError(f"fill_hole_area must be >= 0, got {max_area}")
    if scores.dim() != 4 or scores.size(1) != 1:
        raise ValueError(f"expected mask scores of shape (B, 1, H, W), got {tuple(scores.shape)}")
    if max_area == 0:
        return scores
    cpu = scores.detach().float().cpu().numpy()
    out = cpu.copy()
    for b in range(cpu.shape[0]):
        plane = out[b, 0]
        holes = _small_components(plane <= 0, max_area)
        plane[holes] = HOLE_SCORE
        if remove_sprinkles:
            sprinkles = _small_components(plane > 0, max_area)
            plane[sprinkles] = SPRINKLE_SCORE
    return torch.from_numpy(out).to(device=scores.device, dtype=scores.dtype)


def non_overlapping(scores: torch.Tensor, suppressed_max: float = -10.0) -> torch.Tensor:
    """Keep, at every pixel, only the highest-scoring object as foreground.

    Args:
        scores: (N, 1, H, W) logits of N objects on one frame.
        suppressed_max: the losers' scores are clamped to at most this value
            (sigmoid(-10) ~ 4.5e-5, i.e. firmly background).
    Returns:
        A tensor like ``scores``; unchanged when N <= 1.
    """
    if scores.size(0) <= 1:
        return scores
    winner = scores.argmax(dim=0, keepdim=True)
    index = torch.arange(scores.size(0), device=scores.device).view(-1, 1, 1, 1)
    return torch.where(winner == index, scores, scores.clamp(max=suppressed_max))
