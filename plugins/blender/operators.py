"""The add-on's operators: track the object of the active movie strip, or remove what that added."""

from __future__ import annotations

import re
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import jobs, markers, strips
from .jobs import SetupError
from .settings import preferences


def _poll_movie_strip(cls, context) -> bool:
    scene = strips.sequencer_scene(context)
    editor = scene.sequence_editor if scene is not None else None
    strip = editor.active_strip if editor is not None else None
    if strip is None or strip.type != "MOVIE":
        cls.poll_message_set("Select a movie strip in the Sequencer")
        return False
    return True


def _movie_path(strip) -> Path:
    path = Path(bpy.path.abspath(strip.filepath)).resolve()
    if not path.is_file():
        raise SetupError(f"the movie of strip '{strip.name}' is missing: {path}; relink it (Strip > Movie > Reload)")
    return path


def _matte_dir(setting: str, movie: Path) -> Path:
    """The matte folder: the setting made absolute; next to the movie while the .blend is unsaved."""
    if setting.startswith("//") and not bpy.data.filepath:
        return movie.parent / (setting[2:].strip("/\\") or "sam2_mattes")
    return Path(bpy.path.abspath(setting or "//sam2_mattes/"))


def _prompts(settings, movie: Path):
    """Prompts JSON data from the clip's markers, or the path of the prompts file."""
    if settings.prompt_source == "FILE":
        if not settings.prompts_file:
            raise SetupError("choose a prompts file (SAM 2 tab > Prompts file), or take points from clip markers")
        return Path(bpy.path.abspath(settings.prompts_file))
    clip = settings.clip or markers.find_clip(bpy.data, str(movie))
    if clip is None:
        raise SetupError(
            f"no Movie Clip opens {movie.name}; open it in the Movie Clip Editor, Ctrl+click the object to place "
            "markers, and pick that clip under SAM 2 > Movie Clip"
        )
    return markers.marker_prompts(clip)


@dataclass
class _Prepared:
    """Everything a run needs, read from Blender on the main thread before any work starts."""

    spec: jobs.JobSpec
    scene: str
    source: str
    num_frames: int  # frames Blender counts in the movie
    effect: str
    python: str
    remote: str


def _prepare(context) -> _Prepared:
    """Read the active strip, the settings and the prompts; raises SetupError with what to fix."""
    scene = strips.sequencer_scene(context)
    settings = scene.sam2web
    prefs = preferences(context)
    jobs.add_engine_path(prefs)
    source = strips.active_movie_strip(scene)
    movie = _movie_path(source)
    num_frames = int(source.frame_duration + source.animation_offset_start + source.animation_offset_end)
    first, last = (None, None) if settings.whole_clip else strips.visible_movie_frames(source, num_frames)
    spec = jobs.JobSpec(
        clip=movie,
        prompts=_prompts(settings, movie),
        out_dir=_matte_dir(settings.output_dir, movie),
        name=re.sub(r"[^A-Za-z0-9_-]+", "_", source.name).strip("_") or "strip",
        model=settings.model,
        checkpoint=bpy.path.abspath(settings.checkpoint) if settings.checkpoint else None,
        device=settings.device,
        overrides=tuple(shlex.split(settings.overrides)),
        first=first,
        last=last,
        direction=settings.direction,
        feather_px=settings.feather_px,
        grow_px=settings.grow_px,
        invert=settings.invert,
        soft_edges=settings.soft_edges,
        edge_band_px=settings.edge_band_px or None,
    )
    return _Prepared(spec, scene.name, source.name, num_frames, settings.effect,
                     getattr(prefs, "python", ""), getattr(prefs, "remote", ""))


def _place(prepared: _Prepared, mattes: jobs.Mattes) -> tuple[int, int]:
    """Matte strips above the source and the modifiers they drive; returns (first channel, count).

    Raises:
        SetupError: the scene or the strip went away while the job ran.
    """
    scene = bpy.data.scenes.get(prepared.scene)
    editor = scene.sequence_editor if scene is not None else None
    source = strips.all_strips(editor).get(prepared.source) if editor is not None else None
    if source is None:
        raise SetupError(f"strip '{prepared.source}' was removed or renamed while tracking; the mattes are in "
                         f"{mattes.folder}")
    decoded = len(next(iter(mattes.sequences.values())))
    if decoded != prepared.num_frames:
        # Variable frame rate or odd timestamps: a matte would drift against the picture.
        raise SetupError(
            f"Blender counts {prepared.num_frames} frames in {prepared.spec.clip.name} but the engine decoded "
            f"{decoded}; convert the movie to a constant frame rate (e.g. ffmpeg -i in.mp4 -fps_mode cfr "
            "out.mp4), use that in the strip, and track again"
        )
    strips.ensure_sequencer_scene(bpy.context, scene)  # before any modifier is added or removed
    strips.remove_previous(editor, source)
    sequences = dict(mattes.sequences)
    effect = prepared.effect
    cut_out_union = effect == "MASK" and len(sequences) > 1
    if cut_out_union:
        sequences["all objects"] = mattes.union(mattes.folder.parent / f"{mattes.folder.name}_all")
    channel = strips.free_channel_above(editor, source, len(sequences))
    placed = {}
    for k, (label, files) in enumerate(sequences.items()):
        placed[label] = strips.add_matte_strip(editor, source, files, channel + k, f"SAM2 {label}",
                                               soft=prepared.spec.soft_edges)
    if effect == "MASK":
        mask = placed["all objects"] if cut_out_union else next(iter(placed.values()))
        strips.attach_modifier(source, "MASK", mask, "cut out")
    elif effect != "NONE":
        for label, matte in placed.items():
            strips.attach_modifier(source, effect, matte, label)
    return channel, len(placed)


