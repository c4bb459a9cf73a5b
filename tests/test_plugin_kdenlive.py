"""The Kdenlive backend, driven exactly as Kdenlive drives its Object Mask script.

Kdenlive exports the zone as ``00000.jpg ...``, starts the script with ``-I/-O/-M/-C/-F/-P/-L/-D``,
writes ``preview=...`` lines and waits for ``preview ok <frame>``, then writes ``render=<folder>``
and waits for ``mask ok`` before encoding ``<folder>/%05d.png`` with ffmpeg (FFV1 + alpha).
The test does the same with a real subprocess and compares every picture with the engine.
"""

from __future__ import annotations

import re

import json
import os
import queue
import select
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appserver import EDGETAM, OVERRIDES, app_checkpoint
from clips import ffmpeg_exe, make_moving_disc_clip

from plugins.kdenlive.backend import draw_mask, resolve_model
from plugins.kdenlive.protocol import Edit, Preview, Quit, Render, Style, parse_command, parse_per_frame
from sam2_web.errors import CheckpointError, LimitExceededError, PromptError, UnknownModelError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "plugins" / "kdenlive" / "sam2_web_objectmask.py"
N_FRAMES, SIZE = 4, (128, 96)
KDENLIVE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"  # the key Kdenlive's sammodelsinfo.rc maps a .pt to
# EdgeTAM as a sammodelsinfo.rc line would add it: its authors' config name, Meta's file name.
EDGETAM_CONFIG, EDGETAM_FILE = "configs/edgetam.yaml", "edgetam.pt"
TINY_CONFIG = "sam2.1/sam2.1_hiera_t.yaml"  # our engine's name of the same network
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


def simplified(data: bytes) -> str:
    """QString::simplified: whitespace runs become one space, ends trimmed."""
    return " ".join(data.decode("utf-8", "replace").split())


def last_percent(stderr_chunks: list[str]) -> int | None:
    """The last ``N%|`` the backend wrote on stderr (what Kdenlive shows once reads stop merging:
    the older reader takes the first ``%|`` of a merged read, so its parsed value can lag)."""
    found = re.findall(r"(\d+)%\|", "".join(stderr_chunks))
    return int(found[-1]) if found else None


def progress_of(chunk: str) -> int | None:
    """Kdenlive's stderr progress: ``section("%|", 0, 0).section(' ', -1).toInt()``."""
    if "%|" not in chunk:
        return None
    word = chunk.split("%|", 1)[0].split(" ")[-1]
    return int(word) if word.isdigit() else None


