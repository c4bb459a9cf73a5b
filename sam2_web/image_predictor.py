"""Interactive segmentation of still images: embed a picture once, then decode many prompts.

``SAM2ImagePredictor`` has the reference's API (``set_image``, ``predict``, ``set_image_batch``,
``predict_batch``, ``_predict``, ``get_image_embedding``, ``reset_predictor``,
``from_pretrained``) and gives the same numbers, but checks its inputs and raises
:class:`~sam2_web.errors.PromptError` with a message that says what to fix.

Point labels a user passes are 1 (foreground) or 0 (background). Internally the prompt encoder
also knows 2/3 (box corners, added here from ``box``) and -1 (padding); those are accepted only by
the tensor-level :meth:`SAM2ImagePredictor._predict`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sam2_web import transforms as T
from sam2_web.device import autocast_context, check_precision
from sam2_web.errors import PromptError
from sam2_web.video.prompts import finite_numbers

_LOW_RES_LOGIT_CLAMP = 32.0  # keeps returned low-res logits usable as the next mask_input


@dataclass
class ImageEmbedding:
    """Features of the image(s) set on the predictor.

    ``image_embed``: (N, C, h, w) lowest-resolution features (``no_mem_embed`` added as SAM 2 was
    trained); ``high_res_feats``: the stride-4 and stride-8 maps already projected for the
    decoder, or None for models without them; ``orig_hw``: (height, width) of each image.
    """

    image_embed: torch.Tensor
    high_res_feats: Optional[List[torch.Tensor]]
    orig_hw: List[Tuple[int, int]]


# ---------------------------------------------------------------------- input checks


def _as_rgb_array(image: Any, what: str = "image") -> np.ndarray:
    """Return ``image`` as an (H, W, 3) uint8 array; PIL images are converted to RGB."""
    try:
        from PIL import Image as PILImage
    except ImportError:  # pillow is optional for array users
        PILImage = None
    if PILImage is not None and isinstance(image, PILImage.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise PromptError(
            f"{what} must be an HxWx3 uint8 numpy array or a PIL image, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (grayscale? stack it to 3 channels)" if image.ndim == 2 else ""
        hint = " (RGBA? drop the alpha channel: image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else hint
        raise PromptError(f"{what} must have shape (H, W, 3) RGB, got {image.shape}{hint}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise PromptError(f"{what} is empty (shape {image.shape}); pass a picture with at least one pixel")
    if image.dtype != np.uint8:
        raise PromptError(
            f"{what} must be uint8 with values 0..255, got dtype {image.dtype}; "
            "convert with (img * 255).round().astype(np.uint8) if it holds 0..1 floats"
        )
    return image


def _check_points(point_coords: Any, point_labels: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Validate points (N, 2) or (B, N, 2) and labels (N,) or (B, N); return both batched."""
    if point_labels is None:
        raise PromptError("point_labels is missing: give one label per point (1 = object, 0 = background)")
    coords = finite_numbers(point_coords, "point_coords")
    if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
        raise PromptError(f"point_coords must have shape (N, 2) or (B, N, 2) as (x, y) pixels, got {coords.shape}")
    try:
        labels = np.asarray(
            point_labels.detach().cpu() if isinstance(point_labels, torch.Tensor) else point_labels
        )
        labels_num = labels.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"point_labels must be 0/1 numbers, got {point_labels!r}") from exc
    n_points = coords.size // 2
    if labels.size != n_points:
        raise PromptError(
            f"point_labels has {labels.size} entries but point_coords has {n_points} points; "
            "give exactly one label per point"
        )
    if labels.shape != coords.shape[:-1]:
        raise PromptError(
            f"point_labels has shape {labels.shape} but point_coords has shape {coords.shape}; "
            f"labels must have shape {coords.shape[:-1]}"
        )
    if coords.shape[-2] == 0:
        raise PromptError("point_coords has no points; pass at least one point or leave it None")
    if not np.all(np.isin(labels_num, (0, 1))):
        bad = sorted(set(labels_num.ravel().tolist()) - {0.0, 1.0})
        raise PromptError(f"point_labels must be 1 (object) or 0 (background), got {bad}")
    if coords.ndim == 2:
        coords, labels_num = coords[None], labels_num[None]
    return coords, labels_num.astype(np.int32)


