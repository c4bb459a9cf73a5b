"""The video engine runs EfficientTAM unchanged: streaming, re-tracking from cached features,
objects added mid-clip, hole filling.

An ``efficienttam_ti_2`` (plain ViT, pooled memory cross-attention) with seeded random weights at
a reduced input size keeps this fast; its masks are checked against the authors' code in
test_parity_efficienttam.py. With 10 frames and 7 memories the pooled attention reads several
memory maps on most frames. The random weights are perturbed and the objects made visible (as in
the parity test), so the masks are noisy but not empty and every comparison below can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_web.build import build_sam2_video_predictor
from sam2_web.components import connected_components
from sam2_web.modeling.efficient_attention import EfficientRoPEAttention
from sam2_web.video import FrameMasks
from tests.counting import Counter
from tests.clips import disc_clips
from tests.parity import perturb
from tests.test_parity_efficienttam import reveal_objects

MODEL = "efficienttam_ti_2"
OVERRIDES = ["++model.image_size=128"]
N_FRAMES = 10

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = build_sam2_video_predictor(MODEL, None, device="cpu", hydra_overrides_extra=OVERRIDES)
    perturb(model)  # no trivial (zero/one) parameters: every path shapes the masks
    reveal_objects(model)  # random weights would call every object absent (empty masks)
    assert isinstance(model.memory_attention.layers[0].cross_attn_image, EfficientRoPEAttention)
    return model


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return disc_clips(tmp_path_factory.mktemp("etam-engine"), N_FRAMES)



def _masks(results):
    return {m.frame_idx: m.masks.copy() for m in results}


def test_streams_a_clip_both_ways(predictor, clips):
    with predictor.open_session(clips["mp4"]) as session:
        assert session.info.num_frames == N_FRAMES
        first = session.add_prompt(4, 1, points=[[60, 45]], labels=[1])
        assert isinstance(first, FrameMasks) and first.masks.shape == (1, 96, 128)
        out = list(session.propagate(direction="both"))
        # Forward from frame 4, then backward from it: every frame, the start one in both passes.
        assert sorted({m.frame_idx for m in out}) == list(range(N_FRAMES))
        for m in out:
            assert m.obj_ids == [1] and m.masks.shape == (1, 96, 128) and m.masks.dtype == bool
            np.testing.assert_array_equal(session.result(m.frame_idx).masks, m.masks)


def _click_track_correct_retrack(session, correction):
    session.add_prompt(0, 1, points=[[30, 24]], labels=[1])
    list(session.propagate(direction="forward"))
    session.add_prompt(6, 1, **correction)
    return _masks(session.propagate(direction="forward"))


def test_correction_retracks_from_cached_features(predictor, clips):
    correction = dict(points=[[80, 60]], labels=[1], clear_old_points=False)
    with predictor.open_session(clips["folder"]) as session:
        with Counter(predictor, "forward_image") as enc:
            retracked = _click_track_correct_retrack(session, correction)
        assert enc.calls == N_FRAMES  # each frame once: the re-tracking read the cache
        assert len(retracked) == N_FRAMES
    # The same calls with the feature cache off (every frame encoded again) give the same masks.
    with predictor.open_session(clips["folder"], feature_cache_mb=0) as fresh:
        with Counter(predictor, "forward_image") as enc:
            expected = _click_track_correct_retrack(fresh, correction)
        assert enc.calls > N_FRAMES
    assert any(m.any() for m in expected.values())
    for frame, masks in expected.items():
        np.testing.assert_array_equal(retracked[frame], masks, err_msg=f"frame {frame}")


def test_object_added_mid_clip(predictor, clips):
    click, box = dict(points=[[30, 24]], labels=[1]), dict(box=[70, 30, 120, 80])
    with predictor.open_session(clips["folder"]) as session:
        session.add_prompt(0, 1, **click)
        list(session.propagate(direction="forward"))
        # Tracking has run; a second object starts on frame 5 and is tracked both ways from there.
        added = session.add_prompt(5, 2, **box)
        assert added.obj_ids == [1, 2]
        both = {m.frame_idx: m for m in session.propagate(direction="both", start_frame=5)}
    assert sorted(both) == list(range(N_FRAMES)) and all(m.obj_ids == [1, 2] for m in both.values())
    # Objects are tracked independently: each equals the same calls made for it alone.
    with predictor.open_session(clips["folder"]) as alone:
        alone.add_prompt(0, 1, **click)
        list(alone.propagate(direction="forward"))
        only_one = _masks(alone.propagate(direction="both", start_frame=5))
    with predictor.open_session(clips["folder"]) as alone:
        alone.add_prompt(5, 2, **box)
        only_two = _masks(alone.propagate(direction="both", start_frame=5))
    assert any(m.any() for m in only_two.values())
    for frame, m in both.items():
        np.testing.assert_array_equal(m.masks[0], only_one[frame][0], err_msg=f"object 1, frame {frame}")
        np.testing.assert_array_equal(m.masks[1], only_two[frame][0], err_msg=f"object 2, frame {frame}")


def _small_holes(session, frames):
    """Background components of area <= 8 inside each frame's low-res mask of object 1."""
    counts = []
    for frame in frames:
        low_res = session.tracker.objects[1].memory.get(frame).pred_masks
        labels, areas = connected_components(low_res[0, 0].numpy() <= 0)
        counts.append(len(np.unique(labels[(labels > 0) & (areas <= 8)])))
    return counts


@pytest.mark.parametrize("fill", [0, 8])
def test_hole_filling(predictor, clips, fill):
    with predictor.open_session(clips["folder"], fill_hole_area=fill) as session:
        session.add_prompt(0, 1, points=[[30, 24]], labels=[1])
        list(session.propagate(direction="forward", max_frames=4))
        holes = _small_holes(session, range(1, 4))
    if fill:
        assert holes == [0, 0, 0]
    else:
        assert sum(holes) > 0  # the noisy masks do have small holes to fill
