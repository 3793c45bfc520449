"""HQ-SAM's mask decoder (Ke et al. 2023, "Segment Anything in High Quality").

SAM's decoder plus, as in the official SysCV/sam-hq ``MaskDecoderHQ``:

- an **HQ output token** (``hf_token``) put after SAM's IoU and mask tokens, so it runs through
  the same two-way transformer with the prompt tokens;
- its own 3-layer MLP (``hf_mlp``) that turns the token into a dynamic kernel of C/8 weights;
- **high-quality features** at the low-res mask resolution (4x the embedding side), the sum of
  the early encoder feature projected by ``compress_vit_feat``, the final image embedding
  upscaled by ``embedding_encoder`` and the decoder's own upscaled mask features refined by
  ``embedding_maskfeature``. The kernel dotted with them gives the HQ mask.

The final mask is SAM's mask plus the HQ mask, or the HQ mask alone with ``hq_only`` (the
official ``hq_token_only``). With ``multimask_output`` the SAM part is the one of the three
multimask outputs with the highest predicted IoU, else the single-mask output, and the
answer is always one mask: the official semantics, kept so that official checkpoints behave
as their authors measured them.

Parameter names and shapes are the official ones, so ``sam_hq_vit_{b,l,h,tiny}.pth`` load
unchanged; SAM's own parameters are those of ``MaskDecoder``, so a plain SAM checkpoint
fills everything but the HQ parts (``HQ_PREFIXES``).

The early feature. ViT: the output of the first global-attention block, (B, h, w, D)
channels-last at the embedding's resolution; TinyViT: the output of its first attention stage,
likewise. Both are upscaled 4x by ``compress_vit_feat`` (two stride-2 transposed
convolutions). EfficientNet-Lite (DECISIONS 6): its stride-8 stage output, already at twice
the embedding's resolution, so ``early_scale=2`` makes the first layer of the same block a 1x1
convolution (the per-pixel linear map a stride-2 kernel-2 transposed convolution applies to
each of its output pixels) and only the second upsamples.
"""

from __future__ import annotations

import torch
from torch import nn

from model.layers import MLP, LayerNorm2d
from model.mask_decoder import MaskDecoder

#: State-dict prefixes (in a ``Sam``) of everything HQ-SAM adds to SAM: what a plain SAM
#: checkpoint lacks, and all that ``--mode hq`` trains.
HQ_PREFIXES = (
    "mask_decoder.hf_token.",
    "mask_decoder.hf_mlp.",
    "mask_decoder.compress_vit_feat.",
    "mask_decoder.embedding_encoder.",
    "mask_decoder.embedding_maskfeature.",
)


