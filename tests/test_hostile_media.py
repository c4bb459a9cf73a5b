"""Hostile media: what an anonymous upload to a public Space can be, and what the app does with it.

ffmpeg and ffprobe run fenced (local files only, a demuxer allow-list, inputs that cannot be read
as options or URLs, a deadline with the process killed, a bounded index read), and the clip that
is checked is the clip that is opened. Each case is generated here, then sent to the running app
(``python app.py`` on loopback) as a remote client would; the refusals must say what to do with
no server path in them, no ffmpeg may be left running, and a well-behaved session opened before
keeps its clicks and still tracks and exports.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from clips import make_clip, make_moving_disc_clip
from hostile import (
    MAX_FRAMES,
    MAX_SIDE,
    bomb_png,
    concat_list,
    hls_live_playlist,
    hls_playlist,
    media_children,
    never_answering_ffprobe,
    tiny_frame_mkv,
    ts_segment,
    wide_clip,
)

from sam2_web.errors import LimitExceededError, VideoReadError
from sam2_web.media.decoder import FfmpegReader
from sam2_web.media.frames import open_frames
from sam2_web.media.probe import ProbeLimits, find_tools, probe_video

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

SIZE = (160, 120)
CLICK = (30.0, 26.0)


# --------------------------------------------------------------------------- the media layer


def test_names_that_look_like_options_or_urls_are_plain_files(tmp_path, monkeypatch):
    a = make_clip(tmp_path / "a.mp4", n_frames=5)
    make_clip(tmp_path / "b.mp4", n_frames=7)
    monkeypatch.chdir(tmp_path)
    for name in ("concat:a.mp4|b.mp4", "-i.mp4", "-f"):
        (tmp_path / name).write_bytes(a.read_bytes())
        with open_frames(name) as frames:  # relative, exactly as a user would type it
            print(name, "->", frames.info.num_frames, "frames")
            assert frames.info.num_frames == 5  # a.mp4's own frames, not a.mp4 + b.mp4
            assert frames.get(4).shape == (120, 160, 3)


@pytest.mark.parametrize("case", ["hls-live-as-mp4", "hls-relative-as-mkv", "hls-absolute-as-avi", "hls-m3u8",
                                  "concat-as-mp4"])
def test_playlists_and_lists_are_refused_before_opening_anything(tmp_path, case):
    (tmp_path / "elsewhere").mkdir()
    secret = ts_segment(tmp_path / "elsewhere" / "secret.ts")
    upload = tmp_path / "uploads"
    upload.mkdir()
    if case == "hls-live-as-mp4":
        path, says = hls_live_playlist(upload / "clip.mp4", "../elsewhere/secret.ts"), "HLS playlist"
    elif case == "hls-relative-as-mkv":
        path, says = hls_playlist(upload / "clip.mkv", ["../elsewhere/secret.ts"], repeat=50), "HLS playlist"
    elif case == "hls-absolute-as-avi":
        path, says = hls_playlist(upload / "clip.avi", [str(secret)]), "HLS playlist"
    elif case == "hls-m3u8":
        path, says = hls_playlist(upload / "clip.m3u8", ["../elsewhere/secret.ts"]), "HLS playlist"
    else:
        path, says = concat_list(upload / "clip.mp4", [str(secret), str(secret)]), "ffconcat list"
    with pytest.raises(VideoReadError, match=says) as caught:
        open_frames(path)
    print(case, "->", caught.value)
    assert "not accepted" in str(caught.value)


def test_index_read_stops_at_the_frame_limit(tmp_path):
    clip = tiny_frame_mkv(tmp_path / "tiny.mkv", 20000)
    assert probe_video(str(clip), find_tools()).info.num_frames == 20000  # it really has them all
    with pytest.raises(LimitExceededError) as caught:
        probe_video(str(clip), find_tools(), ProbeLimits(max_frames=500))
    print(caught.value)
    # "more than": the count was never finished, the read stopped after the limit.
    assert "more than 500 frames" in str(caught.value)


def test_frame_size_is_refused_from_the_header_before_decoding(tmp_path):
    limits = ProbeLimits(max_side=4096)
    with pytest.raises(LimitExceededError, match="4112x16"):
        open_frames(wide_clip(tmp_path / "wide.mkv", 4112), limits=limits)
    # A raw stream has no index: counting its frames means decoding them, so it is refused.
    with pytest.raises(VideoReadError, match="raw H.264 stream"):
        open_frames(wide_clip(tmp_path / "raw.mp4", 4112, fmt="h264"), limits=limits)
    still = tmp_path / "wide.png"
    from PIL import Image

    Image.new("L", (5000, 10)).save(still)
    with pytest.raises(LimitExceededError, match="5000x10"):
        open_frames(still, limits=limits)


def test_decompression_bomb_png_is_refused_from_its_header(tmp_path):
    with pytest.raises(LimitExceededError, match="more pixels than are safe"):
        open_frames(bomb_png(tmp_path / "bomb.png"))


def test_a_probe_past_its_deadline_is_killed(tmp_path):
    clip = make_clip(tmp_path / "ok.mp4", n_frames=3)
    stalled = dataclasses.replace(find_tools(), ffprobe=str(never_answering_ffprobe(tmp_path / "ffprobe")))
    with pytest.raises(VideoReadError, match="took longer than 1 s") as caught:
        probe_video(str(clip), stalled, ProbeLimits(timeout_s=1))
    print(caught.value)
    assert media_children(psutil.Process().pid) == []


def test_a_stalled_decoder_is_stopped(tmp_path):
    reader = FfmpegReader(["sleep", "300"], 16, 16, readahead=2, stall_s=0.5)
    with pytest.raises(VideoReadError, match="no frame for 0.5 s"):
        reader.read()
    assert reader._proc.poll() is not None  # killed, not left behind
    reader.close()


def test_without_ffprobe_the_same_fences_hold(tmp_path):
    bundled = dataclasses.replace(find_tools(search_path=""), ffprobe=None)  # imageio-ffmpeg's binary
    clip = make_clip(tmp_path / "a.mp4", n_frames=5)
    with pytest.raises(VideoReadError, match="ffconcat list"):
        probe_video(str(concat_list(tmp_path / "list.mp4", [str(clip)] * 3)), bundled)
    with pytest.raises(LimitExceededError, match="more than 500 frames"):
        probe_video(str(tiny_frame_mkv(tmp_path / "tiny.mkv", 3000)), bundled, ProbeLimits(max_frames=500))
    with pytest.raises(LimitExceededError, match="4112x16"):
        probe_video(str(wide_clip(tmp_path / "wide.mkv", 4112)), bundled, ProbeLimits(max_side=4096))


# --------------------------------------------------------------------------- the running app


@pytest.fixture(scope="module")
def good(hardened_app, tmp_path_factory):
    """A well-behaved client with a clip open and one click made before the hostile uploads."""
    folder = tmp_path_factory.mktemp("good")
    clip = make_moving_disc_clip(folder / "disc.mp4", 8, SIZE, radius=20)[0]
    client = Client(hardened_app.url, verbose=False, download_files=str(folder / "downloads"))
    sid = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    masks = client.predict(sid, 0, 1, json.dumps([CLICK]), "[1]", "", "disc", api_name="/set_prompts")
    yield client, sid, masks
    client.predict(sid, api_name="/close_clip")
    client.close()


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    """Every hostile upload, with the words its refusal must contain."""
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "server_media").mkdir()
    secret = ts_segment(folder / "server_media" / "secret.ts")  # a media file elsewhere on the server
    uploads = folder / "uploads"
    uploads.mkdir()
    return [
        (hls_live_playlist(uploads / "live.mp4", "../server_media/secret.ts"), "HLS playlist"),
        (hls_playlist(uploads / "relative.mp4", ["../server_media/secret.ts"], repeat=400), "HLS playlist"),
        (hls_playlist(uploads / "absolute.avi", [str(secret)], repeat=10), "HLS playlist"),
        (hls_playlist(uploads / "absolute.mkv", [str(secret)]), "HLS playlist"),
        (hls_playlist(uploads / "list.m3u8", [str(secret)]), "HLS playlist"),
        (concat_list(uploads / "concat.mp4", [str(secret)] * 3), "ffconcat list"),
        (tiny_frame_mkv(uploads / "tiny.mkv", 20000), f"more than {MAX_FRAMES} frames"),
        (wide_clip(uploads / "wide.mkv", 4112), f"up to {MAX_SIDE} px"),
        (wide_clip(uploads / "raw.mp4", 4112, fmt="h264"), "raw H.264 stream"),
        (bomb_png(uploads / "bomb.png"), "more pixels than are safe"),
    ]


def _refusal(client: Client, path: Path) -> str:
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(path)), "", api_name="/open_clip")
    return str(caught.value)


def test_hostile_uploads_are_refused_and_the_other_session_keeps_working(hardened_app, good, hostile_files, tmp_path):
    client, sid, before = good
    attacker = Client(hardened_app.url, verbose=False, download_files=str(tmp_path / "attacker"))
    try:
        for path, says in hostile_files:
            message = _refusal(attacker, path)
            print(f"{path.name}: {message}")
            assert says in message
            assert "Something went wrong" not in message and "Traceback" not in message
            # No server path: not the session folder, not Gradio's upload folder, not the test's.
            assert "/tmp" not in message and str(hardened_app.workdir) not in message
            assert media_children(hardened_app.process.pid, allowed=sid) == []
            assert client.predict(sid, 0, api_name="/frame_masks")["objects"] == before["objects"]
    finally:
        attacker.close()
    # The well-behaved session lost nothing: it tracks and exports its clip.
    assert client.predict(sid, api_name="/track") == {"frames": 8, "total": 8}
    assert Path(client.predict(sid, "coco_rle", api_name="/export")).stat().st_size > 0
    assert "unexpected error" not in hardened_app.log()


def test_live_playlists_do_not_take_the_workers(hardened_app, good, hostile_files, tmp_path):
    client, sid, before = good
    live = hostile_files[0][0]
    attackers = [Client(hardened_app.url, verbose=False, download_files=str(tmp_path / f"a{k}")) for k in range(2)]
    try:
        # Two at once used to hold both interactive slots forever; now both are refused at
        # once and the well-behaved request submitted meanwhile is served.
        with ThreadPoolExecutor(2) as pool:
            hostile = [pool.submit(_refusal, a, live) for a in attackers]
            served = client.predict(sid, 0, api_name="/frame_masks")
            messages = [h.result(timeout=120) for h in hostile]
        assert served["objects"] == before["objects"]
        assert all("HLS playlist" in m for m in messages)
        assert media_children(hardened_app.process.pid, allowed=sid) == []
    finally:
        for a in attackers:
            a.close()
