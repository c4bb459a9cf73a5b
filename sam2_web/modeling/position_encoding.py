"""Positional encodings: 2-D sine (image features), random Fourier (prompts), axial RoPE (memory).

The functions keep the original maths (same formulas, same float32 order of operations) because
the networks were trained against these exact numbers.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """2-D sinusoidal encoding of a feature map's pixel grid (DETR-style).

    Half of the channels encode y, the other half x; inside each half, even channels are sines and
    odd channels cosines of the same frequency. The encoding only depends on the map's size, so it
    is computed once per ``(H, W, device)`` and cached.
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: int = 10000,
        normalize: bool = True,
        scale: Optional[float] = None,
        warmup_cache: bool = True,
        image_size: int = 1024,
        strides: Tuple[int, ...] = (4, 8, 16, 32),
    ) -> None:
        """
        Args:
            num_pos_feats: total output channels (even); split evenly between y and x.
            temperature: base of the geometric frequency progression.
            normalize: map coordinates to ``(0, scale]`` instead of raw pixel indices.
            scale: coordinate range when normalising (default ``2*pi``).
            warmup_cache: on CUDA, precompute the maps for ``image_size // strides`` so a compiled
                model never sees the cache-miss branch.
            image_size: input resolution used for the warm-up.
            strides: feature strides used for the warm-up.
        Raises:
            ValueError: odd ``num_pos_feats``, or ``scale`` given without ``normalize``.
        """
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even (y and x halves), got {num_pos_feats}.")
        if scale is not None and not normalize:
            raise ValueError("A position-encoding scale only applies with normalize=True.")
        self.num_pos_feats = num_pos_feats // 2  # per axis
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self.cache: Dict[Tuple[int, int, torch.device], torch.Tensor] = {}
        if warmup_cache and torch.cuda.is_available():
            cuda = torch.device("cuda")
            for stride in strides:
                self._grid_encoding(image_size // stride, image_size // stride, cuda)

    def _frequencies(self, device: torch.device) -> torch.Tensor:
        steps = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        return self.temperature ** (2 * (steps // 2) / self.num_pos_feats)

    def _sin_cos(self, coords: torch.Tensor) -> torch.Tensor:
        """(N,) coordinates -> (N, num_pos_feats), sines and cosines interleaved."""
        angles = coords[:, None] / self._frequencies(coords.device)
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def _encode_xy(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised (0..1) 1-D coordinate vectors; returns ``(pos_x, pos_y)``."""
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError("x and y must be 1-D tensors of the same length.")
        return self._sin_cos(x * self.scale), self._sin_cos(y * self.scale)

    @torch.no_grad()
    def encode_boxes(
        self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        """Encode N boxes (centre x, y normalised to 0..1; w, h appended raw) -> (N, C + 2)."""
        pos_x, pos_y = self._encode_xy(x, y)
        return torch.cat((pos_y, pos_x, h[:, None], w[:, None]), dim=1)

    encode = encode_boxes  # older name, kept for callers written against the original

    @torch.no_grad()
    def encode_points(self, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Encode (B, N) normalised points and append their label -> (B, N, C + 1)."""
        if not (x.shape == y.shape == labels.shape and x.ndim == 2):
            raise ValueError("x, y and labels must all have the same (B, N) shape.")
        b, n = x.shape
        pos_x, pos_y = self._encode_xy(x.flatten(), y.flatten())
        return torch.cat((pos_y.view(b, n, -1), pos_x.view(b, n, -1), labels[:, :, None]), dim=2)

    @torch.no_grad()
    def _grid_encoding(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """The (C, H, W) float32 map for an ``h x w`` grid, from the cache when possible."""
        key = (h, w, torch.device(device))
        # While torch.compile traces, the cache stays out of the graph (a guard on the dict's
        # contents would recompile once it fills); the compiler folds the constant map anyway.
        cached = None if torch.compiler.is_compiling() else self.cache.get(key)
        if cached is not None:
            return cached
        # Positions 1..H / 1..W. Each axis is encoded once as a 1-D table and broadcast over the
        # other axis: every element goes through the same float ops as a full-grid computation.
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            ys = ys / (ys[-1:] + eps) * self.scale
            xs = xs / (xs[-1:] + eps) * self.scale
        pos_y = self._sin_cos(ys).t()[:, :, None].expand(-1, h, w)  # (C/2, H, W)
        pos_x = self._sin_cos(xs).t()[:, None, :].expand(-1, h, w)
        grid = torch.cat((pos_y, pos_x), dim=0)
        if not torch.compiler.is_compiling():
            self.cache[key] = grid
        return grid

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoding for the spatial grid of ``x`` (B, *, H, W) -> (B, C, H, W) float32.

        The result is a broadcast view of a cached tensor (no per-call copy): treat it as
        read-only and ``clone()`` it before any in-place edit.
        """
        grid = self._grid_encoding(x.shape[-2], x.shape[-1], x.device)
        return grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


class PositionEmbeddingRandom(nn.Module):
    """Encoding with random Gaussian spatial frequencies (the prompt encoder's ``pe_layer``)."""

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None) -> None:
        """
        Args:
            num_pos_feats: number of frequencies; the output has twice as many channels.
            scale: std of the frequencies; ``None`` or non-positive means 1.
        """
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats)."""
        centred = 2 * coords - 1
        angles = 2 * math.pi * (centred @ self.positional_encoding_gaussian_matrix)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """Encoding of pixel centres of an ``(h, w)`` grid -> (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        coords = torch.stack(
            [xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1
        )
        return self._pe_encoding(coords).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: Tuple[int, int]
    ) -> torch.Tensor:
        """Encode (B, N, 2) pixel (x, y) coordinates of an ``image_size`` = (H, W) image."""
        norm = coords_input.new_tensor([image_size[1], image_size[0]])
        return self._pe_encoding((coords_input / norm).to(torch.float))


# Axial rotary position encoding (RoPE) for the memory attention: the first half of each head's
# complex pairs rotates with x, the second half with y.


def init_t_xy(end_x: int, end_y: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Column and row index of every cell of an ``end_y x end_x`` grid, row-major, float32."""
    flat = torch.arange(end_x * end_y, dtype=torch.float32)
    return flat % end_x, torch.div(flat, end_x, rounding_mode="floor")


def compute_axial_cis(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Unit complex rotations for axial RoPE.

    Args:
        dim: per-head channel count (multiple of 4).
        end_x, end_y: grid width and height.
        theta: frequency base.
    Returns:
        complex64 tensor (end_x * end_y, dim // 2): x rotations then y rotations per cell.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t_x, t_y = init_t_xy(end_x, end_y)
    angles_x = torch.outer(t_x, freqs)
    angles_y = torch.outer(t_y, freqs)
    cis_x = torch.polar(torch.ones_like(angles_x), angles_x)
    cis_y = torch.polar(torch.ones_like(angles_y), angles_y)
    return torch.cat([cis_x, cis_y], dim=-1)


def reshape_for_broadcast(freqs_cis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View (N, D) ``freqs_cis`` as (1, ..., 1, N, D) to broadcast against ``x`` (..., N, D).

    Raises:
        ValueError: if the last two dims of ``x`` are not ``freqs_cis.shape``.
    """
    if x.ndim < 2 or tuple(freqs_cis.shape) != tuple(x.shape[-2:]):
        raise ValueError(
            f"RoPE table of shape {tuple(freqs_cis.shape)} does not fit tokens of shape "
            f"{tuple(x.shape)}; the feature size (feat_sizes) does not match the input."
        )
    return freqs_cis.view(*([1] * (x.ndim - 2)), *freqs_cis.shape)


def apply_rotary_enc(
    xq: torch.Tensor,
    xk: torch.Tensor,
    freqs_cis: torch.Tensor,
    repeat_freqs_k: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys (B, heads, N, C) by their positions' angles.

    Args:
        xq: queries; ``freqs_cis`` must have shape (N_q, C // 2).
        xk: keys; may be empty along the token dim (then returned unchanged).
        freqs_cis: output of ``compute_axial_cis``.
        repeat_freqs_k: keys hold ``r`` stacked copies of the query grid (several memory
            frames), so the table is tiled ``r`` times along the tokens.
    Returns:
        ``(xq_rotated, xk_rotated)`` in the input dtypes and devices.
    """
    q_c = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    table = reshape_for_broadcast(freqs_cis, q_c)
    q_out = torch.view_as_real(q_c * table).flatten(3).type_as(xq).to(xq.device)
    if xk.shape[-2] == 0:
        return q_out, xk
    k_c = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    if repeat_freqs_k:
        r = k_c.shape[-2] // q_c.shape[-2]
        # expand+flatten instead of repeat: repeat on complex tensors is not supported everywhere.
        table = table.unsqueeze(-3).expand(*table.shape[:-2], r, *table.shape[-2:]).flatten(-3, -2)
    k_out = torch.view_as_real(k_c * table).flatten(3).type_as(xk).to(xk.device)
    return q_out, k_out
