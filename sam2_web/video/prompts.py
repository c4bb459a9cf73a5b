"""Checking user prompts and turning them into the model's input coordinates.

Validation happens before any session state changes, so a bad prompt never leaves a
half-added object behind. The conversions follow the reference step by step (float32 points,
divide by the clip size, multiply by the model's input size; masks resized with antialiasing
and re-binarised) so the numbers the model sees are identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.errors import FrameIndexError, PromptError

_KNOWN_LABELS = (-1, 0, 1, 2, 3)  # padding, negative, positive, box corners


def check_frame(frame_idx: Any, num_frames: int) -> int:
    """Return ``frame_idx`` as an int; raises FrameIndexError if it is not a frame of the clip."""
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
        raise FrameIndexError(f"frame index must be an integer, got {frame_idx!r}")
    if not 0 <= int(frame_idx) < num_frames:
        raise FrameIndexError(
            f"frame {int(frame_idx)} is outside the clip, which has {num_frames} frames (0..{num_frames - 1})"
        )
    return int(frame_idx)


def finite_numbers(value: Any, what: str) -> np.ndarray:
    """``value`` (nested lists, a numpy array or a tensor) as a float64 array of finite numbers:
    the one check of user coordinates, for the video engine and the image predictor.

    Raises:
        PromptError: not numbers, or NaN/infinity among them (named ``what`` in the message).
    """
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PromptError(f"{what} must be numbers, got {value!r}") from exc
    if not np.all(np.isfinite(array)):
        raise PromptError(f"{what} contains NaN or infinite values; pass finite pixel coordinates")
    return array


def _as_float_tensor(value: Any, what: str) -> torch.Tensor:
    return torch.from_numpy(finite_numbers(value, what).astype(np.float32))


def point_prompt(
    points: Any,
    labels: Any,
    box: Any,
    clear_old_points: bool,
    normalize_coords: bool,
    *,
    video_size: tuple[int, int],
    image_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks and/or a box as the model's (1, N, 2) float32 coords and (1, N) int32 labels.

    Args:
        points: (N, 2) or (1, N, 2) x, y; labels: (N,) or (1, N) (1 positive, 0 negative).
        box: 4 numbers x0, y0, x1, y1, prepended as two points labelled 2 and 3.
        clear_old_points: must be True with a box (a box has to come before any click).
        normalize_coords: coordinates are pixels of the clip (``video_size`` = (width, height));
            False means they are already divided by it (0..1).
        image_size: the model's square input size.
    Raises:
        PromptError: missing/mismatched points and labels, bad shapes, unknown labels.
    """
    if (points is None) != (labels is None):
        raise PromptError("give points and labels together (one label per point: 1 = object, 0 = background)")
    if points is None and box is None:
        raise PromptError("give at least points (with labels) or a box")
    if points is None:
        coords = torch.zeros(1, 0, 2, dtype=torch.float32)
        point_labels = torch.zeros(1, 0, dtype=torch.int32)
    else:
        coords = _as_float_tensor(points, "points")
        if coords.dim() == 2:
            coords = coords.unsqueeze(0)
        if coords.dim() != 3 or coords.shape[0] != 1 or coords.shape[2] != 2:
            raise PromptError(f"points must have shape (N, 2) as (x, y) pairs, got {tuple(coords.shape)}")
        try:
            raw_labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            if raw_labels.dtype.kind not in "biuf" or (
                    raw_labels.dtype.kind == "f" and not np.all(np.isfinite(raw_labels) & (raw_labels == np.round(raw_labels)))):
                raise ValueError("not whole numbers")  # 1.7 would silently become 1
            point_labels = torch.as_tensor(raw_labels.astype(np.int64), dtype=torch.int32)
        except (TypeError, ValueError) as exc:
            raise PromptError(f"labels must be whole numbers (1 = object, 0 = background), got {labels!r}") from exc
        if point_labels.dim() == 1:
            point_labels = point_labels.unsqueeze(0)
        if point_labels.shape != coords.shape[:2]:
            raise PromptError(
                f"got {coords.shape[1]} points but labels of shape {tuple(point_labels.shape)}; "
                "give one label per point"
            )
        bad = [int(v) for v in point_labels.flatten() if int(v) not in _KNOWN_LABELS]
        if bad:
            raise PromptError(f"unknown point labels {sorted(set(bad))}; use 1 for object and 0 for background")
    if box is not None:
        if not clear_old_points:
            raise PromptError(
                "a box must come before any click on the frame: add it with clear_old_points=True"
            )
        box_t = _as_float_tensor(box, "box")
        if box_t.numel() != 4:
            raise PromptError(f"box must be 4 numbers x0, y0, x1, y1, got shape {tuple(box_t.shape)}")
        coords = torch.cat([box_t.reshape(1, 2, 2), coords], dim=1)
        point_labels = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), point_labels], dim=1)
    if normalize_coords:
        width, height = video_size
        coords = coords / torch.tensor([width, height])
    return coords * image_size, point_labels


def mask_prompt(mask: Any, image_size: int, device: torch.device) -> torch.Tensor:
    """A (H, W) mask as the model's (1, 1, S, S) float 0/1 input.

    Raises PromptError when the mask is not 2-D or is empty.
    """
    try:
        tensor = mask.detach() if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        tensor = tensor.bool()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PromptError(f"mask must be a 2-D boolean array, got {type(mask).__name__}") from exc
    if tensor.dim() != 2 or tensor.numel() == 0:
        raise PromptError(f"mask must be a 2-D (height, width) array, got shape {tuple(tensor.shape)}")
    full = tensor[None, None].float().to(device)
    if full.shape[-2:] == (image_size, image_size):
        return full
    resized = F.interpolate(full, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return (resized >= 0.5).float()

