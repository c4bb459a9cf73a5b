"""A plain ViT trunk and its single-level neck: EfficientTAM's image encoder.

Unlike Hiera, a plain ViT keeps one token grid (stride 16) through all blocks: most blocks attend
inside windows, every few a block attends globally, and the output of the last global block is
the only feature map. The neck projects it to the heads' width with a 1x1 and a 3x3 convolution
(each optionally followed by a channel LayerNorm); there are no high-resolution levels, so these
models run the mask decoder without them (``use_high_res_features_in_sam: false``).

A ViT block is a Hiera block without pooling or width change, so the blocks are
:class:`~sam2_web.modeling.backbones.hieradet.MultiScaleBlock` (same parameter names, and its
copy-avoiding CPU paths). Parameter names equal EfficientTAM's checkpoint keys.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sam2_web.errors import CheckpointError
from sam2_web.modeling.backbones.hieradet import MultiScaleBlock
from sam2_web.modeling.backbones.utils import PatchEmbed
from sam2_web.modeling.common import LayerNorm2d


class ViT(nn.Module):
    """Plain ViT (ViTDet layout): patch embedding, absolute position embedding, windowed and
    global blocks; returns the last global block's output as one channels-first map."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        window_size: int = 14,
        window_block_indexes: Sequence[int] = (0, 1, 3, 4, 6, 7, 9, 10),
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        weights_path: Optional[str] = None,
        return_interm_layers: bool = False,
        init_values: Optional[float] = None,
    ) -> None:
        """
        Args:
            img_size: accepted for config compatibility; the trunk takes any multiple of
                ``patch_size``.
            patch_size: side of the square patches (the feature stride).
            in_chans: image channels.
            embed_dim: token width.
            depth: number of blocks.
            num_heads: attention heads of every block.
            mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
            qkv_bias: the qkv projection has a bias (the only layout supported).
            drop_path_rate: stochastic depth of the last block (linear ramp from 0).
            use_abs_pos: add the learnt absolute position embedding.
            use_rel_pos: relative position biases; unsupported (no published model uses them).
            window_size: attention window side of the windowed blocks.
            window_block_indexes: blocks that attend inside windows; the others attend globally.
            pretrain_img_size: image size the position embedding was learnt at; it is resized
                bicubically to the actual token grid.
            pretrain_use_cls_token: the position embedding has a leading class-token entry
                (unused, but part of the checkpoint).
            weights_path: unsupported (weights come from the checkpoint); must be None.
            return_interm_layers: return every global block's output; unsupported (the neck
                takes one map).
            init_values: LayerScale initial values; unsupported (no published model uses them).
        Raises:
            ValueError: an unsupported option, or no global-attention block.
            CheckpointError: if ``weights_path`` is set; weights are loaded by the builder.
        """
        super().__init__()
        unsupported = {
            "qkv_bias=False": not qkv_bias,
            "use_rel_pos=True": use_rel_pos,
            "return_interm_layers=True": return_interm_layers,
            "init_values (LayerScale)": init_values is not None,
        }
        chosen = [name for name, on in unsupported.items() if on]
        if chosen:
            raise ValueError(f"ViT does not support {', '.join(chosen)}; fix the model config.")
        if weights_path is not None:
            raise CheckpointError(
                "ViT(weights_path=...) is not supported; pass the checkpoint to "
                "build_sam2(config, ckpt_path=...) instead."
            )
        windowed = set(window_block_indexes)
        global_blocks = [i for i in range(depth) if i not in windowed]
        if not global_blocks:
            raise ValueError("ViT needs at least one global-attention block (not in window_block_indexes).")
        self.patch_size = patch_size
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            padding=(0, 0),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            side = pretrain_img_size // patch_size
            self.pos_embed = nn.Parameter(
                torch.zeros(1, side * side + int(pretrain_use_cls_token), embed_dim)
            )
        drop_rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            MultiScaleBlock(
                dim=embed_dim,
                dim_out=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                drop_path=drop_rates[i],
                window_size=window_size if i in windowed else 0,
            )
            for i in range(depth)
        )
        # The features are the last global block's output; blocks after it (none in the
        # published configs) would not change them, so they are not run.
        self.out_block = global_blocks[-1]
        self.channel_list = [embed_dim]
        self._pos_cache: Dict[tuple, torch.Tensor] = {}

    def _get_pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        """The (1, h, w, C) position embedding for an (h, w) token grid."""
        pos = self.pos_embed
        # A pure function of the parameter and the size: cached for inference, keyed on the
        # parameter's version counter so loading new weights invalidates it (parameters made
        # under inference_mode have no counter: no cache then).
        # (Skipped while torch.compile traces: the counters are not traceable.)
        key = None
        if not torch.compiler.is_compiling() and not torch.is_grad_enabled() and not torch.is_inference(pos):
            key = (hw, pos.device, pos.dtype, pos.data_ptr(), pos._version)
            cached = self._pos_cache.get(key)
            if cached is not None:
                return cached
        table = pos[:, 1:] if self.pretrain_use_cls_token else pos
        side = int(round(table.shape[1] ** 0.5))
        if side * side != table.shape[1]:
            raise ValueError(f"pos_embed holds {table.shape[1]} grid positions, not a square grid.")
        grid = table.reshape(1, side, side, -1)
        if (side, side) != tuple(hw):
            grid = F.interpolate(
                grid.permute(0, 3, 1, 2), size=tuple(hw), mode="bicubic", align_corners=False
            ).permute(0, 2, 3, 1)
        grid = grid.contiguous()
        if key is not None:
            self._pos_cache.clear()  # keep only the latest size/weights
            self._pos_cache[key] = grid
        return grid

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) image -> ``[(B, embed_dim, H/16, W/16)]`` (channels-last in memory).

        Raises:
            ValueError: if H or W is not a multiple of the patch size.
        """
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"Image size must be a multiple of {self.patch_size} pixels for this ViT trunk "
                f"(got {h}x{w}); resize or pad the input."
            )
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            # Embedding first: the sum then takes its contiguous layout (see Hiera.forward).
            x = self._get_pos_embed(x.shape[1:3]) + x
        for block in self.blocks[: self.out_block + 1]:
            x = block(x)
        return [x.permute(0, 3, 1, 2)]


class ViTDetNeck(nn.Module):
    """Projects the ViT's single map to ``d_model`` channels: 1x1 conv, [LN], 3x3 conv, [LN]."""

    def __init__(
        self,
        position_encoding: nn.Module,
        d_model: int,
        backbone_channel_list: Sequence[int],
        neck_norm: Optional[str] = None,
    ) -> None:
        """
        Args:
            position_encoding: module mapping a (B, C, H, W) map to its positional encoding.
            d_model: output channels.
            backbone_channel_list: the trunk's channels; exactly one map.
            neck_norm: ``"LN"`` puts a channel LayerNorm after each conv (and drops the conv
                biases); None uses biased convs without norms.
        Raises:
            ValueError: more than one trunk map, or an unknown ``neck_norm``.
        """
        super().__init__()
        if len(backbone_channel_list) != 1:
            raise ValueError(
                f"ViTDetNeck takes one trunk map, got backbone_channel_list={list(backbone_channel_list)}."
            )
        if neck_norm not in (None, "LN"):
            raise ValueError(f"neck_norm must be 'LN' or null, got {neck_norm!r}.")
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        use_norm = neck_norm is not None
        layers = nn.Sequential()
        layers.add_module("conv_1x1", nn.Conv2d(backbone_channel_list[0], d_model, 1, bias=not use_norm))
        if use_norm:
            layers.add_module("norm_0", LayerNorm2d(d_model))
        layers.add_module("conv_3x3", nn.Conv2d(d_model, d_model, 3, padding=1, bias=not use_norm))
        if use_norm:
            layers.add_module("norm_1", LayerNorm2d(d_model))
        self.convs = nn.ModuleList([layers])

    def forward(self, xs: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """``[trunk map]`` -> ``([features], [positional encoding])``, one level each."""
        if len(xs) != 1:
            raise ValueError(f"ViTDetNeck expects one map, got {len(xs)}.")
        features = self.convs[0](xs[0])
        return [features], [self.position_encoding(features).to(features.dtype)]
