"""Track everything found on a frame (``--auto``): generator records become objects ("object N",
largest first, within ``limits.max_objects``), for the Python helper, the CLI, prompts files,
batch manifests and the ComfyUI node; bad input gets a clear message and writes nothing.

The model is a random-weight SAM 2.1 tiny at 256 px whose mask logits are sharpened
(``tests/parity.py: sharpen_masks``) so that, on a clip of bright squares on black, the generator
finds square-like masks. End to end, ``--auto`` must give exactly the outputs of a prompts file
that hands the same masks over as start masks (the generator run here, through its public API).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from appserver import OVERRIDES, app_checkpoint
from clips import write_clip

from sam2_web.errors import PromptError
from sam2_web.find.objects import FoundObjects, objects_from_records, record_mask
from sam2_web.find.run import pick_candidate
from sam2_web.jobs import MaskJob, OutputSpec, parse_prompts

REPO = Path(__file__).resolve().parents[1]
N_FRAMES, W, H = 4, 128, 96
# Generator settings under which the random weights keep masks (the CLI passes them as overrides).
FIND = ["find.auto.points_per_side=4", "find.auto.pred_iou_thresh=0.0", "find.auto.stability_score_thresh=0.0"]
GENERATOR = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
MIN_AREA = 30


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("find")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    """The app's random-weight checkpoint with the decoder's mask logits sharpened."""
    path = app_checkpoint(work / "raw.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    for key in list(state):
        if key.startswith("sam_mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in key:
            state[key] = state[key] * -10.0
    out = work / "sharp256.pt"
    torch.save({"model": state}, out)
    return out


def squares_frames() -> np.ndarray:
    """Two bright squares drifting right on black, (N_FRAMES, H, W, 3) uint8."""
    frames = np.zeros((N_FRAMES, H, W, 3), np.uint8)
    for i in range(N_FRAMES):
        frames[i, 20:50, 10 + 2 * i:40 + 2 * i] = 230
        frames[i, 55:85, 75 + 2 * i:110 + 2 * i] = 200
    return frames


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return write_clip(work / "squares.mp4", squares_frames(), codec="libx264", pix_fmt="yuv444p", extra=("-crf", "4"))


def model_args(checkpoint: Path) -> list[str]:
    return [*OVERRIDES, f"checkpoint={checkpoint}", "device=cpu"]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "sam2_web.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True)


def coco(out: Path) -> dict:
    (path,) = out.glob("*_coco_rle.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def records(checkpoint, clip):
    """The generator's records on frame 0, through the public API, as a user would get them."""
    from sam2_web import SAM2AutomaticMaskGenerator
    from sam2_web.build import build_sam2
    from sam2_web.media.frames import open_frames

    model = build_sam2("sam2.1_hiera_t", checkpoint, device="cpu", hydra_overrides_extra=list(OVERRIDES))
    with open_frames(clip) as frames:
        frame0 = frames.get(0)
    return SAM2AutomaticMaskGenerator(model, **GENERATOR).generate(frame0)


@pytest.fixture(scope="module")
def auto_run(work, checkpoint, clip):
    out = work / "auto"
    result = run_cli("mask", clip, "--auto", 0, "--min-area", MIN_AREA, "--out", out, "--format", "coco_rle",
                     "--progress", "lines", *model_args(checkpoint), *FIND)
    assert result.returncode == 0, result.stderr
    return out, result


# --------------------------------------------------------------------------- the helper


def _record(mask: np.ndarray, iou: float = 0.9) -> dict:
    ys, xs = np.nonzero(mask)
    return {"segmentation": mask, "area": int(mask.sum()), "predicted_iou": iou,
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]}


