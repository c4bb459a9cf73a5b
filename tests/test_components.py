"""Small connected components in torch (the clean-up's device path) against the BFS definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles import bfs_components
from sam2_web.components import small_components


def _expected(mask: np.ndarray, area: float) -> np.ndarray:
    labels, areas = bfs_components(mask)
    return (labels > 0) & (areas <= area)


def _snake(h: int, w: int) -> np.ndarray:
    """One long 1-pixel-wide path: labels settle only after ~h*w/2 steps."""
    mask = np.zeros((h, w), bool)
    mask[::2] = True
    for row in range(1, h, 2):
        mask[row, w - 1 if row % 4 == 1 else 0] = True
    return mask


@pytest.mark.parametrize("area", [1, 2, 3, 8, 8.5, 40])
def test_small_components_match_the_definition_on_random_masks(area):
    rng = np.random.default_rng(int(area * 10))
    for _ in range(12):
        h, w = rng.integers(1, 28, size=2)
        mask = rng.random((h, w)) < rng.random()
        got = small_components(torch.from_numpy(mask), area).numpy()
        np.testing.assert_array_equal(got, _expected(mask, area))


def test_big_components_with_unsettled_labels_are_not_small():
    # A line and a snake far longer than the area: after area-1 steps many labels are held by
    # only a few pixels, yet nothing of them is small.
    line = np.zeros((5, 60), bool)
    line[2, 3:57] = True
    line[0, 0] = True  # a real speck
    for mask in (line, _snake(21, 17), ~_snake(21, 17)):
        for area in (2, 8, 20):
            got = small_components(torch.from_numpy(mask), area).numpy()
            np.testing.assert_array_equal(got, _expected(mask, area))
    assert small_components(torch.from_numpy(line), 8).numpy()[0, 0]


def test_batches_keep_planes_apart_and_large_areas_settle():
    rng = np.random.default_rng(3)
    masks = rng.random((3, 2, 19, 23)) < 0.5
    masks[0, 0] = True  # one 437-pixel component, touching the next plane in flat order
    got = small_components(torch.from_numpy(masks), 100).numpy()
    assert got.shape == masks.shape
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(got[i, j], _expected(masks[i, j], 100))
    assert not small_components(torch.from_numpy(masks), 0).any()
