"""SAM's mask decoder: turns image features plus prompt tokens into mask logits and scores.

Learned output tokens (an optional object-score token, an IoU token and 1 + N mask tokens) go
through the two-way transformer together with the prompt tokens. Each mask token then becomes,
via a small MLP, the weights of a dot product with the upscaled image features: one mask each.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from sam2_web.modeling.common import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    """Predicts masks, their IoU estimates and an object-presence logit from prompt tokens."""

    def __init__(
        self,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        """
        Args:
            transformer_dim: channel width of image features and tokens.
            transformer: the token/image transformer (a ``TwoWayTransformer``).
            num_multimask_outputs: masks predicted when disambiguating (one more token is the
                single-mask output).
            activation: activation class of the upscaling path.
            iou_head_depth: layers of the IoU-prediction MLP.
            iou_head_hidden_dim: hidden width of the IoU-prediction MLP.
            use_high_res_features: add the stride-4/stride-8 backbone maps while upscaling;
                creates ``conv_s0``/``conv_s1``, which the model applies to those maps once
                per image (they live here so the checkpoint keys match).
            iou_prediction_use_sigmoid: squash IoU predictions into [0, 1].
            dynamic_multimask_via_stability: in eval, when one mask is asked for and the
                single-mask output is unstable, return the best multimask output instead.
            dynamic_multimask_stability_delta: logit margin of the stability score.
            dynamic_multimask_stability_thresh: stability below which the fallback applies.
            pred_obj_scores: learn an object-score token and head (else a constant 10 logit).
            pred_obj_scores_mlp: use a 3-layer MLP rather than a linear object-score head.
            use_multimask_token_for_obj_ptr: with multimask output, return the multimask
                tokens (not the single-mask token) as SAM output tokens.
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        # Two 2x transposed convs: stride-16 features -> stride-4 mask features. Indexed as a
        # Sequential (keys output_upscaling.{0,1,3}) and unpacked when high-res maps are added.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            if pred_obj_scores_mlp:
                self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)
            else:
                self.pred_obj_score_head = nn.Linear(transformer_dim, 1)

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: Optional[List[Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Predict masks for a batch of prompts.

        Args:
            image_embeddings: (B or 1, C, H, W) image features.
            image_pe: (1, C, H, W) dense positional encoding (``PromptEncoder.get_dense_pe``).
            sparse_prompt_embeddings: (B, N, C) point/box tokens.
            dense_prompt_embeddings: (B, C, H, W) mask-prompt embedding.
            multimask_output: return the N multimask outputs instead of a single mask.
            repeat_image: the image batch is 1 and is shared by all B prompts.
            high_res_features: ``[stride-4 (B, C/8, 4H, 4W), stride-8 (B, C/4, 2H, 2W)]``, already
                passed through ``conv_s0``/``conv_s1``; required with ``use_high_res_features``.
        Returns:
            ``(masks, iou_pred, sam_tokens_out, object_score_logits)``: mask logits (B, M, 4H, 4W)
            with M = N or 1, IoU predictions (B, M), output tokens (B, N or 1, C) and object
            presence logits (B, 1).
        Raises:
            ValueError: on inconsistent batch sizes or missing high-res features.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )

        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

        # The single-mask token is the object pointer source even for multimask output
        # (training always tracked after several clicks, i.e. with that token), unless the
        # model was trained to use the multimask tokens.
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        repeat_image: bool,
        high_res_features: Optional[List[Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """All 1 + N masks before output selection; see ``forward`` for the arguments.

        Returns:
            ``(masks, iou_pred, mask_tokens_out, object_score_logits)`` with every mask token.
        """
        batch = sparse_prompt_embeddings.shape[0]
        learned = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            learned.insert(0, self.obj_score_token.weight)
        first_iou = 1 if self.pred_obj_scores else 0
        output_tokens = torch.cat(learned, dim=0).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if repeat_image and image_embeddings.shape[0] == 1:
            # A broadcast view: the sum below makes the one copy per prompt that is needed (the
            # same numbers as repeating the image first, without a second B-fold copy).
            src = image_embeddings.expand(batch, -1, -1, -1)
        elif repeat_image:
            src = torch.repeat_interleave(image_embeddings, batch, dim=0)
        else:
            if image_embeddings.shape[0] != batch:
                raise ValueError(
                    f"Got {image_embeddings.shape[0]} image embeddings for {batch} prompts; "
                    "pass one per prompt or set repeat_image=True."
                )
            src = image_embeddings
        src = src + dense_prompt_embeddings
        if image_pe.shape[0] != 1:
            raise ValueError("image_pe must have batch size 1 (use PromptEncoder.get_dense_pe()).")
        pos_src = image_pe.expand(batch, -1, -1, -1)  # only ever added: a view suffices
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, first_iou, :]
        mask_tokens_out = hs[:, first_iou + 1 : first_iou + 1 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError(
                    "This mask decoder was built with use_high_res_features=True; pass the "
                    "stride-4 and stride-8 backbone features as high_res_features."
                )
            deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(norm1(deconv1(src) + feat_s1))
            upscaled = act2(deconv2(upscaled) + feat_s0)
        else:
            upscaled = self.output_upscaling(src)

        # Each mask token becomes the weights of a per-pixel dot product with the features.
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            # No head: say "object present" (sigmoid(10) ~ 1).
            object_score_logits = iou_pred.new_full((iou_pred.shape[0], 1), 10.0)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _get_stability_scores(self, mask_logits: Tensor) -> Tensor:
        """IoU between the masks thresholded at +delta and at -delta; (B, M) in [0, 1]."""
        flat = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        inner = (flat > delta).sum(dim=-1).float()
        outer = (flat > -delta).sum(dim=-1).float()
        # An empty outer mask cannot flicker: call it stable.
        return torch.where(outer > 0, inner / outer, 1.0)

    def _dynamic_multimask_via_stability(
        self, all_mask_logits: Tensor, all_iou_scores: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Single-mask output, replaced by the best-IoU multimask output where it is unstable.

        Takes all 1 + N masks (B, 1+N, H, W) and scores (B, 1+N); returns (B, 1, H, W), (B, 1).
        """
        multi_logits = all_mask_logits[:, 1:]
        multi_scores = all_iou_scores[:, 1:]
        best = torch.argmax(multi_scores, dim=-1)
        rows = torch.arange(multi_scores.shape[0], device=all_iou_scores.device)
        best_logits = multi_logits[rows, best].unsqueeze(1)
        best_scores = multi_scores[rows, best].unsqueeze(1)

        single_logits = all_mask_logits[:, 0:1]
        single_scores = all_iou_scores[:, 0:1]
        stability = self._get_stability_scores(single_logits)
        stable = stability >= self.dynamic_multimask_stability_thresh
        logits_out = torch.where(stable[..., None, None], single_logits, best_logits)
        scores_out = torch.where(stable, single_scores, best_scores)
        return logits_out, scores_out
