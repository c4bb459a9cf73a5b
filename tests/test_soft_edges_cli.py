"""Soft edges through the job faces: ``sam2-web mask --soft-edges [--edge-band PX]``, the job's
``OutputSpec`` and batch manifests. The engine runs for real (random-weight ``sam2.1_hiera_t`` at
256 px); the soft mattes must equal ``MatteStream`` run on the engine's own masks and the clip's
decoded frames, and the binary COCO RLE must stay the engine's masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appserver import app_checkpoint
from clips import make_moving_disc_clip
from test_cli import PROMPTS, engine_masks, model_args, run_cli

from sam2_web.batch.manifest import ManifestError, parse_manifest
from sam2_web.export.matte import quantize
from sam2_web.export.rle import decode
from sam2_web.jobs import OutputSpec
from sam2_web.matting import MatteStream

N_FRAMES, SIZE = 4, (128, 96)
MASK_RES = 256 // 4  # the test model runs at 256 px: its mask grid is 64 cells across


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("soft_cli")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return app_checkpoint(work / "tiny256.pt")


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return make_moving_disc_clip(work / "disc.mp4", n_frames=N_FRAMES, size=SIZE, radius=14)[0]


@pytest.fixture(scope="module")
def prompts_file(work) -> Path:
    path = work / "prompts.json"
    path.write_text(json.dumps(PROMPTS))
    return path


def _decoded_frames(clip: Path) -> list[np.ndarray]:
    from sam2_web.media.frames import open_frames

    with open_frames(clip) as frames:
        return [np.array(frames.get(i)) for i in range(frames.info.num_frames)]


def test_cli_soft_edges_equal_matte_stream_on_the_engine_masks(work, checkpoint, clip, prompts_file):
    out = work / "soft"
    result = run_cli("mask", clip, "--prompts", prompts_file, "--out", out, "--format", "png,coco_rle",
                     "--bit-depth", "16", "--soft-edges", "--edge-band", "3", "--progress", "none",
                     *model_args(checkpoint))
    assert result.returncode == 0, result.stderr
    oracle = engine_masks(checkpoint, clip)
    frames = _decoded_frames(clip)
    soft_pixels = 0
    for obj_id, label in ((1, "disc"), (5, "obj_5")):
        stream = MatteStream(mask_resolution=MASK_RES, band_px=3)
        files = sorted((out / "disc_png" / label).glob("disc_*.png"))
        assert len(files) == N_FRAMES
        for i, f in enumerate(files):
            want = quantize(stream.update(frames[i], oracle[i][obj_id]), 16)
            got = np.asarray(Image.open(f)).astype(np.uint16)
            np.testing.assert_array_equal(got, want)
            soft_pixels += int(((got > 0) & (got < 65535)).sum())
    assert soft_pixels > 20  # the mattes really are soft, not the masks again
    coco = json.loads((out / "disc_coco_rle.json").read_text())
    for ann in coco["annotations"]:
        np.testing.assert_array_equal(decode(ann["segmentation"]), oracle[ann["image_id"]][ann["category_id"]])
    assert any(oracle[i][1].any() and not oracle[i][1].all() for i in range(N_FRAMES))


def test_cli_edge_band_needs_soft_edges(tmp_path, clip, prompts_file):
    result = run_cli("mask", clip, "--prompts", prompts_file, "--out", tmp_path / "o", "--edge-band", "4")
    assert result.returncode == 2 and "--soft-edges" in result.stderr
    result = run_cli("mask", clip, "--prompts", prompts_file, "--out", tmp_path / "o", "--soft-edges",
                     "--edge-band", "-1")
    assert result.returncode == 2 and ">= 0" in result.stderr
    assert not (tmp_path / "o").exists()


def test_arguments_become_the_output_spec(tmp_path, prompts_file):
    from sam2_web.cli import _job_from_args, build_parser, parse_args

    args = parse_args(build_parser(), ["mask", "shot.mov", "-p", str(prompts_file), "-o", str(tmp_path),
                                       "--soft-edges", "--edge-band", "6.5"])
    assert _job_from_args(args).output == OutputSpec(tmp_path, ("png",), soft_edges=True, edge_band_px=6.5)


def test_manifest_soft_edges(tmp_path):
    data = {"defaults": {"out": "o", "prompts": PROMPTS, "soft_edges": True},
            "jobs": [{"clip": "a.mov"}, {"clip": "b.mov", "edge_band": 5, "soft_edges": False}]}
    jobs = parse_manifest(data, base_dir=tmp_path).jobs
    assert (jobs[0].job.output.soft_edges, jobs[0].job.output.edge_band_px) == (True, None)
    assert (jobs[1].job.output.soft_edges, jobs[1].job.output.edge_band_px) == (False, 5.0)
    with pytest.raises(ManifestError, match=r"jobs\[0\]\.edge_band"):
        parse_manifest({"jobs": [{"clip": "a.mov", "prompts": PROMPTS, "out": "o", "edge_band": -2}]},
                       base_dir=tmp_path)
    with pytest.raises(ManifestError, match="soft_edges"):
        parse_manifest({"jobs": [{"clip": "a.mov", "prompts": PROMPTS, "out": "o", "soft_edges": "yes"}]},
                       base_dir=tmp_path)
