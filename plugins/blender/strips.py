"""Sequencer side of the add-on: which movie frames a strip shows, and the matte strips and
masked modifiers it gets.

A matte must line up with its source frame for frame, so the matte strip copies everything
that maps scene frames to content frames (start, trims, animation offsets, reverse, strobe)
and everything that moves pixels (transform, crop, flips): a modifier's mask strip is
rendered on its own, so it has to land on the same pixels as the source.
"""

from __future__ import annotations

from pathlib import Path

from .jobs import SetupError

SOURCE_TAG = "sam2web_source"  # custom property on a matte strip: the name of its source strip
MODIFIER_PREFIX = "SAM2 "
_TIMING = ("use_reverse_frames", "strobe")
_PICTURE = ("use_flip_x", "use_flip_y")


def strips_of(editor):
    """Top-level strips collection (``strips`` since Blender 4.4, ``sequences`` before; 5.0 has only ``strips``)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor):
    """Every strip, including those inside meta strips."""
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def sequencer_scene(context):
    """The scene whose strips the Sequencer edits: the workspace's ``sequencer_scene`` since
    Blender 5.0 (when set), the context's scene before and otherwise."""
    return getattr(context, "sequencer_scene", None) or context.scene


def ensure_sequencer_scene(context, scene) -> None:
    """Blender 5.0+: make ``scene`` the workspace's sequencer scene when it has none.

    Blender 5 looks strips up through the workspace's sequencer scene; adding or removing a
    strip modifier while it is unset (the default startup file, a script, a background run)
    crashes Blender. Earlier versions have no such setting and are left alone.
    """
    workspace = getattr(context, "workspace", None)
    if workspace is not None and hasattr(workspace, "sequencer_scene") and workspace.sequencer_scene is None:
        workspace.sequencer_scene = scene


def active_movie_strip(scene):
    """The scene's active strip if it is a movie strip.

    Raises:
        SetupError: no sequencer, no active strip, the active strip is not a movie, lies inside
            a meta strip, or is retimed.
    """
    editor = scene.sequence_editor
    strip = editor.active_strip if editor is not None else None
    if strip is None or strip.type != "MOVIE":
        kind = "nothing" if strip is None else f"a {strip.type.lower()} strip"
        raise SetupError(f"the active strip is {kind}; click a movie strip in the Sequencer first")
    if strips_of(editor).get(strip.name) != strip:
        raise SetupError(
            f"strip '{strip.name}' is inside a meta strip; ungroup it first (Strip > Meta > UnMeta), track, "
            "and group again"
        )
    if len(getattr(strip, "retiming_keys", ())) > 0:
        raise SetupError(
            f"strip '{strip.name}' is retimed; a matte cannot follow retiming keys yet, remove them "
            "(Strip > Retiming > Reset) or track a copy without retiming"
        )
    return strip


def visible_movie_frames(strip, num_frames: int) -> tuple[int, int]:
    """Inclusive range of movie frames the strip shows between its handles (0-based)."""
    start = int(round(strip.frame_start))
    first = int(strip.frame_final_start) - start  # positions in the strip's content
    last = int(strip.frame_final_end) - 1 - start
    if strip.use_reverse_frames:
        length = int(strip.frame_duration)
        first, last = length - 1 - last, length - 1 - first
    # The content begins animation_offset_start frames into the movie.
    skip = int(strip.animation_offset_start)
    return max(0, first + skip), min(num_frames - 1, last + skip)


def free_channel_above(editor, source, count: int = 1) -> int:
    """Lowest channel above ``source`` where ``count`` stacked strips fit over its frames."""
    start, end = source.frame_final_start, source.frame_final_end
    busy = {
        s.channel for s in strips_of(editor)
        if s != source and s.frame_final_start < end and s.frame_final_end > start
    }
    channel = source.channel + 1
    while any(c in busy for c in range(channel, channel + count)):
        channel += 1
    if channel + count - 1 > 128:
        raise SetupError("no free channel above the strip (Blender has 128); free one and try again")
    return channel


def remove_previous(editor, source) -> None:
    """Delete the mattes and modifiers an earlier run added to ``source`` (re-running replaces them)."""
    for modifier in list(source.modifiers):
        if modifier.name.startswith(MODIFIER_PREFIX):
            source.modifiers.remove(modifier)
    collection = strips_of(editor)
    for strip in list(collection):
        if strip.get(SOURCE_TAG) == source.name:
            collection.remove(strip)


def add_matte_strip(editor, source, files: list[Path], channel: int, name: str, soft: bool = False):
    """An image-sequence strip of ``files`` (one per movie frame) aligned with ``source``.

    The strip is muted: it feeds modifiers as a mask, it should not cover the picture. ``soft``:
    the files are 16-bit soft mattes (see below).

    Raises:
        SetupError: ``files`` is empty, or the strip ended up on other frames than the source
            (an unsupported timing setting).
    """
    if not files:
        raise SetupError("the job wrote no matte frames; check the matte folder")
    strip = strips_of(editor).new_image(name=name, filepath=str(files[0]), channel=channel,
                                        frame_start=int(round(source.frame_start)))
    for path in files[1:]:
        strip.elements.append(path.name)
    strip[SOURCE_TAG] = source.name
    # Matte values are coverage, not colours. An 8-bit matte tagged Non-Color reaches a modifier as
    # is; a 16-bit one is loaded as floats, and the sequencer converts float buffers from the strip's
    # space into its own (sRGB by default), which would brighten a soft edge (0.016 -> 0.13). Tagged
    # with the sequencer's own space, that conversion is the identity.
    strip.colorspace_settings.name = source.id_data.sequencer_colorspace_settings.name if soft else "Non-Color"
    strip.mute = True
    copy_alignment(source, strip)
    if (strip.frame_final_start, strip.frame_final_end) != (source.frame_final_start, source.frame_final_end):
        raise SetupError(
            f"the matte covers frames {strip.frame_final_start}..{strip.frame_final_end - 1} but strip "
            f"'{source.name}' covers {source.frame_final_start}..{source.frame_final_end - 1}; "
            "reset its time offsets and try again"
        )
    return strip


def copy_alignment(source, matte) -> None:
    """Give ``matte`` the frame mapping and the pixel placement of ``source``."""
    # Offsets are set before handles: handles are clamped to the content's length.
    matte.animation_offset_start = source.animation_offset_start
    matte.animation_offset_end = source.animation_offset_end
    for name in _TIMING + _PICTURE:
        setattr(matte, name, getattr(source, name))
    matte.frame_offset_start = source.frame_offset_start
    matte.frame_offset_end = source.frame_offset_end
    for name in ("offset_x", "offset_y", "scale_x", "scale_y", "rotation", "origin", "filter"):
        if hasattr(source.transform, name):
            setattr(matte.transform, name, getattr(source.transform, name))
    for name in ("min_x", "max_x", "min_y", "max_y"):
        setattr(matte.crop, name, getattr(source.crop, name))


def attach_modifier(source, effect: str, matte, label: str):
    """Add an ``effect`` modifier (``MASK``, ``BRIGHT_CONTRAST`` ...) to ``source``, masked by ``matte``."""
    modifier = source.modifiers.new(name=f"{MODIFIER_PREFIX}{label}", type=effect)
    modifier.input_mask_type = "STRIP"
    modifier.input_mask_strip = matte
    return modifier
