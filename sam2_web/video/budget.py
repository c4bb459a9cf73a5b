"""What one open session may hold in RAM: the per-session budget a server operator plans with.

A session that has tracked its clip and sits idle holds, in RAM:

* its image-feature cache: every encoded frame's feature maps, up to ``feature_cache_mb`` (the
  app grants each session a share of ``server.feature_cache_total_mb``);
* each object's tracking window: the outputs the next frame of a pass would read (the memory
  frames and the object-pointer frames) plus its prompted frames' outputs; older ones go to disk;
* the clip's recent-frames cache (a few decoded frames; the decoder's read-ahead and backward
  block are let go when a pass ends);
* the results: one mask per frame and object, run-length encoded or packed (at most a bit a pixel).

:func:`session_ram_budget` adds these up from the engine's own sizes (the feature maps of one
encoded frame, the model's memory window), so the figure follows the model and its resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

_MB = 2**20
RECENT_FRAMES = 4  # FrameSource's recent-frames cache (open_frames' ``cache``)
SLACK_BYTES = 16 * _MB  # Python objects, prompt tensors, the decoder's pipe: small, not counted one by one


@dataclass(frozen=True)
class SessionBudget:
    """A session's RAM budget in bytes, by part (see the module doc); ``total`` is their sum."""

    features: int
    tracking_window: int
    frames: int
    results: int
    slack: int = SLACK_BYTES

    @property
    def total(self) -> int:
        """Everything together."""
        return self.features + self.tracking_window + self.frames + self.results + self.slack


def feature_bytes_per_frame(model: Any) -> int:
    """Bytes of one encoded frame's cached feature maps, measured by encoding a blank frame."""
    side = int(model.image_size)
    with torch.inference_mode():
        image = torch.zeros(1, 3, side, side, device=model.device)
        maps = model.forward_image(image)["backbone_fpn"]
        return sum(t.numel() * t.element_size() for t in maps)


def frame_output_bytes(model: Any, memory_dtype: str = "bfloat16") -> int:
    """Bytes of one tracked frame's output for one object: its low-res mask logits ((S/4)^2
    float32), its spatial memory (``mem_dim`` x (S/stride)^2) and its object pointer."""
    side = int(model.image_size)
    memory_side = side // int(model.backbone_stride)
    item = 2 if memory_dtype == "bfloat16" else 4
    return (side // 4) ** 2 * 4 + int(model.mem_dim) * memory_side**2 * item + int(model.hidden_dim) * 4


def window_frames(model: Any) -> int:
    """Tracked frames per object that stay in RAM while a pass runs: what the next frame reads
    (``num_maskmem - 1`` memory frames at the memory stride, and the object-pointer frames)."""
    memory = (int(model.num_maskmem) - 1) * max(1, int(model.memory_temporal_stride_for_eval))
    pointers = int(model.max_obj_ptrs_in_encoder) - 1 if model.use_obj_ptrs_in_encoder else 0
    return max(memory, pointers) + 1


def session_ram_budget(model: Any, *, width: int, height: int, num_frames: int, objects: int,
                       prompted_frames: int = 1, feature_cache_mb: Optional[float] = None,
                       feature_bytes: Optional[int] = None) -> SessionBudget:
    """The RAM one session on a ``width`` x ``height`` clip of ``num_frames`` frames may hold with
    ``objects`` objects tracked (see the module doc).

    Args:
        model: the video predictor (its resolution, memory window and default options).
        width, height, num_frames: the clip.
        objects: objects tracked.
        prompted_frames: frames per object with clicks or a box (their outputs stay in RAM).
        feature_cache_mb: the session's feature-cache grant (default: the model's
            ``default_options.feature_cache_mb``).
        feature_bytes: :func:`feature_bytes_per_frame` if already known (it encodes a frame).
    Returns:
        A :class:`SessionBudget`.
    """
    options = getattr(model, "default_options", None)
    if feature_cache_mb is None:
        feature_cache_mb = float(getattr(options, "feature_cache_mb", 1024))
    per_frame = feature_bytes_per_frame(model) if feature_bytes is None else int(feature_bytes)
    features = min(int(feature_cache_mb * _MB), num_frames * per_frame)
    output = frame_output_bytes(model, getattr(options, "memory_dtype", "bfloat16"))
    window = objects * (window_frames(model) + prompted_frames) * output
    frames = RECENT_FRAMES * width * height * 3
    results = objects * num_frames * ((width * height + 7) // 8 + 8)  # at most a bit per pixel, and its score
    return SessionBudget(features=features, tracking_window=window, frames=frames, results=results)
