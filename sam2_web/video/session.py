"""A tracking session on one clip: objects, prompts, propagation, results.

The session owns the state the reference keeps in its ``inference_state`` dict, as typed
objects: a :class:`~sam2_web.video.state.ObjectTrack` per object (prompts, pending click
outputs, a bounded :class:`~sam2_web.video.memory.MemoryBank`), a bounded feature cache, and
a compact result store. Two faces share it:

* the engine API (``add_prompt``, ``add_mask``, ``propagate``, ``result`` ...) returns
  :class:`FrameMasks` (bool masks at the clip's resolution and presence scores), with progress
  callbacks, cancellation and resume;
* the ``*_logits`` methods return float logits and back the reference-compatible predictor API.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.errors import CancelledError, FrameIndexError, PromptError, UnknownObjectError
from sam2_web.io.frames import FrameSource, open_frames
from sam2_web.modeling.sam2_base import NO_OBJ_SCORE
from sam2_web.video.features import FeatureCache
from sam2_web.video.memory import HISTORY_MODES, MemoryBank
from sam2_web.video.postprocess import non_overlapping
from sam2_web.video.prompts import check_frame, mask_prompt, point_prompt
from sam2_web.video.state import FrameMasks, FrameOutput, ObjectTrack, PointPrompt
from sam2_web.video.store import ResultStore

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
        history: "disk" or "ram" for memories evicted from the tracking window.
        feature_cache_mb: RAM budget for cached image features.
        feature_cache_dir: parent folder for spilled features (None: RAM only).
        result_dir: keep result masks as PNGs in this folder (None: run lengths in RAM).
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
class PropagationStep:
    """One frame produced by propagation, before conversion to :class:`FrameMasks`."""

    frame_idx: int
    obj_ids: list[int]
    logits: torch.Tensor  # (N, 1, H, W) at the clip's resolution
    scores: np.ndarray  # (N,) presence probability


@dataclass
class _PassRecord:
    """How far a propagation pass got, to resume it without redoing frames."""

    version: int
    next_pos: int  # position in the pass's frame order of the first frame not finished


class VideoSession:
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
        self.results = ResultStore(self.height, self.width, options.result_dir)
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
            self.results.clear()
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
            normalize_coords: coordinates are pixels of the clip (False: already in model pixels).
        Returns:
            The masks of all objects on that frame (one model call, no clip-wide work).
        Raises:
            FrameIndexError: ``frame_idx`` is outside the clip.
            PromptError: malformed points/labels/box. Nothing changes on error.
        """
        with self._lock, torch.inference_mode():
            logits, scores = self.add_points_logits(
                frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords
            )
            return self._store(frame_idx, logits, scores)

    def add_mask(self, frame_idx: int, obj_id: int, mask: Any) -> FrameMasks:
        """Give ``obj_id`` a (H, W) bool mask on ``frame_idx``; returns all objects' masks there.

        Raises FrameIndexError / PromptError (mask not 2-D or empty). Nothing changes on error.
        """
        with self._lock, torch.inference_mode():
            logits, scores = self.add_mask_logits(frame_idx, obj_id, mask)
            return self._store(frame_idx, logits, scores)

    def clear_frame(self, frame_idx: int, obj_id: Optional[int] = None) -> FrameMasks:
        """Remove the prompts on ``frame_idx`` of ``obj_id`` (or of every object).

        Raises FrameIndexError, UnknownObjectError.
        """
        with self._lock, torch.inference_mode():
            check_frame(frame_idx, self.num_frames)
            ids = self.object_ids if obj_id is None else [self._track(obj_id).obj_id]
            for oid in ids:
                self.clear_frame_logits(frame_idx, oid, need_output=False)
            logits, scores = self._consolidate(frame_idx, self._any_pending_cond(frame_idx))
            return self._store(frame_idx, logits, scores)

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` and drop its results; raises UnknownObjectError."""
        with self._lock, torch.inference_mode():
            self.remove_object_logits(obj_id, strict=True, need_output=False)

    def reset(self) -> None:
        """Remove every object, prompt and result (cached features are kept)."""
        with self._lock:
            for track in self.objects.values():
                track.memory.clear()
            self.objects.clear()
            self.results.clear()
            self._passes.clear()
            self._version += 1

    def result(self, frame_idx: int) -> Optional[FrameMasks]:
        """Stored masks of ``frame_idx`` for the current objects, or None if not segmented yet."""
        check_frame(frame_idx, self.num_frames)
        return self.results.get(frame_idx, self.object_ids)

    def iter_results(self) -> Iterator[FrameMasks]:
        """Stored masks of every segmented frame, in frame order."""
        return self.results.iter(self.object_ids)

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
        with self._lock, torch.inference_mode():
            self.preflight()
            start = self._default_start() if start_frame is None else start_frame
            orders = [self._pass_order(start, max_frames, rev) for rev in reverses]
            total, done = sum(len(o) for o in orders), 0
            for reverse, order in zip(reverses, orders):
                key = (reverse, tuple(order[:1]), len(order))
                record = self._passes.get(key)
                resume_at = record.next_pos if record and record.version == self._version else 0
                for pos, frame_idx in enumerate(order):
                    if pos < resume_at:
                        done += 1
                        if progress:
                            progress(done, total)
                        yield self.results.get(frame_idx, self.object_ids)
                        continue
                    if is_cancelled():
                        raise CancelledError(
                            f"tracking stopped after {done} of {total} frames; call propagate() again to resume"
                        )
                    step = self._track_frame(frame_idx, reverse, order[pos + 1] if pos + 1 < len(order) else None)
                    masks = self._store(frame_idx, step.logits, step.scores)
                    self._passes[key] = _PassRecord(self._version, pos + 1)
                    done += 1
                    if progress:
                        progress(done, total)
                    yield masks

    # ------------------------------------------------------------------ logits API (reference flow)

    def add_points_logits(self, frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords):
        """Reference ``add_new_points_or_box`` on typed state; returns (logits (N,1,H,W), scores)."""
        check_frame(frame_idx, self.num_frames)
        coords, point_labels = point_prompt(
            points, labels, box, clear_old_points, normalize_coords,
            video_size=(self.width, self.height), image_size=self.model.image_size,
        )
        track = self._track(obj_id, create=True)
        prompt = track.points.get(frame_idx) if not clear_old_points else None
        prompt = prompt.extended(coords, point_labels) if prompt is not None else PointPrompt(coords, point_labels)
        prompt.point_coords = prompt.point_coords.to(self.device)
        prompt.point_labels = prompt.point_labels.to(self.device)
        track.points[frame_idx] = prompt
        track.masks.pop(frame_idx, None)
        self._version += 1
        is_init, reverse, is_cond = self._frame_role(track, frame_idx)
        # A click on a frame that already has a mask refines that mask (fed as a mask prompt).
        prev = track.pending(is_cond).get(frame_idx) or track.memory.cond.get(frame_idx) or track.memory.get(frame_idx)
        prev_logits = torch.clamp(prev.pred_masks.to(self.device), -32.0, 32.0) if prev is not None else None
        out = self.model._infer_frame(
            self, track.memory, frame_idx, is_init_cond_frame=is_init, point_inputs=prompt, mask_inputs=None,
            reverse=reverse, run_mem_encoder=False, prev_sam_mask_logits=prev_logits,
        )
        track.pending(is_cond)[frame_idx] = out
        return self._consolidate(frame_idx, is_cond)

    def add_mask_logits(self, frame_idx, obj_id, mask):
        """Reference ``add_new_mask`` on typed state; returns (logits (N,1,H,W), scores)."""
        check_frame(frame_idx, self.num_frames)
        mask_inputs = mask_prompt(mask, self.model.image_size, self.device)
        track = self._track(obj_id, create=True)
        track.masks[frame_idx] = mask_inputs
        track.points.pop(frame_idx, None)
        self._version += 1
        is_init, reverse, is_cond = self._frame_role(track, frame_idx)
        out = self.model._infer_frame(
            self, track.memory, frame_idx, is_init_cond_frame=is_init, point_inputs=None,
            mask_inputs=mask_inputs, reverse=reverse, run_mem_encoder=False,
        )
        track.pending(is_cond)[frame_idx] = out
        return self._consolidate(frame_idx, is_cond)

    def clear_frame_logits(self, frame_idx: int, obj_id: int, need_output: bool = True):
        """Reference ``clear_all_prompts_in_frame``; returns (logits, scores) or None."""
        check_frame(frame_idx, self.num_frames)
        track = self._track(obj_id)
        track.points.pop(frame_idx, None)
        track.masks.pop(frame_idx, None)
        track.pending_cond.pop(frame_idx, None)
        track.pending_non_cond.pop(frame_idx, None)
        self._version += 1
        out = track.memory.cond.pop(frame_idx, None)
        if out is not None:
            # No longer prompted: its output stays as an ordinary tracked frame's.
            track.memory.put(frame_idx, out)
            track.tracked.pop(frame_idx, None)
        if not need_output:
            return None
        return self._consolidate(frame_idx, self._any_pending_cond(frame_idx))

    def remove_object_logits(self, obj_id: int, strict: bool, need_output: bool):
        """Reference ``remove_object``; returns (obj_ids, [(frame_idx, logits)])."""
        if obj_id not in self.objects:
            if strict:
                raise UnknownObjectError(f"object {obj_id} is not tracked; tracked objects: {self.object_ids}")
            return self.object_ids, []
        if len(self.objects) == 1:
            self.reset()
            return self.object_ids, []
        track = self.objects[obj_id]
        prompted = set(track.points) | set(track.masks)
        for frame_idx in prompted:
            self.clear_frame_logits(frame_idx, obj_id, need_output=False)
        del self.objects[obj_id]
        track.memory.clear()
        self.results.drop_object(obj_id)
        self._version += 1
        updated = []
        if need_output:
            for frame_idx in prompted:
                logits, _ = self._consolidate(frame_idx, self._any_pending_cond(frame_idx))
                updated.append((frame_idx, logits))
        return self.object_ids, updated

    def preflight(self) -> None:
        """Encode the memories of frames clicked since the last propagation and merge them.

        Raises PromptError when there is no object, or an object has no prompted frame.
        """
        if not self.objects:
            raise PromptError("no object has a prompt yet; add points, a box or a mask first")
        for track in self.objects.values():
            for is_cond in (False, True):
                pending = track.pending(is_cond)
                for frame_idx, out in pending.items():
                    if out.maskmem_features is None:
                        self.model._encode_frame_memory(self, frame_idx, out)
                    if is_cond:
                        track.memory.cond[frame_idx] = out
                    else:
                        track.memory.put(frame_idx, out)
                    if self.options.clear_non_cond_mem_around_input:
                        self._clear_memory_around(track, frame_idx)
                pending.clear()
            if not track.memory.cond:
                raise PromptError(
                    f"object {track.obj_id} has no prompt on any frame; add points, a box or a mask "
                    f"for it, or remove it"
                )
            for frame_idx in track.memory.cond:
                track.memory.pop(frame_idx)

    def propagate_logits(
        self, start_frame_idx: Optional[int], max_frame_num_to_track: Optional[int], reverse: bool
    ) -> Iterator[PropagationStep]:
        """Reference ``propagate_in_video``: yields a :class:`PropagationStep` per frame."""
        self.preflight()
        start = self._default_start() if start_frame_idx is None else start_frame_idx
        check_frame(start, self.num_frames)
        order = self._pass_order(start, max_frame_num_to_track, reverse)
        for pos, frame_idx in enumerate(order):
            step = self._track_frame(frame_idx, reverse, order[pos + 1] if pos + 1 < len(order) else None)
            self._store(frame_idx, step.logits, step.scores)
            yield step

    # ------------------------------------------------------------------ internals

    def _track(self, obj_id: int, create: bool = False) -> ObjectTrack:
        track = self.objects.get(obj_id)
        if track is not None:
            return track
        if not create:
            raise UnknownObjectError(f"object {obj_id} is not tracked; tracked objects: {self.object_ids}")
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise PromptError(f"object ids must be integers, got {obj_id!r}")
        memory = MemoryBank(self._next_uid, self.options.history, f"{self._tmp}/memory")
        memory.maskmem_pos_enc = self._maskmem_pos_enc
        track = ObjectTrack(obj_id=int(obj_id), uid=self._next_uid, memory=memory)
        self._next_uid += 1
        self.objects[track.obj_id] = track
        return track

    def _frame_role(self, track: ObjectTrack, frame_idx: int) -> tuple[bool, bool, bool]:
        """(is_init_cond_frame, reverse, is_cond) for a prompt on ``frame_idx``.

        A frame the tracker has not produced yet starts the object from scratch (no memory);
        on a tracked frame the prompt corrects the tracked mask using the memory of the
        direction it was tracked in.
        """
        is_init = frame_idx not in track.tracked
        reverse = False if is_init else track.tracked[frame_idx]
        return is_init, reverse, is_init or self.options.add_all_frames_to_correct_as_cond

    def _any_pending_cond(self, frame_idx: int) -> bool:
        return any(frame_idx in t.pending_cond for t in self.objects.values())

    def _default_start(self) -> int:
        return min(t for track in self.objects.values() for t in track.memory.cond)

    def _pass_order(self, start: int, max_frames: Optional[int], reverse: bool) -> list[int]:
        """Frames of a pass in processing order, exactly as the reference orders them."""
        count = self.num_frames if max_frames is None else max_frames
        if reverse:
            end = max(start - count, 0)
            return list(range(start, end - 1, -1)) if start > 0 else []
        end = min(start + count, self.num_frames - 1)
        return list(range(start, end + 1))

    def _track_frame(self, frame_idx: int, reverse: bool, next_frame: Optional[int]) -> PropagationStep:
        """Segment every object on ``frame_idx`` from memory, then shrink the memories to the
        window ``next_frame`` will read."""
        preds, scores = [], []
        for track in self.objects.values():
            out = track.memory.cond.get(frame_idx)
            if out is not None:
                if self.options.clear_non_cond_mem_around_input:
                    self._clear_memory_around(track, frame_idx)
            else:
                out = self.model._infer_frame(
                    self, track.memory, frame_idx, is_init_cond_frame=False, point_inputs=None,
                    mask_inputs=None, reverse=reverse, run_mem_encoder=True,
                )
                track.memory.put(frame_idx, out)
            track.tracked[frame_idx] = reverse
            preds.append(out.pred_masks.to(self.device))
            scores.append(float(torch.sigmoid(out.object_score_logits).flatten()[0]))
        # Keep what the next frame of the pass reads (after the last frame: what a continuation
        # in the same direction would read, so a resumed or extended pass finds it in RAM).
        upcoming = next_frame if next_frame is not None else frame_idx + (-1 if reverse else 1)
        keep = self.model._memory_reach(upcoming, reverse, self.num_frames)
        for track in self.objects.values():
            track.memory.evict(keep)
        logits = self._to_video_res(torch.cat(preds, dim=0))
        return PropagationStep(frame_idx, self.object_ids, logits, np.asarray(scores, dtype=np.float32))

    def _consolidate(self, frame_idx: int, is_cond: bool) -> tuple[torch.Tensor, np.ndarray]:
        """All objects' latest logits on ``frame_idx`` at the clip's resolution, and scores.

        Each object's output is looked up in its pending click outputs of kind ``is_cond``,
        then its conditioning memory, then its tracked memory; objects without any output on
        the frame get NO_OBJ_SCORE everywhere (and score 0).
        """
        n = len(self.objects)
        logits = torch.full((n, 1, self.height, self.width), NO_OBJ_SCORE, dtype=torch.float32, device=self.device)
        scores = np.zeros(n, dtype=np.float32)
        for k, track in enumerate(self.objects.values()):
            out: Optional[FrameOutput] = (
                track.pending(is_cond).get(frame_idx) or track.memory.cond.get(frame_idx) or track.memory.get(frame_idx)
            )
            if out is None:
                continue
            mask = out.pred_masks.to(self.device)
            if mask.shape[-2:] != logits.shape[-2:]:
                mask = F.interpolate(mask, size=logits.shape[-2:], mode="bilinear", align_corners=False)
            logits[k : k + 1] = mask
            scores[k] = float(torch.sigmoid(out.object_score_logits).flatten()[0])
        if self.options.non_overlap_masks:
            logits = non_overlapping(logits)
        return logits, scores

    def _to_video_res(self, low_res: torch.Tensor) -> torch.Tensor:
        if low_res.shape[-2:] != (self.height, self.width):
            low_res = F.interpolate(low_res, size=(self.height, self.width), mode="bilinear", align_corners=False)
        if self.options.non_overlap_masks:
            low_res = non_overlapping(low_res)
        return low_res

    def _clear_memory_around(self, track: ObjectTrack, frame_idx: int) -> None:
        """Drop tracked memories near a newly prompted frame (they may contradict the prompt)."""
        reach = self.model.memory_temporal_stride_for_eval * self.model.num_maskmem
        for t in range(frame_idx - reach, frame_idx + reach + 1):
            track.memory.pop(t)

    def _store(self, frame_idx: int, logits: torch.Tensor, scores: np.ndarray) -> FrameMasks:
        masks = (logits[:, 0] > 0).cpu().numpy()
        result = FrameMasks(frame_idx, self.object_ids, masks, np.asarray(scores, dtype=np.float32))
        self.results.put(result)
        return result


def _cancel_check(cancel: Union[threading.Event, Callable[[], bool], None]) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a threading.Event or a callable returning bool")
