"""SAM2Base's tracking step matches the reference's, frame by frame, on a synthetic sequence.

Both models get identical random weights and the same frames and prompts; each keeps its own
memory of earlier frames (reference-style output dicts). Covered: a first prompted frame, tracked
frames (memory attention over spatial memories + object pointers), a later mask-prompted frame,
reverse tracking, the cond-frame cap and temporal stride, a bounded memory bank that holds only
the frames the model reads, and bf16-stored memories with no float pointers (where the reference
crashes on CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_web import transforms as T
from tests.parity import make_pair

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
            _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(x))
            out.append((feats, pos, sizes))
    return out


def _points(batch: int = 1):
    coords = torch.tensor([[[60.0, 100.0], [150.0, 40.0]]]).repeat(batch, 1, 1)
    labels = torch.tensor([[1, 0]], dtype=torch.int32).repeat(batch, 1)
    return {"point_coords": coords, "point_labels": labels}


def _run(model, feats, plan, output_dict, num_frames=NUM_FRAMES, **step_kw):
    """Run ``plan`` [(frame, kind, reverse)] and return each step's output."""
    outs = []
    with torch.no_grad():
        for frame, kind, reverse in plan:
            f, p, s = feats[frame]
            points = _points() if kind in ("init", "points") else None
            masks = None
            if kind == "mask":
                masks = torch.zeros(1, 1, SIZE, SIZE)
                masks[..., 80:160, 60:200] = 1.0
            out = model.track_step(
                frame_idx=frame,
                is_init_cond_frame=kind == "init",
                current_vision_feats=f,
                current_vision_pos_embeds=p,
                feat_sizes=s,
                point_inputs=points,
                mask_inputs=masks,
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=reverse,
                **step_kw,
            )
            bucket = "cond_frame_outputs" if kind in ("init", "points", "mask") else "non_cond_frame_outputs"
            if isinstance(output_dict, dict):
                output_dict[bucket][frame] = out
            else:
                output_dict.store(frame, out, cond=bucket == "cond_frame_outputs")
            outs.append(out)
    return outs


def _worst(ref_outs, our_outs) -> float:
    worst = 0.0
    for r, o in zip(ref_outs, our_outs):
        for key in COMPARED:
            worst = max(worst, (r[key].float() - o[key].float()).abs().max().item())
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
    our_outs = _run(pair.ours, our_feats, FORWARD_PLAN, _empty())
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
        our_outs = _run(pair.ours, our_feats, plan, _empty())
    finally:
        for model in (pair.ref, pair.ours):
            model.max_cond_frames_in_attn, model.memory_temporal_stride_for_eval = saved[id(model)]
    worst = _worst(ref_outs, our_outs)
    print(f"reverse/stride-2/2-cond-frames tracking: worst abs diff {worst:.3g}")
    assert worst <= TOL


class _WindowBank:
    """A MemoryBank that keeps only what the model says it will read next (forward tracking)."""

    def __init__(self, model, num_frames):
        self.model, self.num_frames = model, num_frames
        self.cond, self.non_cond = {}, {}

    def cond_frame_outputs(self):
        return self.cond

    def non_cond_frame_output(self, frame_idx):
        return self.non_cond.get(frame_idx)

    def store(self, frame, out, cond):
        (self.cond if cond else self.non_cond)[frame] = out
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
    bank = _WindowBank(model, NUM_FRAMES)
    # With a pointer window of 3 and 3 memories, the bank must drop frames as it goes.
    saved = model.num_maskmem, model.max_obj_ptrs_in_encoder
    model.num_maskmem, model.max_obj_ptrs_in_encoder = 3, 3
    try:
        full = _run(model, our_feats, plan, _empty())
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
        f, p, s = our_feats[6]
        cond = pair.ours.track_step(6, True, f, p, s, _points(), None, _empty(), NUM_FRAMES)
    stored = dict(cond)
    stored["maskmem_features"] = cond["maskmem_features"].to(torch.bfloat16)
    upcast = dict(stored)
    upcast["maskmem_features"] = stored["maskmem_features"].float()
    f, p, s = our_feats[3]
    with torch.no_grad():
        ours = pair.ours.track_step(3, False, f, p, s, None, None,
                                    {"cond_frame_outputs": {6: stored}, "non_cond_frame_outputs": {}}, NUM_FRAMES)
        rf, rp, rs = ref_feats[3]
        ref = pair.ref.track_step(3, False, rf, rp, rs, None, None,
                                  {"cond_frame_outputs": {6: upcast}, "non_cond_frame_outputs": {}}, NUM_FRAMES)
    worst = max((ref[k].float() - ours[k].float()).abs().max().item() for k in COMPARED)
    print(f"bf16-stored memory: worst abs diff vs reference on upcast memory {worst:.3g}")
    assert worst <= TOL
