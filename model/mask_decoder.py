"""SAM's mask decoder: output tokens (one IoU token, 1 + num_multimask_outputs mask tokens)
run through the two-way transformer with the prompt tokens; each mask token becomes, via a
small hypernetwork MLP, the weights of a dot product with the 4x upscaled image embedding.

Mask token 0 is the single-mask output; tokens 1..3 are the three ambiguity-resolving
masks. Names match Meta's ``MaskDecoder`` so official checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from model.layers import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        """
        Arguments:
          transformer_dim: channel width of tokens and image embedding (256).
          transformer: maps (BxCxhxw image, BxCxhxw PE, BxNxC tokens) to
            (BxNxC tokens, Bx(h*w)xC image tokens), e.g. ``TwoWayTransformer``.
          num_multimask_outputs: masks returned when ``multimask_output`` is set (3).
          iou_head_depth, iou_head_hidden_dim: shape of the IoU prediction MLP.
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts on one image (or on B images, one prompt each).

        Arguments:
          image_embeddings: 1xCxhxw, or BxCxhxw to pair image i with prompt i.
          image_pe: 1xCxhxw positional encoding (``PromptEncoder.get_dense_pe``).
          sparse_prompt_embeddings: BxNxC.
          dense_prompt_embeddings: BxCxhxw.
          multimask_output: return the 3 multimask outputs instead of the single mask.

        Returns:
          masks: BxKx(4h)x(4w) logits, K = num_multimask_outputs or 1.
          iou_pred: BxK predicted IoU of each mask.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
        )
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice, :, :], iou_pred[:, mask_slice]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens at once: (Bx(1+K)x(4h)x(4w) logits, Bx(1+K) IoU predictions)."""
        hs, upscaled = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        return self.sam_masks(hs, upscaled)

    def output_tokens(self) -> torch.Tensor:
        """The learned output tokens put before the prompt tokens, TxC (IoU, then masks)."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)

    def run_transformer(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        output_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer over (output tokens + prompt tokens, image).

        ``output_tokens`` (TxC) replaces ``self.output_tokens()``: HQ-SAM's decoder runs
        without its HQ token to give the base model's answer.

        Returns the tokens after the transformer, Bx(T+N)xC, and the image side upscaled
        4x, Bx(C/8)x(4h)x(4w): what the hypernetwork kernels are applied to.
        """
        batch = sparse_prompt_embeddings.shape[0]
        if output_tokens is None:
            output_tokens = self.output_tokens()
        tokens = torch.cat(
            (output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings), dim=1
        )

        src = self._per_prompt(image_embeddings, batch) + dense_prompt_embeddings
        pos_src = self._per_prompt(image_pe, batch)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        src = src.transpose(1, 2).reshape(b, c, h, w)
        return hs, self.output_upscaling(src)

    def sam_masks(
        self, hs: torch.Tensor, upscaled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's own outputs from ``run_transformer``'s results: each mask token's MLP gives
        a kernel dotted with the upscaled image. Returns Bx(1+K)x(4h)x(4w) logits and
        Bx(1+K) IoU predictions."""
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, 1+K, C/8)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred

    @staticmethod
    def _per_prompt(x: torch.Tensor, batch: int) -> torch.Tensor:
        """Broadcast a 1xCxhxw tensor over the B prompts; a BxCxhxw one is already per prompt.

        Meta always repeats (1 image, B prompts); accepting B images too lets training batch
        one prompt per image without a loop. ``expand`` gives Meta's values without copying.
        """
        if x.shape[0] == batch:
            return x
        if x.shape[0] == 1:
            return x.expand(batch, -1, -1, -1)
        raise ValueError(f"{x.shape[0]} image embeddings for {batch} prompts; need 1 or {batch}")
