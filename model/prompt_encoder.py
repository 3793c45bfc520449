"""SAM's prompt encoder: points and box corners become sparse tokens, a low-resolution mask
becomes a dense embedding the size of the image embedding.

Names match Meta's ``PromptEncoder`` so official checkpoints load unchanged. Point labels:
1 positive, 0 negative, -1 padding ("not a point"); box corners use their own two embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.layers import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random Gaussian spatial frequencies (Tancik et al., 2020)."""

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        # A persistent buffer, not a parameter: the frequencies are fixed but must travel
        # with the checkpoint, since the decoder was trained against these exact ones.
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: ...x2 in [0, 1] (x, y) -> ...x(2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an h x w grid: Cxhxw."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))
        return pe.permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """coords_input: ...x2 pixel (x, y) in an image of size (H, W) -> ...xC."""
        x = coords_input[..., 0] / image_size[1]
        y = coords_input[..., 1] / image_size[0]
        return self._pe_encoding(torch.stack([x, y], dim=-1).to(torch.float))


class PromptEncoder(nn.Module):
    """Encodes prompts for SAM's mask decoder."""

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        """
        Arguments:
          embed_dim: width of the prompt tokens and of the dense embedding (256).
          image_embedding_size: (h, w) of the image embedding (64, 64).
          input_image_size: (H, W) of the padded encoder input (1024, 1024); point and box
            coordinates are pixels in this frame.
          mask_in_chans: hidden channels of the mask-downscaling convolutions (16).
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = (int(input_image_size[0]), int(input_image_size[1]))
        self.image_embedding_size = (int(image_embedding_size[0]), int(image_embedding_size[1]))
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        self.num_point_embeddings: int = 4  # negative, positive, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

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

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every image-embedding cell: 1x(embed_dim)xhxw."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """points: BxNx2 (x, y), labels: BxN -> Bx(N + pad)x(embed_dim)."""
        points = points + 0.5  # pixel centres
        if pad:
            # Without a box the decoder was trained to see one extra "not a point" token.
            b = points.shape[0]
            points = torch.cat([points, points.new_zeros((b, 1, 2))], dim=1)
            labels = torch.cat([labels, labels.new_full((b, 1), -1)], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        # torch.where rather than Meta's in-place masked writes: same values bit for bit,
        # and autograd-friendly for training. Labels outside {-1, 0, 1} keep the bare PE,
        # as in Meta's code.
        out = torch.where(lab == -1, self.not_a_point_embed.weight, pe)
        out = torch.where(lab == 0, pe + self._point_embed(0), out)
        out = torch.where(lab == 1, pe + self._point_embed(1), out)
        return out

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes: Bx4 (x0, y0, x1, y1) -> Bx2x(embed_dim), one token per corner."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        corners = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner_embed = torch.cat([self._point_embed(2), self._point_embed(3)], dim=0)
        return corners + corner_embed

    def _point_embed(self, index: int) -> torch.Tensor:
        """1x(embed_dim): 0 negative, 1 positive, 2 box top-left, 3 box bottom-right."""
        embedding = self.point_embeddings[index]
        assert isinstance(embedding, nn.Embedding)
        return embedding.weight

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """masks: Bx1x(4h)x(4w) logits -> Bx(embed_dim)xhxw."""
        if tuple(masks.shape[-2:]) != self.mask_input_size or masks.shape[1] != 1:
            raise ValueError(
                f"mask input must be Bx1x{self.mask_input_size[0]}x{self.mask_input_size[1]}, "
                f"got {tuple(masks.shape)}"
            )
        return self.mask_downscaling(masks)

    @staticmethod
    def _get_batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed any combination of prompts, all in the padded input frame.

        Arguments:
          points: (BxNx2 coordinates (x, y), BxN labels) or None.
          boxes: Bx4 (x0, y0, x1, y1) or None.
          masks: Bx1x(4h)x(4w) logits or None.

        Returns:
          sparse: BxTx(embed_dim), T = N (+1 padding token when there is no box) (+2 box).
          dense: Bx(embed_dim)xhxw.
        """
        bs = self._get_batch_size(points, boxes, masks)
        weight = self.no_mask_embed.weight
        sparse = torch.empty((bs, 0, self.embed_dim), device=weight.device, dtype=weight.dtype)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, boxes is None)], 1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)

        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense
