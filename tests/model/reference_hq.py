"""SysCV's HQ-SAM (PyPI ``segment-anything-hq``) as a reference for parity tests.

Its package ``__init__`` imports the predictor and the automatic mask generator (torchvision)
and its ``modeling/__init__`` imports ``tiny_vit_sam.py`` (timm); neither is a dependency of
ours. So the modeling files and ``build_sam.py`` are loaded by path under a private package
name (``_reference_sam_hq``), without running either ``__init__``: first the files that need
nothing beyond torch, then ``tiny_vit_sam.py`` with small stand-ins for the four timm names it
uses (in ``sys.modules`` only while it executes).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest
from torch import nn

from model.build import ViTSamConfig
from tests.model.test_tiny_vit_parity import _timm_stand_ins

PACKAGE = "_reference_sam_hq"
REFERENCE_PIP = "segment-anything-hq==0.3"
_PLAIN_FILES = ("common", "image_encoder", "prompt_encoder", "transformer", "mask_decoder")


def _missing(what: str) -> NoReturn:
    # DECISIONS 9: on CI a missing component fails the run; elsewhere it skips.
    message = f"{what} not installed: pip install {REFERENCE_PIP}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _root() -> Path:
    spec = importlib.util.find_spec("segment_anything_hq")  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        _missing("segment_anything_hq")
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "modeling" / "mask_decoder_hq.py").is_file():
        _missing(str(root / "modeling" / "mask_decoder_hq.py"))
    return root


def _package(name: str, path: Path) -> ModuleType:
    module = ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


@functools.cache
def modeling() -> ModuleType:
    """``segment_anything_hq.modeling`` with ImageEncoderViT, MaskDecoderHQ, PromptEncoder,
    Sam, TwoWayTransformer and TinyViT, its own code unchanged."""
    root = _root()
    _package(PACKAGE, root)
    package = _package(f"{PACKAGE}.modeling", root / "modeling")
    for name in (*_PLAIN_FILES, "mask_decoder_hq", "sam"):
        importlib.import_module(f"{PACKAGE}.modeling.{name}")
    stand_ins = _timm_stand_ins()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        tiny_vit = importlib.import_module(f"{PACKAGE}.modeling.tiny_vit_sam")
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    modules = {n: sys.modules[f"{PACKAGE}.modeling.{n}"] for n in (*_PLAIN_FILES, "sam")}
    package.ImageEncoderViT = modules["image_encoder"].ImageEncoderViT  # type: ignore[attr-defined]
    package.PromptEncoder = modules["prompt_encoder"].PromptEncoder  # type: ignore[attr-defined]
    package.TwoWayTransformer = modules["transformer"].TwoWayTransformer  # type: ignore[attr-defined]
    package.Sam = modules["sam"].Sam  # type: ignore[attr-defined]
    package.MaskDecoderHQ = sys.modules[  # type: ignore[attr-defined]
        f"{PACKAGE}.modeling.mask_decoder_hq"
    ].MaskDecoderHQ
    package.TinyViT = tiny_vit.TinyViT  # type: ignore[attr-defined]
    return package


@functools.cache
def build_module() -> ModuleType:
    """``segment_anything_hq/build_sam.py`` (``sam_model_registry``: vit_b/l/h, vit_tiny)."""
    modeling()
    return importlib.import_module(f"{PACKAGE}.build_sam")


def build_reference_hq_sam(config: ViTSamConfig) -> nn.Module:
    """The official HQ-SAM ``Sam`` with the shape of one of our ViT configurations, built as
    ``segment_anything_hq.build_sam._build_sam`` builds it (tiny shapes included)."""
    m = modeling()
    enc, sam = config.encoder, config.sam
    side = sam.embedding_side
    model = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=sam.image_size,
            mlp_ratio=enc.mlp_ratio,
            norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=sam.image_size // side,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(enc.global_attn_indexes),
            window_size=enc.window_size,
            out_chans=sam.prompt_embed_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=sam.prompt_embed_dim,
            image_embedding_size=(side, side),
            input_image_size=(sam.image_size, sam.image_size),
            mask_in_chans=sam.mask_in_chans,
        ),
        mask_decoder=m.MaskDecoderHQ(
            num_multimask_outputs=sam.num_multimask_outputs,
            transformer=m.TwoWayTransformer(
                depth=sam.decoder_depth,
                embedding_dim=sam.prompt_embed_dim,
                mlp_dim=sam.decoder_mlp_dim,
                num_heads=sam.decoder_num_heads,
            ),
            transformer_dim=sam.prompt_embed_dim,
            iou_head_depth=sam.iou_head_depth,
            iou_head_hidden_dim=sam.iou_head_hidden_dim,
            vit_dim=enc.embed_dim,
        ),
        pixel_mean=list(sam.pixel_mean),
        pixel_std=list(sam.pixel_std),
    )
    return model.eval()
