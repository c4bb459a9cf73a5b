"""The ComfyUI nodes inside the real ComfyUI 0.3.64, headless, driven over its HTTP API.

The snapshot in ``shared/hosts/comfyui-0.3.64.tar.gz`` is unpacked fresh, our node folder is
linked into ``custom_nodes/`` and ``python main.py --cpu`` is started on loopback in the host venv
that ``scripts/dev.sh install`` builds (``.oracles/comfyui``: ComfyUI's requirements beside the
dev venv's torch). Workflows are queued with ``POST /prompt`` as a user's graph would be; the
outcome is read from ComfyUI's own events (its websocket) and ``/history``, and the files from
its ``output/`` folder. ComfyUI runs every prompt inside ``torch.inference_mode()``. The masks
are compared with the engine's own session API run in this process on the frames ComfyUI decoded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appserver import EDGETAM, app_checkpoint
from tests.clips import make_moving_disc_clip, moving_disc_frames
from tests.oracle_venv import require_installed
from tests.parity import build_reference, save_official_checkpoint
from tests.test_plugin_comfyui import engine_masks, engine_predictor, load_like_comfyui

REPO = Path(__file__).resolve().parents[1]
COMFY_PYTHON = REPO / ".oracles" / "comfyui" / "bin" / "python"
OVERRIDES = "++model.image_size=128"  # small input: the whole module runs in about a minute
CLIP_FRAMES, CLIP_SIZE = 8, (128, 96)
CLICK, CLICK_FRAME = (40, 30), 2  # on the disc of frame 2


def comfyui_release() -> Path:
    """The ComfyUI release tarball the install step used (from shared/ or its public source)."""
    folder = require_installed("comfyui")
    return Path((folder / ".snapshot").read_text().strip())


class Events:
    """ComfyUI's websocket (``/ws?clientId=...``): the JSON messages it sends this client.

    A minimal RFC 6455 client (text frames in, pongs out), enough for ComfyUI's status events.
    """

    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("ComfyUI closed the websocket")
        return chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def next(self) -> dict:
        """The next JSON message (binary preview frames are skipped, pings answered)."""
        while True:
            first, second = self._take(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._take(8))
            mask = self._take(4) if second & 0x80 else b""
            payload = self._take(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 1:
                return json.loads(payload)
            if opcode == 8:
                raise EOFError("ComfyUI closed the websocket")
            if opcode == 9:  # ping -> pong (client frames are masked)
                key = os.urandom(4)
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + key
                                  + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))

    def close(self) -> None:
        self.sock.close()


OUTCOMES = {"execution_success": "success", "execution_error": "error", "execution_interrupted": "interrupted"}


class Comfy:
    """A running ComfyUI: its tree, port, log, and the HTTP calls the tests make."""

    def __init__(self, tree: Path, port: int, process: subprocess.Popen, log: list[str]):
        self.tree, self.port, self.process, self.log = tree, port, process, log
        self.client_id = uuid.uuid4().hex
        self.events = Events(port, self.client_id)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text.strip() else {}
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read().decode() or "{}")

    def queue(self, workflow: dict) -> str:
        status, answer = self.call("POST", "/prompt", {"prompt": workflow, "client_id": self.client_id})
        assert status == 200, answer
        return answer["prompt_id"]

    def wait(self, prompt_id: str, on_event=None) -> tuple[str, list[dict]]:
        """Events of ``prompt_id`` until it ends; returns ("success" | "error" | "interrupted", events)."""
        seen = []
        while True:
            message = self.events.next()
            data = message.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            seen.append(message)
            if on_event is not None:
                on_event(message)
            kind = message["type"]
            if kind in OUTCOMES:
                # ComfyUI sends these from inside the run and records /history only after it; its
                # "executing" with node None follows that record, so wait for it before returning.
                self._until_finished(prompt_id)
                return OUTCOMES[kind], seen
            if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return "success", seen

    def _until_finished(self, prompt_id: str) -> None:
        """Read events until ComfyUI's end-of-prompt ``executing`` (node None) for ``prompt_id``."""
        while True:
            data = self.events.next().get("data") or {}
            if data.get("prompt_id") == prompt_id and "node" in data and data["node"] is None:
                return

    def outputs(self) -> list[str]:
        """Everything under output/ (relative paths), hidden staging folders included."""
        root = self.tree / "output"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "_output_images_will_be_put_here")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    tarball = comfyui_release()
    work = tmp_path_factory.mktemp("comfyui")
    with tarfile.open(tarball) as snapshot:
        snapshot.extractall(work, filter="data")
    tree = work / "ComfyUI"
    (tree / "custom_nodes" / "sam2_web").symlink_to(REPO / "plugins" / "comfyui", target_is_directory=True)
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    process = subprocess.Popen([str(COMFY_PYTHON), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)],
                               cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    ready = threading.Event()

    def pump():
        for line in process.stdout:
            log.append(line)
            if "To see the GUI go to" in line:
                ready.set()
        ready.set()  # ended: let the fixture see it

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(300)
    try:
        assert process.poll() is None and ready.is_set(), "ComfyUI did not start:\n" + "".join(log[-60:])
        host = Comfy(tree, port, process, log)
        yield host
        host.events.close()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def inputs(comfy, tmp_path_factory):
    """The clip and stills in ComfyUI's input/ folder, and a random-weight checkpoint."""
    work = tmp_path_factory.mktemp("comfy_inputs")
    checkpoint = save_official_checkpoint(build_reference("sam2.1_hiera_t", [OVERRIDES], video=True),
                                          work / "sam2.1_hiera_t_random.pt")
    make_moving_disc_clip(comfy.tree / "input" / "ball.mp4", n_frames=CLIP_FRAMES, size=CLIP_SIZE, radius=14)
    stills, _ = moving_disc_frames(n_frames=3, size=(96, 64), radius=10, seed=3)
    names = []
    for i, still in enumerate(stills):
        Image.fromarray(still).save(comfy.tree / "input" / f"still_{i}.png")
        names.append(f"still_{i}.png")
    return {"checkpoint": str(checkpoint), "stills": stills, "still_names": names}


