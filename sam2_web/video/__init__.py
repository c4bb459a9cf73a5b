"""The video engine: sessions over a clip, bounded memory, feature cache, compact results.

``predictor.open_session(source)`` returns a :class:`VideoSession` (the engine API); its
:class:`~sam2_web.video.tracker.Tracker` does the tracking; results are :class:`FrameMasks`.
``SAM2VideoPredictor`` (built by ``sam2_web.build.build_sam2_video_predictor``) also keeps the
reference's ``init_state`` / ``propagate_in_video`` API.
"""

from sam2_web.video.options import SessionOptions
from sam2_web.video.session import VideoSession
from sam2_web.video.state import FrameMasks

__all__ = ["FrameMasks", "SessionOptions", "VideoSession"]
