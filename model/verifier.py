"""A learned mask verifier: the probability that a reviewer accepts a mask (issue 14).

SAM 3's data engine trained AI verifiers on the accept / reject decisions of its human
verifiers and let them take over the checks they agreed with people on. Ours is deliberately
small, because a project has hundreds of decisions, not millions: a dozen features the engine
has anyway, standardised, into a logistic regression or a one-hidden-layer network.

Features of a mask (``FEATURES``):

- the model's own scores: predicted IoU and stability score;
- its shape: log area share of the image, fill of its box, compactness (4 pi area /
  perimeter^2), number of parts, how much of its box touches the image border;
- how its boundary follows the image's edges: mean gradient magnitude on its boundary, and
  inside it, each relative to the image's mean;
- the image embedding pooled inside the mask and in a ring around it (on the embedding grid):
  how different inside and around are (1 - cosine), and how alike the inside cells are
  (mean cosine to the inside mean).

``Verifier.fit`` trains; ``Verifier.calibrate`` picks, on decisions held out of training, the
lowest threshold whose accepted masks reach the target precision (with a minimum count), and
``compare_with_filters`` measures that against the fixed SA-1B filters on the same candidates.
A fitted verifier is a small JSON document (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

FEATURES = (
    "predicted_iou",
    "stability_score",
    "log_area_share",
    "box_fill",
    "compactness",
    "log_parts",
    "border_touch",
    "edge_on_boundary",
    "edge_inside",
    "embedding_contrast",
    "embedding_homogeneity",
)

#: SA-1B's fully automatic filters (SA paper, appendix B): the baseline a verifier must beat.
SA1B_PRED_IOU = 0.88
SA1B_STABILITY = 0.95


@dataclass
class ImageContext:
    """What every mask of one image shares: its gradient magnitude and its embedding grid.

    gradient: HxW Sobel magnitude of the grey image divided by its mean (1 = average edge).
    embedding: CxhxW unit-normalised cells of the image embedding, or None.
    input_size: (H', W') of the resized image inside the embedding's padded square.
    image_size: the model's square input side.
    """

    gradient: np.ndarray
    embedding: np.ndarray | None = None
    input_size: tuple[int, int] = (0, 0)
    image_size: int = 0

    @classmethod
    def from_image(
        cls,
        rgb: np.ndarray,
        embedding: torch.Tensor | np.ndarray | None = None,
        *,
        input_size: tuple[int, int] = (0, 0),
        image_size: int = 0,
    ) -> ImageContext:
        """``embedding``: 1xCxhxw or Cxhxw over the padded input (``ImageEmbedding``)."""
        grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
        grey = grey.astype(np.float32) / 255.0
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = np.sqrt(gx * gx + gy * gy)
        magnitude /= max(float(magnitude.mean()), 1e-6)
        cells = None
        if embedding is not None:
            grid = torch.as_tensor(embedding).float()
            if grid.ndim == 4:
                grid = grid[0]
            grid = torch.nn.functional.normalize(grid, dim=0)
            cells = grid.numpy()
            if not image_size:
                raise ValueError("give image_size (and input_size) with an embedding")
        return cls(magnitude, cells, tuple(input_size), int(image_size))  # type: ignore[arg-type]


def mask_features(
    mask: np.ndarray,
    context: ImageContext,
    *,
    predicted_iou: float | None,
    stability_score: float | None,
) -> np.ndarray:
    """The ``FEATURES`` of one HxW boolean mask, float32. Missing scores (a mask people drew)
    count as 0; an image without an embedding gives 0 for the embedding features."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    area = int(mask.sum())
    out = np.zeros(len(FEATURES), dtype=np.float32)
    out[0] = 0.0 if predicted_iou is None else float(predicted_iou)
    out[1] = 0.0 if stability_score is None else float(stability_score)
    if area == 0:
        out[2] = math.log10(1.0 / (height * width))
        return out
    out[2] = math.log10(area / (height * width))
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    out[3] = area / float((y1 - y0 + 1) * (x1 - x0 + 1))
    pixels = mask.astype(np.uint8)
    contours, _ = cv2.findContours(pixels, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, closed=True) for c in contours)
    out[4] = min(1.0, 4 * math.pi * area / max(perimeter, 1.0) ** 2)
    parts = cv2.connectedComponents(pixels, connectivity=8)[0] - 1
    out[5] = math.log(max(parts, 1))
    out[6] = (int(y0 == 0) + int(x0 == 0) + int(y1 == height - 1) + int(x1 == width - 1)) / 4
    boundary = pixels - cv2.erode(pixels, np.ones((3, 3), np.uint8))
    on_boundary = boundary.astype(bool)
    out[7] = float(context.gradient[on_boundary].mean()) if on_boundary.any() else 0.0
    inside = mask & ~on_boundary
    out[8] = float(context.gradient[inside].mean()) if inside.any() else out[7]
    if context.embedding is not None:
        out[9], out[10] = _embedding_features(mask, context)
    return out


