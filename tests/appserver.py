"""Run the web app for tests: a random-weight checkpoint served by the loopback Hub, and
``python app.py`` started on a free loopback port with an isolated Hugging Face cache.

Random weights put the object-presence logit near 0, so most clicks would come back "object
absent" (an empty mask) and a content check would compare nothing. ``app_checkpoint`` raises the
presence head's bias so the model always answers "present": the masks are then whatever the
random mask decoder draws — arbitrary, but non-empty and deterministic, which is what a test of
the plumbing needs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hubserver import serve_hub
from parity import build_reference

REPO = Path(__file__).resolve().parents[1]
PRESENCE_BIAS = 8.0


@dataclass(frozen=True)
class AppModel:
    """A model the app-level tests run: its registry name, where the loopback Hub serves its
    checkpoint (the registry's own repo and file) and the overrides that shrink it to 256 px."""

    name: str
    repo_id: str
    filename: str
    overrides: tuple[str, ...]

    def app_args(self) -> list[str]:
        """Hydra overrides that select this model at 256 px in the app, the CLI or a plugin."""
        return [f"model={self.name}", *self.overrides]


TINY = AppModel("sam2.1_hiera_t", "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt",
                 ("++model.image_size=256",))
# EdgeTAM at 256 px: a 16x16 frame map, so the memory cross-attention's query grid is 16x16.
EDGETAM = AppModel("edgetam", "facebook/EdgeTAM", "edgetam.pt",
                    ("++model.image_size=256", "++model.memory_attention.layer.cross_attention.q_sizes=[16,16]"))
MODEL, REPO_ID, FILENAME, OVERRIDES = TINY.name, TINY.repo_id, TINY.filename, TINY.overrides


def app_checkpoint(path: Path, model: AppModel = TINY) -> Path:
    """Write an official-format random-weight checkpoint of ``model`` at 256 px.

    SAM 2.1 tiny comes from the reference package; EdgeTAM's authors' code lives in its own venv,
    so its random weights come from our build, whose keys the parity tests prove equal to the
    official checkpoint's (strict loading both ways).
    """
    if model == TINY:
        net = build_reference(model.name, list(model.overrides), video=True)
    else:
        from sam2_web.build import build_sam2_video_predictor

        torch.manual_seed(0)
        net = build_sam2_video_predictor(model.name, None, device="cpu", hydra_overrides_extra=list(model.overrides))
    state = net.state_dict()
    state["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += PRESENCE_BIAS
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def free_port() -> int:
    """A TCP port nobody listens on right now (the app binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningApp:
    """A launched ``app.py``: its URL, process and everything it printed."""

    url: str
    process: subprocess.Popen
    output: list[str] = field(default_factory=list)

    def log(self) -> str:
        """Everything the app printed so far."""
        return "".join(self.output)


# One loopback client making every call of a test module: the per-visitor sharing rules (sessions
# per client, heavy-call rate) would refuse it, so apps run with them off unless a test (the fair
# share tests) asks for them.
ONE_CLIENT = ("server.sessions_per_client=0", "server.heavy_burst=0")


@contextmanager
def run_app(workdir: Path, checkpoint: Path, extra: tuple[str, ...] = ONE_CLIENT, timeout: float = 600,
            model: AppModel = TINY) -> Iterator[RunningApp]:
    """Serve ``checkpoint`` from a loopback Hub and run ``python app.py`` against it.

    Args:
        workdir: a test temp folder (HF cache and Gradio temp files go below it).
        checkpoint: the file served as ``model``'s Hub file (e.g. ``facebook/EdgeTAM/edgetam.pt``).
        extra: more hydra overrides for the app (default: :data:`ONE_CLIENT`).
        timeout: seconds to wait for "Running on local URL".
        model: the model the app runs (``model=auto`` resolves to SAM 2.1 tiny in tests, which
            ship no speed figures; any other model is named on the command line).
    """
    files = {(model.repo_id, "main", model.filename): checkpoint.read_bytes()}
    with serve_hub(files) as hub:
        port = free_port()
        env = dict(os.environ)
        env.update({
            "HF_ENDPOINT": hub.endpoint,
            "HF_HOME": str(workdir / "hf_home"),
            "HF_HUB_CACHE": str(workdir / "hf_home" / "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_TEMP_DIR": str(workdir / "gradio"),
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("GRADIO_SERVER_NAME", None)
        env.pop("GRADIO_SERVER_PORT", None)
        chosen = list(model.overrides) if model == TINY else model.app_args()
        cmd = [sys.executable, str(REPO / "app.py"), *chosen, "device=cpu", "server.host=127.0.0.1",
               f"server.port={port}", *extra]
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        app = RunningApp(f"http://127.0.0.1:{port}/", process)
        ready = threading.Event()

        def pump() -> None:
            for line in process.stdout:
                app.output.append(line)
                if "Running on local URL" in line:
                    ready.set()
            ready.set()  # the process ended: stop waiting

        threading.Thread(target=pump, daemon=True).start()
        try:
            if not ready.wait(timeout) or process.poll() is not None:
                raise RuntimeError(f"the app did not start:\n{app.log()[-4000:]}")
            yield app
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
