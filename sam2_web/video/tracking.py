"""The reference's tracking flow on typed state: clicks, consolidation, preflight, propagation.

Every step here mirrors a step of the reference video predictor (which frames count as
conditioning, which output a click refines, where a merged output goes, the order frames are
tracked in) because that is what makes the mask logits identical. The steps return float logits
at the clip's resolution; :class:`~sam2_web.video.session.VideoSession` (which inherits this
class and holds the attributes it uses: ``model``, ``options``, ``objects``, ``store``,
``num_frames``, ``height``, ``width``, ``device``) wraps them into the engine API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sam2_web.errors import PromptError, UnknownObjectError
from sam2_web.modeling.sam2_base import NO_OBJ_SCORE
from sam2_web.video.memory import MemoryBank
from sam2_web.video.postprocess import non_overlapping
from sam2_web.video.prompts import check_frame, mask_prompt, point_prompt
from sam2_web.video.state import FrameMasks, FrameOutput, ObjectTrack, PointPrompt


@dataclass
class PropagationStep:
    """One frame produced by propagation, before conversion to :class:`FrameMasks`."""

    frame_idx: int
    obj_ids: list[int]
    logits: torch.Tensor  # (N, 1, H, W) at the clip's resolution
    scores: np.ndarray  # (N,) presence probability


class TrackingFlow:
    """Mixin with the reference-compatible steps of a :class:`VideoSession`."""

    @torch.inference_mode()
    def add_points_logits(self, frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords):
        """Reference ``add_new_points_or_box`` on typed state; returns (logits (N,1,H,W), scores)."""
        check_frame(frame_idx, self.num_frames)
        coords, point_labels = point_prompt(
            points, labels, box, clear_old_points, normalize_coords,
            video_size=(self.width, self.height), image_size=self.model.image_size,
        )
        coords, point_labels = coords.to(self.device), point_labels.to(self.device)
        track = self._track(obj_id, create=True)
        prompt = track.points.get(frame_idx) if not clear_old_points else None
        prompt = prompt.extended(coords, point_labels) if prompt is not None else PointPrompt(coords, point_labels)
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

    @torch.inference_mode()
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

    @torch.inference_mode()
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

    @torch.inference_mode()
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
        self.store.drop_object(obj_id)
        self._version += 1
        updated = []
        if need_output:
            for frame_idx in prompted:
                logits, _ = self._consolidate(frame_idx, self._any_pending_cond(frame_idx))
                updated.append((frame_idx, logits))
        return self.object_ids, updated

    @torch.inference_mode()
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

    @torch.inference_mode()
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
        self.store.put(result)
        return result