def _embedding_features(mask: np.ndarray, context: ImageContext) -> tuple[float, float]:
    """(1 - cos(inside mean, ring mean), mean cos(inside cell, inside mean)) on the grid."""
    assert context.embedding is not None
    channels, grid_h, grid_w = context.embedding.shape
    in_h, in_w = context.input_size
    # The mask in the padded input frame, then its share of every embedding cell.
    resized = cv2.resize(mask.astype(np.float32), (in_w, in_h), interpolation=cv2.INTER_AREA)
    padded = np.zeros((context.image_size, context.image_size), dtype=np.float32)
    padded[:in_h, :in_w] = resized
    share = cv2.resize(padded, (grid_w, grid_h), interpolation=cv2.INTER_AREA)
    inside = share >= 0.5
    if not inside.any():  # smaller than a cell: the cell it covers most
        inside = share == share.max()
    valid = np.zeros((grid_h, grid_w), dtype=bool)  # the image, not its padding
    rows = max(1, round(in_h * grid_h / context.image_size))
    valid[:rows, : max(1, round(in_w * grid_w / context.image_size))] = True
    ring = cv2.dilate(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    ring &= ~inside & valid
    cells = context.embedding.reshape(channels, -1)
    inner = cells[:, inside.ravel()]
    centre = inner.mean(axis=1)
    centre_unit = centre / max(float(np.linalg.norm(centre)), 1e-6)
    homogeneity = float((centre_unit @ inner).mean())
    if not ring.any():
        return 0.0, homogeneity
    around = cells[:, ring.ravel()].mean(axis=1)
    around_unit = around / max(float(np.linalg.norm(around)), 1e-6)
    return 1.0 - float(centre_unit @ around_unit), homogeneity


# --------------------------------------------------------------------------- the model


@dataclass
class Verifier:
    """Standardised features -> P(accept). ``hidden`` 0 is a logistic regression."""

    hidden: int = 0
    weight_decay: float = 1e-3
    mean: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURES), np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(len(FEATURES), np.float32))
    threshold: float = 1.0  # accept when P >= threshold; 1.0 until calibrated: accept nothing
    state: dict[str, list[Any]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def _network(self) -> torch.nn.Module:
        n = len(FEATURES)
        if self.hidden:
            return torch.nn.Sequential(
                torch.nn.Linear(n, self.hidden), torch.nn.Tanh(), torch.nn.Linear(self.hidden, 1)
            )
        return torch.nn.Sequential(torch.nn.Linear(n, 1))

    def fit(self, features: np.ndarray, accepted: np.ndarray, *, seed: int = 0) -> Verifier:
        """Train on N decisions (features NxF, accepted N bool); full-batch L-BFGS."""
        x = np.asarray(features, dtype=np.float32)
        y = np.asarray(accepted, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(FEATURES) or len(y) != len(x):
            raise ValueError(f"features must be Nx{len(FEATURES)} with N labels")
        if len(np.unique(y)) < 2:
            raise ValueError("the decisions must hold both accepted and rejected masks")
        self.mean = x.mean(axis=0)
        self.std = np.maximum(x.std(axis=0), 1e-6)
        torch.manual_seed(seed)
        network = self._network()
        inputs = torch.from_numpy((x - self.mean) / self.std)
        target = torch.from_numpy(y)[:, None]
        # Balanced classes: reviewers accept most automatic masks; the rare rejects matter.
        positive = float(y.mean())
        weights = torch.where(target > 0.5, 0.5 / positive, 0.5 / (1 - positive))
        optimiser = torch.optim.LBFGS(
            network.parameters(), max_iter=200, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                network(inputs), target, weight=weights
            )
            loss = loss + self.weight_decay * sum(
                (p**2).sum() for name, p in network.named_parameters() if "weight" in name
            )
            loss.backward()
            return loss

        optimiser.step(closure)
        self.state = {k: v.detach().tolist() for k, v in network.state_dict().items()}
        return self

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        if not self.state:
            raise ValueError("the verifier is not trained")
        network = self._network()
        network.load_state_dict({k: torch.tensor(v) for k, v in self.state.items()})
        x = (
            np.asarray(features, dtype=np.float32).reshape(-1, len(FEATURES)) - self.mean
        ) / self.std
        with torch.no_grad():
            return torch.sigmoid(network(torch.from_numpy(x.astype(np.float32))))[:, 0].numpy()

    def accepts(self, features: np.ndarray) -> np.ndarray:
        return self.probabilities(features) >= self.threshold

    def calibrate(
        self, features: np.ndarray, accepted: np.ndarray, *, target: float, min_accepted: int = 20
    ) -> dict[str, Any]:
        """The lowest threshold at which the held-out masks it accepts were accepted by people
        at least ``target`` of the time (and at least ``min_accepted`` of them); stored in
        ``threshold`` and returned with the held-out precision and share accepted. Without
        one, the threshold stays above every probability: the verifier accepts nothing."""
        probabilities = self.probabilities(features)
        labels = np.asarray(accepted, dtype=bool)
        found = threshold_for_precision(probabilities, labels, target, min_accepted)
        self.threshold = found if found is not None else 1.0 + 1e-9
        taken = probabilities >= self.threshold
        self.figures = {
            "target": target,
            "threshold": None if found is None else round(float(found), 6),
            "held_out": int(len(labels)),
            "accepted_share": round(float(taken.mean()), 4) if len(labels) else 0.0,
            "precision": _precision(labels, taken),
        }
        return self.figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "hidden": self.hidden,
            "weight_decay": self.weight_decay,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "threshold": self.threshold,
            "state": self.state,
            "figures": self.figures,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verifier:
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError("this verifier was trained on other features; train it again")
        return cls(
            hidden=int(data["hidden"]),
            weight_decay=float(data["weight_decay"]),
            mean=np.asarray(data["mean"], dtype=np.float32),
            std=np.asarray(data["std"], dtype=np.float32),
            threshold=float(data["threshold"]),
            state=dict(data["state"]),
            figures=dict(data.get("figures", {})),
        )


def threshold_for_precision(
    probabilities: np.ndarray, accepted: np.ndarray, target: float, min_accepted: int = 20
) -> float | None:
    """The lowest p such that masks with probability >= p were accepted at least ``target``
    of the time and number at least ``min_accepted``; None when no p does."""
    order = np.argsort(-probabilities, kind="stable")
    sorted_p = probabilities[order]
    hits = np.cumsum(np.asarray(accepted, dtype=bool)[order])
    taken = np.arange(1, len(order) + 1)
    best = None
    for i in range(len(order)):
        if i + 1 < len(order) and sorted_p[i + 1] == sorted_p[i]:
            continue  # a threshold takes every mask of equal probability
        if taken[i] >= min_accepted and hits[i] / taken[i] >= target:
            best = float(sorted_p[i])
    return best


def sa1b_filters(predicted_iou: np.ndarray, stability: np.ndarray) -> np.ndarray:
    """SA-1B's fixed filters: predicted IoU > 0.88 and stability >= 0.95."""
    return (np.asarray(predicted_iou) > SA1B_PRED_IOU) & (np.asarray(stability) >= SA1B_STABILITY)


def compare_with_filters(
    verifier: Verifier, features: np.ndarray, accepted: np.ndarray
) -> dict[str, Any]:
    """On the same held-out candidates: share accepted and precision of the verifier (at its
    calibrated threshold) and of the fixed filters; ``better`` when the verifier reaches its
    target precision and accepts more."""
    labels = np.asarray(accepted, dtype=bool)
    x = np.asarray(features, dtype=np.float32).reshape(-1, len(FEATURES))
    mine = verifier.accepts(x)
    fixed = sa1b_filters(x[:, 0], x[:, 1])
    target = float(verifier.figures.get("target", 1.0))
    verifier_precision = _precision(labels, mine)
    return {
        "candidates": int(len(labels)),
        "verifier": {"accepted_share": _share(mine), "precision": verifier_precision},
        "filters": {"accepted_share": _share(fixed), "precision": _precision(labels, fixed)},
        "better": bool(
            verifier_precision is not None
            and verifier_precision >= target
            and mine.sum() > fixed.sum()
        ),
    }


def _share(taken: np.ndarray) -> float:
    return round(float(taken.mean()), 4) if len(taken) else 0.0


def _precision(labels: np.ndarray, taken: np.ndarray) -> float | None:
    return round(float(labels[taken].mean()), 4) if taken.any() else None
