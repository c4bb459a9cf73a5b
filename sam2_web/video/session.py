"""A tracking session on one clip: the engine API over a :class:`~sam2_web.video.tracker.Tracker`.

The session owns what belongs to the clip (its frames, a temporary folder, the result store and
the feature cache) and hands the tracking itself to its tracker, which keeps the state the
reference keeps in its ``inference_state`` dict as typed objects. Two faces share it:

* the engine API here (``add_prompt``, ``add_mask``, ``propagate``, ``result`` ...) returns
  :class:`FrameMasks` (bool masks at the clip's resolution and presence scores), with progress
  callbacks, cancellation and resume;
* the reference-compatible predictor API (``SAM2VideoPredictor.add_new_points_or_box`` ...)
  takes the session as its ``inference_state`` and calls the tracker for float logits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np

from sam2_web.allocator import return_free_memory
from sam2_web.media.frames import FrameSource, open_frames
from sam2_web.video.cancel import Cancel
from sam2_web.video.features import FeatureCache, FrameFeatures
from sam2_web.video.options import SessionOptions
from sam2_web.video.prompts import check_frame
from sam2_web.video.state import FrameMasks
from sam2_web.video.store import ResultStore
from sam2_web.video.tracker import Tracker

if TYPE_CHECKING:
    from sam2_web.video.predictor import SAM2VideoPredictor


class VideoSession:
    """Objects, prompts and results on one clip. Create with ``predictor.open_session(source)``.

    Attributes:
        info: the clip's facts (``num_frames``, ``width``, ``height``, frame rate ...).
        num_frames, height, width: the clip's length and resolution.
        options: the session's :class:`SessionOptions`.
        tracker: the :class:`~sam2_web.video.tracker.Tracker` doing the work.
    """

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
        features = FrameFeatures(model, self.frames, FeatureCache(options.feature_cache_mb, feature_dir))
        # Our own subfolder of result_dir: close() deletes it, never the folder the user gave.
        png_dir = None if options.result_dir is None else tempfile.mkdtemp(prefix="masks-", dir=options.result_dir)
        self.tracker = Tracker(
            model, features, ResultStore(self.height, self.width, png_dir), options,
            num_frames=self.num_frames, height=self.height, width=self.width,
            spill_dir=os.path.join(self._tmp, "memory"),
        )

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
        return self.tracker.object_ids

    def frame(self, frame_idx: int) -> np.ndarray:
        """Frame ``frame_idx`` as (H, W, 3) uint8 RGB; raises FrameIndexError outside the clip."""
        return self.frames.get(check_frame(frame_idx, self.num_frames))

    def close(self) -> None:
        """Free caches, results and temp files; the session cannot be used afterwards."""
        with self.tracker.lock:
            self.tracker.close()
            if self._owns_frames:
                self.frames.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
        # The session's tensors are free now; without this the C allocator keeps their pages
        # (a server's RSS would climb to the high-water mark of every request thread).
        return_free_memory()

    def drop_cached_features(self) -> int:
        """Forget the cached image features (prompts, memories and results stay); the next
        propagation encodes frames again. For a server whose session sits idle: the cache is
        most of what it holds (see ``sam2_web.video.budget``).

        Returns:
            The bytes the cache held in RAM.
        """
        with self.tracker.lock:
            cache = self.tracker.features.cache
            held = cache.ram_bytes
            cache.clear()
        return_free_memory()
        return held

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
        with self.tracker.lock:
            return self.tracker.publish(
                self.tracker.add_points(frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords)
            )

    def add_mask(self, frame_idx: int, obj_id: int, mask: Any) -> FrameMasks:
        """Give ``obj_id`` a (H, W) bool mask on ``frame_idx``; returns all objects' masks there.

        Raises FrameIndexError / PromptError (mask not 2-D or empty). Nothing changes on error.
        """
        with self.tracker.lock:
            return self.tracker.publish(self.tracker.add_mask(frame_idx, obj_id, mask))

    def clear_frame(self, frame_idx: int, obj_id: Optional[int] = None) -> FrameMasks:
        """Remove the prompts on ``frame_idx`` of ``obj_id`` (or of every object).

        Raises FrameIndexError, UnknownObjectError.
        """
        with self.tracker.lock:
            return self.tracker.publish(self.tracker.clear_prompts(frame_idx, obj_id))

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` and drop its results; raises UnknownObjectError."""
        self.tracker.remove_object(obj_id, strict=True, need_output=False)

    def reset(self) -> None:
        """Remove every object, prompt and result (cached features are kept)."""
        self.tracker.reset()

    def result(self, frame_idx: int) -> Optional[FrameMasks]:
        """Stored masks of ``frame_idx`` for the current objects, or None if not segmented yet."""
        check_frame(frame_idx, self.num_frames)
        return self.tracker.results.get(frame_idx, self.object_ids)

    def results(self) -> Iterator[FrameMasks]:
        """Stored masks of every segmented frame, in frame order."""
        return self.tracker.results.iter(self.object_ids)

    def propagate(
        self,
        *,
        direction: str = "both",
        start_frame: Optional[int] = None,
        max_frames: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        cancel: Cancel = None,
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
        try:
            for tracked in self.tracker.propagate(direction, start_frame, max_frames, progress=progress, cancel=cancel):
                yield tracked.masks
        finally:
            # The pass's decoder read-ahead and backward block (up to 192 MB of frames) would
            # otherwise stay with a session that now sits idle.
            self.frames.release_buffers()
