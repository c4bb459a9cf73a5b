"""Editor plugins for sam2_web: one mask-job contract (``sam2_web.jobs``) and thin host adapters.

Every host (the ``sam2-web`` CLI, Kdenlive, Blender, ComfyUI) builds a :class:`sam2_web.jobs.MaskJob`
from its own prompts and hands it to :func:`sam2_web.jobs.run_job`; the adapter only translates
the host's clicks and writes the host's layers.
"""
