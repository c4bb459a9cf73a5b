"""sam2_web: Segment Anything 2 for people who edit video.

Code written for Meta's ``sam2`` switches by changing the import::

    from sam2_web import build_sam2, build_sam2_video_predictor, SAM2ImagePredictor
    from sam2_web import SAM2AutomaticMaskGenerator
"""

from __future__ import annotations

__version__ = "0.1.0"

# Resolved on first use so that `import sam2_web` stays cheap for the CLI and plugins.
_LAZY = {
    "build_sam2": ("sam2_web.build", "build_sam2"),
    "build_sam2_video_predictor": ("sam2_web.build", "build_sam2_video_predictor"),
    "SAM2ImagePredictor": ("sam2_web.image_predictor", "SAM2ImagePredictor"),
    "SAM2AutomaticMaskGenerator": ("sam2_web.automatic_mask_generator", "SAM2AutomaticMaskGenerator"),
    "SAM2VideoPredictor": ("sam2_web.video.predictor", "SAM2VideoPredictor"),
    "load_predictor": ("sam2_web.models", "load_predictor"),
    "compose_app_config": ("sam2_web.models", "compose_app_config"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sam2_web' has no attribute {name!r}")
