"""EdgeTAM's spatial perceiver: compresses each frame's memory into a few hundred latent tokens.

SAM 2 keeps every memory frame as a 64x64 map (4096 tokens at 1024 px) and the memory attention
reads all of them. The perceiver replaces each map by

* ``num_latents`` *global* latents that cross-attend to the whole map (with its position
  encoding added to keys and values); they get a zero position encoding, and
* ``num_latents_2d`` *windowed* latents laid out on a square grid (16x16 for 256): latent ``i``
  reads only the tokens of window ``i`` of the map, so the grid keeps the map's layout; they get
  the sine encoding of that grid, and the memory attention rotates them by their grid position.

Output: (B, num_latents + num_latents_2d, C) tokens (global first) and their encodings. Parameter
names follow the official EdgeTAM checkpoints (``spatial_perceiver.*``). Inference only: the
dropout arguments of the published config are accepted and not used.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _feed_forward(dim: int, mult: float) -> nn.Sequential:
    """Pre-normalised GELU MLP without biases; indices 0..3 are the checkpoint's key names."""
    inner = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head attention of (B, Nq, D) queries over (B, Nk, D) keys/values -> (B, Nq, D)."""
    b, nq, d = q.shape
    split = lambda x: x.unflatten(-1, (heads, d // heads)).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, nq, d)


class PerceiverAttention(nn.Module):
    """Latents (queries) attend to input tokens (keys/values), both layer-normalised first."""

    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8, concat_kv_latents: bool = True) -> None:
        """
        Args:
            dim: width of latents and inputs.
            dim_head / heads: attention width is ``dim_head * heads``.
            concat_kv_latents: the latents are also keys/values (appended after the inputs).
        """
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.concat_kv_latents = concat_kv_latents
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents: Tensor, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """(B, L, dim) latents read (B, N, dim) tokens; ``pos`` (B, N, inner) is added to the
        projected keys and values. Returns the (B, L, dim) update (not yet added to the latents)."""
        latents = self.norm_latents(latents)
        x = self.norm_x(x)
        kv_input = torch.cat((x, latents), dim=-2) if self.concat_kv_latents else x
        k, v = self.to_kv(kv_input).chunk(2, dim=-1)
        if pos is not None:
            if self.concat_kv_latents:
                raise ValueError("a position encoding cannot be used with concat_kv_latents=True")
            k, v = k + pos, v + pos
        return self.to_out(_attend(self.to_q(latents), k, v, self.heads))


class LatentSelfAttention(nn.Module):
    """Self-attention among latents, layer-normalised first (checkpoint name ``self_attn``)."""

    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, dim) latents -> their (B, L, dim) update."""
        x = self.norm(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        return self.to_out(_attend(self.to_q(x), k, v, self.heads))


class PerceiverLayer(nn.Module):
    """Cross-attention to the inputs and an MLP; optionally self-attention and a second MLP.
    Every step is residual."""

    def __init__(
        self,
        dim: int,
        dim_head: int = 64,
        heads: int = 8,
        ff_mult: float = 4,
        concat_kv_latents: bool = False,
        use_self_attn: bool = False,
    ) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads, concat_kv_latents=concat_kv_latents)
        self.ff = _feed_forward(dim, ff_mult)
        self.use_self_attn = use_self_attn
        if use_self_attn:
            self.self_attn = LatentSelfAttention(dim=dim, dim_head=dim_head, heads=heads)
            self.self_ff = _feed_forward(dim, ff_mult)

    def forward(self, latents: Tensor, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """Update (B, L, dim) latents from (B, N, dim) inputs (``pos``: see PerceiverAttention)."""
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        if self.use_self_attn:
            latents = latents + self.self_attn(latents)
            latents = latents + self.self_ff(latents)
        return latents


class PerceiverResampler(nn.Module):
    """Turns a (B, C, H, W) memory map into global and windowed latent tokens (module docstring)."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        dim_head: int = 64,
        heads: int = 1,
        num_latents: int = -1,
        num_latents_2d: int = -1,
        ff_mult: float = 4,
        hidden_dropout_p: float = 0.0,
        attention_dropout_p: float = 0.0,
        pos_enc_at_key_value: bool = False,
        concat_kv_latents: bool = False,
        position_encoding: Optional[nn.Module] = None,
        use_self_attn: bool = False,
    ) -> None:
        """
        Args:
            dim: channels of the memory map and of the latents.
            depth: number of :class:`PerceiverLayer`, shared by both kinds of latents.
            dim_head / heads: attention width is ``dim_head * heads`` (must equal ``dim`` when a
                position encoding is added to keys and values).
            num_latents: global latents (<= 0: none).
            num_latents_2d: windowed latents, a square number (<= 0: none); the map's side must
                be a multiple of its square root.
            ff_mult: MLP hidden width as a multiple of ``dim``.
            hidden_dropout_p / attention_dropout_p: training only; accepted and unused.
            pos_enc_at_key_value: global latents see the map's position encoding (added to
                their keys and values). The authors' code adds it whenever one is passed; the
                published config sets it.
            concat_kv_latents: latents also attend to themselves in the cross-attention.
            position_encoding: sine encoding of the windowed latents' grid (needed with
                ``num_latents_2d``).
            use_self_attn: each layer adds latent self-attention and a second MLP.
        Raises:
            ValueError: no latents at all, a non-square ``num_latents_2d``, or windowed latents
                without a position encoding.
        """
        super().__init__()
        if num_latents <= 0 and num_latents_2d <= 0:
            raise ValueError("the perceiver needs num_latents > 0 or num_latents_2d > 0")
        self.num_latents = num_latents
        self.num_latents_2d = num_latents_2d
        self.grid_side = 0
        if num_latents > 0:
            self.latents = nn.Parameter(torch.randn(num_latents, dim))
        if num_latents_2d > 0:
            self.grid_side = math.isqrt(num_latents_2d)
            if self.grid_side**2 != num_latents_2d:
                raise ValueError(f"num_latents_2d must be a square number (a grid), got {num_latents_2d}")
            if position_encoding is None:
                raise ValueError("windowed latents (num_latents_2d > 0) need a position_encoding")
            self.latents_2d = nn.Parameter(torch.randn(num_latents_2d, dim))
        self.position_encoding = position_encoding
        self.pos_enc_at_key_value = pos_enc_at_key_value
        self.layers = nn.ModuleList(
            PerceiverLayer(
                dim=dim,
                dim_head=dim_head,
                heads=heads,
                ff_mult=ff_mult,
                concat_kv_latents=concat_kv_latents,
                use_self_attn=use_self_attn,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """Compress a memory map.

        Args:
            x: (B, C, H, W) memory features.
            pos: (B, C, H, W) their position encoding, or None.
        Returns:
            ``(latents, latent_pos)``: (B, L, C) tokens, global latents first, and their
            (B, L, C) encodings (zeros for the global ones); ``latent_pos`` is None when ``pos`` is.
        """
        tokens, encodings = [], []
        if self.num_latents > 0:
            tokens.append(self._global_latents(x, pos))
            encodings.append(torch.zeros_like(tokens[-1]))
        if self.num_latents_2d > 0:
            latents_2d, pos_2d = self._windowed_latents(x)
            tokens.append(latents_2d)
            encodings.append(pos_2d)
        latents = torch.cat(tokens, dim=1)
        return latents, (torch.cat(encodings, dim=1) if pos is not None else None)

    def _global_latents(self, x: Tensor, pos: Optional[Tensor]) -> Tensor:
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        if pos is not None and self.pos_enc_at_key_value:
            pos = pos.flatten(2).transpose(1, 2)
        else:
            pos = None
        for layer in self.layers:
            latents = layer(latents, x, pos)
        return self.norm(latents)

    def _windowed_latents(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        side = self.grid_side
        if h % side or w % side:
            raise ValueError(
                f"a {h}x{w} memory map does not split into {side}x{side} windows; "
                "use an image size whose memory map side is a multiple of the latent grid's"
            )
        wh, ww = h // side, w // side
        # One sequence per window: (B * side * side, wh * ww, C), windows row-major per image.
        windows = (
            x.view(b, c, side, wh, side, ww).permute(0, 2, 4, 3, 5, 1).reshape(b * side * side, wh * ww, c)
        )
        # Window i of every image is read by latent i.
        latents = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(b * side * side, 1, c)
        for layer in self.layers:
            latents = layer(latents, windows)
        grid = latents.view(b, side, side, c).permute(0, 3, 1, 2)  # (B, C, side, side)
        pos_2d = self.position_encoding(grid).flatten(2).transpose(1, 2)
        return self.norm(grid.flatten(2).transpose(1, 2)), pos_2d
