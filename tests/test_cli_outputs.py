"""CLI outputs under hostile or careless arguments: nothing is ever written outside ``--out``, the
input is never overwritten, a full disk and bad prompt files end in the documented exit codes
with a message (never a traceback), and clip paths that look like options or URLs are files.

The engine runs for real on a random-weight ``sam2.1_hiera_t`` at image_size 256.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appserver import OVERRIDES, REPO, app_checkpoint
from clips import make_moving_disc_clip
from hostile import bomb_png

from sam2_web.cli import EXIT_OUTPUT, EXIT_USAGE, main

N_FRAMES, SIZE = 4, (128, 96)
PROMPTS = {"objects": [{"id": 1, "name": "disc", "frames": [{"frame": 0, "points": [[30, 28]], "labels": [1]}]}]}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli_outputs")


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


def model_args(checkpoint: Path) -> list[str]:
    return [*OVERRIDES, f"checkpoint={checkpoint}", "device=cpu", "--progress", "none"]


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash: what a run may not have touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["../../x", "../x", "a/b", "/tmp/x", "..", "a\\b", "x" * 201])
def test_a_name_with_folders_is_refused_and_nothing_is_written(tmp_path, clip, prompts_file, checkpoint, capsys,
                                                                name):
    sandbox = tmp_path / "sandbox"
    out = sandbox / "deep" / "out"
    sandbox.mkdir()
    before = tree(tmp_path)
    code = main(["mask", str(clip), "-p", str(prompts_file), "-o", str(out), "--name", name, *model_args(checkpoint)])
    err = capsys.readouterr().err
    print(name[:20], "->", code, err.strip().splitlines()[-1])
    assert code == EXIT_USAGE and "Traceback" not in err
    assert "--name" in err
    assert tree(tmp_path) == before and not out.exists()
    assert not Path("/tmp/x_png").exists()


def test_output_equal_to_the_input_is_refused_and_the_input_kept(tmp_path, clip, prompts_file, checkpoint, capsys):
    # The input sits where the job's output would go: <out>/<name>_<format><ext>.
    source = tmp_path / "shot_matte_mp4.mp4"
    source.write_bytes(clip.read_bytes())
    frames = tmp_path / "shot_png"
    frames.mkdir()
    for i in range(N_FRAMES):
        (frames / f"f{i}.png").write_bytes(b"")  # replaced by real frames below
    from PIL import Image

    for i in range(N_FRAMES):
        Image.new("RGB", SIZE, (i * 40, 0, 0)).save(frames / f"f{i}.png")
    before = tree(tmp_path)
    for clip_in, fmt in ((source, "matte_mp4"), (frames, "png")):
        code = main(["mask", str(clip_in), "-p", str(prompts_file), "-o", str(tmp_path), "--name", "shot",
                     "-f", fmt, *model_args(checkpoint)])
        err = capsys.readouterr().err
        print(fmt, "->", code, err.strip().splitlines()[-1])
        assert code == EXIT_OUTPUT and "would overwrite the input clip" in err and "Traceback" not in err
    assert tree(tmp_path) == before


def _fill_disk(limit: int):
    def apply() -> None:
        # Files may not grow past ``limit`` bytes: writes fail like on a full disk (EFBIG instead
        # of ENOSPC, the same OSError path in the exporter) instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_during_png_export_exits_5_and_publishes_nothing(tmp_path, clip, prompts_file, checkpoint):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    run = subprocess.run(
        [sys.executable, "-m", "sam2_web.cli", "mask", str(clip), "-p", str(prompts_file), "-o", str(out),
         "-f", "png", *model_args(checkpoint)],
        cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=_fill_disk(64), timeout=600,
    )
    print(run.stderr[-800:])
    assert run.returncode == EXIT_OUTPUT, run.stderr
    assert "writing png failed" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists() or list(out.iterdir()) == []  # no output, no staging folder left


@pytest.mark.parametrize("case, says", [
    ("deep", "nested too deeply"),
    ("huge_int_frame", "at most 2147483647"),
    ("id_2_64", "at most 2147483647"),
    ("label_1.7", "must be 1 (on the object) or 0"),
    ("frame_2.5", "must be a whole number"),
    ("infinity", "must be a number"),
    ("box_1e30", "reaches outside"),
    ("long_name", "use at most 64"),
    ("folder", "cannot read the prompts file"),
    ("bomb_mask", "more pixels than are safe"),
])
def test_bad_prompt_files_exit_2_with_a_message(tmp_path, clip, checkpoint, capsys, case, says):
    point = {"frame": 0, "points": [[30, 28]], "labels": [1]}
    objects = [{"id": 1, "frames": [point]}]
    path = tmp_path / "p.json"
    text = None
    if case == "deep":
        text = '{"objects": ' + "[" * 50000 + "]" * 50000 + "}"
    elif case == "huge_int_frame":
        text = json.dumps({"objects": [{"id": 1, "frames": [{**point, "frame": 10**400}]}]})
    elif case == "id_2_64":
        objects[0]["id"] = 2**64
    elif case == "label_1.7":
        point["labels"] = [1.7]
    elif case == "frame_2.5":
        point["frame"] = 2.5
    elif case == "infinity":
        text = '{"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[Infinity, 3]]}]}]}'
    elif case == "box_1e30":
        objects[0]["frames"] = [{"frame": 0, "box": [0, 0, 1e30, 1e30]}]
    elif case == "long_name":
        objects[0]["name"] = "n" * 300
    elif case == "folder":
        path.mkdir()
    else:
        objects[0]["mask"] = {"frame": 0, "path": str(bomb_png(tmp_path / "bomb.png"))}
    if not path.exists():
        path.write_text(text if text is not None else json.dumps({"objects": objects}))
    out = tmp_path / "out"
    code = main(["mask", str(clip), "-p", str(path), "-o", str(out), *model_args(checkpoint)])
    err = capsys.readouterr().err
    print(case, "->", code, err.strip().splitlines()[-1][:200])
    assert code == EXIT_USAGE and says in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_clip_names_that_look_like_options_or_urls_are_files(tmp_path, checkpoint, prompts_file, capsys, monkeypatch):
    a, _ = make_moving_disc_clip(tmp_path / "a.mp4", n_frames=N_FRAMES, size=SIZE, radius=14)
    make_moving_disc_clip(tmp_path / "b.mp4", n_frames=7, size=SIZE, radius=10)
    monkeypatch.chdir(tmp_path)
    for name in ("concat:a.mp4|b.mp4", "-i.mp4"):
        Path(name).write_bytes(a.read_bytes())
        out = tmp_path / ("out" + str(len(name)))
        # After "--" every word is a positional, so a clip named "-i.mp4" can be given at all.
        code = main(["mask", "-p", str(prompts_file), "-o", str(out), "--name", "job", "--progress", "none",
                     "--", name, *OVERRIDES, f"checkpoint={checkpoint}", "device=cpu"])
        captured = capsys.readouterr()
        print(name, "->", code, captured.out.strip().splitlines()[0] if captured.out.strip() else captured.err[-300:])
        assert code == 0, captured.err
        assert f"of {N_FRAMES}" in captured.out  # the file's own frames, not a.mp4 followed by b.mp4
        assert len(list((out / "job_png").rglob("*.png"))) == N_FRAMES
