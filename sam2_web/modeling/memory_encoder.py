"""Memory encoder: fuses a frame's image features with its predicted mask into a memory.

The memory (a narrower feature map plus its position encoding) is what later frames attend to.
"""

from __future__ import annotations

import math
from typing import List, Optional, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_web.modeling.common import DropPath, LayerNorm2d, get_clones


class MaskDownSampler(nn.Module):
    """Shrinks a mask by ``total_stride`` in conv steps of ``stride``.

    Each step multiplies the channels by ``stride**2`` (no information is squeezed out spatially)
    and is followed by a per-pixel LayerNorm and the activation; a final 1x1 conv projects to
    ``embed_dim``.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation: type = nn.GELU,
    ) -> None:
        """
        Args:
            embed_dim: output channels (the image-feature width it is added to).
            kernel_size, stride, padding: of each downsampling conv.
            total_stride: overall downsampling; must be a power of ``stride``.
            activation: activation class after each step.
        Raises:
            ValueError: if ``total_stride`` is not a power of ``stride`` (a broken config).
        """
        super().__init__()
        num_steps = int(math.log2(total_stride) // math.log2(stride))
        if stride**num_steps != total_stride:
            raise ValueError(
                f"MaskDownSampler total_stride={total_stride} is not a power of "
                f"stride={stride}; fix the model config."
            )
        # Flat Sequential: the checkpoint keys are encoder.{0, 1, 3, 4, ...}.
        self.encoder = nn.Sequential()
        channels = 1
        for _ in range(num_steps):
            out_channels = channels * stride**2
            self.encoder.append(
                nn.Conv2d(
                    channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding
                )
            )
            self.encoder.append(LayerNorm2d(out_channels))
            self.encoder.append(activation())
            channels = out_channels
        self.encoder.append(nn.Conv2d(channels, embed_dim, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        """Downsample (B, 1, H, W) masks to (B, embed_dim, H / total_stride, W / total_stride)."""
        return self.encoder(x)


class CXBlock(nn.Module):
    """A ConvNeXt block: depthwise conv, LayerNorm, inverted-bottleneck MLP, scaled residual."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        """
        Args:
            dim: channels in and out.
            kernel_size, padding: of the spatial conv.
            drop_path: stochastic-depth rate of the residual branch (training only).
            layer_scale_init_value: initial per-channel scale of the branch; <= 0 disables it.
            use_dwconv: depthwise (per-channel) spatial conv rather than a full conv.
        """
        super().__init__()
        self.dwconv = nn.Conv2d(
            dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)
        # 1x1 convs written as Linear layers on channels-last tensors (checkpoint keys too).
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma: Optional[nn.Parameter] = (
            nn.Parameter(layer_scale_init_value * torch.ones(dim))
            if layer_scale_init_value > 0
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to (B, dim, H, W); same shape out."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        # Channels-last makes the channel LayerNorm a single fused op (same maths as
        # LayerNorm2d, whose parameters it uses).
        y = F.layer_norm(y, (y.shape[-1],), self.norm.weight, self.norm.bias, self.norm.eps)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class Fuser(nn.Module):
    """An optional 1x1 input projection followed by a stack of copies of ``layer``."""

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        dim: Optional[int] = None,
        input_projection: bool = False,
    ) -> None:
        """
        Args:
            layer: the block to repeat (deep-copied ``num_layers`` times).
            num_layers: how many copies.
            dim: channels, needed only with ``input_projection``.
            input_projection: start with a 1x1 conv.
        Raises:
            ValueError: if ``input_projection`` is set without ``dim``.
        """
        super().__init__()
        self.proj: nn.Module = nn.Identity()
        self.layers = get_clones(layer, num_layers)
        if input_projection:
            if dim is None:
                raise ValueError("Fuser input_projection=True needs dim; fix the model config.")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply projection and blocks to (B, C, H, W)."""
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoderOutput(TypedDict):
    """A frame's memory: features (B, out_dim, H, W) and a one-element list of their PE."""

    vision_features: Tensor
    vision_pos_enc: List[Tensor]


class MemoryEncoder(nn.Module):
    """Encodes (image features, mask) of a frame into a memory for later frames."""

    def __init__(
        self,
        out_dim: int,
        mask_downsampler: nn.Module,
        fuser: nn.Module,
        position_encoding: nn.Module,
        in_dim: int = 256,
    ) -> None:
        """
        Args:
            out_dim: memory channels; a 1x1 ``out_proj`` is added when it differs from
                ``in_dim`` (the model reads the memory width from ``out_proj.weight``).
            mask_downsampler: brings the full-resolution mask to the feature resolution.
            fuser: mixes the mask into the features.
            position_encoding: gives the memory's position encoding.
            in_dim: channels of the image features.
        """
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj: nn.Module = nn.Identity()
        if out_dim != in_dim:
            self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(
        self, pix_feat: Tensor, masks: Tensor, skip_mask_sigmoid: bool = False
    ) -> MemoryEncoderOutput:
        """Build the memory of a frame.

        Args:
            pix_feat: (B, in_dim, H, W) image features (moved to the masks' device if needed).
            masks: (B, 1, 16H, 16W) mask logits, or probabilities with ``skip_mask_sigmoid``.
            skip_mask_sigmoid: the masks are already in [0, 1].
        Returns:
            ``{"vision_features": (B, out_dim, H, W), "vision_pos_enc": [(B, out_dim, H, W)]}``.
        """
        if not skip_mask_sigmoid:
            # Soft masks look more like the binary ground truth masks seen in training.
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        # Image features may be kept on the CPU (offloading) while masks are on the GPU.
        pix_feat = pix_feat.to(masks.device, non_blocking=True)

        x = self.pix_feat_proj(pix_feat) + masks
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}
