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

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import gradio as gr  # the annotations Gradio reads (gr.Request) must resolve at module level

from sam2_web.errors import CancelledError, ExportError, LimitExceededError, PromptError
from sam2_web.export.formats import FORMATS
from sam2_web.jobs.prompts import MAX_OBJECT_ID
from sam2_web.ui import actions
from sam2_web.ui.context import AppContext
from sam2_web.ui.fair import LOCAL
from sam2_web.ui.limits import check_frame, check_job_prompts, check_track_room, check_upload, require_clip
from sam2_web.ui.state import AppSession, SessionExpiredError

# Formats the API writes: the web app's formats of the one table (one file each).
API_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.web)
_EXAMPLE = '[{"frame": 0, "object": 1, "points": [[x, y]], "labels": [1]}]'


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
    for obj_id, mask in actions.mask_dict(session, frame_idx).items():
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

    def open_clip(self, clip: str | None, model: str | None = None, client: str = LOCAL) -> dict:
        """Upload a clip (or image) and open a session on it.

        Returns:
            ``{"session", "model", "num_frames", "fps", "width", "height", "start_timecode"}``.
        Raises:
            VideoReadError, LimitExceededError, UnknownModelError, HubUnavailableError.
        """
        name = self.ctx.model_name(model)
        predictor = self.ctx.predictor(name)
        session = self.ctx.store.create(name, client)
        try:
            # API clients make and name their own objects.
            actions.open_clip(session, predictor, clip, self.ctx.limits, first_object=False)
        except Exception:
            self.ctx.store.close(session.sid)
            raise
        return _info_json(session)

    def set_prompts(self, session_id: str, frame: int, obj_id: int, points: str = "[]",
                    labels: str = "[]", box: str = "", name: str = "") -> dict:
        """Replace one object's prompts on one frame; returns that frame's masks as COCO RLE.

        ``points``/``labels``/``box`` are JSON text: ``[[x, y], ...]``, ``[1, 0, ...]``, ``[x0, y0, x1, y1]``.
        """
        session = self.ctx.store.get(session_id)
        with session.exclusive():
            frame = check_frame(require_clip(session), frame)  # 2.5 is refused, not rounded
            actions.ensure_object(session, obj_id, self.ctx.limits, name or None)
            pts = _json_value(points, "points", "[]")
            lbl = _json_value(labels, "labels", "[]")
            bx = _json_value(box, "box", "") if box and box.strip() else None
            actions.set_prompts(session, frame, obj_id, points=pts, labels=lbl, box=bx, limits=self.ctx.limits)
            return _masks_json(session, frame)

    def track(self, session_id: str, client: str = LOCAL) -> dict:
        """Track every prompted object through the clip; returns ``{"frames", "total"}``.
        Frames are computed in turns of ``client`` (see ``sam2_web.ui.fair.FrameTurns``)."""
        last = None
        self.ctx.tracks.started(session_id)  # its slot was claimed when it was admitted (see register)
        try:
            session = self.ctx.store.get(session_id)
            for last in actions.track(session, leases=self.ctx.leases, turns=self.ctx.turns, client=client):
                self.ctx.store.touch(session)  # a long run is not idleness
        except CancelledError:
            done = 0 if last is None else last.done
            if session_id not in self.ctx.store:  # /close_clip (or the TTL) ended it meanwhile
                raise SessionExpiredError(
                    f"tracking stopped after {done} frames because this session was closed; nothing is "
                    "left to resume: open the clip again with /open_clip"
                ) from None
            raise CancelledError(
                f"tracking stopped after {done} frames on request; they are kept: call /track again to resume"
            ) from None
        finally:
            self.ctx.tracks.release(session_id)
        return {"frames": 0 if last is None else last.done, "total": session.info.num_frames}

    def stop_tracking(self, session_id: str) -> str:
        """Ask a running ``/track`` on this session to stop after the current frame (it then
        fails with "stopped"; finished frames are kept and ``/track`` again resumes)."""
        session = self.ctx.store.get(session_id, touch=False)
        if not session.busy:
            return "not tracking"
        session.cancel.set()
        return "stopping"

    def frame_masks(self, session_id: str, frame: int) -> dict:
        """Masks of one frame as COCO RLE: ``{"frame", "objects": [{"object", "area", "bbox", "rle"}]}``."""
        session = require_clip(self.ctx.store.get(session_id, touch=False))  # a read: the idle clock runs on
        return _masks_json(session, check_frame(session, frame))

    def export(self, session_id: str, fmt: str = "png_zip", soft_edges: bool = False) -> str:
        """Write the session's masks as ``fmt`` (one of ``API_FORMATS``; ``soft_edges``: alpha mattes
        solved around the edges, in the formats that carry alpha); returns the file path."""
        _check_format(fmt)
        session = self.ctx.store.get(session_id)
        with session.exclusive():
            return str(actions.export_masks(session, fmt, soft_edges=bool(soft_edges)))

    def close_clip(self, session_id: str) -> str:
        """Free the session now (it would expire after the idle TTL anyway)."""
        self.ctx.store.close(session_id)
        return "closed"

    def segment(self, clip: str | None, prompts: str, model: str | None = None, fmt: str = "png_zip",
                soft_edges: bool = False, client: str = LOCAL) -> str:
        """The whole job in one call: the clip and its prompts JSON, tracked both ways through the
        whole clip by ``sam2_web.jobs.run_job``, exported as ``fmt``.

        The prompts are read by the jobs' parser (``sam2_web.jobs.prompts``; either shape), like
        the CLI's and the plugins'. Unnamed objects are called "object <id>", as in the UI. The
        prompts may also ask to find objects: ``{"auto": {"frame": N, "min_area": PX}}`` (segment
        everything on a frame) and ``{"text": {"query": "person, dog", "frame": N}}``.

        Returns:
            Path of the exported file, named after the clip.
        Raises:
            PromptError: no prompts, prompts that are not valid, or that do not fit the clip.
            VideoReadError, LimitExceededError, UnknownModelError, HubUnavailableError, ExportError.
        """
        from sam2_web.jobs import MaskJob, OutputSpec, prompts_from_json, run_job

        _check_format(fmt)
        src = check_upload(clip, self.ctx.limits)
        if not (prompts or "").strip():
            raise PromptError(f"give at least one prompt: {_EXAMPLE}")
        parsed = prompts_from_json(prompts, source="the prompts", max_name_chars=self.ctx.limits.max_name_chars)
        if any(o.start_mask is not None for o in parsed.objects):
            # A path would name a file on this server, not the client's: never read one.
            raise PromptError("/segment takes clicks and boxes, not start masks; drop \"mask\" from the prompts")
        check_job_prompts(parsed.objects, self.ctx.limits)
        objects = tuple(replace(o, name=o.name or f"object {o.obj_id}") for o in parsed.objects)
        if objects:
            _check_objects([o.obj_id for o in objects], self.ctx.limits.max_objects)
        name = self.ctx.model_name(model or None)
        predictor = self.ctx.predictor(name)
        # A session of the store owns the output folder: it is removed after the idle TTL, and
        # never while it is held (the job runs under it).
        session = self.ctx.store.create(name, client)
        stem = _file_stem(src)
        try:
            # The clip is checked and opened once, as /open_clip does; the job reads that same source.
            actions.attach_clip(session, predictor, src, self.ctx.limits)
            # Objects found by auto/text count towards the disk once found (limits.max_objects bounds them).
            check_track_room(session, objects=max(1, len(objects)))
            # The server's own find settings and limits apply to auto/text (the predictor is loaded).
            server_find = tuple(o for o in self.ctx.overrides if o.lstrip("+").startswith(("find.", "limits.")))
            job = MaskJob(clip=session.source_path, objects=objects, normalized=parsed.normalized, model=name,
                          auto=parsed.auto, text=parsed.text, overrides=server_find,
                          output=OutputSpec(session.workdir / "exports" / fmt, formats=(fmt,), name=stem,
                                            soft_edges=bool(soft_edges)))
            with session.exclusive():
                result = run_job(job, predictor=predictor, cancel=session.cancel, frames=session.frames,
                                 session_options=actions.session_options(session, predictor),
                                 progress=lambda *_: self.ctx.store.touch(session))
        except BaseException:
            self.ctx.store.close(session.sid)
            raise
        session.close_video()  # the decoder and the feature-cache share go now
        self.ctx.store.expire_after(session, SEGMENT_FILE_TTL_S)  # only the file is left to fetch
        # Jobs name outputs <stem>_<format>; the API hands back one file named after the clip.
        written = result.outputs[fmt]
        path = written.with_name(stem + FORMATS[fmt].extension)
        os.replace(written, path)
        return str(path)  # the file stays until the TTL (Gradio copies it after we return)


