"""Motion-aware mask choice and memory selection (SAMURAI, Yang et al., arXiv 2411.11922).

SAMURAI changes two things in SAM 2's tracking, without new weights:

1. **Which of the decoder's three candidate masks is kept.** A constant-velocity Kalman filter
   follows the object's box (centre x, y, aspect ratio w/h, height h and their velocities).
   Once the filter has been fed ``stable_frames_threshold`` frames in a row whose chosen mask had
   a predicted IoU above ``stable_ious_threshold``, each candidate is scored by
   ``kf_score_weight * IoU(predicted box, candidate's box) + (1 - kf_score_weight) * predicted IoU``
   and the best one is kept; before that the plain SAM 2 choice (highest predicted IoU) is used.
2. **Which past frames enter the memory.** Only frames whose chosen mask's predicted IoU,
   object-presence logit and motion score pass ``memory_bank_*_threshold`` are read as memories
   (the adjacent frame always is), so frames where the object was occluded do not poison it.

It also judges the object present above ``min_obj_score_logits`` (SAM 2: above 0).

This module holds the settings (:class:`MotionConfig`), one object's filter state
(:class:`MotionState`, immutable: every frame's output keeps the state after it, so tracking
can resume from any frame), the filter (:class:`BoxKalmanFilter`), the choice
(:func:`choose_mask`) and the memory rule (:func:`select_memory_frames`). No state lives on
the model: the video engine keeps a state per object and frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sam2_web.errors import ConfigError

__all__ = [
    "MOTION_KEYS",
    "BoxKalmanFilter",
    "FrameScores",
    "MotionConfig",
    "MotionState",
    "MotionStep",
    "choose_mask",
    "mask_boxes",
    "select_memory_frames",
]


@dataclass(frozen=True)
class MotionConfig:
    """SAMURAI's settings, under the names of its YAML keys (defaults: its SAM 2.1 tiny config).

    Attributes:
        stable_frames_threshold: frames in a row with a confident mask before the filter
            steers the choice (>= 1).
        stable_ious_threshold: predicted IoU a chosen mask needs to count as confident (0..1).
        min_obj_score_logits: the object counts as present above this presence logit.
        kf_score_weight: weight of the motion score against the predicted IoU (0..1).
        memory_bank_iou_threshold / memory_bank_obj_score_threshold /
            memory_bank_kf_score_threshold: a tracked frame enters the memory only when its
            predicted IoU, presence logit and motion score (when it has one) exceed these.
    """

    stable_frames_threshold: int = 15
    stable_ious_threshold: float = 0.3
    min_obj_score_logits: float = -1.0
    kf_score_weight: float = 0.25
    memory_bank_iou_threshold: float = 0.5
    memory_bank_obj_score_threshold: float = 0.0
    memory_bank_kf_score_threshold: float = 0.0

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"SAMURAI setting {name}={getattr(self, name)!r}: {rule}")

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(f.name, "must be a finite number")
        if self.stable_frames_threshold < 1 or int(self.stable_frames_threshold) != self.stable_frames_threshold:
            raise bad("stable_frames_threshold", "must be a whole number of frames >= 1")
        for name in ("stable_ious_threshold", "kf_score_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must lie between 0 and 1")
        # A predicted IoU or a box IoU lies in [0, 1]; above 1 no frame would ever be remembered.
        for name in ("memory_bank_iou_threshold", "memory_bank_kf_score_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must lie between -1 and 1 (scores are IoUs in 0..1)")


# The YAML keys that switch SAMURAI on and set it, as its configs spell them.
MOTION_KEYS = ("samurai_mode",) + tuple(f.name for f in fields(MotionConfig))


@dataclass(frozen=True)
class MotionState:
    """One object's box filter after a frame: the state mean (8,) and covariance (8, 8) in
    float64 (None before the first measurement) and the count of confident frames in a row."""

    mean: Optional[np.ndarray] = field(default=None, compare=False)
    covariance: Optional[np.ndarray] = field(default=None, compare=False)
    stable_frames: int = 0

    def as_tensors(self) -> dict[str, torch.Tensor]:
        """The state as tensors (for a spill file: ``torch.save`` with ``weights_only`` loading)."""
        record = {"stable_frames": torch.tensor(self.stable_frames, dtype=torch.int64)}
        if self.mean is not None:
            record["mean"] = torch.from_numpy(self.mean.copy())
            record["covariance"] = torch.from_numpy(self.covariance.copy())
        return record

    @classmethod
    def from_tensors(cls, record: dict[str, torch.Tensor]) -> "MotionState":
        """Inverse of :meth:`as_tensors`."""
        mean = record.get("mean")
        return cls(
            mean=None if mean is None else mean.numpy().astype(np.float64),
            covariance=None if mean is None else record["covariance"].numpy().astype(np.float64),
            stable_frames=int(record["stable_frames"]),
        )


@dataclass(frozen=True)
class FrameScores:
    """What the memory rule reads of one tracked frame: the chosen mask's predicted IoU, the
    presence logit and the motion score (the box IoU of the chosen mask with the filter's
    prediction; None until the filter steers)."""

    iou: float
    object_score: float
    kf: Optional[float] = None

    def enters_memory(self, config: MotionConfig) -> bool:
        """Whether this frame may be read as a memory (the adjacent frame always is)."""
        return (
            self.iou > config.memory_bank_iou_threshold
            and self.object_score > config.memory_bank_obj_score_threshold
            and (self.kf is None or self.kf > config.memory_bank_kf_score_threshold)
        )

    def as_tensor(self) -> torch.Tensor:
        """(3,) float64 [iou, object_score, kf or NaN], for a spill file."""
        return torch.tensor([self.iou, self.object_score, math.nan if self.kf is None else self.kf], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "FrameScores":
        """Inverse of :meth:`as_tensor`."""
        iou, obj, kf = (float(v) for v in t.tolist())
        return cls(iou, obj, None if math.isnan(kf) else kf)


@dataclass(frozen=True)
class MotionStep:
    """The outcome of one frame for one object: the filter after it and its scores."""

    state: MotionState
    scores: FrameScores


class BoxKalmanFilter:
    """Constant-velocity Kalman filter on a box ``(x, y, a, h)`` (centre, aspect ratio w/h,
    height) with unit time step; noise scales with the box height (the usual tracking-by-
    detection filter, with SAMURAI's noise weights). Plain float64 numpy; no state of its own."""

    _POS_WEIGHT = 1.0 / 20
    _VEL_WEIGHT = 1.0 / 160

    def __init__(self) -> None:
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)
        self.observe = np.eye(4, 8)

    def _noise(self, h: float, pos: float, aspect: float) -> np.ndarray:
        return np.square([pos * h, pos * h, aspect, pos * h])

    def initiate(self, box: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of a new track at measurement ``box`` (zero velocity)."""
        h = box[3]
        mean = np.concatenate([box, np.zeros(4)])
        std = np.concatenate([
            self._noise(h, 2 * self._POS_WEIGHT, 1e-2), self._noise(h, 10 * self._VEL_WEIGHT, 1e-5)
        ])
        return mean, np.diag(std)

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One step ahead."""
        h = mean[3]
        process = np.diag(np.concatenate([
            self._noise(h, self._POS_WEIGHT, 1e-2), self._noise(h, self._VEL_WEIGHT, 1e-5)
        ]))
        return self.motion @ mean, self.motion @ covariance @ self.motion.T + process

    def update(self, mean: np.ndarray, covariance: np.ndarray, box: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Correct the state with measurement ``box``."""
        measured = np.diag(self._noise(mean[3], self._POS_WEIGHT, 1e-1))
        projected_cov = self.observe @ covariance @ self.observe.T + measured
        cross = covariance @ self.observe.T  # (8, 4)
        # Gain = cross @ inv(projected_cov); projected_cov is symmetric positive definite.
        gain = np.linalg.solve(projected_cov, cross.T).T
        innovation = box - self.observe @ mean
        return mean + gain @ innovation, covariance - gain @ projected_cov @ gain.T


_FILTER = BoxKalmanFilter()


def _xyah(box: Sequence[float]) -> np.ndarray:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w/h, h)``; a zero height counts as 1 (as the authors')."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    h = h if h != 0 else 1.0
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, w / h, h])


def _xyxy(xyah: np.ndarray) -> Tuple[float, float, float, float]:
    cx, cy, a, h = (float(v) for v in xyah[:4])
    return cx - a * h / 2, cy - h / 2, cx + a * h / 2, cy + h / 2


def _box_iou(pred: Tuple[float, ...], box: Sequence[float]) -> float:
    """IoU of the filter's box with a mask's box; an empty mask (box of zeros) scores 0."""
    if all(v == 0 for v in box):
        return 0.0
    x1, y1, x2, y2 = pred
    u1, v1, u2, v2 = (float(v) for v in box)
    inter = max(0.0, min(x2, u2) - max(x1, u1)) * max(0.0, min(y2, v2) - max(y1, v1))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    return inter / union if union != 0 else 0.0


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(B, M, H, W) mask logits -> (B, M, 4) int64 boxes ``(x_min, y_min, x_max, y_max)`` of
    the pixels > 0 (inclusive pixel indices); zeros for an empty mask. Stays on the device."""
    fg = masks > 0
    h, w = fg.shape[-2:]
    rows, cols = fg.any(dim=-1), fg.any(dim=-2)  # (B, M, H), (B, M, W)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y_min = torch.where(rows, ys, h).amin(dim=-1)
    y_max = torch.where(rows, ys, -1).amax(dim=-1)
    x_min = torch.where(cols, xs, w).amin(dim=-1)
    x_max = torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([x_min, y_min, x_max, y_max], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, torch.zeros_like(boxes))


def choose_mask(
    config: MotionConfig,
    state: MotionState,
    ious: torch.Tensor,
    boxes: Sequence[Sequence[float]],
    object_score: float,
) -> Tuple[int, MotionStep]:
    """SAMURAI's choice among one object's M candidate masks on a frame.

    Args:
        config: the settings.
        state: the object's filter after the previous frame of the pass.
        ious: (M,) float32 predicted IoUs (on the host).
        boxes: M boxes of the candidates, as :func:`mask_boxes` gives them.
        object_score: the object's presence logit on the frame (kept in the scores).
    Returns:
        ``(index of the kept candidate, MotionStep)``.
    """
    if state.mean is None or state.stable_frames == 0:
        best = int(torch.argmax(ious))
        mean, cov = _FILTER.initiate(_xyah(boxes[best]))
        return best, MotionStep(MotionState(mean, cov, state.stable_frames + 1), FrameScores(float(ious[best]), object_score))
    mean, cov = _FILTER.predict(state.mean, state.covariance)
    if state.stable_frames < config.stable_frames_threshold:
        best = int(torch.argmax(ious))
        stable = state.stable_frames
        if float(ious[best]) > config.stable_ious_threshold:
            mean, cov = _FILTER.update(mean, cov, _xyah(boxes[best]))
            stable += 1
        else:
            stable = 0
        return best, MotionStep(MotionState(mean, cov, stable), FrameScores(float(ious[best]), object_score))
    predicted = _xyxy(mean)
    # float32 like the predicted IoUs, so that ties break as in the authors' code.
    kf_ious = torch.tensor([_box_iou(predicted, b) for b in boxes], dtype=torch.float32)
    weighted = config.kf_score_weight * kf_ious + (1 - config.kf_score_weight) * ious.float()
    best = int(torch.argmax(weighted))
    stable = state.stable_frames
    if float(ious[best]) < config.stable_ious_threshold:
        stable = 0
    else:
        mean, cov = _FILTER.update(mean, cov, _xyah(boxes[best]))
    return best, MotionStep(MotionState(mean, cov, stable), FrameScores(float(ious[best]), object_score, float(kf_ious[best])))


def select_memory_frames(
    config: MotionConfig,
    frame_idx: int,
    track_in_reverse: bool,
    num_frames: Optional[int],
    num_maskmem: int,
    max_obj_ptrs_in_encoder: int,
    scores: Callable[[int], Optional[FrameScores]],
) -> List[Tuple[int, int]]:
    """SAMURAI's memory frames for ``frame_idx``: ``[(t_pos, frame)]`` like
    :meth:`~sam2_web.modeling.memory_reading.MemoryReadConfig.memory_frame_indices`.

    Going forward, the tracked frames from ``frame_idx - 1`` back to frame 2 are scanned (the
    authors' window: the clip's first two frames are never scanned) and the most recent ones
    whose :class:`FrameScores` enter the memory are kept, at most ``max_obj_ptrs_in_encoder - 1``
    looked for; the adjacent frame is always added last. The last ``num_maskmem - 1`` of those
    are read, the adjacent frame at ``t_pos = num_maskmem - 1``. In reverse the scan mirrors it
    (from ``frame_idx + 1`` up to ``num_frames - 3``). ``scores(t)`` is None for a frame the
    object has no tracked output on (never tracked, or a prompted frame): it is skipped.
    """
    step = 1 if track_in_reverse else -1
    adjacent = frame_idx + step
    if track_in_reverse:
        stop = (num_frames - 3) if num_frames is not None else frame_idx
        candidates = range(frame_idx + 1, stop + 1)
    else:
        candidates = range(frame_idx - 1, 1, -1)
    wanted = max(max_obj_ptrs_in_encoder - 1, 1)
    valid: List[int] = []  # most recent first
    for t in candidates:
        s = scores(t)
        if s is not None and s.enters_memory(config):
            valid.append(t)
        if len(valid) >= wanted:
            break
    chosen = valid[::-1]
    if adjacent not in chosen:
        chosen.append(adjacent)
    n = num_maskmem - 1
    picked = chosen[-n:] if n > 0 else []
    # The last entry is the most recent: t_pos = num_maskmem - 1; earlier ones count down.
    return [(num_maskmem - len(picked) + k, t) for k, t in enumerate(picked)]
