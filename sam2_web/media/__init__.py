"""Reading clips: frame sources over video files, image folders and in-memory arrays.

Writing results lives in :mod:`sam2_web.export`.
"""

from sam2_web.media.frames import ArraySource, FrameSource, ImageFilesSource, VideoFileSource, open_frames
from sam2_web.media.probe import FFmpegTools, VideoInfo, find_tools, probe_video

__all__ = [
    "ArraySource", "FFmpegTools", "FrameSource", "ImageFilesSource", "VideoFileSource", "VideoInfo",
    "find_tools", "open_frames", "probe_video",
]
