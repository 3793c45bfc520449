"""Stage 1, assisted-manual: an annotator's clicks answered with candidate masks.

A ClickSession holds one image's ready predictor and the low-res logits of its recent answers,
kept server-side under short handles: the page sends a handle back with its next click, and
the model refines that mask instead of starting over.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings

from annotator.models import Image, ModelVersion
from engine import embeddings, predictors, rle
from engine.errors import InvalidInput

LOGITS_KEPT = 16
MAX_POINTS = 64


@dataclass
class Prompt:
    points: np.ndarray  # Nx2 float, (x, y) in image pixels
    labels: np.ndarray  # N int, 1 positive, 0 negative
    box: np.ndarray | None  # 4 float, x0 y0 x1 y1
    mask_handle: str | None
    multimask: bool
    hq: bool | None = None  # HQ-SAM versions: False answers with the base model (no HQ token)


@dataclass
class Candidate:
    counts: str  # COCO compressed RLE of the mask at the image size
    score: float | None  # predicted IoU; None when the predictor has none (GrabCut)
    area: int


@dataclass
class Answer:
    candidates: list[Candidate]
    handle: str | None
    milliseconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "masks": [
                {"counts": c.counts, "score": c.score, "area": c.area} for c in self.candidates
            ],
            "handle": self.handle,
            "ms": round(self.milliseconds, 2),
        }


@dataclass
class ClickSession:
    image: Image
    version: ModelVersion | None
    predictor: Any
    embedding_source: str
    open_seconds: float
    _logits: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)

    @property
    def model_name(self) -> str:
        return predictors.version_key(self.version)

    @property
    def supports_hq(self) -> bool:
        """The version has HQ-SAM's head: the page offers its "HQ" toggle."""
        model = getattr(self.predictor, "model", None)
        return bool(getattr(model, "is_hq", False))

    def predict(self, prompt: Prompt) -> Answer:
        start = time.perf_counter()
        mask_input: np.ndarray | None = None
        if prompt.mask_handle is not None:
            kept = self._logits.get(prompt.mask_handle)
            if kept is None:
                raise InvalidInput(f"unknown or expired mask handle {prompt.mask_handle!r}")
            mask_input = kept.astype(np.float32)
        options: dict[str, Any] = {}
        if prompt.hq is not None:
            if not self.supports_hq:
                raise InvalidInput("this model version has no HQ head: leave out hq")
            options["sam_only"] = not prompt.hq
        prediction = self.predictor.predict(
            point_coords=prompt.points if len(prompt.points) else None,
            point_labels=prompt.labels if len(prompt.labels) else None,
            box=prompt.box,
            mask_input=mask_input,
            multimask_output=prompt.multimask,
            **options,
        )
        order = _best_first(prediction.iou_predictions)
        candidates = []
        for index in order:
            mask = prediction.masks[index]
            score = float(prediction.iou_predictions[index])
            candidates.append(
                Candidate(
                    counts=rle.from_mask(mask).counts,
                    score=None if math.isnan(score) else round(score, 4),
                    area=int(mask.sum()),
                )
            )
        handle = None
        if prediction.low_res_logits is not None:
            handle = secrets.token_hex(4)
            # One handle per answer; the page names which candidate it continues from by
            # sending "<handle>:<index>".
            for rank, index in enumerate(order):
                self._remember(f"{handle}:{rank}", prediction.low_res_logits[index][None])
        return Answer(candidates, handle, (time.perf_counter() - start) * 1000)

    def _remember(self, key: str, logits: np.ndarray) -> None:
        # float16: zoom-in's logits are 1xSxS (1 MB in float32 at 512 px), 48 of them kept.
        self._logits[key] = logits.astype(np.float16)
        while len(self._logits) > LOGITS_KEPT * 3:
            self._logits.popitem(last=False)


def _best_first(scores: np.ndarray) -> list[int]:
    values = [(-(s if not math.isnan(s) else -1.0), i) for i, s in enumerate(scores.tolist())]
    return [i for _, i in sorted(values)]


def open_session(image: Image, version: ModelVersion | None) -> ClickSession:
    """Ready the version's predictor on this image (computing the embedding now if it is
    missing); ``version`` None means GrabCut (see ``predictors.answering_version``)."""
    loaded = embeddings.ready_predictor(image, version)
    predictor = loaded.predictor
    if version is not None and settings.MASKLOOP_ZOOM_IN:
        from model.zoom import ZoomInPredictor

        predictor = ZoomInPredictor(predictor)
        predictor.set_pixels(lambda: embeddings.image_pixels(image))
    return ClickSession(image, version, predictor, loaded.source, loaded.seconds)


def parse_prompt(message: dict[str, Any], image: Image) -> Prompt:
    """Validate a prompt message; InvalidInput tells what is wrong."""
    raw_points = message.get("points") or []
    raw_labels = message.get("labels") or []
    if not isinstance(raw_points, list) or not isinstance(raw_labels, list):
        raise InvalidInput("points and labels must be lists")
    if len(raw_points) != len(raw_labels):
        raise InvalidInput("points and labels must have the same length")
    if len(raw_points) > MAX_POINTS:
        raise InvalidInput(f"at most {MAX_POINTS} points")
    try:
        points = np.asarray(raw_points, dtype=np.float32).reshape(-1, 2)
        labels = np.asarray(raw_labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidInput("points must be [[x, y], ...] numbers, labels 0 or 1") from None
    if not np.isfinite(points).all():
        raise InvalidInput("points must be finite numbers")
    if len(labels) and not np.isin(labels, (0, 1)).all():
        raise InvalidInput("labels must be 1 (positive) or 0 (negative)")
    if len(points) and (
        (points[:, 0] < 0).any()
        or (points[:, 1] < 0).any()
        or (points[:, 0] > image.width).any()
        or (points[:, 1] > image.height).any()
    ):
        raise InvalidInput(f"points must lie inside the image ({image.width}x{image.height})")
    box = None
    if message.get("box") is not None:
        try:
            box = np.asarray(message["box"], dtype=np.float32).reshape(4)
        except (TypeError, ValueError):
            raise InvalidInput("box must be [x0, y0, x1, y1]") from None
        if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            raise InvalidInput("box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        box = np.clip(box, 0, [image.width, image.height, image.width, image.height]).astype(
            np.float32
        )
    if not len(points) and box is None:
        raise InvalidInput("give at least one point or a box")
    handle = message.get("mask_input")
    if handle is not None and not isinstance(handle, str):
        raise InvalidInput("mask_input must be a handle string from a previous answer")
    hq = message.get("hq")
    if hq is not None and not isinstance(hq, bool):
        raise InvalidInput("hq must be true or false")
    return Prompt(points, labels, box, handle, bool(message.get("multimask", True)), hq)
