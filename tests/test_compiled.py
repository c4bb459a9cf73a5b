"""The vos_optimized preset on the CPU at a tiny size: the five compiled networks give the eager
masks, objects padded to a bucket give the unpadded masks, and neither a second session on the
same model nor an object added within a bucket compiles a new graph. (The ``eager`` backend makes
dynamo capture the same full graphs and guards as inductor would, without minutes of C++
compilation; the inductor run and the bf16 bound are CUDA tests.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_web.build import build_sam2_video_predictor
from sam2_web.compiled import CompileSettings, compile_model
from sam2_web.video.agreement import iou, mask_agreement
from sam2_web.video.state import FrameMasks
from tests.clips import moving_disc_frames

OVERRIDES = ["++model.image_size=256", "++model.num_maskmem=3", "++model.max_obj_ptrs_in_encoder=4"]
N_FRAMES = 4
TRACE = CompileSettings(backend="eager", mode=None)
POINTS = ([[30, 24]], [[90, 60]], [[100, 20]], [[60, 80]])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    eager = build_sam2_video_predictor("sam2.1_hiera_t", None, device="cpu", hydra_overrides_extra=OVERRIDES)
    fast = build_sam2_video_predictor("sam2.1_hiera_t", None, device="cpu", hydra_overrides_extra=OVERRIDES,
                                      vos_optimized=TRACE)
    fast.load_state_dict(eager.state_dict())
    return eager, fast


@pytest.fixture(scope="module")
def frames():
    return moving_disc_frames(N_FRAMES, size=(128, 96), radius=20)[0]


@pytest.fixture(scope="module")
def eager_run(models, frames):
    """The eager model's logits and results with 3 objects (the baseline of both tests)."""
    return _track(models[0], frames, 3)


def _track(model, frames, objects):
    with model.open_session(frames, fill_hole_area=8) as session:
        for obj in range(objects):
            session.add_prompt(0, obj + 1, points=POINTS[obj], labels=[1])
        logits = {}
        for f, _, lg in model.propagate_in_video(session):
            logits[f] = lg.clone()
        results = [session.result(f) for f in range(N_FRAMES)]
    return logits, results


def _unique_graphs():
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_compiled_preset_gives_the_eager_masks_and_does_not_recompile(models, frames, eager_run):
    eager, fast = models
    assert fast.compiled.settings == TRACE and eager.object_bucket(3) == 3 and fast.object_bucket(3) == 4
    ref_logits, ref_results = eager_run
    logits, results = _track(fast, frames, 3)  # compiles: image/memory encoders, attention, heads
    assert fast.compiled.graphs > 0
    worst = max((ref_logits[f] - logits[f]).abs().max().item() for f in ref_logits)
    assert worst < 1e-4, worst
    for a, b in zip(ref_results, results):
        np.testing.assert_array_equal(a.masks, b.masks)
    assert any(r.masks.any() and not r.masks.all() for r in ref_results)

    graphs = _unique_graphs()
    _track(fast, frames, 3)  # a second session on the same model
    _track(fast, frames, 4)  # one more object, same bucket (4)
    assert _unique_graphs() == graphs
    assert compile_model(fast) is fast.compiled  # compiled once per model


def test_padding_to_a_bucket_gives_the_unpadded_masks(models, frames, eager_run):
    eager, _ = models
    ref_logits, ref_results = eager_run
    eager.object_bucket = lambda n: 8  # three real rows, five padding rows
    try:
        logits, results = _track(eager, frames, 3)
    finally:
        del eager.object_bucket
    assert max((ref_logits[f] - logits[f]).abs().max().item() for f in ref_logits) < 1e-4
    for a, b in zip(ref_results, results):
        np.testing.assert_array_equal(a.masks, b.masks)


def test_mask_agreement_reports_mean_and_worst():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2] = True
    b = a.copy()
    b[0, 0] = False  # object 1 on frame 1: IoU 4/8
    run_a = [FrameMasks(f, [1, 2], a, np.ones(2, np.float32)) for f in range(2)]
    run_b = [FrameMasks(0, [1, 2], a, np.ones(2, np.float32)), FrameMasks(1, [1, 2], b, np.ones(2, np.float32))]
    agreement = mask_agreement(run_a, run_b)
    assert agreement.mean_iou == {1: 0.75, 2: 1.0} and agreement.frames == 2
    assert (agreement.worst_iou, agreement.worst_frame, agreement.worst_obj) == (0.5, 1, 1)
    assert iou(a[1], b[1]) == 1.0
    with pytest.raises(ValueError):
        mask_agreement(run_a, [])
