"""Tracking on one clip: objects, their memories, the frames' features and the propagation loop.

Every step here mirrors a step of the reference video predictor (which frames count as
conditioning, which output a click refines, where a merged output goes, the order frames are
tracked in: ``passes.py``) because that is what makes the mask logits identical; what differs is where things
are kept (see ``memory.py``, ``features.py``, ``store.py``). The steps return float logits at the
clip's resolution (:class:`~sam2_web.video.state.FrameLogits`); the session turns them into the
engine's :class:`~sam2_web.video.state.FrameMasks` and the predictor into the reference's tuples.

Work on a frame is done for all objects at once: :meth:`Tracker._track_frame` fetches the
frame's features once and then segments each object that has no prompt there.

The per-frame loop never waits for the device (no ``.item()``, ``.cpu()``, ``.tolist()``, no
Python ``if`` on a tensor): masks and scores stay on the device and start their copy to the host
as packed bits (:class:`~sam2_web.video.state.FrameMasks`), the result store encodes them on a
worker thread, evicted memories are written by another, hole filling runs on the device, and
the next frames' encoder inputs are prepared ahead on a third (``FrameFeatures.prefetch``).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.device import autocast_context
from sam2_web.errors import CancelledError, PromptError, UnknownObjectError
from sam2_web.modeling.common import non_overlapping
from sam2_web.modeling.motion import MotionConfig, MotionState
from sam2_web.modeling.sam2_base import NO_OBJ_SCORE, PointInputs
from sam2_web.transforms import fill_holes_and_sprinkles
from sam2_web.video.background import SerialWorker
from sam2_web.video.cancel import Cancel, cancel_check
from sam2_web.video.features import EncodedFrame, FrameFeatures
from sam2_web.video.memory import MemoryBank, memory_reach
from sam2_web.video.options import SessionOptions
from sam2_web.video.passes import pass_frames, reverses
from sam2_web.video.prompts import check_frame, mask_prompt, point_prompt
from sam2_web.video.state import FrameLogits, FrameMasks, FrameOutput, ObjectTrack, TrackedFrame
from sam2_web.video.store import ResultStore

if TYPE_CHECKING:
    from sam2_web.modeling.sam2_base import SAM2Base, TrackStepOutput

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
# The reference's video hole filling sets a filled hole to 0.1 (barely foreground); removed
# specks mirror it at -0.1 and are looked up after the holes are filled.
_FILL_SCORE_OFFSET = 0.1


@dataclass
class _PassRecord:
    """How far a propagation pass got, to resume it without redoing frames."""

    version: int
    next_pos: int  # position in the pass's frame order of the first frame not finished


class Tracker:
    """Objects, their prompts and memories, and the propagation loop on one clip.

    Every public method takes the tracker's lock and runs in inference mode under the model's
    autocast (see :meth:`exclusive`), so clicks from one thread and a propagation driven from
    another interleave frame by frame.

    Args:
        model: the SAM 2 model (the video predictor) that segments.
        features: the clip's image features (cache + encoder).
        results: where every produced frame's masks are stored.
        options: the session's settings.
        num_frames, height, width: the clip's length and resolution.
        spill_dir: folder for memories evicted with ``history="disk"`` (created on first use).
    """

    def __init__(
        self,
        model: "SAM2Base",
        features: FrameFeatures,
        results: ResultStore,
        options: SessionOptions,
        *,
        num_frames: int,
        height: int,
        width: int,
        spill_dir: str,
    ):
        self.model = model
        self.features = features
        self.results = results
        self.options = options
        self.num_frames, self.height, self.width = num_frames, height, width
        self.device = model.device
        self.objects: dict[int, ObjectTrack] = {}
        self.lock = threading.RLock()
        self._spill_dir = spill_dir
        self._spill_writer = SerialWorker("sam2web-memory")
        self._maskmem_pos_enc: Optional[list[torch.Tensor]] = None
        self._next_uid = 0
        self._version = 0  # bumped by every prompt change; finished passes are tied to it
        self._passes: dict[tuple, _PassRecord] = {}
        # SAMURAI: the settings when on (the filter's state is per object and frame, in the
        # FrameOutputs), None when off.
        samurai = options.samurai if options.samurai is not None else bool(getattr(model, "samurai_mode", False))
        if samurai:
            model.check_motion_supported("samurai")
        self.motion_config: Optional[MotionConfig] = model.motion_config if samurai else None

    @property
    def object_ids(self) -> list[int]:
        """Object ids in insertion order."""
        return list(self.objects)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock, in inference mode, under the model's autocast (bf16 on CUDA when asked for)."""
        with self.lock, torch.inference_mode(), autocast_context(self.device, getattr(self.model, "precision", "fp32")):
            yield

    # ------------------------------------------------------------------ prompts

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> FrameLogits:
        """Add clicks and/or a box for ``obj_id`` on ``frame_idx`` (the reference's
        ``add_new_points_or_box``); returns every object's logits on the frame.

        Raises FrameIndexError / PromptError on bad input (nothing is changed then).
        """
        with self.exclusive():
            check_frame(frame_idx, self.num_frames)
            coords, point_labels = point_prompt(
                points, labels, box, clear_old_points, normalize_coords,
                video_size=(self.width, self.height), image_size=self.model.image_size,
            )
            coords, point_labels = coords.to(self.device), point_labels.to(self.device)
            track = self._track(obj_id, create=True)
            inputs = track.points.get(frame_idx) if not clear_old_points else None
            inputs = inputs.extended(coords, point_labels) if inputs is not None else PointInputs(coords, point_labels)
            track.points[frame_idx] = inputs
            track.masks.pop(frame_idx, None)
            self._version += 1
            is_init, reverse, is_cond = self._frame_role(track, frame_idx)
            # A click on a frame that already has a mask refines that mask (fed as a mask prompt).
            prev = track.pending(is_cond).get(frame_idx) or track.memory.cond.get(frame_idx) or track.memory.get(frame_idx)
            prev_logits = torch.clamp(prev.pred_masks.to(self.device), -32.0, 32.0) if prev is not None else None
            out = self._segment(
                track, frame_idx, self.features.get(frame_idx), is_init_cond_frame=is_init, point_inputs=inputs,
                mask_inputs=None, reverse=reverse, run_mem_encoder=False, prev_sam_mask_logits=prev_logits,
            )
            track.pending(is_cond)[frame_idx] = out
            return self._consolidate(frame_idx, is_cond)

    def add_mask(self, frame_idx: int, obj_id: int, mask: Any) -> FrameLogits:
        """Give ``obj_id`` a (H, W) mask on ``frame_idx`` (the reference's ``add_new_mask``).

        Raises FrameIndexError / PromptError (mask not 2-D or empty). Nothing changes on error.
        """
        with self.exclusive():
            check_frame(frame_idx, self.num_frames)
            mask_inputs = mask_prompt(mask, self.model.image_size, self.device)
            track = self._track(obj_id, create=True)
            track.masks[frame_idx] = mask_inputs
            track.points.pop(frame_idx, None)
            self._version += 1
            is_init, reverse, is_cond = self._frame_role(track, frame_idx)
            out = self._segment(
                track, frame_idx, self.features.get(frame_idx), is_init_cond_frame=is_init, point_inputs=None,
                mask_inputs=mask_inputs, reverse=reverse, run_mem_encoder=False,
            )
            track.pending(is_cond)[frame_idx] = out
            return self._consolidate(frame_idx, is_cond)

    def clear_prompts(
        self, frame_idx: int, obj_id: Optional[int] = None, *, need_output: bool = True
    ) -> Optional[FrameLogits]:
        """Remove the prompts on ``frame_idx`` of ``obj_id`` (None: of every object).

        Returns every object's logits on the frame (None unless ``need_output``).
        Raises FrameIndexError, UnknownObjectError (before anything changes).
        """
        with self.exclusive():
            check_frame(frame_idx, self.num_frames)
            tracks = list(self.objects.values()) if obj_id is None else [self._track(obj_id)]
            for track in tracks:
                self._clear_prompts(track, frame_idx)
            if not need_output:
                return None
            return self._consolidate(frame_idx, self._any_pending_cond(frame_idx))

    def remove_object(self, obj_id: int, *, strict: bool = True, need_output: bool = False) -> list[FrameLogits]:
        """Stop tracking ``obj_id`` and drop its results.

        Returns the frames where it had prompts, re-rendered without it (empty unless
        ``need_output``). An unknown id raises UnknownObjectError if ``strict``, else is ignored.
        """
        with self.exclusive():
            if obj_id not in self.objects:
                if strict:
                    raise UnknownObjectError(f"object {obj_id} is not tracked; tracked objects: {self.object_ids}")
                return []
            if len(self.objects) == 1:
                self.reset()
                return []
            track = self.objects[obj_id]
            prompted = track.prompted_frames()
            for frame_idx in prompted:
                self._clear_prompts(track, frame_idx)
            del self.objects[obj_id]
            track.memory.clear()
            self.results.drop_object(obj_id)
            self._version += 1
            if not need_output:
                return []
            return [self._consolidate(frame_idx, self._any_pending_cond(frame_idx)) for frame_idx in prompted]

    def reset(self) -> None:
        """Remove every object, prompt and result (cached features are kept)."""
        with self.lock:
            for track in self.objects.values():
                track.memory.clear()
            self.objects.clear()
            self.results.clear()
            self._passes.clear()
            self._version += 1

    def publish(self, frame: FrameLogits) -> FrameMasks:
        """Store ``frame``'s masks (logits > 0) as the frame's latest result and return them.

        The masks stay on the device until read (see :meth:`FrameMasks.on_device`); no host sync.
        """
        with self.lock:
            result = FrameMasks.on_device(frame.frame_idx, self.object_ids, frame.logits[:, 0] > 0, frame.scores)
            self.results.put(result)
            return result

    # ------------------------------------------------------------------ propagation

    def preflight(self) -> None:
        """Encode the memories of frames clicked since the last propagation and merge them.

        Raises PromptError when there is no object, or an object has no prompted frame.
        """
        with self.exclusive():
            if not self.objects:
                raise PromptError("no object has a prompt yet; add points, a box or a mask first")
            for track in self.objects.values():
                for is_cond in (False, True):
                    pending = track.pending(is_cond)
                    for frame_idx, out in pending.items():
                        if out.maskmem_features is None:
                            self._encode_memory(frame_idx, out)
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

    def propagate(
        self,
        direction: str = "forward",
        start_frame: Optional[int] = None,
        max_frames: Optional[int] = None,
        *,
        progress: Optional[Callable[[int, int], None]] = None,
        cancel: Cancel = None,
        resumable: bool = True,
    ) -> Iterator[TrackedFrame]:
        """The propagation loop: track every object through the clip, storing and yielding each
        frame as it is done.

        Args:
            direction, start_frame, max_frames, progress, cancel: see
                :meth:`~sam2_web.video.session.VideoSession.propagate`.
            resumable: frames a cancelled or failed pass already finished (with the same
                prompts) are taken from the store instead of recomputed, and this pass's progress
                is recorded for the next one. False recomputes every frame and records nothing
                (the reference's behaviour).
        Yields:
            :class:`TrackedFrame` per frame, in the reference's order. The lock is held while a
            frame is computed, never across a yield.
        Raises:
            CancelledError: when cancelled; finished frames stay stored and a new call resumes.
            PromptError: no object has a prompt yet. FrameIndexError: bad ``start_frame``.
            ValueError: unknown ``direction``.
        """
        passes = reverses(direction)
        if start_frame is not None:
            check_frame(start_frame, self.num_frames)
        is_cancelled = cancel_check(cancel)
        with self.exclusive():
            self.preflight()
            start = self._default_start() if start_frame is None else start_frame
            orders = [pass_frames(start, max_frames, reverse, self.num_frames) for reverse in passes]
            version = self._version
        total, done = sum(len(order) for order in orders), 0
        for reverse, order in zip(passes, orders):
            key = (reverse, tuple(order[:1]), len(order))
            record = self._passes.get(key) if resumable else None
            resume_at = record.next_pos if record and record.version == version else 0
            for pos, frame_idx in enumerate(order):
                if pos < resume_at:
                    tracked = TrackedFrame(self.results.get(frame_idx, self.object_ids), None)
                else:
                    if is_cancelled():
                        raise CancelledError(
                            f"tracking stopped after {done} of {total} frames; call propagate() again to resume"
                        )
                    with self.exclusive():
                        upcoming = order[pos + 1] if pos + 1 < len(order) else None
                        self.features.prefetch(order[pos : pos + 1 + self.options.read_ahead])
                        frame = self._track_frame(frame_idx, reverse, upcoming)
                        tracked = TrackedFrame(self.publish(frame), frame.logits)
                        if resumable:
                            self._passes[key] = _PassRecord(version, pos + 1)
                done += 1
                if progress:
                    progress(done, total)
                yield tracked

    def flush(self) -> None:
        """Wait for the background work to land: stored results encoded, evicted memories on disk.

        Raises what a failed background write raised (e.g. OSError for a full disk).
        """
        self._spill_writer.flush()
        self.results.flush()

    def warm_up(self) -> None:
        """Encode frame 0 now (the frame users click first), as the reference's init_state does."""
        with self.exclusive():
            self.features.get(0)

    def close(self) -> None:
        """Forget every object and its memory files, every result and every cached feature."""
        with self.lock:
            for track in self.objects.values():
                track.memory.clear()
            self.objects.clear()
            self._spill_writer.close()
            self.features.close()
            self.results.close()

    # ------------------------------------------------------------------ one frame, all objects

    def _track_frame(self, frame_idx: int, reverse: bool, next_frame: Optional[int]) -> FrameLogits:
        """Segment every object on ``frame_idx`` from memory, then shrink the memories to the
        window ``next_frame`` will read."""
        # The frame is encoded once, and what the objects share is computed once
        # (SAM2Base.track_objects), for all the objects that have no prompt here.
        unprompted = [t for t in self.objects.values() if frame_idx not in t.memory.cond]
        computed: dict[int, FrameOutput] = {}
        if unprompted:
            image = self.features.get(frame_idx)
            steps = self.model.track_objects(
                frame_idx=frame_idx,
                current_vision_feats=image.vision_feats,
                current_vision_pos_embeds=image.vision_pos_embeds,
                feat_sizes=image.feat_sizes,
                memories=[t.memory for t in unprompted],
                num_frames=self.num_frames,
                track_in_reverse=reverse,
                motions=None if self.motion_config is None else [
                    self._motion_before(t, frame_idx, reverse) for t in unprompted
                ],
            )
            # Hole filling for all objects at once (one batch of device ops, not one per object).
            filled = None
            if self.options.fill_hole_area > 0:
                filled = self._fill(torch.cat([step.pred_masks for step in steps], dim=0))
            for k, (track, step) in enumerate(zip(unprompted, steps)):
                pred_masks = step.pred_masks if filled is None else filled[k : k + 1].clone()
                computed[track.obj_id] = out = self._compact(step, pred_masks)
                track.memory.put(frame_idx, out)
        preds, scores = [], []
        for track in self.objects.values():
            out = track.memory.cond.get(frame_idx)
            if out is not None:
                if self.options.clear_non_cond_mem_around_input:
                    self._clear_memory_around(track, frame_idx)
            else:
                out = computed[track.obj_id]
            track.tracked[frame_idx] = reverse
            preds.append(out.pred_masks)
            # Kept on the device: float() here would wait for the whole frame's kernels.
            scores.append(torch.sigmoid(out.object_score_logits.float()).flatten()[:1])
        # Keep what the next frame of the pass reads (after the last frame: what a continuation
        # in the same direction would read, so a resumed or extended pass finds it in RAM).
        upcoming = next_frame if next_frame is not None else frame_idx + (-1 if reverse else 1)
        keep = memory_reach(self.model, upcoming, reverse, self.num_frames)
        for track in self.objects.values():
            if self.motion_config is None:
                track.memory.evict(keep)
            else:  # SAMURAI's memories may lie further back: keep what the next frame reads
                picked = self.model.samurai_memory_frames(track.memory, upcoming, reverse, self.num_frames)
                track.memory.evict(keep | {t for _, t in picked})
        logits = self._to_video_res(torch.cat(preds, dim=0))
        return FrameLogits(frame_idx, self.object_ids, logits, torch.cat(scores))

    def _segment(
        self,
        track: ObjectTrack,
        frame_idx: int,
        image: EncodedFrame,
        *,
        is_init_cond_frame: bool,
        point_inputs: Optional[PointInputs],
        mask_inputs: Optional[torch.Tensor],
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits: Optional[torch.Tensor] = None,
    ) -> FrameOutput:
        """Segment one object on one frame given its memory bank; returns the compact output."""
        out = self.model.track_step(
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=image.vision_feats,
            current_vision_pos_embeds=image.vision_pos_embeds,
            feat_sizes=image.feat_sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            memory=track.memory,
            num_frames=self.num_frames,
            track_in_reverse=reverse,
            run_mem_encoder=run_mem_encoder,
            prev_sam_mask_logits=prev_sam_mask_logits,
            # A prompt restarts the object's motion: the filter starts afresh from this frame.
            motion=None if self.motion_config is None else MotionState(),
        )
        return self._compact(out, self._fill(out.pred_masks))

    def _motion_before(self, track: ObjectTrack, frame_idx: int, reverse: bool) -> MotionState:
        """The object's SAMURAI filter after the frame before ``frame_idx`` in the pass's
        direction (a fresh filter when that frame has no output of it)."""
        prev = frame_idx + 1 if reverse else frame_idx - 1
        out = track.memory.cond.get(prev) or track.memory.get(prev)
        return out.motion if out is not None and out.motion is not None else MotionState()

    def _fill(self, pred_masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) low-res logits with small holes filled and specks removed (on their device)."""
        area = self.options.fill_hole_area
        if area <= 0:
            return pred_masks
        return fill_holes_and_sprinkles(
            pred_masks, 0.0, area, area if self.options.remove_sprinkles else 0,
            score_offset=_FILL_SCORE_OFFSET, sprinkles_after_holes=True,
        )

    def _compact(self, out: "TrackStepOutput", pred_masks: torch.Tensor) -> FrameOutput:
        """A step's output as stored: ``pred_masks`` (its logits after :meth:`_fill`), memory in
        the session's dtype, shared PE."""
        maskmem, maskmem_pos = out.maskmem_features, None
        if maskmem is not None:
            maskmem = maskmem.to(_DTYPES[self.options.memory_dtype])
            maskmem_pos = self._shared_maskmem_pos_enc(out.maskmem_pos_enc)
        return FrameOutput(
            pred_masks=pred_masks,
            obj_ptr=out.obj_ptr,
            object_score_logits=out.object_score_logits,
            maskmem_features=maskmem,
            maskmem_pos_enc=maskmem_pos,
            motion=None if out.motion is None else out.motion.state,
            scores=None if out.motion is None else out.motion.scores,
        )

    def _encode_memory(self, frame_idx: int, out: FrameOutput) -> None:
        """Fill ``out.maskmem_features`` from its low-res logits (frames that only got clicks)."""
        image = self.features.get(frame_idx)
        size = self.model.image_size
        high_res = F.interpolate(out.pred_masks, size=(size, size), mode="bilinear", align_corners=False)
        maskmem, maskmem_pos = self.model.encode_memory(
            current_vision_feats=image.vision_feats,
            feat_sizes=image.feat_sizes,
            pred_masks_high_res=high_res,
            object_score_logits=out.object_score_logits,
            is_mask_from_pts=True,  # these frames are the ones the user interacted with
        )
        out.maskmem_features = maskmem.to(_DTYPES[self.options.memory_dtype])
        out.maskmem_pos_enc = self._shared_maskmem_pos_enc(maskmem_pos)

    def _shared_maskmem_pos_enc(self, pos_enc: list[torch.Tensor]) -> list[torch.Tensor]:
        """The memory position encoding is the same on every frame: keep one copy and share it."""
        if self._maskmem_pos_enc is None:
            self._maskmem_pos_enc = [p[0:1].clone() for p in pos_enc]
            for track in self.objects.values():
                track.memory.maskmem_pos_enc = self._maskmem_pos_enc
        return self._maskmem_pos_enc

    # ------------------------------------------------------------------ bookkeeping

    def _track(self, obj_id: int, create: bool = False) -> ObjectTrack:
        track = self.objects.get(obj_id)
        if track is not None:
            return track
        if not create:
            raise UnknownObjectError(f"object {obj_id} is not tracked; tracked objects: {self.object_ids}")
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise PromptError(f"object ids must be integers, got {obj_id!r}")
        memory = MemoryBank(self._next_uid, self.options.history, self._spill_dir, self._spill_writer)
        memory.maskmem_pos_enc = self._maskmem_pos_enc
        track = ObjectTrack(obj_id=int(obj_id), uid=self._next_uid, memory=memory)
        self._next_uid += 1
        self.objects[track.obj_id] = track
        return track

    def _clear_prompts(self, track: ObjectTrack, frame_idx: int) -> None:
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

    def _consolidate(self, frame_idx: int, is_cond: bool) -> FrameLogits:
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
        return FrameLogits(frame_idx, self.object_ids, logits, scores)

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
