"""Video predictor parity: our engine's mask logits equal the reference's (sam2 1.1.0).

Both predictors get identical random weights (reference -> official checkpoint -> ours with
strict keys), the same JPEG folder and the same calls; every output (the masks a click returns,
every propagated frame, the frames ``remove_object`` re-renders) is compared.

Three facts about the reference shape the setup (see issue 3):
* its hole filling needs a CUDA extension and is skipped on CPU, so both run with
  ``fill_hole_area = 0`` (our filling is tested on its own in test_video_engine.py);
* it stores memories as bfloat16, as we do by default;
* on CPU it crashes when an object's first prompt is after the start frame (an all-bf16 memory
  meets float32 weights); its ``memory_attention.forward`` is wrapped to cast the memory to
  float32 first, the same rounded values it uses whenever float object pointers are present.

The "short reach" model (``num_maskmem=3``, ``max_obj_ptrs_in_encoder=4``) makes the memory
window smaller than the clip, so these runs go through our eviction and the disk history of
evicted frames, which a correction click and a pass from another frame read back.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.clips import make_moving_disc_clip
from sam2_web.video.memory import memory_reach
from tests.oracle_venv import float_memories
from tests.parity import informative_masks, make_pair

pytest.importorskip("sam2")

TOL = 1e-3
SIZE = ("++model.image_size=256",)
SHORT_REACH = SIZE + ("++model.num_maskmem=3", "++model.max_obj_ptrs_in_encoder=4")



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A JPEG folder (00000.jpg ...) of a disc moving over texture, 128x96, 8 frames."""
    folder = tmp_path_factory.mktemp("vparity") / "clip"
    path, masks = make_moving_disc_clip(folder, n_frames=8, size=(128, 96), radius=14)
    return str(path), masks


def _pair(parity_dir, overrides):
    pair = make_pair("sam2.1_hiera_t", overrides, video=True, workdir=parity_dir)
    float_memories(pair.ref)
    for model in (pair.ref, pair.ours):
        model.fill_hole_area = 0
    return pair


class Both:
    """Runs each call on the reference and on ours and records the worst difference."""

    def __init__(self, pair, clip_dir):
        self.ref, self.ours = pair.ref, pair.ours
        with torch.inference_mode():
            self.ref_state = self.ref.init_state(clip_dir)
            self.our_state = self.ours.init_state(clip_dir)
        self.worst = 0.0
        self.compared = 0
        self.masks = self.informative = 0  # object masks compared / those decoded present with both labels

    def _compare(self, ref_logits, our_logits, where):
        assert ref_logits.shape == our_logits.shape, where
        diff = (ref_logits.float() - our_logits.float()).abs().max().item()
        self.worst = max(self.worst, diff)
        self.compared += 1
        good, total = informative_masks(ref_logits.float().numpy())
        self.informative += good
        self.masks += total
        assert diff < TOL, f"{where}: max |diff| {diff:.3g}"

    def call(self, name, *args, **kwargs):
        r = getattr(self.ref, name)(self.ref_state, *args, **kwargs)
        o = getattr(self.ours, name)(self.our_state, *args, **kwargs)
        assert r[0] == o[0] and list(r[1]) == list(o[1]), name
        self._compare(r[2], o[2], f"{name}{args}")

    def propagate(self, **kwargs):
        with torch.inference_mode():
            ref_steps = list(self.ref.propagate_in_video(self.ref_state, **kwargs))
            our_steps = list(self.ours.propagate_in_video(self.our_state, **kwargs))
        assert [s[0] for s in ref_steps] == [s[0] for s in our_steps]
        for (frame, ref_ids, ref_logits), (_, our_ids, our_logits) in zip(ref_steps, our_steps):
            assert list(ref_ids) == list(our_ids)
            self._compare(ref_logits, our_logits, f"propagate{kwargs} frame {frame}")
        return [s[0] for s in our_steps]

    def report(self, case):
        print(f"{case}: {self.compared} outputs compared ({self.informative} of {self.masks} object masks "
              f"informative), worst |diff| {self.worst:.3g}")
        assert self.compared > 0
        # Random weights can decode every object as absent (constant -1024 logits), which would
        # compare equal trivially: most masks must carry both labels.
        assert self.informative >= self.masks / 2, f"{case}: only {self.informative} of {self.masks} informative"


def test_one_object_from_points(parity_dir, clip):
    both = Both(_pair(parity_dir, SIZE), clip[0])
    both.call("add_new_points_or_box", 0, 1, points=[[26, 22]], labels=[1])
    both.call("add_new_points_or_box", 0, 1, points=[[90, 80]], labels=[0], clear_old_points=False)
    frames = both.propagate()
    assert frames == list(range(8))
    both.report("one object")


