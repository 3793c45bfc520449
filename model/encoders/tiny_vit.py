"""TinyViT image encoder of MobileSAM / HQ-SAM's ``vit_tiny``, state-dict compatible.

Our own implementation of the network in MobileSAM's ``tiny_vit_sam.py`` (Microsoft's TinyViT
adapted to SAM): a convolutional stage, then three stages of windowed attention, then SAM's neck.
Parameter names and shapes are those of the ``image_encoder.`` keys of the official
``mobile_sam.pt`` and ``sam_hq_vit_tiny.pth``, so those checkpoints load unchanged (the ImageNet
head ``norm_head``/``head`` is kept only for that; SAM never runs it). The parity test checks the
embedding against the reference code on the same random weights.

Departures from the reference that do not change the numbers:
- feature maps stay (B, H, W, C) between attention stages, and sizes come from the input instead
  of being fixed at construction (the reference hard-codes a 64x64 embedding), so smaller
  ``img_size`` values work for tests and CPU use;
- the stride of the last patch merging is 1 because it is the last (the reference keys it on
  out_dim being 320, 448 or 576, which is the same layer in every official configuration);
- the relative-position bias index is computed in closed form and attention runs through
  `F.scaled_dot_product_attention`.

At 1024 px: (B, 3, 1024, 1024) -> (B, 256, 64, 64); the HQ-SAM early feature is the output of
the first attention stage, (B, 64, 64, 160), channels-last as HQ-SAM's decoder expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from model.layers import LayerNorm2d

__all__ = ["TinyViT", "TinyViTConfig", "MOBILE_SAM_TINY_VIT"]


@dataclass(frozen=True)
class TinyViTConfig:
    """Hyper-parameters; the defaults are MobileSAM's (TinyViT-5M at 1024 px)."""

    img_size: int = 1024
    in_chans: int = 3
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    num_classes: int = 1000  # the unused ImageNet head, present in the official checkpoints
    out_chans: int = 256
    # Index of the stage whose output is HQ-SAM's early feature.
    interm_stages: tuple[int, ...] = (1,)


MOBILE_SAM_TINY_VIT = TinyViTConfig()


class Conv2dBN(nn.Sequential):
    """Conv (no bias) + BatchNorm, named ``c`` and ``bn`` like the reference's ``Conv2d_BN``."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False),
        )
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


def _drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch for a random subset of samples."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs: (B, C_in, H, W) -> (B, embed_dim, H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, embed_dim, H/4, W/4)."""
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block of the conv stage: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        # Zero-initialised last BN: each block starts as the identity, as in the reference.
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        y = self.conv3(y)
        return F.gelu(_drop_path(y, self.drop_path, self.training) + x)


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv (stride 2, or 1 before the last stage), 1x1 conv.

    (B, C, H, W) channels-first -> (B, H', W', out_dim) channels-last.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H / stride, W / stride, out_dim)."""
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """Pre-norm MLP: (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        x = self.drop(F.gelu(self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))


class Attention(nn.Module):
    """Pre-norm multi-head attention inside one window, with a learned bias per head and per
    (|dy|, |dx|) offset between the two tokens (LeViT's attention bias).

    (B_windows, N = window**2, C) -> (B_windows, N, C).
    """

    attention_bias_idxs: torch.Tensor

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        # The reference numbers offsets by first appearance scanning token pairs row-major from
        # token (0, 0), which visits every (|dy|, |dx|) in row-major order: |dy| * w + |dx|.
        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        idx = (ys[:, None] - ys[None, :]).abs() * window_size + (xs[:, None] - xs[None, :]).abs()
        # Non-persistent, as in the reference: not in the official checkpoints.
        self.register_buffer("attention_bias_idxs", idx, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x))
        # The reference lays qkv out per head as [q | k | v], not as [all q | all k | all v].
        q, k, v = qkv.view(b, n, self.num_heads, 3 * self.head_dim).split(self.head_dim, dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, N, head_dim)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (heads, N, N)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class TinyViTBlock(nn.Module):
    """Windowed attention, 3x3 depthwise conv, MLP: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: float,
        local_conv_size: int,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.drop_path = drop_path
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        # Zero tokens fill the last windows and take part as keys, as in the reference (the
        # padding happens before the attention's LayerNorm, so they are not masked out).
        y = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else x
        ph, pw = h + pad_b, w + pad_r
        y = y.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        y = self.attn(y)
        y = y.view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        y = y[:, :h, :w]
        x = x + _drop_path(y, self.drop_path, self.training)

        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + _drop_path(self.mlp(x), self.drop_path, self.training)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks then patch merging. (B, C, H, W) -> (B, H/2, W/2, C_out)."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        depth: int,
        expand_ratio: float,
        drop_path: Sequence[float],
        downsample_stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio, drop_path[i]) for i in range(depth))
        self.downsample = PatchMerging(dim, out_dim, downsample_stride)

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, H', W', C_out) channels-last."""
        for blk in self.blocks:
            x = _run(blk, x, use_checkpoint)
        return self.downsample(x)


