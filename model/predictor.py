"""Interactive prediction with SAM: embed an image once, then answer many prompts.

``SamPredictor`` implements ``model.types.InteractivePredictor``. The image embedding can be
taken out (``get_embedding``) and put back (``set_embedding``) so that the engine caches
embeddings on disk and a click never waits for the image encoder. ``ImageEmbedding`` turns
into bytes as a NumPy ``.npz`` archive, read back with ``allow_pickle=False``.

HQ-SAM models work the same way; their cached embedding also carries the image's early
feature (format version 2; plain SAM embeddings keep writing and reading version 1), and the
prompt-independent HQ features are computed once per image at the first prompt.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from model.sam import Sam
from model.transforms import ResizeLongestSide
from model.types import Prediction


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """The image encoder's output for one image, plus the sizes needed to map prompts.

    embedding: 1xCxhxw float32 or float16 CPU tensor (1x256x64x64 for official models).
    original_size: (H, W) of the image given to ``set_image``.
    input_size: (H', W') of the resized image before padding to the square input.
    early: HQ-SAM's early feature, 1xh'xw'xD channels-last float32 or float16 (1x64x64x768
        for vit_b_hq); None for plain SAM models.
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    early: torch.Tensor | None = None

    #: Written for embeddings without an early feature, byte for byte as before HQ-SAM.
    FORMAT_VERSION: ClassVar[int] = 1
    #: Written when the early feature is present (an older reader refuses it, rather than
    #: silently dropping the early feature).
    HQ_FORMAT_VERSION: ClassVar[int] = 2

    def half(self) -> ImageEmbedding:
        """The same embedding stored as float16 (half the bytes; decoding upcasts it)."""
        early = None if self.early is None else self.early.half()
        return ImageEmbedding(self.embedding.half(), self.original_size, self.input_size, early)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors as they are stored now (what ``to_bytes`` costs, nearly)."""
        tensors = [self.embedding] if self.early is None else [self.embedding, self.early]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to_bytes(self, *, half: bool = False) -> bytes:
        """Serialise as an uncompressed .npz (float data barely compresses)."""

        def prepared(t: torch.Tensor) -> np.ndarray:
            t = t.detach().cpu()
            return (t.half() if half or t.dtype == torch.float16 else t.float()).numpy()

        arrays: dict[str, Any] = {
            "embedding": prepared(self.embedding),
            "original_size": np.array(self.original_size, dtype=np.int64),
            "input_size": np.array(self.input_size, dtype=np.int64),
        }
        version = self.FORMAT_VERSION
        if self.early is not None:
            version = self.HQ_FORMAT_VERSION
            arrays["early"] = prepared(self.early)
        buf = io.BytesIO()
        np.savez(buf, format_version=np.array(version, dtype=np.int64), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageEmbedding:
        """Inverse of ``to_bytes``; raises ValueError on anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"not a serialised image embedding: {exc}") from exc
        version = arrays.get("format_version")
        known = (cls.FORMAT_VERSION, cls.HQ_FORMAT_VERSION)
        if version is None or version.shape != () or int(version) not in known:
            raise ValueError(f"unsupported image embedding format version {version}")
        required = {"embedding", "original_size", "input_size"}
        if int(version) == cls.HQ_FORMAT_VERSION:
            required.add("early")
        missing = required - arrays.keys()
        if missing:
            raise ValueError(f"serialised image embedding lacks {sorted(missing)}")
        emb, original, resized = (arrays[k] for k in ("embedding", "original_size", "input_size"))
        _check_array("embedding", emb)
        if original.shape != (2,) or resized.shape != (2,):
            raise ValueError("sizes must be (H, W)")
        early = None
        if int(version) == cls.HQ_FORMAT_VERSION:
            _check_array("early", arrays["early"])
            early = torch.from_numpy(arrays["early"])
        return cls(
            torch.from_numpy(emb),
            (int(original[0]), int(original[1])),
            (int(resized[0]), int(resized[1])),
            early,
        )


def _check_array(name: str, array: np.ndarray) -> None:
    """A 1x...(4-D) float16/float32 array, or ValueError."""
    if array.ndim != 4 or array.shape[0] != 1 or array.dtype not in (np.float16, np.float32):
        raise ValueError(f"bad {name} array {array.dtype} {array.shape}")


