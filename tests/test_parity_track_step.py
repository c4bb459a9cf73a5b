"""SAM2Base's tracking step matches the reference's, frame by frame, on a synthetic sequence.

Both models get identical random weights and the same frames and prompts; each keeps its own
memory of earlier frames (the reference in its output dict, ours in a ``MemorySource``); the
reference's dicts and tuples are converted to our typed outputs by ``tests/parity.py``. Covered: a first prompted frame, tracked
frames (memory attention over spatial memories + object pointers), a later mask-prompted frame,
reverse tracking, the cond-frame cap and temporal stride, a bounded memory bank that holds only
the frames the model reads, and bf16-stored memories with no float pointers (where the reference
crashes on CPU), and the SAM heads' outputs field by field.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sam2_web import transforms as T
from sam2_web.modeling.sam2_base import PointInputs
from tests.parity import (
    KeepAllMemory,
    heads_from_reference,
    make_pair,
    points_as_reference,
    step_as_reference,
    step_from_reference,
)

SIZE = 256  # reduced image_size keeps each frame cheap; every code path is the same as at 1024
OVERRIDES = (f"++model.image_size={SIZE}",)
TOL = 1e-4
NUM_FRAMES = 7
COMPARED = ("pred_masks", "pred_masks_high_res", "obj_ptr", "object_score_logits", "maskmem_features")


def _frames(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(NUM_FRAMES):
        img = rng.integers(0, 60, size=(120, 160, 3), dtype=np.uint8)
        img[30 + i * 2 : 80 + i * 2, 40 + i * 3 : 100 + i * 3] = (220, 120, 40)  # a moving block
        frames.append(img)
    return frames


def _features(model, frames):
    out = []
    with torch.no_grad():
        for img in frames:
            x = T.preprocess_image(img, SIZE)[None]
            # Ours names it as a public method; the reference's is private.
            prepare = getattr(model, "prepare_backbone_features", None) or model._prepare_backbone_features
            _, feats, pos, sizes = prepare(model.forward_image(x))
            out.append((feats, pos, sizes))
    return out


def _points(batch: int = 1) -> PointInputs:
    coords = torch.tensor([[[60.0, 100.0], [150.0, 40.0]]]).repeat(batch, 1, 1)
    labels = torch.tensor([[1, 0]], dtype=torch.int32).repeat(batch, 1)
    return PointInputs(coords, labels)


def _step(model, memory, frame, is_init, feats, points, masks, num_frames=NUM_FRAMES, reverse=False):
    """One ``track_step`` of ours (``memory`` a MemorySource) or of the reference (``memory`` its
    output dict), returned as our ``TrackStepOutput`` together with what to store."""
    f, p, s = feats
    if isinstance(memory, dict):
        out = model.track_step(frame, is_init, f, p, s, points_as_reference(points), masks, memory, num_frames, reverse)
        return step_from_reference(out), out
    out = model.track_step(frame, is_init, f, p, s, points, masks, memory, num_frames, reverse)
    return out, out


def _run(model, feats, plan, memory, num_frames=NUM_FRAMES):
    """Run ``plan`` [(frame, kind, reverse)] and return each step's output."""
    outs = []
    with torch.no_grad():
        for frame, kind, reverse in plan:
            points = _points() if kind in ("init", "points") else None
            masks = None
            if kind == "mask":
                masks = torch.zeros(1, 1, SIZE, SIZE)
                masks[..., 80:160, 60:200] = 1.0
            out, stored = _step(model, memory, frame, kind == "init", feats[frame], points, masks, num_frames, reverse)
            cond = kind in ("init", "points", "mask")
            if isinstance(memory, dict):
                memory["cond_frame_outputs" if cond else "non_cond_frame_outputs"][frame] = stored
            else:
                memory.store(frame, stored, cond=cond)
            outs.append(out)
    return outs


def _worst(ref_outs, our_outs, names=COMPARED) -> float:
    worst = 0.0
    for r, o in zip(ref_outs, our_outs, strict=True):
        for name in names:
            worst = max(worst, (getattr(r, name).float() - getattr(o, name).float()).abs().max().item())
    return worst


