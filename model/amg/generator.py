"""SA-1B's fully automatic stage: masks for a whole image from a grid of single-point prompts.

Each point of a grid over the image (and over zoomed crops of it) prompts the model for three
masks; a mask is kept when the model trusts it, when it is stable under a shift of the logit
cut-off, and when no better mask already covers the same box; masks cut by a crop's inner
edge are left to the neighbouring crop; small islands and holes are then cleaned. This is the
procedure of Meta's ``SamAutomaticMaskGenerator``, on our ``SamPredictor``, with two changes
of substance: an image where nothing survives gives an empty list (DECISIONS 12a; Meta's
generator crashes there once crops are on), and masks are dropped whose largest part is under
``min_largest_region_area`` px or that cover ``max_mask_area_fraction`` of the image or more
(SA-1B's final filters, which Meta's generator does not apply).

Memory stays bounded by ``points_per_batch``: predicted IoU is filtered on the low-resolution
output before any mask is upsampled, candidates are held as run lengths, and only the masks
finally kept become full-size bool arrays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from model.amg.filters import (
    clean_mask,
    keep_by_area,
    largest_region_area,
    masks_to_boxes,
    near_crop_edge,
    nms,
    stability_score,
)
from model.amg.grid import Crop, crop_boxes, layer_point_grids, uncrop_boxes, uncrop_mask
from model.amg.runs import decode_runs, encode_mask, encode_runs, runs_area
from model.predictor import ImageEmbedding, SamPredictor
from model.sam import Sam


@dataclass(frozen=True, kw_only=True)
class AMGConfig:
    """Every knob of the generator; the defaults are the paper's filters on one 32x32 layer.

    Use ``AMGConfig.preset("sa1b")`` for the paper's full setting and pass overrides as
    keywords, e.g. ``AMGConfig.preset("sa1b", pred_iou_thresh=0.7)`` for a project whose
    model is calibrated differently (DECISIONS 12a).

    points_per_side: points per side of the layer-0 grid.
    points_per_batch: prompts decoded at once; bounds memory (3 masks each at crop size).
    pred_iou_thresh: keep masks with predicted IoU > this (0 or less: no test).
    stability_score_thresh: keep masks with stability >= this (0 or less: no test).
    stability_score_offset: the logit shift either side of the cut-off for stability.
    box_nms_thresh: box IoU above which the lower-IoU mask of one crop is dropped.
    crop_n_layers: zoom layers; layer i has 2^i x 2^i crops.
    crop_nms_thresh: box IoU above which masks of different crops are deduplicated, masks
      from smaller crops preferred.
    crop_overlap_ratio: overlap of layer-1 crops as a fraction of the image's short side.
    crop_n_points_downscale_factor: layer i has points_per_side / factor^i points per side.
    crop_edge_tolerance: px within which a mask box "touches" an inner crop edge.
    min_mask_region_area: islands and holes under this many px are cleaned (0: no clean-up).
    min_largest_region_area: drop masks whose largest part is under this many px.
    max_mask_area_fraction: drop masks covering this fraction of the image or more.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    crop_edge_tolerance: float = 20.0
    min_mask_region_area: int = 100
    min_largest_region_area: int = 100
    max_mask_area_fraction: float = 0.95

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The paper: 32x32 on the image, 16x16 on 2x2 crops, 8x8 on 4x4 crops.
        "sa1b": {"crop_n_layers": 2, "crop_n_points_downscale_factor": 2},
        # One layer, no crops: 1 encoder pass instead of 21, a third of the prompts.
        "fast": {"crop_n_layers": 0},
    }

    def __post_init__(self) -> None:
        positive = ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        non_negative = (
            "stability_score_offset",
            "crop_n_layers",
            "crop_edge_tolerance",
            "min_mask_region_area",
            "min_largest_region_area",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("box_nms_thresh", "crop_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {self.crop_overlap_ratio}")
        if self.max_mask_area_fraction <= 0:
            raise ValueError("max_mask_area_fraction must be > 0")
        deepest = self.points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers
        if int(deepest) < 1:
            raise ValueError(
                f"{self.points_per_side} points per side downscaled by "
                f"{self.crop_n_points_downscale_factor} per layer leaves no point in layer "
                f"{self.crop_n_layers}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AMGConfig:
        """The named setting (``sa1b`` or ``fast``) with any fields replaced."""
        try:
            base = cls.PRESETS[name]
        except KeyError:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(cls.PRESETS)}") from None
        return cls(**{**base, **overrides})

    def replace(self, **overrides: Any) -> AMGConfig:
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True, eq=False)
class GeneratedMask:
    """One kept mask with SA-1B's annotation fields (the engine RLE-encodes ``mask``).

    mask: HxW bool at the original image size.
    bbox: [x, y, w, h] of the mask's pixel extent (what pycocotools' ``toBbox`` gives).
    area: pixels in the mask.
    point_coords: [[x, y]], the prompt, in original-image pixels.
    crop_box: [x, y, w, h] of the crop the mask was predicted on.
    """

    mask: np.ndarray
    bbox: list[float]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[int]