def _json_value(text: str | None, what: str, empty: str) -> object:
    """Decode one JSON field of an endpoint within the bounds every user document gets
    (``sam2_web.documents``); PromptError (never a traceback) when it is not JSON."""
    from sam2_web.documents import DocumentError, parse_document

    try:
        return parse_document(text or empty, fmt="json", source=what)
    except DocumentError as error:
        raise PromptError(f"{what} must be JSON, e.g. {_FIELD_EXAMPLES[what]}: {error}") from None


_FIELD_EXAMPLES = {"points": "[[120, 80], [200, 90]]", "labels": "[1, 0]", "box": "[10, 20, 200, 180]"}
SEGMENT_FILE_TTL_S = 300  # a /segment session only keeps its file for Gradio to copy


def _file_stem(path: Path) -> str:
    """The uploaded file's name without extension, as exports are named; printable and short."""
    stem = "".join(c for c in path.stem if c.isprintable() and c not in "/\\").strip()[:100]
    return stem or "clip"


def _check_objects(ids: list[int], max_objects: int) -> None:
    """The API's rules on objects: ids from 1 (as the UI numbers them), at most ``max_objects``."""
    if min(ids) < 1 or max(ids) > MAX_OBJECT_ID:
        raise PromptError(f"object ids are whole numbers from 1 to {MAX_OBJECT_ID}, got "
                          f"{min(ids) if min(ids) < 1 else max(ids)}")
    if 0 < max_objects < len(ids):
        raise LimitExceededError(
            f"the prompts have {len(ids)} objects; this server tracks up to {max_objects} objects per clip "
            "(limits.max_objects)"
        )


