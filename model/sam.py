"""The Segment Anything model: an image encoder, a prompt encoder and a mask decoder.

The image encoder is any module mapping a normalised, padded Bx3xSxS image to a
BxCx(S/16)x(S/16) embedding (C = the prompt embedding width, 256 for official models), so
ViT, TinyViT or EfficientNet-Lite backbones plug in alike. Buffer and submodule names match
Meta's ``Sam``: ``pixel_mean`` / ``pixel_std`` are non-persistent and not in state dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.mask_decoder import MaskDecoder
from model.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """SAM: predicts object masks from an image and prompts.

    For interactive use prefer ``model.predictor.SamPredictor``, which caches the embedding.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        """
        Arguments:
          image_encoder: Bx3xSxS normalised image -> BxCxhxw embedding, with (h, w) =
            ``prompt_encoder.image_embedding_size`` and C = ``prompt_encoder.embed_dim``.
          prompt_encoder: its ``input_image_size`` (S, S) defines the model's input size.
          mask_decoder: predicts masks from the image and prompt embeddings.
          pixel_mean, pixel_std: per-channel RGB statistics on the 0-255 scale.
        """
        super().__init__()
        in_h, in_w = prompt_encoder.input_image_size
        if in_h != in_w:
            raise ValueError(f"SAM input must be square, got {in_h}x{in_w}")
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def image_size(self) -> int:
        """Side S of the square encoder input; images are resized so their long side is S."""
        return int(self.prompt_encoder.input_image_size[0])

    @property
    def embedding_size(self) -> tuple[int, int]:
        """(h, w) of the image embedding."""
        h, w = self.prompt_encoder.image_embedding_size
        return int(h), int(w)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise colours and zero-pad bottom/right to the square input.

        x: Bx3xHxW or 3xHxW RGB on the 0-255 scale, long side already resized to S.
        Returns Bx3xSxS (or 3xSxS) float.
        """
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        if h > self.image_size or w > self.image_size:
            raise ValueError(f"image {h}x{w} exceeds the model input {self.image_size}")
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW resized 0-255 RGB -> BxCxhxw image embeddings."""
        return self._run_encoder(self.preprocess(x))

    def _run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS preprocessed -> BxCxhxw, checking the encoder keeps the contract."""
        emb = self.image_encoder(x)
        expected = (self.prompt_encoder.embed_dim, *self.embedding_size)
        if tuple(emb.shape[1:]) != expected:
            # An encoder of the wrong shape would otherwise fail deep in the decoder.
            raise ValueError(
                f"image encoder returned {tuple(emb.shape)}, expected Bx{expected[0]}x"
                f"{expected[1]}x{expected[2]}"
            )
        return emb

    def decode(
        self,
        image_embeddings: torch.Tensor,
        *,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for B prompts on one image (1xCxhxw) or on B images (BxCxhxw).

        Arguments:
          points: (BxNx2 (x, y) in the resized input frame, BxN labels) or None.
          boxes: Bx4 (x0, y0, x1, y1) in the resized input frame, or None.
          masks: Bx1x(4h)x(4w) logits from a previous prediction, or None.

        Returns:
          low_res_logits: BxKx(4h)x(4w), K = 3 with multimask output, else 1.
          iou_predictions: BxK.
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """Upscale low-res logits to the padded input, crop the padding, resize to original.

        masks: BxKx(4h)x(4w); input_size: (H', W') of the resized image before padding;
        original_size: (H, W). Returns BxKxHxW logits.
        """
        masks = F.interpolate(
            masks, (self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """End-to-end prediction, Meta's ``Sam.forward`` contract (but gradients allowed).

        Each input dict holds ``image`` (3xH'xW' resized 0-255 RGB), ``original_size``
        (H, W), and optionally ``point_coords`` (BxNx2), ``point_labels`` (BxN), ``boxes``
        (Bx4), ``mask_inputs`` (Bx1x(4h)x(4w)), all in the resized frame.
        Each output dict holds ``masks`` (BxKxHxW bool), ``iou_predictions`` (BxK) and
        ``low_res_logits`` (BxKx(4h)x(4w)).
        """
        # Preprocess one by one: images of a batch may differ in size before padding.
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input])
        embeddings = self._run_encoder(images)
        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            low_res, iou = self.decode(
                embedding.unsqueeze(0),
                points=points,
                boxes=record.get("boxes"),
                masks=record.get("mask_inputs"),
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res,
                input_size=tuple(record["image"].shape[-2:]),
                original_size=tuple(record["original_size"]),
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs
