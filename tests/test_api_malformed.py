"""Malformed API input: every value a client can send wrong gets a message that says what to send,
never "Something went wrong", never a server path, and never leaves the session broken.

Runs against ``python app.py`` on loopback (the hardened app of ``tests/hostile.py``), driven with
``gradio_client`` as a plugin or a script would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clips import make_moving_disc_clip
from hostile import MAX_NAME_CHARS, MAX_POINTS

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

SIZE = (160, 120)
CLICK = [30.0, 26.0]
LONG_FRAMES = 40  # long enough that /close_clip lands while /track runs


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("malformed")
    short = make_moving_disc_clip(folder / "disc.mp4", 8, SIZE, radius=20)[0]
    long = make_moving_disc_clip(folder / "long.mp4", LONG_FRAMES, SIZE, radius=20)[0]
    return short, long


@pytest.fixture
def client(hardened_app, tmp_path):
    c = Client(hardened_app.url, verbose=False, download_files=str(tmp_path / "downloads"))
    yield c
    c.close()


@pytest.fixture
def session(client, clips):
    sid = client.predict(handle_file(str(clips[0])), "", api_name="/open_clip")["session"]
    yield sid
    client.predict(sid, api_name="/close_clip")


def refused(client: Client, *args, api_name: str) -> str:
    """The message of a refused call, checked for what no refusal may contain."""
    with pytest.raises(AppError) as caught:
        client.predict(*args, api_name=api_name)
    message = str(caught.value)
    shown = ", ".join(repr(a)[:40] for a in args[1:4])
    print(f"{api_name}({shown}): {message[:200]}")
    assert "Something went wrong" not in message and "Traceback" not in message
    assert "/tmp" not in message and "sam2_web_ui" not in message and ".cache" not in message
    return message


DEEP = "[" * 100000 + "]" * 100000

# (frame, obj_id, points, labels, box, name) -> words of the refusal
SET_PROMPTS_CASES = [
    ((0, 2**64, json.dumps([CLICK]), "[1]", "", ""), "object ids are whole numbers from 1 to 2147483647"),
    ((0, 0, json.dumps([CLICK]), "[1]", "", ""), "object ids are whole numbers from 1"),
    ((0, 1.5, json.dumps([CLICK]), "[1]", "", ""), "must be a whole number, got 1.5"),
    ((2.5, 1, json.dumps([CLICK]), "[1]", "", ""), "frame must be a whole number, got 2.5"),
    ((0, 1, json.dumps([CLICK]), "[1.7]", "", ""), "must be 1 (on the object) or 0"),
    ((0, 1, "", "", "[0, 0, 1e30, 1e30]", ""), "reaches outside the 160x120 frame"),
    ((0, 1, "[[Infinity, 5]]", "[1]", "", ""), "must be a number, got inf"),
    ((0, 1, "[[NaN, 5]]", "[1]", "", ""), "must be a number, got nan"),
    ((0, 1, '{"x": 1}', "[1]", "", ""), "points: must be a list of [x, y] pairs"),
    ((0, 1, "[[1, 2], [3]]", "[1, 1]", "", ""), "must be an [x, y] pair"),
    ((0, 1, '[["1", 2]]', "[1]", "", ""), "must be a number"),
    ((0, 1, json.dumps([CLICK]), '"one"', "", ""), "must be a list of 1 (object) / 0"),
    ((0, 1, "", "", '[1, 2, "3", 4]', ""), "must be a number"),
    ((0, 1, "[[1, 2]", "[1]", "", ""), "points must be JSON"),
    ((0, 1, DEEP, "[1]", "", ""), "nested too deeply"),
    ((0, 1, json.dumps([CLICK]), "[1]", "", "n" * (MAX_NAME_CHARS + 1)), f"use at most {MAX_NAME_CHARS}"),
    ((0, 1, json.dumps([CLICK]), "[1]", "", "two\nlines"), "control characters"),
    ((0, 1, json.dumps([CLICK] * (MAX_POINTS + 1)), json.dumps([1] * (MAX_POINTS + 1)), "", ""),
     f"takes up to {MAX_POINTS}"),
]


def test_every_malformed_set_prompts_gets_a_message_and_the_session_keeps_working(client, session):
    first = client.predict(session, 0, 1, json.dumps([CLICK]), "[1]", "", "disc", api_name="/set_prompts")
    for args, says in SET_PROMPTS_CASES:
        message = refused(client, session, *args, api_name="/set_prompts")
        assert says in message, message
        # A refused call changes nothing, and breaks nothing: the session answers as before.
        assert client.predict(session, 0, api_name="/frame_masks")["objects"] == first["objects"]
    assert "frame must be a whole number" in refused(client, session, 2.5, api_name="/frame_masks")
    assert client.predict(session, api_name="/track") == {"frames": 8, "total": 8}
    assert Path(client.predict(session, "coco_rle", api_name="/export")).stat().st_size > 0


@pytest.mark.parametrize("prompts, says", [
    (DEEP, "nested too deeply"),
    ('[{"frame": 0, "object": 1, "points": [[Infinity, 5]]}]', "must be a number, got inf"),
    (json.dumps([{"frame": 0, "object": 2**64, "points": [CLICK]}]), "at most 2147483647"),
    (json.dumps([{"frame": 2.5, "object": 1, "points": [CLICK]}]), "must be a whole number, got 2.5"),
    (json.dumps([{"frame": 0, "object": 1, "points": [CLICK], "labels": [1.7]}]), "must be 1 (on the object)"),
    (json.dumps([{"frame": 0, "object": 1, "box": [0, 0, 1e30, 1e30]}]), "reaches outside"),
    (json.dumps([{"frame": 0, "object": 1, "points": [CLICK], "name": "n" * (MAX_NAME_CHARS + 1)}]),
     f"use at most {MAX_NAME_CHARS}"),
    (json.dumps([{"frame": 0, "object": 1, "points": [CLICK] * (MAX_POINTS + 1)}]), f"up to {MAX_POINTS}"),
    ('{"objects": 7}', "objects"),
    ("[1, 2", "not valid JSON"),
    # 5000 digits: Python refuses to convert them ("Something went wrong (ValueError)" before).
    ('[{"frame": 0, "object": ' + "9" * 5000 + ', "points": [[30, 26]]}]',
     "[0].object: out of range: must be >= 0 and at most 2147483647, got a 5000-digit number"),
    ('[{"frame": 0, "object": 1, "points": [[' + "9" * 5000 + ", 26]]}]", "[0].points[0][0]: out of range"),
])
def test_malformed_segment_prompts_get_a_message(client, clips, prompts, says):
    message = refused(client, handle_file(str(clips[0])), prompts, "", "png_zip", api_name="/segment")
    assert says in message


def test_errors_name_no_server_path(client, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n" * 40)
    assert "notes.mp4" in refused(client, handle_file(str(fake)), "", api_name="/open_clip")
    # A model whose checkpoint the server cannot get: the Hub cache path must not show.
    refused(client, handle_file(str(fake)), "sam2.1_hiera_l", api_name="/open_clip")
    refused(client, "no-such-session", 0, 1, "[[5, 5]]", "[1]", "", "", api_name="/set_prompts")


def test_close_clip_during_track_does_not_invite_a_resume(client, clips):
    sid = client.predict(handle_file(str(clips[1])), "", api_name="/open_clip")["session"]
    client.predict(sid, 0, 1, json.dumps([CLICK]), "[1]", "", "", api_name="/set_prompts")
    job = client.submit(sid, api_name="/track")
    closed = False
    while not job.done():  # wait until the run holds the session, then close it under the run
        try:
            client.predict(sid, 0, api_name="/frame_masks")
            client.predict(sid, 0, 1, json.dumps([CLICK]), "[1]", "", "", api_name="/set_prompts")
        except AppError as busy:
            assert "tracking right now" in str(busy)
            assert client.predict(sid, api_name="/close_clip") == "closed"
            closed = True
            break
    print("closed during the run:", closed)
    if closed:
        with pytest.raises(AppError) as caught:
            job.result()
        message = str(caught.value)
        print("/track:", message)
        assert "session was closed" in message and "call /track again" not in message
    else:  # the machine tracked all frames before a probe got in
        assert job.result()["frames"] == LONG_FRAMES
        client.predict(sid, api_name="/close_clip")
    assert "upload the clip again" in refused(client, sid, api_name="/track")
