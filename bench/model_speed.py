"""Model speeds on this machine: image-encoder ms per image and mask-decoder ms per prompt.

    .venv/bin/python bench/model_speed.py [--configs efficientnet_lite0_512,vit_b] [--threads 1]

Also the bytes of the stored (float16) embedding; HQ-SAM configurations (NAME_hq) add their
early feature to it, and their clicks are timed with the HQ head and without (``sam_only``).
Random weights (speed does not depend on them). CUDA when present, CPU otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.build import build_sam  # noqa: E402
from model.predictor import SamPredictor  # noqa: E402


def timed(function, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="efficientnet_lite0_512,vit_b")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    for name in args.configs.split(","):
        measure(name, image, args.repeats)


def measure(name: str, image: np.ndarray, repeats: int) -> None:
    predictor = SamPredictor(build_sam(name, checkpoint=None))
    predictor.set_image(image)  # warm-up
    encode = timed(
        lambda: predictor.set_image(image), max(2, repeats // (5 if "vit" in name else 1))
    )
    point, label = np.array([[320.0, 240.0]]), np.array([1])
    predictor.predict(point_coords=point, point_labels=label)
    decode = timed(lambda: predictor.predict(point_coords=point, point_labels=label), repeats * 5)
    stored = len(predictor.get_embedding().to_bytes(half=True))
    line = (
        f"{name}: encoder {statistics.median(encode):.0f} ms/image (min {min(encode):.0f}), "
        f"decoder + postprocess {statistics.median(decode):.1f} ms/prompt (min {min(decode):.1f}), "
        f"stored embedding {stored / 1e6:.2f} MB"
    )
    if predictor.model.is_hq:
        base = timed(
            lambda: predictor.predict(point_coords=point, point_labels=label, sam_only=True),
            repeats * 5,
        )
        line += f"; HQ off (base model) {statistics.median(base):.1f} ms/prompt"
    print(line)


if __name__ == "__main__":
    main()
