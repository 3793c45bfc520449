"""Automatic mask generator cost per preset: seconds per image, masks per image, peak memory.

    .venv/bin/python bench/amg_speed.py [--preset sa1b,fast] [--images 5] [--set fruits-nuts]
        [--checkpoint PATH] [--config efficientnet_lite0_512] [--override pred_iou_thresh=0.5]
        [--threads 1]

Without --checkpoint the model is efficientnet_lite0_512 as ``model.build`` makes it (untrained
decoder): the time is right, but few masks pass the paper's thresholds (DECISIONS 12a), and
fewer survivors mean less upsampling, so pass a trained checkpoint for representative figures.
Images are the first N (by file name) of a set in ../shared/data (MASKLOOP_SHARED_DATA
overrides). Each preset runs in its own process so that the peak RSS (``ru_maxrss``) is its own;
the first image includes one-off start-up costs, so the median is printed beside the mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.amg import AMGConfig, AutomaticMaskGenerator  # noqa: E402
from model.build import build_sam  # noqa: E402
from model.checkpoints import read_checkpoint  # noqa: E402
from model.predictor import SamPredictor  # noqa: E402

SHARED_DATA = Path(os.environ.get("MASKLOOP_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sa1b,fast", help="one or more, comma-separated")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--set", default="fruits-nuts", help="a folder of ../shared/data")
    parser.add_argument("--checkpoint", type=Path, help="default: no checkpoint")
    parser.add_argument("--config", help="model configuration (default: the checkpoint's)")
    parser.add_argument(
        "--override", action="append", default=[], help="AMGConfig field=value, repeatable"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    presets = [p for p in args.preset.split(",") if p]
    if len(presets) > 1:
        # One process per preset: ru_maxrss only ever grows within a process.
        argv = _without_preset(sys.argv[1:])
        for preset in presets:
            subprocess.run([sys.executable, __file__, *argv, "--preset", preset], check=True)
        return
    run(presets[0], args)


def _without_preset(argv: list[str]) -> list[str]:
    """The command line minus its --preset option (either ``--preset X`` or ``--preset=X``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--preset":
            skip = True
        elif not arg.startswith("--preset="):
            out.append(arg)
    return out


def run(preset: str, args: argparse.Namespace) -> None:
    folder = SHARED_DATA / args.set
    if not (folder / "annotations.json").is_file():
        print(f"skipped: {folder}/annotations.json is absent (set MASKLOOP_SHARED_DATA)")
        return
    torch.set_num_threads(args.threads)
    config = AMGConfig.preset(preset, **_overrides(args.override))
    name, weights = _model_name(args.config, args.checkpoint)
    sam = build_sam(name, checkpoint=args.checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = AutomaticMaskGenerator(SamPredictor(sam, device=device), config)

    seconds, counts = [], []
    for path in _image_paths(folder, args.images):
        image = np.array(Image.open(path).convert("RGB"))
        start = time.perf_counter()
        masks = generator.generate(image)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        counts.append(len(masks))
        print(
            f"  {preset} {path.name} {image.shape[1]}x{image.shape[0]}: "
            f"{seconds[-1]:.1f} s, {len(masks)} masks",
            flush=True,
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    changed = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != getattr(AMGConfig.preset(preset), f.name)
    }
    print(
        f"preset {preset}{' ' + json.dumps(changed) if changed else ''}: {len(seconds)} images "
        f"of {args.set}, {statistics.mean(seconds):.2f} s/image "
        f"(median {statistics.median(seconds):.2f}), {statistics.mean(counts):.1f} masks/image, "
        f"peak RSS {peak_mb:.0f} MB; model {name} ({weights}), {device}, "
        f"torch threads {torch.get_num_threads()}"
    )


def _model_name(config: str | None, checkpoint: Path | None) -> tuple[str, str]:
    if checkpoint is None:
        return config or "efficientnet_lite0_512", "no checkpoint: untrained decoder"
    if config is None:
        config = read_checkpoint(checkpoint).get("config", {}).get("name")
        if not config:
            raise SystemExit(f"{checkpoint} names no configuration; pass --config")
    return config, str(checkpoint)


def _overrides(items: list[str]) -> dict[str, Any]:
    defaults = AMGConfig()
    types = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(defaults)}
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"unknown AMGConfig field {key!r}; known: {', '.join(types)}")
        out[key] = types[key](value)
    return out


def _image_paths(folder: Path, limit: int) -> list[Path]:
    records = json.loads((folder / "annotations.json").read_text())["images"]
    names = sorted(str(r["file_name"]) for r in records)
    return [folder / n for n in names[:limit]]


if __name__ == "__main__":
    main()