class KdenliveSide:
    """The Kdenlive end of the pipes, with either of Kdenlive's two stdout readers.

    ``reader="chunks"`` is the earlier Object Mask code: every read of stdout is one message
    (whatever arrived within ``CHUNK_WINDOW_S`` of the first byte, as a busy GUI thread sees it),
    whitespace collapsed, then ``startsWith("preview ok")`` / ``== "mask ok"`` /
    ``startsWith("INFO:")``. ``reader="lines"`` is the newer code: buffered, split at newlines,
    and ``frame_done n/total`` is progress too. Both take progress from stderr reads. A message
    neither recognises is kept in ``unknown``: Kdenlive would drop it.
    """

    CHUNK_WINDOW_S = 0.03

    def __init__(self, args: list[str], cwd: Path, reader: str, env: dict | None = None):
        env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
        self.process = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.reader = reader
        self.messages: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self.unknown: list[str] = []
        self.infos: list[str] = []
        self.progress: list[int] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _classify(self, command: str) -> None:
        if not command:
            return
        if command.startswith("preview ok"):
            self.messages.put(("preview ok", command.split(" ")[-1]))
        elif command == "mask ok":
            self.messages.put(("mask ok", ""))
        elif command.startswith("INFO:"):
            self.infos.append(command[len("INFO:"):].split(":")[0])
            self.messages.put(("INFO", self.infos[-1]))
        elif self.reader == "lines" and command.startswith("frame_done"):
            done, total = command.split(" ")[1].split("/")
            self.progress.append(int(100 * int(done) / int(total)))
        else:
            self.unknown.append(command)

    def _read_stdout(self) -> None:
        fd, pending = self.process.stdout.fileno(), b""
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            if self.reader == "chunks":
                while select.select([fd], [], [], self.CHUNK_WINDOW_S)[0]:
                    more = os.read(fd, 65536)
                    if not more:
                        break
                    data += more
                self._classify(simplified(data))
            else:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._classify(simplified(line))
        self.messages.put(("exit", ""))

    def _read_stderr(self) -> None:
        fd = self.process.stderr.fileno()
        while data := os.read(fd, 65536):
            text = data.decode("utf-8", "replace")
            self.stderr.append(text)
            value = progress_of(text)
            if value is not None:
                self.progress.append(value)

    def send(self, line: str) -> None:
        """Write a command line; like QProcess::write, a process that has already exited is not an error."""
        try:
            self.process.stdin.write((line + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass

    def expect(self, kind: str) -> str:
        """The next recognised message, which must be of ``kind``; returns its value."""
        got, value = self.messages.get(timeout=600)
        assert (got, self.unknown) == (kind, []), (
            f"wanted {kind!r}, got {got!r} {value!r}; unrecognised: {self.unknown}; "
            f"stderr: {''.join(self.stderr)[-3000:]}")
        return value

    def finish(self) -> int:
        code = self.process.wait(600)
        for thread in self._threads:
            thread.join()
        return code


def engine_run(checkpoint: Path, frames_dir: Path, keyframes: dict, model: str = TINY_CONFIG,
               overrides=OVERRIDES) -> dict[int, np.ndarray]:
    """The oracle: the engine's masks tracked from ``keyframes`` ({frame: dict(points=, labels=, box=)})."""
    from sam2_web.build import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(model, checkpoint, device="cpu", hydra_overrides_extra=list(overrides))
    with predictor.open_session(str(frames_dir)) as session:
        for frame, prompt in sorted(keyframes.items()):
            session.add_prompt(frame, 1, **{k: np.asarray(v, np.float32 if k != "labels" else np.int32)
                                            for k, v in prompt.items()})
        return {fm.frame_idx: fm.mask(1).copy() for fm in session.propagate(direction="both")}


def replay_previews(checkpoint: Path, frames_dir: Path, steps: list[tuple[int, dict]], model: str = TINY_CONFIG,
                    overrides=OVERRIDES) -> dict[int, np.ndarray]:
    """The oracle of the previews: the same prompts, in the same order, on one engine session
    (a second preview of a frame refines the first, as in the backend's session)."""
    from sam2_web.build import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(model, checkpoint, device="cpu", hydra_overrides_extra=list(overrides))
    shown = {}
    with predictor.open_session(str(frames_dir)) as session:
        for frame, prompt in steps:
            arrays = {k: np.asarray(v, np.float32 if k != "labels" else np.int32) for k, v in prompt.items()}
            shown[frame] = session.add_prompt(frame, 1, **arrays).mask(1).copy()
    return shown


def rgba(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "RGBA", image.mode
    return np.asarray(image)


# The user's keyframes: clicks on frame 0 (then a negative point added), a box on frame 2.
CLICKS_0 = {"points": [[30, 28], [100, 80]], "labels": [1, 0]}
BOX_2 = {"box": [70, 50, 120, 90]}
# Editing the saved mask later: Kdenlive restores it and adds a correction on frame 3.
CORRECTION_3 = {"points": [[90, 60]], "labels": [1]}


@pytest.mark.parametrize("reader", ["chunks", "lines"])
def test_a_kdenlive_session_with_either_reader(work, checkpoint, frames_dir, reader):
    previews, renders = work / f"previews-{reader}", frames_dir / f"output-{reader}"
    tmp = work / f"tmp-{reader}"
    tmp.mkdir()
    launch = ["-I", str(frames_dir), "-O", str(previews), "-M", str(checkpoint), "-C", KDENLIVE_CONFIG,
              "-D", "cpu", "--offload", "--set", OVERRIDES[0]]
    # AutomaskHelper::launchSam: the first click of frame 0 is on the command line.
    kdenlive = KdenliveSide([*launch, "-F", "0", "-P", "0=30,28", "-L", "0=1", "--color", "255,100,100,180"],
                            cwd=work, reader=reader, env={"TMPDIR": str(tmp)})
    style = "--border 0 --color 255,100,100,180 --overlay-mode 0"
    kdenlive.send(f"preview=-F 0 -P 0=30,28 -L 0=1 {style}")  # the click
    assert kdenlive.expect("preview ok") == "0"
    kdenlive.send(f"preview=-F 0 -P 0=30,28,100,80 -L 0=1,0 {style}")  # plus a negative point
    assert kdenlive.expect("preview ok") == "0"
    kdenlive.send(f"preview=-F 2 -B 2=70,50,120,90 {style}")  # a box on frame 2
    assert kdenlive.expect("preview ok") == "2"
    kdenlive.send("preview=-F 2 -P 2=1,2,3")  # garbled: said why, still acknowledged
    assert "-P" in kdenlive.expect("INFO")
    assert kdenlive.expect("preview ok") == "2"
    # updateMaskParams: new colours (no answer), then the preview again in the new style.
    kdenlive.send("edit=--border 2 --bordercolor 0,0,255,255 --color 255,100,100,180")
    kdenlive.send(f"preview=-F 2 -B 2=70,50,120,90 --border 2 --bordercolor 0,0,255,255 "
                  "--color 255,100,100,180 --overlay-mode 0")
    assert kdenlive.expect("preview ok") == "2"
    renders.mkdir()
    kdenlive.send(f"render={renders}")
    assert kdenlive.expect("INFO") == "Propagating in video"
    kdenlive.expect("mask ok")
    kdenlive.send("finish")  # the newer Kdenlive says so after "mask ok"; the backend may be gone already
    assert kdenlive.finish() == 0, "".join(kdenlive.stderr)[-3000:]
    assert kdenlive.unknown == [] and kdenlive.progress == sorted(kdenlive.progress), kdenlive.progress
    assert last_percent(kdenlive.stderr) == 100, kdenlive.progress
    assert list(tmp.iterdir()) == []  # Kdenlive's --offload (frames in CPU memory) spills nothing to disk

    first = engine_run(checkpoint, frames_dir, {0: CLICKS_0, 2: BOX_2})
    assert sorted(first) == list(range(N_FRAMES))
    assert sorted(p.name for p in previews.iterdir()) == ["preview-00000.png", "preview-00002.png"]
    steps = [(0, {"points": [[30, 28]], "labels": [1]}), (0, CLICKS_0), (2, BOX_2), (2, BOX_2)]
    for frame, expected in replay_previews(checkpoint, frames_dir, steps).items():
        picture = rgba(previews / f"preview-{frame:05d}.png")
        assert picture.shape == (SIZE[1], SIZE[0], 4) and expected.any()
        assert ((picture[..., 3] > 0) == expected).all(), frame
    box_preview = rgba(previews / "preview-00002.png")
    assert {tuple(c) for c in box_preview[box_preview[..., 3] > 0]} == {COLOR, BORDER_COLOR}
    check_render(renders, first)
    encode_like_kdenlive(renders, work / f"mask-{reader}.mkv")

    # Editing the saved mask: a fresh process whose launch line holds the mask data Kdenlive
    # restored (its keyframes, in Kdenlive's "f=...;f=..." form), a correction, then rerender=.
    again = work / f"output-again-{reader}"
    kdenlive = KdenliveSide([*launch, "-F", "2", "-P", "0=30,28,100,80", "-L", "0=1,0", "-B", "2=70,50,120,90",
                             "--border", "2", "--bordercolor", "0,0,255,255", "--color", "255,100,100,180"],
                            cwd=work, reader=reader)
    kdenlive.send(f"preview=-F 3 -P 3=90,60 -L 3=1 {style}")
    assert kdenlive.expect("preview ok") == "3"
    again.mkdir()
    kdenlive.send(f"rerender={again}")
    assert kdenlive.expect("INFO") == "Propagating in video"
    kdenlive.expect("mask ok")
    kdenlive.send("finish")
    assert kdenlive.finish() == 0, "".join(kdenlive.stderr)[-3000:]
    assert kdenlive.unknown == [] and kdenlive.progress and last_percent(kdenlive.stderr) == 100
    check_render(again, engine_run(checkpoint, frames_dir, {0: CLICKS_0, 2: BOX_2, 3: CORRECTION_3}))


def test_a_kdenlive_session_on_edgetam(work, frames_dir):
    """EdgeTAM picked the way Kdenlive picks a model: its checkpoint in the models folder under
    Meta's file name (``-M .../edgetam.pt``) and the config name a ``sammodelsinfo.rc`` line
    gives it (``-C configs/edgetam.yaml``); ``--set`` shrinks it to 256 px. The previews and the
    rendered frames equal the engine's EdgeTAM masks from the same checkpoint."""
    checkpoint = app_checkpoint(work / "sam2models-edgetam" / EDGETAM_FILE, model=EDGETAM)
    assert resolve_model(str(checkpoint), EDGETAM_CONFIG) == (EDGETAM.name, checkpoint)
    previews, renders = work / "previews-edgetam", work / "output-edgetam"
    sets = [arg for override in EDGETAM.overrides for arg in ("--set", override)]
    kdenlive = KdenliveSide(["-I", str(frames_dir), "-O", str(previews), "-M", str(checkpoint), "-C", EDGETAM_CONFIG,
                             "-D", "cpu", "--offload", *sets, "-F", "0", "-P", "0=30,28", "-L", "0=1",
                             "--color", "255,100,100,180"], cwd=work, reader="lines")
    style = "--border 0 --color 255,100,100,180 --overlay-mode 0"
    kdenlive.send(f"preview=-F 0 -P 0=30,28,100,80 -L 0=1,0 {style}")
    assert kdenlive.expect("preview ok") == "0"
    kdenlive.send(f"preview=-F 2 -B 2=70,50,120,90 {style}")
    assert kdenlive.expect("preview ok") == "2"
    renders.mkdir()
    kdenlive.send(f"render={renders}")
    assert kdenlive.expect("INFO") == "Propagating in video"
    kdenlive.expect("mask ok")
    kdenlive.send("finish")
    assert kdenlive.finish() == 0, "".join(kdenlive.stderr)[-3000:]
    assert kdenlive.unknown == [] and last_percent(kdenlive.stderr) == 100, kdenlive.progress

    model = (EDGETAM.name, EDGETAM.overrides)
    shown = replay_previews(checkpoint, frames_dir, [(0, CLICKS_0), (2, BOX_2)], *model)
    tracked = engine_run(checkpoint, frames_dir, {0: CLICKS_0, 2: BOX_2}, *model)
    assert sorted(tracked) == list(range(N_FRAMES))
    # Foreground and background in every mask compared, so equal pictures mean equal masks.
    for mask in (*shown.values(), *tracked.values()):
        assert mask.any() and not mask.all()
    assert sorted(p.name for p in previews.iterdir()) == ["preview-00000.png", "preview-00002.png"]
    worst = 0
    for frame, expected in shown.items():
        picture = rgba(previews / f"preview-{frame:05d}.png")
        assert picture.shape == (SIZE[1], SIZE[0], 4)
        worst = max(worst, int(((picture[..., 3] > 0) != expected).sum()))
    print("edgetam previews: worst pixels differing from the engine:", worst)
    assert worst == 0
    check_render(renders, tracked)


def check_render(folder: Path, tracked: dict[int, np.ndarray]) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(N_FRAMES)]
    for i in range(N_FRAMES):
        picture = rgba(folder / f"{i:05d}.png")
        assert ((picture[..., 3] > 0) == tracked[i]).all(), i
        assert {tuple(c) for c in picture[tracked[i]]} <= {COLOR, BORDER_COLOR}
    assert any(m.any() for m in tracked.values())


def encode_like_kdenlive(folder: Path, mkv: Path) -> None:
    """Kdenlive's MaskTask: the frames to FFV1 with alpha, used as a mask clip."""
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-framerate", "25", "-i", str(folder / "%05d.png"),
                    "-c:v", "ffv1", "-pix_fmt", "yuva420p", str(mkv)], check=True)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,pix_fmt,width,height", "-of", "json", str(mkv)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert int(stream["nb_read_frames"]) == N_FRAMES and stream["pix_fmt"] == "yuva420p"
    assert (stream["width"], stream["height"]) == SIZE


