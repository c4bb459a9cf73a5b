"""The optional learned method: ViTMatte (Yao et al. 2024) through ``transformers``.

Weights come from the Hub (``hustvl/vitmatte-small-composition-1k`` by default, Apache-2.0) through
``sam2_web.hub`` (its cache, offline mode and clear errors), or from a local folder holding
``config.json`` and ``model.safetensors``. ViTMatte reads the frame and a trimap (0 background,
128/255 unknown, 1 object) and predicts alpha; we give it the crop around the object's band.

Models whose licence forbids commercial use (MatAnyone's S-Lab licence) are left out on purpose.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.errors import CheckpointError, HubUnavailableError, MattingUnavailableError

WEIGHT_FILES = ("config.json", "model.safetensors")
_SIZE_MULTIPLE = 32  # the ViT backbone's patches and the decoder's strides need sizes divisible by this
_cache: dict[tuple[str, str | None, str], Any] = {}
_lock = threading.Lock()


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MattingUnavailableError(
            "the 'vitmatte' soft-edge method needs the 'transformers' package: pip install 'sam2_web[vitmatte]'; "
            "or use the default method 'guided', which needs no weights"
        ) from None
    return transformers


def weights_folder(model: str, revision: str | None = None) -> Path:
    """A local folder with ViTMatte's ``config.json`` and ``model.safetensors``: ``model`` itself if it is
    such a folder, else the Hub repo ``model`` downloaded into (or found in) the Hub cache.

    Raises:
        MattingUnavailableError: the weights are neither local, cached nor downloadable (the
            message carries the Hub's reason and what to do).
    """
    local = Path(model).expanduser()
    if local.is_dir():
        missing = [f for f in WEIGHT_FILES if not (local / f).is_file()]
        if missing:
            raise MattingUnavailableError(f"{local} has no {', '.join(missing)}; give a folder saved by "
                                          "VitMatteForImageMatting.save_pretrained or a Hub repo id")
        return local
    from sam2_web.hub import fetch_checkpoint
    from sam2_web.registry import ModelSpec

    paths = []
    for filename in WEIGHT_FILES:
        spec = ModelSpec(name=model, label="ViTMatte", repo_id=model, filename=filename, config="", params_m=0.0)
        try:
            paths.append(fetch_checkpoint(spec, revision=revision, progress=False))
        except (HubUnavailableError, CheckpointError) as exc:
            raise MattingUnavailableError(
                f"the ViTMatte weights {model} are not available ({exc}); use the default soft-edge method "
                "'guided' (no weights), or give vitmatte_model= a local folder with config.json and "
                "model.safetensors"
            ) from exc
    # The Hub cache keeps a revision's files side by side in one snapshot folder.
    return paths[0].parent


def load_vitmatte(model: str, revision: str | None = None, device: str | torch.device = "cpu") -> Any:
    """The ``VitMatteForImageMatting`` for ``model`` on ``device``, loaded once per process.

    Raises:
        MattingUnavailableError: no ``transformers``, or the weights cannot be had.
    """
    key = (model, revision, str(device))
    with _lock:
        if key not in _cache:
            transformers = _transformers()
            folder = weights_folder(model, revision)
            net = transformers.VitMatteForImageMatting.from_pretrained(str(folder))
            _cache[key] = net.to(device).eval()
        return _cache[key]


def vitmatte_alpha(crop_image: np.ndarray, band, options) -> np.ndarray:
    """ViTMatte's alpha on ``crop_image``, the (h, w, 3) float32 crop (0..1) of ``band``.

    The input is what ``VitMatteImageProcessor`` makes: colours normalised to -1..1 with the trimap
    as a fourth channel, padded at the bottom/right to a multiple of 32.
    """
    device = torch.device(options.device) if options.device else torch.device("cpu")
    net = load_vitmatte(options.vitmatte_model, options.revision, device)
    crop = torch.from_numpy(np.ascontiguousarray(crop_image)).permute(2, 0, 1)
    # Trimaps are 8-bit images with 128 for unknown, read as value / 255, as ViTMatte was trained.
    trimap = torch.from_numpy(np.where(band.unknown, 128 / 255, band.known).astype(np.float32))[None]
    pixels = torch.cat([(crop - 0.5) / 0.5, trimap])[None].to(device)
    h, w = pixels.shape[-2:]
    pad_h, pad_w = (-h) % _SIZE_MULTIPLE, (-w) % _SIZE_MULTIPLE
    pixels = F.pad(pixels, (0, pad_w, 0, pad_h))
    with torch.inference_mode():
        alphas = net(pixel_values=pixels).alphas
    return alphas[0, 0, :h, :w].float().clamp(0.0, 1.0).cpu().numpy()
