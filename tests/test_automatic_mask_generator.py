"""Segment everything: ``sam2_web.SAM2AutomaticMaskGenerator`` gives the reference's records.

The reference (``sam2==1.1.0``) and ours share seeded random weights (SAM 2.1 tiny at 256 px)
whose mask logits are sharpened (``tests/parity.py: sharpen_masks``), on a picture of two bright
squares: the masks follow the squares with holes and specks, so every stage decides something —
the predicted-IoU and stability filters, box NMS within a crop and between crops, the crop-edge
filter, small-region clean-up (the reference gets an OpenCV stand-in for its CUDA kernel) and the
m2m refinement. Compared: the number of records, each mask pixel for pixel, every box, point and
crop, and the scores within 1e-4; the test also asserts that masks survive and that each stage
changed something.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from sam2_web import amg
from sam2_web.errors import CancelledError, PromptError
from tests.parity import make_pair, opencv_connected_components, sharpen_masks

TOL = 1e-4
SIZE = 256
H, W = 240, 320
# (y0, y1, x0, x1): on the left and right of the band where the first-layer crops of a 240x320
# picture overlap, so the two crops of each side hold the same square away from their edges (a
# duplicate for the NMS between crops), and the whole picture holds both.
SQUARES = ((102, 138, 25, 95), (102, 138, 225, 295))
BASE = dict(points_per_side=4, points_per_batch=5, pred_iou_thresh=0.5, stability_score_thresh=0.5,
            crop_n_layers=1)
CASES = {
    "crops+nms+clean-up": dict(min_mask_region_area=4),
    "m2m+coco_rle": dict(min_mask_region_area=4, use_m2m=True, output_mode="coco_rle"),
    "single mask+uncompressed_rle": dict(multimask_output=False, output_mode="uncompressed_rle",
                                         pred_iou_thresh=0.3),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def squares_picture() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for y0, y1, x0, x1 in SQUARES:
        img[y0:y1, x0:x1] = 230
    return img


@pytest.fixture(scope="module")
def models(parity_dir):
    """(reference, ours) with the same sharpened random weights (copies: make_pair's are shared)."""
    pair = make_pair("sam2.1_hiera_t", (f"++model.image_size={SIZE}",), workdir=parity_dir)
    ref, ours = copy.deepcopy(pair.ref), copy.deepcopy(pair.ours)
    for model in (ref, ours):
        sharpen_masks(model)
    return ref, ours


@pytest.fixture
def reference_cleanup(monkeypatch):
    import sam2.utils.misc

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", opencv_connected_components)


def _reference(model, **kwargs):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Reference

    gen = Reference(model, **kwargs)
    gen.predictor._bb_feat_sizes = [(SIZE // 4,) * 2, (SIZE // 8,) * 2, (SIZE // 16,) * 2]
    return gen


def _mask(record) -> np.ndarray:
    seg = record["segmentation"]
    if isinstance(seg, np.ndarray):
        return seg
    if isinstance(seg["counts"], str):
        from sam2_web.export.rle import decode

        return decode(seg)
    from sam2.utils.amg import rle_to_mask

    return rle_to_mask(seg)


class _NmsCalls:
    """Records (candidates in, kept) of every NMS call of our generator."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = amg.nms

        def counted(boxes, scores, thr):
            keep = real(boxes, scores, thr)
            self.calls.append((len(boxes), len(keep), thr))
            return keep

        monkeypatch.setattr(amg, "nms", counted)


@pytest.mark.parametrize("case", list(CASES))
def test_records_equal_the_reference(case, models, reference_cleanup, monkeypatch):
    from sam2_web import SAM2AutomaticMaskGenerator

    ref_model, our_model = models
    kwargs = {**BASE, **CASES[case]}
    image = squares_picture()
    expected = _reference(ref_model, **kwargs).generate(image)
    nms_calls = _NmsCalls(monkeypatch)
    got = SAM2AutomaticMaskGenerator(our_model, **kwargs).generate(image)

    print(f"{case}: {len(got)} masks; NMS (in, kept): {[c[:2] for c in nms_calls.calls]}")
    assert len(got) == len(expected) >= 3
    worst, informative = 0.0, 0
    for k, (a, b) in enumerate(zip(expected, got)):
        assert set(a) == set(b)
        if kwargs.get("output_mode", "binary_mask") == "binary_mask":
            assert isinstance(b["segmentation"], np.ndarray) and b["segmentation"].dtype == bool
        else:
            assert b["segmentation"] == a["segmentation"], k  # the same RLE, string or counts
        mask = _mask(b)
        assert np.array_equal(_mask(a), mask), k
        informative += 0 < mask.sum() < mask.size  # foreground and background
        for key in ("area", "bbox", "point_coords", "crop_box"):
            assert a[key] == b[key], (k, key)
        for key in ("predicted_iou", "stability_score"):
            worst = max(worst, abs(a[key] - b[key]))
    assert worst <= TOL
    assert informative >= 2
    # Every stage had work: masks from crops, NMS that dropped candidates within a crop and
    # between crops (one mask per point leaves too few candidates for the first).
    assert {tuple(r["crop_box"]) for r in got} > {(0.0, 0.0, float(W), float(H))}
    if not kwargs.get("multimask_output", True):
        return
    within = [c for c in nms_calls.calls if c[2] == kwargs.get("box_nms_thresh", 0.7)][:-1]
    assert any(n_in > kept for n_in, kept, _ in within)
    n_in, kept, _ = nms_calls.calls[-1]  # between crops
    assert n_in > kept


def test_cleanup_and_m2m_change_the_masks(models):
    """The stages the parity cases turn on are not no-ops on this picture."""
    from sam2_web import SAM2AutomaticMaskGenerator

    _, ours = models
    image = squares_picture()

    def run(**extra):
        return SAM2AutomaticMaskGenerator(ours, **{**BASE, **extra}).generate(image)

    plain, cleaned, refined = run(), run(min_mask_region_area=4), run(min_mask_region_area=4, use_m2m=True)
    assert plain and cleaned and refined
    assert [r["area"] for r in plain] != [r["area"] for r in cleaned]
    assert [r["predicted_iou"] for r in cleaned] != [r["predicted_iou"] for r in refined]


def test_building_blocks_equal_the_reference():
    """Grids, crops, boxes, stability and NMS, on inputs made to hit their edge cases."""
    from sam2.utils import amg as ref
    from torchvision.ops import batched_nms

    for n, layers, scale in ((32, 0, 1), (5, 2, 2), (7, 3, 1)):
        ours, theirs = amg.layer_point_grids(n, layers, scale), ref.build_all_layer_point_grids(n, layers, scale)
        assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    for size in ((240, 320), (1080, 1920), (999, 17)):
        for layers in (0, 1, 2):
            assert amg.crop_boxes(size, layers, 512 / 1500) == ref.generate_crop_boxes(size, layers, 512 / 1500)

    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 30, 40, generator=gen) > 0.97
    masks[0] = False  # empty
    masks[1, 5, 7] = True
    assert torch.equal(amg.masks_to_boxes(masks), ref.batched_mask_to_box(masks))
    logits = torch.randn(5, 30, 40, generator=gen) * 3
    logits[0] = -5  # empty at both cut-offs: NaN in both
    assert torch.equal(amg.stability_score(logits, 0.5, 1.0).isnan(), ref.calculate_stability_score(logits, 0.5, 1.0).isnan())
    assert torch.allclose(amg.stability_score(logits, 0.5, 1.0)[1:], ref.calculate_stability_score(logits, 0.5, 1.0)[1:], rtol=0, atol=0)

    for n in (0, 7, 300, 1100):  # above 1000 boxes the reference re-sorts what it keeps
        for ties in (False, True):
            xy = torch.randint(0, 200, (n, 2), generator=gen)
            boxes = torch.cat([xy, xy + torch.randint(0, 80, (n, 2), generator=gen)], 1).float()
            boxes[:2] = 0  # empty boxes: IoU 0/0
            scores = (torch.randint(0, 3, (n,), generator=gen).float() if ties else torch.rand(n, generator=gen))
            for thr in (0.3, 0.7):
                assert torch.equal(amg.nms(boxes, scores, thr), batched_nms(boxes, scores, torch.zeros(n), thr))


def test_runs_on_edgetam_and_efficienttam():
    """Every family runs through the same generator; each record is one of the masks our image
    predictor gives for that record's point (with the same clean-up)."""
    from sam2_web import SAM2AutomaticMaskGenerator, SAM2ImagePredictor
    from sam2_web.build import build_sam2

    image = squares_picture()
    for name, overrides in (("edgetam", ["++model.image_size=256"]), ("efficienttam_ti_2", ["++model.image_size=128"])):
        torch.manual_seed(0)
        model = build_sam2(name, None, device="cpu", hydra_overrides_extra=overrides)
        sharpen_masks(model)
        gen = SAM2AutomaticMaskGenerator(model, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                         box_nms_thresh=0.95, min_mask_region_area=2)
        records = gen.generate(image)
        assert records, name
        pred = SAM2ImagePredictor(model, max_hole_area=2, max_sprinkle_area=2)
        pred.set_image(image)
        for r in records:
            masks, ious, _ = pred.predict(point_coords=np.array(r["point_coords"]), point_labels=np.array([1]))
            match = [k for k in range(len(masks)) if np.array_equal(masks[k].astype(bool), r["segmentation"])]
            assert match, (name, r["point_coords"])
            assert abs(float(ious[match[0]]) - r["predicted_iou"]) <= TOL


def test_progress_cancel_and_bad_input(models):
    from sam2_web import SAM2AutomaticMaskGenerator

    _, ours = models
    gen = SAM2AutomaticMaskGenerator(ours, points_per_side=2, points_per_batch=3, crop_n_layers=1)
    seen = []
    gen.generate(squares_picture(), progress=lambda done, total: seen.append((done, total)))
    # 5 crops: one encoder pass and 2 decoder batches (4 points, 3 at a time) each.
    assert seen == [(k, 15) for k in range(1, 16)]

    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        gen.generate(squares_picture(), cancel=stop)
    with pytest.raises(PromptError, match="uint8"):
        gen.generate(squares_picture().astype(np.float32))
    with pytest.raises(PromptError, match="RGB"):
        gen.generate(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="exactly one of points_per_side"):
        SAM2AutomaticMaskGenerator(ours, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        SAM2AutomaticMaskGenerator(ours, output_mode="png")
    with pytest.raises(ValueError, match="needs 2"):
        SAM2AutomaticMaskGenerator(ours, points_per_side=None, point_grids=[amg.point_grid(4)], crop_n_layers=1)


def test_a_picture_without_candidates_gives_no_records(models):
    from sam2_web import SAM2AutomaticMaskGenerator

    _, ours = models
    gen = SAM2AutomaticMaskGenerator(ours, points_per_side=2, pred_iou_thresh=0.99)
    assert gen.generate(squares_picture()) == []
