"""Token-grid helpers for the Hiera trunk: patch embedding, windowing and strided max pooling.

Hiera keeps activations channels-last, ``(B, H, W, C)``. These helpers are written so that the
hot path does as few full-size copies as possible: on CPU the encoder is memory-bound at high
resolution, and every fresh activation-sized tensor costs page faults as well as bandwidth.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Strided convolution turning an image into a channels-last grid of patch tokens."""

    def __init__(
        self,
        kernel_size: Tuple[int, int] = (7, 7),
        stride: Tuple[int, int] = (4, 4),
        padding: Tuple[int, int] = (3, 3),
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        """
        Args:
            kernel_size: convolution kernel.
            stride: patch stride (the trunk's first downsampling factor).
            padding: convolution padding.
            in_chans: image channels.
            embed_dim: token width.
        """
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) image -> (B, H', W', embed_dim) tokens (a permuted view)."""
        return self.proj(x).permute(0, 2, 3, 1)


def _num_windows(size: int, window: int) -> int:
    return -(-size // window)


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Cut a (B, H, W, C) grid into non-overlapping square windows, zero-padding the far edges.

    Args:
        x: token grid.
        window_size: window side.
    Returns:
        ``(windows, (Hp, Wp))``: windows of shape (B * nH * nW, ws, ws, C), row-major over the
        window grid per image, and the padded grid size.
    """
    b, h, w, c = x.shape
    n_h, n_w = _num_windows(h, window_size), _num_windows(w, window_size)
    h_pad, w_pad = n_h * window_size, n_w * window_size
    if (h_pad, w_pad) != (h, w):
        # Padding is zeros *after* the norm, so padded keys are qkv(0) = the qkv bias; the
        # networks were trained that way, so we must not mask them out.
        x = F.pad(x, (0, 0, 0, w_pad - w, 0, h_pad - h))
    grid = x.reshape(b, n_h, window_size, n_w, window_size, c).transpose(2, 3)
    return grid.reshape(b * n_h * n_w, window_size, window_size, c), (h_pad, w_pad)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * nW, ws, ws, C) windows -> (B, H, W, C) grid."""
    h_pad, w_pad = pad_hw
    h, w = hw
    n_h, n_w = h_pad // window_size, w_pad // window_size
    b = windows.shape[0] // (n_h * n_w)
    grid = windows.reshape(b, n_h, n_w, window_size, window_size, -1).transpose(2, 3)
    grid = grid.reshape(b, h_pad, w_pad, -1)
    return grid[:, :h, :w] if (h_pad, w_pad) != (h, w) else grid


def add_windows(shortcut: torch.Tensor, windows: torch.Tensor, window_size: int) -> torch.Tensor:
    """``shortcut + window_unpartition(windows)`` in one pass when no padding is involved.

    Args:
        shortcut: (B, H, W, C) residual grid.
        windows: (B * nW, ws, ws, C) windows covering ``shortcut``'s grid (padded if needed).
        window_size: ws.
    Returns:
        New (B, H, W, C) tensor.
    """
    b, h, w, c = shortcut.shape
    n_h, n_w = _num_windows(h, window_size), _num_windows(w, window_size)
    grid = windows.view(b, n_h, n_w, window_size, window_size, c).transpose(2, 3)
    if n_h * window_size == h and n_w * window_size == w:
        # The add reads the windows through a strided view: no separate unpartition copy.
        tiles = shortcut.view(b, n_h, window_size, n_w, window_size, c)
        return (tiles + grid).reshape(b, h, w, c)
    grid = grid.reshape(b, n_h * window_size, n_w * window_size, c)
    return shortcut + grid[:, :h, :w]


def max_pool_tokens(x: torch.Tensor, stride: Tuple[int, int]) -> torch.Tensor:
    """Non-overlapping max pooling (kernel == stride, floor mode) of a channels-last grid.

    Equal, bit for bit, to ``nn.MaxPool2d(stride, stride)`` on the channels-first layout (max is
    exact), but reads ``x`` through a strided view: the queries sliced out of a fused qkv
    projection are pooled without first being copied into a contiguous grid.

    Args:
        x: (B, H, W, ...) tokens; trailing dims are pooled independently.
        stride: (sy, sx) pooling factors.
    Returns:
        Contiguous (B, H // sy, W // sx, ...) tensor.
    """
    sy, sx = stride
    h_out, w_out = x.shape[1] // sy, x.shape[2] // sx
    tiles = x[:, : h_out * sy, : w_out * sx].unflatten(2, (w_out, sx)).unflatten(1, (h_out, sy))
    parts = [tiles[:, :, i, :, j] for i in range(sy) for j in range(sx)]
    if len(parts) == 1:
        return parts[0].contiguous()
    out = torch.maximum(parts[0], parts[1])
    for part in parts[2:]:
        if torch.is_grad_enabled():  # out= is not differentiable
            out = torch.maximum(out, part)
        else:
            torch.maximum(out, part, out=out)
    return out
