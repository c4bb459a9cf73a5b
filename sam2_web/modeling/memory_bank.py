"""What the tracker reads about other frames, and how it reads it.

:class:`~sam2_web.modeling.sam2_base.SAM2Base` holds the weights; this module holds the rules
that decide which past frames a frame attends to and the code that turns those frames' outputs
into memory tokens. Nothing here owns parameters: the settings come in as a
:class:`MemoryReadConfig` (plain values) and the learnt tensors/modules as a
:class:`MemoryWeights` borrowed from the model for one call.

Lookups go through the :class:`MemoryBank` protocol, so a video engine can keep a bounded window
of past frames instead of every frame's outputs. For frame ``f`` the model reads:

* the conditioning (prompted) frames: all of them, or the ``max_cond_frames_in_attn`` closest;
* the non-conditioning memories of the frames given by :meth:`MemoryReadConfig.memory_frame_indices`
  (``num_maskmem - 1`` frames: ``f-1`` and then every ``memory_temporal_stride_for_eval``-th
  frame before it; mirrored when tracking in reverse);
* object pointers of the frames given by :meth:`MemoryReadConfig.obj_ptr_frame_indices`
  (up to ``max_obj_ptrs_in_encoder - 1`` frames immediately before ``f``) plus those of the
  selected conditioning frames (only the ones in the past with ``only_obj_ptrs_in_the_past_for_eval``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Protocol, Tuple, Union

import torch
from torch import nn

from sam2_web.modeling.common import get_1d_sine_pe, select_closest_cond_frames


class MemoryBank(Protocol):
    """What :meth:`SAM2Base._prepare_memory_conditioned_features` reads about past frames.

    An entry (a frame's output) may be a mapping or an object; it must provide
    ``maskmem_features`` (B, mem_dim, h, w), ``maskmem_pos_enc`` (a list whose last element is
    the (B, mem_dim, h, w) position encoding, or that tensor itself) and ``obj_ptr`` (B, C).
    A model with a spatial perceiver stores its memories as tokens instead: (B, N, mem_dim)
    features and encodings.
    """

    def cond_frame_outputs(self) -> Mapping[int, Any]:
        """All conditioning (prompted) frames' entries, keyed by frame index."""
        ...

    def non_cond_frame_output(self, frame_idx: int) -> Optional[Any]:
        """The tracked (non-prompted) frame's entry, or None if it is not held."""
        ...


class OutputDictMemory:
    """:class:`MemoryBank` over the reference's ``{"cond_frame_outputs": {t: out},
    "non_cond_frame_outputs": {t: out}}`` dict (the reference-compatible API passes this)."""

    def __init__(self, output_dict: Mapping[str, Mapping[int, Any]]) -> None:
        self._cond = output_dict["cond_frame_outputs"]
        self._non_cond = output_dict["non_cond_frame_outputs"]

    def cond_frame_outputs(self) -> Mapping[int, Any]:
        """The ``cond_frame_outputs`` dict itself."""
        return self._cond

    def non_cond_frame_output(self, frame_idx: int) -> Optional[Any]:
        """``non_cond_frame_outputs.get(frame_idx)``."""
        return self._non_cond.get(frame_idx)


def as_memory_bank(output_dict: Union[MemoryBank, Mapping[str, Any]]) -> MemoryBank:
    """Wrap the reference's output dict in :class:`OutputDictMemory`; a bank is returned as is."""
    if isinstance(output_dict, Mapping):
        return OutputDictMemory(output_dict)
    return output_dict


def entry_field(entry: Any, name: str) -> Any:
    """Read ``name`` from a frame entry that is either a mapping or an object."""
    if isinstance(entry, Mapping):
        return entry[name]
    return getattr(entry, name)


@dataclass(frozen=True)
class MemoryReadConfig:
    """The model's memory-reading switches (same names and meaning as the ``SAM2Base`` kwargs),
    plus the token widths ``hidden_dim`` (C) and ``mem_dim``."""

    num_maskmem: int
    memory_temporal_stride_for_eval: int
    max_cond_frames_in_attn: int
    directly_add_no_mem_embed: bool
    use_obj_ptrs_in_encoder: bool
    max_obj_ptrs_in_encoder: int
    add_tpos_enc_to_obj_ptrs: bool
    proj_tpos_enc_in_obj_ptrs: bool
    use_signed_tpos_enc_to_obj_ptrs: bool
    only_obj_ptrs_in_the_past_for_eval: bool
    hidden_dim: int
    mem_dim: int

    def memory_frame_indices(self, frame_idx: int, track_in_reverse: bool = False) -> List[Tuple[int, int]]:
        """Past frames whose non-conditioning memory frame ``frame_idx`` attends to.

        Returns ``[(t_pos, frame)]`` for ``t_pos = 1 .. num_maskmem - 1``: ``t_pos`` selects the
        temporal encoding (``num_maskmem - 1`` is the adjacent frame). The adjacent frame is
        always used; the others are every ``memory_temporal_stride_for_eval``-th frame before it
        (after it, when tracking in reverse). Frames may be negative or past the clip's end;
        such frames simply have no memory.
        """
        stride = self.memory_temporal_stride_for_eval
        picked = []
        for t_pos in range(1, self.num_maskmem):
            frames_back = self.num_maskmem - t_pos
            if frames_back == 1:
                t = frame_idx + 1 if track_in_reverse else frame_idx - 1
            elif not track_in_reverse:
                # Nearest multiple of the stride at or before frame_idx - 2, then further back.
                t = ((frame_idx - 2) // stride) * stride - (frames_back - 2) * stride
            else:
                t = -(-(frame_idx + 2) // stride) * stride + (frames_back - 2) * stride
            picked.append((t_pos, t))
        return picked

    def obj_ptr_frame_indices(
        self, frame_idx: int, num_frames: Optional[int], track_in_reverse: bool = False
    ) -> List[Tuple[int, int]]:
        """Non-conditioning frames whose object pointers frame ``frame_idx`` attends to.

        Returns ``[(t_diff, frame)]``: the up to ``max_obj_ptrs_in_encoder - 1`` frames right
        before ``frame_idx`` (after it in reverse), stopping at the clip's ends.
        """
        limit = self.max_obj_ptrs(num_frames)
        picked = []
        for t_diff in range(1, limit):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            picked.append((t_diff, t))
        return picked

    def max_obj_ptrs(self, num_frames: Optional[int]) -> int:
        """Size of the object-pointer window: ``max_obj_ptrs_in_encoder``, capped by the clip length."""
        if num_frames is None:
            return self.max_obj_ptrs_in_encoder
        return min(num_frames, self.max_obj_ptrs_in_encoder)


@dataclass(frozen=True, eq=False)
class MemoryWeights:
    """The model's learnt pieces that reading memory uses, borrowed (not copied) for one call.

    ``maskmem_tpos_enc`` (num_maskmem, 1, 1, mem_dim) temporal encodings of memories;
    ``no_mem_embed`` / ``no_mem_pos_enc`` (1, 1, C) the stand-in memory of a first prompted frame;
    ``obj_ptr_tpos_proj`` maps pointer temporal encodings to ``mem_dim``; ``memory_attention``
    fuses the current frame with the memory tokens.
    """

    maskmem_tpos_enc: torch.Tensor
    no_mem_embed: torch.Tensor
    no_mem_pos_enc: torch.Tensor
    obj_ptr_tpos_proj: nn.Module
    memory_attention: nn.Module


def condition_on_memory(
    config: MemoryReadConfig,
    weights: MemoryWeights,
    frame_idx: int,
    is_init_cond_frame: bool,
    current_vision_feats: List[torch.Tensor],
    current_vision_pos_embeds: List[torch.Tensor],
    bank: MemoryBank,
    num_frames: Optional[int],
    track_in_reverse: bool = False,
) -> torch.Tensor:
    """Fuse the current frame's lowest-resolution tokens with the memory of other frames.

    Args:
        config / weights: the model's memory-reading settings and learnt pieces.
        frame_idx: the frame being segmented.
        is_init_cond_frame: a prompted frame with no earlier memory (no memory attention).
        current_vision_feats / current_vision_pos_embeds: (HW, B, C) tokens; the last is used.
        bank: the other frames' outputs.
        num_frames: clip length (bounds the pointer window), or None if unknown.
        track_in_reverse: tracking towards earlier frames.
    Returns:
        (HW, B, C) memory-conditioned tokens (the caller reshapes them to a map).
    Raises:
        ValueError: a non-initial frame without any conditioning frame in memory.
    """
    feats = current_vision_feats[-1]
    batch, device = feats.size(1), feats.device
    if config.num_maskmem == 0:  # SAM-on-images mode: no memory at all
        return feats

    if is_init_cond_frame:
        if config.directly_add_no_mem_embed:
            return feats + weights.no_mem_embed
        # A dummy memory token, since attention needs at least one key.
        memory = weights.no_mem_embed.expand(1, batch, config.mem_dim)
        memory_pos = weights.no_mem_pos_enc.expand(1, batch, config.mem_dim)
        num_obj_ptr_tokens, num_spatial_mem = 0, 1
    else:
        memory, memory_pos, num_obj_ptr_tokens, num_spatial_mem = gather_memory(
            config, weights, frame_idx, bank, num_frames, track_in_reverse, batch, device
        )

    # Stored memories may be bf16 (to save space) while the attention weights are float32;
    # cast so the matmuls agree. When float pointers are also present, concatenation has
    # already upcast the values exactly like this.
    attn_dtype = weights.maskmem_tpos_enc.dtype
    return weights.memory_attention(
        curr=current_vision_feats[-1:],
        curr_pos=current_vision_pos_embeds[-1:],
        memory=memory.to(attn_dtype),
        memory_pos=memory_pos.to(attn_dtype),
        num_obj_ptr_tokens=num_obj_ptr_tokens,
        num_spatial_mem=num_spatial_mem,
    )


def gather_memory(
    config: MemoryReadConfig,
    weights: MemoryWeights,
    frame_idx: int,
    bank: MemoryBank,
    num_frames: Optional[int],
    track_in_reverse: bool,
    batch: int,
    device: torch.device,
) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """Concatenate spatial memories and object pointers into (N, B, mem_dim) tokens.

    Returns ``(memory, memory_pos, num_obj_ptr_tokens, num_spatial_mem)``: the pointer tokens
    come last, after ``num_spatial_mem`` frames' memories. Raises ValueError when no frame has
    a prompt yet.
    """
    cond_outputs = bank.cond_frame_outputs()
    if len(cond_outputs) == 0:
        raise ValueError(
            f"frame {frame_idx} is tracked but no frame has a prompt yet; add a prompt first"
        )
    selected, unselected = select_closest_cond_frames(frame_idx, cond_outputs, config.max_cond_frames_in_attn)

    def non_cond(t: int) -> Optional[Any]:
        # A conditioning frame left out of the selection still counts as a recent memory.
        out = bank.non_cond_frame_output(t)
        return out if out is not None else unselected.get(t)

    # Conditioning frames first, all at temporal position 0.
    entries = [(0, out) for out in selected.values()]
    entries += [(t_pos, non_cond(t)) for t_pos, t in config.memory_frame_indices(frame_idx, track_in_reverse)]
    mem_list, pos_list = [], []
    for t_pos, entry in entries:
        if entry is None:
            continue  # before the clip's start, or not tracked yet
        feats = entry_field(entry, "maskmem_features").to(device, non_blocking=True)
        mem_list.append(_as_tokens(feats))
        enc = entry_field(entry, "maskmem_pos_enc")
        enc = enc[-1] if isinstance(enc, (list, tuple)) else enc
        pos_list.append(_as_tokens(enc.to(device)) + weights.maskmem_tpos_enc[config.num_maskmem - t_pos - 1])
    num_spatial_mem = len(mem_list)

    num_ptr_tokens = 0
    if config.use_obj_ptrs_in_encoder:
        ptrs = gather_obj_ptrs(
            config, weights.obj_ptr_tpos_proj, frame_idx, selected, non_cond, num_frames, track_in_reverse, batch, device
        )
        if ptrs is not None:
            mem_list.append(ptrs[0])
            pos_list.append(ptrs[1])
            num_ptr_tokens = ptrs[0].shape[0]
    return torch.cat(mem_list, dim=0), torch.cat(pos_list, dim=0), num_ptr_tokens, num_spatial_mem


def _as_tokens(x: torch.Tensor) -> torch.Tensor:
    """A stored memory as (N, B, C) tokens: a (B, C, h, w) map, or (B, N, C) perceiver latents."""
    if x.ndim == 3:
        return x.transpose(0, 1)
    return x.flatten(2).permute(2, 0, 1)


def gather_obj_ptrs(
    config: MemoryReadConfig,
    obj_ptr_tpos_proj: nn.Module,
    frame_idx: int,
    selected_cond: Mapping[int, Any],
    non_cond: Callable[[int], Optional[Any]],
    num_frames: Optional[int],
    track_in_reverse: bool,
    batch: int,
    device: torch.device,
) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Object pointer tokens and their temporal encodings, both (P', B, mem_dim), or None if
    there are none. ``non_cond(t)`` gives frame ``t``'s non-conditioning entry or None."""
    sign = -1 if track_in_reverse else 1
    if config.only_obj_ptrs_in_the_past_for_eval:
        cond = {t: o for t, o in selected_cond.items() if (t >= frame_idx if track_in_reverse else t <= frame_idx)}
    else:
        cond = dict(selected_cond)
    offsets, ptrs = [], []
    for t, out in cond.items():
        offsets.append((frame_idx - t) * sign if config.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t))
        ptrs.append(entry_field(out, "obj_ptr"))
    for t_diff, t in config.obj_ptr_frame_indices(frame_idx, num_frames, track_in_reverse):
        out = non_cond(t)
        if out is not None:
            offsets.append(t_diff)
            ptrs.append(entry_field(out, "obj_ptr"))
    if not ptrs:
        return None

    c, mem_dim = config.hidden_dim, config.mem_dim
    obj_ptrs = torch.stack([p.to(device) for p in ptrs], dim=0)  # (P, B, C)
    if config.add_tpos_enc_to_obj_ptrs:
        # Offsets normalised by the window size; a window of 1 would divide by zero.
        t_diff_max = max(config.max_obj_ptrs(num_frames) - 1, 1)
        tpos_dim = c if config.proj_tpos_enc_in_obj_ptrs else mem_dim
        obj_pos = torch.tensor(offsets, device=device) / t_diff_max
        obj_pos = obj_ptr_tpos_proj(get_1d_sine_pe(obj_pos, dim=tpos_dim))
        obj_pos = obj_pos.unsqueeze(1).expand(-1, batch, mem_dim)
    else:
        obj_pos = obj_ptrs.new_zeros(len(offsets), batch, mem_dim)
    if mem_dim < c:
        # A C-wide pointer becomes C / mem_dim memory tokens.
        split = c // mem_dim
        obj_ptrs = obj_ptrs.reshape(-1, batch, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        obj_pos = obj_pos.repeat_interleave(split, dim=0)
    return obj_ptrs, obj_pos
