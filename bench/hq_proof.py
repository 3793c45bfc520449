"""HQ-SAM on the small model (issue 9's proof): train only the HQ parts on davis345's finely
drawn masks, then compare the same base model with and without HQ.

    .venv/bin/python bench/hq_proof.py --base model/weights/starter.pth --minutes 20 \
        --out runs/hq-proof [--threads 2] [--davis-images 40] [--coco-images 40]

1. ``python -m model.train --config <base>_hq --init BASE --mode hq --sets davis345``: the base
   model frozen, the HQ token, its MLP and the fusion block trained on davis345's training split
   (skipped with ``--hq CKPT``, an HQ checkpoint trained before).
2. On davis345's validation split: boundary IoU (mBIoU) after a tight ground-truth box and
   after the first click of the interactive protocol, base against HQ (SAM mask + HQ mask, the
   official default), with a paired bootstrap over images.
3. On coco128-seg's validation split (never trained on by the HQ parts): mIoU@1/3/5 of the
   interactive protocol and mIoU after a tight ground-truth box (HQ-SAM's zero-shot protocol),
   which the HQ model should keep within 1 point of the base (the paper's zero-shot claim).

Prints the four headline numbers side by side and writes the whole comparison as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.checkpoints import read_checkpoint  # noqa: E402
from model.compare import paired_row  # noqa: E402
from model.evaluate import (  # noqa: E402
    evaluate,
    make_predictor,
    summarize,
)
from model.train.data import iter_instances, load_coco_set, shared_data_root  # noqa: E402

FINE_SET = "davis345"
ZERO_SHOT_SET = "coco128-seg"


def train_hq(base: Path, out: Path, minutes: float, threads: int) -> Path:
    config = read_checkpoint(base).get("config", {}).get("name", "")
    if not config:
        raise SystemExit(f"{base} names no configuration")
    command = [
        sys.executable,
        "-m",
        "model.train",
        "--config",
        f"{config}_hq",
        "--init",
        str(base),
        "--mode",
        "hq",
        "--sets",
        FINE_SET,
        "--minutes",
        str(minutes),
        "--threads",
        str(threads),
        "--val-images",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]
    print("training:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return out / "model.pt"


def run(checkpoint: Path, set_name: str, images: int, *, prompt: str, max_clicks: int) -> Any:
    predictor = make_predictor(f"checkpoint:{checkpoint}")
    instances = list(
        iter_instances(
            load_coco_set(shared_data_root() / set_name), "val", min_area=0, limit_images=images
        )
    )
    results = evaluate(
        predictor,
        instances,
        max_clicks=max_clicks,
        prompt=prompt,  # type: ignore[arg-type]
        total=len(instances),
    )
    return summarize(results, max_clicks, prompt=prompt)  # type: ignore[arg-type]


def paired(
    base: dict[str, dict[str, float]], hq: dict[str, dict[str, float]], key: str
) -> dict[str, Any]:
    row = paired_row(hq, base, key)
    return {
        "base": row["baseline"],
        "hq": row["candidate"],
        "difference": row["difference"],
        "ci95": row["ci95"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the small model, no HQ head")
    parser.add_argument("--hq", type=Path, help="an HQ checkpoint already trained from --base")
    parser.add_argument("--minutes", type=float, default=20.0, help="HQ training time")
    parser.add_argument("--out", type=Path, default=Path("runs/hq-proof"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--davis-images", type=int, default=40, help="validation images")
    parser.add_argument("--coco-images", type=int, default=40, help="validation images")
    args = parser.parse_args()
    if not (shared_data_root() / FINE_SET).is_dir():
        print(f"no {FINE_SET} under {shared_data_root()}: nothing to measure", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    started = time.monotonic()
    hq = args.hq or train_hq(args.base, args.out, args.minutes, args.threads)
    train_minutes = (time.monotonic() - started) / 60 if args.hq is None else None

    report: dict[str, Any] = {"base": str(args.base), "hq": str(hq), "minutes": train_minutes}
    for name, checkpoint in (("base", args.base), ("hq", hq)):
        box = run(checkpoint, FINE_SET, args.davis_images, prompt="box", max_clicks=1)
        click = run(checkpoint, FINE_SET, args.davis_images, prompt="clicks", max_clicks=1)
        coco = run(checkpoint, ZERO_SHOT_SET, args.coco_images, prompt="clicks", max_clicks=5)
        coco_box = run(checkpoint, ZERO_SHOT_SET, args.coco_images, prompt="box", max_clicks=1)
        report[name] = {
            "coco_box_images": coco_box.per_image,
            "box_images": box.per_image,
            "click_images": click.per_image,
            "coco_images": coco.per_image,
            "box_mbiou": box.mbiou[1],
            "click_mbiou": click.mbiou[1],
            "coco_miou": {str(k): coco.miou[k] for k in (1, 3, 5)},
            "coco_box_miou": coco_box.miou[1],
            "objects": {"davis": box.n_instances, "coco": coco.n_instances},
        }
    base, hq_run = report["base"], report["hq"]
    report["paired"] = {
        "davis_box_mbiou": paired(base["box_images"], hq_run["box_images"], "mbiou@1"),
        "davis_click_mbiou": paired(base["click_images"], hq_run["click_images"], "mbiou@1"),
        **{
            f"coco_miou@{k}": paired(base["coco_images"], hq_run["coco_images"], f"miou@{k}")
            for k in (1, 3, 5)
        },
        "coco_box_miou": paired(base["coco_box_images"], hq_run["coco_box_images"], "miou@1"),
    }
    print(
        f"\n{FINE_SET} val ({base['objects']['davis']} objects), "
        f"{ZERO_SHOT_SET} val ({base['objects']['coco']} objects)"
    )
    print(f"{'':28} {'base':>7} {'HQ':>7} {'diff':>7}  95% interval")
    for label, row in report["paired"].items():
        low, high = row["ci95"]
        print(
            f"{label:28} {row['base']:7.3f} {row['hq']:7.3f} {row['difference']:+7.3f}"
            f"  [{low:+.3f}, {high:+.3f}]"
        )
    if train_minutes is not None:
        print(f"HQ parts trained {train_minutes:.1f} min on {FINE_SET} (train split)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hq_proof.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
