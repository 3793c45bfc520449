"""Zoom-in: after the first click, run the model on a crop around the object.

A 512-pixel model sees a small object through a handful of embedding cells (an object of 5%
of an 854x480 frame is about 6x6 cells of 16 pixels), so its masks stop improving however
many corrective clicks land on the boundary. Zoom-in (RITM, Sofiiuk et al. 2022,
``isegm/inference/transforms/zoom_in.py``; used by every click-based method since) crops the
image around the current mask and the positive clicks, expanded by ``expansion`` and at least
``min_crop`` pixels a side, and embeds the crop at the full model input size. The crop is
kept while it still holds every positive click and the new region overlaps it (box IoU at
least ``recompute_iou``), so most clicks reuse the crop's embedding and cost one decoder pass.

``ZoomInPredictor`` wraps a ``SamPredictor`` and answers the same ``predict`` calls. Its
``low_res_logits`` are logits over the whole image, in the padded model-input frame (S x S,
S = the model's input size; SAM's own are S/4 a side): what it returns is what it takes back
as ``mask_input``, and a crop's fine logits survive the trip to the next click. The first
click of an object (``skip_clicks``) and boxes are answered on the whole image, and a crop
that would not enlarge the image by ``min_gain`` is not made. Outside the crop the mask is
empty, as in RITM: the crop always holds the object as far as the clicks and mask tell.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.predictor import ImageEmbedding, SamPredictor
from model.sam import Sam
from model.types import Prediction

#: Logit written where a frame has no source (outside the crop, the padding): "not object".
OUTSIDE_LOGIT = -20.0
_CROPS_KEPT = 4


@dataclass(frozen=True)
class ZoomSettings:
    """RITM's ``ZoomIn`` defaults (``expansion_ratio`` 1.4, ``min_crop_size`` 200,
    ``skip_clicks`` 1, ``recompute_thresh_iou`` 0.5), and no crop that enlarges less than
    1.25x."""

    expansion: float = 1.4
    min_crop: int = 200
    skip_clicks: int = 1
    recompute_iou: float = 0.5
    min_gain: float = 1.25


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in original pixels
#: A mask's extent read off the model-size logits, in original pixels (not whole ones).
FloatBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class _Frame:
    """Where an array of logits lies on the original image: array pixel (i, j) covers
    original x in [x0 + j / scale, x0 + (j + 1) / scale), and alike for y."""

    x0: float
    y0: float
    scale: float


def resample(
    logits: torch.Tensor,
    source: _Frame,
    valid: tuple[int, int],
    shape: tuple[int, int],
    target: _Frame,
) -> torch.Tensor:
    """CxHxW logits in ``source`` (rows ``< valid[0]`` and columns ``< valid[1]`` hold data,
    the rest is padding) -> Cx``shape`` in ``target``, bilinear; OUTSIDE_LOGIT where the
    source has no data."""
    h, w = shape
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / target.scale + target.y0
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / target.scale + target.x0
    # Into source pixel coordinates (centres at +0.5), then grid_sample's [-1, 1].
    sy = (ys - source.y0) * source.scale
    sx = (xs - source.x0) * source.scale
    inside = (sy >= 0) & (sy < valid[0])
    inside_x = (sx >= 0) & (sx < valid[1])
    gy = sy.clamp(0.5, valid[0] - 0.5) / logits.shape[-2] * 2 - 1
    gx = sx.clamp(0.5, valid[1] - 0.5) / logits.shape[-1] * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
    out = F.grid_sample(
        logits[None].float(), grid.to(logits.device), mode="bilinear", align_corners=False
    )[0]
    mask = (inside[:, None] & inside_x[None, :]).to(logits.device)
    return torch.where(mask, out, torch.full_like(out, OUTSIDE_LOGIT))


def box_iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def object_box(
    mask_box: FloatBox | None,
    positives: np.ndarray,
    image_size: tuple[int, int],
    settings: ZoomSettings,
) -> Box:
    """The crop for a mask's box and the positive clicks: their union, each side times
    ``expansion`` (at least ``min_crop``), clamped to the image (RITM's ``get_object_roi``)."""
    h, w = image_size
    xs = [float(x) for x in positives[:, 0]] + [float(x) + 1 for x in positives[:, 0]]
    ys = [float(y) for y in positives[:, 1]] + [float(y) + 1 for y in positives[:, 1]]
    if mask_box is not None:
        xs += [mask_box[0], mask_box[2]]
        ys += [mask_box[1], mask_box[3]]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = max((x1 - x0) * settings.expansion, settings.min_crop) / 2
    half_h = max((y1 - y0) * settings.expansion, settings.min_crop) / 2
    return (
        max(0, int(np.floor(cx - half_w))),
        max(0, int(np.floor(cy - half_h))),
        min(w, int(np.ceil(cx + half_w))),
        min(h, int(np.ceil(cy + half_h))),
    )


class ZoomInPredictor:
    """A ``SamPredictor`` that zooms in on the object after its first click (module doc).

    ``set_image`` embeds the whole image (and keeps its pixels for the crops); with
    ``set_embedding`` the pixels come from ``set_pixels``, which may take a function that
    loads them the first time a crop is needed (the whole-image embedding is often cached,
    the crops never are; an image annotated in one click is then never decoded).
    """

    def __init__(self, base: SamPredictor, settings: ZoomSettings | None = None) -> None:
        self.base = base
        self.crop = SamPredictor(base.model, device=base.device, bf16=base.bf16)
        self.settings = settings or ZoomSettings()
        self.size = base.model.image_size
        self._pixels: np.ndarray | None = None
        self._load_pixels: Callable[[], np.ndarray] | None = None
        self._crops: OrderedDict[Box, ImageEmbedding] = OrderedDict()
        self._crop_box: Box | None = None

    @property
    def model(self) -> Sam:
        return self.base.model

    # -- image ----------------------------------------------------------------------------

    def set_image(self, image: np.ndarray) -> None:
        self.base.set_image(image)
        self.set_pixels(image)

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        self.base.set_embedding(embedding)
        self._pixels = self._load_pixels = None
        self._forget_crops()

    def get_embedding(self) -> ImageEmbedding:
        return self.base.get_embedding()

    def set_pixels(self, image: np.ndarray | Callable[[], np.ndarray]) -> None:
        """The image's HxWx3 uint8 RGB pixels for the crops, or a function returning them
        (without pixels no crop is made)."""
        self._forget_crops()
        if callable(image):
            self._pixels, self._load_pixels = None, image
        else:
            self._pixels, self._load_pixels = self._checked(image), None

    def _checked(self, image: np.ndarray) -> np.ndarray:
        if tuple(image.shape[:2]) != self.base.original_size:
            raise ValueError(
                f"pixels are {image.shape[:2]}, the embedding is of a {self.base.original_size}"
                " image"
            )
        return image

    def _require_pixels(self) -> np.ndarray:
        if self._pixels is None:
            assert self._load_pixels is not None
            self._pixels = self._checked(self._load_pixels())
            self._load_pixels = None
        return self._pixels

    def _forget_crops(self) -> None:
        self._crops.clear()
        self._crop_box = None

    # -- frames ---------------------------------------------------------------------------

    def _full_frame(self) -> _Frame:
        h, w = self.base.original_size
        return _Frame(0.0, 0.0, self.size / max(h, w))

    def _full_valid(self) -> tuple[int, int]:
        return self.base.input_size

    # -- prompts --------------------------------------------------------------------------

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        **options: object,
    ) -> Prediction:
        """As ``SamPredictor.predict``; ``mask_input`` and the returned ``low_res_logits`` are
        this predictor's whole-image S x S logits (SAM's S/4 ones are accepted too)."""
        full_logits = self._whole_image_logits(mask_input)
        crop = self._choose_crop(point_coords, point_labels, box, full_logits)
        if crop is None:
            self._crop_box = None
            return self._predict_whole(
                point_coords, point_labels, box, full_logits, multimask_output, options
            )
        return self._predict_crop(
            crop, point_coords, point_labels, full_logits, multimask_output, options
        )

    def _whole_image_logits(self, mask_input: np.ndarray | None) -> torch.Tensor | None:
        if mask_input is None:
            return None
        logits = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
        logits = logits.reshape(1, *logits.shape[-2:])
        if logits.shape[-1] != self.size:
            # SAM's own low-res logits: the same frame, four times coarser.
            logits = F.interpolate(
                logits[None], (self.size, self.size), mode="bilinear", align_corners=False
            )[0]
        return logits

    def _choose_crop(
        self,
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        box: np.ndarray | None,
        full_logits: torch.Tensor | None,
    ) -> Box | None:
        has_pixels = self._pixels is not None or self._load_pixels is not None
        if not has_pixels or box is not None or point_coords is None:
            return None
        coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels).reshape(-1)
        if len(coords) <= self.settings.skip_clicks:
            return None
        positives = coords[labels == 1]
        if len(positives) == 0:
            return None
        mask_box = None if full_logits is None else self._logits_box(full_logits)
        h, w = self.base.original_size
        wanted = object_box(mask_box, positives, (h, w), self.settings)
        current = self._crop_box
        if (
            current is None
            or not _holds(current, positives)
            or box_iou(current, wanted) < self.settings.recompute_iou
        ):
            current = wanted
        gain = max(h, w) / max(current[2] - current[0], current[3] - current[1])
        if gain < self.settings.min_gain:
            return None
        self._crop_box = current
        return current

    def _logits_box(self, full_logits: torch.Tensor) -> FloatBox | None:
        valid_h, valid_w = self._full_valid()
        on = full_logits[0, :valid_h, :valid_w] > 0
        if not bool(on.any()):
            return None
        rows = torch.nonzero(on.any(dim=1)).flatten()
        cols = torch.nonzero(on.any(dim=0)).flatten()
        scale = self._full_frame().scale
        h, w = self.base.original_size
        return (
            int(cols[0]) / scale,
            int(rows[0]) / scale,
            min(w, (int(cols[-1]) + 1) / scale),
            min(h, (int(rows[-1]) + 1) / scale),
        )

    def _predict_whole(
        self,
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        box: np.ndarray | None,
        full_logits: torch.Tensor | None,
        multimask_output: bool,
        options: dict[str, object],
    ) -> Prediction:
        low = None
        if full_logits is not None:
            quarter = self.size // 4
            low = F.interpolate(
                full_logits[None], (quarter, quarter), mode="bilinear", align_corners=False
            )[0].numpy()
        out = self.base.predict(
            point_coords=point_coords,
            point_labels=point_labels,
            box=box,
            mask_input=low,
            multimask_output=multimask_output,
            **options,  # type: ignore[arg-type]
        )
        assert out.low_res_logits is not None
        logits = torch.as_tensor(out.low_res_logits)
        upsampled = F.interpolate(
            logits[None], (self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        return Prediction(out.masks, out.iou_predictions, upsampled.numpy())

    def _crop_embedding(self, crop: Box) -> None:
        embedding = self._crops.get(crop)
        if embedding is None:
            x0, y0, x1, y1 = crop
            self.crop.set_image(np.ascontiguousarray(self._require_pixels()[y0:y1, x0:x1]))
            self._crops[crop] = self.crop.get_embedding()
            while len(self._crops) > _CROPS_KEPT:
                self._crops.popitem(last=False)
        else:
            self._crops.move_to_end(crop)
            self.crop.set_embedding(embedding)

    def _predict_crop(
        self,
        crop: Box,
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        full_logits: torch.Tensor | None,
        multimask_output: bool,
        options: dict[str, object],
    ) -> Prediction:
        self._crop_embedding(crop)
        x0, y0, x1, y1 = crop
        coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels).reshape(-1)
        # Clicks outside the crop are negative ones far from the object: they cannot be shown
        # to a model that sees only the crop.
        keep = (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0)
        keep &= coords[:, 1] <= y1
        local = coords[keep] - np.array([x0, y0], dtype=np.float64)
        crop_scale = self.size / max(x1 - x0, y1 - y0)
        crop_valid = self.crop.input_size
        quarter = self.size // 4
        low_frame = _Frame(float(x0), float(y0), crop_scale / 4)
        low_valid = (-(-crop_valid[0] // 4), -(-crop_valid[1] // 4))
        low = None
        if full_logits is not None:
            low = resample(
                full_logits, self._full_frame(), self._full_valid(), (quarter, quarter), low_frame
            )
            low[:, low_valid[0] :, :] = OUTSIDE_LOGIT
            low[:, :, low_valid[1] :] = OUTSIDE_LOGIT
        out = self.crop.predict(
            point_coords=local,
            point_labels=labels[keep],
            mask_input=None if low is None else low.numpy(),
            multimask_output=multimask_output,
            **options,  # type: ignore[arg-type]
        )
        h, w = self.base.original_size
        masks = np.zeros((out.masks.shape[0], h, w), dtype=bool)
        masks[:, y0:y1, x0:x1] = out.masks
        assert out.low_res_logits is not None
        crop_logits = torch.as_tensor(out.low_res_logits)
        whole = resample(
            crop_logits, low_frame, low_valid, (self.size, self.size), self._full_frame()
        )
        return Prediction(masks, out.iou_predictions, whole.numpy())


def _holds(crop: Box, points: np.ndarray) -> bool:
    x0, y0, x1, y1 = crop
    # Inclusive: a click on the image's last column (x = width) is inside a crop ending there.
    return bool(
        np.all((points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0))
        and np.all(points[:, 1] <= y1)
    )