class SamPredictor:
    """Embed one image with ``set_image`` (or restore it with ``set_embedding``), then
    predict masks for any number of prompts. Prompts are in original-image pixels (x, y).

    The model is moved to ``device`` (default: CUDA when present) and put in eval mode.
    On CUDA the image encoder runs under bf16 autocast; the embedding is kept in float32
    and the light mask decoder always runs in float32 so that logits stay precise.

    HQ-SAM models: one mask per prompt whatever ``multimask_output`` (see ``Sam.decode``);
    ``hq_only`` (the official predictor's ``hq_token_only``) returns the HQ mask alone. The
    constructor's ``hq_only`` is the default for calls that do not say.
    """

    def __init__(
        self,
        model: Sam,
        *,
        device: str | torch.device | None = None,
        bf16: bool = True,
        hq_only: bool = False,
    ) -> None:
        if hq_only and not model.is_hq:
            raise ValueError("hq_only needs an HQ-SAM model (a configuration ending in _hq)")
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.transform = ResizeLongestSide(model.image_size)
        self.bf16 = bf16 and self.device.type == "cuda"
        self.hq_only = hq_only
        self._features: torch.Tensor | None = None
        self._early: torch.Tensor | None = None
        self._hq_features: torch.Tensor | None = None
        self._original_size: tuple[int, int] = (0, 0)
        self._input_size: tuple[int, int] = (0, 0)

    # -- image ----------------------------------------------------------------------------

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def original_size(self) -> tuple[int, int]:
        return self._original_size

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input_size

    def reset_image(self) -> None:
        """Forget the current image."""
        self._features = None
        self._early = None
        self._hq_features = None
        self._original_size = (0, 0)
        self._input_size = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        """Embed an HxWx3 uint8 RGB image."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(x, (image.shape[0], image.shape[1]))

    @torch.no_grad()
    def set_torch_image(self, image: torch.Tensor, original_size: tuple[int, int]) -> None:
        """Embed an already resized 1x3xH'xW' 0-255 RGB tensor (long side = image_size)."""
        size = self.model.image_size
        if image.ndim != 4 or image.shape[:2] != (1, 3) or max(image.shape[2:]) != size:
            raise ValueError(f"expected 1x3xH'xW' with long side {size}, got {tuple(image.shape)}")
        self.reset_image()
        with self._autocast():
            features, early = self.model.encode_image_with_early(image.to(self.device))
        # Contiguous, as a restored embedding is: the same layout, the same conv kernels and
        # so bit-identical answers whichever way the image was set.
        self._features = features.float().contiguous()
        self._early = None if early is None else early.float().contiguous()
        self._original_size = (int(original_size[0]), int(original_size[1]))
        self._input_size = (int(image.shape[2]), int(image.shape[3]))

    def get_embedding(self) -> ImageEmbedding:
        """The current image's embedding (with HQ-SAM's early feature), on the CPU in float32."""
        features = self._require_image()
        # A copy: the caller may keep or alter it while this predictor goes on using its own.
        embedding = features.detach().to("cpu", copy=True)
        early = None if self._early is None else self._early.detach().to("cpu", copy=True)
        return ImageEmbedding(embedding, self._original_size, self._input_size, early)

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Restore an embedding made by ``get_embedding`` of this model configuration.

        HQ-SAM needs the early feature in it; a plain SAM ignores one (an HQ model's
        embedding is a valid SAM embedding of the same encoder).
        """
        expected = (1, self.model.prompt_encoder.embed_dim, *self.model.embedding_size)
        if tuple(embedding.embedding.shape) != expected:
            raise ValueError(
                f"embedding is {tuple(embedding.embedding.shape)}, this model needs {expected}"
            )
        early_shape = self.model.early_shape
        if early_shape is not None:
            if embedding.early is None:
                raise ValueError(
                    "this HQ-SAM model needs the early feature, and the embedding has none "
                    "(made by a plain SAM model?)"
                )
            if tuple(embedding.early.shape) != (1, *early_shape):
                raise ValueError(
                    f"early feature is {tuple(embedding.early.shape)}, this model needs "
                    f"{(1, *early_shape)}"
                )
        h, w = embedding.original_size
        if tuple(embedding.input_size) != self.transform.get_preprocess_shape(
            h, w, self.model.image_size
        ):
            raise ValueError(
                f"embedding input size {embedding.input_size} does not follow from image size "
                f"{embedding.original_size} at model input {self.model.image_size}"
            )
        self.reset_image()
        self._features = embedding.embedding.to(self.device, torch.float32, copy=True)
        if early_shape is not None and embedding.early is not None:
            self._early = embedding.early.to(self.device, torch.float32, copy=True)
        self._original_size = (int(h), int(w))
        self._input_size = (int(embedding.input_size[0]), int(embedding.input_size[1]))

    # -- prompts --------------------------------------------------------------------------

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        hq_only: bool | None = None,
        sam_only: bool = False,
    ) -> Prediction:
        """Masks for one prompt, at the original image size.

        Arguments:
          point_coords: Nx2 (x, y) pixels; point_labels: N, 1 positive / 0 negative.
          box: 4 (x0, y0, x1, y1) pixels.
          mask_input: 1x256x256 (or 256x256) logits, e.g. a previous ``low_res_logits[i]``.
          multimask_output: three masks (for an ambiguous prompt such as one click) or one.
            HQ-SAM: one mask either way, built on the best of three or on the single mask.
          hq_only: HQ-SAM only: the HQ mask alone; None = the predictor's default.
          sam_only: HQ-SAM only: the base model's answer without the HQ token (three masks
            with multimask output, as a plain SAM): the page's "HQ off".

        Returns a ``Prediction``: masks CxHxW bool, iou_predictions C, low_res_logits
        Cx256x256, with C = 3 or 1 (always 1 for HQ-SAM).
        """
        coords = labels = boxes = masks = None
        if point_coords is not None:
            coords = np.asarray(point_coords, dtype=np.float64)[None]
        if point_labels is not None:
            labels = np.asarray(point_labels)[None]
        if box is not None:
            boxes = np.asarray(box, dtype=np.float64).reshape(1, 4)
        if mask_input is not None:
            mask = np.asarray(mask_input, dtype=np.float32)
            masks = mask.reshape(1, 1, *mask.shape[-2:])
        return self.predict_batch(
            coords, labels, boxes, masks, multimask_output, hq_only=hq_only, sam_only=sam_only
        )[0]

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        hq_only: bool | None = None,
        sam_only: bool = False,
    ) -> list[Prediction]:
        """B prompts at once on the current image, in original-image pixels.

        Arguments:
          point_coords: BxNx2 (x, y); point_labels: BxN (1, 0, or -1 to pad a short prompt).
          boxes: Bx4 (x0, y0, x1, y1).
          mask_input: Bx1x256x256 logits.
          multimask_output, hq_only, sam_only: as ``predict``.

        Returns B ``Prediction``s, each as ``predict`` would give for that prompt alone.
        """
        coords_t = labels_t = boxes_t = masks_t = None
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels go together")
        if point_coords is not None and point_labels is not None:
            coords = np.asarray(point_coords, dtype=np.float64)
            labels = np.asarray(point_labels)
            if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
                raise ValueError(
                    f"point_coords must be BxNx2 and point_labels BxN, got {coords.shape} "
                    f"and {labels.shape}"
                )
            coords = self.transform.apply_coords(coords, self._require_size())
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
        if boxes is not None:
            boxes = self.transform.apply_boxes(np.asarray(boxes), self._require_size())
            boxes_t = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
        if mask_input is not None:
            masks_t = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)

        masks, iou, low_res = self.predict_torch(
            coords_t,
            labels_t,
            boxes_t,
            masks_t,
            multimask_output=multimask_output,
            hq_only=hq_only,
            sam_only=sam_only,
        )
        masks_np = masks.cpu().numpy()
        iou_np = iou.float().cpu().numpy()
        low_res_np = low_res.float().cpu().numpy()
        return [
            Prediction(masks=masks_np[i], iou_predictions=iou_np[i], low_res_logits=low_res_np[i])
            for i in range(masks_np.shape[0])
        ]

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_only: bool | None = None,
        sam_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompts already in the resized input frame (``self.transform``), on the device.

        Arguments:
          point_coords: BxNx2; point_labels: BxN; boxes: Bx4; mask_input: Bx1x256x256.
          return_logits: return mask logits instead of thresholded masks.
          multimask_output, hq_only, sam_only: as ``predict``.

        Returns:
          masks: BxKxHxW bool (or float logits) at the original size, K = 3 or 1 (1 for
            HQ-SAM but with ``sam_only``).
          iou_predictions: BxK.
          low_res_logits: BxKx256x256.
        """
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must come with point_coords")
            points = (point_coords, point_labels)
        low_res, iou = self.decode_torch(
            points=points,
            boxes=boxes,
            masks=mask_input,
            multimask_output=multimask_output,
            hq_only=hq_only,
            sam_only=sam_only,
        )
        masks = self.model.postprocess_masks(low_res, self._input_size, self._original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def decode_torch(
        self,
        *,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = True,
        hq_only: bool | None = None,
        sam_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Sam.decode`` on the current image (low-res logits, IoU predictions), prompts in
        the resized frame on the device; HQ-SAM's per-image features are made once and kept.
        """
        features = self._require_image()
        hq = self.hq_only if hq_only is None else hq_only
        if sam_only and hq_only:
            raise ValueError("hq_only and sam_only exclude each other")
        if not self.model.is_hq:
            if hq or sam_only:
                raise ValueError(
                    "hq_only and sam_only need an HQ-SAM model (a configuration ending in _hq)"
                )
            # Plain models are called exactly as before (subclasses may not know HQ arguments).
            return self.model.decode(
                features, points=points, boxes=boxes, masks=masks, multimask_output=multimask_output
            )
        if sam_only:
            return self.model.decode(
                features,
                points=points,
                boxes=boxes,
                masks=masks,
                multimask_output=multimask_output,
                sam_only=True,
            )
        if self._hq_features is None:
            if self._early is None:
                raise RuntimeError("HQ-SAM needs the early feature: set_image or set_embedding")
            with torch.no_grad():
                self._hq_features = self.model.hq_features(features, self._early)
        return self.model.decode(
            features,
            points=points,
            boxes=boxes,
            masks=masks,
            multimask_output=multimask_output,
            hq_features=self._hq_features,
            hq_only=hq,
        )

    # -- helpers --------------------------------------------------------------------------

    def _require_image(self) -> torch.Tensor:
        if self._features is None:
            raise RuntimeError("set an image (set_image or set_embedding) before predicting")
        return self._features

    def _require_size(self) -> tuple[int, int]:
        self._require_image()
        return self._original_size

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.bf16:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield
