"""The video engine's session API: bounded memory, feature-cache reuse, cancel/resume, errors,
post-processing. A tiny model with random weights at a reduced input size keeps this fast; the
masks themselves are checked against the reference in test_video_parity.py."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from oracles import bfs_components
from sam2_web.build import build_sam2_video_predictor
from sam2_web.errors import CancelledError, FrameIndexError, PromptError, UnknownObjectError, VideoReadError
from sam2_web.video import FrameMasks
from sam2_web.components import connected_components
from sam2_web.transforms import fill_holes_and_sprinkles
from sam2_web.video.features import FeatureCache
from sam2_web.runlength import from_run_lengths, run_lengths
from sam2_web.video.store import ResultStore
from sam2_web.video.memory import memory_reach
from tests.counting import Counter
from tests.clips import disc_clips, make_audio_only, make_zero_frame_video, moving_disc_frames

# Memory window of 2 spatial memories + 3 pointers, so a 10-frame clip must evict.
OVERRIDES = ["++model.image_size=256", "++model.num_maskmem=3", "++model.max_obj_ptrs_in_encoder=4"]
N_FRAMES = 10



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = build_sam2_video_predictor("sam2.1_hiera_t", None, device="cpu", hydra_overrides_extra=OVERRIDES)
    return model


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return disc_clips(tmp_path_factory.mktemp("vengine"), N_FRAMES)



def _click(session, frame=0, obj=1):
    return session.add_prompt(frame, obj, points=[[30, 24]], labels=[1])


# ---------------------------------------------------------------- end to end


def test_mp4_end_to_end(predictor, clips):
    with predictor.open_session(clips["mp4"]) as session:
        assert session.info.num_frames == N_FRAMES
        assert (session.info.width, session.info.height) == (128, 96)
        assert session.frame(3).shape == (96, 128, 3)
        first = _click(session)
        assert isinstance(first, FrameMasks) and first.masks.shape == (1, 96, 128) and first.masks.dtype == bool
        out = list(session.propagate(direction="both"))
        assert sorted(m.frame_idx for m in out) == list(range(N_FRAMES))
        for m in out:
            assert m.obj_ids == [1] and m.masks.shape == (1, 96, 128)
            assert 0.0 <= m.scores[0] <= 1.0
            np.testing.assert_array_equal(session.result(m.frame_idx).masks, m.masks)
        assert [r.frame_idx for r in session.results()] == list(range(N_FRAMES))


def test_array_source_and_mask_prompt(predictor, clips):
    frames, masks = moving_disc_frames(4, size=(128, 96), radius=14)
    with predictor.open_session(frames) as session:
        got = session.add_mask(0, 5, masks[0])
        assert got.obj_ids == [5]
        # A mask prompt is taken as the output (use_mask_input_as_output_without_sam).
        assert (got.masks[0] == masks[0]).mean() > 0.97
        assert len(list(session.propagate(direction="forward"))) == 4


# ---------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("history", ["disk", "ram", "drop"])
def test_memory_keeps_only_the_reachable_window(predictor, clips, history):
    with predictor.open_session(clips["folder"], history=history) as session:
        _click(session, 0, 1)
        _click(session, 0, 2)
        window = []
        for m in session.propagate(direction="forward"):
            window.append(max(len(t.memory.ram_frames()) for t in session.tracker.objects.values()))
        bank = session.tracker.objects[1].memory
        reach = len(memory_reach(predictor, N_FRAMES, False, N_FRAMES))
        if history == "drop":
            assert max(window) <= reach and bank.frames() == bank.ram_frames()
            return
        assert bank.frames() == set(range(1, N_FRAMES))  # nothing is lost ...
        if history == "disk":
            assert max(window) <= reach  # ... but RAM holds one window, whatever the clip length
            assert len(bank.ram_frames()) <= reach
            session.tracker.flush()  # spill files are written on a worker thread
            assert len(list(Path(session._tmp, "memory").glob("*.pt"))) == 2 * (N_FRAMES - 1 - len(bank.ram_frames()))
        else:
            assert bank.ram_frames() == set(range(1, N_FRAMES))


def test_an_idle_session_holds_no_more_than_its_budget(predictor, clips, monkeypatch):
    """After a pass, what a session keeps in RAM (feature cache, tracking windows, results, the
    clip's frames) fits the per-session budget ``sam2_web.video.budget`` documents; the pass's
    decoder buffers are let go, and closing hands the freed memory back to the system."""
    from sam2_web.video import budget, session as session_module

    trims = []
    monkeypatch.setattr(session_module, "return_free_memory", lambda: trims.append(1) or True)
    with predictor.open_session(clips["mp4"]) as session:
        _click(session)
        _click(session, frame=3, obj=2)
        list(session.propagate(direction="both"))
        tracker = session.tracker
        plan = budget.session_ram_budget(predictor, width=128, height=96, num_frames=N_FRAMES, objects=2)
        window = sum(track.memory.ram_bytes() for track in tracker.objects.values())
        print(f"held: features {tracker.features.cache.ram_bytes}, window {window}, results "
              f"{tracker.results.nbytes()}; budget {plan}")
        assert 0 < tracker.features.cache.ram_bytes <= plan.features
        assert 0 < window <= plan.tracking_window
        assert tracker.results.nbytes() <= plan.results
        assert session.frames.buffered_frames <= budget.RECENT_FRAMES
        assert trims == []
        assert session.drop_cached_features() == plan.features and tracker.features.cache.ram_bytes == 0
        misses = tracker.features.cache.misses
        session.add_prompt(0, 1, points=[[30, 24]], labels=[1])  # the same click: a new pass tracks again
        assert len(list(session.propagate(direction="both"))) == N_FRAMES
        assert tracker.features.cache.misses >= misses + N_FRAMES - 1  # frames were encoded again
        assert trims == [1]
    assert trims == [1, 1]


def test_memory_dtype_option(predictor, clips):
    for dtype, expected in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        with predictor.open_session(clips["folder"], memory_dtype=dtype) as session:
            _click(session)
            list(session.propagate(direction="forward", max_frames=2))
            assert session.tracker.objects[1].memory.get(1).maskmem_features.dtype == expected
    with pytest.raises(ValueError):
        predictor.open_session(clips["folder"], memory_dtype="float16")


# ---------------------------------------------------------------- feature cache


def test_correction_does_not_reencode_frames(predictor, clips):
    with predictor.open_session(clips["folder"]) as session:
        _click(session)
        with Counter(predictor, "forward_image") as enc:
            list(session.propagate(direction="forward"))
        assert enc.calls == N_FRAMES - 1  # frame 0 was encoded by the click
        with Counter(predictor, "forward_image") as enc:
            session.add_prompt(6, 1, points=[[80, 60]], labels=[1], clear_old_points=False)
            redone = list(session.propagate(direction="forward"))
        assert len(redone) == N_FRAMES and enc.calls == 0
        assert session.tracker.features.cache.hits > 0


def test_feature_cache_off_reencodes(predictor, clips):
    with predictor.open_session(clips["folder"], feature_cache_mb=0) as session:
        _click(session)
        list(session.propagate(direction="forward", max_frames=3))
        with Counter(predictor, "forward_image") as enc:
            list(session.propagate(direction="forward", start_frame=0, max_frames=3))
        # Nothing to resume (same prompts, same pass): stored frames are yielded, nothing re-run.
        assert enc.calls == 0
        session.add_prompt(2, 1, points=[[50, 40]], labels=[1])
        with Counter(predictor, "forward_image") as enc:
            list(session.propagate(direction="forward", max_frames=3))
        assert enc.calls >= 3


def test_feature_cache_spills_to_disk(predictor, clips, tmp_path):
    with predictor.open_session(clips["folder"], feature_cache_mb=1.5, feature_cache_dir=str(tmp_path)) as session:
        _click(session)
        list(session.propagate(direction="forward"))
        assert session.tracker.features.cache.ram_bytes <= 1.5 * 2**20
        assert len(list(tmp_path.glob("*/feat_*.pt"))) > 0
        session.add_prompt(4, 1, points=[[60, 50]], labels=[1])
        with Counter(predictor, "forward_image") as enc:
            list(session.propagate(direction="forward"))
        assert enc.calls == 0
    assert not list(tmp_path.glob("*/feat_*.pt"))  # close() removes the spill folder


def test_feature_cache_lru_unit():
    cache = FeatureCache(max_mb=3 * 4 / 2**20 * 100)  # room for three 100-float frames
    for i in range(5):
        cache.put(i, [torch.full((100,), float(i))])
    assert 0 not in cache and 1 not in cache and all(i in cache for i in (2, 3, 4))
    assert cache.get(2, torch.device("cpu"))[0][0] == 2.0
    cache.put(5, [torch.zeros(100)])  # evicts 3 (2 was used more recently)
    assert 3 not in cache and 2 in cache


# ---------------------------------------------------------------- progress, cancel, resume


def test_cancel_then_resume_without_redoing_frames(predictor, clips):
    with predictor.open_session(clips["folder"]) as reference_run:
        _click(reference_run)
        expected = {m.frame_idx: m.masks for m in reference_run.propagate(direction="forward")}

    with predictor.open_session(clips["folder"]) as session:
        _click(session)
        seen = []
        stop = threading.Event()

        def progress(done, total):
            seen.append((done, total))
            if done == 4:
                stop.set()

        with pytest.raises(CancelledError):
            for _ in session.propagate(direction="forward", progress=progress, cancel=stop):
                pass
        assert seen == [(i, N_FRAMES) for i in range(1, 5)]
        assert [r.frame_idx for r in session.results()] == [0, 1, 2, 3]

        with Counter(predictor, "track_objects") as steps:
            resumed = list(session.propagate(direction="forward", progress=lambda d, t: seen.append((d, t))))
        assert steps.calls == N_FRAMES - 4  # only the unfinished frames ran
        assert seen[-1] == (N_FRAMES, N_FRAMES)
        assert [m.frame_idx for m in resumed] == list(range(N_FRAMES))
        for m in resumed:
            np.testing.assert_array_equal(m.masks, expected[m.frame_idx])


def test_cancel_accepts_a_callable(predictor, clips):
    with predictor.open_session(clips["folder"]) as session:
        _click(session)
        with pytest.raises(CancelledError):
            list(session.propagate(direction="forward", cancel=lambda: True))
        assert session.result(1) is None


# ---------------------------------------------------------------- objects, prompts, errors


def test_objects_clear_remove_reset(predictor, clips):
    with predictor.open_session(clips["folder"]) as session:
        _click(session, 0, 1)
        both = session.add_prompt(0, 2, box=[60, 40, 120, 90])
        assert both.obj_ids == [1, 2] and session.object_ids == [1, 2]
        list(session.propagate(direction="forward", max_frames=2))
        session.remove_object(1)
        assert session.object_ids == [2] and session.result(1).obj_ids == [2]
        assert session.object_names == {2: "object 2"}
        session.add_prompt(2, 2, box=[60, 40, 120, 90])
        cleared = session.clear_frame(0)  # object 2 keeps its prompt on frame 2: still tracked
        assert cleared.obj_ids == [2] and [p.frame_idx for p in session.prompts()] == [2]
        # Without a prompt anywhere an object cannot be tracked: it stops being tracked, its name stays.
        assert session.clear_frame(2) is None and session.object_ids == [] and session.result(0) is None
        assert session.object_names == {2: "object 2"}
        session.reset()
        assert session.object_ids == [] and session.result(0) is None and session.object_names == {}


def test_the_session_keeps_the_prompts_undo_and_replay(predictor, clips):
    """The session is where prompts live: in clip pixels, in order, with undo; another session
    (another model on the same clip) replays them into the same masks."""
    from sam2_web.video.edits import Box, Click

    with predictor.open_session(clips["folder"]) as session:
        assert session.add_object(name="ball") == 1 and session.object_names == {1: "ball"}
        assert session.object_ids == []  # named, not tracked until it has a prompt
        first = session.add_click(0, 1, 30, 24).masks[0].copy()
        session.add_click(0, 1, 100, 80, positive=False)
        boxed = session.set_box(2, 1, (10, 8, 60, 50))
        assert [type(p) for p in session.prompts()] == [Click, Click, Box]
        assert session.prompts(0)[1] == Click(0, 1, 100.0, 80.0, 0) and not session.prompts(0)[1].positive
        assert session.prompted_objects() == [1] and len(session.prompts(obj_id=1)) == 3
        with predictor.open_session(clips["folder"]) as other:
            other.replay(session)
            assert other.object_names == {1: "ball"} and other.prompts() == session.prompts()
            np.testing.assert_array_equal(other.result(2).masks, boxed.masks)
        assert session.undo() == 2 and session.result(2) is not None  # the box's frame is kept, re-rendered
        assert session.undo() == 0
        # Undo replays the remaining clicks: the frame's masks are those before the undone click.
        np.testing.assert_array_equal(session.result(0).masks[0], first)
        assert session.undo() == 0 and session.prompts() == [] and session.object_ids == []
        assert session.object_names == {1: "ball"} and session.undo() is None
        # A refused prompt changes nothing.
        with pytest.raises(PromptError):
            session.add_click(0, 1, float("nan"), 3)
        with pytest.raises(FrameIndexError):
            session.add_click(N_FRAMES, 1, 3, 3)
        assert session.prompts() == [] and session.object_ids == []


def test_reference_calls_are_logged_in_clip_pixels(predictor, clips):
    state = predictor.init_state(clips["folder"])
    try:
        predictor.add_new_points_or_box(state, 1, 4, points=[[0.25, 0.5]], labels=[1], normalize_coords=False)
        predictor.add_new_points_or_box(state, 1, 4, points=[[0.5, 0.5]], labels=[0], clear_old_points=False,
                                        normalize_coords=False)
        clicks = state.prompts(1, 4)
        assert [(c.x, c.y, c.label) for c in clicks] == [(32.0, 48.0, 1), (64.0, 48.0, 0)]  # 128x96 clip
        predictor.clear_all_prompts_in_frame(state, 1, 4)
        assert state.prompts() == [] and state.object_ids == [4]  # the reference keeps the object
        predictor.reset_state(state)
        assert state.object_names == {} and state.object_ids == []
    finally:
        state.close()


def test_bad_input_errors_and_nothing_is_lost(predictor, clips):
    with predictor.open_session(clips["folder"]) as session:
        with pytest.raises(PromptError):
            list(session.propagate())  # no object yet
        _click(session)
        list(session.propagate(direction="forward", max_frames=3))
        before = {r.frame_idx: r.masks.copy() for r in session.results()}

        with pytest.raises(FrameIndexError):
            session.add_prompt(N_FRAMES, 1, points=[[1, 1]], labels=[1])
        with pytest.raises(FrameIndexError):
            session.add_prompt(-1, 1, points=[[1, 1]], labels=[1])
        with pytest.raises(FrameIndexError):
            session.result(N_FRAMES)
        with pytest.raises(FrameIndexError):
            list(session.propagate(start_frame=N_FRAMES + 3))
        with pytest.raises(UnknownObjectError):
            session.remove_object(42)
        with pytest.raises(UnknownObjectError):
            session.clear_frame(0, 42)
        with pytest.raises(PromptError):
            session.add_prompt(0, 3, points=[[1, 1]])  # no labels
        with pytest.raises(PromptError):
            session.add_prompt(0, 3, points=[[1, 1], [2, 2]], labels=[1])
        with pytest.raises(PromptError):
            session.add_prompt(0, 3, box=[1, 2, 3])
        with pytest.raises(PromptError):
            session.add_prompt(0, 3, points=[[np.nan, 1]], labels=[1])
        with pytest.raises(PromptError):
            session.add_mask(0, 3, np.zeros((2, 3, 4), bool))

        assert session.object_ids == [1]  # no half-created object 3
        after = {r.frame_idx: r.masks for r in session.results()}
        assert after.keys() == before.keys()
        for i in before:
            np.testing.assert_array_equal(after[i], before[i])


def test_decode_error_mid_pass_keeps_results_and_resumes(predictor, clips, tmp_path):
    import shutil

    folder = Path(shutil.copytree(clips["folder"], tmp_path / "frames"))
    victim = folder / "00005.jpg"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])  # header intact, pixels truncated
    with predictor.open_session(str(folder)) as session:
        _click(session)
        with pytest.raises(VideoReadError):
            for _ in session.propagate(direction="forward"):
                pass
        assert [r.frame_idx for r in session.results()] == [0, 1, 2, 3, 4]
        victim.write_bytes(good)  # the user fixes the file
        with Counter(predictor, "track_objects") as steps:
            done = list(session.propagate(direction="forward"))
        assert len(done) == N_FRAMES and steps.calls == N_FRAMES - 5


def test_unreadable_sources(predictor, clips, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 not a video" * 100)
    audio = make_audio_only(tmp_path / "tone.wav")
    zero = make_zero_frame_video(tmp_path / "zero.mkv", clips["mp4"])
    for source in (empty, corrupt, audio, zero, tmp_path / "missing.mp4"):
        with pytest.raises(VideoReadError):
            predictor.open_session(str(source))



def test_clear_non_cond_mem_around_input(predictor, clips):
    with predictor.open_session(clips["folder"], clear_non_cond_mem_around_input=True) as session:
        _click(session)
        list(session.propagate(direction="forward"))
        session.add_prompt(6, 1, points=[[80, 60]], labels=[1])
        session.tracker.preflight()
        # num_maskmem (3) * stride (1) frames each side of the corrected frame are dropped.
        bank = session.tracker.objects[1].memory
        assert bank.frames() == {1, 2} and set(bank.cond) == {0, 6}
    with predictor.open_session(clips["folder"]) as session:
        _click(session)
        list(session.propagate(direction="forward"))
        session.add_prompt(6, 1, points=[[80, 60]], labels=[1])
        session.tracker.preflight()
        assert session.tracker.objects[1].memory.frames() == set(range(1, N_FRAMES)) - {6}

# ---------------------------------------------------------------- post-processing


def test_connected_components_match_the_definition():
    rng = np.random.default_rng(0)
    for _ in range(25):
        mask = rng.random((rng.integers(1, 30), rng.integers(1, 30))) < rng.random()
        labels, areas = connected_components(mask)
        ref_labels, ref_areas = bfs_components(mask)
        np.testing.assert_array_equal(areas, ref_areas)
        pairs = set(zip(labels[mask].tolist(), ref_labels[mask].tolist()))
        assert len(pairs) == len(np.unique(ref_labels[mask]))  # same partition


def _video_fill(scores, area, remove_sprinkles=True):
    """The video engine's clean-up: holes to 0.1, then specks of the filled mask to -0.1."""
    return fill_holes_and_sprinkles(
        scores, 0.0, area, area if remove_sprinkles else 0, score_offset=0.1, sprinkles_after_holes=True
    )


def _scores(fg):
    return torch.from_numpy(np.where(fg, 5.0, -5.0).astype(np.float32))[None, None]


def test_holes_up_to_area_are_filled():
    fg = np.zeros((20, 30), bool)
    fg[2:18, 2:28] = True
    fg[5:7, 5:7] = False  # hole of area 4
    fg[5:8, 15:17] = False  # hole of area 6
    fg[12, 10] = fg[13, 11] = False  # two diagonal pixels: ONE hole of area 2 (8-connectivity)
    out = _video_fill(_scores(fg), 4, remove_sprinkles=False)[0, 0].numpy()
    assert np.all(out[5:7, 5:7] == np.float32(0.1))
    assert np.all(out[5:8, 15:17] == -5.0)  # area 6 > 4 stays
    assert out[12, 10] == np.float32(0.1) and out[13, 11] == np.float32(0.1)
    assert np.all(out[0, :] == -5.0)  # the outer background (large) stays
    assert np.all(out[fg] == 5.0)  # foreground untouched
    at_n_plus_1 = _video_fill(_scores(fg), 5, remove_sprinkles=False)[0, 0].numpy()
    assert np.all(at_n_plus_1[5:8, 15:17] == -5.0)
    at_6 = _video_fill(_scores(fg), 6, remove_sprinkles=False)[0, 0].numpy()
    assert np.all(at_6[5:8, 15:17] == np.float32(0.1))


def test_sprinkles_up_to_area_are_removed():
    fg = np.zeros((20, 30), bool)
    fg[2:12, 2:12] = True  # the object
    fg[15, 20] = fg[16, 21] = fg[17, 22] = True  # a diagonal sprinkle of area 3
    fg[15:17, 26:29] = True  # a speck of area 6
    out = _video_fill(_scores(fg), 3)[0, 0].numpy()
    assert out[15, 20] == np.float32(-0.1) and out[17, 22] == np.float32(-0.1)
    assert np.all(out[15:17, 26:29] == 5.0) and np.all(out[2:12, 2:12] == 5.0)
    kept = _video_fill(_scores(fg), 3, remove_sprinkles=False)[0, 0].numpy()
    assert kept[15, 20] == 5.0


def test_fill_matches_definition_on_random_scores():
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.normal(size=(2, 1, 24, 24)).astype(np.float32))
    out = _video_fill(scores, 3).numpy()
    for b in range(2):
        plane = scores[b, 0].numpy().copy()
        labels, areas = bfs_components(plane <= 0)
        plane[(labels > 0) & (areas <= 3)] = 0.1
        labels, areas = bfs_components(plane > 0)
        plane[(labels > 0) & (areas <= 3)] = -0.1
        np.testing.assert_array_equal(out[b, 0], plane)