def test_bad_lines_get_an_info_and_the_session_goes_on(work, checkpoint, frames_dir):
    """Lines that used to end the editor's session (argparse's help and "ambiguous option" exits,
    a 50 MB line, 100,000 clicks, a frame far outside the zone, a border wider than the frame)
    are each answered (INFO, and ``preview ok`` for a preview) while the backend's memory stays
    put; then the same process previews and renders as usual."""
    import psutil

    previews, renders = work / "previews-hostile", work / "output-hostile"
    kdenlive = KdenliveSide(["-I", str(frames_dir), "-O", str(previews), "-M", str(checkpoint), "-C", KDENLIVE_CONFIG,
                             "-D", "cpu", "--set", OVERRIDES[0], "--set", "limits.max_points=16", "-F", "0"],
                            cwd=work, reader="lines")
    style = "--border 0 --color 255,100,100,180 --overlay-mode 0"
    kdenlive.send(f"preview=-F 1 -P 1=30,28 -L 1=1 {style}")
    assert kdenlive.expect("preview ok") == "1"
    backend = psutil.Process(kdenlive.process.pid)
    before = backend.memory_info().rss
    kdenlive.send("preview=-h")  # argparse printed help and exited 0
    assert "-h/--help is not a mask command" in kdenlive.expect("INFO")
    assert kdenlive.expect("preview ok") == "1"  # the last preview's frame
    kdenlive.send("edit=-h")
    assert "-h/--help" in kdenlive.expect("INFO")
    kdenlive.send("preview=-F 2 --bo 3")  # "ambiguous option" exited 2; unknown flags are ignored
    assert kdenlive.expect("preview ok") == "2"
    kdenlive.send("preview=-F 0 -P 0=" + "1," * 25_000_000)  # 50 MB
    assert "more than 1048576 characters" in kdenlive.expect("INFO")
    assert kdenlive.expect("preview ok") == "0"
    kdenlive.send("preview=-F 0 -P 0=" + "30,28," * 100_000)
    assert "100000 clicks" in kdenlive.expect("INFO") and kdenlive.expect("preview ok") == "0"
    kdenlive.send("preview=-F 0 -P 0=" + "30,28," * 17)
    assert "up to 16 per frame" in kdenlive.expect("INFO") and kdenlive.expect("preview ok") == "0"
    kdenlive.send("preview=-F 99999 -P 99999=30,28")
    assert "outside the zone" in kdenlive.expect("INFO") and kdenlive.expect("preview ok") == "2"
    kdenlive.send("preview=-F " + "9" * 5000)
    assert "out of range" in kdenlive.expect("INFO") and kdenlive.expect("preview ok") == "2"
    kdenlive.send("preview=-F 0 --border 1e400")
    assert "infinity" in kdenlive.expect("INFO") and kdenlive.expect("preview ok") == "0"
    grown_mb = (backend.memory_info().rss - before) / 2**20
    print(f"backend RSS grew {grown_mb:.0f} MB over the hostile lines")
    assert grown_mb < 100
    kdenlive.send("edit=--border 2000000000 --bordercolor 0,0,255,255")  # a border far wider than the frame
    kdenlive.send("preview=-F 0 -P 0=30,28 -L 0=1 --border 2000000000 --bordercolor 0,0,255,255")
    assert kdenlive.expect("preview ok") == "0"
    kdenlive.send(f"preview=-F 0 -P 0=30,28,100,80 -L 0=1,0 {style}")
    assert kdenlive.expect("preview ok") == "0"
    renders.mkdir()
    kdenlive.send(f"render={renders}")
    assert kdenlive.expect("INFO") == "Propagating in video"
    kdenlive.expect("mask ok")
    kdenlive.send("finish")
    assert kdenlive.finish() == 0, "".join(kdenlive.stderr)[-3000:]
    assert kdenlive.unknown == [] and "Traceback" not in "".join(kdenlive.stderr)
    tracked = engine_run(checkpoint, frames_dir, {0: CLICKS_0, 1: {"points": [[30, 28]], "labels": [1]}})
    check_render(renders, tracked)


