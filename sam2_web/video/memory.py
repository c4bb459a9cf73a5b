"""Per-object memory bank whose RAM use does not grow with clip length.

The reference keeps every tracked frame's output (spatial memory, mask logits, object pointer)
in RAM forever. What the tracker actually reads when it processes frame ``f`` is:

* every conditioning (prompted) frame's output: few, user-made, always kept in RAM;
* the non-conditioning outputs of the frames ``SAM2Base.memory_frame_indices(f)`` (the last
  ``num_maskmem - 1`` frames at the memory stride) and ``SAM2Base.obj_ptr_frame_indices(f)``
  (the last ``max_obj_ptrs_in_encoder - 1`` frames, for their object pointers), on the side the
  pass comes from (before ``f`` going forward, after it going backward).

The rule: after each propagated frame, the bank keeps in RAM exactly the non-conditioning
outputs the *next* frame of the pass will read (after the last frame of a pass: what a frame one
step further would read, so a resumed or extended pass finds them in RAM) and evicts the rest;
conditioning outputs and the outputs of clicks not yet propagated stay in RAM. Evicted outputs
are not thrown away: a later correction click on a tracked frame, a pass started from a frame
in the middle, or the masks returned by a click read the outputs of earlier passes around that
frame, and the reference would find them. With ``history="disk"`` (the default) evicted outputs
go to one small file each in the session's temporary folder and are read back on demand, so
results stay identical to the reference while RAM stays bounded (disk use grows by about one
spatial memory + one low-res mask per frame and object, and is freed by ``close()``);
``history="ram"`` keeps them in RAM as the reference does; ``history="drop"`` discards them
(bounded RAM and disk for very long clips, at the price that a correction or a pass reading
memories of an earlier pass sees fewer memories than the reference would).

Spilling never stalls the tracking loop: an evicted output's copy to the host starts at once
(``non_blocking``, see :class:`~sam2_web.video.background.HostCopy`) and the file is written by
the session's :class:`~sam2_web.video.background.SerialWorker`; until it is written, reads are
served from the output itself.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Iterator, Optional

import torch

from sam2_web.modeling.motion import FrameScores, MotionState
from sam2_web.video.background import HostCopy, SerialWorker
from sam2_web.video.state import FrameOutput

if TYPE_CHECKING:
    from sam2_web.modeling.sam2_base import SAM2Base

HISTORY_MODES = ("disk", "ram", "drop")


def memory_reach(model: "SAM2Base", frame_idx: int, reverse: bool, num_frames: int) -> set[int]:
    """Frames whose tracked (non-conditioning) outputs the model reads for ``frame_idx``."""
    reach = {t for _, t in model.memory_frame_indices(frame_idx, reverse)}
    if model.use_obj_ptrs_in_encoder:
        reach |= {t for _, t in model.obj_ptr_frame_indices(frame_idx, num_frames, reverse)}
    return reach


def spilled_bytes_per_frame(model: "SAM2Base", memory_dtype: str) -> int:
    """Disk one evicted frame of one object takes with ``history="disk"`` (an upper bound, for
    budgets): its spatial memory (``mem_dim`` x (S/16)^2 in ``memory_dtype``) and low-res mask logits
    ((S/4)^2 float32) for a model input of S pixels, plus the pointer and the file's overhead."""
    side = int(model.image_size)
    item = 2 if memory_dtype == "bfloat16" else 4
    return (side // 4) ** 2 * 4 + int(model.mem_dim) * (side // 16) ** 2 * item + 8192


class MemoryBank:
    """Conditioning and non-conditioning outputs of one object, with bounded RAM.

    Args:
        uid: a session-unique number naming this object's spill files (object ids can be
            reused after removal, uids are not).
        history: ``"disk"`` spills evicted outputs to ``spill_dir``; ``"ram"`` keeps them;
            ``"drop"`` discards them.
        spill_dir: folder for spilled outputs (created on first use); required for "disk".
        writer: the worker thread that writes and deletes spill files (shared by a session's
            banks); None does it on the calling thread.
    """

    def __init__(
        self, uid: int, history: str = "disk", spill_dir: Optional[str] = None, writer: Optional[SerialWorker] = None
    ):
        if history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {HISTORY_MODES}, got {history!r}")
        if history == "disk" and spill_dir is None:
            raise ValueError("history='disk' needs a spill_dir")
        self.uid = uid
        self.history = history
        self._spill_dir = spill_dir
        # Insertion order matters: it is the order the memories are concatenated in.
        self.cond: dict[int, FrameOutput] = {}
        self._recent: dict[int, FrameOutput] = {}
        self._spilled: set[int] = set()
        # SAMURAI's per-frame scores of every held non-conditioning output (RAM or disk): its
        # memory rule scans them each frame, so they never wait for a spill file.
        self._scores: dict[int, FrameScores] = {}
        # Spilled outputs whose file is not written yet: reads take them from here.
        self._writing: dict[int, FrameOutput] = {}
        self._writer = writer
        self._lock = threading.Lock()
        # Device of the spilled tensors, so reads hand them back where the tracker expects.
        self._device = torch.device("cpu")
        # The memory position encoding is the same for every frame; set by the session.
        self.maskmem_pos_enc: Optional[list[torch.Tensor]] = None

    # -- what the model reads (sam2_web.modeling.memory_reading.MemorySource protocol) --------
    def cond_frame_outputs(self) -> dict[int, FrameOutput]:
        """Conditioning frames' outputs, keyed by frame index, in insertion order."""
        return self.cond

    def non_cond_frame_output(self, frame_idx: int) -> Optional[FrameOutput]:
        """Same as :meth:`get`."""
        return self.get(frame_idx)

    def frame_scores(self, frame_idx: int) -> Optional[FrameScores]:
        """SAMURAI's scores of the tracked output of ``frame_idx`` (None: no such output, or
        tracked without SAMURAI)."""
        return self._scores.get(frame_idx)

    # -- non-conditioning outputs -------------------------------------------------------------
    def get(self, frame_idx: int) -> Optional[FrameOutput]:
        """Return the non-conditioning output of ``frame_idx`` (from RAM or disk), or None."""
        out = self._recent.get(frame_idx)
        if out is None and frame_idx in self._spilled:
            out = self._in_flight(frame_idx) or self._load(frame_idx)
        return out

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._recent or frame_idx in self._spilled

    def put(self, frame_idx: int, out: FrameOutput) -> None:
        """Store (or replace) the non-conditioning output of ``frame_idx`` in RAM."""
        self._drop_spilled(frame_idx)
        self._recent[frame_idx] = out
        if out.scores is not None:
            self._scores[frame_idx] = out.scores
        else:
            self._scores.pop(frame_idx, None)

    def pop(self, frame_idx: int) -> Optional[FrameOutput]:
        """Remove and return the non-conditioning output of ``frame_idx`` (None if absent)."""
        out = self._recent.pop(frame_idx, None)
        if out is None and frame_idx in self._spilled:
            out = self._in_flight(frame_idx) or self._load(frame_idx)
            self._drop_spilled(frame_idx)
        self._scores.pop(frame_idx, None)
        return out

    def frames(self) -> set[int]:
        """All frames with a non-conditioning output, in RAM or spilled."""
        return set(self._recent) | self._spilled

    def evict(self, keep: set[int]) -> None:
        """Move non-conditioning outputs of frames outside ``keep`` out of RAM."""
        if self.history == "ram":
            return
        for frame_idx in [t for t in self._recent if t not in keep]:
            out = self._recent.pop(frame_idx)
            if self.history == "disk":
                self._save(frame_idx, out)
            else:
                self._scores.pop(frame_idx, None)

    def ram_frames(self) -> set[int]:
        """Frames whose non-conditioning output is currently held in RAM."""
        return set(self._recent)

    def ram_bytes(self) -> int:
        """Approximate RAM held by this bank's tensors."""
        outs: Iterator[FrameOutput] = iter([*self.cond.values(), *self._recent.values()])
        return sum(o.nbytes() for o in outs)

    def clear(self) -> None:
        """Forget every output (conditioning and not) and delete spill files."""
        self.cond.clear()
        self._recent.clear()
        self._scores.clear()
        for frame_idx in list(self._spilled):
            self._drop_spilled(frame_idx)

    # -- spill files ---------------------------------------------------------------------------
    def _path(self, frame_idx: int) -> str:
        return os.path.join(self._spill_dir, f"obj{self.uid}_f{frame_idx}.pt")

    def _save(self, frame_idx: int, out: FrameOutput) -> None:
        tensors = {
            "pred_masks": out.pred_masks,
            "obj_ptr": out.obj_ptr,
            "object_score_logits": out.object_score_logits,
        }
        if out.maskmem_features is not None:
            tensors["maskmem_features"] = out.maskmem_features
        # SAMURAI's filter and scores go with the frame's memory (host tensors already).
        if out.motion is not None:
            tensors.update({f"motion_{k}": t for k, t in out.motion.as_tensors().items()})
        if out.scores is not None:
            tensors["scores"] = out.scores.as_tensor()
        copies = {k: HostCopy(t) for k, t in tensors.items()}  # started now, waited for by the writer
        self._device = out.pred_masks.device
        with self._lock:
            self._writing[frame_idx] = out
        self._spilled.add(frame_idx)
        self._run(self._write, frame_idx, out, copies)

    def _write(self, frame_idx: int, out: FrameOutput, copies: dict[str, HostCopy]) -> None:
        os.makedirs(self._spill_dir, exist_ok=True)
        torch.save({k: c.result() for k, c in copies.items()}, self._path(frame_idx))
        with self._lock:
            if self._writing.get(frame_idx) is out:  # not dropped or re-spilled meanwhile
                del self._writing[frame_idx]

    def _in_flight(self, frame_idx: int) -> Optional[FrameOutput]:
        with self._lock:
            return self._writing.get(frame_idx)

    def _run(self, fn, *args) -> None:
        # File operations go through one thread in order, so a delete never overtakes its write.
        if self._writer is None:
            fn(*args)
        else:
            self._writer.submit(fn, *args)

    def _load(self, frame_idx: int) -> FrameOutput:
        record = torch.load(self._path(frame_idx), map_location="cpu", weights_only=True)
        device = self._device
        has_memory = "maskmem_features" in record
        motion = {k[len("motion_"):]: t for k, t in record.items() if k.startswith("motion_")}

        def back(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)  # from pageable memory: staged, never waits for the GPU

        return FrameOutput(
            pred_masks=back(record["pred_masks"]),
            obj_ptr=back(record["obj_ptr"]),
            object_score_logits=back(record["object_score_logits"]),
            maskmem_features=back(record["maskmem_features"]) if has_memory else None,
            maskmem_pos_enc=self.maskmem_pos_enc if has_memory else None,
            motion=MotionState.from_tensors(motion) if motion else None,
            scores=FrameScores.from_tensor(record["scores"]) if "scores" in record else None,
        )

    def _drop_spilled(self, frame_idx: int) -> None:
        if frame_idx in self._spilled:
            self._scores.pop(frame_idx, None)
            self._spilled.discard(frame_idx)
            with self._lock:
                self._writing.pop(frame_idx, None)
            self._run(_remove_file, self._path(frame_idx))


def _remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
