"""``alpha_matte``: a tracked binary mask and its frame in, a soft alpha matte out.

The mask's edge is only as exact as the model's mask grid; a band around it (the trimap's
unknown region) is solved for alpha from the frame's colours, everything else keeps the mask's
value. Methods: ``guided`` (default: kornia's guided filter, no weights, CPU or GPU) and
``vitmatte`` (the learned ViTMatte, optional: ``transformers`` and its Hub weights).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np
import torch

from sam2_web.errors import MattingError
from sam2_web.matting.band import Band, auto_band_px, find_band
from sam2_web.matting.guided import EPS, guided_alpha

METHODS = ("guided", "vitmatte")
DEFAULT_VITMATTE = "hustvl/vitmatte-small-composition-1k"
SNAP = 0.05  # alphas this close to 0 or 1 become 0 or 1: flat areas stay exact in 8-bit outputs


@dataclass(frozen=True)
class MatteOptions:
    """How ``alpha_matte`` solves (every field is also a keyword of ``alpha_matte``).

    Attributes:
        method: ``guided`` (default, no weights) or ``vitmatte`` (needs ``transformers`` and weights).
        band_px: half-width of the unknown band in pixels; None picks it from the frame size, the
            mask grid (``mask_resolution``) and the object's size (see ``matting.band``).
        mask_resolution: cells across the long side of the grid the mask came from: the model's
            input size / 4 (256 for 1024-px models, 128 for 512-px ones).
        device: where to compute (``cpu``, ``cuda``, ...); None = the CPU.
        eps: the guided filter's regularisation.
        vitmatte_model: Hub repo id (or local folder) of the ViTMatte weights.
        revision: Hub revision of those weights (None = main).
    """

    method: str = "guided"
    band_px: Optional[float] = None
    mask_resolution: int = 256
    device: Optional[str] = None
    eps: float = EPS
    vitmatte_model: str = DEFAULT_VITMATTE
    revision: Optional[str] = None

    def validate(self) -> None:
        """Raise MattingError for a value no method can use."""
        if self.method not in METHODS:
            raise MattingError(f"unknown matting method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.band_px is not None and not (np.isfinite(self.band_px) and self.band_px >= 0):
            raise MattingError(f"band_px must be a number of pixels >= 0, got {self.band_px}")
        if int(self.mask_resolution) < 1:
            raise MattingError(f"mask_resolution must be >= 1, got {self.mask_resolution}")
        if not self.eps > 0:
            raise MattingError(f"eps must be > 0, got {self.eps}")

    @classmethod
    def of(cls, options: "MatteOptions | None" = None, **kwargs: Any) -> "MatteOptions":
        """Options from keywords (unknown ones raise MattingError naming the known ones), validated."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise MattingError(f"unknown matting option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        base = options or cls()
        out = cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, **kwargs})
        out.validate()
        return out


def check_image(image: Any) -> np.ndarray:
    """An (H, W, 3) RGB frame, checked: uint8 as given, or float32 in [0, 1] (see :func:`as_float`).

    Accepts uint8 (0..255) or float (0..1) arrays or CPU tensors, with 3 or 4 channels (alpha dropped).
    Only a view is taken where possible: the colours of the band's crop are all that is converted.

    Raises:
        MattingError: another shape, NaN or infinite values, floats outside 0..1.
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MattingError(f"the image must be (H, W, 3) RGB, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise MattingError(f"the image must be uint8 (0..255) or float (0..1), got {arr.dtype}")
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise MattingError("the image has NaN or infinite values; give uint8 RGB or floats in 0..1")
    if out.min(initial=0) < 0 or out.max(initial=0) > 1:
        raise MattingError("a float image must hold values in 0..1 (pass uint8 for 0..255)")
    return out


def as_float(image: np.ndarray) -> np.ndarray:
    """A checked image (or a crop of one) as float32 in [0, 1]."""
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32, copy=False)


def check_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W) bool mask of the frame's size: bool, 0/1, 0/255 (cut at 128) or floats (cut at 0.5).

    Raises:
        MattingError: a mask of another size than the image, or with NaN.
    """
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != tuple(shape):
        raise MattingError(
            f"the mask is {arr.shape} but the image is {tuple(shape)} (H, W); upsample the mask to the frame first"
        )
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise MattingError("the mask has NaN values")
        return arr > 0.5
    return arr > (127 if arr.dtype == np.uint8 and arr.max(initial=0) > 1 else 0)


def band_of(mask: np.ndarray, options: MatteOptions) -> Band | None:
    """The unknown band ``alpha_matte`` solves for ``mask`` (None when there is no edge to solve)."""
    area = int(mask.sum())
    if options.band_px is None:
        width = auto_band_px(mask.shape, area, options.mask_resolution)
    else:
        # Set by hand it is honoured up to half the object's equivalent diameter: a wider band
        # would only cover it with background.
        width = min(int(round(options.band_px)), int(0.5 * np.sqrt(area)))
    # The filter's window is as wide as the band, so the crop needs that much beyond it.
    return find_band(mask, width, margin=width)


def _solve(image: np.ndarray, mask: np.ndarray, band: Band, options: MatteOptions) -> np.ndarray:
    crop_img = as_float(image[band.rows, band.cols])
    crop_mask = mask[band.rows, band.cols]
    if options.method == "vitmatte":
        from sam2_web.matting.vitmatte import vitmatte_alpha

        return vitmatte_alpha(crop_img, band, options)
    device = torch.device(options.device) if options.device else torch.device("cpu")
    img_t = torch.from_numpy(np.ascontiguousarray(crop_img)).to(device).permute(2, 0, 1)
    mask_t = torch.from_numpy(crop_mask.astype(np.float32)).to(device)
    return guided_alpha(img_t, mask_t, band, eps=options.eps).cpu().numpy()


def alpha_matte(image: Any, mask: Any, options: MatteOptions | None = None, **kwargs: Any) -> np.ndarray:
    """Soft alpha matte of a tracked object: solve its edge from the frame's colours.

    Args:
        image: (H, W, 3) RGB frame at full resolution, uint8 (or float in 0..1).
        mask: (H, W) mask of the object (bool, 0/1, 0/255 or float cut at 0.5).
        options: a ``MatteOptions``; keywords override its fields (``band_px=12``, ``method="vitmatte"``,
            ``mask_resolution=128``, ``device="cuda"`` ...).
    Returns:
        (H, W) float32 alpha in [0, 1]: the mask's value outside the band, the solved alpha inside.
        An empty or full mask, or an object too small to have an edge band, gives the mask as float.
    Raises:
        MattingError: an image or mask of the wrong shape, NaN in either, an unknown option.
        MattingUnavailableError: ``vitmatte`` without ``transformers`` or without its weights.
    """
    opts = MatteOptions.of(options, **kwargs)
    img = check_image(image)
    m = check_mask(mask, img.shape[:2])
    out = m.astype(np.float32)
    band = band_of(m, opts)
    if band is None:
        return out
    solved = _solve(img, m, band, opts)
    alpha = np.where(band.unknown, solved, band.known)
    alpha[alpha < SNAP] = 0.0
    alpha[alpha > 1.0 - SNAP] = 1.0
    out[band.rows, band.cols] = alpha
    return out
