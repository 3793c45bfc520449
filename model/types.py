"""Types shared by every interactive predictor (SAM-style models and the GrabCut baseline).

Coordinates are always (x, y) in pixels of the original image; masks are at the original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """What a predictor answers for one prompt.

    masks: CxHxW bool, C = 3 with multimask output, else 1.
    iou_predictions: C float32, the model's own estimate of each mask's IoU.
    low_res_logits: Cx256x256 float32 to feed back as the next ``mask_input``; None for
        predictors that have no logits (GrabCut).
    """

    masks: np.ndarray
    iou_predictions: np.ndarray
    low_res_logits: np.ndarray | None


class InteractivePredictor(Protocol):
    """The interface the engine and the evaluation protocol talk to."""

    def set_image(self, image: np.ndarray) -> None:
        """Take an HxWx3 uint8 RGB image and prepare it (e.g. compute its embedding)."""
        ...

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> Prediction:
        """Nx2 float points (x, y), N labels (1 positive, 0 negative), a 4-vector box
        (x0, y0, x1, y1), a 1x256x256 logit mask from a previous prediction."""
        ...
