"""Export throughput: masks per second, MB per second and peak memory of an export job's
work (``engine.exports.make_export``) on a project of many masks.

    .venv/bin/python bench/export_throughput.py [--images 100] [--masks-per-image 100]
        [--formats sa1b,coco-rle,coco-polygons] [--size 640x480]

Uses a throw-away data dir (SQLite, local files). Masks are random discs and boxes, some
with holes, stored with bulk_create (the set-up is not timed). Peak memory is the process's
resident high-water mark (ru_maxrss) measured in a fresh child process per format, so one
format's peak does not hide another's; the baseline (Django loaded, no export) is printed
beside it. A second, untimed export under tracemalloc gives the Python heap's peak during
the export (flat memory: it does not grow with the number of masks).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(data_dir: str) -> None:
    os.environ.update(
        {
            "MASKLOOP_DATA_DIR": data_dir,
            "DJANGO_SETTINGS_MODULE": "annotator.settings",
            "MASKLOOP_STARTER_CHECKPOINT": "none",
        }
    )
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()


def populate(images_count: int, per_image: int, width: int, height: int) -> int:
    import io

    import numpy as np
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from PIL import Image as PILImage

    from annotator.models import Mask
    from engine import images, rle
    from engine.projects import create_project

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("bench")
    project = create_project("bench", owner=owner, categories=["a", "b", "c"])
    categories = list(project.categories.all())
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    for index in range(images_count):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        image = images.store(project, images.prepare(buffer.getvalue(), f"{index}.jpg"))
        rows = []
        for number in range(per_image):
            cx, cy = rng.integers(0, width), rng.integers(0, height)
            radius = int(rng.integers(8, 60))
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
            if number % 3 == 0:
                mask &= (yy - cy) ** 2 + (xx - cx) ** 2 >= (radius // 3) ** 2  # a hole
            if number % 5 == 0:
                mask[cy // 2 : cy // 2 + 10, cx // 2 : cx // 2 + 30] = True  # a second part
            if not mask.any():
                mask[0, 0] = True
            encoded = rle.from_mask(mask)
            rows.append(
                Mask(
                    image=image,
                    category=categories[number % 3],
                    rle_counts=encoded.counts,
                    bbox=rle.bbox(encoded),
                    area=rle.area(encoded),
                    source_stage="automatic",
                    predicted_iou=0.9,
                    stability_score=0.96,
                    point_coords=[[float(cx), float(cy)]],
                    crop_box=[0, 0, width, height],
                )
            )
        Mask.objects.bulk_create(rows, batch_size=1000)
    return project.pk


def run_one(data_dir: str, project_id: int, fmt: str) -> None:
    """In a child process: one export, its figures as JSON on stdout."""
    setup_django(data_dir)
    from annotator.models import Project
    from engine import exports

    project = Project.objects.get(pk=project_id)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    name, _, masks_as = fmt.partition("-")
    params = {"format": name, "masks_as": masks_as or "rle", "shard_size": 50}
    start = time.perf_counter()
    export = exports.make_export(project, params)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Again under tracemalloc: the Python heap's high-water mark during one export.
    import tracemalloc

    tracemalloc.start()
    exports.make_export(project, params)
    heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "format": fmt,
                "masks": export.masks,
                "images": export.images,
                "seconds": round(seconds, 2),
                "masks_per_s": round(export.masks / seconds),
                "mb": round(export.size / 1e6, 1),
                "mb_per_s": round(export.size / 1e6 / seconds, 1),
                "baseline_mb": round(baseline),
                "peak_mb": round(peak),
                "python_heap_peak_mb": round(heap_peak, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--masks-per-image", type=int, default=100)
    parser.add_argument("--formats", default="sa1b,coco-rle,coco-polygons")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], int(args.child[1]), args.child[2])
        return
    width, height = (int(v) for v in args.size.split("x"))
    data_dir = tempfile.mkdtemp(prefix="maskloop-bench-")
    setup_django(data_dir)
    start = time.perf_counter()
    project_id = populate(args.images, args.masks_per_image, width, height)
    print(
        f"set-up: {args.images} images of {width}x{height}, "
        f"{args.images * args.masks_per_image} masks in {time.perf_counter() - start:.1f} s"
    )
    try:
        for fmt in args.formats.split(","):
            out = subprocess.run(
                [sys.executable, __file__, "--child", data_dir, str(project_id), fmt],
                check=True,
                capture_output=True,
                text=True,
            )
            print(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
