"""The video predictor: SAM 2 plus sessions of the tracking engine.

``SAM2VideoPredictor`` keeps the reference's public API (``init_state``, ``add_new_points_or_box``,
``add_new_mask``, ``propagate_in_video``, ``clear_all_prompts_in_frame``, ``remove_object``,
``reset_state``) so code written for ``sam2`` switches by one import; the "inference state" it
hands out is a typed :class:`~sam2_web.video.session.VideoSession`, which the app and plugins
use directly through ``open_session``. The tracking itself lives in the session's
:class:`~sam2_web.video.tracker.Tracker`; the methods here are thin adapters to it.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

from sam2_web.device import check_precision
from sam2_web.modeling.sam2_base import SAM2Base
from sam2_web.video.memory import spilled_bytes_per_frame
from sam2_web.video.options import SessionOptions
from sam2_web.video.session import VideoSession


class SAM2VideoPredictor(SAM2Base):
    """SAM 2 with a tracking engine for clips.

    Args:
        precision: "fp32" or "bf16" (autocast on CUDA only; opt-in, it changes numbers).
        **kwargs: the default :class:`~sam2_web.video.options.SessionOptions` of every session
            (``fill_hole_area``, ``non_overlap_masks``, ``clear_non_cond_mem_around_input`` and
            ``add_all_frames_to_correct_as_cond`` as in the reference, plus ``memory_dtype``,
            ``history``, ``feature_cache_mb``, ``read_ahead`` ...; their defaults live in that
            class), and the model's config arguments (see :class:`SAM2Base`).

    Attributes:
        fill_hole_area, non_overlap_masks, clear_non_cond_mem_around_input,
        add_all_frames_to_correct_as_cond: the reference's settings; scripts may change them
            after building and the next session uses the new values.
        default_options: the other session settings.
    """

    def __init__(self, *, precision: str = "fp32", **kwargs: Any):
        names = SessionOptions.names()
        options = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        super().__init__(**kwargs)
        # bf16 autocast on CUDA only (opt-in: it changes numbers); CPU stays float32.
        self.precision = check_precision(precision)
        self.default_options = SessionOptions().replace(**options)
        self.fill_hole_area = self.default_options.fill_hole_area
        self.non_overlap_masks = self.default_options.non_overlap_masks
        self.clear_non_cond_mem_around_input = self.default_options.clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = self.default_options.add_all_frames_to_correct_as_cond

    # ------------------------------------------------------------------ sessions

    def open_session(self, source: Any, **opts: Any) -> VideoSession:
        """Open a tracking session on a clip.

        Args:
            source: a video file path, a folder of JPEG/PNG frames, a list of image paths, an
                ``(N, H, W, 3) uint8`` array, or an open ``sam2_web.media.frames.FrameSource``.
            **opts: fields of :class:`SessionOptions` overriding the predictor's defaults;
                ``add_all_frames_to_correct_as_cond`` defaults to True here.
        Returns:
            A :class:`VideoSession`; ``close()`` it (or use ``with``) to free caches and temp files.
        Raises:
            VideoReadError: the clip cannot be opened or holds no frames.
            TypeError: an unknown option name.
        """
        opts.setdefault("add_all_frames_to_correct_as_cond", True)
        return VideoSession(self, source, self._current_options().replace(**opts))

    @torch.inference_mode()
    def init_state(
        self,
        video_path: Any,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> VideoSession:
        """Reference-compatible: open a session with the predictor's settings.

        Frames are always decoded on demand and stored state is bounded, so the offload and
        async flags are accepted for compatibility and have nothing left to switch.
        """
        session = VideoSession(self, video_path, self._current_options())
        session.tracker.warm_up()
        return session

    def _current_options(self) -> SessionOptions:
        # Scripts written for the reference set these as attributes after building
        # (e.g. ``predictor.fill_hole_area = 0``); honour their current values.
        return self.default_options.replace(
            fill_hole_area=self.fill_hole_area,
            non_overlap_masks=self.non_overlap_masks,
            clear_non_cond_mem_around_input=self.clear_non_cond_mem_around_input,
            add_all_frames_to_correct_as_cond=self.add_all_frames_to_correct_as_cond,
        )

    def history_bytes_per_frame(self) -> int:
        """Disk one tracked frame of one object takes in a session's memory history (an upper
        bound; see ``sam2_web.video.memory.spilled_bytes_per_frame``)."""
        return spilled_bytes_per_frame(self, self.default_options.memory_dtype)

    # ------------------------------------------------------------------ reference-compatible API

    @torch.inference_mode()
    def add_new_points_or_box(
        self,
        inference_state: VideoSession,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> tuple[int, list[int], torch.Tensor]:
        """Add clicks and/or a box for ``obj_id`` on ``frame_idx``.

        Returns ``(frame_idx, obj_ids, video_res_mask_logits (N, 1, H, W))`` for all objects.
        Raises FrameIndexError / PromptError on bad input (nothing is changed then).
        """
        frame = inference_state.add_prompt_logits(
            frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords
        )
        return frame_idx, frame.obj_ids, frame.logits

    def add_new_points(self, *args: Any, **kwargs: Any) -> tuple[int, list[int], torch.Tensor]:
        """Deprecated alias of :meth:`add_new_points_or_box` (as in the reference)."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(
        self, inference_state: VideoSession, frame_idx: int, obj_id: int, mask: Any
    ) -> tuple[int, list[int], torch.Tensor]:
        """Give ``obj_id`` a (H, W) mask on ``frame_idx``; returns like :meth:`add_new_points_or_box`."""
        frame = inference_state.add_mask_logits(frame_idx, obj_id, mask)
        return frame_idx, frame.obj_ids, frame.logits

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: VideoSession) -> None:
        """Merge the outputs of recent clicks into memory (run automatically by propagation)."""
        inference_state.tracker.preflight()

    @torch.inference_mode()
    def propagate_in_video(
        self,
        inference_state: VideoSession,
        start_frame_idx: Optional[int] = None,
        max_frame_num_to_track: Optional[int] = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Track every object through the clip; yields ``(frame_idx, obj_ids, video_res_mask_logits)``.

        Same frame order and defaults as the reference: from the earliest prompted frame (or
        ``start_frame_idx``) forward, or backward with ``reverse=True``. Like the reference it
        recomputes every frame (the engine's ``propagate`` resumes instead); results are stored.
        """
        self.propagate_in_video_preflight(inference_state)  # first, as the reference does
        tracker = inference_state.tracker
        direction = "backward" if reverse else "forward"
        for tracked in tracker.propagate(direction, start_frame_idx, max_frame_num_to_track, resumable=False):
            yield tracked.masks.frame_idx, tracked.masks.obj_ids, tracked.logits

    @torch.inference_mode()
    def clear_all_prompts_in_frame(
        self, inference_state: VideoSession, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> Optional[tuple[int, list[int], torch.Tensor]]:
        """Remove ``obj_id``'s prompts on ``frame_idx``; returns the frame's masks if ``need_output``."""
        frame = inference_state.clear_prompts_logits(frame_idx, obj_id, need_output=need_output)
        if frame is None:
            return None
        return frame_idx, frame.obj_ids, frame.logits

    @torch.inference_mode()
    def reset_state(self, inference_state: VideoSession) -> None:
        """Remove every object and prompt (the clip and its cached features stay)."""
        inference_state.reset()

    @torch.inference_mode()
    def remove_object(
        self, inference_state: VideoSession, obj_id: int, strict: bool = False, need_output: bool = True
    ) -> tuple[list[int], list[tuple[int, torch.Tensor]]]:
        """Remove ``obj_id``; returns ``(obj_ids, [(frame_idx, video_res_mask_logits)])`` for the
        frames where it had prompts. Unknown ids are ignored unless ``strict`` (UnknownObjectError)."""
        updated = inference_state.remove_object_logits(obj_id, strict=strict, need_output=need_output)
        return inference_state.object_ids, [(frame.frame_idx, frame.logits) for frame in updated]
