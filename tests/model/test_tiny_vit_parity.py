"""Our TinyViT against MobileSAM's as shipped in segment-anything-hq, on the same random weights.

The reference file imports timm (not a dependency of ours); it is loaded by path with small
stand-ins for the four timm names it uses, without running segment_anything_hq/__init__.py
(which pulls in the rest of that package).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import torch
from torch import nn

from model.encoders.tiny_vit import TinyViT, TinyViTConfig

REFERENCE_PIP = "segment-anything-hq==0.3"
# MobileSAM's encoder as built by segment_anything_hq.build_sam.build_sam_vit_t.
OFFICIAL_KWARGS = dict(
    img_size=1024,
    in_chans=3,
    num_classes=1000,
    embed_dims=[64, 128, 160, 320],
    depths=[2, 2, 6, 2],
    num_heads=[2, 4, 5, 10],
    window_sizes=[7, 7, 14, 7],
    mlp_ratio=4.0,
    drop_rate=0.0,
    drop_path_rate=0.0,
    use_checkpoint=False,
    mbconv_expand_ratio=4.0,
    local_conv_size=3,
    layer_lr_decay=0.8,
)


def _missing(what: str) -> NoReturn:
    # DECISIONS 9: on CI a missing component fails the run; elsewhere it skips.
    message = f"{what} not installed: pip install {REFERENCE_PIP}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class _DropPath(nn.Module):
    """Stand-in for timm's DropPath; identity because the parity runs in eval mode."""

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _to_2tuple(x: object) -> tuple:
    return tuple(x) if isinstance(x, tuple | list) else (x, x)


def _timm_stand_ins() -> dict[str, types.ModuleType]:
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = _DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = _to_2tuple  # type: ignore[attr-defined]
    layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
    registry.register_model = lambda fn: fn  # type: ignore[attr-defined]
    timm.models = models  # type: ignore[attr-defined]
    models.layers = layers  # type: ignore[attr-defined]
    models.registry = registry  # type: ignore[attr-defined]
    return {m.__name__: m for m in (timm, models, layers, registry)}


@pytest.fixture(scope="module")
def reference() -> Iterator[types.ModuleType]:
    """segment_anything_hq/modeling/tiny_vit_sam.py as a module of its own."""
    spec = importlib.util.find_spec("segment_anything_hq")  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        _missing("segment_anything_hq")
    path = Path(next(iter(spec.submodule_search_locations))) / "modeling" / "tiny_vit_sam.py"
    if not path.is_file():
        _missing(str(path))
    stand_ins = _timm_stand_ins()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        file_spec = importlib.util.spec_from_file_location("_reference_tiny_vit_sam", path)
        assert file_spec is not None and file_spec.loader is not None
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    finally:
        # Leave sys.modules as found so that nothing else sees the stand-ins.
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    yield module


def _random_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor random (BN statistics and attention biases included, which the default
    init leaves at 0/1), scaled so that activations stay O(1) through the network."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif v.ndim == 1 and k.endswith("weight"):
            out[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim == 1:
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("attention_biases"):
            out[k] = torch.randn(v.shape, generator=g)
        else:
            out[k] = torch.randn(v.shape, generator=g) / v[0].numel() ** 0.5
    return out


@pytest.fixture(scope="module")
def official_pair(reference: types.ModuleType) -> tuple[nn.Module, TinyViT]:
    """(theirs, ours) at the official configuration; built once, the reference is slow to build."""
    torch.manual_seed(0)
    return reference.TinyViT(**OFFICIAL_KWARGS), TinyViT()


def test_keys_and_shapes_match_the_official_layout(
    official_pair: tuple[nn.Module, TinyViT],
) -> None:
    theirs, ours = official_pair
    want = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    # Spot checks against the published checkpoint layout, independent of the reference code.
    assert len(got) == 302
    assert got["patch_embed.seq.0.c.weight"] == (32, 3, 3, 3)
    assert got["layers.1.blocks.0.attn.attention_biases"] == (4, 49)
    assert got["layers.2.blocks.5.attn.attention_biases"] == (5, 196)
    assert got["layers.2.downsample.conv2.c.weight"] == (320, 1, 3, 3)
    assert got["neck.0.weight"] == (256, 320, 1, 1)
    assert got["head.weight"] == (1000, 320)
    assert "layers.1.blocks.0.attn.attention_bias_idxs" not in got  # non-persistent


def test_embedding_matches_reference_at_1024(official_pair: tuple[nn.Module, TinyViT]) -> None:
    theirs, ours = official_pair
    state = _random_state_dict(theirs)
    theirs.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    # eval() after loading: the reference caches its attention biases when switched to eval.
    theirs.eval()
    ours.eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, want_interm = theirs(x)
        got, got_interm = ours.forward_with_interm(x)
    assert got.shape == want.shape == (1, 256, 64, 64)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert len(got_interm) == len(want_interm) == 1
    assert got_interm[0].shape == want_interm[0].shape == (1, 64, 64, 160)
    torch.testing.assert_close(got_interm[0], want_interm[0], rtol=1e-4, atol=1e-4)
    assert ours.interm_channels == [160]


def test_smaller_inputs_work() -> None:
    # The reference hard-codes a 64x64 embedding; ours follows the input size.
    model = TinyViT(TinyViTConfig(img_size=256)).eval()
    with torch.inference_mode():
        emb, interm = model.forward_with_interm(torch.randn(1, 3, 256, 256))
    assert emb.shape == (1, 256, 16, 16)
    assert interm[0].shape == (1, 16, 16, 160)
