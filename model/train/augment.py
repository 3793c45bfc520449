"""Training-time sampling from the COCO sets: instances, large-scale jitter, flips, colours.

One training sample is one image with up to K of its instances, already at the model's square
input: the image is resized (large-scale jitter: a random factor of the "long side = S" scale),
randomly cropped when it overflows S, flipped, colour-jittered, and padded bottom/right as
``Sam.preprocess`` pads at inference (the valid region stays top-left). Padding is filled with
the model's pixel mean, so ``Sam.preprocess`` maps it to exactly 0, the value it pads with
itself: the padded SxS image is what the encoder sees at inference for the same pixels.

Everything random comes from a ``numpy.random.Generator`` the caller passes in; the training
loop derives it from (seed, global sample index), so a resumed run sees exactly the samples a
straight run would have seen, whatever the number of data-loader workers.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from model.sam import PIXEL_MEAN
from model.train.data import CocoAnnotation, CocoImage, load_coco_set

# cv2.resize resamples at most 4 channels at once with area interpolation.
_CV_MAX_CHANNELS = 4


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """How training samples are drawn.

    image_size: S, the model's square input side.
    low_res_size: side of the decoder's low-res logits (4x the embedding side, S / 4).
    max_instances: K, instances kept per image (drawn uniformly without replacement).
    min_area: instances smaller than this (pixels at the input resolution, after jitter) are
        dropped; the paper trains on masks of all sizes, this only removes specks.
    scale_range: large-scale jitter, a factor of the scale that makes the long side S.
    flip_prob: probability of a horizontal flip.
    colour_prob: probability of applying colour jitter at all.
    brightness, contrast, saturation: jitter strengths (factor drawn in [1 - v, 1 + v]).
    pixel_mean: the model's per-channel mean on the 0-255 scale (padding value).
    """

    image_size: int
    low_res_size: int
    max_instances: int = 16
    min_area: int = 64
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    colour_prob: float = 0.8
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN

    def __post_init__(self) -> None:
        if self.image_size % self.low_res_size:
            raise ValueError(
                f"low_res_size {self.low_res_size} must divide image_size {self.image_size}"
            )


@dataclass(frozen=True)
class TrainImage:
    """One training image and its usable annotations (crowd regions and empty masks removed)."""

    set_name: str
    image: CocoImage
    annotations: tuple[CocoAnnotation, ...]


@dataclass
class TrainSample:
    """One augmented image with K of its instances, at the model's input resolution.

    image: 3xSxS float32 RGB on the 0-255 scale, padded with the pixel mean (feed it to
        ``Sam.encode_image``, which normalises).
    input_size: (h, w) of the valid (non-padded) region, top-left.
    masks: KxSxS bool targets at the input resolution (False in the padding).
    low_res_masks: KxLxL float32 in [0, 1], L = ``low_res_size``: the fraction of each
        low-res cell covered by the mask (exact average pooling of ``masks``).
    """

    image: torch.Tensor
    input_size: tuple[int, int]
    masks: torch.Tensor
    low_res_masks: torch.Tensor
    set_name: str = ""
    image_id: int = -1
    annotation_ids: list[int] = field(default_factory=list)


@dataclass
class TrainBatch:
    """Several samples with their instances concatenated (M = sum of the K's).

    images: Bx3xSxS float32 0-255. image_index: M long, the image of each instance.
    masks: MxSxS bool. low_res_masks: MxLxL float32.
    """

    images: torch.Tensor
    image_index: torch.Tensor
    masks: torch.Tensor
    low_res_masks: torch.Tensor
    input_sizes: list[tuple[int, int]]

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_masks(self) -> int:
        return int(self.masks.shape[0])

    def pin_memory(self) -> TrainBatch:
        """Page-locked copies, for fast asynchronous copies to the GPU (DataLoader hook)."""
        return TrainBatch(
            images=self.images.pin_memory(),
            image_index=self.image_index.pin_memory(),
            masks=self.masks.pin_memory(),
            low_res_masks=self.low_res_masks.pin_memory(),
            input_sizes=self.input_sizes,
        )

    def to(self, device: torch.device | str) -> TrainBatch:
        """The same batch on ``device`` (non-blocking from pinned memory on CUDA)."""
        return TrainBatch(
            images=self.images.to(device, non_blocking=True),
            image_index=self.image_index.to(device, non_blocking=True),
            masks=self.masks.to(device, non_blocking=True),
            low_res_masks=self.low_res_masks.to(device, non_blocking=True),
            input_sizes=self.input_sizes,
        )


def collate(samples: Sequence[TrainSample]) -> TrainBatch:
    """Stack images, concatenate instances (a DataLoader ``collate_fn``)."""
    index = [torch.full((s.masks.shape[0],), i, dtype=torch.long) for i, s in enumerate(samples)]
    return TrainBatch(
        images=torch.stack([s.image for s in samples]),
        image_index=torch.cat(index),
        masks=torch.cat([s.masks for s in samples]),
        low_res_masks=torch.cat([s.low_res_masks for s in samples]),
        input_sizes=[s.input_size for s in samples],
    )


# --------------------------------------------------------------------------- collecting


def collect_train_images(
    root: Path | str,
    sets: Sequence[str],
    *,
    split: str = "train",
    holdout: Sequence[str] = (),
) -> list[TrainImage]:
    """The images of ``split`` of each set under ``root``, minus the ``holdout`` sets.

    Validation images (splits.json) are never returned for ``split="train"``; images without a
    usable annotation are skipped. Order: sets as given, image ids ascending.
    """
    root = Path(root)
    images: list[TrainImage] = []
    for name in sets:
        if name in holdout:
            continue
        coco_set = load_coco_set(root / name)
        for image_id in coco_set.image_ids(split):  # type: ignore[arg-type]
            anns = tuple(
                a for a in coco_set.annotations_of(image_id) if not a.iscrowd and _has_pixels(a)
            )
            if anns:
                images.append(TrainImage(name, coco_set.images[image_id], anns))
    return images


def _has_pixels(ann: CocoAnnotation) -> bool:
    """False for annotations that certainly decode to an empty mask."""
    if isinstance(ann.segmentation, list):
        return any(len(p) >= 6 for p in ann.segmentation)
    return ann.area != 0.0 or ann.bbox[2] * ann.bbox[3] > 0


# --------------------------------------------------------------------------- augmenting


def large_scale_jitter(
    image: np.ndarray,
    masks: np.ndarray,
    *,
    image_size: int,
    scale: float,
    flip: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``scale`` x (S / long side), crop a random SxS window if larger, flip.

    Arguments:
        image: HxWx3 uint8 RGB.
        masks: KxHxW bool.
        scale: jitter factor (1.0 = long side exactly S).
        flip: mirror left-right.
        rng: draws the crop offset.

    Returns:
        image h'xw'x3 uint8 and masks Kxh'xw' bool, h', w' <= S, not yet padded.
    """
    h, w = image.shape[:2]
    factor = scale * image_size / max(h, w)
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    # Area averaging when shrinking avoids aliasing (Pillow's bilinear, used at inference by
    # ResizeLongestSide, is antialiased too).
    interp = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    y0 = int(rng.integers(0, new_h - image_size + 1)) if new_h > image_size else 0
    x0 = int(rng.integers(0, new_w - image_size + 1)) if new_w > image_size else 0
    y1, x1 = min(new_h, y0 + image_size), min(new_w, x0 + image_size)

    out_image = cv2.resize(image, (new_w, new_h), interpolation=interp)[y0:y1, x0:x1]
    out_masks = np.zeros((masks.shape[0], y1 - y0, x1 - x0), dtype=bool)
    for start in range(0, masks.shape[0], _CV_MAX_CHANNELS):
        # Masks resized 4 at a time, as channels; resampled as 0/255 and thresholded
        # at half so that a mask's area scales with the image (nearest would jitter edges).
        chunk = np.ascontiguousarray(
            masks[start : start + _CV_MAX_CHANNELS].transpose(1, 2, 0), dtype=np.uint8
        )
        resized = cv2.resize(chunk * 255, (new_w, new_h), interpolation=interp)
        resized = resized.reshape(new_h, new_w, -1)[y0:y1, x0:x1]
        out_masks[start : start + chunk.shape[2]] = resized.transpose(2, 0, 1) >= 128
    if flip:
        out_image = out_image[:, ::-1]
        out_masks = out_masks[:, :, ::-1]
    return np.ascontiguousarray(out_image), np.ascontiguousarray(out_masks)


def colour_jitter(
    image: np.ndarray,
    *,
    brightness: float,
    contrast: float,
    saturation: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Random brightness, contrast and saturation, in random order (torchvision's recipe).

    image: HxWx3 uint8 RGB -> HxWx3 uint8 RGB.
    """
    x = image.astype(np.float32)
    grey_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    for op in rng.permutation(3):
        if op == 0 and brightness > 0:
            x = x * rng.uniform(1 - brightness, 1 + brightness)
        elif op == 1 and contrast > 0:
            mean = float((x @ grey_weights).mean())
            x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
        elif op == 2 and saturation > 0:
            grey = (x @ grey_weights)[..., None]
            x = (x - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
        x = np.clip(x, 0.0, 255.0)
    return (x + 0.5).astype(np.uint8)


def pad_to_input(
    image: np.ndarray, masks: np.ndarray, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad bottom/right to SxS and make the low-res targets.

    Arguments:
        image: hxwx3 uint8, masks: Kxhxw bool, h, w <= S.

    Returns:
        image 3xSxS float32 0-255 (padding = pixel mean), masks KxSxS bool,
        low-res masks KxLxL float32 (covered fraction of each cell).
    """
    s, h, w = cfg.image_size, image.shape[0], image.shape[1]
    canvas = np.empty((s, s, 3), dtype=np.float32)
    canvas[...] = np.asarray(cfg.pixel_mean, dtype=np.float32)
    canvas[:h, :w] = image
    full = np.zeros((masks.shape[0], s, s), dtype=bool)
    full[:, :h, :w] = masks
    f, lr = s // cfg.low_res_size, cfg.low_res_size
    low = full.reshape(-1, lr, f, lr, f).mean(axis=(2, 4), dtype=np.float32)
    return (
        torch.from_numpy(canvas).permute(2, 0, 1).contiguous(),
        torch.from_numpy(full),
        torch.from_numpy(np.ascontiguousarray(low)),
    )


def augment(
    image: np.ndarray,
    masks: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    *,
    jitter: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jitter, crop, flip and colour one image with its masks; keep instances >= min_area.

    Arguments:
        image: HxWx3 uint8 RGB; masks: KxHxW bool.
        jitter: False = plain resize to the long side S, no flip, no colour (a fallback).

    Returns:
        image h'xw'x3 uint8, masks K'xh'xw' bool of the instances kept, and their indices
        into the input masks (K' <= K, not yet subsampled to ``max_instances``).
    """
    lo, hi = cfg.scale_range
    scale = float(rng.uniform(lo, hi)) if jitter else 1.0
    flip = jitter and bool(rng.random() < cfg.flip_prob)
    out_image, out_masks = large_scale_jitter(
        image, masks, image_size=cfg.image_size, scale=scale, flip=flip, rng=rng
    )
    if jitter and rng.random() < cfg.colour_prob:
        out_image = colour_jitter(
            out_image,
            brightness=cfg.brightness,
            contrast=cfg.contrast,
            saturation=cfg.saturation,
            rng=rng,
        )
    areas = out_masks.reshape(out_masks.shape[0], -1).sum(axis=1)
    keep = np.flatnonzero(areas >= cfg.min_area)
    return out_image, out_masks[keep], keep


def make_sample(
    item: TrainImage, cfg: AugmentConfig, rng: np.random.Generator, *, attempts: int = 3
) -> TrainSample:
    """Load, augment and subsample one training image.

    A jitter that leaves no instance of ``min_area`` (e.g. a crop missing every object) is
    redrawn up to ``attempts`` times, then the image is used plainly resized; if even then
    every instance is smaller than ``min_area`` the largest one is kept, so a sample always
    has at least one instance.
    """
    image = item.image.load()
    h, w = image.shape[:2]
    masks = np.stack([ann.decode(h, w) for ann in item.annotations])
    for attempt in range(attempts + 1):
        jitter = attempt < attempts
        out_image, out_masks, keep = augment(image, masks, cfg, rng, jitter=jitter)
        if len(keep):
            break
    else:
        # Every instance is under min_area even plainly resized: keep the largest one.
        plain = dataclasses.replace(cfg, min_area=0)
        out_image, all_masks, _ = augment(image, masks, plain, rng, jitter=False)
        areas = all_masks.reshape(all_masks.shape[0], -1).sum(axis=1)
        keep = np.array([int(np.argmax(areas))])
        out_masks = all_masks[keep]
    if len(keep) > cfg.max_instances:
        chosen = np.sort(rng.choice(len(keep), size=cfg.max_instances, replace=False))
        keep, out_masks = keep[chosen], out_masks[chosen]
    padded, full, low = pad_to_input(out_image, out_masks, cfg)
    return TrainSample(
        image=padded,
        input_size=(out_image.shape[0], out_image.shape[1]),
        masks=full,
        low_res_masks=low,
        set_name=item.set_name,
        image_id=item.image.id,
        annotation_ids=[item.annotations[int(i)].id for i in keep],
    )


#: How the sets of a run share its samples: "images" (each image equally often, so a big set
#: dominates), "sqrt" (a set's share grows with the square root of its size), "equal".
SET_WEIGHTINGS = ("images", "sqrt", "equal")


def image_probabilities(images: Sequence[TrainImage], weighting: str) -> np.ndarray | None:
    """Per-image sampling probabilities for ``weighting``; None for "images" (epochs of
    permutations, every image once per epoch)."""
    if weighting not in SET_WEIGHTINGS:
        raise ValueError(f"unknown set weighting {weighting!r}; expected one of {SET_WEIGHTINGS}")
    if weighting == "images":
        return None
    sizes = Counter(item.set_name for item in images)
    share = {name: (n**0.5 if weighting == "sqrt" else 1.0) for name, n in sizes.items()}
    total = sum(share.values())
    p = np.array([share[item.set_name] / total / sizes[item.set_name] for item in images])
    return p / p.sum()


class TrainDataset(torch.utils.data.Dataset[TrainSample]):
    """Map-style dataset over *global sample indices*: index g is the g-th sample of the run.

    Sample g shows image ``perm(epoch)[g mod n]`` (epoch = g // n, a fresh permutation each
    epoch) with augmentation drawn from ``rng(seed, g)``; with a set weighting other than
    "images", the image itself is drawn from ``rng(seed, g)`` with the sets' shares. Every
    sample is a pure function of (seed, g), which is what makes a resumed run identical to a
    straight one.
    """

    def __init__(
        self,
        images: Sequence[TrainImage],
        cfg: AugmentConfig,
        *,
        seed: int,
        set_weighting: str = "images",
    ) -> None:
        if not images:
            raise ValueError("no training images")
        self.images = list(images)
        self.cfg = cfg
        self.seed = seed
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self._probabilities = image_probabilities(self.images, set_weighting)

    def __len__(self) -> int:
        return len(self.images)

    def image_for(self, g: int) -> TrainImage:
        """Which image sample g shows."""
        if self._probabilities is not None:
            rng = np.random.default_rng([self.seed, 1, g])
            return self.images[int(rng.choice(len(self.images), p=self._probabilities))]
        epoch, pos = divmod(g, len(self.images))
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            perm = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.images))
            self._perm_cache = (epoch, perm)
        return self.images[int(self._perm_cache[1][pos])]

    def __getitem__(self, g: int) -> TrainSample:
        rng = np.random.default_rng([self.seed, 2, g])
        return make_sample(self.image_for(g), self.cfg, rng)
