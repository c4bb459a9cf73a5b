"""A clip's image-encoder features: encoded once per frame, kept in a bounded cache.

The image encoder is about half of the per-frame cost of tracking. The reference caches only
the last frame it encoded, so every propagation after a correction click encodes every frame
again. We keep the most recently used frames' features up to a byte budget in RAM and, when a
spill folder is given, move the least recently used ones to disk (also bounded) instead of
dropping them. The position encodings are identical for every frame (they depend only on the
feature map sizes), so only the feature maps themselves are stored per frame.

:class:`FrameFeatures` is what the tracker asks: a frame's features as the model's heads read
them, from the cache or, on a miss, from the image encoder. Frames the tracker will want next are
decoded, resized and normalised ahead on a background thread (:meth:`FrameFeatures.prefetch`),
into pinned memory on CUDA so the copy to the GPU is ``non_blocking``.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from sam2_web.transforms import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from sam2_web.media.source import FrameSource
    from sam2_web.modeling.sam2_base import SAM2Base

_MB = 2**20


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class FeatureCache:
    """LRU cache of per-frame feature maps with RAM and (optional) disk budgets.

    Args:
        max_mb: RAM budget in MiB (0 disables the RAM tier).
        spill_dir: folder for frames pushed out of RAM; None drops them instead.
        max_disk_mb: disk budget in MiB for ``spill_dir``.
    Attributes:
        hits, misses: lookup counters (for tests and benchmarks).
    """

    def __init__(self, max_mb: float = 1024, spill_dir: Optional[str] = None, max_disk_mb: float = 8192):
        if max_mb < 0 or max_disk_mb < 0:
            raise ValueError("feature cache sizes must be >= 0 MB")
        self.max_bytes = int(max_mb * _MB)
        self.max_disk_bytes = int(max_disk_mb * _MB)
        self.spill_dir = spill_dir
        self._ram: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        self._ram_bytes = 0
        self._disk: OrderedDict[int, int] = OrderedDict()  # frame -> file size
        self._disk_bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def ram_bytes(self) -> int:
        """Bytes of feature maps currently held in RAM (or device memory)."""
        return self._ram_bytes

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._ram or frame_idx in self._disk

    def get(self, frame_idx: int, device: torch.device) -> Optional[list[torch.Tensor]]:
        """Return the cached feature maps of ``frame_idx`` on ``device`` (and mark them recent), or None."""
        maps = self._ram.get(frame_idx)
        if maps is not None:
            self._ram.move_to_end(frame_idx)
            self.hits += 1
            return maps
        if frame_idx in self._disk:
            maps = [t.to(device) for t in torch.load(self._path(frame_idx), weights_only=True)]
            self._remove_file(frame_idx)
            self.hits += 1
            self.put(frame_idx, maps)  # promoted back to RAM as the most recent
            return maps
        self.misses += 1
        return None

    def put(self, frame_idx: int, maps: list[torch.Tensor]) -> None:
        """Store the feature maps of ``frame_idx``, pushing the least recent frames out of RAM."""
        if frame_idx in self._ram:
            self._ram_bytes -= _nbytes(self._ram.pop(frame_idx))
        self._remove_file(frame_idx)
        size = _nbytes(maps)
        if size > self.max_bytes:
            self._spill(frame_idx, maps)
            return
        self._ram[frame_idx] = maps
        self._ram_bytes += size
        while self._ram_bytes > self.max_bytes:
            old_idx, old_maps = self._ram.popitem(last=False)
            self._ram_bytes -= _nbytes(old_maps)
            self._spill(old_idx, old_maps)

    def clear(self) -> None:
        """Drop every cached frame (RAM and disk)."""
        self._ram.clear()
        self._ram_bytes = 0
        for frame_idx in list(self._disk):
            self._remove_file(frame_idx)

    def close(self) -> None:
        """Clear the cache and delete the spill folder."""
        self.clear()
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def _path(self, frame_idx: int) -> str:
        return os.path.join(self.spill_dir, f"feat_{frame_idx}.pt")

    def _spill(self, frame_idx: int, maps: list[torch.Tensor]) -> None:
        if self.spill_dir is None or self.max_disk_bytes == 0:
            return
        os.makedirs(self.spill_dir, exist_ok=True)
        torch.save([t.cpu() for t in maps], self._path(frame_idx))
        size = os.path.getsize(self._path(frame_idx))
        self._disk[frame_idx] = size
        self._disk_bytes += size
        while self._disk_bytes > self.max_disk_bytes and self._disk:
            self._remove_file(next(iter(self._disk)))

    def _remove_file(self, frame_idx: int) -> None:
        size = self._disk.pop(frame_idx, None)
        if size is None:
            return
        self._disk_bytes -= size
        try:
            os.remove(self._path(frame_idx))
        except FileNotFoundError:
            pass


@dataclass
class EncodedFrame:
    """One frame's image features as the model's heads read them, high to low resolution.

    Attributes:
        vision_feats: (HW, 1, C) tokens per feature level.
        vision_pos_embeds: their (HW, 1, C) position encodings.
        feat_sizes: (h, w) of each level.
    """

    vision_feats: list[torch.Tensor]
    vision_pos_embeds: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]


class FrameFeatures:
    """Image-encoder features of a clip's frames: from the cache, or encoded on a miss.

    Args:
        model: the SAM 2 model whose image encoder runs (and whose ``image_size`` it takes).
        frames: the clip.
        cache: where encoded frames are kept; :meth:`close` closes it.
    """

    def __init__(self, model: "SAM2Base", frames: "FrameSource", cache: FeatureCache):
        self.model = model
        self.frames = frames
        self.cache = cache
        # The same for every frame (it depends only on the map sizes): kept once.
        self._pos_enc: Optional[list[torch.Tensor]] = None
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        self._ahead: dict[int, Future] = {}  # frame -> its encoder input being prepared
        self._pool: Optional[ThreadPoolExecutor] = None

    def get(self, frame_idx: int) -> EncodedFrame:
        """The features of frame ``frame_idx``; raises VideoReadError when it cannot be decoded."""
        maps = self.cache.get(frame_idx, self.model.device)
        if maps is None:
            backbone_out = self.model.forward_image(self._input(frame_idx))
            maps = list(backbone_out["backbone_fpn"])
            self.cache.put(frame_idx, maps)
            if self._pos_enc is None:
                self._pos_enc = list(backbone_out["vision_pos_enc"])
        backbone_out = {"backbone_fpn": list(maps), "vision_pos_enc": list(self._pos_enc)}
        _, feats, pos, sizes = self.model.prepare_backbone_features(backbone_out)
        return EncodedFrame(feats, pos, sizes)

    def model_input(self, frame_idx: int) -> torch.Tensor:
        """Frame ``frame_idx`` as the encoder's (1, 3, S, S) normalised float input, on the model's device.

        Same steps as the reference's JPEG loader (PIL bicubic resize to S x S, /255 in float64,
        float32, then ImageNet mean/std) so features match it bit for bit.
        """
        return self._host_input(frame_idx).to(self.model.device, non_blocking=True)

    def prefetch(self, frame_indices: Sequence[int]) -> None:
        """Start preparing the encoder inputs of ``frame_indices`` (the frames wanted next, in
        order) on the background thread; frames already cached or under way are skipped, and
        prepared frames that are no longer wanted are dropped."""
        wanted = [f for f in frame_indices if f not in self.cache]
        keep = set(wanted)
        for frame_idx in [f for f in self._ahead if f not in keep]:
            self._ahead.pop(frame_idx).cancel()
        for frame_idx in wanted:
            if frame_idx not in self._ahead:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="sam2web-frames")
                self._ahead[frame_idx] = self._pool.submit(self._host_input, frame_idx)

    def _input(self, frame_idx: int) -> torch.Tensor:
        """The encoder input of ``frame_idx``: prefetched if it was, else prepared now."""
        ahead = self._ahead.pop(frame_idx, None)
        if ahead is not None and not ahead.cancelled():
            return ahead.result().to(self.model.device, non_blocking=True)  # raises what decoding raised
        return self.model_input(frame_idx)

    @torch.inference_mode()  # on the worker thread too (the mode is per thread): one kind of tensor
    def _host_input(self, frame_idx: int) -> torch.Tensor:
        small = self.frames.get_resized(frame_idx, self.model.image_size)
        image = torch.from_numpy(small / 255.0).permute(2, 0, 1).float()
        image = ((image - self._mean) / self._std).unsqueeze(0)
        if self.model.device.type == "cuda":
            image = image.pin_memory()  # so the copy to the GPU need not wait
        return image

    def close(self) -> None:
        """Stop preparing frames; drop every cached frame and the cache's spill folder."""
        for ahead in self._ahead.values():
            ahead.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.cache.close()
