"""Attention layers shared by the mask decoder and the memory attention.

``TwoWayTransformer`` is SAM's decoder body: prompt tokens and image tokens take turns attending
to each other. ``Attention`` is plain multi-head attention with an optional narrower inner width;
``RoPEAttention`` adds 2-D rotary position encoding and is what the memory attention uses;
``RoPEAttentionv2`` is EdgeTAM's variant for memories compressed by a spatial perceiver (queries
and keys on grids of different sizes). Parameter names follow the official checkpoints.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_web.modeling.common import MLP
from sam2_web.modeling.position_encoding import compute_axial_cis


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width (``downsample_rate``).

    Keys and values may come from a different width than queries (``kv_in_dim``), which is how
    the memory attention reads the narrower (64-channel) memories with 256-channel queries.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: Optional[int] = None,
    ) -> None:
        """
        Args:
            embedding_dim: width of the queries and of the output.
            num_heads: number of heads; must divide ``embedding_dim // downsample_rate``.
            downsample_rate: inner (attention) width is ``embedding_dim // downsample_rate``.
            dropout: attention-weight dropout, applied in training mode only.
            kv_in_dim: width of keys/values; defaults to ``embedding_dim``.
        Raises:
            ValueError: if the heads do not divide the inner width (a broken model config).
        """
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} must divide the attention width {self.internal_dim} "
                "(embedding_dim // downsample_rate); fix the model config."
            )
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _split_heads(self, x: Tensor) -> Tensor:
        # (B, N, C) -> (B, heads, N, C / heads); a view for contiguous input.
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _project(self, q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return (
            self._split_heads(self.q_proj(q)),
            self._split_heads(self.k_proj(k)),
            self._split_heads(self.v_proj(v)),
        )

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # Heads-split q/k/v in, (B, Nq, embedding_dim) out.
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout_p if self.training else 0.0
        )
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attend from ``q`` (B, Nq, C) to ``k``/``v`` (B, Nk, kv_in_dim); returns (B, Nq, C)."""
        return self._attend(*self._project(q, k, v))


