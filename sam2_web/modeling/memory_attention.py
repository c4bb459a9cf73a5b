"""Memory attention: conditions the current frame's features on memories of past frames.

Each layer lets the current frame's tokens attend to themselves, then to the memory tokens
(spatial memories of earlier frames followed by object-pointer tokens), then runs an MLP.
Layers are pre-normalised. This runs once per frame and object batch while tracking and, on a
CPU, costs about as much as the image encoder, so the code avoids needless copies.
"""

from __future__ import annotations

from typing import List, Optional, Union

from torch import Tensor, nn

from sam2_web.modeling.common import get_activation_fn, get_clones
from sam2_web.modeling.sam.transformer import RoPEAttention, RoPEAttentionv2


class MemoryAttentionLayer(nn.Module):
    """Self-attention, cross-attention to memories, MLP; each pre-normalised and residual."""

    def __init__(
        self,
        activation: str,
        cross_attention: nn.Module,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        self_attention: nn.Module,
    ) -> None:
        """
        Args:
            activation: name of the MLP activation ("relu", "gelu").
            cross_attention: attention from frame tokens to memory tokens.
            d_model: width of the frame tokens.
            dim_feedforward: hidden width of the MLP.
            dropout: dropout of the residual branches and MLP (training only).
            pos_enc_at_attn: add the frame PE to queries/keys of the self-attention.
            pos_enc_at_cross_attn_keys: add the memory PE to the cross-attention keys.
            pos_enc_at_cross_attn_queries: add the frame PE to the cross-attention queries.
            self_attention: attention among frame tokens.
        """
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention

        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

        self.activation_str = activation
        self.activation = get_activation_fn(activation)

        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def _forward_sa(self, tgt: Tensor, query_pos: Optional[Tensor]) -> Tensor:
        normed = self.norm1(tgt)
        qk = normed + query_pos if self.pos_enc_at_attn else normed
        return tgt + self.dropout1(self.self_attn(qk, qk, v=normed))

    def _forward_ca(
        self,
        tgt: Tensor,
        memory: Tensor,
        query_pos: Optional[Tensor],
        pos: Optional[Tensor],
        num_k_exclude_rope: int = 0,
        num_k_frames: int = -1,
    ) -> Tensor:
        extra = {}
        if isinstance(self.cross_attn_image, RoPEAttentionv2):
            if num_k_frames < 0:
                raise ValueError(
                    "RoPEAttentionv2 cross-attention needs the number of memory frames "
                    "(num_spatial_mem); a memory with a single dummy token does not fit it."
                )
            extra["num_k_exclude_rope"] = num_k_exclude_rope
            extra["num_k_frames"] = num_k_frames
        elif num_k_exclude_rope > 0:
            if not isinstance(self.cross_attn_image, RoPEAttention):
                raise ValueError(
                    "Object-pointer tokens (num_k_exclude_rope > 0) need a RoPEAttention "
                    "cross-attention; fix the model config."
                )
            extra["num_k_exclude_rope"] = num_k_exclude_rope
        normed = self.norm2(tgt)
        attended = self.cross_attn_image(
            q=normed + query_pos if self.pos_enc_at_cross_attn_queries else normed,
            k=memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            v=memory,
            **extra,
        )
        return tgt + self.dropout2(attended)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        num_k_exclude_rope: int = 0,
        num_k_frames: int = -1,
    ) -> Tensor:
        """Update frame tokens with attention to memory tokens (all batch first).

        Args:
            tgt: (B, N, d_model) frame tokens, or (1, N, d_model) shared by B memories: the
                self-attention then runs once and its result is expanded to the B objects.
            memory: (B, M, mem_dim) memory tokens.
            pos: (B, M, mem_dim) memory PE.
            query_pos: (B, N, d_model) frame PE.
            num_k_exclude_rope: trailing memory tokens (object pointers) without rotary PE.
            num_k_frames: how many memory frames precede them (-1: unknown; RoPEAttentionv2
                cross-attention needs it).
        Returns:
            The updated (B, N, d_model) frame tokens.
        """
        tgt = self._forward_sa(tgt, query_pos)
        if tgt.shape[0] != memory.shape[0]:
            tgt = tgt.expand(memory.shape[0], -1, -1)
        tgt = self._forward_ca(tgt, memory, query_pos, pos, num_k_exclude_rope, num_k_frames)
        hidden = self.dropout(self.activation(self.linear1(self.norm3(tgt))))
        return tgt + self.dropout3(self.linear2(hidden))


