"""The Segment Anything model: an image encoder, a prompt encoder and a mask decoder.

The image encoder is any module mapping a normalised, padded Bx3xSxS image to a
BxCx(S/16)x(S/16) embedding (C = the prompt embedding width, 256 for official models), so
ViT, TinyViT or EfficientNet-Lite backbones plug in alike. Buffer and submodule names match
Meta's ``Sam``: ``pixel_mean`` / ``pixel_std`` are non-persistent and not in state dicts.

HQ-SAM is the same class with a ``MaskDecoderHQ``: its encoder must then also offer
``forward_with_interm(x) -> (embedding, [early feature, ...])``, and decoding needs the image's
early feature (``encode_image_with_early``) besides its embedding. ``is_hq`` tells them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.mask_decoder import MaskDecoder
from model.mask_decoder_hq import MaskDecoderHQ
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

    @property
    def is_hq(self) -> bool:
        """Whether this is HQ-SAM (decoding then needs the early feature too)."""
        return isinstance(self.mask_decoder, MaskDecoderHQ)

    @property
    def hq_decoder(self) -> MaskDecoderHQ:
        """The mask decoder as HQ-SAM's; ValueError for a plain SAM."""
        if not isinstance(self.mask_decoder, MaskDecoderHQ):
            raise ValueError("this is not an HQ-SAM model (its configuration name ends in _hq)")
        return self.mask_decoder

    @property
    def early_shape(self) -> tuple[int, int, int] | None:
        """(h', w', C) of HQ-SAM's channels-last early feature; None for a plain SAM."""
        if not isinstance(self.mask_decoder, MaskDecoderHQ):
            return None
        return self.mask_decoder.early_shape(self.embedding_size)

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

    def encode_image_with_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bx3xHxW resized 0-255 RGB -> (BxCxhxw embeddings, Bxh'xw'xD early features).

        The early feature is HQ-SAM's (see ``model.mask_decoder_hq``); a plain SAM gives None
        and does not compute one.
        """
        x = self.preprocess(x)
        if not self.is_hq:
            return self._run_encoder(x), None
        return self._run_encoder_with_early(x)

    def _run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS preprocessed -> BxCxhxw, checking the encoder keeps the contract."""
        emb = self.image_encoder(x)
        self._check_embedding(emb)
        return emb

    def _run_encoder_with_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bx3xSxS preprocessed -> (BxCxhxw, Bxh'xw'xD), both checked (HQ-SAM only)."""
        encoder: Any = self.image_encoder  # HQ-SAM encoders have forward_with_interm
        emb, interm = encoder.forward_with_interm(x)
        self._check_embedding(emb)
        early = interm[0]
        expected = self.early_shape
        if tuple(early.shape[1:]) != expected:
            raise ValueError(
                f"image encoder's early feature is {tuple(early.shape)}, this HQ decoder "
                f"expects Bx{'x'.join(map(str, expected or ()))} (channels-last)"
            )
        return emb, early

    def _check_embedding(self, emb: torch.Tensor) -> None:
        expected = (self.prompt_encoder.embed_dim, *self.embedding_size)
        if tuple(emb.shape[1:]) != expected:
            # An encoder of the wrong shape would otherwise fail deep in the decoder.
            raise ValueError(
                f"image encoder returned {tuple(emb.shape)}, expected Bx{expected[0]}x"
                f"{expected[1]}x{expected[2]}"
            )

    def hq_features(self, image_embeddings: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """HQ-SAM's prompt-independent features of B images (see ``MaskDecoderHQ``):
        BxCxhxw and Bxh'xw'xD -> Bx(C/8)x(4h)x(4w). Computed once, they serve every prompt."""
        return self.hq_decoder.hq_features(image_embeddings, early)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        *,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = True,
        early_features: torch.Tensor | None = None,
        hq_features: torch.Tensor | None = None,
        hq_only: bool = False,
        sam_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for B prompts on one image (1xCxhxw) or on B images (BxCxhxw).

        Arguments:
          points: (BxNx2 (x, y) in the resized input frame, BxN labels) or None.
          boxes: Bx4 (x0, y0, x1, y1) in the resized input frame, or None.
          masks: Bx1x(4h)x(4w) logits from a previous prediction, or None.
          early_features: HQ-SAM only, 1 or B early features (1xh'xw'xD channels-last);
          hq_features: HQ-SAM only, instead of early_features: ``hq_features(...)`` of the
            image(s), computed once per image.
          hq_only: HQ-SAM only: the HQ mask alone instead of SAM's mask + the HQ mask.
          sam_only: HQ-SAM only: the base model's answer, without the HQ token (see
            ``MaskDecoderHQ.forward``); no early feature needed.

        Returns:
          low_res_logits: BxKx(4h)x(4w), K = 3 with multimask output, else 1; HQ-SAM gives
            K = 1 (its SAM part is the best of three by predicted IoU with multimask
            output, as the official code) unless ``sam_only``.
          iou_predictions: BxK.
        """
        hq_arguments = early_features is not None or hq_features is not None or hq_only
        if not self.is_hq and (hq_arguments or sam_only):
            raise ValueError(
                "early_features, hq_features, hq_only and sam_only are for HQ-SAM models; "
                "this one is a plain SAM"
            )
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        kwargs: dict[str, Any] = {}
        if self.is_hq:
            kwargs = {
                "early_features": early_features,
                "hq_features": hq_features,
                "hq_only": hq_only,
                "sam_only": sam_only,
            }
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            **kwargs,
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
        self, batched_input: list[dict[str, Any]], multimask_output: bool, hq_only: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """End-to-end prediction, Meta's ``Sam.forward`` contract (but gradients allowed).

        Each input dict holds ``image`` (3xH'xW' resized 0-255 RGB), ``original_size``
        (H, W), and optionally ``point_coords`` (BxNx2), ``point_labels`` (BxN), ``boxes``
        (Bx4), ``mask_inputs`` (Bx1x(4h)x(4w)), all in the resized frame.
        Each output dict holds ``masks`` (BxKxHxW bool), ``iou_predictions`` (BxK) and
        ``low_res_logits`` (BxKx(4h)x(4w)). ``hq_only`` is HQ-SAM's ``hq_token_only``.
        """
        if hq_only and not self.is_hq:
            raise ValueError("hq_only is for HQ-SAM models; this one is a plain SAM")
        # Preprocess one by one: images of a batch may differ in size before padding.
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input])
        if self.is_hq:
            embeddings, early_all = self._run_encoder_with_early(images)
            early: list[torch.Tensor | None] = list(early_all)
        else:
            embeddings = self._run_encoder(images)
            early = [None] * len(batched_input)
        outputs = []
        for record, embedding, early_one in zip(batched_input, embeddings, early, strict=True):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            hq: dict[str, Any] = {}
            if early_one is not None:
                hq = {"early_features": early_one.unsqueeze(0), "hq_only": hq_only}
            low_res, iou = self.decode(
                embedding.unsqueeze(0),
                points=points,
                boxes=record.get("boxes"),
                masks=record.get("mask_inputs"),
                multimask_output=multimask_output,
                **hq,
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