def test_records_become_named_objects_largest_first_within_the_limit():
    sizes = [(5, 5), (20, 10), (2, 2), (12, 12)]
    recs = []
    for k, (h, w) in enumerate(sizes):
        m = np.zeros((40, 60), bool)
        m[k:k + h, 2 * k:2 * k + w] = True
        recs.append(_record(m, iou=0.5 + k / 10))
    found = objects_from_records(recs, frame=3, first_id=7, max_objects=2, min_area=10)
    assert isinstance(found, FoundObjects) and found.found == 4
    assert [(o.obj_id, o.name, o.area, o.frame) for o in found.objects] == [(7, "object 7", 200, 3),
                                                                           (8, "object 8", 144, 3)]
    assert np.array_equal(found.objects[0].mask, recs[1]["segmentation"])
    assert found.objects[0].box == (2.0, 1.0, 12.0, 21.0)  # one past the last pixel
    assert any("smaller than 10 pixels" in n for n in found.notes)
    assert any("tracking the 2 largest" in n and "limits.max_objects" in n for n in found.notes)
    assert len(objects_from_records(recs, 0)) == 4 and objects_from_records([], 0).objects == ()
    assert pick_candidate(recs, 3, 1) == 0  # inside records 0 and 1: the smaller wins
    assert pick_candidate(recs, 8, 15) == 1
    assert pick_candidate(recs, 59, 39) is None


def test_thousands_of_candidates_keep_the_largest_and_say_so():
    rng = np.random.default_rng(0)
    recs = []
    for k in range(3000):
        m = np.zeros((60, 80), bool)
        y, x, side = int(rng.integers(0, 50)), int(rng.integers(0, 70)), 1 + k % 10
        m[y:y + side, x:x + side] = True
        recs.append(_record(m))
    found = objects_from_records(recs, 0, max_objects=32)
    areas = sorted((r["area"] for r in recs), reverse=True)
    assert [o.area for o in found.objects] == areas[:32]
    assert [o.obj_id for o in found.objects] == list(range(1, 33))
    assert found.found == 3000 and any("3000 objects found on frame 0; tracking the 32 largest" in n
                                       for n in found.notes)


def test_record_masks_are_read_in_every_output_mode(records, checkpoint, clip):
    from sam2_web import SAM2AutomaticMaskGenerator
    from sam2_web.build import build_sam2
    from sam2_web.media.frames import open_frames

    assert records, "the sharpened model finds something on the squares"
    model = build_sam2("sam2.1_hiera_t", checkpoint, device="cpu", hydra_overrides_extra=list(OVERRIDES))
    with open_frames(clip) as frames:
        frame0 = frames.get(0)
    for mode in ("coco_rle", "uncompressed_rle"):
        again = SAM2AutomaticMaskGenerator(model, output_mode=mode, **GENERATOR).generate(frame0)
        assert len(again) == len(records)
        for a, b in zip(records, again):
            assert np.array_equal(record_mask(b), a["segmentation"])
    with pytest.raises(PromptError, match="records"):
        record_mask({"segmentation": "nope"})


def test_found_objects_prompt_a_session_like_masks_given_by_hand(records, checkpoint, clip):
    from sam2_web.build import build_sam2_video_predictor

    predictor = build_sam2_video_predictor("sam2.1_hiera_t", checkpoint, device="cpu",
                                           hydra_overrides_extra=list(OVERRIDES))
    found = objects_from_records(records, 0, min_area=MIN_AREA)
    assert len(found) >= 2
    with predictor.open_session(str(clip)) as a, predictor.open_session(str(clip)) as b:
        found.add_to(a)
        for obj in found.objects:
            b.add_mask(0, obj.obj_id, obj.mask)
        for x, y in zip(a.propagate(), b.propagate()):
            assert x.obj_ids == y.obj_ids == [o.obj_id for o in found.objects]
            assert np.array_equal(x.masks, y.masks)


# --------------------------------------------------------------------------- prompts, jobs, CLI


def test_prompts_files_take_auto_and_text_with_or_without_objects(tmp_path):
    alone = parse_prompts({"auto": {"frame": 2, "min_area": 50}})
    assert alone.objects == () and alone.auto.frame == 2 and alone.auto.min_area == 50 and alone.text is None
    both = parse_prompts({"objects": [{"id": 3, "frames": [{"frame": 0, "box": [1, 1, 9, 9]}]}],
                          "text": {"query": "Person, dog. person", "frame": 1, "box_threshold": 0.3}})
    assert [o.obj_id for o in both.objects] == [3]
    assert both.text.phrases == ["person", "dog"] and both.text.box_threshold == 0.3
    flat = parse_prompts({"prompts": [{"frame": 0, "object": 1, "points": [[3, 4]]}], "auto": {}})
    assert flat.auto.frame == 0 and [o.obj_id for o in flat.objects] == [1]
    job = MaskJob(clip=Path("x.mp4"), objects=(), output=OutputSpec(tmp_path), auto=alone.auto)
    assert job.obj_ids == []
    with pytest.raises(PromptError, match="--auto FRAME or --text"):
        MaskJob(clip=Path("x.mp4"), objects=(), output=OutputSpec(tmp_path))