class MemoryAttention(nn.Module):
    """A stack of ``MemoryAttentionLayer`` copies plus a final LayerNorm."""

    def __init__(
        self,
        d_model: int,
        pos_enc_at_input: bool,
        layer: nn.Module,
        num_layers: int,
        batch_first: bool = True,
    ) -> None:
        """
        Args:
            d_model: width of the frame tokens.
            pos_enc_at_input: add 0.1 x the frame PE to the input tokens.
            layer: the layer to repeat (deep-copied ``num_layers`` times).
            num_layers: how many layers.
            batch_first: the layers take batch-first tensors (inputs and output of this
                module are sequence first either way).
        """
        super().__init__()
        self.d_model = d_model
        self.layers = get_clones(layer, num_layers)
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first

    def forward(
        self,
        curr: Union[Tensor, List[Tensor]],
        memory: Tensor,
        curr_pos: Optional[Union[Tensor, List[Tensor]]] = None,
        memory_pos: Optional[Tensor] = None,
        num_obj_ptr_tokens: int = 0,
        num_spatial_mem: int = -1,
    ) -> Tensor:
        """Condition the current frame's tokens on the memory.

        Args:
            curr: (N, B, d_model) frame tokens, sequence first (or a one-element list of it);
                B may be 1 for a memory of several objects on one frame: the first layer's
                self-attention, which sees only the frame, then runs once for all of them.
            memory: (M, B, mem_dim) memory tokens: spatial memories, then object pointers.
            curr_pos: PE of ``curr``, same shape (or a one-element list).
            memory_pos: PE of ``memory``, same shape.
            num_obj_ptr_tokens: how many trailing memory tokens are object pointers.
            num_spatial_mem: how many memory frames precede them (each the same number of
                tokens); -1 when unknown, which only RoPEAttentionv2 cross-attention minds.
        Returns:
            (N, B, d_model) conditioned tokens, sequence first.
        Raises:
            ValueError: on list inputs of the wrong length or mismatched batch sizes.
        """
        if isinstance(curr, list):
            if not isinstance(curr_pos, list) or len(curr) != 1 or len(curr_pos) != 1:
                raise ValueError("curr and curr_pos must both be one-element lists or tensors.")
            curr, curr_pos = curr[0], curr_pos[0]
        if curr.shape[1] not in (1, memory.shape[1]):
            raise ValueError(
                f"curr has batch {curr.shape[1]} but memory has {memory.shape[1]}; "
                "both are sequence first (tokens, batch, channels)."
            )

        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos

        if self.batch_first:
            # Transposes are views; Linear/LayerNorm/SDPA take them without copying.
            output = output.transpose(0, 1)
            curr_pos = curr_pos.transpose(0, 1) if curr_pos is not None else None
            memory = memory.transpose(0, 1)
            memory_pos = memory_pos.transpose(0, 1) if memory_pos is not None else None

        for layer in self.layers:
            extra = {}
            if isinstance(layer.cross_attn_image, (RoPEAttention, RoPEAttentionv2)):
                extra["num_k_exclude_rope"] = num_obj_ptr_tokens
            if isinstance(layer.cross_attn_image, RoPEAttentionv2):
                extra["num_k_frames"] = num_spatial_mem
            output = layer(tgt=output, memory=memory, pos=memory_pos, query_pos=curr_pos, **extra)

        output = self.norm(output)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output
