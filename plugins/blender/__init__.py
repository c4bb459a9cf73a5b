"""SAM 2 object masks for Blender's Video Sequencer.

Select a movie strip, place points (keyed markers in the Movie Clip Editor, or a prompts JSON
file), press *Track Object* in the Sequencer sidebar's *SAM 2* tab: the object is tracked with
sam2_web, its matte lands as an image-sequence strip on the channel above (same frames as the
source), and a modifier on the source strip is masked by it, so effects apply to the object only.

The add-on is an adapter over ``sam2_web.jobs`` (the mask-job contract shared by every host):
``markers`` and ``strips`` translate Blender data, ``jobs`` runs the job in this process or
through the ``sam2-web`` command of another Python.
"""

bl_info = {
    "name": "SAM 2 Object Mask (sam2_web)",
    "author": "sam2_web contributors",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Video Sequencer > Sidebar > SAM 2",
    "description": "Track an object through a movie strip with Segment Anything 2; add its matte and a masked modifier",
    "category": "Sequencer",
}

from . import operators, panel, settings  # noqa: E402  (bl_info must come first for Blender's scanner)

_MODULES = (settings, operators, panel)


def register() -> None:
    """Register the add-on's classes and the scene settings (called by Blender on enable)."""
    for module in _MODULES:
        module.register()


def unregister() -> None:
    """Undo :func:`register` (called by Blender on disable)."""
    for module in reversed(_MODULES):
        module.unregister()
