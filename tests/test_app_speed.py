"""The app tells how long things take: the model picker's quality and speed, the estimate before
Track, the live rate while it runs, and the figures it records for the next estimate.

The model is the random-weight SAM 2.1 tiny at 256 px that the other app tests use; here it
stands in for a model loaded by name (``models.load_predictor`` registers those), so its runs
are recorded like a real one's. Figures go to the temp cache conftest sets up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appserver import app_checkpoint
from clips import make_moving_disc_clip
from sam2_web import models, speeds
from sam2_web.speeds import BenchRun, Speed
from sam2_web.ui import actions, render, speed
from sam2_web.ui.limits import Limits
from sam2_web.ui.state import SessionStore

CPU = "2-thread CPU (Test CPU)"
N_FRAMES = speeds.WARMUP_FRAMES + 6
DISC_XY = (30.0, 26.0)  # inside the disc on frame 0


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, one_torch_thread):
    from sam2_web.build import build_sam2_video_predictor

    ckpt = app_checkpoint(tmp_path_factory.mktemp("ckpt") / "t256.pt")
    predictor = build_sam2_video_predictor("sam2.1/sam2.1_hiera_t.yaml", ckpt, device="cpu",
                                           hydra_overrides_extra=["++model.image_size=256"])
    models._names[predictor] = "sam2.1_hiera_t"  # as load_predictor("sam2.1_hiera_t") would
    return predictor


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path, _ = make_moving_disc_clip(tmp_path_factory.mktemp("clip") / "disc.mp4", N_FRAMES, (160, 120), radius=20)
    return path


@pytest.fixture
def session(tmp_path, predictor, clip):
    store = SessionStore(ttl_s=60, root=tmp_path / "sessions")
    s = store.create("sam2.1_hiera_t")
    actions.open_clip(s, predictor, clip, Limits())
    yield s
    store.close_all()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "speeds.json"
    monkeypatch.setenv(speeds.CACHE_ENV, str(path))
    return path


def test_before_track_the_app_estimates_frames_times_objects_times_s_per_frame(session):
    bench = Speed(CPU, ((1, 2.0), (3, 4.0)))
    assert speed.estimate_text(session, bench) == "Click on the object to segment, then press Track."
    actions.click(session, 0, *DISC_XY)
    est = speed.estimate(session, bench)
    assert (est.frames, est.objects, est.s_per_frame, est.seconds) == (N_FRAMES, 1, 2.0, N_FRAMES * 2.0)
    assert speed.estimate_text(session, bench) == (
        f"Press Track: about {N_FRAMES * 2} s ({N_FRAMES} frames × 1 object at 2.0 s/frame; bench, {CPU}).")
    actions.add_object(session, Limits())
    actions.click(session, 3, 100.0, 60.0)
    # Two objects: between the 1- and 3-object figures (3.0 s/frame), over every frame.
    assert speed.estimate(session, bench).seconds == pytest.approx(N_FRAMES * 3.0)
    assert f"{N_FRAMES} frames × 2 objects at 3.0 s/frame" in speed.estimate_text(session, bench)
    assert speed.starting_text(session, bench) == f"Starting… (estimated about {N_FRAMES * 3} s)"
    # No figure for this model here: say so instead of guessing.
    assert "not measured for this model on this device" in speed.estimate_text(session, None)
    assert speed.starting_text(session, None) == "Starting…"
    assert "Model X ready." in speed.estimate_html(session, None, "Model X ready.")
    assert speed.duration_text(3 * 3600 + 125) == "3 h 02 min"


def test_track_records_the_steady_rate_and_the_next_estimate_uses_it(session, cache):
    label = speeds.device_label("cpu")
    assert speed.session_speed(session) is None  # nothing measured, no bench figures in tests
    actions.click(session, 0, *DISC_XY)
    steps = list(actions.track(session))
    # While tracking, the progress line gives the live rate and ETA.
    assert "s/frame" in render.progress_html(steps[-1]) and "ETA" in render.progress_html(steps[-1])
    here = speeds.local_speed("sam2.1_hiera_t", label)
    assert here is not None and here.here and here.per_frame(1) > 0
    # Frame 0 was encoded by the click: tracked from cached features, not timed.
    timed = len([s for s in steps if s.frame_idx != 0]) - speeds.WARMUP_FRAMES
    recorded = speeds._read_cache(cache)["devices"][label]["sam2.1_hiera_t"]
    assert recorded["frames"] == {"1": timed}
    # Track again after a correction: every frame comes from cached features, nothing is recorded.
    actions.click(session, 0, DISC_XY[0] + 2, DISC_XY[1])
    list(actions.track(session))
    assert speeds._read_cache(cache)["devices"][label]["sam2.1_hiera_t"]["frames"] == {"1": timed}
    text = speed.estimate_text(session, speed.session_speed(session))
    assert "measured on this server" in text and f"{N_FRAMES} frames × 1 object" in text


def test_a_click_on_a_new_frame_is_timed_and_one_on_an_encoded_frame_is_not(session, cache):
    label = speeds.device_label("cpu")
    with speed.timed_click(session, 2):
        actions.click(session, 2, *DISC_XY)
    first = speeds.local_speed("sam2.1_hiera_t", label)
    assert first is not None and first.click_new_frame_s > 0
    with speed.timed_click(session, 2):
        actions.click(session, 2, DISC_XY[0] + 3, DISC_XY[1])
    assert speeds._read_cache(cache)["devices"][label]["sam2.1_hiera_t"]["clicks"] == 1
    actions.set_mode(session, "box")
    with speed.timed_click(session, 5):  # a first corner runs no model
        actions.click(session, 5, 10.0, 10.0)
    assert speeds._read_cache(cache)["devices"][label]["sam2.1_hiera_t"]["clicks"] == 1


def test_a_network_changed_by_overrides_records_nothing(tmp_path, clip, cache):
    from sam2_web.build import build_sam2_video_predictor

    other = build_sam2_video_predictor("sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
                                       hydra_overrides_extra=["++model.image_size=256"])
    store = SessionStore(ttl_s=60, root=tmp_path / "s")
    s = store.create("sam2.1_hiera_t")
    try:
        actions.open_clip(s, other, clip, Limits())
        with speed.timed_click(s, 0):
            actions.click(s, 0, *DISC_XY)
        assert speed.session_speed(s) is None and not cache.exists()
    finally:
        store.close_all()


def test_the_picker_shows_published_quality_and_speed_with_where_it_was_measured(cache):
    at = speed.Where(speeds.device_label("cpu"), "cpu")
    bench = {"cpu": BenchRun("cpu", CPU, "2026-11-26", "2.14.1", "test",
                             {"edgetam": {"s_per_frame_3obj": 4.0, "click_new_frame_s": 0.84}})}
    choices = dict((name, label) for label, name in speed.model_choices(at, bench=bench))
    assert choices["edgetam"] == "EdgeTAM (13.9 M) · SA-V test J&F 71.7 · 4.0 s/frame bench"
    assert choices["sam2.1_hiera_t"] == "SAM 2.1 tiny (38.9 M) · SA-V test J&F 76.5 · not measured"
    assert "J&F not published" in choices["efficienttam_ti_512x512"]
    speeds.record_frames("sam2.1_hiera_t", at.label, 3, [0.75] * 20)
    choices = dict((name, label) for label, name in speed.model_choices(at, bench=bench))
    assert choices["sam2.1_hiera_t"].endswith("0.75 s/frame here")
    table = speed.models_markdown(at, bench=bench)
    edgetam = next(line for line in table.splitlines() if "`edgetam`" in line)
    assert "SA-V test 71.7" in edgetam and "4.0 s/frame" in edgetam and "0.84 s" in edgetam and CPU in edgetam
    assert "facebook/EdgeTAM" in edgetam and "Apache-2.0" in edgetam
    assert "this server" in next(line for line in table.splitlines() if "`sam2.1_hiera_t`" in line)
    assert "facebookresearch/EdgeTAM README" in table  # the source, as a numbered note
    info = speed.picker_info(at, "EfficientTAM-S 512 px")
    assert info.startswith("Picked for this CPU (model=auto): EfficientTAM-S 512 px.") and at.label in info
