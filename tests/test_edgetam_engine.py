"""The video engine runs EdgeTAM unchanged: streaming a clip, bounded memory of perceiver latents,
feature-cache re-tracking, objects added on any frame, hole filling, cancel/resume.

EdgeTAM with random weights at a reduced input size (256 px) and a short memory window keeps this
fast; its masks are checked against the authors' code in test_parity_edgetam.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sam2_web.build import build_sam2_video_predictor
from sam2_web.components import connected_components
from sam2_web.errors import CancelledError
from sam2_web.video.tracker import memory_reach
from tests.counting import Counter
from tests.clips import disc_clips

N_FRAMES = 10
# 256 px input: 16x16 frame map, so the cross-attention's query grid is 16x16; a memory window of
# 2 spatial memories + 3 pointers, so a 10-frame clip must evict.
OVERRIDES = [
    "++model.image_size=256",
    "++model.memory_attention.layer.cross_attention.q_sizes=[16,16]",
    "++model.num_maskmem=3",
    "++model.max_obj_ptrs_in_encoder=4",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return build_sam2_video_predictor("edgetam", None, device="cpu", hydra_overrides_extra=OVERRIDES)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return disc_clips(tmp_path_factory.mktemp("edgetam-engine"), N_FRAMES)



def _click(session, frame=0, obj=1):
    return session.add_prompt(frame, obj, points=[[30, 24]], labels=[1])


def test_model_is_edgetam(predictor):
    assert type(predictor.image_encoder.trunk).__name__ == "TimmBackbone"
    assert type(predictor.spatial_perceiver).__name__ == "PerceiverResampler"


def test_streamed_mp4_both_directions_with_bounded_latent_memory(predictor, clips):
    with predictor.open_session(clips["mp4"]) as session:
        first = session.add_prompt(4, 1, points=[[60, 40]], labels=[1])
        assert first.masks.shape == (1, 96, 128)
        window = []
        frames = []
        for m in session.propagate(direction="both"):
            frames.append(m.frame_idx)
            assert m.obj_ids == [1] and m.masks.shape == (1, 96, 128) and 0.0 <= m.scores[0] <= 1.0
            window.append(len(session.tracker.objects[1].memory.ram_frames()))
        assert sorted(set(frames)) == list(range(N_FRAMES))  # "both" yields the start frame twice
        bank = session.tracker.objects[1].memory
        # Each memory frame is 256 global + 256 windowed latents of 64 channels, not a 16x16 map.
        assert bank.get(5).maskmem_features.shape == (1, 512, 64)
        assert max(window) <= len(memory_reach(predictor, N_FRAMES, False, N_FRAMES)) + 1
        assert bank.frames() == set(range(N_FRAMES)) - {4}  # evicted frames are on disk, not lost


def test_correction_retracks_from_the_feature_cache(predictor, clips):
    with predictor.open_session(clips["folder"]) as session:
        _click(session)
        with Counter(predictor, "forward_image") as enc:
            list(session.propagate(direction="forward"))
        assert enc.calls == N_FRAMES - 1  # frame 0 was encoded by the click
        before = {m.frame_idx: m.masks for m in session.results()}
        with Counter(predictor, "forward_image") as enc:
            session.add_prompt(6, 1, points=[[80, 60]], labels=[0], clear_old_points=False)
            redone = {m.frame_idx: m.masks for m in session.propagate(direction="forward")}
        assert sorted(redone) == list(range(N_FRAMES)) and enc.calls == 0
        assert session.tracker.features.cache.hits > 0
        assert any(np.any(redone[f] != before[f]) for f in range(N_FRAMES))  # the correction counted


def test_object_added_mid_clip_after_tracking(predictor, clips):
    """The authors' EdgeTAM refuses new objects once tracking started; ours takes them on any frame,
    with the same result as if the object had been there from the start."""
    with predictor.open_session(clips["folder"]) as session:
        _click(session, 0, 1)
        alone = {m.frame_idx: m.masks[0] for m in session.propagate(direction="forward")}
        added = session.add_prompt(5, 2, box=[60, 40, 120, 90])
        assert added.obj_ids == [1, 2]
        late = {m.frame_idx: m.masks for m in session.propagate(direction="both")}
    with predictor.open_session(clips["folder"]) as fresh:
        _click(fresh, 0, 1)
        fresh.add_prompt(5, 2, box=[60, 40, 120, 90])
        upfront = {m.frame_idx: m.masks for m in fresh.propagate(direction="both")}
    assert sorted(late) == sorted(upfront) == list(range(N_FRAMES))
    for f in range(N_FRAMES):
        np.testing.assert_array_equal(late[f][0], alone[f])  # object 1 is untouched by object 2
        np.testing.assert_array_equal(late[f], upfront[f])


def test_hole_filling(predictor, clips):
    """A mask prompt with pinholes is taken as the frame's output; the engine fills holes up to
    ``fill_hole_area`` low-res cells in it (and in every tracked frame)."""
    disc = clips["masks"][0].copy()
    ys, xs = np.nonzero(disc)
    cy, cx = int(ys.mean()), int(xs.mean())
    disc[cy - 2 : cy + 2, cx - 6 : cx - 2] = False  # two 4x4-pixel holes
    disc[cy - 2 : cy + 2, cx + 2 : cx + 6] = False

    def small_holes(fill_hole_area):
        with predictor.open_session(clips["folder"], fill_hole_area=fill_hole_area) as session:
            session.add_mask(0, 1, disc)
            list(session.propagate(direction="forward", max_frames=3))
            counts = []
            for f in range(4):
                bank = session.tracker.objects[1].memory
                out = bank.cond.get(f) or bank.get(f)
                labels, areas = connected_components(out.pred_masks[0, 0].numpy() <= 0)
                counts.append(int(np.count_nonzero((labels > 0) & (areas <= 8))))
            return counts

    assert small_holes(0)[0] > 0  # the prompt's holes are there without filling ...
    assert small_holes(8) == [0, 0, 0, 0]  # ... and gone with it, on every frame


def test_cancel_then_resume_without_redoing_frames(predictor, clips):
    with predictor.open_session(clips["folder"]) as reference_run:
        _click(reference_run)
        expected = {m.frame_idx: m.masks for m in reference_run.propagate(direction="forward")}

    with predictor.open_session(clips["folder"]) as session:
        _click(session)
        stop = threading.Event()

        def progress(done, total):
            if done == 4:
                stop.set()

        with pytest.raises(CancelledError):
            for _ in session.propagate(direction="forward", progress=progress, cancel=stop):
                pass
        assert [r.frame_idx for r in session.results()] == [0, 1, 2, 3]
        with Counter(predictor, "track_objects") as steps:
            resumed = list(session.propagate(direction="forward"))
        assert steps.calls == N_FRAMES - 4  # only the unfinished frames ran
        assert [m.frame_idx for m in resumed] == list(range(N_FRAMES))
        for m in resumed:
            np.testing.assert_array_equal(m.masks, expected[m.frame_idx])
