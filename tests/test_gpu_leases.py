"""ZeroGPU leases on the CPU, with the real ``spaces`` package (its decorator runs the function
unchanged outside ZeroGPU): the durations asked for, and a Track split over several leases that
gives the masks of one uninterrupted Track, with continuous progress and a working Stop."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sam2_web.build import build_sam2_video_predictor
from sam2_web.errors import CancelledError
from sam2_web.models import compose_app_config
from sam2_web.speeds import Speed
from sam2_web.ui import gpu
from sam2_web.ui.gpu import LeasePolicy, plan_track, track_in_leases, track_lease_seconds
from tests.clips import moving_disc_frames

OVERRIDES = ["++model.image_size=256", "++model.num_maskmem=3", "++model.max_obj_ptrs_in_encoder=4"]
N_FRAMES = 8
POLICY = LeasePolicy(max_s=40, short_s=8, margin=1.0, startup_s=5, fallback_s_per_frame=1.0)
SLOW = Speed("test device", ((1, 10.0),))  # 10 s/frame: one 40-s lease holds 3 frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_spaces_is_the_real_package_and_a_no_op_here():
    import spaces

    assert gpu.spaces is spaces

    def fn(x):
        return x + 1

    assert gpu.on_gpu(fn, 30)(1) == 2 and gpu.short_call(fn)(2) == 3


def test_durations_follow_the_work_and_the_cap():
    policy = LeasePolicy(max_s=120, short_s=20, margin=1.5, startup_s=10, fallback_s_per_frame=0.2)
    assert track_lease_seconds(100, 3, 0.1, policy) == 25  # 100 x 0.1 x 1.5 + 10
    assert track_lease_seconds(1, 1, 0.1, policy) == 20  # never under a short lease
    assert track_lease_seconds(10_000, 3, 0.1, policy) == 120  # capped at the lease limit
    assert gpu.seconds_per_frame(None, 3, policy) == pytest.approx(0.6)  # not measured: fallback x objects
    assert gpu.seconds_per_frame(Speed("d", ((1, 0.05), (3, 0.09))), 3, policy) == 0.09
    plan = plan_track(1000, 3, Speed("d", ((3, 0.09),)), policy)
    assert plan.per_lease == 814 and plan.durations == [120, 36]  # then 186 x 0.09 x 1.5 + 10 = 35.1
    assert policy.short() == 20
    with pytest.raises(ValueError):
        LeasePolicy(margin=0.5)
    with pytest.raises(ValueError):
        LeasePolicy.from_config({"max_seconds": 60})


def test_the_app_config_has_the_lease_settings():
    policy = LeasePolicy.from_config(compose_app_config(["device=cpu"]).gpu)
    assert policy == LeasePolicy()


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return build_sam2_video_predictor("sam2.1_hiera_t", None, device="cpu", hydra_overrides_extra=OVERRIDES)


@pytest.fixture(scope="module")
def frames():
    return moving_disc_frames(N_FRAMES, size=(128, 96), radius=20)[0]


def _prompt(session):
    session.add_prompt(2, 1, points=[[40, 30]], labels=[1])


def _recording_lease(durations):
    def lease(fn, duration):
        durations.append(duration)
        return gpu.on_gpu(fn, duration)  # the real spaces decorator
    return lease


def test_a_track_longer_than_a_lease_runs_as_several_and_equals_one_track(predictor, frames):
    with predictor.open_session(frames) as session:
        _prompt(session)
        whole = {m.frame_idx: m.masks for m in session.propagate(direction="both")}
    total = N_FRAMES + 1  # forward 2..7, backward 2..0
    assert len(whole) == N_FRAMES
    durations, seen = [], []
    with predictor.open_session(frames) as session:
        _prompt(session)
        results = list(track_in_leases(
            session, frames=total, objects=1, speed=SLOW, policy=POLICY, lease=_recording_lease(durations),
            progress=lambda done, of: seen.append((done, of)), direction="both",
        ))
        got = {m.frame_idx: m.masks for m in session.results()}
    assert durations == [35, 35, 35]  # 3 frames x 10 s + 5 s each
    assert seen == [(k, total) for k in range(1, total + 1)]  # continuous across leases
    assert len(results) >= total
    assert sorted(got) == sorted(whole)
    for f in whole:
        np.testing.assert_array_equal(got[f], whole[f])
    assert any(m.any() and not m.all() for m in whole.values())


def test_stop_ends_the_track_across_leases(predictor, frames):
    stop = threading.Event()
    durations = []

    def progress(done, of):
        if done == 4:
            stop.set()

    with predictor.open_session(frames) as session:
        _prompt(session)
        with pytest.raises(CancelledError):
            for _ in track_in_leases(session, frames=N_FRAMES + 1, objects=1, speed=SLOW, policy=POLICY,
                                     lease=_recording_lease(durations), progress=progress, cancel=stop,
                                     direction="both"):
                pass
        assert len(durations) == 2  # the second lease was stopped; no third one started
        assert len(session.tracker.results) == 4
