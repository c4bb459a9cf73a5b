"""The arithmetic of automatic mask generation ("segment everything"): where the point prompts go,
which crops of the picture are searched, how candidate masks are scored, boxed and de-duplicated.

Every function reproduces the reference's numbers exactly (``sam2==1.1.0``'s ``sam2/utils/amg.py``
and the ``torchvision`` box operations it calls), because the records a user gets — their count,
their order and their masks — follow from these small decisions. Nothing here needs torchvision,
OpenCV or a compiled extension.
"""

from __future__ import annotations

import math
from itertools import product
from typing import List, Sequence, Tuple

import numpy as np
import torch

# The reference's torchvision NMS re-sorts what it keeps with torch's (unstable) sort once there are
# more than this many box coordinates on the CPU (100 000 elsewhere); equal scores then come out in
# that sort's order, so we sort the same way to give the records in the same order.
_RESORT_ABOVE = {"cpu": 4000}
_RESORT_ABOVE_ELSEWHERE = 100_000


def point_grid(n_per_side: int) -> np.ndarray:
    """``n_per_side**2`` points spread evenly over [0, 1]², each in the middle of its cell.

    Returns:
        (n_per_side², 2) float64 (x, y), row by row from the top-left.
    """
    half_cell = 1 / (2 * n_per_side)
    side = np.linspace(half_cell, 1 - half_cell, n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    """One :func:`point_grid` per crop layer (layer 0 = the whole picture); layer ``i`` has
    ``int(n_per_side / scale_per_layer**i)`` points per side."""
    return [point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def crop_boxes(im_size: Tuple[int, int], n_layers: int, overlap_ratio: float) -> Tuple[List[List[int]], List[int]]:
    """The picture itself, then for layer ``i`` (1-based) a ``2**i`` x ``2**i`` tiling of
    overlapping crops.

    Args:
        im_size: (height, width) of the picture.
        n_layers: crop layers beyond the whole picture.
        overlap_ratio: overlap of neighbouring first-layer crops as a fraction of the short side
            (later layers scale it down with the crop size).
    Returns:
        ``(boxes, layers)``: ``[x0, y0, x1, y1]`` (x1, y1 exclusive) and the layer of each.
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + im_w) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + im_h) / per_side))
        xs = [int((crop_w - overlap) * i) for i in range(per_side)]
        ys = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(xs, ys):  # column by column, as the reference lists them
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of a mask cut at ``threshold + offset`` with the same mask cut at ``threshold - offset``.

    The first is always inside the second, so the IoU is the ratio of their pixel counts.

    Args:
        logits: (N, H, W) mask logits.
    Returns:
        (N,) float32 (NaN where both are empty).
    """
    inner = (logits > (threshold + offset)).flatten(1).sum(1, dtype=torch.int32)
    outer = (logits > (threshold - offset)).flatten(1).sum(1, dtype=torch.int32)
    return inner / outer


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Boxes around (N, H, W) bool masks as ``[x0, y0, x1, y1]`` with x1, y1 the last pixel
    inside (not one past it); ``[0, 0, 0, 0]`` for an empty mask.

    Returns:
        (N, 4) int64 on the masks' device.
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    # Last and first occupied row/column; h/w stand in for "none" so min() skips empty lines.
    y1 = torch.where(rows, ys, -1).max(dim=1).values
    y0 = torch.where(rows, ys, h).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values
    x0 = torch.where(cols, xs, w).min(dim=1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def near_crop_edge(boxes: torch.Tensor, crop_box: Sequence[int], image_box: Sequence[int],
                   atol: float = 20.0) -> torch.Tensor:
    """Which boxes (in crop coordinates) come within ``atol`` pixels of an edge of their crop
    that is not also an edge of the picture: such masks are likely cut off by the crop.

    Returns:
        (N,) bool.
    """
    offset = torch.tensor([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], device=boxes.device)
    placed = (boxes + offset).float()
    crop_t = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)[None]
    image_t = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)[None]
    at_crop = torch.isclose(placed, crop_t, atol=atol, rtol=0)
    at_image = torch.isclose(placed, image_t, atol=atol, rtol=0)
    return (at_crop & ~at_image).any(dim=1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(x1 - x0) * (y1 - y0) of (N, 4) boxes, in their dtype."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: visit boxes by falling score (ties in index order) and drop
    every later box whose IoU with a kept one is above ``iou_threshold``.

    Args:
        boxes: (N, 4) ``[x0, y0, x1, y1]``; the IoU is computed in float32.
        scores: (N,) float.
    Returns:
        (N_kept,) int64 indices on the CPU, by falling score — ordered among equal scores as the
        reference orders them (see the module's ``_RESORT_ABOVE``).
    """
    n = int(boxes.shape[0])
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    device = boxes.device
    order = torch.sort(scores.detach().cpu(), descending=True, stable=True).indices
    b = boxes.detach().cpu().float()[order].numpy()
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x1 - x0) * (y1 - y0)
    zero = np.float32(0)
    suppressed = np.zeros(n, dtype=bool)
    kept = []
    for i in range(n):
        if suppressed[i]:
            continue
        kept.append(i)
        rest = slice(i + 1, n)
        w = np.maximum(zero, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(zero, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: 0/0 never suppresses
            iou = inter / (areas[i] + areas[rest] - inter)
        # Compare in double, as the reference's kernel does (float IoU against a double threshold).
        suppressed[rest] |= iou.astype(np.float64) > iou_threshold
    keep = order[torch.as_tensor(kept, dtype=torch.int64)]
    if 4 * n > _RESORT_ABOVE.get(device.type, _RESORT_ABOVE_ELSEWHERE):
        keep = torch.sort(keep).values.to(scores.device)
        keep = keep[scores[keep].sort(descending=True)[1]].cpu()
    return keep