@pytest.fixture(scope="module")
def predictor(inputs):
    """The engine as the loader node builds it, in this process (the oracle's model)."""
    nodes = load_like_comfyui(REPO / "plugins" / "comfyui", "sam2_web_nodes_oracle")
    loader = nodes.NODE_CLASS_MAPPINGS["SAM2WebModelLoader"]()
    (loaded,) = loader.load(model="sam2.1_hiera_t", device="cpu", checkpoint=inputs["checkpoint"], overrides=OVERRIDES)
    return loaded


def loader_node(inputs) -> dict:
    return {"class_type": "SAM2WebModelLoader",
            "inputs": {"model": "sam2.1_hiera_t", "device": "cpu", "checkpoint": inputs["checkpoint"],
                       "overrides": OVERRIDES}}


def video_workflow(inputs, prefix: str, points: str, prompts: str = "") -> dict:
    """Load Video → Get Video Components → our segmenter (with our loader) → our matte export
    (grey PNG mattes) and an RGBA PNG export (the frames ComfyUI decoded, with the matte as alpha)."""
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "ball.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": loader_node(inputs),
        "4": {"class_type": "SAM2WebVideoSegment",
              "inputs": {"sam2_model": ["3", 0], "images": ["2", 0], "prompts": prompts, "direction": "both",
                         "points": points, "labels": "", "box": "", "frame": CLICK_FRAME, "object_id": -1}},
        "5": {"class_type": "SAM2WebMatteExport",
              "inputs": {"masks": ["4", 0], "format": "png", "folder": "sam2_web", "filename_prefix": prefix,
                         "fps": ["2", 2]}},
        "6": {"class_type": "SAM2WebMatteExport",
              "inputs": {"masks": ["4", 0], "format": "rgba_png", "folder": "sam2_web", "filename_prefix": prefix,
                         "fps": ["2", 2], "images": ["2", 0]}},
    }


