"""Shipping a starter model: the comparison that gates it and the card that goes with it."""

from __future__ import annotations

import json
from pathlib import Path

from model.build import build_sam
from model.checkpoints import read_checkpoint, save_checkpoint
from model.compare import compare
from model.ship import ship


def run(values: dict[str, float]) -> dict[str, object]:
    per_image = {
        f"s/{i}": {
            "miou@1": v,
            "miou@3": v,
            "miou@5": v,
            "noc@85": 20 * (1 - v),
            "noc@90": 20 * (1 - v),
        }
        for i, v in enumerate(values.values())
    }
    return {"metrics": {"s": {"per_image": per_image}}}


def test_a_clear_gain_is_better_and_noise_is_not() -> None:
    baseline = run({str(i): 0.4 + 0.01 * (i % 3) for i in range(20)})
    strong = run({str(i): 0.8 + 0.01 * (i % 3) for i in range(20)})
    noisy = run({str(i): 0.4 + (0.05 if i % 2 else -0.05) for i in range(20)})
    rows = compare(strong, baseline)["s"]["metrics"]
    assert rows["miou@3"]["better"] and rows["noc@85"]["better"]
    assert rows["miou@3"]["candidate"] > rows["miou@3"]["baseline"]
    assert not compare(noisy, baseline)["s"]["metrics"]["miou@3"]["better"]


def test_ship_writes_fp16_weights_and_a_card(tmp_path: Path) -> None:
    trained = save_checkpoint(
        tmp_path / "model.pt", build_sam("vit_tiny_test"), {"name": "vit_tiny_test"}
    )
    comparison = compare(run({"a": 0.9, "b": 0.8}), run({"a": 0.5, "b": 0.4}))
    card = ship(
        trained,
        command="python -m model.train --config vit_tiny_test",
        sets=["fruits-nuts", "camvid347"],
        holdout=["davis345"],
        comparison=comparison,
        description="test",
        inference="zoom-in on",
        note="Measured on validation images.",
        out=tmp_path / "weights",
    )
    weights = tmp_path / "weights" / "starter.pth"
    assert read_checkpoint(weights)["config"] == {"name": "vit_tiny_test"}
    assert (
        json.loads((tmp_path / "weights" / "starter.json").read_text())["sha256"] == card["sha256"]
    )
    text = (tmp_path / "weights" / "MODEL_CARD.md").read_text()
    assert "CC BY-NC 4.0" in text and "research and evaluation" in text
    assert "--sets fruits-nuts,ccp1003" in text
    assert "| s | 2 | miou@3 | 0.850 | 0.450 |" in text
    assert "Predictor: zoom-in on.\n\nMeasured on validation images." in text
    build_sam("vit_tiny_test", checkpoint=weights)  # loads strictly