def test_a_missing_model_file_fails_with_a_message(work, frames_dir):
    missing = work / "gone" / "sam2.1_hiera_tiny.pt"
    kdenlive = KdenliveSide(["-I", str(frames_dir), "-O", str(work / "p2"), "-M", str(missing), "-C", KDENLIVE_CONFIG],
                            cwd=work, reader="lines")
    kdenlive.process.stdin.close()
    assert kdenlive.finish() == 1
    assert "does not exist" in "".join(kdenlive.stderr) and kdenlive.unknown == []


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
    # Nothing a line holds makes argparse exit (help, an ambiguous or incomplete option).
    for line in ("preview=-h", "edit=--help", "preview=-F", "preview=-F 0 -P", "preview=-P 0=1,2",
                 "preview=-F 0 --border 1e400", "preview=-F " + "9" * 5000, "preview=-F 0 -P " + "9" * 5000 + "=1,2"):
        with pytest.raises(PromptError):
            parse_command(line, style)
    assert parse_command("edit=--bo 3", style) == Edit(style)  # never abbreviated; unknown flags are ignored
    with pytest.raises(LimitExceededError, match="3 clicks; the backend takes up to 2"):
        parse_command("preview=-F 0 -P 0=1,2,3,4,5,6", style, max_points=2)
    assert parse_per_frame("0=1,2;10=3,4,5,6", 2, "-P") == {0: [1.0, 2.0], 10: [3.0, 4.0, 5.0, 6.0]}
    with pytest.raises(PromptError, match="groups of 4"):
        parse_per_frame("0=1,2,3", 4, "-B")


