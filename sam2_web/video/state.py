"""Typed state of a tracking session: per-frame model outputs, object tracks, results.

These replace the reference's nested dicts with string keys. Tensors stay tensors (the model
consumes them); everything that leaves the engine (``FrameMasks``) is numpy, copied off the
device when first read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from sam2_web.video.background import HostCopy, pack_masks, unpack_masks

if TYPE_CHECKING:
    from sam2_web.modeling.motion import FrameScores, MotionState
    from sam2_web.modeling.sam2_base import PointInputs
    from sam2_web.video.memory import MemoryBank  # memory.py imports this module


@dataclass
class FrameOutput:
    """What the tracker keeps of one object on one frame.

    Attributes:
        pred_masks: (1, 1, S/4, S/4) float32 low-res mask logits (after hole filling).
        obj_ptr: (1, C) object pointer token read by later frames' memory attention.
        object_score_logits: (1, 1) logit that the object is present on the frame.
        maskmem_features: (1, C_mem, S/16, S/16) spatial memory (bfloat16 by default), or
            None until the memory encoder has run (frames that only received clicks).
        maskmem_pos_enc: position encoding of the memory; the same tensor for every frame
            (shared, not stored per frame), None while ``maskmem_features`` is None.
        motion: with SAMURAI on, the object's box filter after this frame: the next frame of a
            pass (in either direction) continues from it, so tracking resumes, re-tracks and
            extends exactly; None without SAMURAI.
        scores: with SAMURAI on, what its memory rule reads of this frame (predicted IoU,
            presence logit, motion score); None without SAMURAI.
    """

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: Optional[torch.Tensor] = None
    maskmem_pos_enc: Optional[list[torch.Tensor]] = None
    motion: Optional[MotionState] = None
    scores: Optional[FrameScores] = None

    def nbytes(self) -> int:
        """Approximate memory held by the tensors of this output."""
        tensors = [self.pred_masks, self.obj_ptr, self.object_score_logits, self.maskmem_features]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class FrameMasks:
    """Masks of every object on one frame, at the clip's original resolution.

    Built from numpy arrays, or with :meth:`on_device` from the tracker's device tensors: then
    the copy to the host starts at once (as packed bits) and ``masks``/``scores`` wait for it
    only when first read, so a consumer that never looks (a job that exports from the store
    afterwards) costs the tracking loop no host sync.

    Attributes:
        frame_idx: index of the frame in the clip.
        obj_ids: object ids, in the session's insertion order.
        masks: (N, H, W) bool, N = len(obj_ids).
        scores: (N,) float32 object-presence probability (sigmoid of the presence logit).
    """

    def __init__(self, frame_idx: int, obj_ids: list[int], masks: Any, scores: Any):
        self.frame_idx = frame_idx
        self.obj_ids = obj_ids
        self._masks: Optional[np.ndarray] = None if masks is None else np.asarray(masks)
        self._scores: Optional[np.ndarray] = None if scores is None else np.asarray(scores)
        self._packed: Optional[HostCopy] = None
        self._scores_copy: Optional[HostCopy] = None
        self._shape: tuple[int, ...] = () if self._masks is None else tuple(self._masks.shape)

    @classmethod
    def on_device(cls, frame_idx: int, obj_ids: list[int], masks: torch.Tensor, scores: Any) -> "FrameMasks":
        """Masks that are still (N, H, W) bool tensors on a device, and (N,) scores (tensor or array)."""
        result = cls(frame_idx, obj_ids, None, None if isinstance(scores, torch.Tensor) else scores)
        result._shape = tuple(masks.shape)
        result._packed = HostCopy(pack_masks(masks))
        if isinstance(scores, torch.Tensor):
            result._scores_copy = HostCopy(scores.detach().float())
        return result

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, H, W) of ``masks``, known without waiting for them."""
        return self._shape

    def ready(self) -> bool:
        """Whether reading ``masks`` and ``scores`` would not wait for the device."""
        return all(c is None or c.ready() for c in (self._packed, self._scores_copy))

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool masks (waits for the device copy the first time, if there is one)."""
        # Two threads may read at once (the store's worker and a viewer): each step is safe to
        # repeat, and _masks is set before _packed is dropped.
        masks, packed = self._masks, self._packed
        if masks is None and packed is not None:
            _, height, width = self._shape
            masks = self._masks = unpack_masks(packed.result().numpy(), height, width)
            self._packed = None
        return self._masks if masks is None else masks

    @masks.setter
    def masks(self, value: np.ndarray) -> None:
        self._masks, self._packed, self._shape = np.asarray(value), None, tuple(np.shape(value))

    @property
    def scores(self) -> np.ndarray:
        """(N,) float32 presence scores (waits for the device copy the first time, if there is one)."""
        scores, copy = self._scores, self._scores_copy
        if scores is None and copy is not None:
            scores = self._scores = copy.result().numpy().astype(np.float32, copy=False)
            self._scores_copy = None
        return self._scores if scores is None else scores

    @scores.setter
    def scores(self, value: np.ndarray) -> None:
        self._scores, self._scores_copy = np.asarray(value), None

    def mask(self, obj_id: int) -> np.ndarray:
        """Return the (H, W) bool mask of ``obj_id``; raises KeyError when it is not present."""
        try:
            return self.masks[self.obj_ids.index(obj_id)]
        except ValueError:
            raise KeyError(obj_id) from None

    def __repr__(self) -> str:
        return f"FrameMasks(frame_idx={self.frame_idx}, obj_ids={self.obj_ids}, shape={self._shape})"


@dataclass
class ObjectTrack:
    """Everything the session keeps about one tracked object.

    ``points``/``masks`` are the user's prompts per frame; ``pending_*`` hold outputs computed
    for clicks since the last propagation (merged into the memory bank when it starts, so that
    the memory encoder only runs once the user has finished clicking); ``tracked`` maps each
    frame the tracker has produced to whether it got there going backwards (a correction on a
    tracked frame reads the memory of that same direction).
    """

    obj_id: int
    uid: int
    memory: MemoryBank
    points: dict[int, PointInputs] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    pending_cond: dict[int, FrameOutput] = field(default_factory=dict)
    pending_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)

    def prompted_frames(self) -> set[int]:
        """Frames where this object has clicks, a box or a mask."""
        return set(self.points) | set(self.masks)

    def pending(self, is_cond: bool) -> dict[int, FrameOutput]:
        """The pending outputs of the conditioning or the non-conditioning kind."""
        return self.pending_cond if is_cond else self.pending_non_cond


@dataclass
class FrameLogits:
    """All objects' masks on one frame as float logits, before they are binarised.

    Attributes:
        frame_idx: index of the frame in the clip.
        obj_ids: object ids, in insertion order.
        logits: (N, 1, H, W) float32 at the clip's resolution.
        scores: (N,) presence probability (sigmoid of the presence logit): a numpy array, or a
            tensor on the device when it comes from the tracking loop (reading it would sync).
    """

    frame_idx: int
    obj_ids: list[int]
    logits: torch.Tensor
    scores: Any


@dataclass
class TrackedFrame:
    """One frame of a propagation pass, as stored.

    Attributes:
        masks: the frame's stored masks (what the engine API yields).
        logits: the frame's logits; None when a resumed pass took the frame from the store.
    """

    masks: FrameMasks
    logits: Optional[torch.Tensor]