def test_three_objects_box_and_mask(parity_dir, clip):
    both = Both(_pair(parity_dir, SIZE), clip[0])
    disc = clip[1][0]
    both.call("add_new_points_or_box", 0, 1, points=[[26, 22]], labels=[1])
    both.call("add_new_points_or_box", 0, 2, box=[60, 50, 120, 90])
    both.call("add_new_mask", 0, 3, disc)
    both.propagate(max_frame_num_to_track=5)
    both.report("three objects (points, box, mask)")


def test_object_added_on_middle_frame(parity_dir, clip):
    both = Both(_pair(parity_dir, SHORT_REACH), clip[0])
    both.call("add_new_points_or_box", 0, 1, points=[[26, 22]], labels=[1])
    both.propagate()
    # A new object first prompted on frame 4; propagating from 0 tracks it before its prompt.
    both.call("add_new_points_or_box", 4, 7, box=[50, 35, 90, 70])
    both.propagate()
    both.report("object added on a middle frame")


def test_reverse_from_last_frame(parity_dir, clip):
    both = Both(_pair(parity_dir, SHORT_REACH), clip[0])
    both.call("add_new_points_or_box", 7, 1, points=[[100, 75]], labels=[1])
    frames = both.propagate(reverse=True)
    assert frames == list(range(7, -1, -1))
    both.report("reverse from the last frame")


def test_correction_then_repropagate(parity_dir, clip):
    both = Both(_pair(parity_dir, SHORT_REACH), clip[0])
    both.call("add_new_points_or_box", 0, 1, points=[[26, 22]], labels=[1])
    both.call("add_new_points_or_box", 0, 2, points=[[110, 20]], labels=[1])
    both.propagate()
    # Frame 6's memory window (frames 3..5) was evicted from our RAM by the end of the pass;
    # the correction reads it back from the disk history.
    both.call("add_new_points_or_box", 6, 1, points=[[80, 62]], labels=[1], clear_old_points=False)
    both.propagate()
    # A pass started mid-clip reads the previous pass's memory around its start.
    both.propagate(start_frame_idx=5, reverse=True)
    both.report("correction + re-propagation")


def test_max_cond_frames_in_attn(parity_dir, clip):
    # Three prompted frames, attention limited to the two closest: the third still counts as a
    # recent memory when it is in the window.
    both = Both(_pair(parity_dir, SHORT_REACH + ("++model.max_cond_frames_in_attn=2",)), clip[0])
    for frame in (0, 3, 6):
        cx, cy = np.argwhere(clip[1][frame]).mean(axis=0)[::-1]
        both.call("add_new_points_or_box", frame, 1, points=[[cx, cy]], labels=[1])
    both.propagate()
    both.report("max_cond_frames_in_attn=2")


def test_remove_object(parity_dir, clip):
    both = Both(_pair(parity_dir, SHORT_REACH), clip[0])
    both.call("add_new_points_or_box", 0, 1, points=[[26, 22]], labels=[1])
    both.call("add_new_points_or_box", 2, 2, points=[[60, 40]], labels=[1])
    both.call("add_new_points_or_box", 0, 3, box=[80, 10, 125, 40])
    both.propagate(max_frame_num_to_track=4)
    with torch.inference_mode():
        r_ids, r_updated = both.ref.remove_object(both.ref_state, 2)
        o_ids, o_updated = both.ours.remove_object(both.our_state, 2)
    assert list(r_ids) == list(o_ids) == [1, 3]
    assert [f for f, _ in r_updated] == [f for f, _ in o_updated] == [2]
    for (frame, r), (_, o) in zip(r_updated, o_updated):
        both._compare(r, o, f"remove_object frame {frame}")
    both.propagate()
    both.report("remove_object")


def test_our_memory_stays_in_window(parity_dir, clip):
    """The same runs keep only the reachable window in RAM (the rest is on disk)."""
    pair = _pair(parity_dir, SHORT_REACH)
    with torch.inference_mode():
        state = pair.ours.init_state(clip[0])
        pair.ours.add_new_points_or_box(state, 0, 1, points=[[26, 22]], labels=[1])
        for _ in pair.ours.propagate_in_video(state):
            pass
    bank = state.tracker.objects[1].memory
    reach = memory_reach(pair.ours, 8, False, state.num_frames)  # what a frame 8 would read
    assert bank.ram_frames() <= reach
    assert bank.frames() == set(range(1, 8))  # every tracked frame is still available
    assert np.all([f in bank for f in range(1, 8)])