@pytest.mark.parametrize("data, words", [
    ({"auto": {"frame": 0, "area": 5}}, ["auto", "'area'"]),
    ({"auto": {"frame": -1}}, ["auto.frame", "between 0"]),
    ({"auto": {"min_area": 2.5}}, ["auto.min_area", "whole number"]),
    ({"auto": [0]}, ["auto", "must be like"]),
    ({"text": {"query": " , . "}}, ["text.query", "empty", "person, dog"]),
    ({"text": {"frame": 0}}, ["text.query"]),
    ({"text": {"query": "dog", "box_threshold": 2}}, ["text.box_threshold", "0 to 1"]),
    ({"text": {"query": "x" * 600}}, ["text.query", "at most 500"]),
])
def test_bad_auto_and_text_are_refused(data, words):
    with pytest.raises(PromptError) as err:
        parse_prompts(data)
    for w in words:
        assert w in str(err.value)


def test_cli_auto_equals_the_same_masks_given_as_start_masks(auto_run, records, work, checkpoint, clip):
    out, result = auto_run
    assert "find " in result.stderr  # progress of the search
    # By hand: the records of at least MIN_AREA pixels, largest first, as start masks on frame 0.
    kept = sorted((r for r in records if r["area"] >= MIN_AREA), key=lambda r: -r["area"])
    assert len(kept) >= 2
    objects = []
    for k, r in enumerate(kept, start=1):
        Image.fromarray(r["segmentation"].astype(np.uint8) * 255).save(work / f"hand_{k}.png")
        objects.append({"id": k, "name": f"object {k}", "mask": {"frame": 0, "path": f"hand_{k}.png"}})
    (work / "hand.json").write_text(json.dumps({"objects": objects}))
    by_hand = run_cli("mask", clip, "--prompts", work / "hand.json", "--out", work / "hand", "--format", "coco_rle",
                      *model_args(checkpoint))
    assert by_hand.returncode == 0, by_hand.stderr
    got, expected = coco(out), coco(work / "hand")
    assert got["categories"] == expected["categories"]
    # "object N", as exports write names (spaces become underscores)
    assert [c["name"] for c in got["categories"]] == [f"object_{k}" for k in range(1, len(kept) + 1)]
    assert got["annotations"] == expected["annotations"]
    assert sum(a["area"] for a in got["annotations"]) > 0  # the tracked masks are not empty


def test_cli_auto_limits_the_objects_and_says_so(work, checkpoint, clip, records):
    out = work / "limited"
    result = run_cli("mask", clip, "--auto", 0, "--out", out, "--format", "coco_rle", *model_args(checkpoint),
                     *FIND, "limits.max_objects=1")
    assert result.returncode == 0, result.stderr
    assert "note:" in result.stderr and "tracking the 1 largest" in result.stderr
    (category,) = coco(out)["categories"]
    assert category["name"] == "object_1"


