"""The *SAM 2* tab of the Sequencer sidebar: where the points come from, the model, the effect."""

from __future__ import annotations

import bpy

from . import strips


class SEQUENCER_PT_sam2web(bpy.types.Panel):
    """Track an object of the active movie strip with SAM 2."""

    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "SAM 2"
    bl_label = "SAM 2 Object Mask"

    def draw(self, context):
        layout = self.layout
        settings = strips.sequencer_scene(context).sam2web
        layout.use_property_split = True
        layout.use_property_decorate = False

        column = layout.column()
        column.prop(settings, "prompt_source")
        if settings.prompt_source == "FILE":
            column.prop(settings, "prompts_file")
        else:
            column.prop(settings, "clip")

        column = layout.column(heading="Model")
        column.prop(settings, "model")
        column.prop(settings, "device")
        column.prop(settings, "checkpoint")
        column.prop(settings, "overrides")

        column = layout.column(heading="Tracking")
        column.prop(settings, "direction")
        column.prop(settings, "whole_clip")

        column = layout.column(heading="Matte")
        column.prop(settings, "effect")
        column.prop(settings, "feather_px")
        column.prop(settings, "grow_px")
        column.prop(settings, "invert")
        column.prop(settings, "soft_edges")
        sub = column.column()
        sub.active = settings.soft_edges
        sub.prop(settings, "edge_band_px")
        column.prop(settings, "output_dir")

        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("sequencer.sam2web_track", icon="TRACKING")
        row.operator("sequencer.sam2web_remove", text="", icon="TRASH")


def register() -> None:
    """Register the panel."""
    bpy.utils.register_class(SEQUENCER_PT_sam2web)


def unregister() -> None:
    """Unregister the panel."""
    bpy.utils.unregister_class(SEQUENCER_PT_sam2web)
