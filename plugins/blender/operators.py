"""The add-on's operators: track the object of the active movie strip, or remove what that added."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import bpy

from . import engine, markers, strips
from .engine import SetupError
from .settings import preferences


def _poll_movie_strip(cls, context) -> bool:
    scene = context.scene
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


class _Progress:
    """Job progress on the window's progress cursor (when there is a window) and the console."""

    def __init__(self, context):
        self.wm = context.window_manager if context.window is not None else None
        self.stage = None
        if self.wm is not None:
            self.wm.progress_begin(0, 100)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            print(f"SAM 2: {stage} ...")
            self.stage = stage
        if self.wm is not None and total:
            self.wm.progress_update(int(100 * done / total))

    def close(self) -> None:
        if self.wm is not None:
            self.wm.progress_end()


class SEQUENCER_OT_sam2web_track(bpy.types.Operator):
    """Track the object marked by your points through the active movie strip; add its matte and a masked modifier"""

    bl_idname = "sequencer.sam2web_track"
    bl_label = "Track Object"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_movie_strip(cls, context)

    def execute(self, context):
        progress = _Progress(context)
        try:
            channel, count = self._track(context, progress)
        except Exception as exc:  # the UI edge: every failure becomes a report the user can read
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        finally:
            progress.close()
        self.report({"INFO"}, f"SAM 2: {count} matte strip(s) on channel {channel} and up")
        return {"FINISHED"}

    def _track(self, context, progress) -> tuple[int, int]:
        scene = context.scene
        settings = scene.sam2web
        prefs = preferences(context)
        engine.add_engine_path(prefs)
        source = strips.active_movie_strip(scene)
        movie = _movie_path(source)
        num_frames = int(source.frame_duration + source.animation_offset_start + source.animation_offset_end)
        first, last = (None, None) if settings.whole_clip else strips.visible_movie_frames(source, num_frames)
        spec = engine.JobSpec(
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
        )
        mattes = engine.run(spec, python=getattr(prefs, "python", ""), remote=getattr(prefs, "remote", ""),
                            progress=progress)
        return self._place(scene, source, mattes, settings.effect)

    @staticmethod
    def _place(scene, source, mattes: engine.Mattes, effect: str) -> tuple[int, int]:
        """Matte strips above ``source`` and the modifiers they drive; returns (first channel, count)."""
        editor = scene.sequence_editor
        strips.remove_previous(editor, source)
        sequences = dict(mattes.sequences)
        cut_out_union = effect == "MASK" and len(sequences) > 1
        if cut_out_union:
            sequences["all objects"] = mattes.union(mattes.folder.parent / f"{mattes.folder.name}_all")
        channel = strips.free_channel_above(editor, source, len(sequences))
        placed = {}
        for k, (label, files) in enumerate(sequences.items()):
            placed[label] = strips.add_matte_strip(editor, source, files, channel + k, f"SAM2 {label}")
        if effect == "MASK":
            strips.attach_modifier(source, "MASK", placed["all objects" if cut_out_union else next(iter(placed))], "cut out")
        elif effect != "NONE":
            for label, matte in placed.items():
                strips.attach_modifier(source, effect, matte, label)
        return channel, len(placed)


class SEQUENCER_OT_sam2web_remove(bpy.types.Operator):
    """Remove the SAM 2 matte strips and modifiers of the active movie strip (the matte files stay)"""

    bl_idname = "sequencer.sam2web_remove"
    bl_label = "Remove Mattes"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_movie_strip(cls, context)

    def execute(self, context):
        strips.remove_previous(context.scene.sequence_editor, context.scene.sequence_editor.active_strip)
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