def test_offload_is_kdenlives_and_spilling_features_is_ours():
    from plugins.kdenlive.protocol import argument_parser

    kdenlive = argument_parser().parse_args(["-I", "frames", "--offload"])
    assert kdenlive.offload and not kdenlive.spill_features
    assert argument_parser().parse_args(["--spill-features"]).spill_features


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


def test_soft_edges_reach_kdenlives_mask_clip(work, checkpoint, frames_dir):
    """Soft edges switched on through the environment Kdenlive passes on: previews and rendered frames
    carry the colour's opacity times the solved alpha (8-bit, as Kdenlive's FFV1 mask clip keeps it),
    equal to MatteStream on the engine's masks in the order the render tracks them."""
    from sam2_web.build import build_sam2_video_predictor
    from sam2_web.matting import MatteStream, alpha_matte
    from sam2_web.media.frames import open_frames

    previews, renders = work / "previews-soft", frames_dir / "output-soft"
    launch = ["-I", str(frames_dir), "-O", str(previews), "-M", str(checkpoint), "-C", KDENLIVE_CONFIG,
              "-D", "cpu", "--set", OVERRIDES[0], "-F", "0", "-P", "0=30,28,100,80", "-L", "0=1,0",
              "-B", "2=70,50,120,90", "--color", "255,100,100,180"]
    kdenlive = KdenliveSide(launch, cwd=work, reader="lines", env={"SAM2_WEB_SOFT_EDGES": "1",
                                                                   "SAM2_WEB_EDGE_BAND": "3"})
    kdenlive.send("preview=-F 0 -P 0=30,28,100,80 -L 0=1,0 --border 0 --color 255,100,100,180 --overlay-mode 0")
    assert kdenlive.expect("preview ok") == "0"
    renders.mkdir()
    kdenlive.send(f"render={renders}")
    assert kdenlive.expect("INFO") == "Propagating in video"
    kdenlive.expect("mask ok")
    kdenlive.send("finish")
    assert kdenlive.finish() == 0, "".join(kdenlive.stderr)[-3000:]

    predictor = build_sam2_video_predictor(TINY_CONFIG, checkpoint, device="cpu", hydra_overrides_extra=list(OVERRIDES))
    options = dict(mask_resolution=predictor.image_size // 4, band_px=3)
    with open_frames(str(frames_dir)) as source:
        frames = [np.array(source.get(i)) for i in range(N_FRAMES)]
    with predictor.open_session(str(frames_dir)) as session:
        shown = session.add_prompt(0, 1, points=np.array(CLICKS_0["points"], np.float32),
                                   labels=np.array(CLICKS_0["labels"], np.int32)).mask(1).copy()
        session.add_prompt(2, 1, box=np.array(BOX_2["box"], np.float32))
        stream = MatteStream(**options)
        rendered = {r.frame_idx: stream.update(frames[r.frame_idx], r.mask(1)) for r in session.propagate(direction="both")}
    preview = rgba(previews / "preview-00000.png")
    np.testing.assert_array_equal(preview[..., 3], np.round(180 * alpha_matte(frames[0], shown, **options)))
    soft = 0
    for i in range(N_FRAMES):
        picture = rgba(renders / f"{i:05d}.png")
        np.testing.assert_array_equal(picture[..., 3], np.round(180 * rendered[i]).astype(np.uint8))
        soft += int(((picture[..., 3] > 0) & (picture[..., 3] < 180)).sum())
    assert soft > 10 and any(m.any() for m in rendered.values())
    mkv = work / "mask-soft.mkv"
    encode_like_kdenlive(renders, mkv)
    decoded = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(mkv), "-f", "rawvideo", "-pix_fmt", "rgba",
                              "pipe:1"], capture_output=True, check=True).stdout
    alpha = np.frombuffer(decoded, np.uint8).reshape(N_FRAMES, SIZE[1], SIZE[0], 4)[..., 3]
    assert len(np.unique(alpha)) > 3  # Kdenlive's mask clip keeps the soft steps, not just on/off


def test_soft_drawing():
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:9] = True
    alpha = mask.astype(np.float32)
    alpha[2, 3] = 0.5
    alpha[1, 3] = 0.25
    style = Style(color=(10, 20, 30, 200))
    filled = draw_mask(mask, style, "color", alpha)
    assert tuple(filled[4, 5]) == (10, 20, 30, 200) and tuple(filled[2, 3]) == (10, 20, 30, 100)
    assert tuple(filled[1, 3]) == (10, 20, 30, 50) and (filled[alpha == 0] == 0).all()
    hidden = draw_mask(mask, style, "alpha", alpha)
    assert hidden[4, 5, 3] == 0 and hidden[2, 3, 3] == 128 and hidden[0, 0, 3] == 255