class MaskDecoderHQ(MaskDecoder):
    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        vit_dim: int = 1024,
        early_scale: int = 1,
    ) -> None:
        """
        Arguments:
          transformer_dim, transformer, num_multimask_outputs, activation, iou_head_depth,
            iou_head_hidden_dim: as ``MaskDecoder``.
          vit_dim: channels of the early feature (the official name; the ViT width, 160 for
            TinyViT, the stride-8 stage's width for EfficientNet-Lite).
          early_scale: early feature side / image embedding side: 1 (ViT, TinyViT) or 2
            (a stride-8 feature under a stride-16 embedding).
        """
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            activation=activation,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        if early_scale not in (1, 2):
            raise ValueError(f"early_scale must be 1 or 2, got {early_scale}")
        self.vit_dim = vit_dim
        self.early_scale = early_scale
        dim = transformer_dim

        self.hf_token = nn.Embedding(1, dim)
        self.hf_mlp = MLP(dim, dim, dim // 8, 3)

        first: nn.Module
        if early_scale == 1:
            first = nn.ConvTranspose2d(vit_dim, dim, kernel_size=2, stride=2)
        else:
            first = nn.Conv2d(vit_dim, dim, kernel_size=1)
        # The official blocks use GELU whatever ``activation`` is.
        self.compress_vit_feat = nn.Sequential(
            first,
            LayerNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
        )

    def early_shape(self, embedding_size: tuple[int, int]) -> tuple[int, int, int]:
        """(h', w', C) of the channels-last early feature for an (h, w) embedding."""
        h, w = embedding_size
        return h * self.early_scale, w * self.early_scale, self.vit_dim

    def hq_features(
        self, image_embeddings: torch.Tensor, early_features: torch.Tensor
    ) -> torch.Tensor:
        """The prompt-independent part of the HQ features, once per image.

        Arguments:
          image_embeddings: BxCxhxw.
          early_features: Bxh'xw'xD channels-last (see the module docstring).

        Returns Bx(C/8)x(4h)x(4w).
        """
        early = early_features.permute(0, 3, 1, 2)
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        *,
        early_features: torch.Tensor | None = None,
        hq_features: torch.Tensor | None = None,
        hq_only: bool = False,
        sam_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict one mask per prompt (the official HQ-SAM outputs).

        Arguments:
          image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings: as
            ``MaskDecoder.forward``.
          multimask_output: the SAM part is the best of the three multimask outputs by
            predicted IoU (True) or the single-mask output (False).
          early_features: 1xh'xw'xD or Bxh'xw'xD channels-last; or give
          hq_features: ``hq_features(...)`` computed beforehand (a predictor caches it).
          hq_only: return the HQ mask alone instead of SAM's mask + the HQ mask.
          sam_only: the base model's answer: the transformer run without the HQ token and
            SAM's outputs as the plain ``MaskDecoder`` gives them (three masks with multimask
            output). ``hq`` training leaves it untouched, so it equals the version the HQ
            parts were trained on. Not in the official code; it is the page's "HQ off".

        Returns:
          masks: Bx1x(4h)x(4w) logits (BxKx(4h)x(4w) with ``sam_only``).
          iou_pred: Bx1, the predicted IoU of the SAM part (the HQ token has no IoU head).
        """
        if hq_only and sam_only:
            raise ValueError("hq_only and sam_only exclude each other")
        if sam_only:
            hs, upscaled = self.run_transformer(
                image_embeddings,
                image_pe,
                sparse_prompt_embeddings,
                dense_prompt_embeddings,
                output_tokens=MaskDecoder.output_tokens(self),
            )
            masks, iou_pred = self.sam_masks(hs, upscaled)
            picked = slice(1, self.num_mask_tokens) if multimask_output else slice(0, 1)
            return masks[:, picked], iou_pred[:, picked]
        if hq_features is None:
            if early_features is None:
                raise ValueError("HQ-SAM's decoder needs early_features or hq_features")
            hq_features = self.hq_features(image_embeddings, early_features)
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            hq_features=hq_features,
        )
        n = self.num_mask_tokens  # SAM's tokens; channel n is the HQ mask
        if multimask_output:
            best_iou, best = iou_pred[:, 1:n].max(dim=1)
            iou_pred = best_iou[:, None]
            rows = torch.arange(masks.shape[0], device=masks.device)
            masks_sam = masks[:, 1:n][rows, best][:, None]
        else:
            iou_pred = iou_pred[:, 0:1]
            masks_sam = masks[:, 0:1]
        masks_hq = masks[:, n : n + 1]
        return (masks_hq if hq_only else masks_sam + masks_hq), iou_pred

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        hq_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every output at once.

        hq_features: Bx(C/8)x(4h)x(4w) from ``hq_features``, one per image (1 or B).

        Returns Bx(1+K+1)x(4h)x(4w) logits (SAM's single mask, its K multimask outputs, then
        the HQ mask) and Bx(1+K) IoU predictions of SAM's tokens.
        """
        if hq_features is None:
            raise ValueError("HQ-SAM's decoder needs hq_features (see hq_features())")
        hs, upscaled = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        masks_sam, iou_pred = self.sam_masks(hs, upscaled)
        b, c, h, w = upscaled.shape
        upscaled_hq = self.embedding_maskfeature(upscaled) + self._per_prompt(hq_features, b)
        kernel = self.hf_mlp(hs[:, 1 + self.num_mask_tokens, :])[:, None]  # (B, 1, C/8)
        masks_hq = (kernel @ upscaled_hq.reshape(b, c, h * w)).view(b, 1, h, w)
        return torch.cat([masks_sam, masks_hq], dim=1), iou_pred

    def output_tokens(self) -> torch.Tensor:
        """IoU token, SAM's mask tokens, then the HQ token."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight])
