"""Pre- and post-processing around the SAM 2 image predictor.

* :func:`preprocess_image` turns an RGB uint8 picture of any size into the square, normalised
  tensor the image encoder takes. The reference does this with torchvision's ``Resize`` (bilinear,
  antialiased, on a float tensor) and ``Normalize``; the same arithmetic here is plain
  ``F.interpolate(..., antialias=True)``, which matches it bit for bit, so we need no torchvision.
* :func:`transform_coords` / :func:`transform_boxes` map prompts from the original picture's pixel
  grid (or from [0, 1] coordinates) to the model's ``image_size`` grid.
* :func:`postprocess_masks` brings low-resolution mask logits back to the picture's size, after
  optionally filling small holes and removing small specks (:func:`fill_holes_and_sprinkles`).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.components import small_components

# ImageNet statistics the SAM 2 image encoder was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """Convert an (H, W, 3) uint8 RGB array into a (3, H, W) float tensor in [0, 1].

    The caller validates shape and dtype (see ``SAM2ImagePredictor.set_image``).
    """
    if not (image.flags.writeable and image.flags.c_contiguous):
        image = np.array(image, order="C")  # e.g. a read-only view of a PIL image
    chw = torch.from_numpy(image).permute(2, 0, 1)
    return chw.float().div(255.0)


def preprocess_image(image: np.ndarray, resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Resize and normalise one picture for the image encoder.

    Args:
        image: (H, W, 3) uint8 RGB array, any H and W.
        resolution: side of the square model input (the model's ``image_size``).
        device: where the result lives; the resize runs there too.
    Returns:
        (3, resolution, resolution) float32 tensor, ImageNet-normalised.
    """
    x = image_to_tensor(image).to(device)
    # Antialiased bilinear, not plain bilinear: this is what torchvision's Resize does on tensors
    # and the image encoder's weights were trained on pictures prepared that way.
    x = F.interpolate(
        x[None], size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
    )[0]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def preprocess_batch(images: Sequence[np.ndarray], resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`preprocess_image` for several pictures (sizes may differ); returns (B, 3, R, R)."""
    return torch.stack([preprocess_image(im, resolution, device) for im in images], dim=0)


def transform_coords(
    coords: torch.Tensor, resolution: int, orig_hw: Tuple[int, int] | None = None, normalize: bool = True
) -> torch.Tensor:
    """Map (x, y) points to the model's input grid.

    Args:
        coords: float tensor whose last dim is 2, (x, y).
        resolution: the model's ``image_size``.
        orig_hw: (height, width) of the original picture; needed when ``normalize`` is True.
        normalize: True when ``coords`` are pixels of the original picture; False when they are
            already in [0, 1] (relative to width and height).
    Returns:
        A new tensor of the same shape, in pixels of the ``resolution`` x ``resolution`` input.
    Raises:
        ValueError: ``normalize`` is True and ``orig_hw`` is missing.
    """
    coords = coords.clone()
    if normalize:
        if orig_hw is None:
            raise ValueError("orig_hw is required to normalise pixel coordinates")
        h, w = orig_hw
        coords[..., 0] = coords[..., 0] / w
        coords[..., 1] = coords[..., 1] / h
    return coords * resolution


def transform_boxes(
    boxes: torch.Tensor, resolution: int, orig_hw: Tuple[int, int] | None = None, normalize: bool = True
) -> torch.Tensor:
    """Map (x0, y0, x1, y1) boxes, shape (..., 4), to corner pairs of shape (B, 2, 2) on the input grid.

    The two corners are what the prompt encoder embeds (with labels 2 and 3).
    """
    return transform_coords(boxes.reshape(-1, 2, 2), resolution, orig_hw, normalize)


def fill_holes_and_sprinkles(
    masks: torch.Tensor,
    threshold: float,
    max_hole_area: float,
    max_sprinkle_area: float,
    *,
    score_offset: float = 10.0,
    sprinkles_after_holes: bool = False,
) -> torch.Tensor:
    """Fill background islands up to ``max_hole_area`` pixels and drop foreground specks up to
    ``max_sprinkle_area`` pixels, on (B, M, H, W) mask logits (any device).

    Components are 8-connected. A hole (pixels ``<= threshold``) gets logit
    ``threshold + score_offset``, a speck (pixels ``> threshold``) ``threshold - score_offset``.
    The image predictor uses the reference's image settings (offset 10, specks looked up on the
    input logits); the video engine the reference's video setting (offset 0.1, so a filled hole
    stays barely foreground) and looks specks up after holes are filled
    (``sprinkles_after_holes``). With both areas 0 ``masks`` is returned unchanged. It runs on
    ``masks``' device without a host sync (see :func:`~sam2_web.components.small_components`).

    Returns:
        A tensor like ``masks`` (same device and dtype).
    """
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return masks
    original = masks
    if max_hole_area > 0:
        is_hole = small_components(masks.flatten(0, 1).unsqueeze(1) <= threshold, max_hole_area)
        masks = torch.where(is_hole.reshape_as(masks), torch.full_like(masks, threshold + score_offset), masks)
    if max_sprinkle_area > 0:
        looked_up = masks if sprinkles_after_holes else original
        is_speck = small_components(looked_up.flatten(0, 1).unsqueeze(1) > threshold, max_sprinkle_area)
        masks = torch.where(is_speck.reshape_as(masks), torch.full_like(masks, threshold - score_offset), masks)
    return masks


def postprocess_masks(
    masks: torch.Tensor,
    orig_hw: Tuple[int, int],
    threshold: float = 0.0,
    max_hole_area: float = 0.0,
    max_sprinkle_area: float = 0.0,
) -> torch.Tensor:
    """Upscale (B, M, h, w) low-resolution mask logits to the original picture size.

    Args:
        masks: mask logits (any float dtype).
        orig_hw: (height, width) of the original picture.
        threshold: logit above which a pixel is foreground (used by hole/speck clean-up only).
        max_hole_area / max_sprinkle_area: clean-up sizes in low-res pixels; 0 disables.
    Returns:
        (B, M, height, width) float32 logits.
    """
    masks = fill_holes_and_sprinkles(masks.float(), threshold, max_hole_area, max_sprinkle_area)
    return F.interpolate(masks, size=tuple(orig_hw), mode="bilinear", align_corners=False)
