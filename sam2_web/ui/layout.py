"""The Gradio Blocks: components (:func:`_layout`) and their wiring (:func:`_bind`) to the plain
functions of ``actions``/``render``. No business logic here.

Every callback takes the session id from ``gr.State``, looks the session up in the store, calls
one logic function and renders the result. Our errors become ``gr.Error`` with their message;
anything unexpected is logged with its traceback and shown as a short ``gr.Error``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from sam2_web.errors import CancelledError, Sam2WebError, public_message
from sam2_web.export.formats import FORMATS
from sam2_web.ui import actions, render, speed
from sam2_web.ui.api import Api, register, verdict
from sam2_web.ui.api import document as api_document
from sam2_web.ui.context import AppContext
from sam2_web.ui.gpu import on_gpu, short_call
from sam2_web.ui.limits import check_frame, require_clip
from sam2_web.ui.state import AppSession

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLES = ("ball.mp4", "crossing.mp4", "grow.mp4", "still.jpg")
INTERACTIVE_LIMIT = 2  # clicks (one model call each) served at once, across users
PREVIEW_EVERY_S = 0.5  # while tracking, send a new picture at most this often
DOWNLOAD_FORMATS = [(f.menu, f.name) for f in FORMATS.values() if f.menu]
EFFECTS = [("Blur the background", "blur"), ("Grey background", "grey"),
           ("Replace the background", "replace"), ("Highlight the object", "highlight")]
MODES = [("Positive point", "positive"), ("Negative point", "negative"), ("Box (two clicks)", "box")]
CSS = ".sam2-progress progress { height: 1.2em; } .sam2-objects { line-height: 1.8; }"


def _as_gr_error(error: Exception) -> gr.Error:
    if isinstance(error, Sam2WebError):
        return gr.Error(public_message(error), print_exception=False)  # no server paths
    log.exception("unexpected error in a callback")
    return gr.Error(f"Something went wrong ({type(error).__name__}); the server log has the details.",
                    print_exception=False)


def user_errors(fn: Callable) -> Callable:
    """Show our errors as ``gr.Error`` and hide tracebacks; works for plain and generator callbacks.

    ``functools.wraps`` keeps the signature, which Gradio reads to inject ``gr.Progress`` and
    ``gr.SelectData`` arguments.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:  # noqa: BLE001 - the UI boundary: every error becomes a message
                raise _as_gr_error(error) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - the UI boundary: every error becomes a message
            raise _as_gr_error(error) from None
    return wrapper