def test_engine_applies_fill_and_non_overlap(predictor, clips):
    with predictor.open_session(clips["folder"], fill_hole_area=8, non_overlap_masks=True) as session:
        _click(session, 0, 1)
        session.add_prompt(0, 2, box=[10, 5, 60, 50])
        for m in session.propagate(direction="forward", max_frames=3):
            assert not np.any(m.masks[0] & m.masks[1])
        low_res = session.tracker.objects[1].memory.get(2).pred_masks
        # No background component of area <= 8 is left inside the low-res mask.
        labels, areas = connected_components(low_res[0, 0].numpy() <= 0)
        assert not np.any((labels > 0) & (areas <= 8))


# ---------------------------------------------------------------- result store


def test_png_results_in_session(predictor, clips, tmp_path):
    with predictor.open_session(clips["folder"], result_dir=str(tmp_path)) as session:
        first = _click(session)
        session.tracker.flush()  # PNGs are written on the store's worker thread
        assert len(list(tmp_path.glob("masks-*/*.png"))) == 1
        np.testing.assert_array_equal(session.result(0).masks, first.masks)
    assert tmp_path.exists() and not list(tmp_path.glob("masks-*"))


def test_result_store_rle_and_png(tmp_path):
    rng = np.random.default_rng(2)
    masks = rng.random((2, 17, 23)) < 0.3
    masks[1, 0, 0] = True
    for runs_mask in masks:
        np.testing.assert_array_equal(from_run_lengths(run_lengths(runs_mask), runs_mask.shape), runs_mask)
    for png_dir in (None, str(tmp_path / "png")):
        store = ResultStore(17, 23, png_dir)
        store.put(FrameMasks(3, [7, 9], masks, np.array([0.9, 0.2], np.float32)))
        got = store.get(3, [9, 7, 11])
        np.testing.assert_array_equal(got.masks[0], masks[1])
        np.testing.assert_array_equal(got.masks[1], masks[0])
        assert not got.masks[2].any() and got.scores[2] == 0
        store.drop_object(7)
        assert store.get(3).obj_ids == [9]
    assert ResultStore(17, 23).nbytes() == 0
    # A ragged mask is kept as packed bits (at most a bit a pixel), a compact one as run lengths.
    ragged, compact = rng.random((17, 23)) < 0.5, np.zeros((17, 23), bool)
    compact[4:12, 5:15] = True
    store = ResultStore(17, 23)
    store.put(FrameMasks(0, [1, 2], np.stack([ragged, compact]), np.array([0.5, 0.5], np.float32)))
    np.testing.assert_array_equal(store.get(0).masks, np.stack([ragged, compact]))
    assert store.nbytes() <= (17 * 23 + 7) // 8 + run_lengths(compact).nbytes + 8 < run_lengths(ragged).nbytes
