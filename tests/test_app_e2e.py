"""End to end: ``python app.py`` on loopback, the checkpoint from the loopback Hub, driven with
``gradio_client`` through the named API endpoints, as an editor plugin or a script would.

The expected masks come from the engine run in this process with the same checkpoint, clip and
clicks. Most tests run SAM 2.1 tiny; one runs EdgeTAM, served as ``facebook/EdgeTAM/edgetam.pt``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appserver import EDGETAM, ONE_CLIENT, OVERRIDES, REPO, app_checkpoint, run_app

# Random weights pass none of the generator's default thresholds: /segment's "auto" searches permissively.
FIND = ("find.auto.points_per_side=4", "find.auto.pred_iou_thresh=0.0", "find.auto.stability_score_thresh=0.0")
from clips import make_moving_disc_clip

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

N_FRAMES = 8
SIZE = (160, 120)
CLICK = (30.0, 26.0)
MAX_FRAMES = 10  # the app is started with limits.max_frames=10; the long clip has 12


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def checkpoint(workdir) -> Path:
    return app_checkpoint(workdir / "ckpt" / "t256.pt")


@pytest.fixture(scope="module")
def clip(workdir) -> Path:
    return make_moving_disc_clip(workdir / "disc.mp4", N_FRAMES, SIZE, radius=20)[0]


@pytest.fixture(scope="module")
def app(workdir, checkpoint):
    with run_app(workdir, checkpoint, extra=(*ONE_CLIENT, f"limits.max_frames={MAX_FRAMES}", *FIND)) as running:
        yield running
        print(running.log()[-3000:])


@pytest.fixture
def client(app, tmp_path):
    c = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def expected(checkpoint, clip):
    """The engine in this process: one click on frame 0, tracked through the clip."""
    return engine_masks("sam2.1/sam2.1_hiera_t.yaml", checkpoint, clip, OVERRIDES)


def engine_masks(model: str, checkpoint: Path, clip: Path, overrides) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """``model``'s engine in this process: the click mask on frame 0 and the masks tracked from it."""
    from sam2_web.build import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(model, checkpoint, device="cpu", hydra_overrides_extra=list(overrides))
    with predictor.open_session(str(clip)) as session:
        click = session.add_prompt(0, 1, points=np.asarray([CLICK], np.float32), labels=np.asarray([1], np.int32))
        tracked = {fm.frame_idx: fm.masks[0].copy() for fm in session.propagate()}
    return click.masks[0].copy(), tracked