@dataclass
class _Candidates:
    """Masks still in the running, one row per mask; masks as run lengths over ``frames``."""

    boxes: torch.Tensor  # Nx4 int64 XYXY, image frame, CPU
    iou: torch.Tensor  # N float32
    stability: torch.Tensor  # N float32
    points: np.ndarray  # Nx2 float64 (x, y), image frame
    crops: list[Crop]  # where each mask was predicted
    frames: list[Crop]  # the region each mask's runs cover
    runs: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.runs)

    @classmethod
    def empty(cls) -> _Candidates:
        return cls(
            boxes=torch.zeros((0, 4), dtype=torch.int64),
            iou=torch.zeros(0),
            stability=torch.zeros(0),
            points=np.zeros((0, 2)),
            crops=[],
            frames=[],
            runs=[],
        )

    @classmethod
    def concat(cls, parts: list[_Candidates]) -> _Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            boxes=torch.cat([p.boxes for p in parts]),
            iou=torch.cat([p.iou for p in parts]),
            stability=torch.cat([p.stability for p in parts]),
            points=np.concatenate([p.points for p in parts]),
            crops=[c for p in parts for c in p.crops],
            frames=[f for p in parts for f in p.frames],
            runs=[r for p in parts for r in p.runs],
        )

    def select(self, index: torch.Tensor) -> _Candidates:
        """Rows ``index`` (int64 indices), in that order."""
        idx = index.cpu().tolist()
        return _Candidates(
            boxes=self.boxes[idx],
            iou=self.iou[idx],
            stability=self.stability[idx],
            points=self.points[idx].reshape(-1, 2),
            crops=[self.crops[i] for i in idx],
            frames=[self.frames[i] for i in idx],
            runs=[self.runs[i] for i in idx],
        )

    def full_mask(self, i: int, image_size: tuple[int, int]) -> np.ndarray:
        frame = self.frames[i]
        return uncrop_mask(
            decode_runs(self.runs[i], (frame.height, frame.width)), frame, image_size
        )


