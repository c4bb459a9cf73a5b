"""Parity helpers: the reference with random weights → an official checkpoint → our model.

The reference (PyPI ``sam2==1.1.0``) is only ever an oracle here. Its constructors leave many
parameters at trivial values (zeros, ones, layer-scale 1e-6), which would let a wrong code path
hide; ``perturb`` adds small seeded noise to every parameter and buffer so each one matters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from sam2_web.modeling.sam2_base import HeadsOutput, PointInputs, TrackStepOutput

MODEL_NAMES = (
    "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
    "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
)


def reference_config(name: str) -> str:
    """The reference's config string for a model name, e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``."""
    family = "sam2.1" if name.startswith("sam2.1") else "sam2"
    return f"configs/{family}/{name}.yaml"


def as_reference(node):
    """A config subtree with our ``_target_``s pointed at the reference's classes."""
    if isinstance(node, dict):
        return {k: as_reference(v) for k, v in node.items()}
    if isinstance(node, list):
        return [as_reference(v) for v in node]
    if isinstance(node, str) and node.startswith("sam2_web."):
        return "sam2." + node[len("sam2_web.") :]
    return node


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Add seeded Gaussian noise to every float parameter and buffer, in place."""
    gen = torch.Generator().manual_seed(seed)
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point() and tensor.numel() > 0:
            tensor.add_(torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype) * scale)


@torch.no_grad()
def sharpen_masks(model: torch.nn.Module, gain: float = -10.0) -> None:
    """Scale the mask decoder's hypernetwork outputs by ``gain``, in place.

    With random weights the mask logits are small (|x| < 1) and, on a picture of bright shapes on
    black, negative on the shapes; a gain of -10 turns them into shape-like masks with some noise
    (holes and specks) and logits of order 10, so that thresholds, stability scores, box NMS and
    small-region clean-up all have something to decide. Apply it to both models of a pair.
    """
    for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.mul_(gain)
        mlp.layers[-1].bias.mul_(gain)


def opencv_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A CPU stand-in for the reference's CUDA kernel ``sam2._C.get_connected_componnets``, built
    on OpenCV (an implementation independent of ours): 8-connected components of (N, 1, H, W)
    masks as ``(labels, areas)``, both (N, 1, H, W) int32, 0 outside the mask.

    Without its kernel the reference skips hole filling with a warning; patch
    ``sam2.utils.misc.get_connected_components`` with this to compare that step too.
    """
    import cv2
    import numpy as np

    planes = mask.to(torch.uint8).cpu().numpy()
    labels = np.zeros(planes.shape, np.int32)
    areas = np.zeros(planes.shape, np.int32)
    for i in range(planes.shape[0]):
        _, lab, stats, _ = cv2.connectedComponentsWithStats(planes[i, 0], connectivity=8)
        size = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
        size[0] = 0  # OpenCV's label 0 is the background
        labels[i, 0], areas[i, 0] = lab, size[lab]
    return torch.from_numpy(labels).to(mask.device), torch.from_numpy(areas).to(mask.device)


@dataclass
class Pair:
    """A reference model, our model loaded from the reference's checkpoint, and that checkpoint."""

    ref: torch.nn.Module
    ours: torch.nn.Module
    ckpt: Path


def build_reference(name: str, overrides=(), *, video: bool = False, seed: int = 0) -> torch.nn.Module:
    """The reference model for ``name`` with seeded random weights, on CPU, in eval mode."""
    from sam2.build_sam import build_sam2 as ref_build, build_sam2_video_predictor as ref_build_video

    torch.manual_seed(seed)
    builder = ref_build_video if video else ref_build
    model = builder(reference_config(name), None, device="cpu", hydra_overrides_extra=list(overrides))
    perturb(model, seed)
    return model.eval()


def save_official_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Write ``{"model": state_dict}``, the format of Meta's published ``.pt`` files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path


