"""Named Gradio endpoints for remote clients (editor plugins, scripts) — see ``API.md``.

Two ways to use them with ``gradio_client``:

* one call, ``/segment``: clip + prompts JSON + model + format → the exported file;
* step by step, like the UI: ``/open_clip`` → ``/set_prompts`` (repeat) → ``/track`` →
  ``/export`` → ``/close_clip``. The session id ``/open_clip`` returns is the only handle; it is
  random and unguessable, and the session is removed after the idle TTL like a browser tab's.

The functions here are plain Python (tested without a server); :func:`register` wires them to
hidden components so each gets an ``api_name``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2_web.errors import CancelledError, ExportError, PromptError
from sam2_web.ui import logic
from sam2_web.ui.context import AppContext
from sam2_web.ui.state import AppSession

API_FORMATS = ("png_zip", "matte_mp4", "webm", "prores", "coco_rle", "overlay_mp4",
               "effect_blur", "effect_grey", "effect_replace", "effect_highlight")


@dataclass
class ApiPrompt:
    """Prompts of one object on one frame, as a client sends them."""

    frame: int
    obj_id: int
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    name: str | None = None


def parse_prompts(text: str | list | dict, width: int | None = None, height: int | None = None) -> list[ApiPrompt]:
    """Read the prompts JSON of ``/segment`` (see ``API.md``).

    Accepts a list of ``{"frame", "object", "points", "labels", "box", "name", "normalized"}``
    or ``{"prompts": [...]}``. With ``"normalized": true`` coordinates are fractions of the frame
    size (``width``/``height`` needed).

    Raises:
        PromptError: not JSON, wrong shape, or normalized coordinates without a frame size.
    """
    if isinstance(text, str):
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as error:
            raise PromptError(f"the prompts are not valid JSON ({error.msg} at char {error.pos})") from None
    else:
        data = text
    if isinstance(data, dict):
        data = data.get("prompts", [])
    if not isinstance(data, list) or not data:
        raise PromptError('give at least one prompt: [{"frame": 0, "object": 1, "points": [[x, y]], "labels": [1]}]')
    prompts = []
    for k, item in enumerate(data):
        if not isinstance(item, dict):
            raise PromptError(f"prompt #{k} must be an object like {{\"frame\": 0, \"object\": 1, ...}}")
        try:
            points = [[float(x), float(y)] for x, y in item.get("points") or []]
            box = [float(v) for v in item["box"]] if item.get("box") else None
            labels = [int(v) for v in item.get("labels", [1] * len(points))]
            frame, obj_id = int(item.get("frame", 0)), int(item.get("object", item.get("obj_id", 1)))
        except (TypeError, ValueError) as error:
            raise PromptError(f"prompt #{k} is malformed ({error}); see API.md for the format") from None
        if item.get("normalized"):
            if width is None or height is None:
                raise PromptError("normalized coordinates need the frame size")
            points = [[x * width, y * height] for x, y in points]
            if box is not None:
                box = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
        prompts.append(ApiPrompt(frame, obj_id, points, labels, box, item.get("name")))
    return prompts


def _info_json(session: AppSession) -> dict:
    info = session.info
    return {
        "session": session.sid,
        "model": session.model,
        "num_frames": info.num_frames,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "start_timecode": info.start_timecode,
    }


def _masks_json(session: AppSession, frame_idx: int) -> dict:
    from sam2_web.export.rle import area_and_bbox, encode

    objects = []
    for obj_id, mask in logic.mask_dict(session, frame_idx).items():
        area, bbox = area_and_bbox(mask)
        objects.append({"object": obj_id, "area": int(area), "bbox": bbox, "rle": encode(mask)})
    return {"frame": frame_idx, "objects": objects}


class Api:
    """The endpoint functions, bound to one app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def models(self) -> list[dict]:
        """Every model this server can run: ``[{"name", "label", "repo_id", "params_m"}]``."""
        from sam2_web.registry import list_models

        return [{"name": m.name, "label": m.label, "repo_id": m.repo_id, "params_m": m.params_m}
                for m in list_models()]

    def open_clip(self, clip: str | None, model: str | None = None) -> dict:
        """Upload a clip (or image) and open a session on it.

        Returns:
            ``{"session", "model", "num_frames", "fps", "width", "height", "start_timecode"}``.
        Raises:
            VideoReadError, LimitExceededError, UnknownModelError, HubUnavailableError.
        """
        model = model or self.ctx.default_model
        predictor = self.ctx.predictor(model)
        session = self.ctx.store.create(predictor_name(model, self.ctx))
        try:
            logic.open_clip(session, predictor, clip, self.ctx.limits)
        except Exception:
            self.ctx.store.close(session.sid)
            raise
        # The UI starts with an empty "object 1"; API clients name their own objects.
        session.objects.clear()
        session.current = None
        return _info_json(session)

    def set_prompts(self, session_id: str, frame: int, obj_id: int, points: str = "[]",
                    labels: str = "[]", box: str = "", name: str = "") -> dict:
        """Replace one object's prompts on one frame; returns that frame's masks as COCO RLE.

        ``points``/``labels``/``box`` are JSON text: ``[[x, y], ...]``, ``[1, 0, ...]``, ``[x0, y0, x1, y1]``.
        """
        session = self.ctx.store.get(session_id)
        with _exclusive(session):
            logic.ensure_object(session, obj_id, self.ctx.limits, name or None)
            try:
                pts = json.loads(points or "[]")
                lbl = json.loads(labels or "[]")
                bx = json.loads(box) if box and box.strip() else None
            except json.JSONDecodeError as error:
                raise PromptError(f"points, labels and box must be JSON ({error.msg})") from None
            logic.set_prompts(session, frame, obj_id, points=pts, labels=lbl, box=bx)
            return _masks_json(session, int(frame))

    def track(self, session_id: str) -> dict:
        """Track every prompted object through the clip; returns ``{"frames", "total"}``."""
        session = self.ctx.store.get(session_id)
        last = None
        try:
            for last in logic.track(session):
                self.ctx.store.touch(session)  # a long run is not idleness
        except CancelledError:
            done = 0 if last is None else last.done
            raise CancelledError(
                f"tracking stopped after {done} frames on request; they are kept: call /track again to resume"
            ) from None
        return {"frames": 0 if last is None else last.done, "total": session.info.num_frames}

    def stop_tracking(self, session_id: str) -> str:
        """Ask a running ``/track`` on this session to stop after the current frame (it then
        fails with "stopped"; finished frames are kept and ``/track`` again resumes)."""
        session = self.ctx.store.get(session_id)
        if not session.lock.locked():
            return "not tracking"
        session.cancel.set()
        return "stopping"

    def frame_masks(self, session_id: str, frame: int) -> dict:
        """Masks of one frame as COCO RLE: ``{"frame", "objects": [{"object", "area", "bbox", "rle"}]}``."""
        session = logic.require_clip(self.ctx.store.get(session_id))
        return _masks_json(session, logic.check_frame(session, frame))

    def export(self, session_id: str, fmt: str = "png_zip") -> str:
        """Write the session's masks as ``fmt`` (see ``API_FORMATS``); returns the file path."""
        _check_format(fmt)
        session = self.ctx.store.get(session_id)
        with _exclusive(session):
            return str(logic.export_masks(session, fmt))

    def close_clip(self, session_id: str) -> str:
        """Free the session now (it would expire after the idle TTL anyway)."""
        self.ctx.store.close(session_id)
        return "closed"

    def segment(self, clip: str | None, prompts: str, model: str | None = None, fmt: str = "png_zip") -> str:
        """The whole job in one call: open the clip, apply the prompts, track, export ``fmt``.

        Returns:
            Path of the exported file.
        """
        _check_format(fmt)
        opened = self.open_clip(clip, model)
        session = self.ctx.store.get(opened["session"])
        try:
            for p in parse_prompts(prompts, opened["width"], opened["height"]):
                logic.ensure_object(session, p.obj_id, self.ctx.limits, p.name)
                logic.set_prompts(session, p.frame, p.obj_id, points=p.points, labels=p.labels, box=p.box)
            if session.info.num_frames > 1:
                for _ in logic.track(session):
                    self.ctx.store.touch(session)
            return str(logic.export_masks(session, fmt))
        finally:
            # The file stays (Gradio copies it after we return); the model state goes now.
            session.close_engine()


