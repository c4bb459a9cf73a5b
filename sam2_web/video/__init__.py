"""The video engine: sessions over a clip, bounded memory, feature cache, compact results.

``predictor.open_session(source)`` returns a :class:`VideoSession` (the engine API); its
:class:`~sam2_web.video.tracker.Tracker` does the tracking; results are :class:`FrameMasks`.
``SAM2VideoPredictor`` (built by ``sam2_web.build.build_sam2_video_predictor``) also keeps the
reference's ``init_state`` / ``propagate_in_video`` API.
"""

from __future__ import annotations

# Resolved on first use, so that light modules (``sam2_web.video.cancel``) import without torch.
_LAZY = {
    "FrameMasks": "sam2_web.video.state",
    "SessionOptions": "sam2_web.video.options",
    "VideoSession": "sam2_web.video.session",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sam2_web.video' has no attribute {name!r}")
