"""EfficientTAM's efficient memory cross-attention: memories read through 2x2-pooled keys/values.

A frame's memory is a map of the same size as the query map. Neighbouring memory tokens are
similar, so EfficientTAM averages each ``pool_size`` x ``pool_size`` cell of every memory map's
keys (after their rotary encoding) and values, which cuts the cross-attention cost by the cell
area. A pooled key stands for ``pool_size**2`` tokens; two published variants compensate for that
differently:

* ``pool_correction="logits"`` (``efficienttam_*_1``) adds ``2 log pool_size`` to the attention
  logits of pooled keys: exactly what attending to each pooled key ``pool_size**2`` times gives;
* ``pool_correction="keys"`` (``efficienttam_*_2``) adds ``2 log pool_size`` to every component of
  the pooled key vectors, as those models were trained.

Object-pointer tokens (the unrotated tail of the keys) are never pooled nor corrected. With no
more than one memory map the attention is exact (unpooled), as in the original.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sam2_web.modeling.sam.transformer import RoPEAttention, _rotate

POOL_CORRECTIONS = ("logits", "keys")


def _pool_maps(x: Tensor, num_maps: int, side: int, pool: int) -> Tensor:
    """Average ``pool`` x ``pool`` cells of ``num_maps`` stacked square maps of tokens.

    Args:
        x: (..., num_maps * side * side, C) tokens, each map row-major.
    Returns:
        (..., num_maps * (side // pool) ** 2, C), each pooled map row-major.
    """
    cells = side // pool
    grid = x.unflatten(-2, (num_maps, cells, pool, cells, pool))
    return grid.mean(dim=(-4, -2)).flatten(-4, -2)


class EfficientRoPEAttention(RoPEAttention):
    """Rotary cross-attention to memories whose spatial keys and values are average-pooled.

    Same inputs, outputs and parameters as :class:`RoPEAttention` (so the checkpoints' key names
    are unchanged); only the memory maps are read at ``1 / pool_size**2`` of their tokens.
    """

    def __init__(self, *args, pool_correction: str = "logits", pool_size: int = 2, **kwargs) -> None:
        """
        Args:
            *args, **kwargs: passed to :class:`RoPEAttention`.
            pool_correction: ``"logits"`` or ``"keys"`` (see the module docstring).
            pool_size: side of the averaged cells.
        Raises:
            ValueError: unknown ``pool_correction`` or a ``pool_size`` below 1.
        """
        super().__init__(*args, **kwargs)
        if pool_correction not in POOL_CORRECTIONS:
            raise ValueError(
                f"pool_correction must be one of {POOL_CORRECTIONS}, got {pool_correction!r}; fix the model config."
            )
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}.")
        self.pool_correction = pool_correction
        self.pool_size = int(pool_size)
        self.log_cell = 2 * math.log(self.pool_size)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0) -> Tensor:
        """Attend from ``q`` (B, Nq, C) to ``k``/``v`` (B, Nk, kv_in_dim); returns (B, Nq, C).

        Args:
            q, k, v: token sequences, batch first; the first ``Nk - num_k_exclude_rope`` keys
                are whole query-sized memory maps.
            num_k_exclude_rope: trailing keys (object pointers) without rotary encoding.
        Raises:
            ValueError: as :meth:`RoPEAttention.forward`, or a map side the pool does not divide.
        """
        num_q, num_k = q.shape[-2], k.shape[-2]
        num_k_rope = num_k - num_k_exclude_rope
        if not self.rope_k_repeat or num_k_rope <= num_q:
            # One memory map or fewer (or self-attention): the original attends exactly.
            return super().forward(q, k, v, num_k_exclude_rope=num_k_exclude_rope)
        if num_k_rope % num_q != 0:
            raise ValueError(
                f"EfficientRoPEAttention got {num_k_rope} positional keys, not a multiple of the "
                f"{num_q} queries; pass the object-pointer count as num_k_exclude_rope."
            )
        side, side_y = self._grid_for(num_q)
        if side != side_y or side % self.pool_size:
            raise ValueError(
                f"EfficientRoPEAttention pools {self.pool_size}x{self.pool_size} cells of square maps; "
                f"a {side}x{side_y} map does not divide. Use an image size whose feature map side "
                f"(image_size / 16) is a multiple of {self.pool_size}."
            )
        num_maps = num_k_rope // num_q
        freqs = self._freqs(num_q, q.device)
        q = _rotate(self._split_heads(self.q_proj(q)), freqs)
        k = self._split_heads(self.k_proj(k))
        k = _rotate(k, freqs.expand(num_maps, -1, -1), num_k_rope)
        pooled_k = _pool_maps(k[:, :, :num_k_rope], num_maps, side, self.pool_size)
        if self.pool_correction == "keys":
            pooled_k = pooled_k + self.log_cell
        k = torch.cat([pooled_k, k[:, :, num_k_rope:]], dim=2)
        # Averaging commutes with the (affine) value projection: pool the narrower raw values.
        pooled_v = _pool_maps(v[:, :num_k_rope], num_maps, side, self.pool_size)
        v = self._split_heads(self.v_proj(torch.cat([pooled_v, v[:, num_k_rope:]], dim=1)))
        mask = None
        if self.pool_correction == "logits":
            # An additive bias per key, broadcast over batch, heads and queries.
            mask = torch.zeros(1, k.shape[-2], dtype=q.dtype, device=q.device)
            mask[:, : pooled_k.shape[-2]] = self.log_cell
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))