def _empty():
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


FORWARD_PLAN = [(0, "init", False)] + [(t, "track", False) for t in range(1, 5)] + [(5, "mask", False), (6, "track", False)]


@pytest.fixture(scope="module", params=["sam2.1_hiera_t", "sam2_hiera_t"])
def tracked(request, parity_dir):
    pair = make_pair(request.param, OVERRIDES, workdir=parity_dir)
    frames = _frames()
    return pair, _features(pair.ref, frames), _features(pair.ours, frames)


def test_forward_tracking_matches_reference(tracked):
    pair, ref_feats, our_feats = tracked
    ref_outs = _run(pair.ref, ref_feats, FORWARD_PLAN, _empty())
    our_outs = _run(pair.ours, our_feats, FORWARD_PLAN, KeepAllMemory())
    worst = _worst(ref_outs, our_outs)
    print(f"forward tracking: worst abs diff {worst:.3g}")
    assert worst <= TOL


def test_reverse_tracking_and_limits_match_reference(tracked):
    pair, ref_feats, our_feats = tracked
    plan = [(6, "init", True), (5, "track", True), (4, "track", True), (2, "points", False),
            (3, "track", True), (1, "track", False), (0, "track", True)]
    saved = {}
    for model in (pair.ref, pair.ours):
        saved[id(model)] = (model.max_cond_frames_in_attn, model.memory_temporal_stride_for_eval)
    try:
        for model in (pair.ref, pair.ours):
            model.max_cond_frames_in_attn = 2
            model.memory_temporal_stride_for_eval = 2
        ref_outs = _run(pair.ref, ref_feats, plan, _empty())
        our_outs = _run(pair.ours, our_feats, plan, KeepAllMemory())
    finally:
        for model in (pair.ref, pair.ours):
            model.max_cond_frames_in_attn, model.memory_temporal_stride_for_eval = saved[id(model)]
    worst = _worst(ref_outs, our_outs)
    print(f"reverse/stride-2/2-cond-frames tracking: worst abs diff {worst:.3g}")
    assert worst <= TOL


class _WindowMemory(KeepAllMemory):
    """A MemorySource that keeps only what the model says it will read next (forward tracking)."""

    def __init__(self, model, num_frames):
        super().__init__()
        self.model, self.num_frames = model, num_frames

    def store(self, frame, out, cond):
        super().store(frame, out, cond)
        nxt = frame + 1
        keep = {t for _, t in self.model.memory_frame_indices(nxt)}
        keep |= {t for _, t in self.model.obj_ptr_frame_indices(nxt, self.num_frames)}
        for t in list(self.non_cond):
            if t not in keep:
                del self.non_cond[t]


def test_bounded_memory_bank_gives_same_result(tracked):
    pair, _, our_feats = tracked
    model = pair.ours
    plan = [(0, "init", False)] + [(t, "track", False) for t in range(1, NUM_FRAMES)]
    bank = _WindowMemory(model, NUM_FRAMES)
    # With a pointer window of 3 and 3 memories, the bank must drop frames as it goes.
    saved = model.num_maskmem, model.max_obj_ptrs_in_encoder
    model.num_maskmem, model.max_obj_ptrs_in_encoder = 3, 3
    try:
        full = _run(model, our_feats, plan, KeepAllMemory())
        bounded = _run(model, our_feats, plan, bank)
    finally:
        model.num_maskmem, model.max_obj_ptrs_in_encoder = saved
    assert len(bank.non_cond) < NUM_FRAMES - 1
    worst = _worst(full, bounded)
    print(f"bounded bank vs full dict: worst abs diff {worst:.3g}")
    assert worst == 0.0


