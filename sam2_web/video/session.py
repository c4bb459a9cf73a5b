"""A tracking session on one clip: objects, prompts, propagation, results.

The session owns the state the reference keeps in its ``inference_state`` dict, as typed
objects: a :class:`~sam2_web.video.state.ObjectTrack` per object (prompts, pending click
outputs, a bounded :class:`~sam2_web.video.memory.MemoryBank`), a bounded feature cache, and
a compact result store. Two faces share it:

* the engine API (``add_prompt``, ``add_mask``, ``propagate``, ``result`` ...) returns
  :class:`FrameMasks` (bool masks at the clip's resolution and presence scores), with progress
  callbacks, cancellation and resume;
* the ``*_logits`` methods (in :mod:`sam2_web.video.tracking`) return float logits and back the
  reference-compatible predictor API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Union

import numpy as np
import torch

from sam2_web.device import autocast_context
from sam2_web.errors import CancelledError
from sam2_web.media.frames import FrameSource, open_frames
from sam2_web.video.features import FeatureCache
from sam2_web.video.memory import HISTORY_MODES
from sam2_web.video.prompts import check_frame
from sam2_web.video.state import FrameMasks, ObjectTrack
from sam2_web.video.store import ResultStore
from sam2_web.video.tracking import TrackingFlow

if TYPE_CHECKING:
    from sam2_web.video.predictor import SAM2VideoPredictor

# ImageNet statistics the image encoder was trained with.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass
class SessionOptions:
    """Per-session engine settings (defaults come from the predictor, i.e. the app config).

    Attributes:
        fill_hole_area, remove_sprinkles, non_overlap_masks, clear_non_cond_mem_around_input,
        add_all_frames_to_correct_as_cond: see :class:`SAM2VideoPredictor`.
        memory_dtype: "bfloat16" or "float32" storage of spatial memories.
        history: where memories evicted from the tracking window go: "disk" (exact, bounded
            RAM), "ram" (as the reference) or "drop" (bounded RAM and disk; corrections on
            long-tracked frames then see fewer memories than the reference would).
        feature_cache_mb: RAM budget for cached image features.
        feature_cache_dir: parent folder for spilled features (None: RAM only).
        result_dir: keep result masks as PNGs in a temp subfolder of this folder (None: run
            lengths in RAM).
        temp_dir: parent folder of the session's temp files (None: the system's).
        read_ahead: frames decoded ahead of the tracker.
    """

    fill_hole_area: int = 0
    remove_sprinkles: bool = True
    non_overlap_masks: bool = False
    clear_non_cond_mem_around_input: bool = False
    add_all_frames_to_correct_as_cond: bool = False
    memory_dtype: str = "bfloat16"
    history: str = "disk"
    feature_cache_mb: float = 1024
    feature_cache_dir: Optional[str] = None
    result_dir: Optional[str] = None
    temp_dir: Optional[str] = None
    read_ahead: int = 6

    def replace(self, **changes: Any) -> "SessionOptions":
        """A validated copy with ``changes`` applied; unknown names raise TypeError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown session option(s) {unknown}; valid options: {sorted(names)}")
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ValueError for out-of-range settings."""
        if self.memory_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"memory_dtype must be 'bfloat16' or 'float32', got {self.memory_dtype!r}")
        if self.history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {HISTORY_MODES}, got {self.history!r}")
        if self.fill_hole_area < 0 or self.feature_cache_mb < 0:
            raise ValueError("fill_hole_area and feature_cache_mb must be >= 0")


@dataclass
class _PassRecord:
    """How far a propagation pass got, to resume it without redoing frames."""

    version: int
    next_pos: int  # position in the pass's frame order of the first frame not finished


class VideoSession(TrackingFlow):
    """Objects, prompts and results on one clip. Create with ``predictor.open_session(source)``."""

    def __init__(self, model: "SAM2VideoPredictor", source: Any, options: SessionOptions):
        self.model = model
        self.options = options
        self.device = model.device
        if isinstance(source, FrameSource):
            self.frames, self._owns_frames = source, False
        else:
            self.frames, self._owns_frames = open_frames(source, readahead=options.read_ahead), True
        self.info = self.frames.info
        self.num_frames = self.info.num_frames
        self.height, self.width = self.info.height, self.info.width
        self._tmp = tempfile.mkdtemp(prefix="sam2web-session-", dir=options.temp_dir)
        feature_dir = None
        if options.feature_cache_dir is not None:
            feature_dir = tempfile.mkdtemp(prefix="features-", dir=options.feature_cache_dir)
        self.features = FeatureCache(options.feature_cache_mb, feature_dir)
        # Our own subfolder of result_dir: close() deletes it, never the folder the user gave.
        png_dir = None if options.result_dir is None else tempfile.mkdtemp(prefix="masks-", dir=options.result_dir)
        self.store = ResultStore(self.height, self.width, png_dir)
        self.objects: dict[int, ObjectTrack] = {}
        self.vision_pos_enc: Optional[list[torch.Tensor]] = None
        self._maskmem_pos_enc: Optional[list[torch.Tensor]] = None
        self._next_uid = 0
        self._version = 0  # bumped by every prompt change; finished passes are tied to it
        self._passes: dict[tuple, _PassRecord] = {}
        self._lock = threading.RLock()
        self._mean = torch.tensor(_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(_STD, dtype=torch.float32).view(3, 1, 1)

    # ------------------------------------------------------------------ basics

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getitem__(self, key: str) -> Any:
        # A few read-only keys of the reference's inference_state dict, for scripts that peek.
        known = {
            "num_frames": lambda: self.num_frames,
            "video_height": lambda: self.height,
            "video_width": lambda: self.width,
            "obj_ids": lambda: self.object_ids,
            "device": lambda: self.device,
        }
        if key not in known:
            raise KeyError(f"{key!r}: the session is typed; use its attributes ({sorted(known)} are aliased)")
        return known[key]()

    @property
    def object_ids(self) -> list[int]:
        """Object ids in insertion order."""
        return list(self.objects)

    def frame(self, frame_idx: int) -> np.ndarray:
        """Frame ``frame_idx`` as (H, W, 3) uint8 RGB; raises FrameIndexError outside the clip."""
        return self.frames.get(check_frame(frame_idx, self.num_frames))

    def _compute(self) -> contextlib.ExitStack:
        """Inference mode plus the model's autocast (bf16 on CUDA when asked for; no-op on CPU)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast_context(self.model.device, getattr(self.model, "precision", "fp32")))
        return stack

    def warm_up(self) -> None:
        """Encode frame 0 now (the frame users click first), as the reference's init_state does."""
        with torch.inference_mode():
            self.model._frame_features(self, 0)

    def model_input(self, frame_idx: int) -> torch.Tensor:
        """Frame ``frame_idx`` as the encoder's (1, 3, S, S) normalised float input.

        Same steps as the reference's JPEG loader (PIL bicubic resize to S x S, /255 in float64,
        float32, then ImageNet mean/std) so features match it bit for bit.
        """
        size = self.model.image_size
        small = self.frames.get_resized(frame_idx, size)
        image = torch.from_numpy(small / 255.0).permute(2, 0, 1).float()
        image = (image - self._mean) / self._std
        return image.unsqueeze(0).to(self.device)

    def shared_maskmem_pos_enc(self, pos_enc: list[torch.Tensor]) -> list[torch.Tensor]:
        """The memory position encoding is the same on every frame: keep one copy and share it."""
        if self._maskmem_pos_enc is None:
            self._maskmem_pos_enc = [p[0:1].clone() for p in pos_enc]
            for track in self.objects.values():
                track.memory.maskmem_pos_enc = self._maskmem_pos_enc
        return self._maskmem_pos_enc

    def close(self) -> None:
        """Free caches, results and temp files; the session cannot be used afterwards."""
        with self._lock:
            for track in self.objects.values():
                track.memory.clear()
            self.objects.clear()
            self.features.close()
            self.store.clear()
            if self._owns_frames:
                self.frames.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

    # ------------------------------------------------------------------ engine API

    def add_prompt(
        self,
        frame_idx: int,
        obj_id: int,
        *,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> FrameMasks:
        """Add clicks and/or a box for ``obj_id`` on ``frame_idx`` (creating the object if new).

        Args:
            points: (N, 2) pixel (x, y) in the clip's resolution; labels: (N,) 1 = positive, 0 = negative.
            box: (4,) x0, y0, x1, y1 pixels.
            clear_old_points: replace the object's earlier clicks on this frame (else append).
            normalize_coords: coordinates are pixels of the clip (False: already divided by the
                clip's width and height, i.e. in 0..1).
        Returns:
            The masks of all objects on that frame (one model call, no clip-wide work).
        Raises:
            FrameIndexError: ``frame_idx`` is outside the clip.
            PromptError: malformed points/labels/box. Nothing changes on error.
        """
        with self._lock, self._compute():
            logits, scores = self.add_points_logits(
                frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords
            )
            return self._store(frame_idx, logits, scores)

    def add_mask(self, frame_idx: int, obj_id: int, mask: Any) -> FrameMasks:
        """Give ``obj_id`` a (H, W) bool mask on ``frame_idx``; returns all objects' masks there.

        Raises FrameIndexError / PromptError (mask not 2-D or empty). Nothing changes on error.
        """
        with self._lock, self._compute():
            logits, scores = self.add_mask_logits(frame_idx, obj_id, mask)
            return self._store(frame_idx, logits, scores)

    def clear_frame(self, frame_idx: int, obj_id: Optional[int] = None) -> FrameMasks:
        """Remove the prompts on ``frame_idx`` of ``obj_id`` (or of every object).

        Raises FrameIndexError, UnknownObjectError.
        """
        with self._lock, self._compute():
            check_frame(frame_idx, self.num_frames)
            ids = self.object_ids if obj_id is None else [self._track(obj_id).obj_id]
            for oid in ids:
                self.clear_frame_logits(frame_idx, oid, need_output=False)
            logits, scores = self._consolidate(frame_idx, self._any_pending_cond(frame_idx))
            return self._store(frame_idx, logits, scores)

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` and drop its results; raises UnknownObjectError."""
        with self._lock, self._compute():
            self.remove_object_logits(obj_id, strict=True, need_output=False)

    def reset(self) -> None:
        """Remove every object, prompt and result (cached features are kept)."""
        with self._lock:
            for track in self.objects.values():
                track.memory.clear()
            self.objects.clear()
            self.store.clear()
            self._passes.clear()
            self._version += 1

    def result(self, frame_idx: int) -> Optional[FrameMasks]:
        """Stored masks of ``frame_idx`` for the current objects, or None if not segmented yet."""
        check_frame(frame_idx, self.num_frames)
        return self.store.get(frame_idx, self.object_ids)

    def results(self) -> Iterator[FrameMasks]:
        """Stored masks of every segmented frame, in frame order."""
        return self.store.iter(self.object_ids)

    def propagate(
        self,
        *,
        direction: str = "both",
        start_frame: Optional[int] = None,
        max_frames: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        cancel: Union[threading.Event, Callable[[], bool], None] = None,
    ) -> Iterator[FrameMasks]:
        """Track every object through the clip, yielding each frame's masks as it is done.

        Args:
            direction: "forward", "backward" or "both" (forward, then backward from the same start).
            start_frame: first frame of the pass (default: the earliest prompted frame).
            max_frames: frames to track beyond the start in each direction (default: to the end).
            progress: called as ``progress(done, total)`` after every frame.
            cancel: an Event or a callable; checked between frames.
        Yields:
            :class:`FrameMasks` per frame. Frames a cancelled call already finished (with the
            same prompts) are not recomputed: their stored masks are yielded again.
        Raises:
            CancelledError: when cancelled; finished frames stay stored and a new call resumes.
            PromptError: no object has a prompt yet. FrameIndexError: bad ``start_frame``.
        """
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be 'forward', 'backward' or 'both', got {direction!r}")
        if start_frame is not None:
            check_frame(start_frame, self.num_frames)
        is_cancelled = _cancel_check(cancel)
        reverses = {"forward": [False], "backward": [True], "both": [False, True]}[direction]
        # The lock and inference mode are taken per frame, not across yields: the caller's code
        # between frames must not run in inference mode or block other threads' clicks.
        with self._lock, self._compute():
            self.preflight()
            start = self._default_start() if start_frame is None else start_frame
            orders = [self._pass_order(start, max_frames, rev) for rev in reverses]
            version = self._version
        total, done = sum(len(o) for o in orders), 0
        for reverse, order in zip(reverses, orders):
            key = (reverse, tuple(order[:1]), len(order))
            record = self._passes.get(key)
            resume_at = record.next_pos if record and record.version == version else 0
            for pos, frame_idx in enumerate(order):
                if pos < resume_at:
                    masks = self.store.get(frame_idx, self.object_ids)
                else:
                    if is_cancelled():
                        raise CancelledError(
                            f"tracking stopped after {done} of {total} frames; call propagate() again to resume"
                        )
                    with self._lock, self._compute():
                        upcoming = order[pos + 1] if pos + 1 < len(order) else None
                        step = self._track_frame(frame_idx, reverse, upcoming)
                        masks = self._store(frame_idx, step.logits, step.scores)
                        self._passes[key] = _PassRecord(version, pos + 1)
                done += 1
                if progress:
                    progress(done, total)
                yield masks


def _cancel_check(cancel: Union[threading.Event, Callable[[], bool], None]) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a threading.Event or a callable returning bool")
