"""The GPU path of the engine, checked on the CPU through the same code: the propagation loop
makes no host sync (counted by wrapping the calls that would sync on CUDA), results stay lazy
until read, frames are prepared ahead on a background thread, and evicted memories are written
by a worker while reads still find them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from host_syncs import HostSyncs
from sam2_web.build import build_sam2_video_predictor
from sam2_web.video.background import HostCopy, SerialWorker, pack_masks, unpack_masks
from sam2_web.video.state import FrameMasks
from sam2_web.video.store import ResultStore
from tests.clips import moving_disc_frames

OVERRIDES = ["++model.image_size=256", "++model.num_maskmem=3", "++model.max_obj_ptrs_in_encoder=4"]
N_FRAMES = 8

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return build_sam2_video_predictor("sam2.1_hiera_t", None, device="cpu", hydra_overrides_extra=OVERRIDES)


@pytest.fixture(scope="module")
def frames():
    clip, _ = moving_disc_frames(N_FRAMES, size=(128, 96), radius=20)
    return clip


def _three_objects(session, frame=3):
    session.add_prompt(frame, 1, points=[[30, 24]], labels=[1])
    session.add_prompt(frame, 2, box=[60, 40, 120, 90])
    session.add_prompt(frame, 3, points=[[100, 20], [20, 80]], labels=[1, 0])


def test_the_propagation_loop_makes_no_host_sync(predictor, frames):
    with predictor.open_session(frames, fill_hole_area=8, history="disk") as session:
        _three_objects(session)
        session.tracker.preflight()  # encodes the clicked frames' memories (not the per-frame loop)
        yielded = []
        with HostSyncs() as syncs:
            for result in session.propagate(direction="both"):
                yielded.append(result)
        assert syncs.total == 0, f"host syncs in the per-frame loop: {dict(syncs.places)}"
        assert len(yielded) == N_FRAMES + 1  # forward 3..7, then backward 3..0
        masks = [r.masks for r in yielded]
        # The counter is not blind: reading fresh lazy masks is a device-to-host copy.
        fresh = FrameMasks.on_device(0, [1], torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1))
        with HostSyncs() as reading:
            assert fresh.masks.shape == (1, 4, 4) and fresh.scores.shape == (1,)
        assert reading.calls["Tensor.numpy"] == 2
        stored = {r.frame_idx: r.masks for r in session.results()}
        for result, m in zip(yielded, masks):
            assert m.shape == (3, 96, 128) and m.dtype == bool
            np.testing.assert_array_equal(stored[result.frame_idx], m)
            assert result.scores.dtype == np.float32 and result.scores.shape == (3,)
        assert any(m.any() and not m.all() for m in masks)


def test_frames_are_prepared_ahead_on_a_background_thread(predictor, frames):
    with predictor.open_session(frames) as session:
        threads = []
        original = session.frames.get_resized

        def recorded(i, size):
            threads.append(threading.current_thread().name)
            return original(i, size)

        session.frames.get_resized = recorded
        session.add_prompt(0, 1, points=[[30, 24]], labels=[1])
        list(session.propagate(direction="forward"))
    ahead = sum(name.startswith("sam2web-frames") for name in threads)
    assert len(threads) == N_FRAMES and ahead >= N_FRAMES - 2, threads


def test_results_read_before_encoding_and_newest_put_wins():
    store = ResultStore(5, 7)
    gate = threading.Event()
    store._worker.submit(gate.wait)  # hold the worker: the next puts stay queued
    first = torch.zeros(2, 5, 7, dtype=torch.bool)
    second = torch.zeros(2, 5, 7, dtype=torch.bool)
    second[1, 2, 3] = True
    for masks in (first, second):
        store.put(FrameMasks.on_device(4, [1, 2], masks, torch.tensor([0.5, 0.25])))
    assert 4 in store and len(store) == 1 and store.frames() == [4]
    got = store.get(4, [2, 9])  # served from the queue
    np.testing.assert_array_equal(got.masks[0], second[1].numpy())
    assert not got.masks[1].any() and got.scores.tolist() == [0.25, 0.0]
    gate.set()
    store.flush()
    np.testing.assert_array_equal(store.get(4).masks, second.numpy())
    store.close()


def test_bit_packing_round_trips_and_matches_numpy():
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (3, 5), (17, 23), (8, 8)):
        masks = rng.random((3, h, w)) < 0.4
        packed = pack_masks(torch.from_numpy(masks)).numpy()
        np.testing.assert_array_equal(packed, np.packbits(masks.reshape(3, -1), axis=1))
        np.testing.assert_array_equal(unpack_masks(packed, h, w), masks)
    copy = HostCopy(torch.arange(4))
    assert copy.ready() and copy.result().tolist() == [0, 1, 2, 3]


def test_worker_runs_in_order_and_reports_failures():
    worker = SerialWorker("test")
    seen = []
    for i in range(5):
        worker.submit(seen.append, i)
    worker.flush()
    assert seen == list(range(5))

    def fail():
        raise OSError("disk full")

    worker.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        worker.flush()
    worker.submit(seen.append, 5)  # the error was reported once; the worker goes on
    worker.close()
    assert seen[-1] == 5
    with pytest.raises(RuntimeError):
        worker.submit(seen.append, 6)


def test_spilled_memories_are_read_while_still_being_written(predictor, frames, tmp_path):
    with predictor.open_session(frames, history="disk", temp_dir=str(tmp_path)) as session:
        session.add_prompt(0, 1, points=[[30, 24]], labels=[1])
        writer = session.tracker._spill_writer
        gate = threading.Event()
        list(session.propagate(direction="forward", max_frames=2))
        writer.submit(gate.wait)  # writes queued from now on wait
        list(session.propagate(direction="forward"))
        bank = session.tracker.objects[1].memory
        spilled = sorted(bank._spilled)
        assert spilled and all(bank.get(f) is not None for f in spilled)
        gate.set()
        session.tracker.flush()
        files = list(tmp_path.glob("sam2web-session-*/memory/*.pt"))
        assert len(files) == len(spilled)
        assert all(bank.get(f) is not None for f in spilled)


def test_a_job_writes_its_formats_while_it_tracks(predictor, tmp_path):
    from sam2_web.jobs import MaskJob, OutputSpec, parse_prompts, run_job
    from tests.clips import make_moving_disc_clip

    clip, _ = make_moving_disc_clip(tmp_path / "disc.mp4", n_frames=N_FRAMES, size=(128, 96), radius=20)
    prompts = parse_prompts({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[40, 30]]}]}]})
    events = []
    job = MaskJob(clip=clip, objects=prompts.objects, output=OutputSpec(out_dir=tmp_path / "out",
                  formats=("png", "prores")), direction="both")
    result = run_job(job, predictor=predictor, progress=lambda stage, done, total: events.append((stage, done)))
    assert set(result.outputs) == {"png", "prores"}
    last_track = max(k for k, (stage, _) in enumerate(events) if stage == "track")
    first_export = min(k for k, (stage, _) in enumerate(events) if stage.startswith("export"))
    assert first_export < last_track  # each frame is final once tracked: written meanwhile
    assert [d for s, d in events if s == "export png"] == list(range(1, N_FRAMES + 1))
    pngs = sorted((tmp_path / "out").glob("*_png/**/*.png"))
    assert len(pngs) == N_FRAMES


def test_concurrent_exports_wait_for_final_frames_and_stop_together():
    from sam2_web.errors import CancelledError, ExportError
    from sam2_web.jobs.overlap import ConcurrentExports, FinalFrames

    final = FinalFrames([(3, 6), (0, 3)])  # forward 3..6, then backward 3..0: frame 3 twice
    written = []

    def write_one(fmt, masks_of, frames):
        for i in range(8):
            written.append((fmt, i, masks_of(i)))

    exports = ConcurrentExports(write_one, ["a"], lambda i: {1: i}, final, None, lambda fmt: False)
    exports.start()
    for f in (3, 4, 5, 6):
        final.produced(f, 0)
    assert not written  # frame 0 waits for the backward pass
    for f in (3, 2, 1, 0):
        final.produced(f, 1)
    exports.join()
    assert [i for _, i, _ in written] == list(range(8)) and written[7][2] == {1: 7}  # 7: no pass, not waited for

    stopped = FinalFrames([(0, 5)])

    def failing(fmt, masks_of, frames):
        if fmt == "bad":
            raise ExportError("disk full")
        masks_of(0)

    exports = ConcurrentExports(failing, ["bad", "good"], lambda i: None, stopped, None, lambda fmt: False)
    exports.start()
    for thread in exports._threads[:1]:
        thread.join()
    assert exports.failed()
    stopped.fail(CancelledError("tracking stopped"))  # what the job does once it sees the failure
    with pytest.raises(ExportError, match="disk full"):
        exports.join()
