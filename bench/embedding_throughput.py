"""Embedding throughput of a worker: images per second through ``engine.embeddings.compute``
(read the image, run the encoder, store the float16 embedding), as the gpu-queue job does.

    .venv/bin/python bench/embedding_throughput.py [--images 24] [--config efficientnet_lite0_512]

Uses a throw-away data dir and random weights (speed does not depend on them); the images
are the scikit-image demo photos, repeated with a pixel changed so that each is new.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--config", default="efficientnet_lite0_512")
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp()
    os.environ.update(
        {"MASKLOOP_DATA_DIR": data_dir, "DJANGO_SETTINGS_MODULE": "annotator.settings"}
    )
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    import numpy as np
    import torch
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from PIL import Image as PILImage

    from annotator.models import ModelVersion
    from engine import embeddings, images
    from engine.demo import demo_photos
    from engine.projects import create_project
    from model.build import build_sam
    from model.checkpoints import save_checkpoint

    call_command("migrate", verbosity=0)
    torch.set_num_threads(settings.MASKLOOP_TORCH_THREADS)
    owner = get_user_model().objects.create_user("bench")
    project = create_project("bench", owner=owner)
    checkpoint = Path(data_dir) / "bench.pth"
    save_checkpoint(checkpoint, build_sam(args.config), {"name": args.config}, half=True)
    version = ModelVersion.objects.create(
        project=project, number=0, state="promoted", config={"name": args.config}
    )
    version.checkpoint.save("bench.pth", ContentFile(checkpoint.read_bytes()), save=True)
    photos = demo_photos()
    stored = []
    for index in range(args.images):
        name, data = photos[index % len(photos)]
        pixels = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB")).copy()
        pixels[0, 0] = [index % 256, index // 256, 7]
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, format="PNG")
        stored.append(images.store(project, images.prepare(buffer.getvalue(), f"{index}-{name}")))
    embeddings.compute(stored[0], version, overwrite=True)  # load the model once
    start = time.perf_counter()
    for image in stored:
        embeddings.compute(image, version, overwrite=True)
    elapsed = time.perf_counter() - start
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"{args.config} on {device} ({torch.get_num_threads()} threads): {len(stored)} images in "
        f"{elapsed:.1f} s = {len(stored) / elapsed:.2f} images/s"
    )


if __name__ == "__main__":
    main()
