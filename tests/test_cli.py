"""The mask-job contract and the ``sam2-web`` CLI: prompts JSON, exit codes, outputs, Ctrl-C, remote.

Everything runs for real: the engine on a random-weight ``sam2.1_hiera_t`` checkpoint at
image_size 256 (once on an EdgeTAM one), ffmpeg-encoded clips, ``sam2-web`` as a subprocess, and
(for ``--remote``) the web app started with ``python app.py`` on a loopback port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appserver import EDGETAM, OVERRIDES, app_checkpoint, run_app
from clips import make_audio_only, make_moving_disc_clip

from sam2_web.jobs import FrameRange, MaskJob, OutputSpec, load_prompts, parse_prompts
from sam2_web.jobs.job import FramePrompt, ObjectPrompts
from sam2_web.jobs.outputs import Staging, export_all
from sam2_web.cli import main
from sam2_web.errors import PromptError

REPO = Path(__file__).resolve().parents[1]
N_FRAMES, SIZE = 4, (128, 96)
# Two objects: a click on the disc (it starts near the top-left) and a box elsewhere.
PROMPTS = {
    "objects": [
        {"id": 1, "name": "disc", "frames": [{"frame": 0, "points": [[30, 28], [100, 80]], "labels": [1, 0]}]},
        {"id": 5, "frames": [{"frame": 1, "box": [70, 50, 120, 90]}]},
    ]
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return app_checkpoint(work / "tiny256.pt")


@pytest.fixture(scope="module")
def clip(work) -> Path:
    path, _ = make_moving_disc_clip(work / "disc.mp4", n_frames=N_FRAMES, size=SIZE, radius=14)
    return path


@pytest.fixture(scope="module")
def prompts_file(work) -> Path:
    path = work / "prompts.json"
    path.write_text(json.dumps(PROMPTS))
    return path


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``sam2-web`` as a real process (``python -m sam2_web.cli``, what the console script runs)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "sam2_web.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True)


def model_args(checkpoint: Path) -> list[str]:
    return [*OVERRIDES, f"checkpoint={checkpoint}", "device=cpu"]


def engine_masks(checkpoint: Path, clip: Path, model: str = "sam2.1/sam2.1_hiera_t.yaml",
                 overrides=OVERRIDES, **session_opts) -> dict[int, dict[int, np.ndarray]]:
    """The oracle: the engine run directly with PROMPTS, frame → {obj_id: mask}."""
    from sam2_web.build import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(model, checkpoint, device="cpu", hydra_overrides_extra=list(overrides))
    out: dict[int, dict[int, np.ndarray]] = {}
    with predictor.open_session(str(clip), **session_opts) as session:
        session.add_prompt(0, 1, points=np.array([[30, 28], [100, 80]], np.float32), labels=np.array([1, 0]))
        session.add_prompt(1, 5, box=np.array([70, 50, 120, 90], np.float32))
        for fm in session.propagate(direction="both"):
            out[fm.frame_idx] = {o: fm.masks[k].copy() for k, o in enumerate(fm.obj_ids)}
    return out


def read_png_mattes(folder: Path, label: str, stem: str) -> list[np.ndarray]:
    files = sorted((folder / label).glob(f"{stem}_*.png"))
    return [np.asarray(Image.open(f)) > 127 for f in files]


# --------------------------------------------------------------------------- the prompts JSON


def test_example_prompts_parse():
    prompts = load_prompts(REPO / "docs" / "prompts.example.json")
    assert [o.obj_id for o in prompts.objects] == [1, 2]
    runner = prompts.objects[0]
    # Two entries for frame 0 are merged: three clicks, the last one negative.
    assert runner.frames[0].frame == 0 and runner.frames[0].labels == (1, 1, 0)
    assert runner.frames[1].box == (380.0, 150.0, 470.0, 420.0)
    assert prompts.objects[1].start_mask.path == REPO / "docs" / "ball_frame0.png"
    schema = json.loads((REPO / "docs" / "prompts.schema.json").read_text())
    assert set(schema["$defs"]["byObject"]["properties"]) == {"$schema", "version", "coordinates", "objects", "auto",
                                                              "text"}


def test_flat_api_form_is_accepted():
    flat = [{"frame": 2, "object": 3, "points": [[0.5, 0.25]], "normalized": True, "name": "cat"},
            {"frame": 0, "object": 3, "box": [0.1, 0.1, 0.2, 0.3], "normalized": True}]
    prompts = parse_prompts({"prompts": flat})
    assert prompts.normalized
    job = MaskJob(clip=Path("x.mp4"), objects=prompts.objects, normalized=True, output=OutputSpec(Path("o")))
    (obj,) = job.objects_in_pixels(200, 100)
    assert obj.name == "cat" and [p.frame for p in obj.frames] == [0, 2]
    assert obj.frames[1].points == ((100.0, 25.0),) and obj.frames[1].labels == (1,)
    assert obj.frames[0].box == pytest.approx((20.0, 10.0, 40.0, 30.0))


@pytest.mark.parametrize("data, words", [
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "point": [[1, 2]]}]}]}, ["objects[0].frames[0]", "'point'"]),
    ({"objects": [{"id": 1, "colour": "red", "frames": [{"frame": 0, "box": [0, 0, 5, 5]}]}]},
     ["objects[0]", "'colour'"]),
    ({"objs": []}, ["'objs'", "objects"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[-3, 4]]}]}]}, ["points[0][0]", "negative"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "box": [10, 10, 5, 20]}]}]}, ["box", "x0 < x1"]),
    ({"objects": [{"id": 1, "frames": [{"points": [[3, 4]]}]}]}, ["frames[0]", "missing \"frame\""]),
    ({"objects": [{"frames": [{"frame": 0, "points": [[3, 4]]}]}]}, ["objects[0]", "missing \"id\""]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0}]}]}, ["frames[0]", "points", "box"]),
    ({"objects": [{"id": 1, "frames": [{"frame": "0", "points": [[3, 4]]}]}]}, ["frame", "whole number"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[3, 4]], "labels": [1, 0]}]}]},
     ["2 labels for 1 points"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[3, 4]], "labels": [2]}]}]}, ["labels[0]", "1", "0"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[3, "4"]]}]}]}, ["points[0][1]", "number"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "box": [0, 0, 4, 4]}, {"frame": 0, "box": [1, 1, 5, 5]}]}]},
     ["two boxes on frame 0"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "box": [0, 0, 4, 4]}]},
                  {"id": 1, "frames": [{"frame": 0, "box": [0, 0, 4, 4]}]}]}, ["id 1 is used twice"]),
    ({"coordinates": "normalized", "objects": [{"id": 1, "frames": [{"frame": 0, "points": [[0.5, 1.5]]}]}]},
     ["above 1"]),
    ({"objects": [{"id": 1}]}, ["object 1 has no prompt"]),
    ([{"frame": 0, "points": [[1, 2]]}], ["[0]", "missing \"object\""]),
])
def test_bad_prompts_are_refused_with_the_json_path(data, words):
    with pytest.raises(PromptError) as caught:
        parse_prompts(data)
    for word in words:
        assert word in str(caught.value)


# --------------------------------------------------------------------------- bad input through the CLI


def write_prompts(folder: Path, data) -> Path:
    path = folder / "p.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("data, words", [
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[10, 10]]}]}], "extra": 1}, ["'extra'"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[10, -1]]}]}]}, ["negative"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[128, 10]]}]}]}, ["outside the 128x96 frame"]),
    ({"objects": [{"id": 1, "frames": [{"frame": 0, "box": [10, 10, 60, 97]}]}]}, ["reaches outside"]),
    ({"objects": [{"id": 1, "frames": [{"frame": N_FRAMES, "points": [[10, 10]]}]}]},
     [f"frame {N_FRAMES} is outside the clip", f"0..{N_FRAMES - 1}"]),
])
def test_bad_prompts_exit_2_before_any_model_work(tmp_path, clip, capsys, data, words):
    out = tmp_path / "out"
    code = main(["mask", str(clip), "--prompts", str(write_prompts(tmp_path, data)), "--out", str(out),
                 "model=no_such_model"])  # an unknown model would be exit 4: the prompts are refused first
    err = capsys.readouterr().err
    assert code == 2, err
    for word in words:
        assert word in err
    assert not out.exists()


def test_prompt_outside_the_frame_range_and_bad_range(tmp_path, clip, capsys):
    prompts = write_prompts(tmp_path, {"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[10, 10]]}]}]})
    assert main(["mask", str(clip), "-p", str(prompts), "-o", str(tmp_path / "o"), "--start", "1"]) == 2
    assert "outside the tracked range 1..3" in capsys.readouterr().err
    assert main(["mask", str(clip), "-p", str(prompts), "-o", str(tmp_path / "o"), "--start", "2", "--end", "1"]) == 2
    assert "--start must be <= --end" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_documents_the_exit_codes(capsys):
    assert main(["mask", "--help"]) == 0
    text = capsys.readouterr().out
    for line in ("2    usage error", "3    the clip cannot be read", "4    model problem", "5    output problem",
                 "130  cancelled"):
        assert line in text
    assert main(["formats"]) == 0 and "prores" in capsys.readouterr().out
    assert main(["models"]) == 0 and "facebook/sam2.1-hiera-tiny" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, clip, prompts_file, capsys):
    assert main(["mask", str(clip), "-p", str(prompts_file), "-o", str(tmp_path / "o"), "-f", "png,gif"]) == 2
    assert "unknown format(s) gif" in capsys.readouterr().err
    assert main(["mask", str(clip), "-p", str(tmp_path / "missing.json"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{\"objects\": [")
    assert main(["mask", str(clip), "-p", str(tmp_path / "broken.json"), "-o", str(tmp_path / "o")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["mask", str(clip), "-p", str(prompts_file), "-o", str(tmp_path / "o"), "--bogus"]) == 2
    assert not (tmp_path / "o").exists()


def test_unknown_model_and_missing_checkpoint_exit_4(tmp_path, clip, prompts_file, capsys):
    out = tmp_path / "out"
    assert main(["mask", str(clip), "-p", str(prompts_file), "-o", str(out), "model=sam9_giant"]) == 4
    assert "unknown model 'sam9_giant'" in capsys.readouterr().err
    assert main(["mask", str(clip), "-p", str(prompts_file), "-o", str(out),
                 f"checkpoint={tmp_path / 'nope.pt'}"]) == 4
    assert "nope.pt" in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_override_exits_2(tmp_path, clip, prompts_file, capsys):
    out = tmp_path / "out"
    assert main(["mask", str(clip), "-p", str(prompts_file), "-o", str(out), "engine.no_such_option=1"]) == 2
    assert "engine.no_such_option" in capsys.readouterr().err
    assert not out.exists()


def test_arguments_become_the_job(tmp_path, prompts_file):
    from sam2_web.cli import _job_from_args, build_parser, parse_args

    args = parse_args(build_parser(), [
        "mask", "shot.mov", "-p", str(prompts_file), "-o", str(tmp_path), "-f", "png,exr", "--format", "prores",
        "--feather", "2.5", "--grow", "-3", "--invert", "--bit-depth", "16", "--start", "4", "--end", "9",
        "--direction", "forward", "--name", "take2",
        "model=small", "++checkpoint=/w/s.pt", "device=cuda", "++model.image_size=512",
    ])
    job = _job_from_args(args)
    assert job.output == OutputSpec(tmp_path, ("png", "exr", "prores"), feather_px=2.5, grow_px=-3, invert=True,
                                    bit_depth=16, name="take2")
    assert (job.model, job.checkpoint, job.device) == ("small", Path("/w/s.pt"), "cuda")
    assert job.overrides == ("++model.image_size=512",) and job.frame_range == FrameRange(4, 9)
    assert job.direction == "forward" and job.obj_ids == [1, 5]
    # The alias travels as given; composing the app config resolves it (models.resolve_model).
    assert job.app_overrides() == ["model=small", "device=cuda", "++model.image_size=512"]
    from sam2_web.models import compose_app_config

    assert compose_app_config(job.app_overrides()).weights.name == "sam2.1_hiera_s"


def test_output_folder_not_writable_exits_5(tmp_path, clip, prompts_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # root can write anywhere, but not below a regular file
    result = run_cli("mask", clip, "-p", prompts_file, "-o", blocker / "out", *model_args(Path("unused.pt")))
    assert result.returncode == 5, result.stderr
    assert "cannot write to the output folder" in result.stderr and "Traceback" not in result.stderr
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_file_without_video_stream_exits_3(tmp_path, prompts_file):
    audio = make_audio_only(tmp_path / "voice.wav")
    out = tmp_path / "out"
    result = run_cli("mask", audio, "-p", prompts_file, "-o", out)
    assert result.returncode == 3, result.stderr
    assert "video" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()  # the folder made for the job is gone again: nothing looks like a result


# --------------------------------------------------------------------------- staging


def test_outputs_appear_together_and_replace_only_our_own(tmp_path):
    """Publishing replaces an earlier export but never a user's folder; a failed job leaves nothing."""
    from sam2_web.errors import ExportError
    from sam2_web.media.frames import open_frames

    frames = np.zeros((3, 16, 24, 3), np.uint8)
    masks = {i: {1: np.eye(16, 24, k=i, dtype=bool)} for i in range(3)}
    job = MaskJob(clip=Path("shot.mp4"), objects=(ObjectPrompts(1, frames=(FramePrompt(0, ((1.0, 1.0),), (1,)),)),),
                  output=OutputSpec(tmp_path / "o", formats=("png", "coco_rle")))
    with open_frames(frames) as source:
        for round_ in range(2):  # the second run replaces the first run's outputs
            staging = Staging.open(job)
            export_all(job, staging, masks.get, info=source.info, frames=source.get, progress=None,
                       is_cancelled=lambda: False)
            if round_ == 0:  # all formats are written, none is visible yet
                assert [p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")] == []
            published = staging.publish()
            assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["shot_coco_rle.json", "shot_png"]
        assert published["png"] == tmp_path / "o" / "shot_png"
        got = read_png_mattes(published["png"], "obj_1", "shot")
        assert len(got) == 3 and all((g == masks[i][1]).all() for i, g in enumerate(got))

        user = tmp_path / "o2" / "shot_png"
        user.mkdir(parents=True)
        (user / "holiday.jpg").write_bytes(b"x")
        with pytest.raises(ExportError, match="not written by sam2-web"):
            Staging.open(MaskJob(clip=job.clip, objects=job.objects, output=OutputSpec(tmp_path / "o2")))
        assert (user / "holiday.jpg").exists()

        failing = Staging.open(job)
        with pytest.raises(ExportError):
            export_all(job, failing, lambda i: {1: np.zeros((5, 5), bool)}, info=source.info, frames=None,
                       progress=None, is_cancelled=lambda: False)
        failing.discard()
        assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["shot_coco_rle.json", "shot_png"]


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def local_run(work, checkpoint, clip, prompts_file):
    """One full CLI run: PNG mattes (8-bit) and COCO RLE of both objects."""
    out = work / "local"
    result = run_cli("mask", clip, "--prompts", prompts_file, "--out", out, "--format", "png",
                     "--format", "coco_rle", "--progress", "lines", *model_args(checkpoint))
    assert result.returncode == 0, result.stderr
    return out, result


def test_cli_masks_equal_the_engine(local_run, checkpoint, clip):
    out, result = local_run
    assert sorted(p.name for p in out.iterdir()) == ["disc_coco_rle.json", "disc_png"]
    assert "track 1/" in result.stderr and f"export png {N_FRAMES}/{N_FRAMES}" in result.stderr
    oracle = engine_masks(checkpoint, clip)
    assert sorted(oracle) == list(range(N_FRAMES))
    for obj_id, label in ((1, "disc"), (5, "obj_5")):
        got = read_png_mattes(out / "disc_png", label, "disc")
        assert len(got) == N_FRAMES
        for i, matte in enumerate(got):
            assert matte.shape == (SIZE[1], SIZE[0])
            assert (matte == oracle[i][obj_id]).all(), (obj_id, i)
    assert any(oracle[i][1].any() for i in range(N_FRAMES))  # the comparison is not of empty masks
    coco = json.loads((out / "disc_coco_rle.json").read_text())
    assert len(coco["images"]) == N_FRAMES and {c["id"] for c in coco["categories"]} == {1, 5}


def test_cli_on_edgetam_masks_equal_the_engine(tmp_path, clip, prompts_file):
    """``sam2-web mask ... model=edgetam checkpoint=...``: both objects' PNG mattes equal the
    engine's EdgeTAM masks from the same checkpoint."""
    checkpoint = app_checkpoint(tmp_path / "edgetam256.pt", model=EDGETAM)
    out = tmp_path / "out"
    result = run_cli("mask", clip, "--prompts", prompts_file, "--out", out, "--format", "png",
                     "--progress", "lines", *EDGETAM.app_args(), f"checkpoint={checkpoint}", "device=cpu")
    assert result.returncode == 0, result.stderr
    assert f"export png {N_FRAMES}/{N_FRAMES}" in result.stderr
    oracle = engine_masks(checkpoint, clip, EDGETAM.name, EDGETAM.overrides)
    assert sorted(oracle) == list(range(N_FRAMES))
    worst = 0
    for obj_id, label in ((1, "disc"), (5, "obj_5")):
        got = read_png_mattes(out / "disc_png", label, "disc")
        assert len(got) == N_FRAMES
        for i, matte in enumerate(got):
            assert matte.shape == (SIZE[1], SIZE[0])
            worst = max(worst, int((matte != oracle[i][obj_id]).sum()))
    print("edgetam CLI: worst pixels differing from the engine:", worst)
    assert worst == 0
    # The comparison is not of constant masks: the clicked disc has foreground and background.
    assert oracle[0][1].any() and not oracle[0][1].all()
    assert all(oracle[i][1].any() and not oracle[i][1].all() for i in range(N_FRAMES))


def test_frame_range_tracks_only_inside(tmp_path, checkpoint, clip, prompts_file):
    from sam2_web.jobs import run_job

    job = MaskJob(clip=clip, objects=load_prompts(prompts_file).objects, checkpoint=checkpoint, device="cpu",
                  overrides=OVERRIDES, frame_range=FrameRange(0, 2), output=OutputSpec(tmp_path, ("png",)))
    result = run_job(job)
    assert result.tracked == (0, 2) and result.num_frames == N_FRAMES
    oracle = engine_masks(checkpoint, clip)
    got = read_png_mattes(result.outputs["png"], "disc", "disc")
    assert len(got) == N_FRAMES  # frame-accurate: as many frames as the source
    for i in range(3):
        assert (got[i] == oracle[i][1]).all()
    assert not got[3].any()


def test_memory_samurai_runs_through_the_job(tmp_path, checkpoint, clip, prompts_file):
    """``sam2-web mask ... memory=samurai``: the job tracks with SAMURAI's memory (the engine
    with ``samurai=True`` is the oracle), and the app config's switch reaches the engine."""
    out = tmp_path / "out"
    proc = run_cli("mask", clip, "-p", prompts_file, "-o", out, "-f", "png", *model_args(checkpoint), "memory=samurai")
    assert proc.returncode == 0, proc.stderr
    oracle = engine_masks(checkpoint, clip, samurai=True)
    plain = engine_masks(checkpoint, clip)
    for obj_id, label in ((1, "disc"), (5, "obj_5")):
        got = read_png_mattes(out / "disc_png", label, "disc")
        assert len(got) == N_FRAMES
        for i in range(N_FRAMES):
            assert (got[i] == oracle[i][obj_id]).all(), (obj_id, i)
    assert oracle[0][1].any() and not oracle[0][1].all()
    print("frames where SAMURAI's masks differ from SAM 2's:",
          sum(not np.array_equal(oracle[i][1], plain[i][1]) for i in range(N_FRAMES)))


def test_ctrl_c_stops_cleanly_without_outputs(tmp_path, checkpoint, clip, prompts_file):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "sam2_web.cli", "mask", str(clip), "-p", str(prompts_file), "-o", str(out),
           "-f", "png", "--progress", "lines", *model_args(checkpoint)]
    process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:  # wait until tracking is under way, then press Ctrl-C
        seen.append(line)
        if line.startswith("track 1/"):
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    code = process.wait()
    assert code == 130, "".join(seen) + rest
    assert "nothing" in rest
    assert not out.exists() or list(out.iterdir()) == []


