"""The video predictor: SAM 2 plus the per-frame steps of the tracking engine.

``SAM2VideoPredictor`` keeps the reference's public API (``init_state``, ``add_new_points_or_box``,
``add_new_mask``, ``propagate_in_video``, ``clear_all_prompts_in_frame``, ``remove_object``,
``reset_state``) so code written for ``sam2`` switches by one import; the "inference state" it
hands out is a typed :class:`~sam2_web.video.session.VideoSession`, which the app and plugins
use directly through ``open_session``. Tracking semantics (which frames are conditioning, which
memories each frame reads, how outputs are consolidated across objects) follow the reference so
the mask logits match it; what differs is where things are kept (see ``memory.py``,
``features.py``, ``store.py``).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

from sam2_web.device import check_precision
from sam2_web.modeling.sam2_base import SAM2Base
from sam2_web.video.postprocess import fill_holes_and_sprinkles
from sam2_web.video.session import SessionOptions, VideoSession
from sam2_web.video.state import FrameOutput, PointPrompt

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


class SAM2VideoPredictor(SAM2Base):
    """SAM 2 with a tracking engine for clips.

    Args:
        fill_hole_area: fill background holes (and remove foreground specks, see
            ``remove_sprinkles``) up to this many low-res pixels in every predicted mask; 0 = off.
            Runs on CPU too (the reference skips it without its CUDA extension).
        non_overlap_masks: at every pixel keep only the highest-scoring object in the outputs.
        clear_non_cond_mem_around_input: when a prompted frame is merged into memory, drop the
            tracked memories within ``num_maskmem * stride`` frames of it (they may describe
            the object as it was before the correction).
        add_all_frames_to_correct_as_cond: a click on an already tracked frame makes it a
            conditioning frame (so the correction steers later frames). The reference default
            (False) treats it as a one-off edit that the next propagation overwrites; sessions
            opened with :meth:`open_session` default to True.
        remove_sprinkles: with ``fill_hole_area``, also delete small foreground specks.
        memory_dtype: "bfloat16" (as the reference; half the memory) or "float32".
        history: where evicted memories of earlier frames go: "disk" (bounded RAM, exact),
            "ram" (as the reference) or "drop" (bounded RAM and disk, see ``memory.py``).
        feature_cache_mb: RAM budget of the image-feature cache.
        feature_cache_dir: spill the feature cache to a temp folder under this path.
        read_ahead: frames decoded ahead of the tracker.
        **kwargs: the model's config arguments (see :class:`SAM2Base`).
    """

    def __init__(
        self,
        fill_hole_area: int = 0,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        *,
        remove_sprinkles: bool = True,
        memory_dtype: str = "bfloat16",
        history: str = "disk",
        feature_cache_mb: float = 1024,
        feature_cache_dir: Optional[str] = None,
        read_ahead: int = 6,
        precision: str = "fp32",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        # bf16 autocast on CUDA only (opt-in: it changes numbers); CPU stays float32.
        self.precision = check_precision(precision)
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.default_options = SessionOptions(
            fill_hole_area=fill_hole_area,
            remove_sprinkles=remove_sprinkles,
            non_overlap_masks=non_overlap_masks,
            clear_non_cond_mem_around_input=clear_non_cond_mem_around_input,
            add_all_frames_to_correct_as_cond=add_all_frames_to_correct_as_cond,
            memory_dtype=memory_dtype,
            history=history,
            feature_cache_mb=feature_cache_mb,
            feature_cache_dir=feature_cache_dir,
            read_ahead=read_ahead,
        )
        self.default_options.validate()

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
        session.warm_up()
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
        logits, _ = inference_state.add_points_logits(
            frame_idx, obj_id, points, labels, box, clear_old_points, normalize_coords
        )
        return frame_idx, inference_state.object_ids, logits

    def add_new_points(self, *args: Any, **kwargs: Any) -> tuple[int, list[int], torch.Tensor]:
        """Deprecated alias of :meth:`add_new_points_or_box` (as in the reference)."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(
        self, inference_state: VideoSession, frame_idx: int, obj_id: int, mask: Any
    ) -> tuple[int, list[int], torch.Tensor]:
        """Give ``obj_id`` a (H, W) mask on ``frame_idx``; returns like :meth:`add_new_points_or_box`."""
        logits, _ = inference_state.add_mask_logits(frame_idx, obj_id, mask)
        return frame_idx, inference_state.object_ids, logits

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: VideoSession) -> None:
        """Merge the outputs of recent clicks into memory (run automatically by propagation)."""
        inference_state.preflight()

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
        ``start_frame_idx``) forward, or backward with ``reverse=True``.
        """
        for step in inference_state.propagate_logits(start_frame_idx, max_frame_num_to_track, reverse):
            yield step.frame_idx, step.obj_ids, step.logits

    @torch.inference_mode()
    def clear_all_prompts_in_frame(
        self, inference_state: VideoSession, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> Optional[tuple[int, list[int], torch.Tensor]]:
        """Remove ``obj_id``'s prompts on ``frame_idx``; returns the frame's masks if ``need_output``."""
        out = inference_state.clear_frame_logits(frame_idx, obj_id, need_output)
        if out is None:
            return None
        return frame_idx, inference_state.object_ids, out[0]

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
        return inference_state.remove_object_logits(obj_id, strict, need_output)

    # ------------------------------------------------------------------ per-frame model steps

    def _frame_features(self, session: VideoSession, frame_idx: int):
        """(vision_feats, vision_pos_embeds, feat_sizes) of a frame, from the cache or the encoder."""
        maps = session.features.get(frame_idx, self.device)
        if maps is None:
            backbone_out = self.forward_image(session.model_input(frame_idx))
            maps = list(backbone_out["backbone_fpn"])
            session.features.put(frame_idx, maps)
            if session.vision_pos_enc is None:
                session.vision_pos_enc = list(backbone_out["vision_pos_enc"])
        backbone_out = {"backbone_fpn": list(maps), "vision_pos_enc": list(session.vision_pos_enc)}
        _, feats, pos, sizes = self._prepare_backbone_features(backbone_out)
        return feats, pos, sizes

    def _infer_frame(
        self,
        session: VideoSession,
        memory: Any,
        frame_idx: int,
        *,
        is_init_cond_frame: bool,
        point_inputs: Optional[PointPrompt],
        mask_inputs: Optional[torch.Tensor],
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits: Optional[torch.Tensor] = None,
    ) -> FrameOutput:
        """Segment one object on one frame given its memory bank; returns the compact output."""
        feats, pos, sizes = self._frame_features(session, frame_idx)
        out = self.track_step(
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            output_dict=memory,
            num_frames=session.num_frames,
            track_in_reverse=reverse,
            run_mem_encoder=run_mem_encoder,
            prev_sam_mask_logits=prev_sam_mask_logits,
        )
        pred_masks = out["pred_masks"]
        opts = session.options
        if opts.fill_hole_area > 0:
            pred_masks = fill_holes_and_sprinkles(
                pred_masks, opts.fill_hole_area, remove_sprinkles=opts.remove_sprinkles
            )
        maskmem, maskmem_pos = out["maskmem_features"], None
        if maskmem is not None:
            maskmem = maskmem.to(_DTYPES[opts.memory_dtype])
            maskmem_pos = session.shared_maskmem_pos_enc(out["maskmem_pos_enc"])
        return FrameOutput(
            pred_masks=pred_masks,
            obj_ptr=out["obj_ptr"],
            object_score_logits=out["object_score_logits"],
            maskmem_features=maskmem,
            maskmem_pos_enc=maskmem_pos,
        )

    def _encode_frame_memory(
        self, session: VideoSession, frame_idx: int, out: FrameOutput
    ) -> None:
        """Fill ``out.maskmem_features`` from its low-res logits (frames that only got clicks)."""
        feats, _, sizes = self._frame_features(session, frame_idx)
        high_res = torch.nn.functional.interpolate(
            out.pred_masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        maskmem, maskmem_pos = self._encode_new_memory(
            current_vision_feats=feats,
            feat_sizes=sizes,
            pred_masks_high_res=high_res,
            object_score_logits=out.object_score_logits,
            is_mask_from_pts=True,  # these frames are the ones the user interacted with
        )
        out.maskmem_features = maskmem.to(_DTYPES[session.options.memory_dtype])
        out.maskmem_pos_enc = session.shared_maskmem_pos_enc(maskmem_pos)

    def _memory_reach(self, frame_idx: int, reverse: bool, num_frames: int) -> set[int]:
        """Frames whose tracked (non-conditioning) outputs the model reads for ``frame_idx``."""
        reach = {t for _, t in self.memory_frame_indices(frame_idx, reverse)}
        if self.use_obj_ptrs_in_encoder:
            reach |= {t for _, t in self.obj_ptr_frame_indices(frame_idx, num_frames, reverse)}
        return reach
