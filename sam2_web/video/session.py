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
import torch

from sam2_web.errors import PromptError, UnknownObjectError
from sam2_web.allocator import return_free_memory
from sam2_web.media.frames import FrameSource, open_frames
from sam2_web.video.cancel import Cancel
from sam2_web.video.edits import Box, Click, MaskPrompt, Prompt, PromptLog, click_arguments
from sam2_web.video.features import FeatureCache, FrameFeatures
from sam2_web.video.options import SessionOptions
from sam2_web.video.prompts import check_frame
from sam2_web.video.state import FrameLogits, FrameMasks
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
        self.log = PromptLog()  # what the user gave, in clip pixels (the tracker holds model inputs)
        self._names: dict[int, str] = {}
        self._next_id = 1

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
        """Ids of the objects being tracked (those given a prompt), in insertion order: the
        reference's ``obj_ids``. :attr:`object_names` also has objects made without prompts."""
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

    # ------------------------------------------------------------------ objects

    @property
    def object_names(self) -> dict[int, str]:
        """Every object of the session (tracked or still without prompts) and its name, in the
        order they were made."""
        return dict(self._names)

    def add_object(self, obj_id: Optional[int] = None, name: Optional[str] = None) -> int:
        """Make an object (nothing is tracked until it gets a prompt); returns its id.

        Args:
            obj_id: the id to use (default: one more than any id used so far in this session);
                an existing id is only renamed.
            name: its name (default ``"object <id>"``); names label exports.
        Raises:
            PromptError: ``obj_id`` is not an integer.
        """
        with self.tracker.lock:
            if obj_id is None:
                obj_id = self._next_id
            elif isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
                raise PromptError(f"object ids must be integers, got {obj_id!r}")
            obj_id = int(obj_id)
            self._names[obj_id] = name or self._names.get(obj_id) or f"object {obj_id}"
            self._next_id = max(self._next_id, obj_id + 1)
            return obj_id

    @property
    def next_object_id(self) -> int:
        """The id :meth:`add_object` gives the next object made without one."""
        return self._next_id

    def rename_object(self, obj_id: int, name: str) -> None:
        """Give ``obj_id`` a new name; raises UnknownObjectError."""
        with self.tracker.lock:
            self._known(obj_id)
            self._names[obj_id] = name

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id``: its name, its prompts, its tracking and its results.

        Raises UnknownObjectError.
        """
        self.remove_object_logits(obj_id, strict=True, need_output=False)

    # ------------------------------------------------------------------ prompts

    def prompts(self, frame_idx: Optional[int] = None, obj_id: Optional[int] = None) -> list[Prompt]:
        """The prompts given so far (clicks, boxes, masks in clip pixels), oldest first, on
        ``frame_idx`` (None: every frame) of ``obj_id`` (None: every object)."""
        with self.tracker.lock:
            return self.log.on(frame_idx, obj_id)

    def prompted_objects(self) -> list[int]:
        """Ids of the objects that have a prompt (the ones a propagation tracks)."""
        with self.tracker.lock:
            return self.log.objects()

    def add_click(self, frame_idx: int, obj_id: int, x: float, y: float, positive: bool = True) -> FrameMasks:
        """Add one click for ``obj_id`` at pixel (x, y) of ``frame_idx``; returns every object's
        masks there. The model gets the object's clicks and box on that frame so far, as one prompt.

        Raises FrameIndexError, PromptError (nothing changes then).
        """
        return self._edit(Click(frame_idx, obj_id, x, y, 1 if positive else 0))

    def set_box(self, frame_idx: int, obj_id: int, box: Any) -> FrameMasks:
        """Give ``obj_id`` the box ``(x0, y0, x1, y1)`` (clip pixels) on ``frame_idx``, replacing its
        earlier box there; its clicks stay. Returns every object's masks there.

        Raises FrameIndexError, PromptError (nothing changes then).
        """
        corners = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
        if len(corners) != 4:
            raise PromptError(f"a box is 4 numbers x0, y0, x1, y1, got {box!r}")
        return self._edit(Box(frame_idx, obj_id, *corners))

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
            return self.tracker.publish(self.add_prompt_logits(
                frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords))

    def add_mask(self, frame_idx: int, obj_id: int, mask: Any) -> FrameMasks:
        """Give ``obj_id`` a (H, W) bool mask on ``frame_idx``; returns all objects' masks there.

        Raises FrameIndexError / PromptError (mask not 2-D or empty). Nothing changes on error.
        """
        with self.tracker.lock:
            return self.tracker.publish(self.add_mask_logits(frame_idx, obj_id, mask))

    def undo(self) -> Optional[int]:
        """Take back the newest prompt; returns the frame it was on (None when there is none).

        The object's remaining prompts on that frame are sent again one at a time, as they were
        given (a click refines the mask of the clicks before it), so the frame's masks are those
        of before the undone prompt. An object left without any prompt stops being tracked (its
        name stays).
        """
        with self.tracker.lock:
            last = self.log.pop()
            if last is None:
                return None
            self._show(self._apply(last.frame_idx, last.obj_id, replay=True))
            return last.frame_idx

    def clear_frame(self, frame_idx: int, obj_id: Optional[int] = None) -> Optional[FrameMasks]:
        """Remove the prompts on ``frame_idx`` of ``obj_id`` (or of every object); returns the
        frame's masks now (None when nothing is tracked any more). An object left without any
        prompt stops being tracked (its name stays).

        Raises FrameIndexError, UnknownObjectError.
        """
        with self.tracker.lock:
            check_frame(frame_idx, self.num_frames)
            if obj_id is not None:
                self._known(obj_id)
            touched = dict.fromkeys(p.obj_id for p in self.log.on(frame_idx, obj_id))
            self.log.drop(frame_idx, obj_id)
            shown = None
            for obj in touched:
                shown = self._apply(frame_idx, obj) or shown
            self._show(shown)
            return self.tracker.results.get(frame_idx, self.object_ids) if self.object_ids else None

    def replay(self, other: "VideoSession") -> None:
        """Give this session ``other``'s objects and prompts (another model on the same clip):
        each object's prompts on each frame are sent again in the order they were given."""
        with self.tracker.lock:
            self.reset()
            self._names, self._next_id = dict(other._names), other._next_id
            for prompt in other.prompts():
                self.log.add(prompt)
            for frame_idx, obj_id in self.log.groups():
                self._show(self._apply(frame_idx, obj_id, replay=True))

    def reset(self) -> None:
        """Remove every object, prompt and result (cached features are kept)."""
        with self.tracker.lock:
            self.log.clear()
            self._names.clear()
            self.tracker.reset()

    # ------------------------------------------------------------------ the same, as float logits

    def add_prompt_logits(self, frame_idx: int, obj_id: int, points: Any = None, labels: Any = None,
                          box: Any = None, clear_old_points: bool = True,
                          normalize_coords: bool = True) -> FrameLogits:
        """:meth:`add_prompt` returning every object's float logits, unpublished (the reference's
        ``add_new_points_or_box`` answer)."""
        with self.tracker.lock:
            frame = self.tracker.add_points(frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords)
            # The tracker has checked the values: recording them cannot fail.
            self._named(obj_id)
            given = self._given_prompts(frame_idx, obj_id, points, labels, box, normalize_coords)
            if clear_old_points:
                self.log.replace(frame_idx, obj_id, given)
            else:
                for prompt in given:
                    self.log.add(prompt)
            return frame

    def add_mask_logits(self, frame_idx: int, obj_id: int, mask: Any) -> FrameLogits:
        """:meth:`add_mask` returning every object's float logits, unpublished."""
        with self.tracker.lock:
            frame = self.tracker.add_mask(frame_idx, obj_id, mask)
            self._named(obj_id)
            self.log.add(MaskPrompt(frame_idx, obj_id, np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask,
                                                               dtype=bool).copy()))
            return frame

    def clear_prompts_logits(self, frame_idx: int, obj_id: int, need_output: bool = True) -> Optional[FrameLogits]:
        """The reference's ``clear_all_prompts_in_frame``: ``obj_id`` loses its prompts on
        ``frame_idx`` but stays tracked. Raises FrameIndexError, UnknownObjectError."""
        with self.tracker.lock:
            frame = self.tracker.clear_prompts(frame_idx, obj_id, need_output=need_output)
            self.log.drop(frame_idx, obj_id)
            return frame

    def remove_object_logits(self, obj_id: int, *, strict: bool = True, need_output: bool = False) -> list[FrameLogits]:
        """:meth:`remove_object`, returning the frames where it had prompts re-rendered without it
        (if ``need_output``). An unknown id raises UnknownObjectError if ``strict``, else is ignored."""
        with self.tracker.lock:
            if strict:
                self._known(obj_id)
            self.log.drop(obj_id=obj_id)
            self._names.pop(obj_id, None)
            return self.tracker.remove_object(obj_id, strict=False, need_output=need_output)

    # ------------------------------------------------------------------ results

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

    def is_encoded(self, frame_idx: int) -> bool:
        """Whether ``frame_idx``'s image features are cached (a click there skips the encoder)."""
        return frame_idx in self.tracker.features.cache

    # ------------------------------------------------------------------ keeping the log and the tracker in step

    def _known(self, obj_id: int) -> None:
        if obj_id not in self._names and obj_id not in self.tracker.objects:
            known = ", ".join(f"{o} ({n})" for o, n in self._names.items()) or "none yet"
            raise UnknownObjectError(f"there is no object {obj_id}; objects: {known}")

    def _named(self, obj_id: int) -> None:
        if int(obj_id) not in self._names:
            self.add_object(int(obj_id))

    def _given_prompts(self, frame_idx: int, obj_id: int, points: Any, labels: Any, box: Any,
                       normalize_coords: bool) -> list[Prompt]:
        """What ``add_points`` was given, as the log keeps it: clip pixels, clicks then the box."""
        scale = np.ones(2) if normalize_coords else np.array([self.width, self.height], dtype=np.float64)
        out: list[Prompt] = []
        if points is not None:
            xy = _numbers(points).reshape(-1, 2) * scale
            for (x, y), label in zip(xy, _numbers(labels).reshape(-1)):
                out.append(Click(frame_idx, int(obj_id), float(x), float(y), int(label)))
        if box is not None:
            corners = _numbers(box).reshape(2, 2) * scale
            out.append(Box(frame_idx, int(obj_id), *(float(v) for v in corners.reshape(-1))))
        return out

    def _edit(self, prompt: Prompt) -> FrameMasks:
        """Log ``prompt`` and send the object's prompts on that frame; nothing changes on error."""
        with self.tracker.lock:
            check_frame(prompt.frame_idx, self.num_frames)
            before = self.log.on()  # a copy of the list
            self.log.add(prompt)
            try:
                frame = self._apply(prompt.frame_idx, prompt.obj_id)
            except BaseException:
                self.log.restore(before)
                raise
            self._named(prompt.obj_id)
            return self.tracker.publish(frame)

    def _apply(self, frame_idx: int, obj_id: int, *, replay: bool = False) -> Optional[FrameLogits]:
        """Bring the tracker in line with the log for one object on one frame.

        The object's prompts there go to the model as one prompt, or (``replay``: undo, another
        model) one at a time from a cleared frame, which gives the masks as if they had been
        given in that order. With none left there, the frame's prompts are cleared; with none
        left anywhere, the object stops being tracked (its stored masks go; nothing is
        recomputed). Returns the frame's new logits, or None when nothing was recomputed.
        """
        tracker = self.tracker
        mine = self.log.on(frame_idx, obj_id)
        if not mine:
            if obj_id in self.log.objects():
                return tracker.clear_prompts(frame_idx, obj_id) if obj_id in tracker.objects else None
            tracker.remove_object(obj_id, strict=False)
            return None
        if replay and obj_id in tracker.objects:
            tracker.clear_prompts(frame_idx, obj_id, need_output=False)
        frame = None
        for k in range(1, len(mine) + 1) if replay else (len(mine),):
            given = mine[:k]
            # A mask replaces what came before it; the clicks after it refine it.
            last_mask = max((i for i, p in enumerate(given) if isinstance(p, MaskPrompt)), default=-1)
            if last_mask == k - 1:
                frame = tracker.add_mask(frame_idx, obj_id, given[-1].mask)
            else:
                frame = tracker.add_points(frame_idx, obj_id, clear_old_points=True,
                                           **click_arguments(given[last_mask + 1:]))
        return frame

    def _show(self, frame: Optional[FrameLogits]) -> None:
        if frame is not None:
            self.tracker.publish(frame)


def _numbers(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)

