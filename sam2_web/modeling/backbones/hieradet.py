"""Hiera: the hierarchical ViT trunk of the SAM 2 image encoder (https://arxiv.org/abs/2306.00989).

Four stages of transformer blocks; between stages the query tokens are max-pooled (halving the
grid) while channels and heads double. Most blocks attend inside windows, a few globally.
Parameter names equal the official checkpoint keys (``blocks.{i}.attn.qkv``, ``pos_embed``...).

Inference fast path (no autograd): the blocks avoid activation-sized copies where the maths
allows (pooling and window merging through strided views, in-place GELU, the residual folded
into the last matmul), because on CPU this network is largely memory-bound.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from sam2_web.errors import CheckpointError
from sam2_web.modeling.backbones.utils import (
    PatchEmbed,
    add_windows,
    max_pool_tokens,
    window_partition,
    window_unpartition,
)
from sam2_web.modeling.common import MLP, DropPath


# Chunk sizes of the inference paths. Smaller chunks keep the temporaries (qkv, attention,
# the 4x-wide MLP hidden) cache-resident and win on an idle CPU, but every op is an OpenMP
# parallel region, and on a busy machine each region can wait a scheduler slice for its
# threads: tiny chunks (2k tokens) were 2x slower there. These sizes were the best measured
# compromise (tiny model, 1024 px, 2 threads, idle and loaded).
_BAND_TOKENS = 32768  # tokens per band of windows
_MLP_HIDDEN_FLOATS = 6_291_456  # elements of one MLP hidden chunk (24 MB of float32)


def _pool_stride(pool: Optional[nn.Module]) -> Optional[Tuple[int, int]]:
    """The (sy, sx) of a max pool we can run as ``max_pool_tokens``, else None."""
    if not isinstance(pool, nn.MaxPool2d):
        return None
    kernel, stride = nn.modules.utils._pair(pool.kernel_size), nn.modules.utils._pair(pool.stride)
    padding, dilation = nn.modules.utils._pair(pool.padding), nn.modules.utils._pair(pool.dilation)
    if kernel != stride or padding != (0, 0) or dilation != (1, 1) or pool.ceil_mode:
        return None
    return stride


def _apply_pool(x: torch.Tensor, pool: Optional[nn.Module]) -> torch.Tensor:
    """Pool a (B, H, W, C) grid spatially with ``pool`` (an ``nn.Module`` on (B, C, H, W))."""
    if pool is None:
        return x
    stride = _pool_stride(pool)
    if stride is not None:
        return max_pool_tokens(x, stride)
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries may be pooled (the stage-transition downsampling)."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, q_pool: Optional[nn.Module] = None
    ) -> None:
        """
        Args:
            dim: input width.
            dim_out: width of q, k, v and of the output.
            num_heads: attention heads (``dim_out`` must be divisible by it).
            q_pool: spatial pooling applied to the queries only, or None.
        """
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H', W', dim_out); H', W' are pooled if ``q_pool`` is set."""
        b, h, w, _ = x.shape
        # (B, H, W, 3, heads, head_dim); q, k, v stay strided views of this one buffer.
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, -1))
        q, k, v = qkv.unbind(3)
        if self.q_pool is not None:
            q = _apply_pool(q.flatten(-2), self.q_pool).unflatten(-1, (self.num_heads, -1))
            h, w = q.shape[1:3]
        # SDPA wants (B, heads, tokens, head_dim); transposes are views.
        out = F.scaled_dot_product_attention(
            q.flatten(1, 2).transpose(1, 2),
            k.flatten(1, 2).transpose(1, 2),
            v.flatten(1, 2).transpose(1, 2),
        )
        # The CPU and CUDA kernels lay the result out as (B, tokens, heads, head_dim), so this
        # transpose + reshape is free.
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block: (windowed) attention with optional query pooling, then MLP."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_layer: Union[Callable[[int], nn.Module], str] = "LayerNorm",
        q_stride: Optional[Tuple[int, int]] = None,
        act_layer: Type[nn.Module] = nn.GELU,
        window_size: int = 0,
    ) -> None:
        """
        Args:
            dim: input width.
            dim_out: output width; if different, the residual goes through ``proj``.
            num_heads: attention heads.
            mlp_ratio: MLP hidden width as a multiple of ``dim_out``.
            drop_path: stochastic-depth probability (training only).
            norm_layer: norm class, or the name of a ``torch.nn`` one (built with eps=1e-6).
            q_stride: query pooling factors (stage transition), or None.
            act_layer: MLP activation class.
            window_size: attention window side; 0 means global attention.
        """
        super().__init__()
        if isinstance(norm_layer, str):
            norm_layer = partial(getattr(nn, norm_layer), eps=1e-6)
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = norm_layer(dim)
        self.pool = (
            nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False)
            if q_stride
            else None
        )
        self.attn = MultiScaleAttention(dim, dim_out, num_heads=num_heads, q_pool=self.pool)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim_out)
        self.mlp = MLP(
            dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=act_layer
        )
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def _fast(self) -> bool:
        """True when the copy-avoiding path is exact: no autograd, no active stochastic depth,
        no autocast (its in-place/out= ops would mix dtypes), the standard two-layer GELU MLP."""
        return (
            not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cuda")
            and not torch.is_autocast_enabled("cpu")
            and (isinstance(self.drop_path, nn.Identity) or not self.training)
            and self.mlp.num_layers == 2
            and not self.mlp.sigmoid_output
            and isinstance(self.mlp.act, nn.GELU)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H', W', dim_out); H', W' halve at a pooling block."""
        fast = self._fast()
        if fast and self._can_band():
            return self._forward_bands(x)

        normed = self.norm1(x)
        shortcut = x
        if self.dim != self.dim_out:
            # The residual changes width (and resolution) too: project the normed input.
            shortcut = _apply_pool(self.proj(normed), self.pool)

        if self.window_size > 0:
            windows, _ = window_partition(normed, self.window_size)
            attended = self.attn(windows)
            # With query pooling the windows shrink by the same factor as the grid, so they
            # tile the (pooled) shortcut grid the same way.
            window_out = attended.shape[1]
            if fast:
                x = add_windows(shortcut, attended, window_out)
            else:
                h, w = shortcut.shape[1:3]
                padded = (-(-h // window_out) * window_out, -(-w // window_out) * window_out)
                merged = window_unpartition(attended, window_out, padded, (h, w))
                x = shortcut + self.drop_path(merged)
        else:
            x = shortcut + self.drop_path(self.attn(normed))

        if not fast:
            return x + self.drop_path(self.mlp(self.norm2(x)))
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        self._mlp_residual_into(x, out)
        return out

    def _can_band(self) -> bool:
        """Whether the block is window-local, so it can run band by band (see _forward_bands)."""
        if self.window_size <= 0:
            return False
        if self.pool is None:
            return True
        stride = _pool_stride(self.pool)
        # Bands are whole rows of windows; they must also be whole rows of pooling cells.
        return stride is not None and all(self.window_size % s == 0 for s in stride)

    def _forward_bands(self, x: torch.Tensor) -> torch.Tensor:
        """Inference path of a windowed block.

        Every op of such a block is local to one window (norms and MLP per token, attention
        and query pooling per window), so the whole block runs band by band, a few rows of
        windows at a time. The qkv, attention and MLP temporaries then stay small and
        cache-resident instead of being activation-sized fresh allocations, which on CPU cost
        about as much as the arithmetic. Per token the ops are the same as the plain path.
        """
        b, h, w, _ = x.shape
        ws = self.window_size
        sy, sx = _pool_stride(self.pool) or (1, 1)
        x = x.contiguous()
        out = x.new_empty((b, h // sy, w // sx, self.dim_out))
        band_h = ws * max(1, _BAND_TOKENS // (ws * w))
        for i in range(b):
            for top in range(0, h, band_h):
                band = x[i : i + 1, top : top + band_h]
                normed = self.norm1(band)
                shortcut = band
                if self.dim != self.dim_out:
                    shortcut = _apply_pool(self.proj(normed), self.pool)
                windows, _ = window_partition(normed, ws)
                attended = self.attn(windows)
                mixed = add_windows(shortcut, attended, attended.shape[1])
                rows = slice(top // sy, top // sy + mixed.shape[1])
                self._mlp_residual_into(mixed, out[i : i + 1, rows])
        return out

    def _mlp_residual_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``x + mlp(norm2(x))`` into the contiguous ``out`` (inference only).

        Runs over row chunks so the 4x-wide hidden activation stays small, GELU is applied in
        place, and the residual is folded into the second matmul (out = x + b + hidden @ W^T).
        """
        fc1, fc2 = self.mlp.layers
        c = x.shape[-1]
        rows_in = x.reshape(-1, c)
        rows_out = out.view(-1, c)
        step = max(64, _MLP_HIDDEN_FLOATS // fc1.out_features)
        for top in range(0, rows_in.shape[0], step):
            chunk = rows_in[top : top + step]
            hidden = F.linear(self.norm2(chunk), fc1.weight, fc1.bias)
            torch.ops.aten.gelu_(hidden, approximate=self.mlp.act.approximate)
            target = rows_out[top : top + step]
            torch.add(chunk, fc2.bias, out=target)
            target.addmm_(hidden, fc2.weight.t())


class Hiera(nn.Module):
    """The multi-stage Hiera trunk; returns one channels-first feature map per stage."""

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        drop_path_rate: float = 0.0,
        q_pool: int = 3,
        q_stride: Tuple[int, int] = (2, 2),
        stages: Sequence[int] = (2, 3, 16, 3),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Optional[Sequence[int]] = (12, 16, 20),
        weights_path: Optional[str] = None,
        return_interm_layers: bool = True,
    ) -> None:
        """
        Args:
            embed_dim: token width of the first stage.
            num_heads: attention heads of the first stage.
            drop_path_rate: stochastic depth of the last block (linear ramp from 0).
            q_pool: how many stage transitions pool the queries (downsample).
            q_stride: pooling factors at those transitions.
            stages: number of blocks per stage.
            dim_mul: width multiplier at each stage transition.
            head_mul: heads multiplier at each stage transition.
            window_pos_embed_bkg_spatial_size: grid of the background positional embedding
                (bicubically resized to the token grid).
            window_spec: attention window side per stage.
            global_att_blocks: indices of blocks with global attention.
            weights_path: unsupported here (kept for config compatibility; must be None).
            return_interm_layers: return every stage's output, not only the last.
        Raises:
            ValueError: inconsistent stage/window/pooling settings.
            CheckpointError: if ``weights_path`` is set; weights are loaded by the builder.
        """
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(
                "Hiera needs one window size per stage (len(window_spec) == len(stages))."
            )
        if not 0 <= q_pool <= len(stages) - 1:
            raise ValueError(f"q_pool must be between 0 and {len(stages) - 1}, got {q_pool}.")
        if weights_path is not None:
            raise CheckpointError(
                "Hiera(weights_path=...) is not supported; pass the checkpoint to "
                "build_sam2(config, ckpt_path=...) instead."
            )
        self.window_spec = window_spec
        self.q_stride = q_stride
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        # Pooling happens in the first block of each of the first q_pool later stages.
        self.q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.return_interm_layers = return_interm_layers
        self.global_att_blocks = global_att_blocks

        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        # Windowed positional embedding (https://arxiv.org/abs/2311.05613): a coarse
        # background resized to the grid plus one window-sized pattern tiled over it.
        self.window_pos_embed_bkg_spatial_size = window_pos_embed_bkg_spatial_size
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0])
        )

        depth = sum(stages)
        drop_rates = torch.linspace(0, drop_path_rate, depth).tolist()
        global_blocks = set(global_att_blocks or ())
        stage = 0
        self.blocks = nn.ModuleList()
        for i in range(depth):
            # A stage's first block still runs at the previous stage's resolution, so it uses
            # that stage's window; it is also where width, heads (and resolution) change.
            window_size = 0 if i in global_blocks else window_spec[stage]
            dim_out = embed_dim
            if i - 1 in self.stage_ends:
                stage += 1
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
            self.blocks.append(
                MultiScaleBlock(
                    dim=embed_dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    drop_path=drop_rates[i],
                    q_stride=q_stride if i in self.q_pool_blocks else None,
                    window_size=window_size,
                )
            )
            embed_dim = dim_out

        # Channels of the returned maps, lowest resolution first (the neck's order).
        self.channel_list = (
            [self.blocks[i].dim_out for i in self.stage_ends[::-1]]
            if return_interm_layers
            else [self.blocks[-1].dim_out]
        )
        self._pos_cache: Dict[tuple, torch.Tensor] = {}

    def _get_pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        """Positional embedding for an (h, w) token grid, as a contiguous (1, h, w, C) tensor.

        Raises:
            ValueError: if the grid is not a whole number of first-stage windows.
        """
        h, w = hw
        win = self.pos_embed_window.shape[-1]
        if h % win or w % win:
            stride = self.patch_embed.proj.stride[0] * win
            raise ValueError(
                f"Image size must be a multiple of {stride} pixels for this Hiera trunk "
                f"(got a {h}x{w} token grid); resize or pad the input."
            )
        # Pure function of the parameters and the size: cache it for inference. The key
        # holds the parameters' version counters so loading new weights invalidates it.
        # Parameters created under torch.inference_mode() (ComfyUI builds models that way)
        # have no version counter, so an in-place reload could not be seen: no cache then.
        # (Skipped while torch.compile traces: the counters are not traceable.)
        key = None
        if not torch.compiler.is_compiling() and not torch.is_grad_enabled() and not (
            torch.is_inference(self.pos_embed) or torch.is_inference(self.pos_embed_window)
        ):
            key = (h, w, self.pos_embed.device, self.pos_embed.dtype,
                   self.pos_embed.data_ptr(), self.pos_embed._version,
                   self.pos_embed_window.data_ptr(), self.pos_embed_window._version)
            cached = self._pos_cache.get(key)
            if cached is not None:
                return cached
        bkg = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        c = bkg.shape[1]
        # Tiling the window pattern == broadcasting it over a (h/win, win, w/win, win) view.
        tiled = bkg.view(1, c, h // win, win, w // win, win) + self.pos_embed_window.view(
            1, c, 1, win, 1, win
        )
        pos = tiled.view(1, c, h, w).permute(0, 2, 3, 1).contiguous()
        if key is not None:
            self._pos_cache.clear()  # keep only the latest size/weights
            self._pos_cache[key] = pos
        return pos

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) image -> per-stage (B, C_i, H_i, W_i) maps, highest resolution first.

        The maps are channels-last in memory (permuted views), like the original's.
        """
        x = self.patch_embed(x)
        # Embedding first: the sum then takes its contiguous layout, so the first norm does
        # not have to copy the conv's channels-first output.
        x = self._get_pos_embed(x.shape[1:3]) + x
        outputs = []
        last = self.stage_ends[-1]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == last or (self.return_interm_layers and i in self.stage_ends):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs

    def get_num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)