def _check_format(fmt: str) -> None:
    if fmt not in API_FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of: {', '.join(API_FORMATS)}")


def register(api: Api, wrap: Callable[[Callable], Callable], lanes: dict[str, int]) -> None:
    """Create the named endpoints inside the current ``gr.Blocks`` (components hidden).

    Args:
        api: the endpoint functions.
        wrap: turns our errors into ``gr.Error`` (see ``layout.user_errors``).
        lanes: concurrency of each lane, shared with the UI's events of the same kind:
            ``"track"`` (Track), ``"heavy"`` (other whole-clip calls), ``"interactive"``
            (one-frame calls: clicks, reads).
    """
    from sam2_web.ui.gpu import on_gpu, short_call

    with gr.Column(visible=False):
        clip = gr.File(label="clip", type="filepath")
        model = gr.Textbox(label="model")
        session_id = gr.Textbox(label="session_id")
        # No rounding here: a frame of 2.5 or an id of 1.5 is refused by the endpoint, not rounded.
        frame = gr.Number(label="frame", precision=None)
        obj_id = gr.Number(label="obj_id", precision=None)
        points = gr.Textbox(label="points")
        labels = gr.Textbox(label="labels")
        box = gr.Textbox(label="box")
        name = gr.Textbox(label="name")
        prompts = gr.Textbox(label="prompts")
        fmt = gr.Textbox(label="fmt")
        soft = gr.Checkbox(False, label="soft_edges")
        out_json = gr.JSON(label="result")
        out_file = gr.File(label="file")
        out_text = gr.Textbox(label="status")

    ctx = api.ctx

    def endpoint(fn, inputs, outputs, name_, lane="interactive", validator=None, gpu=None):
        # GPU leases on ZeroGPU: clicks get a short one, /track asks for its own (sized from its
        # work), other whole-clip calls the longest one allowed.
        run = wrap(short_call(fn, ctx.leases) if gpu == "short" else
                   on_gpu(fn, ctx.leases.max_s) if gpu == "long" else fn)
        gr.on(triggers=[], fn=run, inputs=inputs, outputs=outputs, api_name=name_,
              api_description=(fn.__doc__ or "").strip().splitlines()[0],
              concurrency_limit=lanes[lane], concurrency_id=lane, validator=validator)

    # Heavy calls are admitted (rate per client, one Track per session) before they wait in the
    # queue; clicks and reads are not limited. Wrappers pass on who called.
    def open_clip(clip: str | None, model: str | None, request: gr.Request) -> dict:
        """Upload a clip (or image) and open a session on it."""
        return api.open_clip(clip, model, ctx.client(request))

    def track(session_id: str, request: gr.Request) -> dict:
        """Track every prompted object through the clip; returns ``{"frames", "total"}``."""
        return api.track(session_id, ctx.client(request))

    def segment(clip: str | None, prompts: str, model: str | None, fmt: str, soft_edges: bool,
                request: gr.Request) -> str:
        """The whole job in one call: clip + prompts JSON + model + format -> the exported file."""
        return api.segment(clip, prompts, model, fmt, soft_edges, ctx.client(request))

    def admit_open(clip, model, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "open a clip"), 2)

    def admit_track(session_id, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "Track", track_sid=str(session_id or "")), 1)

    def admit_export(session_id, fmt, soft_edges, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "export"), 3)

    def admit_segment(clip, prompts, model, fmt, soft_edges, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "/segment"), 5)

    endpoint(api.models, [], out_json, "models")
    endpoint(open_clip, [clip, model], out_json, "open_clip", validator=admit_open, gpu="short")
    endpoint(api.set_prompts, [session_id, frame, obj_id, points, labels, box, name], out_json, "set_prompts",
             gpu="short")
    endpoint(track, [session_id], out_json, "track", lane="track", validator=admit_track)
    endpoint(api.stop_tracking, [session_id], out_text, "stop_tracking")
    endpoint(api.frame_masks, [session_id, frame], out_json, "frame_masks")
    endpoint(api.export, [session_id, fmt, soft], out_file, "export", lane="heavy", validator=admit_export,
             gpu="long")
    endpoint(api.close_clip, [session_id], out_text, "close_clip")
    endpoint(segment, [clip, prompts, model, fmt, soft], out_file, "segment", lane="heavy", validator=admit_segment,
             gpu="long")


def verdict(check: Callable[[], None], inputs: int, mark: int = 0):
    """A Gradio validator's answer for ``inputs`` inputs: ``check()`` passes, or input ``mark`` is
    marked with the refusal's message (the client gets it at once; nothing is queued). The page
    shows the message on that input, so the UI marks its status box."""
    from sam2_web.errors import Sam2WebError, public_message

    answer = [gr.validate(True, "")] * inputs
    try:
        check()
    except Sam2WebError as refusal:
        answer[mark] = gr.validate(False, public_message(refusal))
    return answer[0] if inputs == 1 else answer


def document() -> str:
    """The text of ``API.md`` (shown in the app under "Use from a script")."""
    path = Path(__file__).with_name("API.md")
    if not path.is_file():  # an install that left the docs out
        return "See sam2_web/ui/API.md in the repository for the endpoints."
    return path.read_text(encoding="utf-8")