class Callbacks:
    """The callbacks of one app, bound to its context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    # -- helpers -------------------------------------------------------------------------------
    def _session(self, sid: str | None, touch: bool = True) -> AppSession | None:
        return self.ctx.store.find(sid, touch=touch)

    def _view(self, session: AppSession, frame_idx: int):
        """(frame picture, slider, frame label) for ``frame_idx``."""
        session.frame_idx = frame_idx
        return (render.frame_image(session, frame_idx),
                gr.update(value=frame_idx, maximum=max(1, session.info.num_frames - 1),
                          interactive=session.info.num_frames > 1),
                render.frame_label(session, frame_idx))

    def _objects(self, session: AppSession | None):
        """(legend html, selector update)."""
        return (render.objects_html(session),
                gr.update(choices=render.object_choices(session),
                          value=session.current if session is not None else None))

    @staticmethod
    def _download_progress(progress: gr.Progress, label: str):
        def report(done: int, total: int | None) -> None:
            if total:
                progress((done, total), desc=f"Downloading {label}", unit="bytes")
        return report

    def _predictor(self, model: str, progress: gr.Progress):
        return self.ctx.predictor(model, on_progress=self._download_progress(progress, model))

    @staticmethod
    def _estimate(session: AppSession, before: str = ""):
        """The status box before Track: what to do, or how long Track should take."""
        return speed.estimate_html(session, speed.session_speed(session), before)

    def refresh_models(self):
        """A page (re)load: the model labels and table with the speed figures measured since."""
        return gr.update(choices=self.ctx.model_choices()), self.ctx.models_markdown()

    # -- input ---------------------------------------------------------------------------------
    def upload(self, path: str | None, model: str, sid: str | None, _status: str, samurai: bool | None,
               request: gr.Request, progress=gr.Progress()):
        """A clip (or image) was uploaded or an example picked: open it in a fresh state (with the
        session's SAMURAI switch as the checkbox shows it)."""
        if not path:
            return (sid,) + (gr.skip(),) * 8
        session = self._session(sid)
        if session is None:
            session = self.ctx.store.create(model or self.ctx.default_model, self.ctx.client(request))
        with session.exclusive():
            if samurai is not None:
                session.samurai = bool(samurai)
            progress(0, desc="Loading the model")
            predictor = self._predictor(model or session.model, progress)
            session.model = model or session.model
            progress(0.5, desc="Opening the clip")
            actions.open_clip(session, predictor, path, self.ctx.limits)
        return (session.sid, *self._view(session, 0), *self._objects(session), self._estimate(session), None, None)

    def change_model(self, model: str, sid: str | None, progress=gr.Progress()):
        """Another model was picked: load it (downloading if needed) and replay the clicks on it."""
        predictor = self._predictor(model, progress)
        session = self._session(sid)
        if session is None or not session.has_clip:
            return gr.skip(), gr.skip(), gr.skip(), render.progress_html(None, f"Model {model} ready.")
        with session.exclusive():
            actions.switch_model(session, predictor, model)
        return (*self._view(session, session.frame_idx),
                self._estimate(session, f"Model {model} ready; clicks replayed."))

    def change_samurai(self, on: bool, sid: str | None, progress=gr.Progress()):
        """The "Robust to occlusion (SAMURAI)" switch: re-open the clip with it, replay the clicks."""
        session = self._session(sid)
        if session is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        with session.exclusive():
            if not session.has_clip:
                session.samurai = bool(on)
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            actions.set_samurai(session, self._predictor(session.model, progress), bool(on))
        state = "on" if on else "off"
        return (*self._view(session, session.frame_idx),
                self._estimate(session, f"SAMURAI memory {state}; clicks replayed, track again."))

    def scrub(self, sid: str | None, frame_idx: float):
        """The slider moved: show that frame with its masks."""
        session = require_clip(self._session(sid, touch=False))  # looking is not an action: the idle clock runs on
        idx = check_frame(session, int(frame_idx))
        image, _, label = self._view(session, idx)
        return image, label

    # -- prompts -------------------------------------------------------------------------------
    def click(self, sid: str | None, frame_idx: float, evt: gr.SelectData):
        """A click on the frame: one model call on this frame, then redraw it."""
        session = require_clip(self._session(sid))
        if not evt.index or evt.index[0] is None:
            return (gr.skip(),) * 4
        scale = render.display_scale(session.info.width, session.info.height)
        x, y = evt.index[0] * scale, evt.index[1] * scale
        with session.exclusive(), speed.timed_click(session, int(frame_idx)):
            actions.click(session, int(frame_idx), x, y, self.ctx.limits)
        return render.frame_image(session, int(frame_idx)), *self._objects(session), self._estimate(session)

    def set_mode(self, sid: str | None, mode: str) -> None:
        """The click-mode radio changed: positive point, negative point or box."""
        session = self._session(sid)
        if session is not None:
            actions.set_mode(session, mode)

    def undo(self, sid: str | None):
        """Undo the last click (or a half-drawn box) and show its frame."""
        session = require_clip(self._session(sid))
        with session.exclusive():
            frame_idx = actions.undo(session)
        if frame_idx is None:
            gr.Info("Nothing to undo.")
            frame_idx = session.frame_idx
        return (*self._view(session, frame_idx), *self._objects(session), self._estimate(session))

    def clear_frame(self, sid: str | None, frame_idx: float):
        """Remove every click on the shown frame."""
        session = require_clip(self._session(sid))
        with session.exclusive():
            actions.clear_frame(session, int(frame_idx))
        return render.frame_image(session, int(frame_idx)), *self._objects(session), self._estimate(session)

    # -- objects -------------------------------------------------------------------------------
    def add_object(self, sid: str | None, name: str):
        """Add an object (named from the text box, if filled) and select it."""
        session = require_clip(self._session(sid))
        actions.add_object(session, self.ctx.limits, name)
        return (*self._objects(session), "")

    def select_object(self, sid: str | None, obj_id: int | None):
        """Send the next clicks to another object."""
        session = self._session(sid)
        if session is None or obj_id is None:
            return gr.skip()
        actions.select_object(session, int(obj_id))
        return render.objects_html(session)

    def rename_object(self, sid: str | None, name: str):
        """Rename the selected object."""
        session = require_clip(self._session(sid))
        actions.rename_object(session, session.current, name, self.ctx.limits)
        return (*self._objects(session), "")

    def remove_object(self, sid: str | None, frame_idx: float):
        """Remove the selected object with its clicks and masks."""
        session = require_clip(self._session(sid))
        with session.exclusive():
            actions.remove_object(session, session.current)
        return render.frame_image(session, int(frame_idx)), *self._objects(session), self._estimate(session)

    # -- finding objects -----------------------------------------------------------------------
    def find(self, sid: str | None, frame_idx: float, _status: str = "", progress=gr.Progress()):
        """Segment everything on the shown frame; the masks are outlined as candidates to pick."""
        session = require_clip(self._session(sid))

        def report(done: int, total: int) -> None:
            progress((done, total), desc="Finding objects", unit="steps")

        with session.exclusive():
            count = actions.find_objects(session, int(frame_idx), options=self.ctx.find.auto, progress=report)
        message = (f"{count} object{'s' if count != 1 else ''} found (outlined): click one to track it, "
                   "or Add all")
        return render.frame_image(session, int(frame_idx)), render.progress_html(None, message)

    def dismiss(self, sid: str | None, frame_idx: float):
        """Forget the proposed objects."""
        session = require_clip(self._session(sid))
        actions.dismiss_candidates(session)
        return render.frame_image(session, int(frame_idx)), self._estimate(session)

    def add_all(self, sid: str | None, frame_idx: float, min_area: float):
        """Every proposed object of at least the chosen size becomes an object."""
        session = require_clip(self._session(sid))
        with session.exclusive():
            notes = actions.add_candidates(session, int(min_area or 0), self.ctx.limits)
        return (render.frame_image(session, int(frame_idx)), *self._objects(session),
                self._estimate(session, " ".join(notes)))

    def find_text(self, sid: str | None, frame_idx: float, query: str, _status: str = ""):
        """Objects named by the typed phrases become objects on the shown frame."""
        session = require_clip(self._session(sid))
        with session.exclusive():
            notes = actions.find_by_text(session, int(frame_idx), query, settings=self.ctx.find,
                                         limits=self.ctx.limits)
        return (render.frame_image(session, int(frame_idx)), *self._objects(session),
                self._estimate(session, " ".join(notes)))

    # -- tracking ------------------------------------------------------------------------------
    def track(self, sid: str | None, _status: str = "", request: gr.Request = None):
        """Propagate through the clip, streaming progress and the latest finished frame (frames
        computed in turns of the visitor, see ``sam2_web.ui.fair.FrameTurns``)."""
        self.ctx.tracks.started(sid or "")  # its slot was claimed when it was admitted (see _bind)
        try:
            yield from self._track(sid, self.ctx.client(request))
        finally:
            self.ctx.tracks.release(sid or "")

    def _track(self, sid: str | None, client: str):
        session = require_clip(self._session(sid))
        last_picture = 0.0
        step = None
        # The estimate until the first frame is in; from then on the live rate and ETA.
        starting = speed.starting_text(session, speed.session_speed(session))
        yield gr.skip(), gr.skip(), gr.skip(), render.progress_html(None, starting), gr.skip()
        try:
            for step in actions.track(session, leases=self.ctx.leases, turns=self.ctx.turns, client=client):
                self.ctx.store.touch(session)
                now = time.monotonic()
                if now - last_picture >= PREVIEW_EVERY_S or step.done == step.total:
                    last_picture = now
                    yield (*self._view(session, step.frame_idx), render.progress_html(step), gr.skip())
                else:
                    yield gr.skip(), gr.skip(), gr.skip(), render.progress_html(step), gr.skip()
        except CancelledError:
            gr.Warning("Tracking stopped; finished frames are kept. Press Track to continue.")
            yield (*self._view(session, session.frame_idx), render.progress_html(step, "stopped"), gr.skip())
            return
        yield gr.skip(), gr.skip(), gr.skip(), render.progress_html(step, "rendering the preview…"), gr.skip()
        with session.exclusive(), self.ctx.turns.turn(client):  # the whole clip again: in a turn
            preview = actions.export_masks(session, "overlay_mp4")
        yield gr.skip(), gr.skip(), gr.skip(), render.progress_html(step, "done"), str(preview)

    def stop(self, sid: str | None) -> None:
        """Ask a running Track to stop after the current frame."""
        session = self._session(sid, touch=False)
        if session is not None and session.busy:
            session.cancel.set()

    # -- outputs -------------------------------------------------------------------------------
    def download(self, sid: str | None, fmt: str, feather: float, soft: bool = False, band: float = 0,
                 _status: str = ""):
        """Export the masks in the chosen format (with soft edges if asked) and offer the file."""
        session = require_clip(self._session(sid))
        with session.exclusive():
            return str(actions.export_masks(session, fmt, feather_px=float(feather or 0), soft_edges=bool(soft),
                                            edge_band_px=float(band) if band else None))

    def cutout(self, sid: str | None, frame_idx: float, soft: bool, band: float):
        """The soft-edges switch or band changed: show the shown frame's cut-out over a checkerboard."""
        if not soft:
            return gr.update(visible=False)
        session = require_clip(self._session(sid))
        with session.exclusive():
            picture = render.cutout_image(session, int(frame_idx), float(band) if band else None)
        return gr.update(value=picture, visible=True)

    def effect(self, sid: str | None, kind: str, colour: str, _status: str = ""):
        """Render a background effect video from the masks."""
        session = require_clip(self._session(sid))
        with session.exclusive():
            return str(actions.export_masks(session, f"effect_{kind}", background=actions.hex_colour(colour)))


def build_demo(ctx: AppContext) -> gr.Blocks:
    """Build the app's Blocks (call ``.queue(...)`` and ``.launch(...)`` on the result, or use
    :func:`launch`)."""
    ttl = float(ctx.cfg.server.session_ttl_s)
    with gr.Blocks(title="SAM 2 for video", delete_cache=(max(60, int(ttl // 4)), int(ttl))) as demo:
        ui = _layout(ctx)
        # Tracks (taking turns frame by frame), other whole-clip work, and one-frame calls each
        # wait in their own lane, so none of them can fill the others' places.
        lanes = {"track": ctx.tracks_at_once, "heavy": int(ctx.cfg.server.concurrency),
                 "interactive": INTERACTIVE_LIMIT}
        _bind(demo, ui, Callbacks(ctx), lanes)
        register(Api(ctx), user_errors, lanes)
    return demo


def _layout(ctx: AppContext) -> SimpleNamespace:
    """Create the components inside the current ``gr.Blocks``; returns them by name."""
    ui = SimpleNamespace()
    ui.sid = gr.State(None, delete_callback=ctx.store.close)
    gr.Markdown("## SAM 2 for video\nUpload a clip, click on an object, press **Track**, download the mattes.")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            ui.model = gr.Dropdown(ctx.model_choices(), value=ctx.default_model, label="Model",
                                   info=ctx.model_info(), elem_id="model")
            ui.samurai = gr.Checkbox(ctx.samurai_default(), label="Robust to occlusion (SAMURAI)", elem_id="samurai",
                                     info="Motion-aware memory: keeps objects through occlusions and look-alikes "
                                          "(arXiv 2411.11922); about the same speed")
            ui.clip = gr.File(label="Clip or image", file_types=["video", "image"], type="filepath",
                              elem_id="clip-upload")
            examples = [[str(ASSETS / n)] for n in EXAMPLES if (ASSETS / n).is_file()]
            if examples:
                gr.Examples(examples, inputs=[ui.clip], label="Examples")
            ui.mode = gr.Radio(MODES, value="positive", label="A click adds", elem_id="click-mode")
            with gr.Row():
                ui.undo = gr.Button("Undo click", size="sm", elem_id="undo")
                ui.clear = gr.Button("Clear frame", size="sm", elem_id="clear-frame")
            ui.legend = gr.HTML(render.objects_html(None), elem_id="objects")
            ui.selected = gr.Radio([], label="Clicks go to", elem_id="object-select")
            ui.obj_name = gr.Textbox(label="Object name", placeholder="e.g. dancer", max_lines=1)
            with gr.Row():
                ui.add = gr.Button("Add object", size="sm", elem_id="add-object")
                ui.rename = gr.Button("Rename", size="sm")
                ui.remove = gr.Button("Remove", size="sm", variant="stop")
            with gr.Accordion("Find objects without clicking", open=False, elem_id="find"):
                with gr.Row():
                    ui.find = gr.Button("Find objects on this frame", size="sm", elem_id="find-objects")
                    ui.dismiss = gr.Button("Dismiss", size="sm", elem_id="dismiss-candidates")
                ui.min_area = gr.Slider(0, 20000, value=0, step=50, label="Add all of at least (px)",
                                        elem_id="min-area")
                ui.add_all = gr.Button("Add all", size="sm", elem_id="add-all")
                with gr.Row(visible=ctx.text_search):
                    ui.query = gr.Textbox(label="Find", placeholder="person, dog", max_lines=1, elem_id="find-text")
                    ui.find_text = gr.Button("Find", size="sm", elem_id="find-text-go")
        with gr.Column(scale=2):
            ui.frame = gr.Image(label="Click on the object", type="numpy", interactive=False,
                                format="png", elem_id="frame", buttons=[])
            ui.slider = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False, elem_id="frame-slider")
            ui.frame_info = gr.Markdown(render.frame_label(_NoClip(), 0), elem_id="frame-info")
            with gr.Row():
                ui.track = gr.Button("Track", variant="primary", elem_id="track")
                ui.stop = gr.Button("Stop", variant="stop", elem_id="stop")
            ui.status = gr.HTML(render.progress_html(None, ""), elem_id="status")
            with gr.Tab("Preview"):
                ui.preview = gr.Video(label="Overlay preview", interactive=False, elem_id="preview", height=400)
            with gr.Tab("Download"):
                ui.fmt = gr.Dropdown(DOWNLOAD_FORMATS, value="png_zip", label="Format")
                ui.feather = gr.Slider(0, 20, value=0, step=0.5, label="Feather edges (px)")
                with gr.Row():
                    ui.soft = gr.Checkbox(False, label="Soft edges (alpha matte: hair, motion blur)", elem_id="soft-edges")
                    ui.band = gr.Slider(0, 64, value=0, step=1, label="Edge band (px, 0 = from the model)",
                                        elem_id="edge-band")
                ui.export = gr.Button("Export", elem_id="export")
                ui.download = gr.File(label="Download", interactive=False, elem_id="download")
                ui.cutout = gr.Image(label="Soft edges on the shown frame (cut-out over a checkerboard)",
                                     type="numpy", interactive=False, visible=False, elem_id="cutout", buttons=[])
            with gr.Tab("Effects"):
                ui.effect = gr.Radio(EFFECTS, value="blur", label="Effect")
                ui.colour = gr.ColorPicker("#00b140", label="Replacement colour")
                ui.render_effect = gr.Button("Render effect")
                ui.effect_video = gr.Video(label="Effect", interactive=False, height=400)
    with gr.Accordion("About the models: published quality, speed, licence", open=False):
        ui.models_table = gr.Markdown(ctx.models_markdown(), elem_id="models-table")
    with gr.Accordion("Use from a script or an editor plugin (API)", open=False):
        gr.Markdown(api_document())
    return ui


def _bind(demo: gr.Blocks, ui: SimpleNamespace, cb: Callbacks, lanes: dict[str, int]) -> None:
    """Wire the components to the callbacks (each wrapped by :func:`user_errors`)."""
    w = user_errors
    view = [ui.frame, ui.slider, ui.frame_info]
    objs = [ui.legend, ui.selected]
    # One model call per click; two may run at once. Tracks take turns frame by frame (their own
    # lane); other whole-clip work has the heavy lane (see build_demo).
    quick = {"concurrency_id": "interactive", "concurrency_limit": lanes["interactive"]}
    tracking = {"concurrency_id": "track", "concurrency_limit": lanes["track"]}
    heavy = {"concurrency_id": "heavy", "concurrency_limit": lanes["heavy"]}
    on_frame = {"show_progress_on": [ui.frame]}  # spinner (and error badge) on the picture only
    hidden = {"show_progress": "hidden"}
    ctx = cb.ctx

    # Heavy calls are admitted before they wait in the queue (see sam2_web.ui.fair); a refusal is
    # shown on the status box, the last input of each (the callbacks ignore its value).
    def admit_upload(path, model, sid, status, samurai, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "open a clip") if path else None, 5, mark=3)

    def admit_track(sid, status, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "Track", track_sid=str(sid or "")), 2, mark=1)

    def admit_export(sid, choice, value, status, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "export"), 4, mark=3)

    def admit_export_soft(sid, fmt, feather, soft, band, status, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "export"), 6, mark=5)

    ui.clip.change(w(short_call(cb.upload, ctx.leases)), [ui.clip, ui.model, ui.sid, ui.status, ui.samurai],
                   [ui.sid, *view, *objs, ui.status, ui.preview, ui.download], **quick, **on_frame,
                   validator=admit_upload, **_ui("upload"))
    ui.model.change(w(short_call(cb.change_model, ctx.leases)), [ui.model, ui.sid], [*view, ui.status], **quick,
                    **on_frame,
                    **_ui("change_model"))
    ui.samurai.change(w(short_call(cb.change_samurai, ctx.leases)), [ui.samurai, ui.sid], [*view, ui.status],
                      **quick, **on_frame, **_ui("change_samurai"))
    ui.slider.release(w(cb.scrub), [ui.sid, ui.slider], [ui.frame, ui.frame_info], trigger_mode="always_last",
                      **hidden, **_ui("scrub"))
    ui.slider.input(w(cb.scrub), [ui.sid, ui.slider], [ui.frame, ui.frame_info], trigger_mode="always_last",
                    **hidden, **_ui("scrub_live"))
    ui.frame.select(w(short_call(cb.click, ctx.leases)), [ui.sid, ui.slider], [ui.frame, *objs, ui.status], **quick,
                    **on_frame, **_ui("click"))
    ui.mode.change(w(cb.set_mode), [ui.sid, ui.mode], None, **_ui("set_mode"))
    ui.undo.click(w(cb.undo), [ui.sid], [*view, *objs, ui.status], **quick, **on_frame, **_ui("undo"))
    ui.clear.click(w(cb.clear_frame), [ui.sid, ui.slider], [ui.frame, *objs, ui.status], **quick, **on_frame,
                   **_ui("clear_frame"))
    ui.add.click(w(cb.add_object), [ui.sid, ui.obj_name], [*objs, ui.obj_name], **hidden, **_ui("add_object"))
    ui.selected.input(w(cb.select_object), [ui.sid, ui.selected], [ui.legend], **hidden, **_ui("select_object"))
    ui.rename.click(w(cb.rename_object), [ui.sid, ui.obj_name], [*objs, ui.obj_name], **hidden,
                    **_ui("rename_object"))
    ui.remove.click(w(cb.remove_object), [ui.sid, ui.slider], [ui.frame, *objs, ui.status], **quick, **on_frame,
                    **_ui("remove_object"))
    # Track asks for GPU leases itself, sized from its work (ui.gpu.track_in_leases).
    ui.track.click(w(cb.track), [ui.sid, ui.status], [*view, ui.status, ui.preview], **hidden, **tracking,
                   validator=admit_track, **_ui("track"))
    ui.stop.click(w(cb.stop), [ui.sid], None, queue=False, **_ui("stop"))
    ui.export.click(w(cb.download), [ui.sid, ui.fmt, ui.feather, ui.soft, ui.band, ui.status], [ui.download],
                    **heavy, validator=admit_export_soft, **_ui("download"))
    # Finding objects runs the model over a whole frame (many prompts): a heavy call.
    def admit_find(sid, frame, status, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "find objects"), 3, mark=2)

    def admit_text(sid, frame, query, status, request: gr.Request):
        return verdict(lambda: ctx.admit(request, "find objects"), 4, mark=3)

    ui.find.click(w(on_gpu(cb.find, ctx.leases.max_s)), [ui.sid, ui.slider, ui.status], [ui.frame, ui.status],
                  **heavy, **on_frame, validator=admit_find, **_ui("find_objects"))
    ui.dismiss.click(w(cb.dismiss), [ui.sid, ui.slider], [ui.frame, ui.status], **hidden, **_ui("dismiss"))
    ui.add_all.click(w(short_call(cb.add_all, ctx.leases)), [ui.sid, ui.slider, ui.min_area],
                     [ui.frame, *objs, ui.status], **quick, **on_frame, **_ui("add_all"))
    ui.find_text.click(w(on_gpu(cb.find_text, ctx.leases.max_s)), [ui.sid, ui.slider, ui.query, ui.status],
                       [ui.frame, *objs, ui.status], **heavy, **on_frame, validator=admit_text, **_ui("find_text"))
    for change in (ui.soft.change, ui.band.release):
        change(w(cb.cutout), [ui.sid, ui.slider, ui.soft, ui.band], [ui.cutout], **quick, **_ui("cutout"))
    ui.render_effect.click(w(cb.effect), [ui.sid, ui.effect, ui.colour, ui.status], [ui.effect_video], **heavy,
                           validator=admit_export, **_ui("effect"))
    demo.load(w(cb.refresh_models), None, [ui.model, ui.models_table], **hidden, **_ui("refresh_models"))


