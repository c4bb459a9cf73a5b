"""Slow, obviously-correct definitions the tests compare fast code against."""

from __future__ import annotations

from collections import deque

import numpy as np


def bfs_components(mask):
    """Definition: 8-connected components by breadth-first search, as (labels, areas)."""
    h, w = mask.shape
    labels = np.zeros((h, w), int)
    areas = np.zeros((h, w), int)
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not labels[y, x]:
                n += 1
                queue, members = deque([(y, x)]), []
                labels[y, x] = n
                while queue:
                    a, b = queue.popleft()
                    members.append((a, b))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            c, d = a + dy, b + dx
                            if 0 <= c < h and 0 <= d < w and mask[c, d] and not labels[c, d]:
                                labels[c, d] = n
                                queue.append((c, d))
                for a, b in members:
                    areas[a, b] = len(members)
    return labels, areas
