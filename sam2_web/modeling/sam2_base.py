"""SAM 2 as one module: image encoder, SAM prompt/mask heads, memory attention and memory encoder.

This class holds the weights and the single-frame operations; the image predictor and the video
engine drive it, and state across frames lives with them, not here. One tracking step
(:meth:`SAM2Base.track_step`) is three steps, each a method of its own:

1. condition the frame's features on the memory of other frames
   (:meth:`~SAM2Base._prepare_memory_conditioned_features`: which frames and how their outputs
   become tokens is :mod:`sam2_web.modeling.memory_reading`; then memory attention);
2. decode the prompts on them (:meth:`~SAM2Base._forward_sam_heads`, a :class:`HeadsOutput`);
3. encode the predicted mask into this frame's memory (:meth:`~SAM2Base.encode_memory`,
   ending in :meth:`~SAM2Base._compress_memory`, the identity for SAM 2).

Inference only: training-time switches of the published configs are accepted (so the official
YAMLs instantiate) and evaluation semantics are always used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

from sam2_web.errors import ConfigError
from sam2_web.modeling import memory_reading
from sam2_web.modeling.common import MLP, non_overlapping
from sam2_web.modeling.memory_reading import MemoryReadConfig, MemorySource, MemoryTokens
from sam2_web.modeling.motion import (
    FrameScores,
    MotionConfig,
    MotionState,
    MotionStep,
    choose_mask,
    mask_boxes,
    select_memory_frames,
)
from sam2_web.modeling.sam.mask_decoder import MaskDecoder
from sam2_web.modeling.sam.prompt_encoder import PromptEncoder
from sam2_web.modeling.sam.transformer import TwoWayTransformer

__all__ = ["NO_OBJ_SCORE", "HeadsOutput", "PointInputs", "SAM2Base", "TrackStepOutput"]

# Logit given to every pixel of a frame where the object is judged absent.
NO_OBJ_SCORE = -1024.0

# Logits used when an input mask is taken as the output: sigmoid(-10) ~ 4.5e-5, sigmoid(10) ~ 1.
_MASK_AS_OUTPUT_SCALE, _MASK_AS_OUTPUT_BIAS = 20.0, -10.0


@dataclass
class PointInputs:
    """Clicks (and a box, as two corner points) on one frame: the heads' ``point_inputs``.

    ``point_coords`` is (B, P, 2) float in ``image_size`` pixels; ``point_labels`` is (B, P)
    int32 with 1 = positive, 0 = negative, 2/3 = box top-left/bottom-right (how SAM 2 was
    trained), -1 = padding. (What the user clicked, in clip pixels, is ``sam2_web.video.edits.Click``.)
    """

    point_coords: torch.Tensor
    point_labels: torch.Tensor

    def extended(self, coords: torch.Tensor, labels: torch.Tensor) -> "PointInputs":
        """Return inputs with ``coords``/``labels`` appended after the existing points."""
        return PointInputs(
            torch.cat([self.point_coords, coords], dim=1), torch.cat([self.point_labels, labels], dim=1)
        )


@dataclass
class HeadsOutput:
    """What the SAM heads predict on one frame for B prompt sets (M = 3 candidate masks with
    multimask output, else 1; S = ``image_size``).

    Attributes:
        low_res_multimasks: (B, M, S/4, S/4) mask logits of every candidate.
        high_res_multimasks: (B, M, S, S) the same, upsampled to the model input size.
        ious: (B, M) predicted IoU of each candidate.
        low_res_masks / high_res_masks: (B, 1, S/4, S/4) / (B, 1, S, S) the best candidate.
        obj_ptr: (B, C) object pointer, read by later frames' memory attention.
        object_score_logits: (B, 1) logit that the object is present on the frame.
        motion: with SAMURAI's motion-aware choice, each row's filter state and scores after
            this frame (see :mod:`sam2_web.modeling.motion`); None otherwise.
    """

    low_res_multimasks: torch.Tensor
    high_res_multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    motion: Optional[List[MotionStep]] = None


@dataclass
class TrackStepOutput:
    """One frame's result of :meth:`SAM2Base.track_step`; it is also what later frames read
    as this frame's memory (a :class:`~sam2_web.modeling.memory_reading.MemoryEntry`).

    Attributes:
        pred_masks: (B, 1, S/4, S/4) low-res mask logits.
        pred_masks_high_res: (B, 1, S, S) mask logits at the model input size.
        obj_ptr: (B, C) object pointer.
        object_score_logits: (B, 1) logit that the object is present.
        maskmem_features: (B, mem_dim, h, w) spatial memory ((B, N, mem_dim) tokens with a
            spatial perceiver), or None when not encoded.
        maskmem_pos_enc: ``[tensor]`` its position encoding (same shape), or None when not encoded.
        motion: the object's SAMURAI filter state and scores after this frame (batch 1), or None
            when the step ran without it.
    """

    pred_masks: torch.Tensor
    pred_masks_high_res: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: Optional[torch.Tensor] = None
    maskmem_pos_enc: Optional[List[torch.Tensor]] = None
    motion: Optional[MotionStep] = None


def _tokens_to_map(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(HW, B, C) token sequence -> (B, C, H, W) map."""
    return x.permute(1, 2, 0).view(x.size(1), x.size(2), *hw)


