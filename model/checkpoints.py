"""Reading and writing model checkpoints.

Two formats load:
- official SAM files: a raw state dict (``sam_vit_b_01ec64.pth`` and friends);
- ours: ``{"model": state_dict, "config": {...}, ...}`` written by ``save_checkpoint``.

Loading is always ``torch.load(..., weights_only=True)`` (no arbitrary pickles) and always
strict: a missing or unexpected key or a wrong shape raises ``CheckpointError`` naming the
offenders. A silently partial load would leave random weights in a model that looks fine.

The one sanctioned exception is explicit: ``allow_missing_prefixes`` names whole parts the
checkpoint may lack (e.g. ``model.mask_decoder_hq.HQ_PREFIXES``, to start HQ-SAM from a plain
SAM checkpoint). A part is skipped only when *every* key under its prefix is absent; a
checkpoint holding half of a part is still an error, and unexpected or wrong-shape keys are
errors everywhere. The loaders return / report which keys were left as initialised.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHOW_AT_MOST = 5  # offending keys named per category in error messages

_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely onto the CPU; always returns ours-style
    ``{"model": state_dict, ...}`` (an official raw state dict gets wrapped)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch.load raises many kinds on junk (struct.error, ...)
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return _unwrap(obj, source=str(path))


def _unwrap(obj: Mapping[Any, Any], *, source: str) -> dict[str, Any]:
    """``{"model": state_dict, ...}`` from either format, the state dict validated."""
    payload = dict(obj) if isinstance(obj.get("model"), Mapping) else {"model": obj}
    payload["model"] = _validated_state_dict(payload["model"], source=source)
    return payload


def _validated_state_dict(obj: Mapping[Any, Any], *, source: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{source} is not a state dict: entries {bad[:SHOW_AT_MOST]!r} are not name -> tensor"
        )
    return dict(obj)


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_missing_prefixes: Sequence[str] = (),
) -> list[str]:
    """Raise ``CheckpointError`` unless keys and shapes match the model's exactly.

    allow_missing_prefixes: model keys under any of these prefixes may be missing, provided
      the checkpoint has no key at all under that prefix (whole parts only).

    Returns the model keys that the checkpoint lacks by that permission (empty otherwise).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    absent_parts = [
        prefix
        for prefix in allow_missing_prefixes
        if not any(k.startswith(prefix) for k in state_dict)
    ]
    allowed = [k for k in missing if k.startswith(tuple(absent_parts))]
    missing = [k for k in missing if k not in set(allowed)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return allowed

    def shape(t: torch.Tensor) -> str:
        return "x".join(str(d) for d in t.shape) or "scalar"

    parts = []
    if missing:
        names = ", ".join(f"{k} [{shape(expected[k])}]" for k in missing[:SHOW_AT_MOST])
        parts.append(f"{len(missing)} missing key(s): {names}")
    if unexpected:
        names = ", ".join(f"{k} [{shape(state_dict[k])}]" for k in unexpected[:SHOW_AT_MOST])
        parts.append(f"{len(unexpected)} unexpected key(s): {names}")
    if mismatched:
        names = ", ".join(
            f"{k} (checkpoint {shape(state_dict[k])}, model {shape(expected[k])})"
            for k in mismatched[:SHOW_AT_MOST]
        )
        parts.append(f"{len(mismatched)} shape mismatch(es): {names}")
    raise CheckpointError(
        "checkpoint does not fit the model (is it for another configuration?): " + "; ".join(parts)
    )


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_missing_prefixes: Sequence[str] = (),
) -> list[str]:
    """Copy ``state_dict`` into ``model`` (casting dtype, e.g. fp16 -> fp32) or raise.

    Returns the keys left as initialised under ``allow_missing_prefixes`` (see
    ``check_state_dict``); empty for a complete checkpoint.
    """
    fresh = check_state_dict(model, state_dict, allow_missing_prefixes=allow_missing_prefixes)
    result = model.load_state_dict(state_dict, strict=not fresh)
    if fresh and (set(result.missing_keys) != set(fresh) or result.unexpected_keys):
        # Cannot happen after check_state_dict; a guard against a silent partial load.
        raise CheckpointError(f"partial load left {result.missing_keys} missing")
    return fresh


def load_checkpoint(
    model: nn.Module,
    source: str | Path | Mapping[str, Any],
    *,
    allow_missing_prefixes: Sequence[str] = (),
) -> dict[str, Any]:
    """Strictly load a checkpoint (file path, raw state dict, or ``{"model": ...}`` dict).

    allow_missing_prefixes: whole parts the checkpoint may lack, left as initialised (see
      the module docstring); e.g. ``build_sam("vit_b_hq")`` loaded from ``sam_vit_b.pth`` with
      ``allow_missing_prefixes=HQ_PREFIXES``.

    Returns the checkpoint's other entries (``config`` and extras; empty for official files),
    plus ``"fresh_keys"``, the keys left as initialised, when any were.
    """
    if isinstance(source, Mapping):
        payload = _unwrap(source, source="state dict")
    else:
        payload = read_checkpoint(source)
    fresh = load_state_dict_strict(
        model, payload.pop("model"), allow_missing_prefixes=allow_missing_prefixes
    )
    if fresh:
        payload["fresh_keys"] = fresh
    return payload


def _check_plain(obj: Any, where: str) -> None:
    """Reject what ``torch.load(weights_only=True)`` would refuse, before writing it."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_plain(k, f"{where} key")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN_TYPES):
        raise TypeError(
            f"{where} is a {type(obj).__name__}; checkpoints hold only dicts, lists, "
            "str/int/float/bool/None and tensors"
        )


def _atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file beside ``path``, fsync, then rename over it: readers see
    the old file or the new one, never half of one, even if we crash mid-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".ckpt.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; other services read checkpoints
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    *,
    half: bool = False,
) -> Path:
    """Write ``{"model": state_dict, "config": config, **extra}`` atomically.

    half: store floating-point parameters as float16 (half the size; they load back into a
    float32 model). Buffers keep their precision: SAM's only one is the random Fourier
    matrix of the positional encoding, tiny and sensitive.
    """
    extra = dict(extra or {})
    clash = {"model", "config"} & extra.keys()
    if clash:
        raise ValueError(f"extra may not use the reserved key(s) {sorted(clash)}")
    _check_plain(dict(config), "config")
    _check_plain(extra, "extra")
    params = {name for name, _ in model.named_parameters()}
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and name in params and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    return _atomic_torch_save({"model": state, "config": dict(config), **extra}, path)


def export_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as Meta's builders expect them: a raw float32 CPU state dict
    with the official key names. Tensors may share memory with a CPU model."""
    from model.encoders.vit import ImageEncoderViT

    if not isinstance(getattr(model, "image_encoder", None), ImageEncoderViT):
        raise ValueError("only ViT SAM models (vit_b / vit_l / vit_h) have an official format")
    return {
        name: tensor.detach().to("cpu", torch.float32)
        for name, tensor in model.state_dict().items()
    }


def save_official_checkpoint(path: str | Path, model: nn.Module) -> Path:
    """Write ``export_official_state_dict(model)`` atomically: loadable by
    ``segment_anything.sam_model_registry[name](checkpoint=path)``."""
    return _atomic_torch_save(export_official_state_dict(model), path)
