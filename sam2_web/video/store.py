"""Compact per-frame results: binary masks as run lengths in RAM, or 1-bit PNGs on disk.

A 1080p frame's float logits for one object take 8 MB; its binary mask as run lengths takes a
few hundred bytes. The store keeps only what the user sees (a bool mask and a presence score per
object), never the logits, so a long clip's results cost little.

Encoding happens on a worker thread: :meth:`ResultStore.put` only queues the frame (whose masks
may still be on their way from the GPU, see :class:`~sam2_web.video.state.FrameMasks`), so the
tracking loop never waits for a copy, a run-length pass or a PNG write. A frame read before its
encoding finished is served from the queued masks.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from sam2_web.runlength import from_run_lengths, run_lengths
from sam2_web.video.background import SerialWorker
from sam2_web.video.state import FrameMasks


def _compact(mask: np.ndarray) -> np.ndarray:
    """The smaller of the mask's run lengths (uint32) and its packed bits (uint8): a ragged mask
    (thousands of runs) never takes more than one bit per pixel."""
    runs = run_lengths(mask)
    if runs.nbytes <= (mask.size + 7) // 8:
        return runs
    return np.packbits(np.asarray(mask, dtype=bool).ravel())


def _expand(stored: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if stored.dtype == np.uint8:  # packed bits
        return np.unpackbits(stored, count=shape[0] * shape[1]).reshape(shape).astype(bool)
    return from_run_lengths(stored, shape)


@dataclass
class _StoredFrame:
    obj_ids: list[int]
    scores: np.ndarray
    runs: Optional[list[np.ndarray]]  # run lengths or packed bits per object; None: in PNG files


class ResultStore:
    """Latest masks of every frame that has been segmented: in RAM as run lengths (or packed
    bits when those are smaller, so at most one bit per pixel), or as PNG files.

    Args:
        height, width: mask size (the clip's resolution).
        png_dir: when given, masks are written there as 1-bit PNGs (one per frame and object)
            instead of being kept in RAM.
    """

    def __init__(self, height: int, width: int, png_dir: Optional[str] = None):
        self.shape = (height, width)
        self.png_dir = png_dir
        self._frames: dict[int, _StoredFrame] = {}
        # Frames put but not encoded yet: frame -> (sequence number, masks). Only the newest put
        # of a frame lands in _frames, whatever order the worker finishes in.
        self._queued: dict[int, tuple[int, FrameMasks]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._worker = SerialWorker("sam2web-results")

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames.keys() | self._queued.keys())

    def __contains__(self, frame_idx: int) -> bool:
        with self._lock:
            return frame_idx in self._frames or frame_idx in self._queued

    def put(self, result: FrameMasks) -> None:
        """Store (replace) the masks of ``result.frame_idx``; they are encoded on the worker thread.

        Raises:
            ValueError: masks of another size than the store's.
            OSError: writing an earlier frame's PNGs failed (raised by the next call after it).
        """
        if tuple(result.shape[1:]) != self.shape:
            raise ValueError(f"masks are {tuple(result.shape[1:])}, the store holds {self.shape}")
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._queued[result.frame_idx] = (seq, result)
        self._worker.submit(self._encode, seq, result)

    def flush(self) -> None:
        """Wait until every queued frame is encoded; raises what a failed encoding raised."""
        self._worker.flush()

    def _encode(self, seq: int, result: FrameMasks) -> None:
        masks = result.masks  # waits for the copy off the device, on this thread
        runs = None
        if self.png_dir is None:
            runs = [_compact(m) for m in masks]
        else:
            os.makedirs(self.png_dir, exist_ok=True)
            for obj_id, mask in zip(result.obj_ids, masks):
                Image.fromarray(mask).convert("1").save(self._png(result.frame_idx, obj_id), optimize=True)
        stored = _StoredFrame(list(result.obj_ids), result.scores.copy(), runs)
        with self._lock:
            if self._queued.get(result.frame_idx, (None,))[0] == seq:
                del self._queued[result.frame_idx]
                self._frames[result.frame_idx] = stored

    def get(self, frame_idx: int, obj_ids: Optional[list[int]] = None) -> Optional[FrameMasks]:
        """Masks of ``frame_idx`` (None if never segmented), restricted/ordered to ``obj_ids``.

        Objects in ``obj_ids`` that have no stored mask on the frame get an empty mask and score 0.
        """
        with self._lock:
            queued = self._queued.get(frame_idx)
            stored = self._frames.get(frame_idx) if queued is None else None
        if queued is not None:
            result = queued[1]
            return self._pick(frame_idx, result.obj_ids, result.scores, lambda j: result.masks[j], obj_ids)
        if stored is None:
            return None

        def mask_of(j: int) -> np.ndarray:
            if stored.runs is not None:
                return _expand(stored.runs[j], self.shape)
            with Image.open(self._png(frame_idx, stored.obj_ids[j])) as png:
                return np.asarray(png.convert("L")) > 0

        return self._pick(frame_idx, stored.obj_ids, stored.scores, mask_of, obj_ids)

    def _pick(self, frame_idx: int, have: list[int], have_scores: np.ndarray, mask_of, obj_ids) -> FrameMasks:
        wanted = list(have) if obj_ids is None else list(obj_ids)
        masks = np.zeros((len(wanted), *self.shape), dtype=bool)
        scores = np.zeros(len(wanted), dtype=np.float32)
        for k, obj_id in enumerate(wanted):
            if obj_id not in have:
                continue
            j = have.index(obj_id)
            scores[k] = have_scores[j]
            masks[k] = mask_of(j)
        return FrameMasks(frame_idx, wanted, masks, scores)

    def frames(self) -> list[int]:
        """Indices of the stored frames, ascending."""
        with self._lock:
            return sorted(self._frames.keys() | self._queued.keys())

    def iter(self, obj_ids: Optional[list[int]] = None) -> Iterator[FrameMasks]:
        """Stored results in frame order (see :meth:`get` for ``obj_ids``)."""
        for frame_idx in self.frames():
            yield self.get(frame_idx, obj_ids)

    def drop_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` on every frame."""
        self.flush()
        for frame_idx, stored in self._frames.items():
            if obj_id in stored.obj_ids:
                j = stored.obj_ids.index(obj_id)
                stored.obj_ids.pop(j)
                stored.scores = np.delete(stored.scores, j)
                if stored.runs is not None:
                    stored.runs.pop(j)
                else:
                    os.remove(self._png(frame_idx, obj_id))

    def nbytes(self) -> int:
        """RAM held by the stored masks and scores (once the queued frames are encoded)."""
        self.flush()
        return sum(
            s.scores.nbytes + (sum(r.nbytes for r in s.runs) if s.runs is not None else 0)
            for s in self._frames.values()
        )

    def clear(self) -> None:
        """Forget every frame."""
        self._worker.flush(raise_errors=False)
        with self._lock:
            self._queued.clear()
        self._frames.clear()
        if self.png_dir is not None:
            shutil.rmtree(self.png_dir, ignore_errors=True)

    def close(self) -> None:
        """Forget every frame and stop the worker thread."""
        self.clear()
        self._worker.close()

    def _png(self, frame_idx: int, obj_id: int) -> str:
        return os.path.join(self.png_dir, f"{frame_idx:06d}_obj{obj_id}.png")