def _ui(name: str) -> dict:
    """Event options of a UI-only callback: hidden from the API page, named apart from the API's."""
    return {"api_name": f"ui_{name}", "api_visibility": "private"}


class _NoClip:
    """Stands in for "no session yet" where render functions expect a session."""

    info = None


def launch(ctx: AppContext, **launch_kwargs) -> tuple:
    """Queue and launch the app with the config's server settings; returns Gradio's launch tuple.

    Host/port come from ``server.*`` unless Spaces' (or the user's) ``GRADIO_SERVER_NAME``/
    ``GRADIO_SERVER_PORT`` are set; keyword arguments override both.
    """
    import os

    server = ctx.cfg.server
    # Who a request comes from is ours to decide (server.trusted_proxy, see ui.fair.client_of):
    # uvicorn must not rewrite the client address from X-Forwarded-For on its own.
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    demo = build_demo(ctx)
    demo.queue(max_size=int(server.max_queue), default_concurrency_limit=1)
    ctx.store.start_sweeper()
    kwargs = {
        "max_file_size": f"{int(ctx.limits.max_upload_mb)}mb" if ctx.limits.max_upload_mb > 0 else None,
        "css": CSS,
        "show_error": False,
    }
    if "GRADIO_SERVER_NAME" not in os.environ:
        kwargs["server_name"] = str(server.host)
    if "GRADIO_SERVER_PORT" not in os.environ:
        kwargs["server_port"] = int(server.port)
    kwargs.update(launch_kwargs)
    return demo.launch(**kwargs)
