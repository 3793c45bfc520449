"""Ship a trained checkpoint as the starter model (version 0 of every new project).

    python -m model.ship runs/starter/model.pt --comparison runs/compare.json \\
        --command "python -m model.train ..." --sets coco128-seg,... --holdout davis345,...

Writes model/weights/starter.pth (float16 weights, at most 25 MB), starter.json (the card the
engine reads: configuration, sha256, figures) and MODEL_CARD.md (for people: data, licences,
terms of use, figures, the command that made it). DECISIONS 5: replace the shipped model only
with one that measures better on the held-out sets.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from model.build import build_sam
from model.checkpoints import read_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parent / "weights"
MAX_BYTES = 25 * 1024 * 1024

#: Each training set's licence and what it means for weights trained on it
#: (from ../shared/data/README.md).
LICENCES: dict[str, tuple[str, bool]] = {
    "coco128-seg": (
        "COCO images under their own terms; folder licence GPL-3.0 (Ultralytics)",
        False,
    ),
    "fruits-nuts": ("MIT", True),
    "davis345": ("DAVIS, research use (as distributed with RITM)", False),
    "pennfudan170": ("no licence stated; Penn-Fudan is offered for research use", False),
    "weizmann-horse326": ("no licence stated (Weizmann Horse database, research use)", False),
    "ccp1003": ("Apache-2.0 (Clothing Co-Parsing repository)", True),
    "camvid347": ("CC BY-NC 4.0 (personal and research use)", False),
}


def card_markdown(card: dict[str, Any]) -> str:
    sets = card["training_sets"]
    permissive = all(LICENCES.get(s, ("", False))[1] for s in sets)
    lines = [
        "# Maskloop starter model",
        "",
        f"Configuration `{card['config']['name']}`: {card['description']}",
        f"Weights: `starter.pth`, float16, sha256 `{card['sha256']}`, {card['bytes']} bytes.",
        f"Made {card['created']} by:",
        "",
        "```bash",
        card["command"],
        "```",
        "",
        "## Training data",
        "",
        "| set | licence | permissive |",
        "|---|---|---|",
    ]
    for name in sets:
        licence, ok = LICENCES.get(name, ("unknown", False))
        lines.append(f"| {name} | {licence} | {'yes' if ok else 'no'} |")
    lines += [
        "",
        "Held out (never trained on, used to measure): " + ", ".join(card["holdout"] or ["none"]),
        "",
        "## Terms of use",
        "",
        (
            "Every training set is under a permissive licence: the weights may be used for any "
            "purpose, keeping the sets' notices."
            if permissive
            else "Some training sets are for research or non-commercial use only (see the table), "
            "so these weights are offered for research and evaluation. For other uses, train on "
            "the permissive sets alone with the same recipe: `--sets fruits-nuts,ccp1003` "
            "(and your own data), then ship that checkpoint instead."
        ),
        "",
        "## Figures (standard interactive protocol, 20 clicks, against GrabCut on the same clicks)",
        "",
        f"Predictor: {card.get('inference') or 'the model alone'}.",
        "",
        *([card["note"], ""] if card.get("note") else []),
        "| set | images | metric | this model | GrabCut | difference [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for set_name, block in card.get("comparison", {}).items():
        for metric, row in block["metrics"].items():
            low, high = row["ci95"]
            lines.append(
                f"| {set_name} | {block['images']} | {metric} | {row['candidate']:.3f} | "
                f"{row['baseline']:.3f} | {row['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |"
            )
    automatic = card.get("automatic")
    if automatic:
        lines += ["", *automatic_markdown(automatic)]
    return "\n".join(lines) + "\n"


def automatic_markdown(automatic: dict[str, Any]) -> list[str]:
    """The card's section on the automatic stage's thresholds (``record_calibration``)."""
    thresholds = automatic.get("thresholds") or {}
    lines = [
        "## Automatic stage (thresholds calibrated for this model)",
        "",
        f"Made by: `{automatic['command']}`",
        "",
        (
            f"Kept masks reach a mean IoU of {automatic['target']} with their ground truth at "
            f"predicted IoU > {thresholds['pred_iou_thresh']} and stability >= "
            f"{thresholds['stability_score_thresh']}; new projects with this model start with "
            'them as `settings["automatic"]`.'
            if thresholds
            else f"No thresholds reach a mean IoU of {automatic['target']}: projects keep the "
            "paper's."
        ),
        "",
        *(
            [
                f"Measured on the first {automatic['images_per_set']} {automatic['split']} "
                f"images of {', '.join(automatic['sets'])} ({automatic['images']} with labelled "
                "objects; candidates overlapping none are not measured).",
                "",
            ]
            if automatic.get("sets")
            else []
        ),
        *([automatic["note"], ""] if automatic.get("note") else []),
        "| thresholds | masks per image | measured | mean IoU | IoU >= 0.9 | IoU < 0.75 |",
        "|---|---|---|---|---|---|",
    ]

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    for label in ("paper", "calibrated", "loose"):
        row = automatic["figures"].get(label)
        if not row:
            continue
        mean = "-" if row["mean_iou"] is None else f"{row['mean_iou']:.3f}"
        lines.append(
            f"| {label}: > {row['pred_iou_thresh']}, >= {row['stability_score_thresh']} | "
            f"{row['per_image']:.1f} | {row['measured']} | {mean} | {share(row['good_share'])} "
            f"| {share(row['bad_share'])} |"
        )
    return lines


def record_calibration(card_path: Path, calibration: dict[str, Any], command: str) -> None:
    """Write a calibration (``model.amg.calibrate``) into a shipped card and its MODEL_CARD.md;
    the engine seeds new projects' automatic-stage settings from it."""
    card = json.loads(card_path.read_text())
    where: dict[str, Any] = {
        key: calibration[key] for key in ("sets", "split", "images_per_set") if key in calibration
    }
    card["automatic"] = {
        "command": command,
        "target": calibration["target"],
        "thresholds": calibration["thresholds"],
        "images": calibration["images"],
        **where,
        "figures": {
            label: calibration[label]
            for label in ("paper", "calibrated", "loose")
            if calibration.get(label)
        },
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    (card_path.parent / "MODEL_CARD.md").write_text(card_markdown(card))


def ship(
    checkpoint: Path,
    *,
    command: str,
    sets: list[str],
    holdout: list[str],
    comparison: dict[str, Any],
    description: str,
    inference: str = "",
    note: str = "",
    out: Path = WEIGHTS,
) -> dict[str, Any]:
    payload = read_checkpoint(checkpoint)
    config = dict(payload.get("config", {}))
    sam = build_sam(config["name"], checkpoint=checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    weights = save_checkpoint(out / "starter.pth", sam, {"name": config["name"]}, half=True)
    size = weights.stat().st_size
    if size > MAX_BYTES:
        weights.unlink()
        raise SystemExit(f"{size} bytes is over the 25 MB limit for a shipped checkpoint")
    card = {
        "config": {"name": config["name"]},
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "bytes": size,
        "created": datetime.date.today().isoformat(),
        "description": description,
        "inference": inference,
        "note": note,
        "command": command,
        "training_sets": sets,
        "holdout": holdout,
        "comparison": comparison,
        "metrics": {
            name: {metric: row["candidate"] for metric, row in block["metrics"].items()}
            for name, block in comparison.items()
        },
    }
    (out / "starter.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(card_markdown(card))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument(
        "--comparison", type=Path, required=True, help="python -m model.compare --json"
    )
    parser.add_argument("--command", required=True, help="the training command, for the card")
    parser.add_argument("--sets", required=True)
    parser.add_argument("--holdout", default="")
    parser.add_argument(
        "--description", default="EfficientNet-Lite0 (ImageNet) + neck + SAM decoder"
    )
    parser.add_argument(
        "--inference", default="", help="how the figures were predicted (e.g. zoom-in on)"
    )
    parser.add_argument("--note", default="", help="a paragraph under the figures")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    card = ship(
        args.checkpoint,
        command=args.command,
        sets=[s for s in args.sets.split(",") if s],
        holdout=[s for s in args.holdout.split(",") if s],
        comparison=json.loads(args.comparison.read_text()),
        description=args.description,
        inference=args.inference,
        note=args.note,
        out=args.out,
    )
    print(
        f"shipped {card['config']['name']} ({card['bytes']} bytes, sha256 {card['sha256'][:16]}...)"
    )


if __name__ == "__main__":
    main()
