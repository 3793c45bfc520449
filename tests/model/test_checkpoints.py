"""Checkpoint I/O: strict loading with clear errors, atomic saving, fp16, official export."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from model import build
from model.build import SamConfig, ViTConfig, ViTSamConfig, build_sam, build_vit_sam
from model.checkpoints import (
    CheckpointError,
    export_official_state_dict,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_official_checkpoint,
)
from model.sam import Sam
from tests.model import reference as ref

CONFIG = {"name": "vit_tiny_test", "version": 3}


@pytest.fixture
def model() -> Sam:
    return ref.randomize_(build_sam("vit_tiny_test"), seed=5)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_it_round_trips_weights_config_and_extras(model: Sam, tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "v3.pt", model, CONFIG, {"step": 120, "metrics": {"miou": 0.81}}
    )
    fresh = build_sam("vit_tiny_test")
    meta = load_checkpoint(fresh, path)
    _assert_same_weights(fresh, model)
    assert meta == {"config": CONFIG, "step": 120, "metrics": {"miou": 0.81}}


def test_build_sam_loads_a_checkpoint(model: Sam, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", model, CONFIG)
    _assert_same_weights(build_sam("vit_tiny_test", checkpoint=path), model)


def test_it_loads_a_raw_state_dict_file(model: Sam, tmp_path: Path) -> None:
    torch.save(model.state_dict(), tmp_path / "raw.pth")
    fresh = build_sam("vit_tiny_test")
    assert load_checkpoint(fresh, tmp_path / "raw.pth") == {}
    _assert_same_weights(fresh, model)


def test_half_checkpoints_store_fp16_and_load_into_fp32(model: Sam, tmp_path: Path) -> None:
    full = save_checkpoint(tmp_path / "full.pt", model, CONFIG)
    half = save_checkpoint(tmp_path / "half.pt", model, CONFIG, half=True)
    stored = read_checkpoint(half)["model"]
    pe_key = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    assert stored["mask_decoder.iou_token.weight"].dtype == torch.float16
    assert stored[pe_key].dtype == torch.float32  # buffers keep full precision
    assert half.stat().st_size < 0.6 * full.stat().st_size

    fresh = build_sam("vit_tiny_test")
    load_checkpoint(fresh, half)
    for name, param in fresh.named_parameters():
        assert param.dtype == torch.float32
        assert torch.equal(param, model.state_dict()[name].half().float()), name
    assert torch.equal(fresh.state_dict()[pe_key], model.state_dict()[pe_key])


def test_it_names_a_missing_key(model: Sam) -> None:
    state = model.state_dict()
    del state["mask_decoder.iou_token.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): mask_decoder\.iou_token"):
        load_checkpoint(build_sam("vit_tiny_test"), state)


def test_it_names_an_unexpected_key(model: Sam) -> None:
    state = model.state_dict() | {"mask_decoder.hf_token.weight": torch.zeros(1, 32)}
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): mask_decoder\.hf_token"):
        load_checkpoint(build_sam("vit_tiny_test"), state)


def test_it_names_a_wrong_shape_with_both_shapes(model: Sam) -> None:
    state = model.state_dict()
    state["image_encoder.pos_embed"] = torch.zeros(1, 4, 4, 64)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_sam("vit_tiny_test"), state)
    assert "image_encoder.pos_embed (checkpoint 1x4x4x64, model 1x8x8x32)" in str(info.value)


def test_it_lists_only_the_first_few_offenders(tmp_path: Path) -> None:
    """Loading vit_tiny_test weights into a bigger model: a readable message, not 100 keys."""
    small = build_sam("vit_tiny_test")
    other = build_vit_sam(
        config=ViTSamConfig(
            encoder=ViTConfig(embed_dim=16, depth=3, num_heads=2, global_attn_indexes=(2,)),
            sam=build.CONFIGS["vit_tiny_test"].sam,
        )
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(other, small.state_dict())
    message = str(info.value)
    assert "missing key(s)" in message and "shape mismatch(es)" in message
    assert message.count("image_encoder.blocks") <= 10


def test_a_failed_load_leaves_the_model_untouched(model: Sam) -> None:
    target = build_sam("vit_tiny_test")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = model.state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 32)
    with pytest.raises(CheckpointError):
        load_checkpoint(target, state)
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key


class _Payload:
    """Not allowed by weights_only loading."""


def test_it_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    torch.save({"model": {}, "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "evil.pt")


@pytest.mark.parametrize("payload", [[1, 2], {"model": {"a": 1}}, {"w": "text"}])
def test_it_refuses_what_is_not_a_state_dict(payload: object, tmp_path: Path) -> None:
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(build_sam("vit_tiny_test"), tmp_path / "odd.pt")


def test_saving_leaves_no_temp_file(model: Sam, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.pt", model, CONFIG)
    save_checkpoint(tmp_path / "a.pt", model, CONFIG | {"version": 4})  # overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert read_checkpoint(tmp_path / "a.pt")["config"]["version"] == 4


def test_a_failed_save_keeps_the_old_file(
    model: Sam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "a.pt", model, CONFIG)
    original = path.read_bytes()

    def half_written(obj: object, f) -> None:
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, CONFIG | {"version": 4})
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_it_refuses_config_that_would_not_load(model: Sam, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"config\['root'\] is a PosixPath"):
        save_checkpoint(tmp_path / "a.pt", model, {"root": tmp_path})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.pt", model, CONFIG, {"model": 1})
    assert list(tmp_path.iterdir()) == []


def test_official_export_loads_with_metas_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Meta's ``_build_sam`` (what every ``sam_model_registry`` entry calls: plain
    ``torch.load`` then a strict ``load_state_dict``) with a small ViT to stay fast; the
    official shapes themselves are compared key by key in test_sam_parity."""
    vit = ViTConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))
    monkeypatch.setattr(build, "_REGISTRY", dict(build._REGISTRY))  # undone after the test
    build.register(
        "vit_export_test",
        functools.partial(build_vit_sam, config=ViTSamConfig(encoder=vit, sam=SamConfig())),
    )
    ours = ref.randomize_(build_sam("vit_export_test"), seed=7)
    path = save_official_checkpoint(tmp_path / "sam_vit_export.pth", ours)

    exported = export_official_state_dict(ours)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in exported.values())
    meta = ref.build_module()._build_sam(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=[1],
        checkpoint=str(path),
    )
    _assert_same_weights(meta, ours)


def test_export_refuses_non_vit_models() -> None:
    sam = build_sam("vit_tiny_test")
    sam.image_encoder = torch.nn.Identity()
    with pytest.raises(ValueError, match="only ViT"):
        export_official_state_dict(sam)


def test_registry_refuses_duplicates_and_names_known_models() -> None:
    with pytest.raises(ValueError, match="already registered"):
        build.register("vit_b", lambda: build_sam("vit_tiny_test"))
    with pytest.raises(KeyError, match="vit_tiny_test"):
        build_sam("no_such_model")
    assert {"vit_b", "vit_l", "vit_h", "vit_tiny_test"} <= set(build.available())
