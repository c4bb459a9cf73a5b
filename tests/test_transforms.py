"""Image pre-processing, prompt coordinate mapping and mask post-processing of the image predictor."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from oracles import bfs_components
from sam2_web import transforms as T
from sam2_web.components import connected_components


@pytest.mark.parametrize("hw", [(480, 640), (1500, 900), (37, 2000), (1024, 1024)])
def test_preprocess_matches_reference_torchvision_pipeline(hw):
    from sam2.utils.transforms import SAM2Transforms

    img = np.random.default_rng(hw[0]).integers(0, 256, size=hw + (3,), dtype=np.uint8)
    ref = SAM2Transforms(resolution=1024, mask_threshold=0.0)(img)
    ours = T.preprocess_image(img, 1024)
    diff = (ref - ours).abs().max().item()
    print(f"preprocess {hw}: max abs diff {diff:.3g}")
    assert ours.shape == (3, 1024, 1024) and diff <= 1e-6


def test_coords_and_boxes_map_to_the_model_grid():
    pts = torch.tensor([[[320.0, 240.0], [0.0, 480.0]]])
    out = T.transform_coords(pts, 1024, orig_hw=(480, 640))
    assert torch.allclose(out, torch.tensor([[[512.0, 512.0], [0.0, 1024.0]]]))
    rel = T.transform_coords(torch.tensor([[0.25, 0.5]]), 1024, normalize=False)
    assert torch.allclose(rel, torch.tensor([[256.0, 512.0]]))
    boxes = T.transform_boxes(torch.tensor([[64.0, 48.0, 640.0, 480.0]]), 512, orig_hw=(480, 640))
    assert boxes.shape == (1, 2, 2)
    assert torch.allclose(boxes, torch.tensor([[[51.2, 51.2], [512.0, 512.0]]]))
    with pytest.raises(ValueError):
        T.transform_coords(pts, 1024, orig_hw=None, normalize=True)


def test_connected_component_areas_match_a_plain_flood_fill():
    rng = np.random.default_rng(0)
    fg = rng.random((3, 1, 24, 31)) > 0.55
    for i in range(3):
        _, areas = connected_components(fg[i, 0])
        np.testing.assert_array_equal(areas, bfs_components(fg[i, 0])[1])


def test_small_holes_filled_and_specks_removed():
    logits = torch.full((1, 1, 32, 32), -5.0)
    logits[..., 4:20, 4:20] = 5.0
    logits[..., 8:10, 8:10] = -5.0  # a 4-pixel hole: filled
    logits[..., 12:17, 12:17] = -5.0  # a 25-pixel hole: kept
    logits[..., 26, 26] = 5.0  # a 1-pixel speck: removed
    out = T.fill_holes_and_sprinkles(logits, 0.0, max_hole_area=8, max_sprinkle_area=2)
    assert (out[..., 8:10, 8:10] > 0).all()
    assert (out[..., 12:17, 12:17] < 0).all()
    assert out[..., 26, 26] < 0
    assert torch.equal(out[..., 4:8, 4:20], logits[..., 4:8, 4:20])  # untouched elsewhere
    assert torch.equal(T.fill_holes_and_sprinkles(logits, 0.0, 0, 0), logits)


def test_postprocess_upscales_to_original_size():
    low = torch.randn(2, 3, 64, 64)
    out = T.postprocess_masks(low, (100, 150))
    assert out.shape == (2, 3, 100, 150) and out.dtype == torch.float32