def predictor_name(model: str, ctx: AppContext) -> str:
    """The registry name of ``model`` (aliases and repo ids resolved)."""
    from sam2_web.registry import get_model

    return get_model(model).name if model else ctx.default_model


def _check_format(fmt: str) -> None:
    if fmt not in API_FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of: {', '.join(API_FORMATS)}")


class _exclusive:
    """Hold a session's lock for one API call; refuse (not wait) when tracking runs."""

    def __init__(self, session: AppSession):
        self.session = session

    def __enter__(self) -> AppSession:
        from sam2_web.ui.state import SessionBusyError

        if not self.session.lock.acquire(blocking=False):
            raise SessionBusyError("this session is tracking right now; wait for /track to return")
        return self.session

    def __exit__(self, *exc) -> None:
        self.session.lock.release()


def register(api: Api, wrap: Callable[[Callable], Callable], track_limit: int) -> None:
    """Create the named endpoints inside the current ``gr.Blocks`` (components hidden).

    Args:
        api: the endpoint functions.
        wrap: turns our errors into ``gr.Error`` (see ``layout.user_errors``).
        track_limit: concurrency of the whole-clip endpoints (shared with the UI's Track).
    """
    import gradio as gr

    from sam2_web.ui.gpu import on_gpu
    from sam2_web.ui.layout import INTERACTIVE_LIMIT

    with gr.Column(visible=False):
        clip = gr.File(label="clip", type="filepath")
        model = gr.Textbox(label="model")
        session_id = gr.Textbox(label="session_id")
        frame = gr.Number(label="frame", precision=0)
        obj_id = gr.Number(label="obj_id", precision=0)
        points = gr.Textbox(label="points")
        labels = gr.Textbox(label="labels")
        box = gr.Textbox(label="box")
        name = gr.Textbox(label="name")
        prompts = gr.Textbox(label="prompts")
        fmt = gr.Textbox(label="fmt")
        out_json = gr.JSON(label="result")
        out_file = gr.File(label="file")
        out_text = gr.Textbox(label="status")

    def endpoint(fn, inputs, outputs, name_, heavy=False):
        run = wrap(on_gpu(fn) if heavy or name_ == "set_prompts" else fn)
        gr.on(triggers=[], fn=run, inputs=inputs, outputs=outputs, api_name=name_,
              api_description=(fn.__doc__ or "").strip().splitlines()[0],
              concurrency_limit=track_limit if heavy else INTERACTIVE_LIMIT,
              concurrency_id="track" if heavy else "interactive")

    endpoint(api.models, [], out_json, "models")
    endpoint(api.open_clip, [clip, model], out_json, "open_clip")
    endpoint(api.set_prompts, [session_id, frame, obj_id, points, labels, box, name], out_json, "set_prompts")
    endpoint(api.track, [session_id], out_json, "track", heavy=True)
    endpoint(api.stop_tracking, [session_id], out_text, "stop_tracking")
    endpoint(api.frame_masks, [session_id, frame], out_json, "frame_masks")
    endpoint(api.export, [session_id, fmt], out_file, "export", heavy=True)
    endpoint(api.close_clip, [session_id], out_text, "close_clip")
    endpoint(api.segment, [clip, prompts, model, fmt], out_file, "segment", heavy=True)


def document() -> str:
    """The text of ``API.md`` (shown in the app under "Use from a script")."""
    path = Path(__file__).with_name("API.md")
    if not path.is_file():  # an install that left the docs out
        return "See sam2_web/ui/API.md in the repository for the endpoints."
    return path.read_text(encoding="utf-8")