class BasicLayer(nn.Module):
    """Attention stage: TinyViT blocks then, except for the last stage, patch merging.

    (B, H, W, C) -> (B, H', W', C_out), channels-last throughout.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: Sequence[float],
        local_conv_size: int,
        downsample_stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim, num_heads, window_size, mlp_ratio, drop, drop_path[i], local_conv_size
            )
            for i in range(depth)
        )
        self.downsample = (
            PatchMerging(dim, out_dim, downsample_stride) if out_dim is not None else None
        )

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out)."""
        for blk in self.blocks:
            x = _run(blk, x, use_checkpoint)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2))
        return x


def _run(block: nn.Module, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    if use_checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
    return block(x)


class TinyViT(nn.Module):
    """MobileSAM's image encoder: (B, 3, S, S) SAM-normalised -> (B, 256, S/16, S/16).

    S must be a multiple of 16 (the stage windows pad themselves). Strides: patch embedding 4,
    stage 0 merges to 8, stage 1 to 16, stage 2 keeps 16 (stride-1 merge), stage 3 keeps 16.

    Arguments:
      config: `TinyViTConfig`; the default is the official MobileSAM / HQ-SAM vit_tiny shape.
      use_checkpoint: recompute each block in the backward pass (activation checkpointing)
        to fit 1024 px training in less memory.
    """

    def __init__(
        self, config: TinyViTConfig = MOBILE_SAM_TINY_VIT, *, use_checkpoint: bool = False
    ) -> None:
        super().__init__()
        cfg = config
        n = len(cfg.depths)
        if not (len(cfg.embed_dims) == len(cfg.num_heads) == len(cfg.window_sizes) == n):
            raise ValueError("embed_dims, depths, num_heads and window_sizes differ in length")
        self.config = cfg
        self.img_size = cfg.img_size
        self.use_checkpoint = use_checkpoint
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dims[0])

        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(n):
            dpr = rates[sum(cfg.depths[:i]) : sum(cfg.depths[: i + 1])]
            out_dim = cfg.embed_dims[i + 1] if i < n - 1 else None
            # The merge into the last stage keeps the resolution: SAM wants stride 16, not 32.
            stride = 1 if i == n - 2 else 2
            layer: nn.Module
            if i == 0:
                assert out_dim is not None
                layer = ConvLayer(
                    cfg.embed_dims[0], out_dim, cfg.depths[0], cfg.mbconv_expand_ratio, dpr, stride
                )
            else:
                layer = BasicLayer(
                    cfg.embed_dims[i],
                    out_dim,
                    cfg.depths[i],
                    cfg.num_heads[i],
                    cfg.window_sizes[i],
                    cfg.mlp_ratio,
                    cfg.drop_rate,
                    dpr,
                    cfg.local_conv_size,
                    stride,
                )
            self.layers.append(layer)

        self.norm_head = nn.LayerNorm(cfg.embed_dims[-1])
        self.head: nn.Module = (
            nn.Linear(cfg.embed_dims[-1], cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        )
        self.apply(_init_weights)
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dims[-1], cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    @property
    def interm_channels(self) -> list[int]:
        """Channels of each feature `forward_with_interm` returns (160 for MobileSAM)."""
        return [self.config.embed_dims[i + 1] for i in self.config.interm_stages]

    def forward_with_interm(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, S, S) -> embedding (B, 256, S/16, S/16) and the interm features
        [(B, S/16, S/16, 160)], channels-last, as HQ-SAM's TinyViT returns them."""
        x = self.layers[0](self.patch_embed(x), self.use_checkpoint)
        interm: list[torch.Tensor] = []
        for i in range(1, len(self.layers)):
            x = self.layers[i](x, self.use_checkpoint)
            if i in self.config.interm_stages:
                interm.append(x)
        return self.neck(x.permute(0, 3, 1, 2)), interm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) SAM-normalised -> (B, 256, S/16, S/16)."""
        return self.forward_with_interm(x)[0]


def _init_weights(m: nn.Module) -> None:
    # The reference's init (matters only for training from scratch; checkpoints overwrite it).
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