@pytest.mark.parametrize("args, words", [
    (["--auto", 9], ["frame 9 is outside the clip", "4 frames"]),
    (["--auto", 3, "--end", 2], ["outside the tracked range 0..2"]),
    (["--auto", 0, *FIND[:1], "find.auto.pred_iou_thresh=0.99"], ["no objects found on frame 0"]),
    (["--auto", 0, "--min-area", 100000, *FIND], ["no objects found on frame 0", "minimum area"]),
    (["--min-area", 5], ["--min-area goes with --auto"]),
    ([], ["--auto FRAME or --text"]),
    (["--text", " , "], ["--text is empty"]),
])
def test_cli_bad_auto_input_exits_2_and_writes_nothing(tmp_path, checkpoint, clip, args, words):
    out = tmp_path / "out"
    result = run_cli("mask", clip, *map(str, args), "--out", out, "--format", "coco_rle", *model_args(checkpoint))
    assert result.returncode == 2, result.stderr
    for w in words:
        assert w in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_prompts_file_auto_beside_an_object_numbers_found_objects_after_it(work, checkpoint, clip):
    prompts = {"objects": [{"id": 4, "name": "mine", "frames": [{"frame": 0, "box": [70, 50, 120, 90]}]}],
               "auto": {"frame": 0, "min_area": MIN_AREA}}
    (work / "mixed.json").write_text(json.dumps(prompts))
    result = run_cli("mask", clip, "--prompts", work / "mixed.json", "--out", work / "mixed", "--format", "coco_rle",
                     *model_args(checkpoint), *FIND)
    assert result.returncode == 0, result.stderr
    names = [(c["id"], c["name"]) for c in coco(work / "mixed")["categories"]]
    assert names[0] == (4, "mine") and names[1] == (5, "object_5") and len(names) >= 3


def test_batch_manifest_auto_job_equals_the_cli(auto_run, work, checkpoint, clip):
    from sam2_web.batch import load_manifest, run_batch

    manifest = {
        "version": 1,
        "defaults": {"out": str(work / "batch"), "formats": ["coco_rle"], "checkpoint": str(checkpoint),
                     "device": "cpu"},
        "overrides": [*OVERRIDES, *FIND],
        "jobs": [{"clip": str(clip), "auto": {"frame": 0, "min_area": MIN_AREA}}],
    }
    (work / "batch.json").write_text(json.dumps(manifest))
    loaded = load_manifest(work / "batch.json")
    (entry,) = loaded.jobs
    assert entry.problem is None and entry.job.auto.min_area == MIN_AREA and entry.job.objects == ()
    run_batch(loaded)
    assert coco(work / "batch")["annotations"] == coco(auto_run[0])["annotations"]


def test_comfyui_node_tracks_everything_found_like_masks_given_by_hand(checkpoint):
    """The ComfyUI segment node with ``auto_frame``: its masks equal the engine's with the
    generator's masks (of at least ``min_area`` pixels) given as mask prompts by hand."""
    from sam2_web import SAM2AutomaticMaskGenerator
    from sam2_web.build import build_sam2_video_predictor
    from tests.test_plugin_comfyui import PACKAGE, as_image, load_like_comfyui, run_node

    nodes = load_like_comfyui(PACKAGE, "sam2_web_nodes_find")
    (loaded,) = run_node(nodes, "SAM2WebModelLoader", model="sam2.1_hiera_t", device="cpu",
                         checkpoint=str(checkpoint), overrides=" ".join([*OVERRIDES, *FIND]))
    frames = squares_frames()
    masks, _ = run_node(nodes, "SAM2WebVideoSegment", sam2_model=loaded, images=as_image(frames), prompts="",
                        direction="both", auto_frame=0, min_area=MIN_AREA)

    predictor = build_sam2_video_predictor("sam2.1_hiera_t", checkpoint, device="cpu",
                                           hydra_overrides_extra=list(OVERRIDES))
    records = SAM2AutomaticMaskGenerator(predictor, **GENERATOR).generate(frames[0])
    kept = [r for r in records if r["area"] >= MIN_AREA]
    assert len(kept) >= 2
    expected = np.zeros(frames.shape[:3], bool)
    with loaded.predictor.open_session(frames) as session:
        for k, r in enumerate(sorted(kept, key=lambda r: -r["area"]), start=1):
            session.add_mask(0, k, r["segmentation"])
        for result in session.propagate(direction="both"):
            expected[result.frame_idx] = result.masks.any(axis=0)
    assert expected.any() and not expected.all()
    assert np.array_equal(masks.numpy().astype(bool), expected)
    with pytest.raises(PromptError, match="auto_frame: frame 7 is outside the clip"):
        run_node(nodes, "SAM2WebVideoSegment", sam2_model=loaded, images=as_image(frames), prompts="",
                 direction="both", auto_frame=7)
