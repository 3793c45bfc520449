"""SAM's ViT image encoder (ViTDet style): windowed + global attention with decomposed
relative positions, and a neck down to the prompt embedding width.

Module and parameter names match Meta's ``ImageEncoderViT`` so the official vit_b / vit_l /
vit_h checkpoints load unchanged. Attention runs through ``F.scaled_dot_product_attention``
with the relative-position term as an additive mask: the same maths as Meta's explicit
softmax, fused kernels on GPU, agreement to float32 rounding on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.layers import LayerNorm2d, MLPBlock


class ImageEncoderViT(nn.Module):
    """Bx3xSxS normalised image -> Bx(out_chans)x(S/patch)x(S/patch) embedding."""

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        act_layer: type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        """
        Arguments:
          img_size: side of the square (padded) input image.
          patch_size: side of a patch; the embedding has img_size // patch_size per side.
          embed_dim, depth, num_heads, mlp_ratio: the transformer's shape.
          out_chans: channels of the output embedding (the prompt embedding width, 256).
          norm_eps: LayerNorm epsilon (official builders use 1e-6).
          window_size: side of the attention windows; blocks listed in global_attn_indexes
            attend globally instead.
        """
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.out_chans = out_chans
        self.global_attn_indexes = tuple(global_attn_indexes)
        grid = img_size // patch_size

        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))

        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in self.global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Bx3xSxS -> Bx(out_chans)x(S/patch)x(S/patch)."""
        x = self._embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))

    def forward_with_interm(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: Bx3xSxS -> the embedding and [early feature]: HQ-SAM's early feature is the
        output of the first global-attention block, (B, S/patch, S/patch, embed_dim),
        channels-last, as the official encoder's ``interm_embeddings[0]`` (which also lists
        the later global blocks; HQ-SAM uses only the first, so only it is kept)."""
        x = self._embed(x)
        interm: list[torch.Tensor] = []
        for blk in self.blocks:
            x = blk(x)
            if not interm and blk.window_size == 0:
                interm.append(x)
        if not interm:
            raise ValueError("this encoder has no global-attention block: no early feature")
        return self.neck(x.permute(0, 3, 1, 2)), interm

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS -> patch tokens plus absolute positions, BxhxwxD."""
        x = self.patch_embed(x)  # (B, h, w, D)
        if self.pos_embed is not None:
            if x.shape[1:3] != self.pos_embed.shape[1:3]:
                raise ValueError(
                    f"input gives a {tuple(x.shape[1:3])} patch grid but the position "
                    f"embedding is {tuple(self.pos_embed.shape[1:3])}; pad the image to "
                    f"{self.img_size}x{self.img_size}"
                )
            x = x + self.pos_embed
        return x


class PatchEmbed(nn.Module):
    """Bx3xHxW -> Bx(H/k)x(W/k)xD: a strided convolution, channels last."""

    def __init__(
        self,
        kernel_size: tuple[int, int] = (16, 16),
        stride: tuple[int, int] = (16, 16),
        padding: tuple[int, int] = (0, 0),
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm transformer block; attention inside windows when window_size > 0."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        act_layer: type[nn.Module] = nn.GELU,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            # Relative-position tables cover the span attention can see: a window or the grid.
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=act_layer)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BxHxWxD -> BxHxWxD."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention over a BxHxWxD grid with decomposed relative positions."""

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative positions need the input size")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BxHxWxD -> BxHxWxD."""
        b, h, w, _ = x.shape
        # (3, B, nh, HW, hd)
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = None
        if self.use_rel_pos:
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            bias = bias.to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = x.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut BxHxWxC into (B*nW)xwsxwsxC windows, zero-padding H and W up to multiples of ws.

    Returns the windows and the padded size (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of ``window_partition``: (B*nW)xwsxwsxC -> BxHxWxC with the padding removed."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis.

    rel_pos: Lx C table; resized linearly when L != 2 * max(q_size, k_size) - 1.
    Returns q_size x k_size x C.
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        resized = resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        resized = rel_pos
    # When q and k differ in length the shorter axis is stretched onto the longer one.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return resized[relative_coords.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """Additive attention bias of MViTv2's decomposed relative positions.

    q: BxnhxNqxC unscaled queries, Nq = q_h * q_w.
    Returns Bxnhx(q_h*q_w)x(k_h*k_w), to add to the scaled q @ k^T logits.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)  # (q_h, k_h, C)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)  # (q_w, k_w, C)
    b, nh, _, dim = q.shape
    r_q = q.reshape(b * nh, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]  # (B*nh, q_h, q_w, k_h, k_w)
    return bias.reshape(b, nh, q_h * q_w, k_h * k_w)