class AutomaticMaskGenerator:
    """Masks for a whole image with no human prompt (SA-1B's fully automatic stage).

    Runs on the device of the predictor's model, under ``torch.inference_mode``. The
    predictor's current image is replaced while generating and reset afterwards.
    """

    def __init__(self, predictor: SamPredictor | Sam, config: AMGConfig | None = None) -> None:
        if isinstance(predictor, Sam):
            predictor = SamPredictor(predictor, device=predictor.device)
        self.predictor = predictor
        self.config = config if config is not None else AMGConfig.preset("sa1b")
        cfg = self.config
        self.point_grids = layer_point_grids(
            cfg.points_per_side, cfg.crop_n_layers, cfg.crop_n_points_downscale_factor
        )

    def generate(
        self, image: np.ndarray, *, embedding: ImageEmbedding | None = None
    ) -> list[GeneratedMask]:
        """Kept masks of an HxWx3 uint8 RGB image, best predicted IoU first; maybe none.

        embedding: the whole image's embedding from this model (e.g. the engine's cache),
          which saves the layer-0 encoder pass; crops are always embedded afresh.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        image_size = (int(image.shape[0]), int(image.shape[1]))
        if embedding is not None and tuple(embedding.original_size) != image_size:
            raise ValueError(
                f"embedding is of a {embedding.original_size} image, this one is {image_size}"
            )
        cfg = self.config
        crops = crop_boxes(image_size, cfg.crop_n_layers, cfg.crop_overlap_ratio)
        with torch.inference_mode():
            try:
                parts = [
                    self._process_crop(image, crop, embedding if crop.layer == 0 else None)
                    for crop in crops
                ]
            finally:
                self.predictor.reset_image()
            candidates = _Candidates.concat(parts)
            if len(crops) > 1 and len(candidates):
                # The same object seen from several crops: keep the most zoomed-in view.
                areas = torch.tensor([c.area for c in candidates.crops], dtype=torch.float64)
                keep = nms(candidates.boxes, 1.0 / areas, cfg.crop_nms_thresh)
                candidates = candidates.select(keep)
            candidates = self._clean(candidates, image_size)
            return self._records(candidates, image_size)

    # -- one crop -------------------------------------------------------------------------

    def _process_crop(
        self, image: np.ndarray, crop: Crop, embedding: ImageEmbedding | None
    ) -> _Candidates:
        """Prompt every grid point of one crop; candidates deduplicated within the crop."""
        x0, y0, x1, y1 = crop.box
        if embedding is not None:
            self.predictor.set_embedding(embedding)
        else:
            self.predictor.set_image(image[y0:y1, x0:x1])
        points = self.point_grids[crop.layer] * np.array([crop.width, crop.height], dtype=float)
        batch = self.config.points_per_batch
        parts = [
            self._process_batch(points[start : start + batch], crop, image.shape[:2])
            for start in range(0, len(points), batch)
        ]
        candidates = _Candidates.concat(parts)
        if not len(candidates):
            return candidates
        return candidates.select(nms(candidates.boxes, candidates.iou, self.config.box_nms_thresh))

    def _process_batch(
        self,
        points: np.ndarray,
        crop: Crop,
        image_size: tuple[int, ...],
    ) -> _Candidates:
        """Decode one batch of single-point prompts (points: Bx2 in the crop's frame) and
        keep the masks that pass the per-mask filters."""
        cfg, predictor = self.config, self.predictor
        model, device = predictor.model, predictor.device
        crop_size = (crop.height, crop.width)
        coords = predictor.transform.apply_coords(points, crop_size)
        coords_t = torch.as_tensor(coords, dtype=torch.float32, device=device)[:, None, :]
        labels_t = torch.ones((len(points), 1), dtype=torch.int, device=device)
        # BxKxhxw, BxK; K = 3, or 1 for HQ-SAM (its best of three plus the HQ mask).
        low_res, iou = predictor.decode_torch(points=(coords_t, labels_t), multimask_output=True)
        per_point = iou.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten().float()
        point_index = torch.arange(len(points), device=device).repeat_interleave(per_point)

        # Predicted IoU comes with the low-res output: filter before paying for upsampling.
        if cfg.pred_iou_thresh > 0:
            keep = iou > cfg.pred_iou_thresh
            low_res, iou, point_index = low_res[keep], iou[keep], point_index[keep]
        logits = model.postprocess_masks(low_res[:, None], predictor.input_size, crop_size)[:, 0]
        del low_res
        stability = stability_score(logits, model.mask_threshold, cfg.stability_score_offset)
        if cfg.stability_score_thresh > 0:
            keep = stability >= cfg.stability_score_thresh
            logits, iou, stability = logits[keep], iou[keep], stability[keep]
            point_index = point_index[keep]
        masks = logits > model.mask_threshold
        del logits

        boxes = uncrop_boxes(masks_to_boxes(masks), crop)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        keep = nonempty & ~near_crop_edge(
            boxes, crop.box, (int(image_size[0]), int(image_size[1])), cfg.crop_edge_tolerance
        )
        n_kept = int(keep.sum())
        chosen = point_index[keep].cpu().numpy()
        return _Candidates(
            boxes=boxes[keep].cpu(),
            iou=iou[keep].cpu(),
            stability=stability[keep].cpu(),
            points=(points[chosen] + np.array(crop.box[:2], dtype=float)).reshape(-1, 2),
            crops=[crop] * n_kept,
            frames=[crop] * n_kept,
            runs=encode_runs(masks[keep]),
        )

    # -- whole image ----------------------------------------------------------------------

    def _clean(self, candidates: _Candidates, image_size: tuple[int, int]) -> _Candidates:
        """Clean small islands and holes, apply the final area filters, and deduplicate again
        (cleaning can make two masks alike), preferring masks that needed no cleaning."""
        cfg = self.config
        image_area = image_size[0] * image_size[1]
        whole = Crop((0, 0, image_size[1], image_size[0]), 0)
        survivors: list[int] = []
        untouched: list[float] = []
        for i in range(len(candidates)):
            mask = candidates.full_mask(i, image_size)
            changed, largest = False, None
            if cfg.min_mask_region_area > 0:
                mask, changed, largest = clean_mask(mask, cfg.min_mask_region_area)
            elif cfg.min_largest_region_area > 0:
                largest = largest_region_area(mask)
            area = int(mask.sum())
            if largest is None:  # the test is off; any value that passes it will do
                largest = area
            if area == 0 or not keep_by_area(
                area=area,
                largest_region=largest,
                image_area=image_area,
                min_largest=cfg.min_largest_region_area,
                max_fraction=cfg.max_mask_area_fraction,
            ):
                continue
            if changed:
                candidates.runs[i] = encode_mask(mask)
                candidates.frames[i] = whole
                candidates.boxes[i] = masks_to_boxes(torch.from_numpy(mask)[None])[0]
            survivors.append(i)
            untouched.append(0.0 if changed else 1.0)
        candidates = candidates.select(torch.tensor(survivors, dtype=torch.int64))
        if cfg.min_mask_region_area > 0 and len(candidates):
            # Equal scores keep their order: the crop-NMS order (zoomed crops, then IoU).
            threshold = max(cfg.box_nms_thresh, cfg.crop_nms_thresh)
            keep = nms(candidates.boxes, torch.tensor(untouched, dtype=torch.float64), threshold)
            candidates = candidates.select(keep)
        return candidates

    def _records(self, candidates: _Candidates, image_size: tuple[int, int]) -> list[GeneratedMask]:
        order = torch.sort(candidates.iou, descending=True, stable=True).indices.tolist()
        records = []
        for i in order:
            x0, y0, x1, y1 = (int(v) for v in candidates.boxes[i])
            records.append(
                GeneratedMask(
                    mask=candidates.full_mask(i, image_size),
                    bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    area=runs_area(candidates.runs[i]),
                    predicted_iou=float(candidates.iou[i]),
                    stability_score=float(candidates.stability[i]),
                    point_coords=[[float(v) for v in candidates.points[i]]],
                    crop_box=candidates.crops[i].xywh,
                )
            )
        return records