@functools.lru_cache(maxsize=4)
def _cached_pair(name: str, overrides: tuple, video: bool, seed: int, workdir: str) -> Pair:
    from sam2_web.build import build_sam2, build_sam2_video_predictor

    ref = build_reference(name, overrides, video=video, seed=seed)
    tag = "video" if video else "image"
    ckpt = save_official_checkpoint(ref, Path(workdir) / f"{name}-{tag}-{abs(hash(overrides))}.pt")
    builder = build_sam2_video_predictor if video else build_sam2
    ours = builder(reference_config(name), ckpt, device="cpu", hydra_overrides_extra=list(overrides))
    return Pair(ref, ours, ckpt)


def make_pair(name: str, overrides=(), *, video: bool = False, seed: int = 0, workdir: str | Path) -> Pair:
    """Build (or reuse) a reference/ours pair for ``name`` with identical weights.

    Args:
        name: one of :data:`MODEL_NAMES`.
        overrides: hydra overrides applied to both, e.g. ``("++model.image_size=256",)``.
        video: build the video predictors instead of the image models.
        workdir: where the checkpoint is written (a session tmp dir).
    """
    return _cached_pair(name, tuple(overrides), video, seed, str(workdir))


# --- the reference's shapes, converted here and nowhere else ----------------------------------

# The order of the reference's ``_forward_sam_heads`` 7-tuple.
REFERENCE_HEADS_ORDER = (
    "low_res_multimasks", "high_res_multimasks", "ious",
    "low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits",
)


def heads_from_reference(outputs: tuple) -> HeadsOutput:
    """The reference's ``_forward_sam_heads`` 7-tuple as our :class:`HeadsOutput`."""
    return HeadsOutput(**dict(zip(REFERENCE_HEADS_ORDER, outputs, strict=True)))


def step_from_reference(out: dict) -> TrackStepOutput:
    """The reference's ``track_step`` dict as our :class:`TrackStepOutput` (the dict also
    echoes the step's ``point_inputs``/``mask_inputs``, which ours does not; it has no SAMURAI
    ``motion``, which ours leaves None with SAMURAI off)."""
    return TrackStepOutput(**{f.name: out[f.name] for f in fields(TrackStepOutput) if f.name != "motion"})


def step_as_reference(out: TrackStepOutput) -> dict:
    """Our :class:`TrackStepOutput` as the reference's ``track_step`` dict (what its memory reads)."""
    return {f.name: getattr(out, f.name) for f in fields(TrackStepOutput)}


def points_as_reference(points: PointInputs | None) -> dict | None:
    """Our :class:`PointInputs` as the reference's ``{"point_coords", "point_labels"}`` dict."""
    if points is None:
        return None
    return {"point_coords": points.point_coords, "point_labels": points.point_labels}


class KeepAllMemory:
    """A ``MemorySource`` that keeps every output, as the reference's ``output_dict`` does."""

    def __init__(self) -> None:
        self.cond: dict[int, TrackStepOutput] = {}
        self.non_cond: dict[int, TrackStepOutput] = {}

    def cond_frame_outputs(self) -> dict[int, TrackStepOutput]:
        return self.cond

    def non_cond_frame_output(self, frame_idx: int) -> TrackStepOutput | None:
        return self.non_cond.get(frame_idx)

    def store(self, frame_idx: int, out: TrackStepOutput, cond: bool) -> None:
        """Keep ``out`` as a conditioning (prompted) or a tracked frame's output."""
        (self.cond if cond else self.non_cond)[frame_idx] = out


def informative_masks(logits) -> tuple[int, int]:
    """``(informative, total)`` object masks in ``logits`` (objects, 1, H, W) or (objects, H, W).

    Informative: the object was decoded as present (not the constant -1024 "absent" logits that
    random weights often produce) and its mask holds both foreground and background, so equal
    outputs of two implementations mean something.
    """
    import numpy as np

    maps = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)
    good = (maps.max(axis=1) > -1000) & ((maps > 0).mean(axis=1) > 0) & ((maps > 0).mean(axis=1) < 1)
    return int(good.sum()), len(maps)