class RoPEAttention(Attention):
    """Attention with axial 2-D rotary position encoding on queries and keys.

    Queries are one feature map (``feat_sizes`` tokens, or any square map). Keys are either the
    same map (self-attention) or, with ``rope_k_repeat``, several maps of that size stacked
    (memories from several frames) followed by ``num_k_exclude_rope`` tokens that carry no
    spatial position (object pointers) and are left unrotated.
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: Sequence[int] = (64, 64),
        **kwargs,
    ) -> None:
        """
        Args:
            *args, **kwargs: passed to ``Attention``.
            rope_theta: base of the rotary frequencies.
            rope_k_repeat: keys hold a whole number of query-sized maps; rotate each like the
                queries. Needed for cross-attention to memories.
            feat_sizes: (width, height) of the query feature map at the configured image size.
        """
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = (int(feat_sizes[0]), int(feat_sizes[1]))
        # Rotations per (width, height, device). A plain dict, not a buffer: they are derived
        # data, absent from checkpoints, and built lazily on whatever device the inputs live.
        self._freqs_cache: Dict[Tuple[int, int, torch.device], Tensor] = {}

    def _grid_for(self, num_tokens: int) -> Tuple[int, int]:
        w, h = self.feat_sizes
        if w * h == num_tokens:
            return w, h
        # Another image size: the maps SAM 2 produces are square.
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(
                f"RoPEAttention got {num_tokens} query tokens, which is neither "
                f"{w}x{h} (feat_sizes) nor a square map; use a square image size."
            )
        return side, side

    def _freqs(self, num_tokens: int, device: torch.device) -> Tensor:
        w, h = self._grid_for(num_tokens)
        key = (w, h, device)
        # Not looked up while torch.compile traces (see PositionEmbeddingSine._grid_encoding).
        freqs = None if torch.compiler.is_compiling() else self._freqs_cache.get(key)
        if freqs is None:
            head_dim = self.internal_dim // self.num_heads
            freqs = compute_axial_cis(dim=head_dim, end_x=w, end_y=h, theta=self.rope_theta)
            freqs = freqs.to(device, non_blocking=True)
            if not torch.compiler.is_compiling():
                self._freqs_cache[key] = freqs
        return freqs

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0) -> Tensor:
        """Attend from ``q`` (B, Nq, C) to ``k``/``v`` (B, Nk, kv_in_dim); returns (B, Nq, C).

        Args:
            q, k, v: token sequences, batch first.
            num_k_exclude_rope: number of trailing key tokens left without rotary encoding.
        Raises:
            ValueError: if keys and queries differ in length without ``rope_k_repeat``, or the
                query count is not a feature map this layer can place.
        """
        q, k, v = self._project(q, k, v)
        num_q, num_k = q.shape[-2], k.shape[-2]
        if num_q != num_k and not self.rope_k_repeat:
            raise ValueError(
                f"RoPEAttention got {num_q} queries but {num_k} keys; build it with "
                "rope_k_repeat=True to attend to memories of several frames."
            )
        freqs = self._freqs(num_q, q.device)
        q = _rotate(q, freqs)
        num_k_rope = num_k - num_k_exclude_rope
        if num_k_rope > 0:
            if self.rope_k_repeat:
                # Any whole number of query-sized maps; rotate them all like the queries.
                if num_k_rope % num_q != 0:
                    raise ValueError(
                        f"RoPEAttention got {num_k_rope} positional keys, not a multiple of the "
                        f"{num_q} queries; pass the object-pointer count as num_k_exclude_rope."
                    )
                freqs = freqs.expand(num_k_rope // num_q, -1, -1)
            # The projection made k, so rotating its positional part in place is safe and
            # spares concatenating it back to the unrotated object-pointer tokens.
            k = _rotate(k, freqs, num_k_rope)
        return self._attend(q, k, v)


class RoPEAttentionv2(Attention):
    """Rotary attention where queries and memory keys lie on grids of different sizes.

    Queries are the current frame's map (``q_sizes``, or any square map). The keys are
    ``num_k_frames`` memory frames of equal length followed by ``num_k_exclude_rope`` unrotated
    tokens (object pointers). In each frame only the last ``k_sizes`` cells' worth of tokens
    have a grid position (the perceiver's windowed latents, rotated by their cell on the
    ``k_sizes`` grid); the tokens before them (its global latents) are left unrotated.
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        q_sizes: Sequence[int] = (64, 64),
        k_sizes: Sequence[int] = (16, 16),
        **kwargs,
    ) -> None:
        """
        Args:
            *args, **kwargs: passed to ``Attention``.
            rope_theta: base of the rotary frequencies.
            q_sizes: (width, height) of the query map at the configured image size.
            k_sizes: (width, height) of the grid of positional key tokens in each memory frame.
        """
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.q_sizes = (int(q_sizes[0]), int(q_sizes[1]))
        self.k_sizes = (int(k_sizes[0]), int(k_sizes[1]))
        self._freqs_cache: Dict[Tuple[int, int, torch.device], Tensor] = {}

    def _freqs(self, w: int, h: int, device: torch.device) -> Tensor:
        key = (w, h, device)
        if key not in self._freqs_cache:
            head_dim = self.internal_dim // self.num_heads
            freqs = compute_axial_cis(dim=head_dim, end_x=w, end_y=h, theta=self.rope_theta)
            self._freqs_cache[key] = freqs.to(device)
        return self._freqs_cache[key]

    def _query_grid(self, num_tokens: int) -> Tuple[int, int]:
        w, h = self.q_sizes
        if w * h == num_tokens:
            return w, h
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(
                f"RoPEAttentionv2 got {num_tokens} query tokens, which is neither {w}x{h} "
                "(q_sizes) nor a square map; use a square image size."
            )
        return side, side

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0, num_k_frames: int = 1
    ) -> Tensor:
        """Attend from ``q`` (B, Nq, C) to ``k``/``v`` (B, Nk, kv_in_dim); returns (B, Nq, C).

        Args:
            q, k, v: token sequences, batch first.
            num_k_exclude_rope: trailing key tokens without rotary encoding (object pointers).
            num_k_frames: how many memory frames the other key tokens hold.
        Raises:
            ValueError: the key tokens do not split into ``num_k_frames`` frames of at least
                ``k_sizes`` tokens each, or the query count is not a map this layer can place.
        """
        q, k, v = self._project(q, k, v)
        q = _rotate(q, self._freqs(*self._query_grid(q.shape[-2]), q.device))
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        if num_k_rope > 0:
            kw, kh = self.k_sizes
            per_frame = num_k_rope // max(num_k_frames, 1)
            if num_k_frames < 1 or per_frame * num_k_frames != num_k_rope or per_frame < kw * kh:
                raise ValueError(
                    f"RoPEAttentionv2 cannot split {num_k_rope} memory tokens into {num_k_frames} "
                    f"frames of at least {kw}x{kh} positional tokens; pass the number of memory "
                    "frames (num_k_frames) and of object-pointer tokens (num_k_exclude_rope)."
                )
            # The projection made k, so its positional tokens can be rotated in place.
            frames = k[:, :, :num_k_rope].unflatten(2, (num_k_frames, per_frame))
            _rotate_in_place(frames[:, :, :, per_frame - kw * kh :], self._freqs(kw, kh, k.device))
        return self._attend(q, k, v)


