"""The registered configurations: the small pretrained one and MobileSAM's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.build import available, build_sam
from model.checkpoints import save_checkpoint


def test_the_small_configuration_embeds_at_one_sixteenth_and_ships_under_25_mb(
    tmp_path: Path,
) -> None:
    sam = build_sam("efficientnet_lite0_256")
    assert sam.image_size == 256
    with torch.no_grad():
        embedding = sam.image_encoder(torch.zeros(1, 3, 256, 256))
    assert embedding.shape == (1, 256, 16, 16)
    params = sum(p.numel() for p in sam.parameters())
    assert 5e6 < params < 12e6
    path = save_checkpoint(tmp_path / "v0.pth", sam, {"name": "efficientnet_lite0_256"}, half=True)
    assert path.stat().st_size < 25 * 1024 * 1024
    reloaded = build_sam("efficientnet_lite0_256", checkpoint=path)
    for (name, a), b in zip(sam.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-3), name


def test_the_pretrained_backbone_is_loaded_by_default() -> None:
    pretrained = build_sam("efficientnet_lite0_256").image_encoder.backbone
    stem = dict(pretrained.named_parameters())
    from model.encoders.efficientnet import EfficientNetLiteEncoder

    random = dict(EfficientNetLiteEncoder("lite0", img_size=256).backbone.named_parameters())
    name = next(iter(stem))
    assert not torch.equal(stem[name], random[name])


def test_mobile_sam_has_the_official_layout() -> None:
    from model.encoders.tiny_vit import TinyViT

    keys = set(build_sam("vit_t").state_dict())
    encoder_keys = {f"image_encoder.{k}" for k in TinyViT().state_dict()}
    decoder_keys = {
        k for k in build_sam("vit_tiny_test").state_dict() if not k.startswith("image_encoder.")
    }
    assert keys == encoder_keys | decoder_keys


def test_unknown_names_are_a_clear_error() -> None:
    with pytest.raises(KeyError, match="known: .*efficientnet_lite0_512"):
        build_sam("sam_xxl")
    assert "vit_h" in available()
