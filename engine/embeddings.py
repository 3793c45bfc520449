"""Image embeddings: computed once per (image sha256, model version), kept on disk as float16
and in a small in-process LRU, so that a click only runs the light mask decoder.

Embeddings belong to their version: a new version reads and writes its own folder, so the old
ones are never used for it. GrabCut has no embedding; its sessions keep the decoded image.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from annotator.metrics import EMBEDDINGS_COMPUTED
from annotator.models import Image, ModelVersion
from engine import images as image_service
from engine import predictors

MEMORY_ENTRIES = 32


@dataclass(frozen=True)
class Loaded:
    """A predictor with the image set, and where its embedding came from."""

    predictor: Any
    source: str  # "memory", "disk", "computed" or "image" (GrabCut)
    seconds: float


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: tuple[str, str], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


memory = _LRU(MEMORY_ENTRIES)


def embedding_name(sha256: str, version: ModelVersion) -> str:
    return f"embeddings/v{version.pk}/{sha256[:2]}/{sha256}.npz"


def has_embedding(image: Image, version: ModelVersion) -> bool:
    return default_storage.exists(embedding_name(image.sha256, version))


def compute(image: Image, version: ModelVersion, *, overwrite: bool = False) -> bool:
    """Compute and store the embedding unless it is there; True when it was computed."""
    name = embedding_name(image.sha256, version)
    if not overwrite and default_storage.exists(name):
        return False
    predictor = predictors.make_predictor(version)
    predictor.set_image(image_service.read_rgb(image))
    _store(name, predictor.get_embedding())  # type: ignore[attr-defined]
    EMBEDDINGS_COMPUTED.labels("precompute").inc()
    return True


def _store(name: str, embedding: Any) -> None:
    if default_storage.exists(name):
        default_storage.delete(name)
    default_storage.save(name, ContentFile(embedding.to_bytes(half=True)))


def image_pixels(image: Image) -> Any:
    """The image's HxWx3 uint8 RGB pixels, decoded once and kept in the in-process LRU (for
    GrabCut, and for the crops of zoom-in)."""
    key = (image.sha256, "pixels")
    pixels = memory.get(key)
    if pixels is None:
        pixels = image_service.read_rgb(image)
        memory.put(key, pixels)
    return pixels


def ready_predictor(image: Image, version: ModelVersion | None) -> Loaded:
    """A predictor for the version with the image set: from memory, from disk, or computed
    now (and stored) when the precomputation has not reached this image yet."""
    start = time.perf_counter()
    predictor = predictors.make_predictor(version)
    if version is None:
        predictor.set_image(image_pixels(image))
        return Loaded(predictor, "image", time.perf_counter() - start)

    from model.predictor import ImageEmbedding

    key = (image.sha256, predictors.version_key(version))
    embedding = memory.get(key)
    source = "memory"
    if embedding is None:
        name = embedding_name(image.sha256, version)
        if default_storage.exists(name):
            with default_storage.open(name, "rb") as handle:
                embedding = ImageEmbedding.from_bytes(handle.read())
            source = "disk"
        else:
            predictor.set_image(image_service.read_rgb(image))
            embedding = predictor.get_embedding()  # type: ignore[attr-defined]
            _store(name, embedding)
            EMBEDDINGS_COMPUTED.labels("on_demand").inc()
            source = "computed"
        memory.put(key, embedding)
    predictor.set_embedding(embedding)  # type: ignore[attr-defined]
    return Loaded(predictor, source, time.perf_counter() - start)


def stored_embedding(image: Image, version: ModelVersion) -> Any | None:
    """The image's embedding for the version if one is in memory or stored, else None."""
    from model.predictor import ImageEmbedding

    embedding = memory.get((image.sha256, predictors.version_key(version)))
    if embedding is not None:
        return embedding
    name = embedding_name(image.sha256, version)
    if not default_storage.exists(name):
        return None
    with default_storage.open(name, "rb") as handle:
        return ImageEmbedding.from_bytes(handle.read())


def delete_for_images(shas: list[str], versions: list[ModelVersion]) -> int:
    """Remove the stored embeddings of these images; returns how many files went."""
    removed = 0
    for version in versions:
        for sha in shas:
            name = embedding_name(sha, version)
            if default_storage.exists(name):
                default_storage.delete(name)
                removed += 1
    return removed


def enqueue_precompute(project: Any, *, user: Any = None) -> Any:
    """Queue the job that embeds every image of the project for its promoted version.
    InvalidInput when GrabCut answers (nothing to embed); Conflict when already queued."""
    from engine import jobs
    from engine.errors import InvalidInput

    version = predictors.answering_version(project)
    if version is None:
        raise InvalidInput("no promoted model version with a checkpoint: GrabCut needs none")
    return jobs.enqueue(
        project, "embed_images", key=f"v{version.pk}", params={"version": version.pk}, user=user
    )
