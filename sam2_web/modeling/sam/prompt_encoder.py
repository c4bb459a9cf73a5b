"""SAM's prompt encoder: clicks and boxes become tokens, a mask prompt becomes a dense map."""

from __future__ import annotations

from typing import Optional, Tuple, Type

import torch
from torch import Tensor, nn

from sam2_web.modeling.common import LayerNorm2d
from sam2_web.modeling.position_encoding import PositionEmbeddingRandom

# Point labels, as the model was trained with them.
LABEL_PADDING = -1  # "no point": lets a batch hold different numbers of clicks
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class PromptEncoder(nn.Module):
    """Encodes point, box and mask prompts for the mask decoder.

    A point is the random-Fourier encoding of its position plus a learned embedding of its label;
    a padding point is only its learned embedding. A box is its two corners, labelled 2 and 3. A
    mask prompt is downscaled 4x by a small conv net; without one, a learned "no mask" vector is
    broadcast over the feature map.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        """
        Args:
            embed_dim: width of the prompt embeddings.
            image_embedding_size: (H, W) of the image features the decoder reads.
            input_image_size: (H, W) of the padded model input; point coordinates are in its
                pixels.
            mask_in_chans: hidden channels of the mask-prompt downscaler.
            activation: activation class of the mask-prompt downscaler.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # Added to the position encoding of labels 0..3 (neg, pos, box corner 1, corner 2).
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        # Mask prompts come at 4x the feature resolution (the decoder's output resolution).
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """Position encoding of every feature-map cell, shape (1, embed_dim, H, W)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _label_offsets(self) -> Tensor:
        # Row i is added for label i - 2; row 0 (zeros) for labels the model does not know.
        weight = self.not_a_point_embed.weight
        rows = [torch.zeros_like(weight), weight] + [e.weight for e in self.point_embeddings]
        return torch.cat(rows, dim=0)

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """Embed (B, N, 2) pixel coordinates with (B, N) labels; (B, N [+1], embed_dim)."""
        points = points + 0.5  # coordinates name pixels; encode their centres
        if pad:
            # Without a box, one padding point stands in for the missing corners.
            batch = points.shape[0]
            points = torch.cat([points, points.new_zeros(batch, 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((batch, 1), LABEL_PADDING)], dim=1)
        encoding = self.pe_layer.forward_with_coords(points, self.input_image_size)

        known = (labels >= LABEL_PADDING) & (labels <= LABEL_BOX_BOTTOM_RIGHT)
        row = torch.where(known, labels + 2, torch.zeros_like(labels)).long()
        # Padding points carry no position, only their learned embedding.
        encoding = encoding.masked_fill((labels == LABEL_PADDING).unsqueeze(-1), 0.0)
        return encoding + self._label_offsets()[row]

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """Embed (B, 4) xyxy pixel boxes as two corner tokens each; (B, 2, embed_dim)."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        encoding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embeds = torch.cat(
            [self.point_embeddings[LABEL_BOX_TOP_LEFT].weight,
             self.point_embeddings[LABEL_BOX_BOTTOM_RIGHT].weight],
            dim=0,
        )
        return encoding + corner_embeds

    def _embed_masks(self, masks: Tensor) -> Tensor:
        """Downscale (B, 1, 4H, 4W) mask logits to (B, embed_dim, H, W)."""
        return self.mask_downscaling(masks)

    def _get_batch_size(
        self,
        points: Optional[Tuple[Tensor, Tensor]],
        boxes: Optional[Tensor],
        masks: Optional[Tensor],
    ) -> int:
        """Batch size implied by the first prompt given (1 if none)."""
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def _get_device(self) -> torch.device:
        return self.point_embeddings[0].weight.device

    def forward(
        self,
        points: Optional[Tuple[Tensor, Tensor]],
        boxes: Optional[Tensor],
        masks: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """Embed the prompts of a batch.

        Args:
            points: ``(coords (B, N, 2) in input pixels as x, y; labels (B, N))`` with labels
                -1 padding, 0 negative, 1 positive, 2/3 box corners; or None.
            boxes: (B, 4) xyxy in input pixels, or None.
            masks: (B, 1, 4H, 4W) mask logits, or None.
        Returns:
            ``(sparse, dense)``: point/box tokens (B, N', embed_dim), where a padding point is
            appended when points come without a box, and the dense embedding
            (B, embed_dim, H, W).
        """
        batch = self._get_batch_size(points, boxes, masks)
        sparse = [torch.empty((batch, 0, self.embed_dim), device=self._get_device())]
        if points is not None:
            coords, labels = points
            sparse.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1)

        if masks is not None:
            dense_embeddings = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
            dense_embeddings = no_mask.expand(batch, -1, h, w)
        return sparse_embeddings, dense_embeddings