def _rotate_in_place(x: Tensor, freqs: Tensor) -> None:
    """Rotate the (..., N, C) view ``x`` by complex ``freqs`` (N, C / 2), writing into ``x``."""
    work = x.float()  # ``x`` itself when it is float32
    pairs = torch.view_as_complex(work.unflatten(-1, (-1, 2)))
    pairs.mul_(freqs)
    if work.data_ptr() != x.data_ptr():
        x.copy_(work)


def _rotate(x: Tensor, freqs: Tensor, num_tokens: Optional[int] = None) -> Tensor:
    """Apply rotary encoding to the first ``num_tokens`` (default all) tokens of ``x``.

    Args:
        x: (B, heads, N, C) freshly projected tokens; rotated in place when float32.
        freqs: complex (N', C / 2) rotations from ``compute_axial_cis``, or (r, N', C / 2) when
            the tokens are ``r`` stacked maps of N' cells.
    Returns:
        ``x`` rotated, in its own dtype. The maths is the reference's complex product in
        float32 (``apply_rotary_enc``); only the temporaries are avoided.
    """
    work = x if x.dtype == torch.float32 else x.float()
    part = work if num_tokens is None else work[:, :, :num_tokens]
    pairs = torch.view_as_complex(part.unflatten(-1, (-1, 2)))
    if freqs.ndim == 3:
        pairs = pairs.unflatten(-2, (freqs.shape[0], freqs.shape[1]))
    pairs.mul_(freqs)
    return work if work is x else work.to(x.dtype)


class TwoWayAttentionBlock(nn.Module):
    """One round of SAM's decoder: tokens self-attend, read the image, and the image reads back.

    Order: token self-attention, token->image cross-attention, token MLP, image->token
    cross-attention; each is residual and post-normalised.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        """
        Args:
            embedding_dim: width of tokens and image embedding.
            num_heads: heads of every attention.
            mlp_dim: hidden width of the token MLP.
            activation: activation class of the token MLP.
            attention_downsample_rate: width reduction of the two cross-attentions.
            skip_first_layer_pe: the first block replaces (rather than updates) the tokens by
                their self-attention and does not add the query PE there.
        """
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Update tokens ``queries`` (B, Nt, C) and image tokens ``keys`` (B, Ni, C).

        ``query_pe`` and ``key_pe`` are added to queries/keys of the attentions (not values).
        Returns the updated ``(queries, keys)``.
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            with_pe = queries + query_pe
            queries = queries + self.self_attn(q=with_pe, k=with_pe, v=queries)
        queries = self.norm1(queries)

        keys_with_pe = keys + key_pe
        queries = queries + self.cross_attn_token_to_image(
            q=queries + query_pe, k=keys_with_pe, v=keys
        )
        queries = self.norm2(queries)

        queries = self.norm3(queries + self.mlp(queries))

        # The image side reads the tokens as they are after this block's MLP.
        keys = keys + self.cross_attn_image_to_token(
            q=keys_with_pe, k=queries + query_pe, v=queries
        )
        keys = self.norm4(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """SAM's mask-decoder transformer: ``depth`` two-way blocks, then tokens read the image once
    more."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        """
        Args:
            depth: number of ``TwoWayAttentionBlock``.
            embedding_dim: width of tokens and image embedding.
            num_heads: heads of every attention; must divide the (downsampled) widths.
            mlp_dim: hidden width of the token MLPs.
            activation: activation class of the token MLPs.
            attention_downsample_rate: width reduction of the token/image cross-attentions.
        """
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Run the decoder body.

        Args:
            image_embedding: (B, C, H, W) image features.
            image_pe: (B, C, H, W) positional encoding of those features.
            point_embedding: (B, Nt, C) output + prompt tokens; also used as their PE.
        Returns:
            ``(tokens, image_tokens)`` of shapes (B, Nt, C) and (B, H*W, C).
        """
        image_tokens = image_embedding.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)

        queries, keys = point_embedding, image_tokens
        for layer in self.layers:
            queries, keys = layer(
                queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe
            )

        queries = queries + self.final_attn_token_to_image(
            q=queries + point_embedding, k=keys + image_pe, v=keys
        )
        return self.norm_final_attn(queries), keys
