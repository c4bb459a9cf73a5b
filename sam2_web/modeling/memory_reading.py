"""Which other frames a frame attends to, and how their outputs become memory tokens.

:class:`~sam2_web.modeling.sam2_base.SAM2Base` holds the weights and runs memory attention;
this module holds the rules that decide what a frame reads and the code that gathers it into
tokens. Nothing here owns parameters: the settings come in as a :class:`MemoryReadConfig`
(built once by the model) and the two learnt pieces used for positions are passed in.

Lookups go through the :class:`MemorySource` protocol, so a video engine can keep a bounded
window of past frames instead of every frame's outputs. For frame ``f`` the model reads:

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
from typing import Callable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch import nn

from sam2_web.modeling.common import get_1d_sine_pe, select_closest_cond_frames


class MemoryEntry(Protocol):
    """What is read of one frame's output: its spatial memory and its object pointer.

    The memory is a (B, mem_dim, h, w) map, or (B, N, mem_dim) tokens for a model with a spatial
    perceiver; its position encoding has the same shape (or is a sequence whose last element is it).
    """

    maskmem_features: torch.Tensor
    maskmem_pos_enc: Union[torch.Tensor, Sequence[torch.Tensor]]
    obj_ptr: torch.Tensor  # (B, C)


class MemorySource(Protocol):
    """Where :meth:`SAM2Base.track_step` finds the outputs of the other frames of one object."""

    def cond_frame_outputs(self) -> Mapping[int, MemoryEntry]:
        """All conditioning (prompted) frames' entries, keyed by frame index; the iteration
        order is the order their memories are concatenated in."""
        ...

    def non_cond_frame_output(self, frame_idx: int) -> Optional[MemoryEntry]:
        """The tracked (non-prompted) frame's entry, or None if it is not held."""
        ...


@dataclass(frozen=True)
class MemoryReadConfig:
    """The model's memory-reading switches (same names and meaning as the ``SAM2Base`` kwargs),
    plus the token widths ``hidden_dim`` (C) and ``mem_dim``."""

    num_maskmem: int
    memory_temporal_stride_for_eval: int
    max_cond_frames_in_attn: int
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


@dataclass(frozen=True)
class MemoryTokens:
    """What memory attention reads for one frame.

    Attributes:
        tokens / pos: (N, B, mem_dim) memory tokens and their position encodings: the spatial
            memories of ``num_spatial_mem`` frames (the same number of tokens each), then
            ``num_obj_ptr_tokens`` pointer tokens.
        num_spatial_mem: frames whose spatial memory is in ``tokens``.
        num_obj_ptr_tokens: the trailing tokens that are object pointers (no 2D position).
    """

    tokens: torch.Tensor
    pos: torch.Tensor
    num_spatial_mem: int
    num_obj_ptr_tokens: int


