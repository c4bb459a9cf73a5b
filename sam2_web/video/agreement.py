"""How far two runs' masks are apart: the fast preset against the exact path, say.

:func:`mask_agreement` pairs two runs' results frame by frame and object by object and reports
the mean IoU of each object over the clip and the worst frame, the figures the GPU bench prints
for "preset vs exact" and a CUDA test bounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sam2_web.video.state import FrameMasks


@dataclass(frozen=True)
class MaskAgreement:
    """Agreement of two runs on the same clip and objects.

    Attributes:
        mean_iou: per object id, its IoU averaged over the frames both runs have.
        worst_iou: the lowest IoU of any object on any frame.
        worst_frame, worst_obj: where that lowest IoU is.
        frames: frames compared.
    """

    mean_iou: dict[int, float]
    worst_iou: float
    worst_frame: int
    worst_obj: int
    frames: int


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; 1.0 when both are empty (they agree)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mask_agreement(reference: Iterable[FrameMasks], other: Iterable[FrameMasks]) -> MaskAgreement:
    """Compare ``other`` against ``reference`` on the frames and objects both have.

    Raises:
        ValueError: no frame or no object in common.
    """
    ref = {r.frame_idx: r for r in reference}
    per_obj: dict[int, list[float]] = {}
    worst = (2.0, -1, -1)
    frames = 0
    for result in other:
        base = ref.get(result.frame_idx)
        if base is None:
            continue
        frames += 1
        for obj_id in base.obj_ids:
            if obj_id not in result.obj_ids:
                continue
            value = iou(base.mask(obj_id), result.mask(obj_id))
            per_obj.setdefault(obj_id, []).append(value)
            worst = min(worst, (value, result.frame_idx, obj_id))
    if not per_obj:
        raise ValueError("the two runs have no frame and object in common")
    return MaskAgreement({o: float(np.mean(v)) for o, v in per_obj.items()}, worst[0], worst[1], worst[2], frames)
