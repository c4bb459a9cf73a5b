"""Reading clips: frame sources over video files, image folders and in-memory arrays.

(Exports of results live in this package too, in the ``export*`` modules.)
"""

from sam2_web.io.frames import ArraySource, FrameSource, ImageFilesSource, VideoFileSource, open_frames
from sam2_web.io.probe import FFmpegTools, VideoInfo, find_tools, probe_video

__all__ = [
    "ArraySource", "FFmpegTools", "FrameSource", "ImageFilesSource", "VideoFileSource", "VideoInfo",
    "find_tools", "open_frames", "probe_video",
]
