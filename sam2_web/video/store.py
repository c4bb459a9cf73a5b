"""Compact per-frame results: binary masks as run lengths in RAM, or 1-bit PNGs on disk.

A 1080p frame's float logits for one object take 8 MB; its binary mask as run lengths takes a
few hundred bytes. The store keeps only what the user sees (a bool mask and a presence score per
object), never the logits, so a long clip's results cost little.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from sam2_web.video.state import FrameMasks


def rle_encode(mask: np.ndarray) -> np.ndarray:
    """Row-major run lengths of a bool mask, starting with a (possibly empty) run of False."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.uint32)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.uint32)


def rle_decode(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode` for a mask of ``shape``."""
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs.astype(np.int64)).reshape(shape)


def _compact(mask: np.ndarray) -> np.ndarray:
    """The smaller of the mask's run lengths (uint32) and its packed bits (uint8): a ragged mask
    (thousands of runs) never takes more than one bit per pixel."""
    runs = rle_encode(mask)
    if runs.nbytes <= (mask.size + 7) // 8:
        return runs
    return np.packbits(np.asarray(mask, dtype=bool).ravel())


def _expand(stored: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if stored.dtype == np.uint8:  # packed bits
        return np.unpackbits(stored, count=shape[0] * shape[1]).reshape(shape).astype(bool)
    return rle_decode(stored, shape)


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

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._frames

    def put(self, result: FrameMasks) -> None:
        """Store (replace) the masks of ``result.frame_idx``."""
        if result.masks.shape[1:] != self.shape:
            raise ValueError(f"masks are {result.masks.shape[1:]}, the store holds {self.shape}")
        runs = None
        if self.png_dir is None:
            runs = [_compact(m) for m in result.masks]
        else:
            os.makedirs(self.png_dir, exist_ok=True)
            for obj_id, mask in zip(result.obj_ids, result.masks):
                Image.fromarray(mask).convert("1").save(self._png(result.frame_idx, obj_id), optimize=True)
        self._frames[result.frame_idx] = _StoredFrame(list(result.obj_ids), result.scores.copy(), runs)

    def get(self, frame_idx: int, obj_ids: Optional[list[int]] = None) -> Optional[FrameMasks]:
        """Masks of ``frame_idx`` (None if never segmented), restricted/ordered to ``obj_ids``.

        Objects in ``obj_ids`` that have no stored mask on the frame get an empty mask and score 0.
        """
        stored = self._frames.get(frame_idx)
        if stored is None:
            return None
        wanted = list(stored.obj_ids) if obj_ids is None else list(obj_ids)
        masks = np.zeros((len(wanted), *self.shape), dtype=bool)
        scores = np.zeros(len(wanted), dtype=np.float32)
        for k, obj_id in enumerate(wanted):
            if obj_id not in stored.obj_ids:
                continue
            j = stored.obj_ids.index(obj_id)
            scores[k] = stored.scores[j]
            if stored.runs is not None:
                masks[k] = _expand(stored.runs[j], self.shape)
            else:
                with Image.open(self._png(frame_idx, obj_id)) as png:
                    masks[k] = np.asarray(png.convert("L")) > 0
        return FrameMasks(frame_idx, wanted, masks, scores)

    def frames(self) -> list[int]:
        """Indices of the stored frames, ascending."""
        return sorted(self._frames)

    def iter(self, obj_ids: Optional[list[int]] = None) -> Iterator[FrameMasks]:
        """Stored results in frame order (see :meth:`get` for ``obj_ids``)."""
        for frame_idx in self.frames():
            yield self.get(frame_idx, obj_ids)

    def drop_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` on every frame."""
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
        """RAM held by the stored masks and scores."""
        return sum(
            s.scores.nbytes + (sum(r.nbytes for r in s.runs) if s.runs is not None else 0)
            for s in self._frames.values()
        )

    def clear(self) -> None:
        """Forget every frame."""
        self._frames.clear()
        if self.png_dir is not None:
            shutil.rmtree(self.png_dir, ignore_errors=True)

    def _png(self, frame_idx: int, obj_id: int) -> str:
        return os.path.join(self.png_dir, f"{frame_idx:06d}_obj{obj_id}.png")
