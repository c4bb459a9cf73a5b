"""Soft edges: alpha mattes from tracked masks, for editors who composite.

* :func:`alpha_matte` - one frame, one mask -> (H, W) float32 alpha (band around the edge solved
  from the colours; ``guided`` by default, ``vitmatte`` optional).
* :class:`MatteStream` - the same through a clip, steady where nothing moves.
* :func:`estimate_foreground` - the object's colour with the background's spill removed (RGBA cut-outs).
* :func:`cutout_preview` - a cut-out over a checkerboard, for previews.
"""

from sam2_web.matting.alpha import METHODS, MatteOptions, alpha_matte
from sam2_web.matting.foreground import estimate_foreground
from sam2_web.matting.preview import checkerboard, cutout_preview
from sam2_web.matting.temporal import MatteStream

__all__ = ["METHODS", "MatteOptions", "MatteStream", "alpha_matte", "checkerboard", "cutout_preview",
           "estimate_foreground"]