def _check_box(box: Any) -> np.ndarray:
    """Validate a box (4,) or boxes (B, 4) as x0, y0, x1, y1; return (B, 4)."""
    arr = finite_numbers(box, "box")
    if arr.shape == (4,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0:
        raise PromptError(f"box must have shape (4,) or (B, 4) as x0, y0, x1, y1, got {arr.shape}")
    flipped = np.nonzero((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))[0]
    if flipped.size:
        i = int(flipped[0])
        raise PromptError(
            f"box {arr[i].tolist()} has x1 < x0 or y1 < y0; give the top-left corner first (x0, y0, x1, y1)"
        )
    return arr


def _check_mask_input(mask_input: Any, side: int) -> np.ndarray:
    """Validate low-res mask logits (1, side, side) or (B, 1, side, side); return 4-D."""
    arr = finite_numbers(mask_input, "mask_input")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (1, side, side):
        raise PromptError(
            f"mask_input must have shape (1, {side}, {side}) or (B, 1, {side}, {side}) — the low-res logits "
            f"returned by an earlier predict() — got {np.shape(mask_input)}"
        )
    return arr


def _batch_of(*sizes: Optional[int]) -> int:
    """Common batch size of prompts; size 1 broadcasts."""
    given = {s for s in sizes if s is not None and s != 1}
    if len(given) > 1:
        raise PromptError(
            f"prompt batch sizes disagree ({', '.join(str(s) for s in sizes if s is not None)}); "
            "give one row of points/box/mask per object, or a single row shared by all"
        )
    return given.pop() if given else 1


# ---------------------------------------------------------------------- predictor


class SAM2ImagePredictor:
    """Embed an image once with a :class:`~sam2_web.modeling.sam2_base.SAM2Base`, then predict masks
    for any number of prompts on it."""

    def __init__(
        self,
        sam_model: torch.nn.Module,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        precision: str = "fp32",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            sam_model: the network (``build_sam2(...)``).
            mask_threshold: logit above which a pixel is in the mask.
            max_hole_area: fill background holes up to this many low-res pixels (0 = off).
            max_sprinkle_area: remove foreground specks up to this many low-res pixels (0 = off).
            precision: ``"fp32"`` or ``"bf16"``; bf16 autocast is used only on CUDA (opt-in,
                changes numbers slightly); on CPU/MPS everything stays float32.
            kwargs: accepted and ignored (the reference passes its build kwargs through).
        Raises:
            ValueError: an unknown precision.
        """
        self.model = sam_model
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.precision = check_precision(precision)
        self._features: Optional[ImageEmbedding] = None
        self._is_batch = False

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> "SAM2ImagePredictor":
        """Load a published model by registry name or Hub id (``facebook/sam2.1-hiera-tiny``), as
        the reference's ``from_pretrained`` does: the checkpoint from the Hub (cached on disk), the
        network built from its config, through the one cache of loaded models (``sam2_web.loading``:
        the network stays in memory for the next call; each call gets its own predictor).

        ``kwargs``: predictor options (``mask_threshold``, ``max_hole_area``, ``max_sprinkle_area``,
        ``precision``) and ``device``, ``checkpoint``, ``overrides``, ``revision``, ``cache_dir``,
        ``progress`` as :func:`sam2_web.models.load_predictor` takes them.

        Raises:
            UnknownModelError, HubUnavailableError, CheckpointError, ConfigNotFoundError.
        """
        from sam2_web.loading import load_cached
        from sam2_web.registry import get_model

        loading = {k: kwargs.pop(k) for k in ("checkpoint", "device", "overrides", "revision", "cache_dir", "progress")
                   if k in kwargs}
        network = load_cached(get_model(model_id), "image", precision=kwargs.get("precision", "fp32"), **loading)
        return cls(network, **kwargs)

    # -------------------------------------------------------------- state

    @property
    def device(self) -> torch.device:
        """Where the model (and so the predictor's tensors) live."""
        return self.model.device

    @property
    def _is_image_set(self) -> bool:
        return self._features is not None

    @property
    def _orig_hw(self) -> Optional[List[Tuple[int, int]]]:
        return None if self._features is None else self._features.orig_hw

    def reset_predictor(self) -> None:
        """Forget the current image(s)."""
        self._features = None
        self._is_batch = False

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.device, self.precision)

    # -------------------------------------------------------------- embedding

    @torch.no_grad()
    def set_image(self, image: Any) -> None:
        """Embed one picture: an (H, W, 3) uint8 RGB numpy array or a PIL image, any size.

        Raises:
            PromptError: not an image, wrong shape/dtype, or empty.
        """
        array = _as_rgb_array(image)
        self.reset_predictor()
        self._features = self._embed([array])

    @torch.no_grad()
    def set_image_batch(self, image_list: Sequence[Any]) -> None:
        """Embed several pictures (sizes may differ) for :meth:`predict_batch`.

        Raises:
            PromptError: not a non-empty list of images, or a bad image (message says which).
        """
        if not isinstance(image_list, (list, tuple)) or len(image_list) == 0:
            raise PromptError("image_list must be a non-empty list of HxWx3 uint8 RGB arrays")
        arrays = [_as_rgb_array(im, f"image_list[{i}]") for i, im in enumerate(image_list)]
        self.reset_predictor()
        self._features = self._embed(arrays)
        self._is_batch = True

    def _embed(self, arrays: List[np.ndarray]) -> ImageEmbedding:
        model = self.model
        batch = T.preprocess_batch(arrays, model.image_size, self.device)
        with self._autocast():
            backbone_out = model.forward_image(batch)
        levels = model.num_feature_levels
        maps = list(backbone_out["backbone_fpn"][-levels:])
        if model.directly_add_no_mem_embed:
            # SAM 2 saw this token added to every memory-less frame in training.
            maps[-1] = maps[-1] + model.no_mem_embed.view(1, -1, 1, 1)
        return ImageEmbedding(
            image_embed=maps[-1],
            high_res_feats=maps[:-1] if levels > 1 else None,
            orig_hw=[(int(a.shape[0]), int(a.shape[1])) for a in arrays],
        )

    def get_image_embedding(self) -> torch.Tensor:
        """The (N, C, h, w) image embedding of the current image(s).

        Raises:
            PromptError: no image set.
        """
        self._require_image("get_image_embedding")
        return self._features.image_embed

    def _require_image(self, caller: str) -> None:
        if self._features is None:
            raise PromptError(f"no image is set: call set_image(image) before {caller}()")

    # -------------------------------------------------------------- prediction

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks on the current image.

        Args:
            point_coords: (N, 2) (x, y) points, or (B, N, 2) for B objects.
            point_labels: (N,) or (B, N); 1 = object, 0 = background.
            box: (4,) x0, y0, x1, y1, or (B, 4) for B objects.
            mask_input: (1, 256, 256) or (B, 1, 256, 256) low-res logits from an earlier call.
            multimask_output: return three candidate masks (best for a single click).
            return_logits: return mask logits instead of booleans.
            normalize_coords: coordinates are pixels of the original picture (True) or already
                in [0, 1] relative to its width and height (False), as in the reference.
        Returns:
            ``(masks, scores, low_res_logits)`` as numpy: (C, H, W) [or (B, C, H, W)] masks at the
            picture's resolution, (C,) [or (B, C)] predicted IoU, and (C, 256, 256) logits.
        Raises:
            PromptError: no image set, or malformed/empty prompts.
        """
        self._require_image("predict")
        prompts = self._prep_prompts(point_coords, point_labels, box, mask_input, normalize_coords)
        masks, ious, low_res = self._predict(*prompts, multimask_output=multimask_output, return_logits=return_logits)
        return _to_numpy(masks.squeeze(0)), _to_numpy(ious.squeeze(0)), _to_numpy(low_res.squeeze(0))

    def predict_batch(
        self,
        point_coords_batch: Optional[Sequence[Any]] = None,
        point_labels_batch: Optional[Sequence[Any]] = None,
        box_batch: Optional[Sequence[Any]] = None,
        mask_input_batch: Optional[Sequence[Any]] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]]:
        """:meth:`predict` for each image of :meth:`set_image_batch`; each ``*_batch`` argument is
        a list with one entry (or None) per image. Returns lists of masks, scores, low-res logits.

        Raises:
            PromptError: no image batch set, list lengths that do not match, or bad prompts.
        """
        self._require_image("predict_batch")
        if not self._is_batch:
            raise PromptError("predict_batch() needs set_image_batch(images); after set_image use predict()")
        n = len(self._features.orig_hw)
        for name, value in (
            ("point_coords_batch", point_coords_batch),
            ("point_labels_batch", point_labels_batch),
            ("box_batch", box_batch),
            ("mask_input_batch", mask_input_batch),
        ):
            if value is not None and len(value) != n:
                raise PromptError(f"{name} has {len(value)} entries but {n} images are set; give one per image")
        out_masks, out_ious, out_low = [], [], []
        for i in range(n):
            pick = lambda seq: None if seq is None else seq[i]  # noqa: E731
            prompts = self._prep_prompts(
                pick(point_coords_batch), pick(point_labels_batch), pick(box_batch), pick(mask_input_batch),
                normalize_coords, img_idx=i,
            )
            masks, ious, low_res = self._predict(
                *prompts, multimask_output=multimask_output, return_logits=return_logits, img_idx=i
            )
            out_masks.append(_to_numpy(masks.squeeze(0)))
            out_ious.append(_to_numpy(ious.squeeze(0)))
            out_low.append(_to_numpy(low_res.squeeze(0)))
        return out_masks, out_ious, out_low

    def _prep_prompts(
        self,
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
        normalize_coords: bool,
        img_idx: int = -1,
    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Check user prompts and map them to the model grid.

        Returns ``(coords (B, N, 2), labels (B, N), boxes (B, 2, 2), mask_input (B, 1, h, w))``,
        each None when absent.
        """
        if point_coords is None and point_labels is not None:
            raise PromptError("point_labels given without point_coords; pass the points too")
        if point_coords is None and box is None and mask_input is None:
            raise PromptError("no prompt given: pass point_coords + point_labels, a box, or a mask_input")
        orig_hw = self._features.orig_hw[img_idx]
        res = self.model.image_size
        dev = self.device
        coords = labels = boxes = mask = None
        sizes = []
        if point_coords is not None:
            c, lab = _check_points(point_coords, point_labels)
            coords = T.transform_coords(torch.as_tensor(c, dtype=torch.float32, device=dev), res, orig_hw, normalize_coords)
            labels = torch.as_tensor(lab, dtype=torch.int32, device=dev)
            sizes.append(coords.shape[0])
        if box is not None:
            b = _check_box(box)
            boxes = T.transform_boxes(torch.as_tensor(b, dtype=torch.float32, device=dev), res, orig_hw, normalize_coords)
            sizes.append(boxes.shape[0])
        if mask_input is not None:
            side = self.model.sam_prompt_encoder.mask_input_size[0]
            mask = torch.as_tensor(_check_mask_input(mask_input, side), dtype=torch.float32, device=dev)
            sizes.append(mask.shape[0])
        batch = _batch_of(*sizes)
        if coords is not None and coords.shape[0] != batch:
            coords, labels = coords.expand(batch, -1, -1), labels.expand(batch, -1)
        if boxes is not None and boxes.shape[0] != batch:
            boxes = boxes.expand(batch, -1, -1)
        return coords, labels, boxes, mask

    @torch.no_grad()
    def _predict(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = -1,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode prompts already on the model grid (torch tensors, no checks).

        Args:
            point_coords: (B, N, 2) in input pixels, or None; point_labels: (B, N) int
                (1/0, or -1 for padding).
            boxes: (B, 4) or (B, 2, 2) in input pixels, or None.
            mask_input: (B or 1, 1, 256, 256) logits, or None.
            multimask_output / return_logits: as in :meth:`predict`.
            img_idx: which image of a batch.
        Returns:
            ``(masks (B, C, H, W), ious (B, C), low_res_logits (B, C, 256, 256))``.
        Raises:
            PromptError: no image set.
        """
        self._require_image("_predict")
        low_res, ious = self._decode(point_coords, point_labels, boxes, mask_input, multimask_output, img_idx)
        masks = T.postprocess_masks(
            low_res, self._features.orig_hw[img_idx], self.mask_threshold, self.max_hole_area, self.max_sprinkle_area
        )
        low_res = torch.clamp(low_res.float(), -_LOW_RES_LOGIT_CLAMP, _LOW_RES_LOGIT_CLAMP)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, ious.float(), low_res

    @torch.no_grad()
    def _decode(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        img_idx: int = -1,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The mask decoder alone: prompts on the model grid (as :meth:`_predict` takes them) to
        ``(low_res_logits (B, C, 256, 256), ious (B, C))``, neither clamped, cleaned nor upscaled.

        The automatic mask generator calls this so that it can drop candidates before paying for
        their full-resolution masks.
        """
        model = self.model
        points = None if point_coords is None else (point_coords, point_labels)
        if boxes is not None:
            # A box is two extra points with labels 2 and 3, placed before the clicks.
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=corners.device).repeat(corners.size(0), 1)
            if points is None:
                points = (corners, corner_labels)
            else:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1].int()], dim=1))

        feats = self._features
        image_embed = feats.image_embed[img_idx].unsqueeze(0)
        high_res = None if feats.high_res_feats is None else [f[img_idx].unsqueeze(0) for f in feats.high_res_feats]
        with self._autocast():
            sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
            low_res, ious, _, _ = model.sam_mask_decoder(
                image_embeddings=image_embed,
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                # One image, several objects: the decoder repeats the image per prompt row.
                repeat_image=sparse.shape[0] > 1,
                high_res_features=high_res,
            )
        return low_res, ious

def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # float32 even for thresholded masks (0.0/1.0), as the reference returns them.
    return t.detach().float().cpu().numpy()
