"""The add-on's settings: where the engine lives (preferences) and how to track (per scene).

Kept as Blender properties so they are saved with the .blend file and drawn by the panel.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

# Modifiers a matte can drive. MASK cuts the strip out (alpha = matte); the others grade the
# object only, because every strip modifier takes a mask input.
EFFECTS = (
    ("MASK", "Cut out", "Mask modifier: the strip keeps only the object (alpha = matte)"),
    ("BRIGHT_CONTRAST", "Brightness/Contrast", "Brightness/Contrast applied to the object only"),
    ("COLOR_BALANCE", "Color Balance", "Color Balance applied to the object only"),
    ("CURVES", "Curves", "Curves applied to the object only"),
    ("HUE_CORRECT", "Hue Correct", "Hue Correct applied to the object only"),
    ("WHITE_BALANCE", "White Balance", "White Balance applied to the object only"),
    ("TONEMAP", "Tone Map", "Tone Map applied to the object only"),
    ("NONE", "Matte only", "Only add the matte strip"),
)

# Shown when the engine cannot be imported here (the list then cannot come from the registry).
_FALLBACK_MODELS = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
                    "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l")
_model_items: list[tuple[str, str, str]] = []  # Blender needs the enum strings kept alive


def _models(_self, context):
    if not _model_items:
        from .jobs import add_engine_path

        add_engine_path(preferences(context))
        try:
            from sam2_web.registry import list_models

            # Newest family first, smallest first: the first item is the default (fast, good enough).
            ordered = sorted(list_models(), key=lambda m: (not m.name.startswith("sam2.1"), m.params_m))
            _model_items.extend((m.name, m.label, f"{m.label}, {m.params_m:g}M parameters") for m in ordered)
        except (ImportError, OSError):  # no engine here, or its configs are missing
            _model_items.extend((name, name, name) for name in _FALLBACK_MODELS)
    return _model_items


class SAM2WEB_AddonPreferences(bpy.types.AddonPreferences):
    """Where to find sam2_web: in Blender's own Python, a folder added to it, or another Python."""

    bl_idname = __package__

    engine_path: StringProperty(
        name="sam2_web folder",
        description="Folder added to Blender's Python path: a sam2_web checkout or a site-packages folder "
                    "holding sam2_web and torch for Blender's Python version",
        subtype="DIR_PATH",
        default="",
    )
    python: StringProperty(
        name="External Python",
        description="A Python with sam2_web installed; jobs then run through its sam2-web command "
                    "(used when sam2_web cannot be imported in Blender)",
        subtype="FILE_PATH",
        default="",
    )

    remote: StringProperty(
        name="Remote app",
        description="Run jobs on a running sam2_web app (http://host:port) or Hugging Face Space (user/space) "
                    "through the sam2-web command; empty = run locally",
        default="",
    )

    def draw(self, _context):
        layout = self.layout
        layout.prop(self, "engine_path")
        layout.prop(self, "python")
        layout.prop(self, "remote")


class SAM2WEB_Settings(bpy.types.PropertyGroup):
    """Per-scene tracking settings, drawn in the Sequencer sidebar."""

    prompt_source: EnumProperty(
        name="Points from",
        items=(
            ("MARKERS", "Clip markers", "Keyed markers of the Movie Clip with the strip's file: each tracking "
                                        "object is one object; tracks named '-…' or 'neg…' are background clicks"),
            ("FILE", "Prompts file", "A prompts JSON (see plugins/README.md)"),
        ),
        default="MARKERS",
    )
    prompts_file: StringProperty(name="Prompts file", subtype="FILE_PATH", default="")
    clip: PointerProperty(
        name="Movie Clip",
        type=bpy.types.MovieClip,
        description="Movie Clip holding the markers (default: the one that opens the strip's file)",
    )
    model: EnumProperty(name="Model", items=_models)
    checkpoint: StringProperty(name="Checkpoint", subtype="FILE_PATH", default="",
                               description="A local .pt used instead of the Hub download")
    device: EnumProperty(
        name="Device",
        items=(("auto", "Auto", "CUDA, then Apple MPS, then CPU"), ("cpu", "CPU", ""), ("cuda", "CUDA", ""),
               ("mps", "Apple MPS", "")),
        default="auto",
    )
    overrides: StringProperty(name="Overrides", default="",
                              description="More hydra overrides, space separated, e.g. ++model.image_size=512")
    direction: EnumProperty(
        name="Direction",
        items=(("both", "Both", "Forward and backward from the first prompt"), ("forward", "Forward", ""),
               ("backward", "Backward", "")),
        default="both",
    )
    whole_clip: BoolProperty(name="Whole movie", default=False,
                             description="Track every frame of the movie, not only the part the strip shows")
    effect: EnumProperty(name="Effect", items=EFFECTS, default="MASK")
    output_dir: StringProperty(
        name="Matte folder", subtype="DIR_PATH", default="//sam2_mattes/",
        description="Where mattes are written ('//' = next to the .blend; next to the movie if it is not saved)",
    )
    feather_px: FloatProperty(name="Feather", min=0.0, max=200.0, default=0.0, subtype="PIXEL")
    grow_px: IntProperty(name="Grow", min=-200, max=200, default=0, subtype="PIXEL",
                         description="Grow (> 0) or shrink (< 0) the matte")
    invert: BoolProperty(name="Invert", default=False, description="Matte the background instead of the object")
    soft_edges: BoolProperty(name="Soft edges", default=False,
                             description="Solve soft alpha (hair, motion blur) around the matte's edge from the "
                                         "movie's colours; the matte strip gets 16-bit coverage")
    edge_band_px: FloatProperty(name="Edge band", min=0.0, max=256.0, default=0.0, subtype="PIXEL",
                                description="Half-width of the soft-edge band; 0 = from the model")


_CLASSES = (SAM2WEB_AddonPreferences, SAM2WEB_Settings)


def register() -> None:
    """Register the classes and ``Scene.sam2web``."""
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.sam2web = PointerProperty(type=SAM2WEB_Settings)


def unregister() -> None:
    """Remove ``Scene.sam2web`` and the classes."""
    del bpy.types.Scene.sam2web
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)


def preferences(context) -> SAM2WEB_AddonPreferences | None:
    """The add-on's preferences, or None when the add-on is registered without an entry (tests)."""
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None
