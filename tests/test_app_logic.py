"""The web app's logic without a browser: sessions, clicks, objects, tracking, limits, exports.

A real (random-weight, image_size 256) SAM 2.1 tiny runs underneath; the expected masks come
from driving the engine directly with the same inputs.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import make_moving_disc_clip
from appserver import FILENAME, REPO_ID, app_checkpoint
from hubserver import serve_hub
from sam2_web.errors import (
    CancelledError,
    CheckpointError,
    ExportError,
    LimitExceededError,
    PromptError,
    UnknownModelError,
    UnknownObjectError,
    VideoReadError,
)
from sam2_web.export.preview import color_of
from sam2_web.jobs import MaskJob, OutputSpec, prompts_from_json
from sam2_web.ui import actions, render
from sam2_web.ui.limits import Limits
from sam2_web.ui.state import SessionBusyError, SessionExpiredError, SessionStore
from sam2_web.video.edits import Box

OVERRIDES = ["++model.image_size=256"]
N_FRAMES = 6
SIZE = (160, 120)
DISC_XY = (30.0, 26.0)  # inside the disc on frame 0 (radius 20 from (20, 20))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return app_checkpoint(tmp_path_factory.mktemp("ckpt") / "t256.pt")


@pytest.fixture(scope="module")
def predictor(ckpt):
    from sam2_web.build import build_sam2_video_predictor

    return build_sam2_video_predictor("sam2.1/sam2.1_hiera_t.yaml", ckpt, device="cpu",
                                      hydra_overrides_extra=OVERRIDES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path, _ = make_moving_disc_clip(tmp_path_factory.mktemp("clip") / "disc.mp4", N_FRAMES, SIZE, radius=20)
    return path


@pytest.fixture
def store(tmp_path):
    s = SessionStore(ttl_s=60, root=tmp_path / "sessions")
    yield s
    s.close_all()


@pytest.fixture
def opened(store, predictor, clip):
    session = store.create("sam2.1_hiera_t")
    actions.open_clip(session, predictor, clip, Limits())
    return session


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, predictor, clip):
    """A session with one click on frame 0, tracked through the clip (read-only for tests)."""
    store = SessionStore(ttl_s=600, root=tmp_path_factory.mktemp("tracked"))
    session = store.create("sam2.1_hiera_t")
    actions.open_clip(session, predictor, clip, Limits())
    actions.click(session, 0, *DISC_XY)
    steps = list(actions.track(session))
    yield session, steps
    store.close_all()


def _engine_masks(predictor, clip, frame, points, labels, box=None):
    """The same prompt sent straight to the engine in a fresh session."""
    with predictor.open_session(str(clip)) as ref:
        kwargs = {"box": np.asarray(box, np.float32)} if box is not None else {}
        if points:
            kwargs.update(points=np.asarray(points, np.float32), labels=np.asarray(labels, np.int32))
        return ref.add_prompt(frame, 1, **kwargs).masks[0]


# --- sessions -----------------------------------------------------------------------------------

def test_idle_sessions_and_their_files_are_removed_after_the_ttl(tmp_path):
    now = [0.0]
    store = SessionStore(ttl_s=10, root=tmp_path / "s", clock=lambda: now[0])
    a, b = store.create("m"), store.create("m")
    (a.workdir / "upload.mp4").write_bytes(b"x")
    now[0] = 8.0
    store.get(b.sid)  # b is used, a is not
    now[0] = 12.0
    assert store.sweep() == [a.sid]
    assert not a.workdir.exists() and b.workdir.exists()
    with pytest.raises(SessionExpiredError, match="upload the clip again"):
        store.get(a.sid)
    b.lock.acquire()  # tracking right now: never swept, however long it runs
    now[0] = 100.0
    assert store.sweep() == []
    b.lock.release()
    assert store.sweep() == [b.sid] and len(store) == 0


def test_two_sessions_do_not_see_each_others_objects_or_masks(store, predictor, clip):
    one, two = store.create("m"), store.create("m")
    for s in (one, two):
        actions.open_clip(s, predictor, clip, Limits())
    actions.add_object(one, Limits(), "car")
    actions.click(one, 0, *DISC_XY)
    assert list(one.video.object_names.values()) == ["object 1", "car"]
    assert list(two.video.object_names.values()) == ["object 1"]
    assert two.video.prompts() == [] and actions.mask_dict(two, 0) == {}
    assert one.workdir != two.workdir and one.video is not two.video


# --- upload and limits --------------------------------------------------------------------------

def test_bad_uploads_are_refused_with_a_message(store, predictor, tmp_path):
    session = store.create("m")
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are my shopping notes, not a video\n" * 20)
    with pytest.raises(VideoReadError) as err:
        actions.open_clip(session, predictor, fake, Limits())
    print("text renamed .mp4:", err.value)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoReadError, match="empty"):
        actions.open_clip(session, predictor, empty, Limits())
    with pytest.raises(VideoReadError, match="upload"):
        actions.open_clip(session, predictor, None, Limits())
    assert not session.has_clip


@pytest.mark.parametrize("limits, words", [
    (Limits(max_frames=N_FRAMES - 1), "frames"),
    (Limits(max_duration_s=0.5), "lasts"),
    (Limits(max_side=100), "160x120"),
    (Limits(max_upload_mb=0.001), "MB"),
])
def test_clips_over_the_limits_are_refused_saying_which_limit(store, predictor, clip, limits, words):
    session = store.create("m")
    with pytest.raises(LimitExceededError, match=words) as err:
        actions.open_clip(session, predictor, clip, limits)
    print(err.value)
    assert not session.has_clip


def test_a_still_image_opens_as_a_one_frame_clip(store, predictor, tmp_path):
    still = tmp_path / "still.png"
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(still)
    session = store.create("m")
    info = actions.open_clip(session, predictor, still, Limits())
    assert (info.num_frames, info.width, info.height) == (1, 120, 90)


def test_click_or_track_before_any_upload_says_to_upload_first(store):
    session = store.create("m")
    with pytest.raises(PromptError, match="upload a clip"):
        actions.click(session, 0, 10, 10)
    with pytest.raises(PromptError, match="upload a clip"):
        next(actions.track(session))
    with pytest.raises(PromptError, match="upload a clip"):
        actions.click(None, 0, 10, 10)


def test_track_without_prompts_asks_for_a_click(opened):
    with pytest.raises(PromptError, match="at least one click"):
        next(actions.track(opened))


# --- clicks -------------------------------------------------------------------------------------

def test_a_click_segments_that_frame_only_and_matches_the_engine(opened, predictor, clip):
    fm = actions.click(opened, 0, *DISC_XY)
    assert fm.frame_idx == 0 and fm.obj_ids == [1] and fm.masks.shape == (1, SIZE[1], SIZE[0])
    expected = _engine_masks(predictor, clip, 0, [DISC_XY], [1])
    print("click mask pixels:", int(fm.masks[0].sum()), "differing from the engine:",
          int((fm.masks[0] != expected).sum()))
    assert 0 < fm.masks[0].sum() < fm.masks[0].size and np.array_equal(fm.masks[0], expected)
    # No whole-clip work: nothing is known on any other frame.
    assert all(opened.video.result(i) is None for i in range(1, N_FRAMES))
    assert render.frame_image(opened, 0).shape == (480, 640, 3)  # small frames are enlarged to click on
    picture = render.frame_image(opened, 0, min_side=1)
    assert picture.shape == (SIZE[1], SIZE[0], 3)
    plain = opened.video.frame(0)  # the overlay colours the mask's pixels
    changed = np.abs(picture.astype(int) - plain.astype(int)).sum(-1) > 30
    assert changed[fm.masks[0]].mean() > 0.5


def test_negative_points_and_boxes_go_to_the_engine_as_one_prompt(opened, predictor, clip):
    actions.click(opened, 0, *DISC_XY)
    actions.set_mode(opened, "negative")
    actions.click(opened, 0, 100, 90)
    actions.set_mode(opened, "box")
    assert actions.click(opened, 0, 5, 5) is None and opened.pending is not None  # first corner
    fm = actions.click(opened, 0, 50, 45)
    assert opened.pending is None
    assert isinstance(opened.video.prompts()[-1], Box)
    # The UI sends the object's whole prompt set on every click, as these engine calls do.
    with predictor.open_session(str(clip)) as ref:
        pts, lbl = np.asarray([DISC_XY, (100, 90)], np.float32), np.asarray([1, 0], np.int32)
        ref.add_prompt(0, 1, points=pts[:1], labels=lbl[:1])
        ref.add_prompt(0, 1, points=pts, labels=lbl)
        expected = ref.add_prompt(0, 1, points=pts, labels=lbl, box=np.asarray([5, 5, 50, 45], np.float32))
    assert np.array_equal(fm.masks[0], expected.masks[0])
    with pytest.raises(PromptError, match="outside"):
        actions.click(opened, 0, 500, 5)
    with pytest.raises(PromptError, match="unknown click mode"):
        actions.set_mode(opened, "lasso")


def test_undo_and_clear_frame(opened, predictor, clip):
    first = actions.click(opened, 0, *DISC_XY).masks[0].copy()
    actions.set_mode(opened, "negative")
    actions.click(opened, 0, 100, 90)
    assert actions.undo(opened) == 0
    assert len(opened.video.prompts()) == 1
    # Undo replays the remaining clicks on a cleared frame: the mask is the one before the undone click.
    after = actions.mask_dict(opened, 0)[1]
    print("undo: pixels differing from the single-click mask:", int((after != first).sum()))
    assert np.array_equal(after, first)
    assert actions.undo(opened) == 0 and opened.video.prompts() == []
    assert 1 not in opened.video.object_ids  # no prompt left: the engine forgets the object
    assert actions.undo(opened) is None
    actions.set_mode(opened, "positive")
    actions.click(opened, 0, *DISC_XY)
    actions.click(opened, 3, 60, 60)
    actions.clear_frame(opened, 0)
    assert [p.frame_idx for p in opened.video.prompts()] == [3]
    assert actions.mask_dict(opened, 0).get(1, np.zeros(1, bool)).sum() >= 0  # still renders
    with pytest.raises(PromptError, match="from 0 to 5"):
        actions.clear_frame(opened, 99)


def test_objects_add_select_rename_remove_each_in_its_own_colour(opened):
    limits = Limits(max_objects=3)
    second = actions.add_object(opened, limits)
    third = actions.add_object(opened, limits, "ball")
    assert list(opened.video.object_names) == [1, 2, 3] and opened.current == 3
    assert len({color_of(o) for o in opened.video.object_names}) == 3
    with pytest.raises(LimitExceededError, match="up to 3 objects"):
        actions.add_object(opened, limits)
    actions.select_object(opened, 1)
    actions.click(opened, 0, *DISC_XY)
    actions.select_object(opened, second)
    actions.click(opened, 0, 120, 100)
    actions.rename_object(opened, second, "  shadow ")
    assert opened.video.object_names[2] == "shadow"
    with pytest.raises(PromptError):
        actions.rename_object(opened, 2, "   ")
    assert set(actions.mask_dict(opened, 0)) == {1, 2}
    actions.remove_object(opened, 2)
    assert set(actions.mask_dict(opened, 0)) == {1}
    assert all(p.obj_id != 2 for p in opened.video.prompts()) and opened.current == third
    with pytest.raises(UnknownObjectError, match="no object 2"):
        actions.select_object(opened, 2)
    assert "ball" in render.objects_html(opened) and "shadow" not in render.objects_html(opened)


# --- finding objects ------------------------------------------------------------------------------

PERMISSIVE = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def test_find_objects_then_pick_one_by_clicking_then_add_all(opened):
    """"Find objects" proposes the frame's masks as outlined candidates; a click on one makes it an
    object ("object N") with that mask; "Add all" takes the rest above a size."""
    seen = []
    count = actions.find_objects(opened, 0, options=PERMISSIVE, progress=lambda d, t: seen.append((d, t)))
    records = opened.candidates.records
    print("candidates:", count, "areas:", [r["area"] for r in records], "progress calls:", len(seen))
    assert count == len(records) >= 2 and seen and seen[-1][0] == seen[-1][1]
    assert opened.video.prompts() == []  # nothing is tracked until the user picks
    picture = render.frame_image(opened, 0, min_side=1)
    assert (picture == render.CANDIDATE).all(axis=-1).any()  # outlined
    smallest = min(records, key=lambda r: r["area"])
    ys, xs = np.nonzero(smallest["segmentation"])
    fm = actions.click(opened, 0, float(xs[0]), float(ys[0]))
    new_id = opened.current
    assert new_id != 1 and opened.video.object_names[new_id] == f"object {new_id}"
    assert np.array_equal(fm.mask(new_id), _engine_mask_prompt(opened, smallest["segmentation"]))
    assert len(opened.candidates.records) == count - 1
    big = sorted(r["area"] for r in opened.candidates.records)[-1]
    notes = actions.add_candidates(opened, min_area=big, limits=Limits())
    assert len(opened.video.prompted_objects()) == 2 and opened.candidates is not None and notes == []
    with pytest.raises(PromptError, match="no proposed object has"):
        actions.add_candidates(opened, min_area=10**6)
    actions.dismiss_candidates(opened)
    with pytest.raises(PromptError, match="Find objects"):
        actions.add_candidates(opened)
    with pytest.raises(PromptError, match="no objects found on frame 0"):
        actions.find_objects(opened, 0, options={**PERMISSIVE, "pred_iou_thresh": 1.01})


def _engine_mask_prompt(session, mask) -> np.ndarray:
    """What the engine gives for ``mask`` as a mask prompt on frame 0 (a fresh session)."""
    with session.video.model.open_session(session.frames) as ref:
        return ref.add_mask(0, 1, mask).masks[0]


def test_found_objects_respect_the_object_limit(opened):
    actions.find_objects(opened, 0, options=PERMISSIVE)
    limits = Limits(max_objects=2)
    notes = actions.add_candidates(opened, limits=limits)
    assert len(opened.video.object_names) == 2 and any("largest" in n or "limit" in n for n in notes)
    with pytest.raises(LimitExceededError, match="up to 2 objects"):
        actions.add_candidates(opened, limits=limits)


# --- tracking -----------------------------------------------------------------------------------

def test_track_reports_progress_and_matches_the_engine(tracked, predictor, clip):
    session, steps = tracked
    assert [s.done for s in steps] == list(range(1, len(steps) + 1))
    assert steps[-1].done == steps[-1].total and {s.frame_idx for s in steps} == set(range(N_FRAMES))
    assert "frames" in actions.format_step(steps[-1]) and "ETA" in render.progress_html(steps[-1])
    with predictor.open_session(str(clip)) as ref:
        ref.add_prompt(0, 1, points=np.asarray([DISC_XY], np.float32), labels=np.asarray([1], np.int32))
        expected = {fm.frame_idx: fm.masks[0] for fm in ref.propagate()}
    worst = max(int((actions.mask_dict(session, i)[1] != expected[i]).sum()) for i in range(N_FRAMES))
    print("tracked frames, worst pixel difference to the engine run:", worst)
    assert worst == 0 and all(expected[i].any() for i in range(N_FRAMES))


def test_cancel_keeps_finished_frames_and_track_again_resumes(opened):
    actions.click(opened, 0, *DISC_XY)
    seen = []
    with pytest.raises(CancelledError):
        for step in actions.track(opened):
            seen.append(step.frame_idx)
            if len(seen) == 3:
                opened.cancel.set()
    assert len(seen) == 3 and not opened.cancel.is_set() and not opened.lock.locked()
    assert all(opened.video.result(i) is not None for i in seen)
    rest = list(actions.track(opened))
    assert {s.frame_idx for s in rest} == set(range(N_FRAMES))


def test_a_correction_after_tracking_shows_at_once_and_track_again_updates(opened):
    actions.click(opened, 0, *DISC_XY)
    list(actions.track(opened))
    before = actions.mask_dict(opened, 4)[1].copy()
    actions.set_mode(opened, "negative")
    fm = actions.click(opened, 4, 140, 100)
    assert np.array_equal(actions.mask_dict(opened, 4)[1], fm.masks[0])  # the click's mask, not the old track
    steps = list(actions.track(opened))
    print("frame 4 pixels changed by the correction:", int((actions.mask_dict(opened, 4)[1] != before).sum()))
    assert 4 in {s.frame_idx for s in steps}  # re-tracked: what is shown is the new track's mask
    assert np.array_equal(actions.mask_dict(opened, 4)[1], opened.video.result(4).masks[0])


def test_edits_are_refused_while_tracking_runs(opened):
    actions.click(opened, 0, *DISC_XY)
    run = actions.track(opened)
    next(run)
    with pytest.raises(SessionBusyError):
        next(actions.track(opened))
    run.close()  # the generator's finally releases the lock
    assert not opened.lock.locked()


# --- outputs ------------------------------------------------------------------------------------

def test_png_zip_export_holds_every_frame_of_every_object(tracked):
    session, _ = tracked
    path = actions.export_masks(session, "png_zip")
    assert path.name == "disc.zip"
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        assert len(names) == N_FRAMES and all(n.startswith("object_1/disc_") for n in names)
        for i, name in enumerate(names):
            matte = np.asarray(Image.open(io.BytesIO(zf.read(name))))
            assert matte.shape == (SIZE[1], SIZE[0])
            assert np.array_equal(matte > 127, actions.mask_dict(session, i)[1])


@pytest.mark.parametrize("fmt, suffix", [
    ("matte_mp4", ".mp4"), ("webm", ".webm"), ("prores", ".mov"), ("coco_rle", ".json"),
    ("overlay_mp4", ".mp4"), ("effect_blur", ".mp4"), ("effect_replace", ".mp4"),
])
def test_every_offered_format_is_written(tracked, fmt, suffix):
    session, _ = tracked
    path = actions.export_masks(session, fmt, background=actions.hex_colour("rgba(10, 20, 30, 1)"))
    assert path.suffix == suffix and path.stat().st_size > 0


def test_soft_edges_export_and_checkerboard_preview(tracked):
    """The app's "Soft edges" switch: the PNG mattes carry soft alpha (grey levels at the edge,
    binary inside and outside), and the preview lays the cut-out over a checkerboard."""
    session, _ = tracked
    hard = logic_mattes(actions.export_masks(session, "png_zip"))
    soft = logic_mattes(actions.export_masks(session, "png_zip", soft_edges=True, edge_band_px=4))
    from scipy.ndimage import binary_dilation, binary_erosion

    edge = (soft > 0) & (soft < 255)
    print("soft matte: pixels between 0 and 255 on frame 0:", int(edge[0].sum()))
    assert edge[0].any()
    for k in range(N_FRAMES):  # soft only in the band around the tracked edge (4 px, +1 for rounding)
        mask = hard[k] > 127
        square = np.ones((11, 11), bool)
        band = binary_dilation(mask, square) & ~binary_erosion(mask, square, border_value=1)
        assert not (edge[k] & ~band).any()
        assert np.array_equal(soft[k][~band] > 127, mask[~band])
    picture = render.cutout_image(session, 0, band_px=4)
    assert picture.shape == (SIZE[1], SIZE[0], 3)
    outside = ~binary_dilation(actions.mask_dict(session, 0)[1], np.ones((11, 11), bool))  # beyond the band
    greys = picture[outside]
    assert (np.abs(greys[:, 0].astype(int) - greys[:, 2]) < 2).mean() > 0.95  # the checkerboard's greys


def logic_mattes(path: Path) -> np.ndarray:
    """(frames, H, W) uint8 of object 1's mattes in a PNG zip (16-bit read back as 8-bit)."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        frames = [np.asarray(Image.open(io.BytesIO(zf.read(n)))) for n in names]
    return np.stack([(f // 257).astype(np.uint8) if f.dtype == np.uint16 else f for f in frames])


def test_a_track_in_gpu_leases_equals_one_track(tracked, predictor, clip, monkeypatch, tmp_path):
    """On ZeroGPU a Track runs as several leases sized from its work; the masks equal one Track's."""
    from sam2_web.ui import gpu

    session, _ = tracked
    expected = {i: actions.mask_dict(session, i)[1] for i in range(N_FRAMES)}
    store = SessionStore(ttl_s=60, root=tmp_path / "leased")
    leased = store.create("m")
    actions.open_clip(leased, predictor, clip, Limits())
    actions.click(leased, 0, *DISC_XY)
    durations = []

    def recording(fn, duration):
        durations.append(duration)
        return fn

    monkeypatch.setattr(gpu, "zero_gpu", lambda: True)
    monkeypatch.setattr(gpu, "on_gpu", recording)
    # 1 s/frame (the fallback: not measured): a 5 s lease with 3 s start-up holds 2 of the 6 frames.
    policy = gpu.LeasePolicy(max_s=5, short_s=1, margin=1, startup_s=3, fallback_s_per_frame=1.0)
    steps = list(actions.track(leased, leases=policy))
    print("lease durations:", durations)
    assert len(durations) == 3 and max(durations) <= 5
    assert [s.done for s in steps][-1] == steps[-1].total
    assert all(np.array_equal(actions.mask_dict(leased, i)[1], expected[i]) for i in range(N_FRAMES))
    store.close_all()


def test_export_before_any_click_says_what_to_do(opened):
    with pytest.raises(PromptError, match="nothing to export"):
        actions.export_masks(opened, "png_zip")


def test_switching_model_replays_the_clicks(opened, predictor):
    actions.click(opened, 0, *DISC_XY)
    before = actions.mask_dict(opened, 0)[1].copy()
    actions.switch_model(opened, predictor, "sam2.1_hiera_t")
    assert np.array_equal(actions.mask_dict(opened, 0)[1], before)


def test_samurai_switch_reopens_the_session_with_it_and_replays_the_clicks(opened, predictor):
    """The "Robust to occlusion (SAMURAI)" checkbox: per session, the clicks survive, and the
    engine session tracks with SAMURAI's memory (the model's default stays off)."""
    actions.click(opened, 0, *DISC_XY)
    before = actions.mask_dict(opened, 0)[1].copy()
    assert opened.video.tracker.motion_config is None
    actions.set_samurai(opened, predictor, True)
    assert opened.samurai is True and opened.video.tracker.motion_config is predictor.motion_config
    assert actions.mask_dict(opened, 0)[1].any()
    assert predictor.default_options.samurai is None and not predictor.samurai_mode
    actions.set_samurai(opened, predictor, False)
    assert opened.video.tracker.motion_config is None
    assert np.array_equal(actions.mask_dict(opened, 0)[1], before)


# --- API helpers --------------------------------------------------------------------------------

def test_api_prompts_json_is_parsed_or_refused_with_a_hint():
    # /segment reads its prompts with the jobs' parser, as the CLI and the plugins do.
    prompts = prompts_from_json(json.dumps({"prompts": [
        {"frame": 2, "object": 3, "points": [[0.5, 0.25]], "labels": [1], "normalized": True, "name": "dog"},
        {"frame": 0, "object": 1, "box": [0.125, 0.25, 0.25, 0.5], "normalized": True},
    ]}))
    job = MaskJob(clip=Path("clip.mp4"), objects=prompts.objects, normalized=prompts.normalized,
                  output=OutputSpec(Path("out")))
    dog, boxed = job.objects_in_pixels(200, 100)
    assert dog.frames[0].points == ((100.0, 25.0),) and dog.obj_id == 3 and dog.name == "dog"
    assert boxed.frames[0].box == (25.0, 25.0, 50.0, 50.0) and boxed.frames[0].points == ()
    for bad in ("not json", "[]", '[{"points": "x"}]', "[1, 2]"):
        with pytest.raises(PromptError):
            prompts_from_json(bad)


def test_segment_refuses_bad_prompts_with_a_clear_message_before_any_model_work(clip):
    from sam2_web.ui.api import Api
    from sam2_web.ui.context import AppContext

    ctx = AppContext.from_overrides(["device=cpu", "limits.max_objects=2"])
    api = Api(ctx)
    cases = [
        ("", "give at least one prompt"),
        ("not json", "not valid JSON"),
        ('[{"frame": 0, "object": 1, "points": [[5, 5]], "labels": [1, 0]}]', "labels"),
        ('[{"frame": 0, "object": 1, "pointz": [[5, 5]]}]', "unknown key"),
        ('[{"frame": 0, "object": 1, "points": [[5, 5]]}, {"frame": 1, "object": 2, "points": [[0.5, 0.5]],'
         ' "normalized": true}]', "mix of normalized and pixel"),
        ('[{"frame": 0, "object": 0, "points": [[5, 5]]}]', "from 1 to"),
        ('{"objects": [{"id": 1, "mask": {"frame": 0, "path": "/etc/hostname"}}]}', "not start masks"),
        (json.dumps([{"frame": 0, "object": k, "points": [[5, 5]]} for k in (1, 2, 3)]), "up to 2 objects"),
    ]
    for prompts, words in cases:
        with pytest.raises((PromptError, LimitExceededError), match=words):
            api.segment(str(clip), prompts, "", "coco_rle")
    with pytest.raises(ExportError, match="unknown format"):
        api.segment(str(clip), "[]", "", "gif")
    assert len(ctx.store) == 0  # nothing was opened for a refused job
    ctx.store.close_all()


def test_set_prompts_checks_labels_and_boxes(opened):
    actions.ensure_object(opened, 5, Limits(), "kite")
    with pytest.raises(PromptError, match="labels"):
        actions.set_prompts(opened, 0, 5, points=[[10, 10]], labels=[])
    with pytest.raises(PromptError, match="points or a box"):
        actions.set_prompts(opened, 0, 5)
    fm = actions.set_prompts(opened, 0, 5, points=[[30, 26]], labels=[1], box=[5, 5, 50, 45])
    assert 5 in fm.obj_ids and opened.video.object_names[5] == "kite"
    assert len(opened.video.prompts(0)) == 2
    actions.set_prompts(opened, 0, 5, points=[[31, 27]], labels=[1])  # replaces, not appends
    assert len(opened.video.prompts(0)) == 1



# --- models -------------------------------------------------------------------------------------

def test_the_model_comes_from_the_hub_with_byte_progress_and_stays_cached(ckpt, tmp_path, monkeypatch):
    from sam2_web.ui.context import AppContext

    data = ckpt.read_bytes()
    with serve_hub({(REPO_ID, "main", FILENAME): data}) as hub:
        hub.use(monkeypatch, tmp_path)
        ctx = AppContext.from_overrides([*OVERRIDES, "device=cpu"])
        seen: list[tuple[int, int | None]] = []
        first = ctx.predictor(on_progress=lambda done, total: seen.append((done, total)))
        print("download progress calls:", len(seen), "last:", seen[-1])
        assert seen[-1] == (len(data), len(data))
        assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
        gets = len(hub.requests.paths("GET"))
        assert ctx.predictor("tiny") is first and len(hub.requests.paths("GET")) == gets  # cached
        with pytest.raises(UnknownModelError, match="pick one of"):
            ctx.predictor("sam3_hiera_xl")
        with pytest.raises(CheckpointError):  # a model this Hub does not have
            ctx.predictor("sam2_hiera_s")
    ctx.store.close_all()


def test_display_scale_shrinks_big_frames_and_enlarges_small_ones():
    assert render.display_scale(3840, 2160) == 3.0  # 4K shown 1280 wide: a click maps back x3
    assert render.display_scale(800, 600) == 1.0
    assert render.display_scale(160, 120) == 0.25
    assert actions.hex_colour("#00b140") == (0, 177, 64) and actions.hex_colour("rgb(1, 2.4, 3)") == (1, 2, 3)
    with pytest.raises(PromptError, match="rrggbb"):
        actions.hex_colour("green")
