"""Connected components of binary images, on the CPU, with no compiled extension.

The reference labels components with a CUDA-only kernel; both our image predictor's and our video
engine's hole/speck clean-up use this instead, so they run everywhere with one definition
(8-connectivity: a diagonal neighbour joins a component).
"""

from __future__ import annotations

import numpy as np

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