def _zip_mattes(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        return {n: np.asarray(Image.open(io.BytesIO(zf.read(n)))) for n in sorted(zf.namelist()) if n.endswith(".png")}


def _rle_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_upload_click_track_download_png_zip(client, clip, expected):
    click_mask, tracked = expected
    opened = client.predict(handle_file(str(clip)), "", api_name="/open_clip")
    assert (opened["num_frames"], opened["width"], opened["height"]) == (N_FRAMES, *SIZE)
    sid = opened["session"]

    shown = client.predict(sid, 0, 1, json.dumps([CLICK]), "[1]", "", "ball", api_name="/set_prompts")
    assert [o["object"] for o in shown["objects"]] == [1]
    got = _rle_mask(shown["objects"][0]["rle"])
    print("click: mask pixels", int(got.sum()), "differing from the in-process engine", int((got != click_mask).sum()))
    assert np.array_equal(got, click_mask) and got.any()

    done = client.predict(sid, api_name="/track")
    assert done == {"frames": N_FRAMES, "total": N_FRAMES}

    path = client.predict(sid, "png_zip", api_name="/export")
    mattes = _zip_mattes(path)
    assert len(mattes) == N_FRAMES and all(name.startswith("ball/") for name in mattes)
    worst = 0
    for i, (name, matte) in enumerate(mattes.items()):
        assert matte.shape == (SIZE[1], SIZE[0]) and matte.dtype == np.uint8
        assert set(np.unique(matte)) <= {0, 255}
        worst = max(worst, int(((matte > 127) != tracked[i]).sum()))
    print("png zip: worst pixels differing from the in-process engine over", N_FRAMES, "frames:", worst)
    assert worst == 0
    assert client.predict(sid, api_name="/close_clip") == "closed"


def test_segment_runs_the_whole_job_in_one_call(client, clip, expected):
    _, tracked = expected
    prompts = [{"frame": 0, "object": 1, "points": [list(CLICK)], "labels": [1], "name": "disc"}]
    path = client.predict(handle_file(str(clip)), json.dumps(prompts), "sam2.1_hiera_t", "coco_rle",
                          api_name="/segment")
    document = json.loads(Path(path).read_text())
    anns = document["annotations"]
    assert len(anns) == N_FRAMES
    frame_of = {img["id"]: i for i, img in enumerate(document["images"])}
    worst = max(int((_rle_mask(a["segmentation"]) != tracked[frame_of[a["image_id"]]]).sum()) for a in anns)
    print("segment (COCO RLE): worst differing pixels", worst)
    assert worst == 0


def test_segment_finds_and_tracks_every_object_of_a_frame(client, clip):
    """/segment with ``auto`` (no clicks): everything the generator finds on frame 0 is tracked and
    exported, as the CLI's ``--auto`` does; nothing found is a message, not an empty file."""
    path = client.predict(handle_file(str(clip)), json.dumps({"auto": {"frame": 0, "min_area": 500}}), "",
                          "coco_rle", api_name="/segment")
    document = json.loads(Path(path).read_text())
    found = {a["category_id"] for a in document["annotations"]}
    print("objects found and tracked:", len(found), [c["name"] for c in document["categories"]][:4])
    assert 1 <= len(found) <= 32 and {len(document["images"])} == {N_FRAMES}
    assert all(c["name"].startswith("object") for c in document["categories"])  # "object N" (file-safe)
    with pytest.raises(AppError, match="no objects found on frame 1"):
        client.predict(handle_file(str(clip)), json.dumps({"auto": {"frame": 1, "min_area": 10**7}}), "",
                       "coco_rle", api_name="/segment")


def test_models_endpoint_lists_every_registry_model(client):
    from sam2_web.registry import list_models

    names = {m["name"] for m in client.predict(api_name="/models")}
    assert names == {m.name for m in list_models()}
    assert {"sam2.1_hiera_t", "sam2_hiera_l", "edgetam", "efficienttam_s_512x512"} <= names


def test_bad_inputs_get_a_message_not_a_traceback(client, workdir, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    long_clip, _ = make_moving_disc_clip(tmp_path / "long.mp4", MAX_FRAMES + 2, SIZE, radius=20)
    cases = [
        ((handle_file(str(fake)), ""), "/open_clip", "cannot be read as a video"),
        ((handle_file(str(empty)), ""), "/open_clip", "empty"),
        ((handle_file(str(long_clip)), ""), "/open_clip", f"accepts up to {MAX_FRAMES}"),
        (("no-such-session", 0, 1, "[[5, 5]]", "[1]", "", ""), "/set_prompts", "upload the clip again"),
    ]
    for args, endpoint, words in cases:
        with pytest.raises(AppError) as err:
            client.predict(*args, api_name=endpoint)
        message = str(err.value)
        print(f"{endpoint}: {message}")
        assert words in message and "Traceback" not in message


def test_track_with_no_prompts_and_bad_prompts_are_refused(client, clip):
    sid = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    with pytest.raises(AppError, match="at least one click"):
        client.predict(sid, api_name="/track")
    with pytest.raises(AppError, match="outside"):
        client.predict(sid, 0, 1, "[[999, 5]]", "[1]", "", "", api_name="/set_prompts")
    with pytest.raises(AppError, match="frame 99 is outside"):
        client.predict(sid, 99, 1, "[[5, 5]]", "[1]", "", "", api_name="/set_prompts")
    with pytest.raises(AppError, match="unknown format"):
        client.predict(sid, "gif", api_name="/export")


def test_two_sessions_at_once_do_not_see_each_others_objects(app, clip, tmp_path, expected):
    click_mask, _ = expected
    one = Client(app.url, verbose=False, download_files=str(tmp_path / "one"))
    two = Client(app.url, verbose=False, download_files=str(tmp_path / "two"))
    try:
        a = one.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
        b = two.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
        assert a != b
        one.predict(a, 0, 1, json.dumps([CLICK]), "[1]", "", "", api_name="/set_prompts")
        one.predict(a, 0, 2, json.dumps([[130, 100]]), "[1]", "", "", api_name="/set_prompts")
        two.predict(b, 0, 7, json.dumps([[130, 100]]), "[1]", "", "", api_name="/set_prompts")
        seen_a = one.predict(a, 0, api_name="/frame_masks")
        seen_b = two.predict(b, 0, api_name="/frame_masks")
        assert [o["object"] for o in seen_a["objects"]] == [1, 2]
        assert [o["object"] for o in seen_b["objects"]] == [7]
        assert np.array_equal(_rle_mask(seen_a["objects"][0]["rle"]), click_mask)
    finally:
        one.close()
        two.close()


def test_a_bad_override_exits_with_the_valid_choices():
    run = subprocess.run([sys.executable, str(REPO / "app.py"), "model=sam9_huge"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    print(run.stderr[-600:])
    assert run.returncode == 2
    assert "sam2.1_hiera_t" in run.stderr and "Traceback" not in run.stderr


def test_stop_tracking_keeps_finished_frames_and_track_resumes(client, clip):
    sid = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    client.predict(sid, 0, 1, json.dumps([CLICK]), "[1]", "", "", api_name="/set_prompts")
    assert client.predict(sid, api_name="/stop_tracking") == "not tracking"
    job = client.submit(sid, api_name="/track")
    answer = "not tracking"
    while not job.done():  # ask until the run has started (or already ended on a fast machine)
        answer = client.predict(sid, api_name="/stop_tracking")
        if answer == "stopping":
            break
    print("stop answered:", answer)
    if answer == "stopping":
        with pytest.raises(AppError, match="stopped after"):
            job.result()
    else:
        assert job.result()["frames"] == N_FRAMES
    assert client.predict(sid, api_name="/track") == {"frames": N_FRAMES, "total": N_FRAMES}


def test_edgetam_from_the_hub_clicks_tracks_and_exports_like_the_engine(tmp_path, clip):
    """The app started with model=edgetam: the checkpoint comes from the (loopback) Hub repo
    facebook/EdgeTAM, and the click, the tracked PNG mattes and /segment's COCO RLE all equal
    the engine's EdgeTAM masks from the same checkpoint."""
    checkpoint = app_checkpoint(tmp_path / "ckpt" / "edgetam256.pt", model=EDGETAM)
    click_mask, tracked = engine_masks(EDGETAM.name, checkpoint, clip, EDGETAM.overrides)
    assert sorted(tracked) == list(range(N_FRAMES))
    # The comparison compares something: foreground and background on the click and every frame.
    for mask in (click_mask, *tracked.values()):
        assert mask.any() and not mask.all()

    with run_app(tmp_path, checkpoint, model=EDGETAM) as app:
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
        try:
            opened = client.predict(handle_file(str(clip)), "", api_name="/open_clip")
            assert (opened["num_frames"], opened["width"], opened["height"]) == (N_FRAMES, *SIZE)
            sid = opened["session"]
            shown = client.predict(sid, 0, 1, json.dumps([CLICK]), "[1]", "", "ball", api_name="/set_prompts")
            got = _rle_mask(shown["objects"][0]["rle"])
            print("edgetam click: mask pixels", int(got.sum()), "differing", int((got != click_mask).sum()))
            assert int((got != click_mask).sum()) == 0

            assert client.predict(sid, api_name="/track") == {"frames": N_FRAMES, "total": N_FRAMES}
            mattes = _zip_mattes(client.predict(sid, "png_zip", api_name="/export"))
            assert len(mattes) == N_FRAMES
            worst = max(int(((matte > 127) != tracked[i]).sum()) for i, matte in enumerate(mattes.values()))
            print("edgetam png zip: worst differing pixels over", N_FRAMES, "frames:", worst)
            assert worst == 0

            prompts = [{"frame": 0, "object": 1, "points": [list(CLICK)], "labels": [1]}]
            path = client.predict(handle_file(str(clip)), json.dumps(prompts), "edgetam", "coco_rle",
                                  api_name="/segment")
            document = json.loads(Path(path).read_text())
            frame_of = {img["id"]: i for i, img in enumerate(document["images"])}
            assert len(document["annotations"]) == N_FRAMES
            worst = max(int((_rle_mask(a["segmentation"]) != tracked[frame_of[a["image_id"]]]).sum())
                        for a in document["annotations"])
            print("edgetam segment (COCO RLE): worst differing pixels", worst)
            assert worst == 0
        finally:
            client.close()
    # The weights came from the Hub repo facebook/EdgeTAM, into the app's own cache.
    assert list((tmp_path / "hf_home" / "hub" / "models--facebook--EdgeTAM" / "snapshots").glob("*/edgetam.pt"))
