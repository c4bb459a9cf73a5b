"""Budgets: every resource a visitor can make the server spend has a ceiling in ``configs/app.yaml``,
a full budget refuses new work with a message, and the sessions already open keep working and
keep what they made.

Sessions per server, points per prompt, objects, name lengths and the disk a Track may need run
against ``python app.py`` on loopback; the feature cache shared by all sessions, the disk of
exports and the history bound are checked on the app's own session store in this process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from appserver import OVERRIDES, app_checkpoint, run_app
from clips import make_moving_disc_clip
from hostile import HARDENED, MAX_NAME_CHARS, MAX_OBJECTS, MAX_POINTS

from sam2_web.errors import LimitExceededError

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

SIZE = (160, 120)
CLICK = [30.0, 26.0]
MAX_SESSIONS = 3
# 8 frames x 1 object of history (~57 kB each at image_size 256) fit, 8 x 2 do not.
SESSION_DISK_MB = 0.6


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("budgets")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return app_checkpoint(work / "ckpt" / "t256.pt")


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return make_moving_disc_clip(work / "disc.mp4", 8, SIZE, radius=20)[0]


@pytest.fixture(scope="module")
def app(work, checkpoint):
    extra = (*HARDENED, f"server.max_sessions={MAX_SESSIONS}", f"limits.session_disk_mb={SESSION_DISK_MB}")
    with run_app(work, checkpoint, extra=extra) as running:
        yield running
        print(running.log()[-3000:])


@pytest.fixture
def client(app, tmp_path):
    c = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
    yield c
    c.close()


def refused(client: Client, *args, api_name: str) -> str:
    with pytest.raises(AppError) as caught:
        client.predict(*args, api_name=api_name)
    message = str(caught.value)
    print(f"{api_name}: {message}")
    assert "Something went wrong" not in message and "/tmp" not in message
    return message


def click(client: Client, sid: str, obj_id: int = 1, points=(CLICK,), name: str = "") -> dict:
    points = [list(p) for p in points]
    return client.predict(sid, 0, obj_id, json.dumps(points), json.dumps([1] * len(points)), "", name,
                          api_name="/set_prompts")


# --------------------------------------------------------------------------- the running app


def test_sessions_per_server(client, clip):
    sids = [client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"] for _ in range(MAX_SESSIONS)]
    try:
        masks = {sid: click(client, sid) for sid in sids}
        message = refused(client, handle_file(str(clip)), "", api_name="/open_clip")
        assert "server is busy" in message and "try again" in message
        # The open sessions are untouched by the refusal.
        for sid in sids:
            assert client.predict(sid, 0, api_name="/frame_masks")["objects"] == masks[sid]["objects"]
        # /segment has no slot either while the server is full.
        prompts = json.dumps([{"frame": 0, "object": 1, "points": [CLICK]}])
        assert "server is busy" in refused(client, handle_file(str(clip)), prompts, "", "coco_rle",
                                           api_name="/segment")
        client.predict(sids.pop(), api_name="/close_clip")
        # A finished /segment keeps its file for a while but no longer holds a slot.
        assert Path(client.predict(handle_file(str(clip)), prompts, "", "coco_rle", api_name="/segment")).is_file()
        sids.append(client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"])
    finally:
        for sid in sids:
            client.predict(sid, api_name="/close_clip")


def test_points_objects_and_names(client, clip):
    sid = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    try:
        # Exactly at each limit is accepted ...
        grid = [[10.0 + 5 * k, 40.0] for k in range(MAX_POINTS)]
        assert click(client, sid, 1, grid, "n" * MAX_NAME_CHARS)["objects"]
        for obj_id in range(2, MAX_OBJECTS + 1):
            click(client, sid, obj_id)
        # ... one more is refused, with the limit and what to do.
        assert f"takes up to {MAX_POINTS}" in refused(client, sid, 0, 1, json.dumps(grid + [CLICK]),
                                                      json.dumps([1] * (MAX_POINTS + 1)), "", "",
                                                      api_name="/set_prompts")
        assert f"up to {MAX_OBJECTS} objects" in refused(client, sid, 0, MAX_OBJECTS + 1, json.dumps([CLICK]), "[1]",
                                                         "", "", api_name="/set_prompts")
        assert f"at most {MAX_NAME_CHARS}" in refused(client, sid, 0, 1, json.dumps([CLICK]), "[1]", "",
                                                      "n" * (MAX_NAME_CHARS + 1), api_name="/set_prompts")
        # Nothing of the refused calls stuck: the objects are those accepted.
        objects = client.predict(sid, 0, api_name="/frame_masks")["objects"]
        assert [o["object"] for o in objects] == list(range(1, MAX_OBJECTS + 1))
    finally:
        client.predict(sid, api_name="/close_clip")


def test_track_that_could_outgrow_the_session_disk_is_refused_first(client, clip):
    one = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    two = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    try:
        click(client, one)
        shown = click(client, two)
        click(client, two, obj_id=2, points=([120.0, 90.0],))
        message = refused(client, two, api_name="/track")
        assert "needs about" in message and "track fewer objects or a shorter clip" in message
        assert "limits.session_disk_mb" in message
        # The refused session keeps its clicks; the other one tracks within the budget.
        assert client.predict(two, 0, api_name="/frame_masks")["objects"][0] == shown["objects"][0]
        assert client.predict(one, api_name="/track") == {"frames": 8, "total": 8}
    finally:
        for sid in (one, two):
            client.predict(sid, api_name="/close_clip")


# --------------------------------------------------------------------------- the session store, in process


@pytest.fixture(scope="module")
def predictor(checkpoint):
    from sam2_web.build import build_sam2_video_predictor

    return build_sam2_video_predictor("sam2.1/sam2.1_hiera_t.yaml", checkpoint, device="cpu",
                                      hydra_overrides_extra=list(OVERRIDES))


@pytest.fixture
def store(tmp_path):
    from sam2_web.ui.state import SessionStore

    s = SessionStore(ttl_s=600, root=tmp_path / "sessions", max_sessions=8, feature_budget_mb=1500)
    yield s
    s.close_all()


def _tracked(session) -> dict[int, np.ndarray]:
    from sam2_web.ui import actions

    actions.set_prompts(session, 0, 1, points=[CLICK], labels=[1])
    for _ in actions.track(session):
        pass
    return {i: actions.mask_dict(session, i)[1] for i in range(session.info.num_frames)}


def test_feature_cache_is_one_budget_across_sessions(store, predictor, clip):
    from sam2_web.ui import actions
    from sam2_web.ui.limits import Limits

    want = predictor.default_options.feature_cache_mb
    sessions = [store.create("m") for _ in range(3)]
    for session in sessions:
        actions.open_clip(session, predictor, str(clip), Limits())
    grants = [s.feature_mb for s in sessions]
    print("asked", want, "MB each; granted", grants, "of", store.feature_budget_mb)
    assert grants == [want, store.feature_budget_mb - want, 0.0]
    assert [s.video.options.feature_cache_mb for s in sessions] == grants  # what the engines really got
    assert store.feature_mb_held() <= store.feature_budget_mb
    # The session left without a cache works and computes the same masks (the cache is speed only).
    first, last = _tracked(sessions[0]), _tracked(sessions[2])
    assert all(np.array_equal(first[i], last[i]) for i in first)
    store.close(sessions[0].sid)
    fresh = store.create("m")
    actions.open_clip(fresh, predictor, str(clip), Limits())
    assert fresh.feature_mb == want


def test_checked_clip_is_the_opened_clip(store, predictor, clip):
    from sam2_web.ui import actions
    from sam2_web.ui.limits import Limits

    session = store.create("m")
    actions.open_clip(session, predictor, str(clip), Limits())
    # One frame source: probed and checked against the limits, then read by the engine.
    assert session.video.frames is session.frames
    assert Path(session.frames.info.path) == session.source_path and session.source_path.parent == session.workdir
    actions.switch_model(session, predictor, "m")
    assert session.video.frames is session.frames  # a model switch reads the same checked source


def test_history_bound_holds_and_exports_stop_at_the_session_disk(store, predictor, work):
    from sam2_web.ui import actions
    from sam2_web.ui.limits import Limits
    from sam2_web.ui.limits import session_disk_bytes

    long_clip = make_moving_disc_clip(work / "disc24.mp4", 24, SIZE, radius=20)[0]
    session = store.create("m")
    actions.open_clip(session, predictor, str(long_clip), Limits())
    _tracked(session)
    spilled = [os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(session.workdir)
               for f in files if f.endswith(".pt")]
    print("history files", len(spilled), "largest", max(spilled), "bound per frame", session.history_bytes_per_frame)
    assert spilled and max(spilled) <= session.history_bytes_per_frame
    first = actions.export_masks(session, "png_zip")
    session.disk_budget_mb = session_disk_bytes(session) / 2**20  # the budget is now full
    with pytest.raises(LimitExceededError, match="this session's files take") as caught:
        actions.export_masks(session, "coco_rle")
    print(caught.value)
    assert first.is_file()  # what was exported before is kept