class _MemorySetting:
    """A ``SAM2Base`` attribute kept in its ``memory_config``: reading it reads the config and
    assigning it replaces the config, so the attribute and what memory reading uses never differ."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, model: Optional["SAM2Base"], owner: Optional[type] = None) -> Any:
        if model is None:
            return self
        return getattr(model.memory_config, self.name)

    def __set__(self, model: "SAM2Base", value: Any) -> None:
        model.memory_config = dataclasses.replace(model.memory_config, **{self.name: value})


class SAM2Base(nn.Module):
    """The SAM 2 network. Keyword arguments are those of the published configs (see the module
    docstring for the memory layout); argument names and parameter names match the official
    checkpoints."""

    # The memory-reading settings live in ``self.memory_config`` (built once in __init__).
    num_maskmem = _MemorySetting()
    memory_temporal_stride_for_eval = _MemorySetting()
    max_cond_frames_in_attn = _MemorySetting()
    use_obj_ptrs_in_encoder = _MemorySetting()
    max_obj_ptrs_in_encoder = _MemorySetting()
    add_tpos_enc_to_obj_ptrs = _MemorySetting()
    proj_tpos_enc_in_obj_ptrs = _MemorySetting()
    use_signed_tpos_enc_to_obj_ptrs = _MemorySetting()
    only_obj_ptrs_in_the_past_for_eval = _MemorySetting()
    hidden_dim = _MemorySetting()
    mem_dim = _MemorySetting()

    def __init__(
        self,
        image_encoder: nn.Module,
        memory_attention: nn.Module,
        memory_encoder: nn.Module,
        num_maskmem: int = 7,
        image_size: int = 512,
        backbone_stride: int = 16,
        sigmoid_scale_for_mem_enc: float = 1.0,
        sigmoid_bias_for_mem_enc: float = 0.0,
        binarize_mask_from_pts_for_mem_enc: bool = False,
        use_mask_input_as_output_without_sam: bool = False,
        max_cond_frames_in_attn: int = -1,
        directly_add_no_mem_embed: bool = False,
        use_high_res_features_in_sam: bool = False,
        multimask_output_in_sam: bool = False,
        multimask_min_pt_num: int = 1,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        memory_temporal_stride_for_eval: int = 1,
        non_overlap_masks_for_mem_enc: bool = False,
        use_obj_ptrs_in_encoder: bool = False,
        max_obj_ptrs_in_encoder: int = 16,
        add_tpos_enc_to_obj_ptrs: bool = True,
        proj_tpos_enc_in_obj_ptrs: bool = False,
        use_signed_tpos_enc_to_obj_ptrs: bool = False,
        only_obj_ptrs_in_the_past_for_eval: bool = False,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        fixed_no_obj_ptr: bool = False,
        soft_no_obj_ptr: bool = False,
        use_mlp_for_obj_ptr_proj: bool = False,
        no_obj_embed_spatial: bool = False,
        sam_mask_decoder_extra_args: Optional[Mapping[str, Any]] = None,
        compile_image_encoder: bool = False,
        spatial_perceiver: Optional[nn.Module] = None,
        samurai_mode: bool = False,
        stable_frames_threshold: Optional[int] = None,
        stable_ious_threshold: Optional[float] = None,
        min_obj_score_logits: Optional[float] = None,
        kf_score_weight: Optional[float] = None,
        memory_bank_iou_threshold: Optional[float] = None,
        memory_bank_obj_score_threshold: Optional[float] = None,
        memory_bank_kf_score_threshold: Optional[float] = None,
    ) -> None:
        """
        Args:
            image_encoder / memory_attention / memory_encoder: the three sub-networks.
            num_maskmem: memories attended to (1 conditioning slot + ``num_maskmem - 1`` past frames).
            image_size: side of the square model input.
            backbone_stride: stride of the lowest-resolution feature map.
            sigmoid_scale_for_mem_enc / sigmoid_bias_for_mem_enc: affine map applied to mask
                probabilities before the memory encoder.
            binarize_mask_from_pts_for_mem_enc: threshold masks from clicked frames before encoding.
            use_mask_input_as_output_without_sam: a mask prompt is taken as the output as is.
            max_cond_frames_in_attn: cap on conditioning frames attended to (-1 = all).
            directly_add_no_mem_embed: on a first prompted frame add ``no_mem_embed`` instead
                of running memory attention.
            use_high_res_features_in_sam: feed stride-4/8 features to the mask decoder.
            multimask_output_in_sam / multimask_min_pt_num / multimask_max_pt_num /
                multimask_output_for_tracking: when the mask decoder proposes three masks.
            use_multimask_token_for_obj_ptr: object pointer from the chosen multimask token.
            iou_prediction_use_sigmoid: IoU head output through a sigmoid.
            memory_temporal_stride_for_eval: stride ``r`` between past memory frames.
            non_overlap_masks_for_mem_enc: keep only the top object per pixel before encoding.
            use_obj_ptrs_in_encoder / max_obj_ptrs_in_encoder: attend to past object pointers.
            add_tpos_enc_to_obj_ptrs / proj_tpos_enc_in_obj_ptrs / use_signed_tpos_enc_to_obj_ptrs:
                temporal position encoding of object pointers.
            only_obj_ptrs_in_the_past_for_eval: ignore pointers of future conditioning frames.
            pred_obj_scores / pred_obj_scores_mlp: predict whether the object is visible.
            fixed_no_obj_ptr / soft_no_obj_ptr: how the "no object" pointer replaces the pointer.
            use_mlp_for_obj_ptr_proj: 3-layer MLP (not a linear layer) for the pointer projection.
            no_obj_embed_spatial: add a learnt embedding to memories of frames without the object.
            sam_mask_decoder_extra_args: extra ``MaskDecoder`` kwargs (e.g. dynamic multimask).
            compile_image_encoder: wrap the image encoder's forward in ``torch.compile``.
            spatial_perceiver: compresses each new memory map into tokens (EdgeTAM's
                :class:`~sam2_web.modeling.perceiver.PerceiverResampler`); None keeps the maps.
            samurai_mode: track with SAMURAI's motion-aware mask choice and memory selection by
                default (a video session may still turn it on or off).
            stable_frames_threshold ... memory_bank_kf_score_threshold: SAMURAI's settings
                (:class:`~sam2_web.modeling.motion.MotionConfig`; None keeps its default).
        Raises:
            ConfigError: a SAMURAI setting out of range, or ``samurai_mode`` on a model whose
                decoder gives no multimask output while tracking.
        """
        super().__init__()
        if proj_tpos_enc_in_obj_ptrs and not add_tpos_enc_to_obj_ptrs:
            raise ValueError("proj_tpos_enc_in_obj_ptrs=True needs add_tpos_enc_to_obj_ptrs=True")
        if fixed_no_obj_ptr and not (pred_obj_scores and use_obj_ptrs_in_encoder):
            raise ValueError("fixed_no_obj_ptr=True needs pred_obj_scores and use_obj_ptrs_in_encoder")

        self.image_encoder = image_encoder
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder
        self.spatial_perceiver = spatial_perceiver
        hidden_dim = image_encoder.neck.d_model
        # Memories may be narrower than the image features (64 vs 256 channels in all configs).
        out_proj = getattr(memory_encoder, "out_proj", None)
        mem_dim = out_proj.weight.shape[0] if hasattr(out_proj, "weight") else hidden_dim
        self.memory_config = MemoryReadConfig(
            num_maskmem=num_maskmem,
            memory_temporal_stride_for_eval=memory_temporal_stride_for_eval,
            max_cond_frames_in_attn=max_cond_frames_in_attn,
            use_obj_ptrs_in_encoder=use_obj_ptrs_in_encoder,
            max_obj_ptrs_in_encoder=max_obj_ptrs_in_encoder,
            add_tpos_enc_to_obj_ptrs=add_tpos_enc_to_obj_ptrs,
            proj_tpos_enc_in_obj_ptrs=proj_tpos_enc_in_obj_ptrs,
            use_signed_tpos_enc_to_obj_ptrs=use_signed_tpos_enc_to_obj_ptrs,
            only_obj_ptrs_in_the_past_for_eval=only_obj_ptrs_in_the_past_for_eval,
            hidden_dim=hidden_dim,
            mem_dim=mem_dim,
        )

        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.use_high_res_features_in_sam = use_high_res_features_in_sam
        self.num_feature_levels = 3 if use_high_res_features_in_sam else 1
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.use_mask_input_as_output_without_sam = use_mask_input_as_output_without_sam
        self.directly_add_no_mem_embed = directly_add_no_mem_embed
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.iou_prediction_use_sigmoid = iou_prediction_use_sigmoid
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc
        self.pred_obj_scores = pred_obj_scores
        self.pred_obj_scores_mlp = pred_obj_scores_mlp
        self.fixed_no_obj_ptr = fixed_no_obj_ptr
        self.soft_no_obj_ptr = soft_no_obj_ptr
        self.use_mlp_for_obj_ptr_proj = use_mlp_for_obj_ptr_proj
        self.sam_mask_decoder_extra_args = dict(sam_mask_decoder_extra_args or {})

        # Learnt tokens; initialised like the original (they are overwritten by checkpoints).
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc):
            trunc_normal_(p, std=0.02)
        if use_obj_ptrs_in_encoder:
            # Brings a mask prompt to the stride of SAM's low-res logits, so the decoder can
            # turn a mask-only prompt into an object pointer.
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        if pred_obj_scores and use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
            trunc_normal_(self.no_obj_ptr, std=0.02)
        self.no_obj_embed_spatial: Optional[nn.Parameter] = None
        if no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
            trunc_normal_(self.no_obj_embed_spatial, std=0.02)

        self._build_sam_heads()

        given = {
            "stable_frames_threshold": stable_frames_threshold,
            "stable_ious_threshold": stable_ious_threshold,
            "min_obj_score_logits": min_obj_score_logits,
            "kf_score_weight": kf_score_weight,
            "memory_bank_iou_threshold": memory_bank_iou_threshold,
            "memory_bank_obj_score_threshold": memory_bank_obj_score_threshold,
            "memory_bank_kf_score_threshold": memory_bank_kf_score_threshold,
        }
        self.motion_config = MotionConfig(**{k: v for k, v in given.items() if v is not None})
        if not isinstance(samurai_mode, bool):
            raise ConfigError(f"samurai_mode must be true or false, got {samurai_mode!r}")
        self.samurai_mode = samurai_mode
        if samurai_mode:
            self.check_motion_supported("samurai_mode")

        if compile_image_encoder:
            # Compile the bound forward, not the module, so state-dict keys stay unprefixed and
            # checkpoints still load. Compilation itself happens lazily at the first call.
            self.image_encoder.forward = torch.compile(
                self.image_encoder.forward, mode="max-autotune", fullgraph=True, dynamic=False
            )

    def _build_sam_heads(self) -> None:
        """SAM's prompt encoder and mask decoder (sizes as in SAM), plus the pointer projections."""
        self.sam_prompt_embed_dim = self.hidden_dim
        self.sam_image_embedding_size = self.image_size // self.backbone_stride
        side = self.sam_image_embedding_size
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=self.sam_prompt_embed_dim,
            image_embedding_size=(side, side),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=16,
        )
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=self.sam_prompt_embed_dim, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=self.sam_prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=self.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=self.iou_prediction_use_sigmoid,
            pred_obj_scores=self.pred_obj_scores,
            pred_obj_scores_mlp=self.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=self.use_multimask_token_for_obj_ptr,
            **self.sam_mask_decoder_extra_args,
        )
        c = self.hidden_dim
        if not self.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj: nn.Module = nn.Identity()
        elif self.use_mlp_for_obj_ptr_proj:
            self.obj_ptr_proj = MLP(c, c, c, 3)
        else:
            self.obj_ptr_proj = nn.Linear(c, c)
        # Keeps the temporal encoding of pointers apart from the spatial one of memories.
        if self.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj: nn.Module = nn.Linear(c, self.mem_dim)
        else:
            self.obj_ptr_tpos_proj = nn.Identity()

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not used: drive the model through ``SAM2ImagePredictor`` or the video predictor."""
        raise NotImplementedError(
            "SAM2Base has no forward(); use sam2_web.image_predictor.SAM2ImagePredictor for images "
            "or the video predictor (build_sam2_video_predictor) for clips."
        )

    # ------------------------------------------------------------------ image features

    def forward_image(self, img_batch: torch.Tensor) -> Dict[str, Any]:
        """Run the image encoder on a (B, 3, image_size, image_size) normalised batch.

        Returns the encoder's dict (``vision_features``, ``vision_pos_enc``, ``backbone_fpn``);
        with high-res features on, levels 0 and 1 of ``backbone_fpn`` are already projected by
        the decoder's ``conv_s0``/``conv_s1`` so that each click does not redo it.
        """
        backbone_out = self.image_encoder(img_batch)
        if self.use_high_res_features_in_sam:
            fpn = backbone_out["backbone_fpn"]
            fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        return backbone_out

    def prepare_backbone_features(
        self, backbone_out: Dict[str, Any]
    ) -> Tuple[Dict[str, Any], List[torch.Tensor], List[torch.Tensor], List[Tuple[int, int]]]:
        """Flatten the levels the heads use into (HW, B, C) tokens.

        Returns ``(backbone_out_copy, vision_feats, vision_pos_embeds, feat_sizes)``, the last
        three ordered from high to low resolution.
        """
        backbone_out = backbone_out.copy()
        fpn, pos = backbone_out["backbone_fpn"], backbone_out["vision_pos_enc"]
        if len(fpn) != len(pos) or len(fpn) < self.num_feature_levels:
            raise ValueError(
                f"image encoder gave {len(fpn)} feature maps and {len(pos)} position encodings; "
                f"the heads need {self.num_feature_levels} of each"
            )
        levels = self.num_feature_levels
        feat_sizes = [(p.shape[-2], p.shape[-1]) for p in pos[-levels:]]
        vision_feats = [x.flatten(2).permute(2, 0, 1) for x in fpn[-levels:]]
        vision_pos_embeds = [x.flatten(2).permute(2, 0, 1) for x in pos[-levels:]]
        return backbone_out, vision_feats, vision_pos_embeds, feat_sizes

    # ------------------------------------------------------------------ SAM heads

    def _forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        point_inputs: Optional[PointInputs] = None,
        mask_inputs: Optional[torch.Tensor] = None,
        high_res_features: Optional[List[torch.Tensor]] = None,
        multimask_output: bool = False,
        motion: Optional[Sequence[MotionState]] = None,
    ) -> HeadsOutput:
        """Decode prompts on one frame's (memory-conditioned) features.

        Args:
            backbone_features: (B, C, h, w) with h = w = image_size / backbone_stride.
            point_inputs: the clicks (see :class:`PointInputs`), or None.
            mask_inputs: (B, 1, H, W) mask prompt (resized to the prompt encoder's size), or None.
            high_res_features: the two projected stride-4/8 maps, or None.
            multimask_output: ask for three candidate masks.
            motion: each row's SAMURAI filter state after the previous frame: the candidate is
                chosen with it (see :func:`~sam2_web.modeling.motion.choose_mask`; this waits
                for the device) and presence is judged above ``min_obj_score_logits``. None:
                SAM 2's choice (highest predicted IoU).
        Returns:
            The :class:`HeadsOutput`.
        Raises:
            ValueError: ``backbone_features`` of another shape.
        """
        batch = backbone_features.size(0)
        device = backbone_features.device
        side = self.sam_image_embedding_size
        if backbone_features.shape[1:] != (self.sam_prompt_embed_dim, side, side):
            raise ValueError(
                f"backbone features of shape {tuple(backbone_features.shape)}; expected "
                f"(B, {self.sam_prompt_embed_dim}, {side}, {side})"
            )

        if point_inputs is not None:
            coords, labels = point_inputs.point_coords, point_inputs.point_labels
        else:
            # The decoder needs at least one token: a padding point (label -1).
            coords = torch.zeros(batch, 1, 2, device=device)
            labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)

        mask_prompt = None
        if mask_inputs is not None:
            target = tuple(self.sam_prompt_encoder.mask_input_size)
            if tuple(mask_inputs.shape[-2:]) != target:
                # Antialiased so that downsizing a full-size mask does not alias.
                mask_prompt = F.interpolate(
                    mask_inputs.float(), size=target, mode="bilinear", align_corners=False, antialias=True
                )
            else:
                mask_prompt = mask_inputs

        sparse, dense = self.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt)
        low_res_multimasks, ious, sam_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,  # one image per prompt set already
            high_res_features=high_res_features,
        )
        if self.pred_obj_scores:
            threshold = 0.0 if motion is None else self.motion_config.min_obj_score_logits
            is_obj_appearing = object_score_logits > threshold
            # The mask is a hard choice between object and no object, so memories agree with it.
            low_res_multimasks = torch.where(is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE)

        low_res_multimasks = low_res_multimasks.float()  # may be bf16 under autocast
        high_res_multimasks = F.interpolate(
            low_res_multimasks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )

        token = sam_tokens[:, 0]
        steps = None
        if motion is not None:
            best, steps = self._motion_choice(motion, ious, high_res_multimasks, object_score_logits, multimask_output)
        if multimask_output:
            if steps is None:
                best = torch.argmax(ious, dim=-1)
            rows = torch.arange(batch, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if sam_tokens.size(1) > 1:
                token = sam_tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

        obj_ptr = self.obj_ptr_proj(token)
        if self.pred_obj_scores:
            # The pointer (unlike the mask) may blend softly towards "no object".
            presence = object_score_logits.sigmoid() if self.soft_no_obj_ptr else is_obj_appearing.float()
            obj_ptr = self._towards_no_obj_ptr(obj_ptr, presence)

        return HeadsOutput(
            low_res_multimasks=low_res_multimasks,
            high_res_multimasks=high_res_multimasks,
            ious=ious,
            low_res_masks=low_res_masks,
            high_res_masks=high_res_masks,
            obj_ptr=obj_ptr,
            object_score_logits=object_score_logits,
            motion=steps,
        )

    def _motion_choice(
        self,
        motion: Sequence[MotionState],
        ious: torch.Tensor,
        high_res_multimasks: torch.Tensor,
        object_score_logits: torch.Tensor,
        multimask_output: bool,
    ) -> Tuple[torch.Tensor, List[MotionStep]]:
        """SAMURAI's choice for every row: ``(best (B,) on the device, steps)``. One copy to the
        host per call (IoUs, candidate boxes and presence logits of all rows together)."""
        batch, m = ious.shape
        if len(motion) != batch:
            raise ValueError(f"{len(motion)} motion states for a batch of {batch}")
        parts = [ious.float(), object_score_logits.float().reshape(batch, -1)[:, :1]]
        if multimask_output:
            parts.append(mask_boxes(high_res_multimasks).flatten(1).float())  # exact: pixel indices < 2^24
        host = torch.cat(parts, dim=1).cpu()
        ious_h, obj_h = host[:, :m], host[:, m]
        best, steps = [], []
        for row, state in enumerate(motion):
            if multimask_output:
                boxes = host[row, m + 1:].reshape(m, 4).tolist()
                k, step = choose_mask(self.motion_config, state, ious_h[row], boxes, float(obj_h[row]))
            else:
                k, step = 0, MotionStep(state, FrameScores(float(ious_h[row, 0]), float(obj_h[row])))
            best.append(k)
            steps.append(step)
        return torch.tensor(best).to(ious.device), steps

    def _use_mask_as_output(
        self,
        backbone_features: torch.Tensor,
        high_res_features: Optional[List[torch.Tensor]],
        mask_inputs: torch.Tensor,
    ) -> HeadsOutput:
        """Take a (B, 1, H, W) input mask as the output (logits -10/+10), in the form of
        :meth:`_forward_sam_heads`' output (one candidate). The object pointer still comes from
        the decoder (fed the downsampled mask) so that later frames can attend to it."""
        mask = mask_inputs.float()
        high_res_masks = mask * _MASK_AS_OUTPUT_SCALE + _MASK_AS_OUTPUT_BIAS
        low_res_masks = F.interpolate(
            high_res_masks,
            size=(high_res_masks.size(-2) // 4, high_res_masks.size(-1) // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1).float()  # a given mask is "certain"
        if self.use_obj_ptrs_in_encoder:
            obj_ptr = self._forward_sam_heads(
                backbone_features=backbone_features,
                mask_inputs=self.mask_downsample(mask),
                high_res_features=high_res_features,
            ).obj_ptr
        else:
            obj_ptr = torch.zeros(mask_inputs.size(0), self.hidden_dim, device=mask_inputs.device)
        # Presence follows the given mask (any foreground pixel), not the decoder's score.
        presence = torch.any(mask.flatten(1) > 0.0, dim=1)[..., None].float()
        object_score_logits = _MASK_AS_OUTPUT_SCALE * presence + _MASK_AS_OUTPUT_BIAS
        if self.pred_obj_scores:
            obj_ptr = self._towards_no_obj_ptr(obj_ptr, presence)
        return HeadsOutput(  # one candidate: the "multi" masks are the masks
            low_res_multimasks=low_res_masks, high_res_multimasks=high_res_masks, ious=ious,
            low_res_masks=low_res_masks, high_res_masks=high_res_masks,
            obj_ptr=obj_ptr, object_score_logits=object_score_logits,
        )

    def _towards_no_obj_ptr(self, obj_ptr: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Move the (B, C) pointer towards the learnt "no object" pointer as the (B, 1)
        ``presence`` in [0, 1] falls: ``presence * ptr + (1 - presence) * no_obj_ptr`` with
        ``fixed_no_obj_ptr``, else ``ptr + (1 - presence) * no_obj_ptr``."""
        if self.fixed_no_obj_ptr:
            obj_ptr = presence * obj_ptr
        return obj_ptr + (1 - presence) * self.no_obj_ptr

    def object_bucket(self, objects: int) -> int:
        """Rows the per-frame batch of ``objects`` objects runs as in :meth:`track_objects`: the
        count itself; a compiled model (``sam2_web.compiled``) pads to a bucket instead, so
        adding an object reuses a compiled graph."""
        return objects

    def check_motion_supported(self, setting: str) -> None:
        """Raise ConfigError naming ``setting`` unless this model's decoder proposes three masks
        on tracked frames, which SAMURAI's motion-aware choice picks among."""
        if not (self.multimask_output_in_sam and self.multimask_output_for_tracking
                and self.multimask_min_pt_num <= 0 <= self.multimask_max_pt_num):
            raise ConfigError(
                f"{setting}: SAMURAI chooses among the mask decoder's three candidates on tracked frames, "
                f"but this model's decoder gives one (multimask_output_in_sam={self.multimask_output_in_sam}, "
                f"multimask_output_for_tracking={self.multimask_output_for_tracking}, multimask_min_pt_num="
                f"{self.multimask_min_pt_num}); use a SAM 2 / 2.1 config or turn SAMURAI off"
            )

    def samurai_memory_frames(
        self, memory: MemorySource, frame_idx: int, track_in_reverse: bool, num_frames: Optional[int]
    ) -> List[Tuple[int, int]]:
        """``[(t_pos, frame)]`` whose memories ``frame_idx`` reads under SAMURAI's rule
        (:func:`~sam2_web.modeling.motion.select_memory_frames`); ``memory.frame_scores(t)``
        gives each tracked frame's scores (a source without it has none: only the adjacent
        frame is read)."""
        lookup = getattr(memory, "frame_scores", None) or (lambda t: None)
        return select_memory_frames(
            self.motion_config, frame_idx, track_in_reverse, num_frames,
            self.num_maskmem, self.max_obj_ptrs_in_encoder, lookup,
        )

    def use_multimask(self, is_init_cond_frame: bool, point_inputs: Optional[PointInputs]) -> bool:
        """Whether the decoder should propose three masks for this prompt (a box counts as two points)."""
        num_pts = 0 if point_inputs is None else point_inputs.point_labels.size(1)
        return bool(
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num
        )

    # ------------------------------------------------------------------ memory

    def memory_frame_indices(self, frame_idx: int, track_in_reverse: bool = False) -> List[Tuple[int, int]]:
        """``[(t_pos, frame)]`` whose non-conditioning memory frame ``frame_idx`` attends to
        (see :meth:`MemoryReadConfig.memory_frame_indices`)."""
        return self.memory_config.memory_frame_indices(frame_idx, track_in_reverse)

    def obj_ptr_frame_indices(
        self, frame_idx: int, num_frames: Optional[int], track_in_reverse: bool = False
    ) -> List[Tuple[int, int]]:
        """``[(t_diff, frame)]`` whose object pointers frame ``frame_idx`` attends to
        (see :meth:`MemoryReadConfig.obj_ptr_frame_indices`)."""
        return self.memory_config.obj_ptr_frame_indices(frame_idx, num_frames, track_in_reverse)

    def _prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[torch.Tensor],
        current_vision_pos_embeds: List[torch.Tensor],
        feat_sizes: List[Tuple[int, int]],
        memory: MemorySource,
        num_frames: Optional[int],
        track_in_reverse: bool = False,
        samurai: bool = False,
    ) -> torch.Tensor:
        """Fuse the frame's lowest-resolution features with the memory of other frames.

        Args:
            frame_idx: the frame being segmented.
            is_init_cond_frame: a prompted frame with no earlier memory (no memory is read).
            current_vision_feats / current_vision_pos_embeds: (HW, B, C) tokens per level, from
                :meth:`prepare_backbone_features`; the last (lowest-resolution) level is used.
            feat_sizes: (h, w) of each level.
            memory: the other frames' outputs of this object.
            num_frames: clip length (bounds the pointer window), or None if unknown.
            track_in_reverse: tracking towards earlier frames.
            samurai: read the memories SAMURAI's rule selects (:meth:`samurai_memory_frames`).
        Returns:
            (B, C, h, w) memory-conditioned features.
        Raises:
            ValueError: a non-initial frame while no frame has a prompt.
        """
        feats, size = current_vision_feats[-1], feat_sizes[-1]
        batch = feats.size(1)
        if self.num_maskmem == 0:  # SAM on images: no memory at all
            return _tokens_to_map(feats, size)
        if is_init_cond_frame:
            if self.directly_add_no_mem_embed:
                return _tokens_to_map(feats + self.no_mem_embed, size)
            # A stand-in memory token, since attention needs at least one key.
            tokens = MemoryTokens(
                tokens=self.no_mem_embed.expand(1, batch, self.mem_dim),
                pos=self.no_mem_pos_enc.expand(1, batch, self.mem_dim),
                num_spatial_mem=1,
                num_obj_ptr_tokens=0,
            )
        else:
            tokens = memory_reading.gather_memory(
                self.memory_config,
                memory,
                frame_idx,
                num_frames,
                track_in_reverse,
                maskmem_tpos_enc=self.maskmem_tpos_enc,
                obj_ptr_tpos_proj=self.obj_ptr_tpos_proj,
                batch=batch,
                device=feats.device,
                memory_frames=(
                    self.samurai_memory_frames(memory, frame_idx, track_in_reverse, num_frames) if samurai else None
                ),
            )
        # Stored memories may be bf16 (to save space) while the attention weights are float32;
        # cast so the matmuls agree. When float pointers are also present, concatenation has
        # already upcast the values exactly like this.
        dtype = self.maskmem_tpos_enc.dtype
        fused = self.memory_attention(
            curr=current_vision_feats[-1:],
            curr_pos=current_vision_pos_embeds[-1:],
            memory=tokens.tokens.to(dtype),
            memory_pos=tokens.pos.to(dtype),
            num_obj_ptr_tokens=tokens.num_obj_ptr_tokens,
            num_spatial_mem=tokens.num_spatial_mem,
        )
        return _tokens_to_map(fused, size)

    def encode_memory(
        self,
        current_vision_feats: List[torch.Tensor],
        feat_sizes: List[Tuple[int, int]],
        pred_masks_high_res: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Encode a frame's features and its predicted (B, 1, H, W) mask logits into a memory.

        Returns ``(maskmem_features (B, mem_dim, h, w), maskmem_pos_enc [tensor])``; with a
        spatial perceiver both are (B, N, mem_dim) tokens instead (see :meth:`_compress_memory`).
        """
        pix_feat = _tokens_to_map(current_vision_feats[-1], feat_sizes[-1])
        masks = pred_masks_high_res
        if self.non_overlap_masks_for_mem_enc:
            masks = non_overlapping(masks)
        if self.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts:
            mask_for_mem = (masks > 0).float()
        else:
            mask_for_mem = torch.sigmoid(masks)
        if self.sigmoid_scale_for_mem_enc != 1.0:
            mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            mask_for_mem = mask_for_mem + self.sigmoid_bias_for_mem_enc
        encoded = self.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        maskmem_features = encoded["vision_features"]
        maskmem_pos_enc = encoded["vision_pos_enc"]
        if self.no_obj_embed_spatial is not None:
            # Tell later frames that the object was absent here (occluded / left the view).
            absent = 1 - (object_score_logits > 0).float()
            maskmem_features = maskmem_features + absent[..., None, None] * self.no_obj_embed_spatial[
                ..., None, None
            ].expand(*maskmem_features.shape)
        return self._compress_memory(maskmem_features, maskmem_pos_enc)

    def _compress_memory(
        self, maskmem_features: torch.Tensor, maskmem_pos_enc: List[torch.Tensor]
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The last step of encoding a memory: a model with a spatial perceiver (EdgeTAM) stores
        each memory frame as (B, N, mem_dim) latents; SAM 2 keeps the map (returned unchanged)."""
        if self.spatial_perceiver is None:
            return maskmem_features, maskmem_pos_enc
        latents, latents_pos = self.spatial_perceiver(maskmem_features, maskmem_pos_enc[-1])
        return latents, [latents_pos]

    # ------------------------------------------------------------------ one tracking step

    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[torch.Tensor],
        current_vision_pos_embeds: List[torch.Tensor],
        feat_sizes: List[Tuple[int, int]],
        point_inputs: Optional[PointInputs],
        mask_inputs: Optional[torch.Tensor],
        memory: MemorySource,
        num_frames: Optional[int],
        track_in_reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: Optional[torch.Tensor] = None,
        motion: Optional[MotionState] = None,
    ) -> TrackStepOutput:
        """Segment one frame from its features, prompts and the memory of other frames.

        Args:
            frame_idx ... track_in_reverse: see :meth:`_prepare_memory_conditioned_features`
                (all feature levels are given: the higher ones feed the mask decoder).
            point_inputs / mask_inputs: the frame's prompts (see :meth:`_forward_sam_heads`), or None.
            run_mem_encoder: False skips encoding this frame's memory (e.g. while the user is
                still clicking).
            prev_sam_mask_logits: earlier low-res logits to refine with new clicks, or None.
            motion: the object's SAMURAI filter state after the previous frame (batch 1): the
                step then runs SAMURAI's memory selection and mask choice; None runs SAM 2's.
        Returns:
            The :class:`TrackStepOutput`; its memory fields are None when not encoded.
        Raises:
            ValueError: a tracked frame while no frame has a prompt, or ``prev_sam_mask_logits``
                without point inputs or with a mask input.
        """
        high_res_features = None
        if len(current_vision_feats) > 1:
            high_res_features = [_tokens_to_map(x, s) for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])]
        if mask_inputs is not None and self.use_mask_input_as_output_without_sam:
            pix_feat = _tokens_to_map(current_vision_feats[-1], feat_sizes[-1])
            heads = self._use_mask_as_output(pix_feat, high_res_features, mask_inputs)
            if motion is not None:  # a given mask: certain, and it does not move the filter
                score = float(heads.object_score_logits.flatten()[0])
                heads.motion = [MotionStep(motion, FrameScores(1.0, score))]
        else:
            pix_feat = self._prepare_memory_conditioned_features(
                frame_idx=frame_idx,
                is_init_cond_frame=is_init_cond_frame,
                current_vision_feats=current_vision_feats,
                current_vision_pos_embeds=current_vision_pos_embeds,
                feat_sizes=feat_sizes,
                memory=memory,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
                samurai=motion is not None,
            )
            if prev_sam_mask_logits is not None:
                # Refining an earlier prediction with new clicks: feed its logits as the mask prompt.
                if point_inputs is None or mask_inputs is not None:
                    raise ValueError("prev_sam_mask_logits needs point inputs and no mask input")
                mask_inputs = prev_sam_mask_logits
            heads = self._forward_sam_heads(
                backbone_features=pix_feat,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                high_res_features=high_res_features,
                multimask_output=self.use_multimask(is_init_cond_frame, point_inputs),
                motion=None if motion is None else [motion],
            )

        maskmem_features, maskmem_pos_enc = None, None
        if run_mem_encoder and self.num_maskmem > 0:
            maskmem_features, maskmem_pos_enc = self.encode_memory(
                current_vision_feats=current_vision_feats,
                feat_sizes=feat_sizes,
                pred_masks_high_res=heads.high_res_masks,
                object_score_logits=heads.object_score_logits,
                is_mask_from_pts=point_inputs is not None,
            )
        return TrackStepOutput(
            pred_masks=heads.low_res_masks,
            pred_masks_high_res=heads.high_res_masks,
            obj_ptr=heads.obj_ptr,
            object_score_logits=heads.object_score_logits,
            maskmem_features=maskmem_features,
            maskmem_pos_enc=maskmem_pos_enc,
            motion=None if heads.motion is None else heads.motion[0],
        )

    def track_objects(
        self,
        frame_idx: int,
        current_vision_feats: List[torch.Tensor],
        current_vision_pos_embeds: List[torch.Tensor],
        feat_sizes: List[Tuple[int, int]],
        memories: List[MemorySource],
        num_frames: Optional[int],
        track_in_reverse: bool = False,
        motions: Optional[List[MotionState]] = None,
    ) -> List[TrackStepOutput]:
        """Segment several objects on one frame from their memories alone (no prompts there):
        what :meth:`track_step` gives each object with ``is_init_cond_frame=False``, no prompts
        and ``run_mem_encoder=True``, with the work they share done once.

        The frame's features (batch 1) are the same for every object, and so are the first
        memory-attention layer's self-attention and the memory encoder's projection of them:
        those run once. Objects whose memories have the same layout (as many frames and pointer
        tokens) then run memory attention, the heads and the memory encoder as one batch; each
        batch row is computed exactly as alone.

        Args:
            frame_idx, current_vision_feats, current_vision_pos_embeds, feat_sizes, num_frames,
                track_in_reverse: as for :meth:`track_step` (features of batch 1).
            memories: each object's memory.
            motions: each object's SAMURAI filter state after the previous frame (SAMURAI's
                memory selection and mask choice, each row with its own filter), or None.
        Returns:
            One :class:`TrackStepOutput` per memory, in order (each with batch 1).
        Raises:
            ValueError: a memory without any prompted frame, or features of a batch other than 1.
        """
        feats, size = current_vision_feats[-1], feat_sizes[-1]
        if feats.size(1) != 1:
            raise ValueError(f"track_objects takes one frame's features (batch 1), got batch {feats.size(1)}")
        groups: Dict[Tuple[Any, ...], List[Tuple[int, MemoryTokens]]] = {}
        for k, memory in enumerate(memories):
            tokens = memory_reading.gather_memory(
                self.memory_config, memory, frame_idx, num_frames, track_in_reverse,
                maskmem_tpos_enc=self.maskmem_tpos_enc, obj_ptr_tpos_proj=self.obj_ptr_tpos_proj,
                batch=1, device=feats.device,
                memory_frames=(
                    None if motions is None
                    else self.samurai_memory_frames(memory, frame_idx, track_in_reverse, num_frames)
                ),
            )
            layout = (tuple(tokens.tokens.shape), tokens.num_spatial_mem, tokens.num_obj_ptr_tokens)
            # Non-overlap before the memory encoder is across the batch: one object per batch then.
            key = (k,) if self.non_overlap_masks_for_mem_enc else layout
            groups.setdefault(key, []).append((k, tokens))

        high_res = None
        if len(current_vision_feats) > 1:
            high_res = [_tokens_to_map(x, s) for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])]
        outputs: List[Optional[TrackStepOutput]] = [None] * len(memories)
        dtype = self.maskmem_tpos_enc.dtype
        for members in groups.values():
            first = members[0][1]
            # Padding rows (copies of the last object, dropped below) keep a compiled graph's
            # batch fixed; never with non-overlap, which compares the rows with each other.
            rows = [t for _, t in members]
            states = None if motions is None else [motions[k] for k, _ in members]
            if not self.non_overlap_masks_for_mem_enc:
                pad = self.object_bucket(len(rows)) - len(rows)
                rows += [rows[-1]] * pad
                states = None if states is None else states + [states[-1]] * pad
            batch = len(rows)
            fused = self.memory_attention(
                curr=current_vision_feats[-1:],  # batch 1: shared by every object of the group
                curr_pos=current_vision_pos_embeds[-1:],
                memory=torch.cat([t.tokens for t in rows], dim=1).to(dtype),
                memory_pos=torch.cat([t.pos for t in rows], dim=1).to(dtype),
                num_obj_ptr_tokens=first.num_obj_ptr_tokens,
                num_spatial_mem=first.num_spatial_mem,
            )
            heads = self._forward_sam_heads(
                backbone_features=_tokens_to_map(fused, size),
                high_res_features=None if high_res is None else [x.expand(batch, -1, -1, -1) for x in high_res],
                multimask_output=self.use_multimask(False, None),
                motion=states,
            )
            maskmem_features, maskmem_pos_enc = None, None
            if self.num_maskmem > 0:
                # The memory encoder adds the projected frame features (batch 1) to each mask's.
                maskmem_features, maskmem_pos_enc = self.encode_memory(
                    current_vision_feats=current_vision_feats,
                    feat_sizes=feat_sizes,
                    pred_masks_high_res=heads.high_res_masks,
                    object_score_logits=heads.object_score_logits,
                    is_mask_from_pts=False,
                )
            for row, (k, _) in enumerate(members):
                outputs[k] = TrackStepOutput(
                    pred_masks=_row(heads.low_res_masks, row),
                    pred_masks_high_res=_row(heads.high_res_masks, row),
                    obj_ptr=_row(heads.obj_ptr, row),
                    object_score_logits=_row(heads.object_score_logits, row),
                    maskmem_features=_row(maskmem_features, row),
                    maskmem_pos_enc=None if maskmem_pos_enc is None else [_row(p, row) for p in maskmem_pos_enc],
                    motion=None if heads.motion is None else heads.motion[row],
                )
        return outputs  # type: ignore[return-value]


def _row(x: Optional[torch.Tensor], row: int) -> Optional[torch.Tensor]:
    """Row ``row`` of a batch as its own tensor (a copy, so that an object's stored memory does
    not hold the whole batch's storage)."""
    return None if x is None else x[row : row + 1].clone()
