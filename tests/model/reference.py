"""Meta's ``segment_anything`` as a reference for parity tests, importable without torchvision.

``segment_anything/__init__.py`` imports the predictor, whose transforms import torchvision,
which we do not have (or have broken). We register the package in ``sys.modules`` without
running its ``__init__`` and import only the submodules we need. Meta's ``SamPredictor``
is loaded with ``segment_anything.utils.transforms`` replaced by our ``ResizeLongestSide``
(the one torchvision-dependent piece), so its prompt and mask logic still runs as shipped.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from model.build import ViTSamConfig
from model.transforms import ResizeLongestSide

PACKAGE = "segment_anything"
INSTALL_HINT = "pip install segment-anything==1.0"


def _package() -> ModuleType:
    """The ``segment_anything`` package object, registered without executing __init__."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip(f"Meta's reference code is absent: {INSTALL_HINT}")
    # module_from_spec sets __path__ (so submodules resolve) but runs no package code.
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    return package


def modeling() -> ModuleType:
    """``segment_anything.modeling`` (ImageEncoderViT, PromptEncoder, MaskDecoder, ...)."""
    _package()
    return importlib.import_module(f"{PACKAGE}.modeling")


def build_module() -> ModuleType:
    """``segment_anything.build_sam`` (``sam_model_registry``)."""
    _package()
    return importlib.import_module(f"{PACKAGE}.build_sam")


def predictor_class() -> type:
    """Meta's ``SamPredictor``, running with our torchvision-free ``ResizeLongestSide``."""
    _package()
    name = f"{PACKAGE}.utils.transforms"
    if name not in sys.modules:
        utils = importlib.import_module(f"{PACKAGE}.utils")  # empty __init__, safe
        stub = ModuleType(name)
        stub.ResizeLongestSide = ResizeLongestSide  # type: ignore[attr-defined]
        sys.modules[name] = stub
        utils.transforms = stub  # type: ignore[attr-defined]
    return importlib.import_module(f"{PACKAGE}.predictor").SamPredictor


@functools.cache
def transforms_module() -> ModuleType:
    """Meta's ``utils/transforms.py`` for its coordinate maths, loaded under a private name
    with torchvision stubbed only while it executes. Its ``apply_image`` (the one user of
    torchvision) raises here; see ``model.transforms`` for how ours reproduces it."""
    path = Path(next(iter(_package().__path__))) / "utils" / "transforms.py"

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("torchvision is stubbed out in the reference transforms")

    functional = ModuleType("torchvision.transforms.functional")
    functional.resize = unavailable  # type: ignore[attr-defined]
    functional.to_pil_image = unavailable  # type: ignore[attr-defined]
    stubs = {
        "torchvision": ModuleType("torchvision"),
        "torchvision.transforms": ModuleType("torchvision.transforms"),
        "torchvision.transforms.functional": functional,
    }
    saved = {name: sys.modules.get(name) for name in stubs}
    try:
        sys.modules.update(stubs)
        file_spec = importlib.util.spec_from_file_location("_meta_sam_transforms", path)
        assert file_spec is not None and file_spec.loader is not None
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return module


def build_meta_sam(config: ViTSamConfig) -> nn.Module:
    """Meta's ``Sam`` with the shape of one of our ViT configurations, built the way
    ``segment_anything.build_sam._build_sam`` does (tiny shapes included)."""
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
        mask_decoder=m.MaskDecoder(
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
        ),
        pixel_mean=list(sam.pixel_mean),
        pixel_std=list(sam.pixel_std),
    )
    return model.eval()


@torch.no_grad()
def randomize_(model: nn.Module, *, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Overwrite every parameter with seeded noise around its init (in place).

    Default inits leave position embeddings, relative positions and LayerNorm affines at
    0 or 1, which would let a wrong implementation of those parts pass unnoticed.
    """
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        noise = torch.randn(param.shape, generator=gen) * std
        param.add_(noise.to(param.dtype))
    return model


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state dict (works on the ``meta`` device)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def assert_close_scaled(
    actual: Any, expected: Any, *, tol: float = 1e-5, what: str = "", floor: float = 1e-12
) -> None:
    """max |actual - expected| <= tol * max(max |expected|, floor): float32 rounding, whatever
    the scale (``floor``: the least scale the rounding is measured against)."""
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    scale = e.abs().max().item() if e.numel() else 0.0
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= tol * max(scale, floor), f"{what}: max error {err:.3g} at scale {scale:.3g}"


def assert_iou_close(actual: Any, expected: Any, *, what: str = "iou") -> None:
    """IoU predictions: the last layer of an MLP whose activations are O(1), so float32 rounding
    is ~1e-7 absolute even when a random model's prediction happens to be near 0 (seen: 0.004
    off by 6e-8, which a tolerance relative to 0.004 calls a failure). Measured against 1."""
    assert_close_scaled(actual, expected, what=what, floor=1.0)
