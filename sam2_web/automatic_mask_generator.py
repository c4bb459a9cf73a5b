"""Segment everything in a picture: a grid of point prompts, each decoded into candidate masks,
filtered by the model's own quality estimates and de-duplicated.

``SAM2AutomaticMaskGenerator`` has the reference's constructor, options and ``generate(image)``
records (``sam2==1.1.0``), and gives the same records: the same masks, in the same order, with the
same scores. It runs on any model our :class:`~sam2_web.image_predictor.SAM2ImagePredictor` runs
(SAM 2/2.1, EdgeTAM, EfficientTAM), on the CPU without OpenCV or a compiled extension.

How it differs inside (not in what it returns): each candidate's full-resolution mask is computed
only if the candidate passed the predicted-IoU filter, candidates are kept as bit-packed patches
around their box instead of run-length lists, and ``use_m2m`` never upscales the first guesses it
replaces. The image encoder runs once per crop; the point prompts go through the decoder in batches
of ``points_per_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sam2_web import amg
from sam2_web import transforms as T
from sam2_web.errors import CancelledError
from sam2_web.export import rle
from sam2_web.image_predictor import SAM2ImagePredictor, _as_rgb_array
from sam2_web.runlength import run_lengths
from sam2_web.video.cancel import Cancel, cancel_check

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_LOW_RES_LOGIT_CLAMP = 32.0  # the reference feeds its clamped low-res logits back for use_m2m
_UPSCALE_CHUNK_PIXELS = 32_000_000  # full-resolution logits computed at once (~128 MB of float32)

Progress = Callable[[int, int], None]


@dataclass
class _Candidates:
    """Masks that passed the filters so far, one row each.

    ``boxes`` (N, 4) int64 ``[x0, y0, x1, y1]`` (last pixel inside) and ``points`` (N, 2) float32
    are in crop coordinates until ``_process_crop`` moves them to the picture's; ``patches[i]``
    is the bit-packed mask inside ``boxes[i]``; ``crops`` (N, 4) int64 is the crop each came from.
    """

    boxes: torch.Tensor
    ious: torch.Tensor
    stability: torch.Tensor
    points: torch.Tensor
    crops: torch.Tensor
    patches: List[np.ndarray]

    @classmethod
    def empty(cls) -> "_Candidates":
        return cls(torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0), torch.zeros(0), torch.zeros(0, 2),
                   torch.zeros(0, 4, dtype=torch.int64), [])

    def __len__(self) -> int:
        return len(self.patches)

    def select(self, index: torch.Tensor) -> "_Candidates":
        index = index.cpu()
        return _Candidates(self.boxes[index], self.ious[index], self.stability[index], self.points[index],
                           self.crops[index], [self.patches[int(i)] for i in index])

    @classmethod
    def concat(cls, parts: Sequence["_Candidates"]) -> "_Candidates":
        if not parts:
            return cls.empty()
        return cls(*(torch.cat([getattr(p, name) for p in parts]) for name in
                     ("boxes", "ious", "stability", "points", "crops")),
                   [patch for p in parts for patch in p.patches])


class SAM2AutomaticMaskGenerator:
    """Generate masks for everything in a picture with a SAM 2 model (the reference's API)."""

    def __init__(
        self,
        model: torch.nn.Module,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            model: the network (``build_sam2(...)``; any family).
            points_per_side: points along each side of the grid (``points_per_side**2`` in all);
                None when ``point_grids`` is given.
            points_per_batch: point prompts decoded at once (more is faster, needs more memory).
            pred_iou_thresh: keep masks whose predicted IoU is above this (0 = keep all).
            stability_score_thresh: keep masks whose stability score is at least this (0 = all).
            stability_score_offset: how far the cut-off moves to measure stability.
            mask_threshold: logit above which a pixel is in a mask.
            box_nms_thresh: box IoU above which the lower-scored of two masks of a crop is dropped.
            crop_n_layers: also search crops of the picture: layer ``i`` has ``(2**i)**2`` crops.
            crop_nms_thresh: box IoU above which duplicates from different crops are dropped
                (masks of smaller crops are preferred).
            crop_overlap_ratio: overlap of first-layer crops as a fraction of the short side.
            crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor**i`` per side.
            point_grids: explicit [0, 1]² point grids, one per crop layer (instead of ``points_per_side``).
            min_mask_region_area: fill holes and drop specks up to this many low-res (256²) pixels
                in every mask before it is judged (0 = off).
            output_mode: ``binary_mask`` (an (H, W) bool array), ``uncompressed_rle`` or
                ``coco_rle`` (pycocotools' compressed form; pycocotools is not needed).
            use_m2m: refine each mask once more with its own low-res logits as a mask prompt.
            multimask_output: three candidate masks per point (else one).
            kwargs: accepted and ignored (the reference passes its build kwargs through).
        Raises:
            ValueError: both or neither of ``points_per_side`` and ``point_grids``, a grid list that
                does not cover every crop layer, an unknown ``output_mode``, or
                ``points_per_batch`` < 1.
        """
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side (e.g. 32) or point_grids (a list of "
                             "[0, 1] point arrays, one per crop layer)")
        if points_per_side is not None:
            self.point_grids = amg.layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in point_grids]
            if len(self.point_grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids has {len(self.point_grids)} grid(s) but crop_n_layers={crop_n_layers} "
                                 f"needs {crop_n_layers + 1} (one for the whole picture and one per crop layer)")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        if int(points_per_batch) < 1:
            raise ValueError(f"points_per_batch must be at least 1, got {points_per_batch}")
        # The reference's predictor cleans masks with min_mask_region_area and the default 0.0 cut-off.
        self.predictor = SAM2ImagePredictor(model, max_hole_area=min_mask_region_area,
                                            max_sprinkle_area=min_mask_region_area)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> "SAM2AutomaticMaskGenerator":
        """Load a published model by registry name or Hub id (``facebook/sam2.1-hiera-tiny``).

        ``kwargs``: generator options (as :meth:`__init__` takes them) and the loading options of
        :meth:`SAM2ImagePredictor.from_pretrained` (``device``, ``checkpoint``, ``overrides`` ...).

        Raises:
            UnknownModelError, HubUnavailableError, CheckpointError, ConfigNotFoundError.
        """
        import inspect

        own = set(inspect.signature(cls.__init__).parameters) - {"self", "model", "kwargs"}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        return cls(SAM2ImagePredictor.from_pretrained(model_id, **kwargs).model, **options)

    # ------------------------------------------------------------------ generating

    @torch.no_grad()
    def generate(self, image: Any, *, progress: Optional[Progress] = None,
                 cancel: Cancel = None) -> List[Dict[str, Any]]:
        """Find every mask in ``image``.

        Args:
            image: (H, W, 3) uint8 RGB array or a PIL image.
            progress: called as ``progress(done, total)`` after each image-encoder pass and each
                decoder batch (``total`` = passes + batches of the whole run).
            cancel: a ``threading.Event`` or callable; checked between steps.
        Returns:
            One record per mask, as the reference gives them: ``segmentation`` (per
            ``output_mode``), ``area`` (pixels), ``bbox`` ([x, y, w, h]), ``predicted_iou``,
            ``point_coords`` ([[x, y]], the prompt), ``stability_score``, ``crop_box`` ([x, y, w, h]).
        Raises:
            PromptError: not an image. CancelledError: ``cancel`` was set.
        """
        image = _as_rgb_array(image)
        found = self._generate_masks(image, progress, cancel_check(cancel))
        return self._records(found, image.shape[:2])

    def _generate_masks(self, image: np.ndarray, progress: Optional[Progress],
                        is_cancelled: Callable[[], bool]) -> _Candidates:
        orig_size = image.shape[:2]
        boxes, layers = amg.crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        batches = [-(-len(self.point_grids[layer]) // self.points_per_batch) for layer in layers]
        steps = _Steps(sum(batches) + len(boxes), progress, is_cancelled)
        found = _Candidates.concat([self._process_crop(image, box, layer, orig_size, steps)
                                    for box, layer in zip(boxes, layers)])
        if len(boxes) > 1:
            # Between crops, prefer the mask from the smaller crop.
            scores = 1 / amg.box_area(found.crops)
            found = found.select(amg.nms(found.boxes.float(), scores, self.crop_nms_thresh))
        return found

    def _process_crop(self, image: np.ndarray, crop_box: List[int], layer: int, orig_size: Tuple[int, int],
                      steps: "_Steps") -> _Candidates:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_size = crop.shape[:2]
        steps.check()
        self.predictor.set_image(crop)
        steps.done()
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            steps.check()
            parts.append(self._process_batch(points[start:start + self.points_per_batch], crop_size, crop_box,
                                             orig_size))
            steps.done()
        self.predictor.reset_predictor()
        found = _Candidates.concat(parts)
        found = found.select(amg.nms(found.boxes.float(), found.ious, self.box_nms_thresh))
        shift = torch.tensor([x0, y0])
        found.boxes = found.boxes + shift.repeat(2)[None]
        found.points = found.points + shift[None]
        found.crops = torch.tensor([crop_box], dtype=torch.int64).repeat(len(found), 1)
        return found

    def _process_batch(self, points: np.ndarray, crop_size: Tuple[int, int], crop_box: List[int],
                       orig_size: Tuple[int, int]) -> _Candidates:
        pred = self.predictor
        res = pred.model.image_size
        pts = torch.as_tensor(points, dtype=torch.float32, device=pred.device)
        labels = torch.ones(len(pts), 1, dtype=torch.int, device=pred.device)
        low_res, ious = pred._decode(T.transform_coords(pts, res, crop_size)[:, None, :], labels,
                                     multimask_output=self.multimask_output)
        per_point = low_res.shape[1]
        low_res, ious = low_res.flatten(0, 1), ious.flatten(0, 1).float()
        pts = pts.repeat_interleave(per_point, dim=0)
        if self.use_m2m:
            low_res, ious = self._refine(pts, low_res, crop_size)

        keep = torch.ones_like(ious, dtype=torch.bool)
        if self.pred_iou_thresh > 0.0:
            keep = ious > self.pred_iou_thresh
        kept = torch.nonzero(keep).flatten()
        # Full-resolution logits only for what survived, a few masks at a time.
        chunk = max(1, _UPSCALE_CHUNK_PIXELS // max(1, crop_size[0] * crop_size[1]))
        parts = []
        for start in range(0, len(kept), chunk):
            rows = kept[start:start + chunk]
            parts.append(self._judge(low_res[rows], ious[rows], pts[rows], crop_size, crop_box, orig_size))
        return _Candidates.concat(parts)

    def _refine(self, pts: torch.Tensor, low_res: torch.Tensor, crop_size: Tuple[int, int]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One more decoder pass per mask with its own low-res logits as the mask prompt (use_m2m)."""
        pred = self.predictor
        in_pts = T.transform_coords(pts, pred.model.image_size, crop_size)
        labels = torch.ones(len(in_pts), 1, dtype=torch.int, device=in_pts.device)
        prompts = torch.clamp(low_res.float(), -_LOW_RES_LOGIT_CLAMP, _LOW_RES_LOGIT_CLAMP)[:, None]
        out_low, out_ious = [], []
        for start in range(0, len(in_pts), self.points_per_batch):
            part = slice(start, start + self.points_per_batch)
            low, iou = pred._decode(in_pts[part, None, :], labels[part], mask_input=prompts[part],
                                    multimask_output=False)
            out_low.append(low)
            out_ious.append(iou)
        return torch.cat(out_low).squeeze(1), torch.cat(out_ious).squeeze(1).float()

    def _judge(self, low_res: torch.Tensor, ious: torch.Tensor, pts: torch.Tensor, crop_size: Tuple[int, int],
               crop_box: List[int], orig_size: Tuple[int, int]) -> _Candidates:
        """Upscale, score and box a few candidates; keep the stable ones not cut off by the crop."""
        area = self.min_mask_region_area
        logits = T.postprocess_masks(low_res[:, None], crop_size, 0.0, area, area)[:, 0]
        stability = amg.stability_score(logits, self.mask_threshold, self.stability_score_offset)
        keep = torch.ones_like(stability, dtype=torch.bool)
        if self.stability_score_thresh > 0.0:
            keep = stability >= self.stability_score_thresh
        masks = logits > self.mask_threshold
        del logits
        boxes = amg.masks_to_boxes(masks)
        orig_h, orig_w = orig_size
        keep &= ~amg.near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        rows = torch.nonzero(keep).flatten()
        masks, boxes = masks[rows].cpu(), boxes[rows].cpu()
        patches = [_pack(masks[k], boxes[k]) for k in range(len(rows))]
        return _Candidates(boxes, ious[rows].cpu(), stability[rows].cpu(), pts[rows].cpu(),
                           torch.zeros(len(rows), 4, dtype=torch.int64), patches)

    # ------------------------------------------------------------------ records

    def _records(self, found: _Candidates, size: Tuple[int, int]) -> List[Dict[str, Any]]:
        boxes = found.boxes.float().numpy()
        crops = found.crops.float().numpy()
        points = found.points.float().numpy()
        records = []
        for k, patch in enumerate(found.patches):
            mask = _unpack(patch, found.boxes[k], size)
            if self.output_mode == "binary_mask":
                segmentation: Any = mask
            elif self.output_mode == "coco_rle":
                segmentation = rle.encode(mask)
            else:
                segmentation = {"size": [int(size[0]), int(size[1])], "counts": run_lengths(mask, order="F").tolist()}
            records.append({
                "segmentation": segmentation,
                "area": int(mask.sum()),
                "bbox": _xywh(boxes[k]),
                "predicted_iou": found.ious[k].item(),
                "point_coords": [points[k].tolist()],
                "stability_score": found.stability[k].item(),
                "crop_box": _xywh(crops[k]),
            })
        return records

    def refine_with_m2m(self, points: torch.Tensor, point_labels: torch.Tensor, low_res_masks: torch.Tensor,
                        points_per_batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The reference's public refinement step on the current image: each (model-grid) point
        with its low-res logits as the mask prompt, ``points_per_batch`` at a time.

        Returns:
            ``(masks (N, 1, H, W) logits at the image's size, ious (N, 1))``.
        """
        masks, ious = [], []
        for start in range(0, len(points), points_per_batch):
            part = slice(start, start + points_per_batch)
            m, i, _ = self.predictor._predict(points[part, None, :], point_labels[part, None],
                                              mask_input=low_res_masks[part, None, :], multimask_output=False,
                                              return_logits=True)
            masks.append(m)
            ious.append(i)
        return torch.cat(masks), torch.cat(ious)


class _Steps:
    """Counts encoder passes and decoder batches for ``progress`` and checks ``cancel`` between them."""

    def __init__(self, total: int, progress: Optional[Progress], is_cancelled: Callable[[], bool]):
        self.total, self.count = total, 0
        self.progress, self.is_cancelled = progress, is_cancelled

    def check(self) -> None:
        if self.is_cancelled():
            raise CancelledError("finding objects was cancelled")

    def done(self) -> None:
        self.count += 1
        if self.progress is not None:
            self.progress(self.count, self.total)


def _pack(mask: torch.Tensor, box: torch.Tensor) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    return np.packbits(mask[y0:y1 + 1, x0:x1 + 1].numpy(), axis=None)


def _unpack(patch: np.ndarray, box: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = y1 - y0 + 1, x1 - x0 + 1
    mask = np.zeros(size, dtype=bool)
    mask[y0:y1 + 1, x0:x1 + 1] = np.unpackbits(patch, count=h * w).reshape(h, w).astype(bool)
    return mask


def _xywh(box: np.ndarray) -> List[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]
