"""Image encoder = Hiera trunk + FPN neck; produces the features SAM 2's heads consume."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn


class ImageEncoder(nn.Module):
    """Runs the trunk, then the neck, and packs the result for the heads."""

    def __init__(self, trunk: nn.Module, neck: nn.Module, scalp: int = 0) -> None:
        """
        Args:
            trunk: backbone returning per-stage maps (exposes ``channel_list``).
            neck: FPN over those maps (exposes ``backbone_channel_list``).
            scalp: number of lowest-resolution levels to drop from the output.
        Raises:
            ValueError: if the trunk's and the neck's channel lists differ (mismatched config).
        """
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"The image encoder config is inconsistent: trunk channels {trunk.channel_list} "
                f"!= neck backbone_channel_list {neck.backbone_channel_list}."
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, sample: torch.Tensor) -> Dict[str, Union[torch.Tensor, List[torch.Tensor]]]:
        """Encode a normalised (B, 3, H, W) batch.

        Returns:
            ``{"vision_features": lowest-resolution kept map, "vision_pos_enc": [pos per level],
            "backbone_fpn": [map per level]}``, levels highest resolution first. (The dict is
            the interface the reference's SAM2Base and predictors expect.)
        """
        features, pos = self.neck(self.trunk(sample))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}


class FpnNeck(nn.Module):
    """Feature pyramid without output convs: 1x1 lateral projections plus a top-down pathway.

    Only the levels in ``fpn_top_down_levels`` receive the upsampled coarser features; the
    others are plain lateral projections.
    """

    def __init__(
        self,
        position_encoding: nn.Module,
        d_model: int,
        backbone_channel_list: Sequence[int],
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        fpn_interp_model: str = "bilinear",
        fuse_type: str = "sum",
        fpn_top_down_levels: Optional[Sequence[int]] = None,
    ) -> None:
        """
        Args:
            position_encoding: module mapping a (B, C, H, W) map to its positional encoding.
            d_model: output channels of every level.
            backbone_channel_list: trunk channels, lowest resolution first.
            kernel_size, stride, padding: lateral convolution geometry.
            fpn_interp_model: ``F.interpolate`` mode for the top-down upsampling.
            fuse_type: ``"sum"`` or ``"avg"`` of lateral and top-down features.
            fpn_top_down_levels: levels (0 = highest resolution) that get top-down features;
                None means all.
        Raises:
            ValueError: unknown ``fuse_type``.
        """
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}.")
        self.position_encoding = position_encoding
        self.backbone_channel_list = backbone_channel_list
        self.d_model = d_model
        self.convs = nn.ModuleList()
        for channels in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module(
                "conv",
                nn.Conv2d(
                    channels, d_model, kernel_size=kernel_size, stride=stride, padding=padding
                ),
            )
            self.convs.append(lateral)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        if fpn_top_down_levels is None:
            fpn_top_down_levels = range(len(self.convs))
        self.fpn_top_down_levels = list(fpn_top_down_levels)

    def _lateral(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Lateral projection of one level; ``index`` counts from the lowest resolution."""
        conv: nn.Conv2d = self.convs[index].conv
        if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):
            # A 1x1 conv is a per-pixel matmul. The trunk's maps are channels-last in memory,
            # where a matmul needs no copy and is several times faster than the conv kernel.
            weight = conv.weight.view(conv.out_channels, conv.in_channels)
            return F.linear(x.permute(0, 2, 3, 1), weight, conv.bias).permute(0, 3, 1, 2)
        return conv(x)

    def forward(self, xs: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Trunk maps (highest resolution first) -> (features, positional encodings) per level."""
        if len(xs) != len(self.convs):
            raise ValueError(f"FpnNeck expects {len(self.convs)} maps, got {len(xs)}.")
        n = len(xs)
        features: List[torch.Tensor] = [None] * n  # type: ignore[list-item]
        pos: List[torch.Tensor] = [None] * n  # type: ignore[list-item]
        coarser = None
        for level in reversed(range(n)):  # coarse to fine
            lateral = self._lateral(n - 1 - level, xs[level])
            if coarser is not None and level in self.fpn_top_down_levels:
                upsampled = F.interpolate(
                    coarser.to(dtype=torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                coarser = lateral + upsampled
                if self.fuse_type == "avg":
                    coarser = coarser / 2
            else:
                coarser = lateral
            features[level] = coarser
            pos[level] = self.position_encoding(coarser).to(coarser.dtype)
        return features, pos
