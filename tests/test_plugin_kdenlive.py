"""The Kdenlive backend, driven exactly as Kdenlive drives its Object Mask script.

Kdenlive exports the zone as ``00000.jpg ...``, starts the script with ``-I/-O/-M/-C/-F/-P/-L/-D``,
writes ``preview=...`` lines and waits for ``preview ok <frame>``, then writes ``render=<folder>``
and waits for ``mask ok`` before encoding ``<folder>/%05d.png`` with ffmpeg (FFV1 + alpha).
The test does the same with a real subprocess and compares every picture with the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appserver import OVERRIDES, app_checkpoint
from clips import ffmpeg_exe, make_moving_disc_clip

from plugins.kdenlive.backend import draw_mask, resolve_model
from plugins.kdenlive.protocol import Edit, Preview, Quit, Render, Style, parse_command, parse_per_frame
from sam2_web.errors import CheckpointError, PromptError, UnknownModelError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "plugins" / "kdenlive" / "sam2_web_objectmask.py"
N_FRAMES, SIZE = 4, (128, 96)
KDENLIVE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"  # the key Kdenlive's sammodelsinfo.rc maps a .pt to
COLOR = (255, 100, 100, 180)
BORDER_COLOR = (0, 0, 255, 255)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kdenlive")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    # Kdenlive names the checkpoint by Meta's download name and maps it to a config.
    return app_checkpoint(work / "sam2models" / "sam2.1_hiera_tiny.pt")


@pytest.fixture(scope="module")
def frames_dir(work) -> Path:
    path, _ = make_moving_disc_clip(work / "source-frames", n_frames=N_FRAMES, size=SIZE, radius=14)
    return path


class KdenliveSide:
    """The Kdenlive end of the pipes: writes command lines, waits for the lines it expects."""

    def __init__(self, args: list[str], cwd: Path):
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        # Kdenlive reads stderr continuously (progress); so must we, or the pipe fills up.
        self._pump = threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True)
        self._pump.start()

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait_for(self, prefix: str) -> str:
        """Read stdout lines until one starts with ``prefix`` (fails if the process ends first)."""
        for line in self.process.stdout:
            line = line.strip()
            self.stdout.append(line)
            if line.startswith(prefix):
                return line
        self.process.wait()
        self._pump.join()
        raise AssertionError(f"no {prefix!r} line; stdout: {self.stdout}; stderr: {''.join(self.stderr)[-3000:]}")

    def finish(self) -> int:
        code = self.process.wait()
        self._pump.join()
        return code


def engine_masks(checkpoint: Path, frames_dir: Path) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """The oracle: (preview masks by frame, tracked masks by frame) from the engine run directly."""
    from sam2_web.build import build_sam2_video_predictor

    predictor = build_sam2_video_predictor("sam2.1/sam2.1_hiera_t.yaml", checkpoint, device="cpu",
                                           hydra_overrides_extra=list(OVERRIDES))
    with predictor.open_session(str(frames_dir)) as session:
        previews = {
            0: session.add_prompt(0, 1, points=np.array([[30, 28], [100, 80]], np.float32),
                                  labels=np.array([1, 0])).mask(1).copy(),
            2: session.add_prompt(2, 1, box=np.array([70, 50, 120, 90], np.float32)).mask(1).copy(),
        }
        tracked = {fm.frame_idx: fm.mask(1).copy() for fm in session.propagate(direction="both")}
    return previews, tracked


def rgba(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "RGBA", image.mode
    return np.asarray(image)


def test_a_kdenlive_session_end_to_end(work, checkpoint, frames_dir):
    previews, renders = work / "previews", frames_dir / "output-frames"
    # The launch line of Kdenlive's AutomaskHelper::launchSam (clicks of the first frame included).
    kdenlive = KdenliveSide([
        "-I", str(frames_dir), "-F", "0", "-O", str(previews), "-M", str(checkpoint), "-C", KDENLIVE_CONFIG,
        "-P", "0=30,28", "-L", "0=1", "-D", "cpu", "--color", "255,100,100,180",
        "--set", OVERRIDES[0],
    ], cwd=work)
    # The user adds an exclude point (sendPreviewCommand: the frame's whole state), then a box on frame 2.
    kdenlive.send("preview=-F 0 -P 0=30,28,100,80 -L 0=1,0 --border 0 --color 255,100,100,180 --overlay-mode 0")
    assert kdenlive.wait_for("preview ok") == "preview ok 0"
    kdenlive.send("preview=-F two")  # a garbled line is reported, the session goes on
    assert "cannot read the preview line" in kdenlive.wait_for("INFO:")
    kdenlive.send("preview=-F 2 -B 2=70,50,120,90 --border 2 --bordercolor 0,0,255,255 "
                  "--color 255,100,100,180 --overlay-mode 0")
    assert kdenlive.wait_for("preview ok") == "preview ok 2"
    # generateMask: the output folder lives inside the source-frames folder, as in Kdenlive.
    renders.mkdir()
    kdenlive.send(f"render={renders}")
    kdenlive.wait_for("mask ok")
    kdenlive.send("finish")  # newer Kdenlive says so after "mask ok"; the backend may be gone already
    assert kdenlive.finish() == 0, "".join(kdenlive.stderr)[-3000:]

    oracle_previews, oracle_tracked = engine_masks(checkpoint, frames_dir)
    assert sorted(oracle_tracked) == list(range(N_FRAMES))

    assert sorted(p.name for p in previews.iterdir()) == ["preview-00000.png", "preview-00002.png"]
    for frame, mask in oracle_previews.items():
        picture = rgba(previews / f"preview-{frame:05d}.png")
        assert picture.shape == (SIZE[1], SIZE[0], 4)
        assert ((picture[..., 3] > 0) == mask).all(), frame
    assert oracle_previews[0].any() and oracle_previews[2].any()
    box_preview = rgba(previews / "preview-00002.png")
    colours = {tuple(c) for c in box_preview[oracle_previews[2]]}
    assert colours == {COLOR, BORDER_COLOR}  # fill inside, a 2-px border in the border colour

    assert "INFO:Propagating in video" in kdenlive.stdout
    done = [line for line in kdenlive.stdout if line.startswith("frame_done")]
    assert done[-1] == f"frame_done {N_FRAMES}/{N_FRAMES}"
    assert any(line.strip().endswith("%|") for line in "".join(kdenlive.stderr).splitlines())

    files = sorted(p.name for p in renders.iterdir())
    assert files == [f"{i:05d}.png" for i in range(N_FRAMES)]
    for i in range(N_FRAMES):
        picture = rgba(renders / f"{i:05d}.png")
        assert ((picture[..., 3] > 0) == oracle_tracked[i]).all(), i
        assert {tuple(c) for c in picture[oracle_tracked[i]]} <= {COLOR, BORDER_COLOR}

    # Kdenlive's MaskTask: encode the frames to FFV1 with alpha and use it as a mask clip.
    mkv = work / "mask.mkv"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-framerate", "25", "-i", str(renders / "%05d.png"),
                    "-c:v", "ffv1", "-pix_fmt", "yuva420p", str(mkv)], check=True)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,pix_fmt,width,height", "-of", "json", str(mkv)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert int(stream["nb_read_frames"]) == N_FRAMES and stream["pix_fmt"] == "yuva420p"
    assert (stream["width"], stream["height"]) == SIZE


def test_a_missing_model_file_fails_with_a_message(work, frames_dir):
    missing = work / "gone" / "sam2.1_hiera_tiny.pt"
    kdenlive = KdenliveSide(["-I", str(frames_dir), "-O", str(work / "p2"), "-M", str(missing), "-C", KDENLIVE_CONFIG],
                            cwd=work)
    kdenlive.process.stdin.close()
    assert kdenlive.finish() == 1
    assert "does not exist" in "".join(kdenlive.stderr)


# --------------------------------------------------------------------------- protocol pieces


def test_model_arguments_in_kdenlive_and_our_spellings(tmp_path):
    small = tmp_path / "sam2.1_hiera_small.pt"
    small.write_bytes(b"")
    assert resolve_model(str(small), None) == ("sam2.1_hiera_s", small.absolute())
    assert resolve_model(str(small), "configs/sam2.1/sam2.1_hiera_b+.yaml")[0] == "sam2.1_hiera_b+"  # -C decides
    assert resolve_model("tiny", None) == ("sam2.1_hiera_t", None)
    assert resolve_model("facebook/sam2-hiera-large", None) == ("sam2_hiera_l", None)
    assert resolve_model(None, None)[0] == "sam2.1_hiera_t"
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.pt"), KDENLIVE_CONFIG)
    with pytest.raises(UnknownModelError, match="-C"):
        resolve_model("my_model", None)


def test_command_lines():
    style = Style()
    preview = parse_command("preview=-F 12 -P 12=1,2,3,4 -L 12=1,0 -B 12=5,6,70,80 --border 3 --color 1,2,3,4", style)
    assert isinstance(preview, Preview) and preview.frame == 12
    assert preview.prompts[12].points == [(1.0, 2.0), (3.0, 4.0)] and preview.prompts[12].labels == [1, 0]
    assert preview.prompts[12].box == (5.0, 6.0, 70.0, 80.0)
    assert preview.style.border == 3 and preview.style.color == (1, 2, 3, 4)
    edit = parse_command("edit=--bordercolor 9,9,9,9", preview.style)
    assert isinstance(edit, Edit) and edit.style.border_color == (9, 9, 9, 9) and edit.style.border == 3
    assert parse_command("render=/tmp/x y", style) == Render("/tmp/x y", again=False)
    assert parse_command("rerender=/tmp/out", style) == Render("/tmp/out", again=True)
    assert isinstance(parse_command("q", style), Quit) and isinstance(parse_command("finish\n", style), Quit)
    assert parse_command("something_new=1", style) is None  # future commands are ignored, as Kdenlive's script does
    with pytest.raises(PromptError, match="labels"):
        parse_command("preview=-F 0 -P 0=1,2,3,4 -L 0=1", style)
    with pytest.raises(PromptError):
        parse_command("preview=-F zero", style)
    assert parse_per_frame("0=1,2;10=3,4,5,6", 2, "-P") == {0: [1.0, 2.0], 10: [3.0, 4.0, 5.0, 6.0]}
    with pytest.raises(PromptError, match="groups of 4"):
        parse_per_frame("0=1,2,3", 4, "-B")


def test_drawing_modes():
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:9] = True
    style = Style(color=(10, 20, 30, 40), border=1, border_color=(0, 0, 255, 255))
    filled = draw_mask(mask, style, "color")
    assert (filled[~mask] == 0).all()
    assert tuple(filled[4, 5]) == (10, 20, 30, 40) and tuple(filled[2, 3]) == (0, 0, 255, 255)
    outline = draw_mask(mask, style, "boundary")
    assert outline[4, 5, 3] == 0 and outline[2, 3, 3] == 255 and (outline[~mask] == 0).all()
    alpha = draw_mask(mask, style, "alpha")
    assert (alpha[mask, 3] == 0).all() and (alpha[~mask] == (0, 0, 0, 255)).all()