def test_bf16_memories_without_pointers_do_not_crash(tracked):
    """The reference stores memories as bf16; a frame whose only memory is a future prompted frame
    (so no float pointer is concatenated) used to hit 'mat1 and mat2 must have the same dtype'."""
    pair, ref_feats, our_feats = tracked
    with torch.no_grad():
        cond, _ = _step(pair.ours, KeepAllMemory(), 6, True, our_feats[6], _points(), None)
    stored = dataclasses.replace(cond, maskmem_features=cond.maskmem_features.to(torch.bfloat16))
    upcast = dataclasses.replace(stored, maskmem_features=stored.maskmem_features.float())
    memory = KeepAllMemory()
    memory.store(6, stored, cond=True)
    with torch.no_grad():
        ours, _ = _step(pair.ours, memory, 3, False, our_feats[3], None, None)
        ref_memory = {"cond_frame_outputs": {6: step_as_reference(upcast)}, "non_cond_frame_outputs": {}}
        ref, _ = _step(pair.ref, ref_memory, 3, False, ref_feats[3], None, None)
    worst = _worst([ref], [ours])
    print(f"bf16-stored memory: worst abs diff vs reference on upcast memory {worst:.3g}")
    assert worst <= TOL


HEADS_COMPARED = ("low_res_multimasks", "high_res_multimasks", "ious", "low_res_masks", "high_res_masks",
                  "obj_ptr", "object_score_logits")


def _heads_input(feats):
    """A frame's (vision_feats, _, feat_sizes) as the heads take them: the stride-16 map and the
    higher-resolution maps."""
    tokens, _, sizes = feats
    maps = [x.permute(1, 2, 0).view(1, -1, *hw) for x, hw in zip(tokens, sizes)]
    return maps[-1], maps[:-1]


@pytest.mark.parametrize("multimask", [False, True])
def test_sam_heads_outputs_match_reference_by_name(tracked, multimask):
    """Every field of our heads output is the reference's value at that name (with multimask
    output the best candidate is picked, so the picked masks are not the first ones)."""
    pair, ref_feats, our_feats = tracked
    points = PointInputs(torch.tensor([[[60.0, 100.0]]]), torch.tensor([[1]], dtype=torch.int32))
    with torch.no_grad():
        pix, high_res = _heads_input(our_feats[0])
        ours = pair.ours._forward_sam_heads(pix, points, None, high_res, multimask)
        ref_pix, ref_high_res = _heads_input(ref_feats[0])
        ref = heads_from_reference(
            pair.ref._forward_sam_heads(ref_pix, points_as_reference(points), None, ref_high_res, multimask)
        )
    assert ours.ious.shape == (1, 3 if multimask else 1)
    worst = _worst([ref], [ours], HEADS_COMPARED)
    print(f"SAM heads (multimask={multimask}): worst abs diff {worst:.3g}")
    assert worst <= TOL


def test_mask_as_output_matches_reference_by_name(tracked):
    """A mask prompt taken as the output fills the same seven fields as the reference's tuple."""
    pair, ref_feats, our_feats = tracked
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 80:160, 60:200] = 1.0
    with torch.no_grad():
        pix, high_res = _heads_input(our_feats[0])
        ours = pair.ours._use_mask_as_output(pix, high_res, mask)
        ref_pix, ref_high_res = _heads_input(ref_feats[0])
        ref = heads_from_reference(pair.ref._use_mask_as_output(ref_pix, ref_high_res, mask))
    assert torch.equal(ours.low_res_masks, ours.low_res_multimasks)
    worst = _worst([ref], [ours], HEADS_COMPARED)
    print(f"mask as output: worst abs diff {worst:.3g}")
    assert worst <= TOL


def test_memory_settings_are_the_memory_config(tracked):
    """Setting a memory switch on the model changes what memory reading uses (one source)."""
    model = tracked[0].ours
    saved = model.memory_config
    try:
        model.memory_temporal_stride_for_eval = 3
        assert model.memory_config.memory_temporal_stride_for_eval == 3
        assert [t for _, t in model.memory_frame_indices(10)] == [-6, -3, 0, 3, 6, 9]
    finally:
        model.memory_config = saved
    assert model.memory_temporal_stride_for_eval == 1
