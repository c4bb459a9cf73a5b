"""Blender with soft edges: the add-on's job writes 16-bit soft mattes (equal to ``MatteStream`` on
the engine's masks), and real Blender (the ``bpy`` 4.5 module, in a subprocess) reads the matte
strip the add-on makes of them as soft coverage: a Mask modifier driven by it gives the strip an
alpha equal to the matte (a 16-bit matte tagged Non-Color would come out brightened: Blender
converts float buffers into the sequencer's sRGB space), not an on/off cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appserver import OVERRIDES, app_checkpoint
from clips import make_moving_disc_clip

from plugins.blender import jobs
from sam2_web.matting import MatteStream

REPO = Path(__file__).resolve().parents[1]
N_FRAMES, SIZE = 3, (128, 96)
PROMPTS = {"version": 1, "objects": [{"id": 1, "frames": [{"frame": 0, "points": [[30, 28]], "labels": [1]}]}]}


def test_cli_arguments_carry_soft_edges():
    spec = jobs.JobSpec(clip=Path("a.mov"), prompts=PROMPTS, out_dir=Path("o"), name="x", soft_edges=True,
                          edge_band_px=4.0)
    args = jobs.cli_arguments(spec, Path("p.json"))
    assert args[args.index("--bit-depth") + 1] == "16" and "--soft-edges" in args
    assert args[args.index("--edge-band") + 1] == "4.0"
    plain = jobs.cli_arguments(jobs.JobSpec(clip=Path("a.mov"), prompts=PROMPTS, out_dir=Path("o"), name="x"),
                                 Path("p.json"))
    assert "--soft-edges" not in plain and "--bit-depth" not in plain


def test_addon_job_writes_16_bit_soft_mattes(tmp_path):
    checkpoint = app_checkpoint(tmp_path / "tiny256.pt")
    clip, _ = make_moving_disc_clip(tmp_path / "shot.mp4", n_frames=N_FRAMES, size=SIZE, radius=14)
    spec = jobs.JobSpec(clip=clip, prompts=PROMPTS, out_dir=tmp_path / "mattes", name="shot",
                          checkpoint=str(checkpoint), device="cpu", overrides=OVERRIDES, soft_edges=True,
                          edge_band_px=3.0)
    mattes = jobs.run(spec)
    files = mattes.sequences["obj_1"]
    assert len(files) == N_FRAMES

    from sam2_web.build import build_sam2_video_predictor
    from sam2_web.media.frames import open_frames

    predictor = build_sam2_video_predictor("sam2.1/sam2.1_hiera_t.yaml", checkpoint, device="cpu",
                                           hydra_overrides_extra=list(OVERRIDES))
    with open_frames(clip) as source:
        frames = [np.array(source.get(i)) for i in range(N_FRAMES)]
    masks = {}
    with predictor.open_session(str(clip)) as session:
        session.add_prompt(0, 1, points=np.array([[30, 28]], np.float32), labels=np.array([1], np.int32))
        for result in session.propagate(direction="both"):
            masks[result.frame_idx] = result.mask(1).copy()
    stream = MatteStream(mask_resolution=predictor.image_size // 4, band_px=3)
    soft = 0
    for i, f in enumerate(files):
        got = np.asarray(Image.open(f)).astype(np.uint16)
        np.testing.assert_array_equal(got, np.round(stream.update(frames[i], masks[i]) * 65535).astype(np.uint16))
        soft += int(((got > 0) & (got < 65535)).sum())
    assert soft > 10
    union = mattes.union(tmp_path / "all")
    assert np.asarray(Image.open(union[0])).dtype in (np.uint16, np.int32)  # the cut-out's union stays 16-bit


SCENE = r"""
import json, sys
from pathlib import Path
import bpy
from plugins.blender import strips

cfg = json.loads(Path(sys.argv[1]).read_text())
scene = bpy.context.scene
scene.render.resolution_x, scene.render.resolution_y = cfg["width"], cfg["height"]
scene.render.resolution_percentage = 100
scene.frame_start = scene.frame_end = 1
scene.view_settings.view_transform = "Standard"
scene.render.image_settings.file_format = "PNG"
scene.render.image_settings.color_mode = "RGBA"
scene.render.image_settings.color_depth = "16"
editor = scene.sequence_editor_create()
source = strips.strips_of(editor).new_image(name="src", filepath=cfg["source"], channel=1, frame_start=1)
matte = strips.add_matte_strip(editor, source, [Path(cfg["matte"])], 2, "matte", soft=True)
strips.attach_modifier(source, "MASK", matte, "cut")
scene.render.filepath = cfg["out"]
bpy.ops.render.render(write_still=True)
"""


def test_blender_reads_a_soft_matte_strip_as_soft_coverage(tmp_path):
    python = Path(sys.executable)
    found = subprocess.run([str(python), "-c", "import importlib.util as u; print(bool(u.find_spec('bpy')))"],
                           capture_output=True, text=True)
    assert found.stdout.strip() == "True", f"no bpy in {python}: run `bash scripts/dev.sh install`"
    from sam2_web.export.images import encode_png

    w, h = 64, 16
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(tmp_path / "src.png")
    ramp = np.round(np.linspace(0, 1, w) * 65535).astype(np.uint16)
    (tmp_path / "matte.png").write_bytes(encode_png(np.tile(ramp, (h, 1))))
    config = {"width": w, "height": h, "source": str(tmp_path / "src.png"), "matte": str(tmp_path / "matte.png"),
              "out": str(tmp_path / "render.png")}
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", BLENDER_USER_SCRIPTS=str(tmp_path / "scripts"),
               BLENDER_USER_RESOURCES=str(tmp_path / "resources"), PYTHONPATH=str(REPO))
    done = subprocess.run([str(python), "-c", SCENE, str(tmp_path / "cfg.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    render = np.asarray(Image.open(tmp_path / "render.png"))
    alpha = render[..., 3].astype(np.float64) / (65535 if render.dtype == np.uint16 else 255)
    row = alpha[h // 2]
    print(f"render {render.dtype} {render.shape}: alpha row {np.round(row[::8], 3)}")
    np.testing.assert_allclose(row, ramp / 65535, atol=1.5 / 255)
    assert len(np.unique(np.round(row * 255))) > 50  # graded, not a cut at a threshold