class _Worker:
    """The job on a background thread, so Blender keeps drawing and Esc can stop it."""

    def __init__(self, prepared: _Prepared):
        self.prepared = prepared
        self.cancel = threading.Event()
        self.status = "starting"
        self.fraction = 0.0
        self.mattes: jobs.Mattes | None = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="sam2web-track", daemon=True)
        self.thread.start()

    def _progress(self, stage: str, done: int, total: int) -> None:
        # Plain attribute writes: the modal timer reads them on the main thread.
        self.status = f"{stage} {done}/{total}" if total else stage
        self.fraction = done / total if total else 0.0

    def _run(self) -> None:
        p = self.prepared
        try:
            self.mattes = jobs.run(p.spec, python=p.python, remote=p.remote, progress=self._progress,
                                     cancel=self.cancel)
        except Exception as exc:  # handed to the main thread, which reports it
            self.error = exc


def _console_progress(stage: str, done: int, total: int) -> None:
    if done in (0, 1) or done == total:
        print(f"SAM 2: {stage} {done}/{total}")


class SEQUENCER_OT_sam2web_track(bpy.types.Operator):
    """Track the object marked by your points through the active movie strip; add its matte and a masked modifier"""

    bl_idname = "sequencer.sam2web_track"
    bl_label = "Track Object"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_movie_strip(cls, context)

    def execute(self, context):
        """Blocking run: scripts, headless Blender, and redo."""
        try:
            prepared = _prepare(context)
            mattes = jobs.run(prepared.spec, python=prepared.python, remote=prepared.remote,
                                progress=_console_progress)
            channel, count = _place(prepared, mattes)
        except Exception as exc:  # the UI edge: every failure becomes a report the user can read
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"SAM 2: {count} matte strip(s) on channel {channel} and up")
        return {"FINISHED"}

    def invoke(self, context, event):
        """From the button: track in the background, progress in the status bar, Esc cancels."""
        if context.window is None:
            return self.execute(context)
        try:
            self._worker = _Worker(_prepare(context))
        except Exception as exc:  # the UI edge, as in execute
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        worker = self._worker
        if event.type == "ESC":
            worker.cancel.set()  # the job stops after the current frame; the timer sees the thread end
            return {"RUNNING_MODAL"}  # Esc is ours while tracking (not the playback's or a menu's)
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if worker.thread.is_alive():
            context.window_manager.progress_update(int(100 * worker.fraction))
            note = "stopping..." if worker.cancel.is_set() else "Esc to cancel"
            context.workspace.status_text_set(f"SAM 2: {worker.status} ({note})")
            return {"PASS_THROUGH"}
        self._finish(context)
        if worker.error is not None:
            self.report({"WARNING" if isinstance(worker.error, jobs.Cancelled) else "ERROR"}, str(worker.error))
            return {"CANCELLED"}
        try:
            channel, count = _place(worker.prepared, worker.mattes)
        except Exception as exc:  # the UI edge
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"SAM 2: {count} matte strip(s) on channel {channel} and up")
        return {"FINISHED"}

    def _finish(self, context) -> None:
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        context.workspace.status_text_set(None)


class SEQUENCER_OT_sam2web_remove(bpy.types.Operator):
    """Remove the SAM 2 matte strips and modifiers of the active movie strip (the matte files stay)"""

    bl_idname = "sequencer.sam2web_remove"
    bl_label = "Remove Mattes"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_movie_strip(cls, context)

    def execute(self, context):
        scene = strips.sequencer_scene(context)
        strips.ensure_sequencer_scene(context, scene)
        strips.remove_previous(scene.sequence_editor, scene.sequence_editor.active_strip)
        return {"FINISHED"}


_CLASSES = (SEQUENCER_OT_sam2web_track, SEQUENCER_OT_sam2web_remove)


def register() -> None:
    """Register the operators."""
    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    """Unregister the operators."""
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