def read_stack(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.png"))
    assert files, f"no PNGs in {folder}"
    return np.stack([np.asarray(Image.open(f)) for f in files])


def test_our_nodes_are_registered(comfy):
    status, info = comfy.call("GET", "/object_info")
    assert status == 200
    for key, category in (("SAM2WebModelLoader", "sam2_web"), ("SAM2WebVideoSegment", "sam2_web"),
                          ("SAM2WebMatteExport", "sam2_web")):
        assert key in info, [k for k in info if "SAM" in k]
        assert info[key]["category"] == category
    assert info["SAM2WebVideoSegment"]["output"] == ["MASK", "IMAGE"]
    assert "sam2.1_hiera_t" in info["SAM2WebModelLoader"]["input"]["required"]["model"][0]
    assert not any("sam2_web" in line and "IMPORT FAILED" in line for line in comfy.log)


def test_video_to_masks_to_matte_export(comfy, inputs, predictor):
    prompt_id = comfy.queue(video_workflow(inputs, "ball", points=f"{CLICK[0]},{CLICK[1]}"))
    outcome, events = comfy.wait(prompt_id)
    assert outcome == "success", json.dumps(events[-3:])[-3000:] + "".join(comfy.log[-40:])
    out = comfy.tree / "output" / "sam2_web"
    assert sorted(p.name for p in out.iterdir()) == ["ball_png", "ball_rgba_png"]
    mattes = read_stack(out / "ball_png" / "matte")
    rgba = read_stack(out / "ball_rgba_png")
    assert mattes.shape == (CLIP_FRAMES, CLIP_SIZE[1], CLIP_SIZE[0]) and set(np.unique(mattes)) <= {0, 255}
    assert np.array_equal(rgba[..., 3] > 0, mattes > 127)
    # The oracle: the engine on the exact frames ComfyUI decoded (the RGBA export's colour).
    frames = np.ascontiguousarray(rgba[..., :3])
    expected = engine_masks(predictor, frames, CLICK_FRAME, [list(CLICK)], [1])
    diff = int(((mattes > 127) != expected).sum())
    print(f"ComfyUI video run vs engine: {diff} differing pixels of {expected.size}; coverage {expected.mean():.3f}")
    assert diff == 0 and expected.any()
    history = comfy.call("GET", f"/history/{prompt_id}")[1][prompt_id]
    assert history["status"]["status_str"] == "success"
    assert history["outputs"]["5"]["text"] == [str(out / "ball_png")]


def test_video_on_edgetam_matches_the_engine(comfy, inputs, tmp_path_factory):
    """The video workflow on EdgeTAM, one of the new models (at 256 px: its two overrides go in the
    loader's one text field): ComfyUI's mattes equal our engine's masks from the same checkpoint."""
    checkpoint = app_checkpoint(tmp_path_factory.mktemp("comfy_edgetam") / "edgetam_random.pt", EDGETAM)
    workflow = video_workflow(inputs, "edgetam", points=f"{CLICK[0]},{CLICK[1]}")
    workflow["3"]["inputs"].update(model="edgetam", checkpoint=str(checkpoint), overrides=" ".join(EDGETAM.overrides))
    for export_node in ("5", "6"):
        workflow[export_node]["inputs"]["folder"] = "edgetam"
    prompt_id = comfy.queue(workflow)
    outcome, events = comfy.wait(prompt_id)
    assert outcome == "success", json.dumps(events[-3:])[-3000:] + "".join(comfy.log[-40:])
    out = comfy.tree / "output" / "edgetam"
    assert sorted(p.name for p in out.iterdir()) == ["edgetam_png", "edgetam_rgba_png"]
    mattes = read_stack(out / "edgetam_png" / "matte")
    rgba = read_stack(out / "edgetam_rgba_png")
    assert mattes.shape == (CLIP_FRAMES, CLIP_SIZE[1], CLIP_SIZE[0]) and set(np.unique(mattes)) <= {0, 255}
    assert np.array_equal(rgba[..., 3] > 0, mattes > 127)
    frames = np.ascontiguousarray(rgba[..., :3])
    oracle = engine_predictor("edgetam", checkpoint, EDGETAM.overrides)
    expected = engine_masks(oracle, frames, CLICK_FRAME, [list(CLICK)], [1])
    diff = int(((mattes > 127) != expected).sum())
    print(f"ComfyUI EdgeTAM run vs engine: {diff} differing pixels of {expected.size}; coverage {expected.mean():.3f}")
    assert diff == 0
    assert expected.any() and not expected.all()  # foreground and background: the comparison compares something
    history = comfy.call("GET", f"/history/{prompt_id}")[1][prompt_id]
    assert history["status"]["status_str"] == "success"
    assert history["outputs"]["5"]["text"] == [str(out / "edgetam_png")]


def test_image_batch_with_two_objects(comfy, inputs, predictor):
    names = inputs["still_names"]
    objects = {"version": 1, "objects": [
        {"id": 1, "frames": [{"frame": 0, "points": [[20, 15]], "labels": [1]}]},
        {"id": 2, "frames": [{"frame": 1, "box": [40, 20, 90, 60]}]},
    ]}
    workflow = {
        "10": {"class_type": "LoadImage", "inputs": {"image": names[0]}},
        "11": {"class_type": "LoadImage", "inputs": {"image": names[1]}},
        "12": {"class_type": "LoadImage", "inputs": {"image": names[2]}},
        "13": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
        "14": {"class_type": "ImageBatch", "inputs": {"image1": ["13", 0], "image2": ["12", 0]}},
        "3": loader_node(inputs),
    }
    for obj in (1, 2):
        workflow[f"2{obj}"] = {"class_type": "SAM2WebVideoSegment",
                               "inputs": {"sam2_model": ["3", 0], "images": ["14", 0], "prompts": json.dumps(objects),
                                          "direction": "both", "object_id": obj}}
        workflow[f"3{obj}"] = {"class_type": "SAM2WebMatteExport",
                               "inputs": {"masks": [f"2{obj}", 0], "format": "png", "folder": "batch",
                                          "filename_prefix": f"object{obj}", "fps": 24.0}}
    prompt_id = comfy.queue(workflow)
    outcome, events = comfy.wait(prompt_id)
    assert outcome == "success", json.dumps(events[-3:])[-3000:]
    stills = inputs["stills"]
    expected = {1: np.zeros(stills.shape[:3], bool), 2: np.zeros(stills.shape[:3], bool)}
    with predictor.predictor.open_session(stills) as session:
        session.add_prompt(0, 1, points=np.array([[20, 15]], np.float32), labels=np.array([1], np.int32))
        session.add_prompt(1, 2, box=np.array([40, 20, 90, 60], np.float32))
        for result in session.propagate(direction="both"):
            for obj in (1, 2):
                expected[obj][result.frame_idx] = result.masks[result.obj_ids.index(obj)]
    for obj in (1, 2):
        mattes = read_stack(comfy.tree / "output" / "batch" / f"object{obj}_png" / "matte") > 127
        diff = int((mattes != expected[obj]).sum())
        print(f"object {obj}: {diff} differing pixels; coverage {expected[obj].mean():.3f}")
        assert diff == 0 and expected[obj].any()
    assert not np.array_equal(expected[1], expected[2])


def test_a_bad_prompt_fails_with_a_clear_error_and_writes_nothing(comfy, inputs):
    before = comfy.outputs()
    bad = '{"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[5, 5]]}]}], "colour": "red"}'
    prompt_id = comfy.queue(video_workflow(inputs, "bad", points="", prompts=bad))
    outcome, events = comfy.wait(prompt_id)
    assert outcome == "error"
    error = events[-1]["data"]
    assert error["node_type"] == "SAM2WebVideoSegment"
    assert "unknown key" in error["exception_message"] and "colour" in error["exception_message"]
    assert error["exception_type"].endswith("PromptError")
    history = comfy.call("GET", f"/history/{prompt_id}")[1][prompt_id]
    assert history["status"]["status_str"] == "error"
    assert comfy.outputs() == before


def test_an_interrupt_stops_tracking_and_writes_nothing(comfy, inputs):
    before = comfy.outputs()
    interrupted_at: list[int] = []

    def interrupt_once_tracking(message):
        data = message.get("data") or {}
        if message["type"] == "progress" and data.get("node") == "4" and not interrupted_at:
            interrupted_at.append(int(data["value"]))
            status, _ = comfy.call("POST", "/interrupt", {})
            assert status == 200

    # Other clicks than the first run, so the segmenter runs again (the loader and video are cached).
    prompt_id = comfy.queue(video_workflow(inputs, "stopped", points="90,70; 30,20"))
    outcome, events = comfy.wait(prompt_id, on_event=interrupt_once_tracking)
    assert interrupted_at and interrupted_at[0] < CLIP_FRAMES, "no progress event from the segmenter"
    assert outcome == "interrupted", json.dumps(events[-3:])[-3000:]
    assert events[-1]["data"]["node_type"] == "SAM2WebVideoSegment"
    assert comfy.outputs() == before
    assert not list((comfy.tree / "output").rglob("stopped*"))
