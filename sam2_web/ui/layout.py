"""The Gradio Blocks: components and their wiring to ``logic``/``render``. No business logic here.

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

import gradio as gr

from sam2_web.errors import CancelledError, Sam2WebError, public_message
from sam2_web.export.formats import FORMATS
from sam2_web.ui import logic, render, speed
from sam2_web.ui.api import Api, register
from sam2_web.ui.api import document as api_document
from sam2_web.ui.context import AppContext
from sam2_web.ui.gpu import on_gpu
from sam2_web.ui.state import AppSession, SessionBusyError

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
    def _session(self, sid: str | None) -> AppSession | None:
        return self.ctx.store.find(sid)

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
    def upload(self, path: str | None, model: str, sid: str | None, progress=gr.Progress()):
        """A clip (or image) was uploaded or an example picked: open it in a fresh state."""
        if not path:
            return (sid,) + (gr.skip(),) * 8
        session = self._session(sid)
        if session is None:
            session = self.ctx.store.create(model or self.ctx.default_model)
        if session.lock.locked():
            raise SessionBusyError("tracking is running on the current clip; press Stop first")
        progress(0, desc="Loading the model")
        predictor = self._predictor(model or session.model, progress)
        session.model = model or session.model
        progress(0.5, desc="Opening the clip")
        logic.open_clip(session, predictor, path, self.ctx.limits)
        return (session.sid, *self._view(session, 0), *self._objects(session), self._estimate(session), None, None)

    def change_model(self, model: str, sid: str | None, progress=gr.Progress()):
        """Another model was picked: load it (downloading if needed) and replay the clicks on it."""
        predictor = self._predictor(model, progress)
        session = self._session(sid)
        if session is None or not session.has_clip:
            return gr.skip(), gr.skip(), gr.skip(), render.progress_html(None, f"Model {model} ready.")
        with _holding(session):
            logic.switch_model(session, predictor, model)
        return (*self._view(session, session.frame_idx),
                self._estimate(session, f"Model {model} ready; clicks replayed."))

    def scrub(self, sid: str | None, frame_idx: float):
        """The slider moved: show that frame with its masks."""
        session = logic.require_clip(self._session(sid))
        idx = logic.check_frame(session, int(frame_idx))
        image, _, label = self._view(session, idx)
        return image, label

    # -- prompts -------------------------------------------------------------------------------
    def click(self, sid: str | None, frame_idx: float, evt: gr.SelectData):
        """A click on the frame: one model call on this frame, then redraw it."""
        session = logic.require_clip(self._session(sid))
        if not evt.index or evt.index[0] is None:
            return (gr.skip(),) * 4
        scale = render.display_scale(session.info.width, session.info.height)
        x, y = evt.index[0] * scale, evt.index[1] * scale
        with _holding(session), speed.timed_click(session, int(frame_idx)):
            logic.click(session, int(frame_idx), x, y, self.ctx.limits)
        return render.frame_image(session, int(frame_idx)), *self._objects(session), self._estimate(session)

    def set_mode(self, sid: str | None, mode: str) -> None:
        """The click-mode radio changed: positive point, negative point or box."""
        session = self._session(sid)
        if session is not None:
            logic.set_mode(session, mode)

    def undo(self, sid: str | None):
        """Undo the last click (or a half-drawn box) and show its frame."""
        session = logic.require_clip(self._session(sid))
        with _holding(session):
            frame_idx = logic.undo(session)
        if frame_idx is None:
            gr.Info("Nothing to undo.")
            frame_idx = session.frame_idx
        return (*self._view(session, frame_idx), *self._objects(session), self._estimate(session))

    def clear_frame(self, sid: str | None, frame_idx: float):
        """Remove every click on the shown frame."""
        session = logic.require_clip(self._session(sid))
        with _holding(session):
            logic.clear_frame(session, int(frame_idx))
        return render.frame_image(session, int(frame_idx)), *self._objects(session), self._estimate(session)

    # -- objects -------------------------------------------------------------------------------
    def add_object(self, sid: str | None, name: str):
        """Add an object (named from the text box, if filled) and select it."""
        session = logic.require_clip(self._session(sid))
        logic.add_object(session, self.ctx.limits, name)
        return (*self._objects(session), "")

    def select_object(self, sid: str | None, obj_id: int | None):
        """Send the next clicks to another object."""
        session = self._session(sid)
        if session is None or obj_id is None:
            return gr.skip()
        logic.select_object(session, int(obj_id))
        return render.objects_html(session)

    def rename_object(self, sid: str | None, name: str):
        """Rename the selected object."""
        session = logic.require_clip(self._session(sid))
        logic.rename_object(session, session.current, name, self.ctx.limits)
        return (*self._objects(session), "")

    def remove_object(self, sid: str | None, frame_idx: float):
        """Remove the selected object with its clicks and masks."""
        session = logic.require_clip(self._session(sid))
        with _holding(session):
            logic.remove_object(session, session.current)
        return render.frame_image(session, int(frame_idx)), *self._objects(session), self._estimate(session)

    # -- tracking ------------------------------------------------------------------------------
    def track(self, sid: str | None):
        """Propagate through the clip, streaming progress and the latest finished frame."""
        session = logic.require_clip(self._session(sid))
        last_picture = 0.0
        step = None
        # The estimate until the first frame is in; from then on the live rate and ETA.
        starting = speed.starting_text(session, speed.session_speed(session))
        yield gr.skip(), gr.skip(), gr.skip(), render.progress_html(None, starting), gr.skip()
        try:
            for step in logic.track(session):
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
        with _holding(session):
            preview = logic.export_masks(session, "overlay_mp4")
        yield gr.skip(), gr.skip(), gr.skip(), render.progress_html(step, "done"), str(preview)

    def stop(self, sid: str | None) -> None:
        """Ask a running Track to stop after the current frame."""
        session = self._session(sid)
        if session is not None and session.lock.locked():
            session.cancel.set()

    # -- outputs -------------------------------------------------------------------------------
    def download(self, sid: str | None, fmt: str, feather: float):
        """Export the masks in the chosen format and offer the file."""
        session = logic.require_clip(self._session(sid))
        with _holding(session):
            return str(logic.export_masks(session, fmt, feather_px=float(feather or 0)))

    def effect(self, sid: str | None, kind: str, colour: str):
        """Render a background effect video from the masks."""
        session = logic.require_clip(self._session(sid))
        with _holding(session):
            return str(logic.export_masks(session, f"effect_{kind}", background=logic.hex_colour(colour)))


class _holding:
    """Hold the session lock for one edit; refuse at once while tracking runs."""

    def __init__(self, session: AppSession):
        self.session = session

    def __enter__(self):
        if not self.session.lock.acquire(blocking=False):
            raise SessionBusyError("tracking is running; wait for it to finish or press Stop")

    def __exit__(self, *exc):
        self.session.lock.release()


def build_demo(ctx: AppContext) -> gr.Blocks:
    """Build the app's Blocks (call ``.queue(...)`` and ``.launch(...)`` on the result, or use
    :func:`launch`)."""
    cb = Callbacks(ctx)
    ttl = float(ctx.cfg.server.session_ttl_s)
    track_limit = int(ctx.cfg.server.concurrency)
    w = user_errors

    with gr.Blocks(title="SAM 2 for video", delete_cache=(max(60, int(ttl // 4)), int(ttl))) as demo:
        sid = gr.State(None, delete_callback=ctx.store.close)
        gr.Markdown("## SAM 2 for video\nUpload a clip, click on an object, press **Track**, download the mattes.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                model = gr.Dropdown(ctx.model_choices(), value=ctx.default_model, label="Model",
                                    info=ctx.model_info(), elem_id="model")
                clip = gr.File(label="Clip or image", file_types=["video", "image"], type="filepath",
                               elem_id="clip-upload")
                examples = [[str(ASSETS / n)] for n in EXAMPLES if (ASSETS / n).is_file()]
                if examples:
                    gr.Examples(examples, inputs=[clip], label="Examples")
                mode = gr.Radio(MODES, value="positive", label="A click adds", elem_id="click-mode")
                with gr.Row():
                    undo_btn = gr.Button("Undo click", size="sm", elem_id="undo")
                    clear_btn = gr.Button("Clear frame", size="sm", elem_id="clear-frame")
                legend = gr.HTML(render.objects_html(None), elem_id="objects")
                selected = gr.Radio([], label="Clicks go to", elem_id="object-select")
                obj_name = gr.Textbox(label="Object name", placeholder="e.g. dancer", max_lines=1)
                with gr.Row():
                    add_btn = gr.Button("Add object", size="sm", elem_id="add-object")
                    rename_btn = gr.Button("Rename", size="sm")
                    remove_btn = gr.Button("Remove", size="sm", variant="stop")
            with gr.Column(scale=2):
                frame = gr.Image(label="Click on the object", type="numpy", interactive=False,
                                 format="png", elem_id="frame", buttons=[])
                slider = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False, elem_id="frame-slider")
                frame_info = gr.Markdown(render.frame_label(_NoClip(), 0), elem_id="frame-info")
                with gr.Row():
                    track_btn = gr.Button("Track", variant="primary", elem_id="track")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.HTML(render.progress_html(None, ""), elem_id="status")
                with gr.Tab("Preview"):
                    preview = gr.Video(label="Overlay preview", interactive=False, elem_id="preview", height=400)
                with gr.Tab("Download"):
                    fmt = gr.Dropdown(DOWNLOAD_FORMATS, value="png_zip", label="Format")
                    feather = gr.Slider(0, 20, value=0, step=0.5, label="Feather edges (px)")
                    export_btn = gr.Button("Export", elem_id="export")
                    download = gr.File(label="Download", interactive=False, elem_id="download")
                with gr.Tab("Effects"):
                    effect = gr.Radio(EFFECTS, value="blur", label="Effect")
                    colour = gr.ColorPicker("#00b140", label="Replacement colour")
                    effect_btn = gr.Button("Render effect")
                    effect_video = gr.Video(label="Effect", interactive=False, height=400)

        with gr.Accordion("About the models: published quality, speed, licence", open=False):
            models_table = gr.Markdown(ctx.models_markdown(), elem_id="models-table")
        with gr.Accordion("Use from a script or an editor plugin (API)", open=False):
            gr.Markdown(api_document())
        view = [frame, slider, frame_info]
        objs = [legend, selected]
        # One model call per click; two may run at once. Whole-clip work shares the track limit.
        quick = {"concurrency_id": "interactive", "concurrency_limit": INTERACTIVE_LIMIT}
        heavy = {"concurrency_id": "track", "concurrency_limit": track_limit}
        on_frame = {"show_progress_on": [frame]}  # spinner (and error badge) on the picture only
        clip.change(w(cb.upload), [clip, model, sid], [sid, *view, *objs, status, preview, download],
                    **quick, **on_frame, **_ui("upload"))
        model.change(w(cb.change_model), [model, sid], [*view, status], **quick, **on_frame, **_ui("change_model"))
        slider.release(w(cb.scrub), [sid, slider], [frame, frame_info], trigger_mode="always_last",
                       show_progress="hidden", **_ui("scrub"))
        slider.input(w(cb.scrub), [sid, slider], [frame, frame_info], trigger_mode="always_last",
                     show_progress="hidden", **_ui("scrub_live"))
        frame.select(w(on_gpu(cb.click)), [sid, slider], [frame, *objs, status], **quick, **on_frame,
                     **_ui("click"))
        mode.change(w(cb.set_mode), [sid, mode], None, **_ui("set_mode"))
        undo_btn.click(w(cb.undo), [sid], [*view, *objs, status], **quick, **on_frame, **_ui("undo"))
        clear_btn.click(w(cb.clear_frame), [sid, slider], [frame, *objs, status], **quick, **on_frame,
                        **_ui("clear_frame"))
        add_btn.click(w(cb.add_object), [sid, obj_name], [*objs, obj_name], show_progress="hidden",
                      **_ui("add_object"))
        selected.input(w(cb.select_object), [sid, selected], [legend], show_progress="hidden",
                       **_ui("select_object"))
        rename_btn.click(w(cb.rename_object), [sid, obj_name], [*objs, obj_name], show_progress="hidden",
                         **_ui("rename_object"))
        remove_btn.click(w(cb.remove_object), [sid, slider], [frame, *objs, status], **quick, **on_frame,
                         **_ui("remove_object"))
        track_btn.click(w(on_gpu(cb.track)), [sid], [*view, status, preview], show_progress="hidden",
                        **heavy, **_ui("track"))
        stop_btn.click(w(cb.stop), [sid], None, queue=False, **_ui("stop"))
        export_btn.click(w(cb.download), [sid, fmt, feather], [download], **heavy, **_ui("download"))
        effect_btn.click(w(cb.effect), [sid, effect, colour], [effect_video], **heavy, **_ui("effect"))
        demo.load(w(cb.refresh_models), None, [model, models_table], show_progress="hidden",
                  **_ui("refresh_models"))
        register(Api(ctx), w, track_limit, INTERACTIVE_LIMIT)
    return demo


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