def gather_memory(
    config: MemoryReadConfig,
    source: MemorySource,
    frame_idx: int,
    num_frames: Optional[int],
    track_in_reverse: bool,
    *,
    maskmem_tpos_enc: torch.Tensor,
    obj_ptr_tpos_proj: nn.Module,
    batch: int,
    device: torch.device,
    memory_frames: Optional[List[Tuple[int, int]]] = None,
) -> MemoryTokens:
    """Gather the spatial memories and object pointers that frame ``frame_idx`` attends to.

    Args:
        config: the model's memory-reading settings.
        source: the other frames' outputs of this object.
        frame_idx: the frame being segmented.
        num_frames: clip length (bounds the pointer window), or None if unknown.
        track_in_reverse: tracking towards earlier frames.
        maskmem_tpos_enc: (num_maskmem, 1, 1, mem_dim) temporal encodings of memories.
        obj_ptr_tpos_proj: maps pointer temporal encodings to ``mem_dim``.
        batch / device: batch size and device of the current frame's tokens.
        memory_frames: ``[(t_pos, frame)]`` of the non-conditioning memories to read instead of
            :meth:`MemoryReadConfig.memory_frame_indices` (SAMURAI's selection), or None.
    Returns:
        The :class:`MemoryTokens`, conditioning frames first.
    Raises:
        ValueError: no frame has a prompt yet.
    """
    cond_outputs = source.cond_frame_outputs()
    if len(cond_outputs) == 0:
        raise ValueError(
            f"frame {frame_idx} is tracked but no frame has a prompt yet; add a prompt first"
        )
    selected, unselected = select_closest_cond_frames(frame_idx, cond_outputs, config.max_cond_frames_in_attn)

    def non_cond(t: int) -> Optional[MemoryEntry]:
        # A conditioning frame left out of the selection still counts as a recent memory.
        out = source.non_cond_frame_output(t)
        return out if out is not None else unselected.get(t)

    # Conditioning frames first, all at temporal position 0.
    entries = [(0, out) for out in selected.values()]
    if memory_frames is None:
        memory_frames = config.memory_frame_indices(frame_idx, track_in_reverse)
    entries += [(t_pos, non_cond(t)) for t_pos, t in memory_frames]
    mem_list, pos_list = [], []
    for t_pos, entry in entries:
        if entry is None:
            continue  # before the clip's start, or not tracked yet
        feats = entry.maskmem_features.to(device, non_blocking=True)
        mem_list.append(_as_tokens(feats))
        enc = entry.maskmem_pos_enc
        enc = enc[-1] if isinstance(enc, (list, tuple)) else enc
        pos_list.append(_as_tokens(enc.to(device, non_blocking=True)) + maskmem_tpos_enc[config.num_maskmem - t_pos - 1])
    num_spatial_mem = len(mem_list)

    num_ptr_tokens = 0
    if config.use_obj_ptrs_in_encoder:
        ptrs = gather_obj_ptrs(
            config, obj_ptr_tpos_proj, frame_idx, selected, non_cond, num_frames, track_in_reverse, batch, device
        )
        if ptrs is not None:
            mem_list.append(ptrs[0])
            pos_list.append(ptrs[1])
            num_ptr_tokens = ptrs[0].shape[0]
    return MemoryTokens(torch.cat(mem_list, dim=0), torch.cat(pos_list, dim=0), num_spatial_mem, num_ptr_tokens)


def _as_tokens(x: torch.Tensor) -> torch.Tensor:
    """A stored memory as (N, B, C) tokens: a (B, C, h, w) map, or (B, N, C) perceiver latents."""
    if x.ndim == 3:
        return x.transpose(0, 1)
    return x.flatten(2).permute(2, 0, 1)


def gather_obj_ptrs(
    config: MemoryReadConfig,
    obj_ptr_tpos_proj: nn.Module,
    frame_idx: int,
    selected_cond: Mapping[int, MemoryEntry],
    non_cond: Callable[[int], Optional[MemoryEntry]],
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
        ptrs.append(out.obj_ptr)
    for t_diff, t in config.obj_ptr_frame_indices(frame_idx, num_frames, track_in_reverse):
        out = non_cond(t)
        if out is not None:
            offsets.append(t_diff)
            ptrs.append(out.obj_ptr)
    if not ptrs:
        return None

    c, mem_dim = config.hidden_dim, config.mem_dim
    obj_ptrs = torch.stack([p.to(device, non_blocking=True) for p in ptrs], dim=0)  # (P, B, C)
    if config.add_tpos_enc_to_obj_ptrs:
        # Offsets normalised by the window size; a window of 1 would divide by zero.
        t_diff_max = max(config.max_obj_ptrs(num_frames) - 1, 1)
        tpos_dim = c if config.proj_tpos_enc_in_obj_ptrs else mem_dim
        # Built on the host and sent without waiting: torch.tensor(..., device=cuda) would sync.
        obj_pos = torch.tensor(offsets).to(device, non_blocking=True) / t_diff_max
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
