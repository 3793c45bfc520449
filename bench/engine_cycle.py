"""The data engine end to end (issue 7's proof): import labelled images, run a retraining
cycle, measure the promoted version against the project's cold-start predictor on held-out
images, simulate annotation of more images with the promoted model, run a second cycle.

    .venv/bin/python bench/engine_cycle.py --sets davis345 --images 60 --more 40 \\
        --steps 300 [--config efficientnet_lite0_384] [--eval-images 20] \\
        [--starter runs/s5b/starter.pth] [--threads 1]

Uses a throw-away data dir (SQLite, local files) and runs each cycle in this process exactly
as a gpu worker runs it (``engine.jobs.run``). The project starts with the shipped starter as
version 0 when there is one (else GrabCut answers and the first cycle trains ``--config``
from its pretrained encoder). Evaluation: the interactive protocol on the first
``--eval-images`` validation images of each set (../shared/data's split: never imported).

Simulated annotation: for each new image, every labelled object is annotated with the
promoted model by the protocol's clicks until IoU >= 0.85 (at most 20 clicks); the model's
mask at that point is saved as the annotator's mask, with its clicks, as people save them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(data_dir: str, starter: Path | None = None) -> None:
    os.environ.update(
        {
            "MASKLOOP_DATA_DIR": data_dir,
            "DJANGO_SETTINGS_MODULE": "annotator.settings",
        }
    )
    if starter is not None:
        os.environ["MASKLOOP_STARTER_CHECKPOINT"] = str(starter.resolve())
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()


def coco_subset(root: Path, sets: list[str], skip: int, count: int, out: Path) -> Path:
    """A COCO file of ``count`` training images per set (after the first ``skip``)."""
    from model.train.data import load_coco_set

    images, annotations = [], []
    for set_name in sets:
        coco = load_coco_set(root / set_name)
        chosen = coco.image_ids("train")[skip : skip + count]
        raw = json.loads((root / set_name / "annotations.json").read_text())
        keep = set(chosen)
        for image in raw["images"]:
            if image["id"] in keep:
                # Beside the JSON: an import reads files only inside its own folder.
                name = f"images/{set_name}-{Path(image['file_name']).name}"
                (out.parent / "images").mkdir(exist_ok=True)
                shutil.copyfile(root / set_name / image["file_name"], out.parent / name)
                images.append(
                    {**image, "id": len(images) + 1, "file_name": name,
                     "_old": image["id"], "_set": set_name}
                )  # fmt: skip
        by_old = {(im["_set"], im["_old"]): im["id"] for im in images}
        for ann in raw["annotations"]:
            key = (set_name, ann["image_id"])
            if key in by_old and not ann.get("iscrowd"):
                annotations.append(
                    {**ann, "id": len(annotations) + 1, "image_id": by_old[key], "category_id": 1}
                )
    for image in images:
        image.pop("_old"), image.pop("_set")
    out.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "object"}],
            }
        )
    )
    return out


def evaluate_version(version: Any, root: Path, sets: list[str], limit: int) -> dict[str, Any]:
    from engine.predictors import make_predictor
    from model.evaluate import evaluate, iter_instances, summarize
    from model.train.data import load_coco_set

    predictor = make_predictor(version)
    out = {}
    for set_name in sets:
        coco = load_coco_set(root / set_name)
        results = evaluate(predictor, list(iter_instances(coco, "val", limit_images=limit)))
        m = summarize(results)
        out[set_name] = {
            "miou@1": round(m.miou[1], 3),
            "miou@3": round(m.miou[3], 3),
            "miou@5": round(m.miou[5], 3),
            "noc@85": round(m.noc["85"], 2),
            "noc@90": round(m.noc["90"], 2),
        }
    return out


def simulate_annotation(project: Any, version: Any, coco_file: Path, user: Any) -> dict[str, float]:
    """Import the images alone, then annotate their objects with the model by protocol clicks."""
    import numpy as np

    from annotator.models import Image
    from engine import masks as mask_service
    from engine import rle
    from engine.images import prepare, store
    from engine.predictors import make_predictor
    from model.evaluate import evaluate_instance

    raw = json.loads(coco_file.read_text())
    predictor = make_predictor(version)
    clicks = objects = 0
    start = time.perf_counter()
    for entry in raw["images"]:
        path = coco_file.parent / entry["file_name"]
        image: Image = store(project, prepare(path.read_bytes(), path.name), user=user)
        rgb = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(path).convert("RGB"))
        predictor.set_image(rgb)
        for ann in (a for a in raw["annotations"] if a["image_id"] == entry["id"]):
            from model.train.data import CocoAnnotation

            gt = CocoAnnotation(
                id=ann["id"], image_id=ann["image_id"], category_id=1,
                segmentation=ann["segmentation"], area=float(ann.get("area", 0)),
                bbox=(0.0, 0.0, 0.0, 0.0), iscrowd=False,
            ).decode(entry["height"], entry["width"])  # fmt: skip
            ious, used = evaluate_instance(predictor, gt, max_clicks=20, stop_iou=0.85)
            points = [[c.x, c.y] for c in used]
            labels = [int(c.positive) for c in used]
            prediction = predictor.predict(
                point_coords=np.array(points, dtype=np.float32),
                point_labels=np.array(labels),
                multimask_output=len(points) == 1,
            )
            mask = prediction.masks[int(np.argmax(prediction.iou_predictions))]
            if not mask.any():
                continue
            mask_service.create_mask(
                image,
                {
                    "segmentation": rle.from_mask(mask).to_coco(),
                    "source_stage": "assisted",
                    "clicks": len(used),
                },
                user=user,
            )
            clicks += len(used)
            objects += 1
    return {
        "objects": objects,
        "clicks_per_object": round(clicks / max(objects, 1), 2),
        "seconds": round(time.perf_counter() - start, 1),
    }


def run_cycle(project: Any, user: Any, params: dict[str, Any]) -> dict[str, Any]:
    import engine.tasks  # noqa: F401  (registers the job runners)
    from annotator.models import Job
    from engine import jobs, retraining

    params = retraining.cycle_params(project, params)
    job = Job.objects.create(
        project=project, kind="retrain", key="cycle", params=params, created_by=user
    )
    start = time.perf_counter()
    jobs.run(job.pk)
    job.refresh_from_db()
    if job.state != "succeeded":
        raise SystemExit(f"cycle failed: {job.message}")
    return {**job.result, "minutes": round((time.perf_counter() - start) / 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="davis345")
    parser.add_argument("--images", type=int, default=60, help="imported per set (cycle 1)")
    parser.add_argument("--more", type=int, default=40, help="annotated per set (cycle 2)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--config", default="", help="when no starter model is shipped")
    parser.add_argument("--eval-images", type=int, default=20)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument(
        "--starter",
        type=Path,
        help="version 0 of the project (a checkpoint with its .json card beside it); default: "
        "the shipped starter. A model that never saw --sets shows what the engine adds.",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from model.train.data import shared_data_root

    root = args.data or shared_data_root()
    if not root.is_dir():
        raise SystemExit(f"{root} not found: this bench needs ../shared/data")
    sets = [s for s in args.sets.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="maskloop-cycle-") as data_dir:
        setup_django(data_dir, args.starter)
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from engine.io.imports import import_path
        from engine.predictors import answering_version
        from engine.projects import create_project

        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_user("bench")
        project = create_project("cycle bench", owner=user)
        work = Path(data_dir)
        first = coco_subset(root, sets, 0, args.images, work / "first.json")
        report = import_path(project, first, "coco", user=user)
        print(f"imported {report.images} images, {report.masks} masks from {','.join(sets)}")
        params = {"steps": args.steps, **({"config": args.config} if args.config else {})}
        cold = answering_version(project)
        figures: dict[str, Any] = {
            "cold_start": evaluate_version(cold, root, sets, args.eval_images)
        }
        print("cold start:", json.dumps(figures["cold_start"]))
        figures["cycle1"] = run_cycle(project, user, params)
        promoted = answering_version(project)
        figures["after_cycle1"] = evaluate_version(promoted, root, sets, args.eval_images)
        print(
            "cycle 1:",
            json.dumps(figures["cycle1"]["figures"]),
            "minutes",
            figures["cycle1"]["minutes"],
        )
        print("after cycle 1 (shared val):", json.dumps(figures["after_cycle1"]))
        more = coco_subset(root, sets, args.images, args.more, work / "more.json")
        figures["annotation"] = simulate_annotation(project, promoted, more, user)
        print("simulated annotation:", json.dumps(figures["annotation"]))
        figures["cycle2"] = run_cycle(project, user, params)
        figures["after_cycle2"] = evaluate_version(
            answering_version(project), root, sets, args.eval_images
        )
        print(
            "cycle 2:",
            json.dumps(figures["cycle2"]["figures"]),
            "minutes",
            figures["cycle2"]["minutes"],
        )
        print("after cycle 2 (shared val):", json.dumps(figures["after_cycle2"]))
        print(json.dumps({k: v for k, v in figures.items()}, default=str))


if __name__ == "__main__":
    main()