def test_remote_run_writes_the_same_files(work, checkpoint, clip, prompts_file, local_run):
    out = work / "remote"
    with run_app(work / "app", checkpoint) as app:
        result = run_cli("mask", clip, "--prompts", prompts_file, "--out", out, "-f", "png", "-f", "coco_rle",
                         "--remote", app.url)
    assert result.returncode == 0, result.stderr
    local_out, _ = local_run
    for label in ("disc", "obj_5"):
        local = read_png_mattes(local_out / "disc_png", label, "disc")
        remote = read_png_mattes(out / "disc_png", label, "disc")
        assert len(remote) == N_FRAMES
        assert all((a == b).all() for a, b in zip(local, remote)), label
    local_coco = json.loads((local_out / "disc_coco_rle.json").read_text())
    remote_coco = json.loads((out / "disc_coco_rle.json").read_text())
    segmentations = [[a["segmentation"] for a in doc["annotations"]] for doc in (local_coco, remote_coco)]
    assert segmentations[0] == segmentations[1]


def test_remote_refuses_what_only_a_local_run_can_do(tmp_path, clip, prompts_file, capsys):
    code = main(["mask", str(clip), "-p", str(prompts_file), "-o", str(tmp_path / "o"), "--remote",
                 "http://127.0.0.1:9/", "--direction", "forward"])
    assert code == 2 and "both directions" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unreachable_server_exits_4(tmp_path, clip, prompts_file, capsys):
    from appserver import free_port

    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    assert main(["mask", str(clip), "-p", str(prompts_file), "-o", str(tmp_path / "o"), "--remote", url]) == 4
    assert f"cannot reach a sam2_web server at {url}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
