"""Editor plugins for sam2_web: one mask-job contract (``plugins.core``) and thin host adapters.

Every host (the ``sam2-web`` CLI, Kdenlive, Blender, ComfyUI) builds a :class:`plugins.core.MaskJob`
from its own prompts and hands it to :func:`plugins.core.run_job`; the adapter only translates
the host's clicks and writes the host's layers.
"""
