"""Training HQ-SAM: ``--mode hq`` freezes the base model and trains only HQ-SAM's additions
on the HQ mask's loss; ``--init`` from a plain SAM checkpoint fills the base and says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from model.build import build_sam
from model.checkpoints import read_checkpoint, save_checkpoint
from model.mask_decoder_hq import HQ_PREFIXES
from model.train import augment as aug
from model.train import losses as L
from model.train import simulate as sim
from model.train.__main__ import build_parser, config_from_args
from model.train.loop import (
    LAST_CHECKPOINT,
    LOG_FILE,
    TrainStep,
    apply_mode,
    param_groups,
    train,
)
from tests.model.test_train import _disc, _square, make_shapes_set, tiny_config


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_shapes_set(root)
    return root


def _trainable(sam: torch.nn.Module) -> set[str]:
    return {n for n, p in sam.named_parameters() if p.requires_grad}


def test_hq_mode_trains_only_the_hq_token_its_mlp_and_the_fusion() -> None:
    sam = build_sam("vit_tiny_test_hq")
    frozen = apply_mode(sam, "hq")
    trainable = _trainable(sam)
    assert trainable and all(n.startswith(HQ_PREFIXES) for n in trainable)
    assert {n.split(".")[1] for n in trainable} == {p.split(".")[1] for p in HQ_PREFIXES}
    assert set(frozen) == {n for n, _ in sam.named_parameters()} - trainable
    groups = param_groups(
        sam, lr=1.0, encoder_lr_scale=0.1, weight_decay=0.1, new_encoder_prefixes=[]
    )
    assert all(g["name"].startswith("decoder/") for g in groups)
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for n, p in sam.named_parameters() if n.startswith(HQ_PREFIXES)
    )


def test_modes_full_and_decoder_and_their_errors() -> None:
    sam = build_sam("vit_tiny_test_hq")
    assert apply_mode(sam, "full") == []
    sam = build_sam("vit_tiny_test_hq")
    apply_mode(sam, "decoder")
    trainable = _trainable(sam)
    assert not any(n.startswith("image_encoder.") for n in trainable)
    assert "mask_decoder.hf_token.weight" in trainable
    assert "mask_decoder.iou_token.weight" in trainable
    with pytest.raises(ValueError, match="HQ configuration"):
        apply_mode(build_sam("vit_tiny_test"), "hq")
    with pytest.raises(ValueError, match="unknown training mode"):
        apply_mode(build_sam("vit_tiny_test"), "lora")


def test_hq_simulation_decodes_as_the_public_decoder() -> None:
    """The training decoder's HQ mask and shown mask are the predictor's final masks."""
    torch.manual_seed(0)
    sam = build_sam("vit_tiny_test_hq")
    images = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        emb, early = sam.encode_image_with_early(images)
        assert early is not None
        gt = torch.stack([_square(128, 10, 60, 10, 60), _square(128, 70, 120, 60, 120)])
        outputs = sim.simulate(
            sam, emb, torch.tensor([0, 1]), gt, sim.SimulationConfig(rounds=3, box_prob=0.0),
            generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0),
            early_features=early,
        )  # fmt: skip
    first = outputs[0]
    assert first.logits.shape == (2, 4, 32, 32)
    assert first.hq_logits is not None and first.hq_logits.shape == (2, 1, 32, 32)
    with torch.no_grad():
        prompts = sim.first_prompts(gt, sim.SimulationConfig(box_prob=0.0), torch.Generator())
        hq = sam.hq_features(emb, early)
        logits, iou = sim.decode_all_tokens(sam, emb, prompts, None, hq)
        for i in range(2):
            points = (prompts.first_point[i : i + 1, None], torch.ones(1, 1, dtype=torch.int))
            for multi in (False, True):
                low, _ = sam.decode(
                    emb[i : i + 1], points=points, multimask_output=multi,
                    early_features=early[i : i + 1],
                )  # fmt: skip
                token = 1 + int(iou[i, 1:].argmax()) if multi else 0
                torch.testing.assert_close(low[0, 0], logits[i, token] + logits[i, 4])
            hq_only, _ = sam.decode(
                emb[i : i + 1], points=points, early_features=early[i : i + 1], hq_only=True
            )
            torch.testing.assert_close(hq_only[0, 0], logits[i, 4])


def test_hq_loss_trains_the_hq_mask_alone() -> None:
    target = _disc()[None]
    logits = torch.zeros(1, 4, 32, 32, requires_grad=True)
    hq_logits = torch.zeros(1, 1, 32, 32, requires_grad=True)
    iou_pred = torch.zeros(1, 4, requires_grad=True)
    out = sim.RoundOutput(
        logits=logits, iou_pred=iou_pred, kind="first", shown=torch.tensor([1]),
        hq_logits=hq_logits,
    )  # fmt: skip
    loss, parts = L.round_loss(out, target, L.LossConfig(sam_outputs=False))
    loss.backward()
    assert hq_logits.grad is not None and hq_logits.grad.abs().sum() > 0
    assert logits.grad is None and iou_pred.grad is None
    combined, focal, dice = L.mask_loss(hq_logits.detach(), target, L.LossConfig())
    assert float(loss.detach()) == pytest.approx(float(combined[0, 0]))
    assert float(parts["hq_dice"]) == pytest.approx(float(dice[0, 0]))
    # With SAM's outputs trained too (full / decoder mode), both get gradients.
    logits.grad = hq_logits.grad = None
    L.round_loss(out, target, L.LossConfig())[0].backward()
    assert logits.grad is not None and hq_logits.grad is not None


def test_hq_mode_lowers_the_loss_on_a_batch(shapes_root: Path) -> None:
    torch.manual_seed(0)
    sam = build_sam("vit_tiny_test_hq").train()
    apply_mode(sam, "hq")
    sam.image_encoder.eval()
    images = aug.collect_train_images(shapes_root, ["shapes"])
    ds = aug.TrainDataset(
        images, aug.AugmentConfig(image_size=128, low_res_size=32, max_instances=3), seed=0
    )
    batch = aug.collate([ds[0], ds[1]])
    step = TrainStep(
        sam, sim.SimulationConfig(rounds=2), L.LossConfig(sam_outputs=False),
        encoder_frozen=True, bf16=False,
    )  # fmt: skip
    base = {n: p.detach().clone() for n, p in sam.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW(
        param_groups(sam, lr=3e-3, encoder_lr_scale=1.0, weight_decay=0.0, new_encoder_prefixes=[])
    )
    losses = []
    for _ in range(20):
        loss, stats = step(batch.images, batch.image_index, batch.masks, batch.low_res_masks, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert "hq_dice" in stats
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    for name, param in sam.named_parameters():
        if name in base:
            assert torch.equal(param, base[name]), name


def test_init_from_a_plain_checkpoint_then_hq_mode(shapes_root: Path, tmp_path: Path) -> None:
    plain = build_sam("vit_tiny_test")
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01)
    init = save_checkpoint(tmp_path / "plain.pt", plain, {"name": "vit_tiny_test"})
    said: list[str] = []
    cfg = tiny_config(
        shapes_root, tmp_path / "hq", config="vit_tiny_test_hq", init=str(init), mode="hq",
        steps=2, rounds=2,
    )  # fmt: skip
    summary = train(cfg, echo=said.append)
    assert summary["steps"] == 2
    text = "\n".join(said)
    assert "init:" in text and "mask_decoder.hf_token" in text and "start from" in text
    n_hq = sum(
        p.numel()
        for n, p in build_sam("vit_tiny_test_hq").named_parameters()
        if n.startswith(HQ_PREFIXES)
    )
    assert f"{n_hq:,} trained" in text and "[mode hq]" in text
    after = read_checkpoint(tmp_path / "hq" / LAST_CHECKPOINT)
    assert after["recipe"]["mode"] == "hq"
    for key, tensor in plain.state_dict().items():
        assert torch.equal(after["model"][key], tensor), key  # the base did not move
    start = build_sam("vit_tiny_test_hq").state_dict()
    assert any(not torch.equal(after["model"][k], start[k]) for k in start if "hf_mlp" in k)
    events = [json.loads(line) for line in (tmp_path / "hq" / LOG_FILE).read_text().splitlines()]
    assert any("hq_dice" in e for e in events if e["event"] == "train")
    # A plain model cannot be trained in hq mode.
    with pytest.raises(ValueError, match="HQ configuration"):
        train(tiny_config(shapes_root, tmp_path / "x", mode="hq"), echo=lambda _m: None)


def test_command_line_mode_flag() -> None:
    parser = build_parser()
    args = parser.parse_args(["--config", "vit_tiny_test_hq", "--sets", "a", "--mode", "hq"])
    assert config_from_args(args).mode == "hq"
    default = parser.parse_args(["--config", "vit_tiny_test", "--sets", "a"])
    assert config_from_args(default).mode == "full"
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", "x", "--sets", "a", "--mode", "everything"])
