"""Connected components of binary images, with no compiled extension.

The reference labels components with a CUDA-only kernel. Two definitions here, one answer
(8-connectivity: a diagonal neighbour joins a component):

* :func:`connected_components` labels every component of one plane in numpy (tests and tools);
* :func:`small_components` finds the pixels of small components with tensor ops on the tensor's
  own device; the image predictor's and the video engine's hole/speck clean-up use it, so it
  runs inside the tracking loop on a GPU without a host sync, and on the CPU alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# (dy, dx) offsets that, applied from every pixel, enumerate each 8-neighbour pair once.
_EIGHT_NEIGHBOUR_HALF = ((0, 1), (1, 0), (1, 1), (1, -1))


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label the 8-connected components of a binary image.

    Args:
        mask: (H, W) array, truthy = pixel belongs to the set being labelled.
    Returns:
        ``(labels, areas)``, both (H, W) int64: ``labels`` is 0 outside the set and a positive
        component id (not necessarily consecutive) inside it; ``areas`` is the pixel count of
        the pixel's component (0 outside the set).
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat_ids = np.arange(h * w, dtype=np.int64).reshape(h, w)
    # Edges between neighbouring set pixels, as (a, b) flat indices.
    src_parts, dst_parts = [], []
    for dy, dx in _EIGHT_NEIGHBOUR_HALF:
        y0, y1 = max(0, -dy), h - max(0, dy)
        x0, x1 = max(0, -dx), w - max(0, dx)
        a = mask[y0:y1, x0:x1] & mask[y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        src_parts.append(flat_ids[y0:y1, x0:x1][a])
        dst_parts.append(flat_ids[y0 + dy : y1 + dy, x0 + dx : x1 + dx][a])
    src = np.concatenate(src_parts)
    dst = np.concatenate(dst_parts)

    # Hook-and-jump union-find (Shiloach-Vishkin style): every round each edge pulls both of its
    # roots down to the smaller one, then pointers are jumped to their roots. The number of
    # rounds grows with log(component size), not with the number of pixels.
    parent = np.arange(h * w, dtype=np.int64)
    while src.size:
        root_a, root_b = parent[src], parent[dst]
        low = np.minimum(root_a, root_b)
        before = parent.copy()
        np.minimum.at(parent, root_a, low)
        np.minimum.at(parent, root_b, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        if np.array_equal(parent, before):
            break
        # Edges whose ends already share a root can never change anything again.
        keep = parent[src] != parent[dst]
        src, dst = src[keep], dst[keep]

    roots = parent.reshape(h, w)
    labels = np.where(mask, roots + 1, 0)
    counts = np.bincount(roots[mask], minlength=h * w)
    areas = np.where(mask, counts[roots], 0)
    return labels, areas


# Above this many label-propagation steps, small_components checks every this many steps whether
# the labels still change (a host sync); the default clean-up sizes (8) never get there.
_STEPS_WITHOUT_SYNC = 32


def small_components(fg: torch.Tensor, max_area: float) -> torch.Tensor:
    """Pixels of ``fg`` whose 8-connected component has at most ``max_area`` pixels, on ``fg``'s device.

    The same answer as ``(labels > 0) & (areas <= max_area)`` from :func:`connected_components`,
    computed with tensor ops only (no compiled extension, no host sync for areas up to 33), so
    it runs on the GPU inside the tracking loop.

    How: every set pixel starts with its own flat index as label and takes the smallest label
    among its 8 neighbours, ``floor(max_area) - 1`` times. A component of at most ``max_area``
    pixels is no more than ``max_area - 1`` steps across, so by then its labels all equal its
    smallest index and no pixel's label differs from a neighbour's. Conversely, if every pixel
    holding some label agrees with all its neighbours, those pixels are closed under adjacency,
    i.e. they are their whole component (labels never leave a component): so counting, per
    label, the pixels and the pixels that still disagree decides "small" exactly, even for big
    components whose labels have not settled.

    Args:
        fg: (..., H, W) bool (anything truthy is cast).
        max_area: component size limit in pixels; below 1 nothing is small.
    Returns:
        A bool tensor shaped like ``fg``.
    """
    fg = fg.bool()
    limit = int(math.floor(max_area))
    if limit < 1 or fg.numel() == 0:
        return torch.zeros_like(fg)
    h, w = fg.shape[-2:]
    planes = fg.reshape(-1, 1, h, w)
    total = planes.numel()
    # Labels are float so max_pool2d can take them; float32 holds every index below 2**24 exactly.
    dtype = torch.float32 if total < 2**24 else torch.float64
    index = torch.arange(total, device=fg.device, dtype=dtype).view(planes.shape)
    inf = float("inf")
    # Added with maximum() after every step, it keeps background pixels at +inf (out of every min).
    barrier = torch.zeros_like(index).masked_fill_(~planes, inf)
    labels = torch.maximum(index, barrier)
    steps = limit - 1
    done = 0
    while done < steps:
        chunk = min(_STEPS_WITHOUT_SYNC, steps - done)
        before = labels
        for _ in range(chunk):
            labels = torch.maximum(_pool3x3(labels, torch.minimum, inf), barrier)
        done += chunk
        if done < steps and torch.equal(labels, before):
            break  # settled early: only reached for areas above _STEPS_WITHOUT_SYNC + 1
    # A set pixel "disagrees" while a set neighbour still holds another label.
    low = _pool3x3(labels, torch.minimum, inf)
    high = _pool3x3(labels.masked_fill(~planes, -inf), torch.maximum, -inf)
    disagrees = planes & ((low != labels) | (high != labels))
    slot = labels.masked_fill(~planes, float(total)).long().flatten()
    sizes = torch.zeros(total + 1, device=fg.device, dtype=torch.int32)
    sizes.scatter_add_(0, slot, torch.ones_like(slot, dtype=torch.int32))
    unsettled = torch.zeros(total + 1, device=fg.device, dtype=torch.int32)
    unsettled.scatter_add_(0, slot, disagrees.flatten().to(torch.int32))
    small = planes.flatten() & (sizes[slot] <= max_area) & (unsettled[slot] == 0)
    return small.view(fg.shape)


def _pool3x3(x: torch.Tensor, pick, pad: float) -> torch.Tensor:
    """``pick`` (torch.minimum / torch.maximum) over each pixel's 3x3 neighbourhood of (B, 1, H, W)
    ``x``, borders padded with ``pad``; done as a row pass and a column pass of shifted views,
    several times faster on CPUs than max_pool2d and no slower on GPUs."""
    p = F.pad(x, (1, 1, 1, 1), value=pad)
    rows = pick(pick(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return pick(pick(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])
