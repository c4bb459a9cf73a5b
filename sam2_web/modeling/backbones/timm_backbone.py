"""An image-encoder trunk from timm (pytorch-image-models), e.g. EdgeTAM's RepViT-M1.

timm is the library RepViT and its relatives are maintained in; we build the network there
without pretrained weights (the model's own checkpoint carries the trunk's weights, under
``image_encoder.trunk.body.``) and expose it the way :class:`~sam2_web.modeling.backbones.image_encoder.ImageEncoder`
expects a trunk: a list of maps, highest resolution first, and ``channel_list``.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


def _stage_index(feature: str) -> int:
    """``"layer2"`` -> 2: the config names the trunk's output stages ``layer0`` ... ``layerN``."""
    prefix = "layer"
    if not feature.startswith(prefix) or not feature[len(prefix):].isdigit():
        raise ValueError(f"trunk features are named layer0, layer1, ...; got {feature!r}")
    return int(feature[len(prefix):])


class TimmBackbone(nn.Module):
    """A timm model in ``features_only`` mode: the feature maps of the chosen stages."""

    def __init__(self, name: str, features: Sequence[str]) -> None:
        """
        Args:
            name: a timm model name, e.g. ``repvit_m1.dist_in1k``. Only the architecture is taken
                from it; nothing is downloaded.
            features: the stages to output, ``layer0`` (highest resolution) upwards.
        Raises:
            ValueError: a feature name is not ``layerN``.
            RuntimeError: timm does not know ``name`` (the message names the timm version).
        """
        super().__init__()
        import timm  # imported here: only models with a timm trunk need it

        out_indices = tuple(_stage_index(f) for f in features)
        try:
            body = timm.create_model(
                name, pretrained=False, in_chans=3, features_only=True, out_indices=out_indices
            )
        except RuntimeError as error:
            raise RuntimeError(
                f"timm {timm.__version__} cannot build {name!r} ({error}); upgrade timm"
            ) from error
        self.body = body
        # Lowest resolution first, as FpnNeck's backbone_channel_list is written.
        self.channel_list = list(body.feature_info.channels())[::-1]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) normalised images -> the chosen stages' maps, highest resolution first."""
        return list(self.body(x))
