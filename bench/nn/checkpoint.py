"""Strict loading of published checkpoints, with one readable line when they do not fit.

torch's own strict-load error lists every key on many lines and stops at the first size mismatch;
for a 566-key UNet that buries the cause. Here a mismatch becomes a single `DataError` naming the
first few missing and unexpected keys, their counts, and the first shape mismatch.

Accepted files: a plain state dict (name -> tensor), or, only when the top level is not itself a
state dict, a dict wrapping one under exactly one of `WRAPPER_KEYS` ("state_dict", "model",
"ema"); pass `key=` to choose when several are present. Tensors are copied into the model's own
dtype, so a float16 checkpoint loads into float32 or bfloat16 parameters. Files are unpickled with
`weights_only=True`: arbitrary pickled objects are refused rather than executed.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import DataError

WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model", "ema")
SHOWN_KEYS = 3


def load_state_dict_strict(model: nn.Module, path_or_state: str | Path | Mapping[str, Any],
                           source: str | None = None, *, key: str | None = None) -> nn.Module:
    """Load a checkpoint into `model` requiring exactly its keys and shapes; return the model.

    `source` names the checkpoint in error messages (defaults to the path, or "<state dict>").
    """
    if isinstance(path_or_state, (str, Path)):
        where = source or str(path_or_state)
        raw: Any = _read(Path(path_or_state), where)
    else:
        where = source or "<state dict>"
        raw = path_or_state
    state = unwrap_state_dict(raw, where, key=key)
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise DataError(where, problem)
    model.load_state_dict(state, strict=True)
    return model


def _read(path: Path, where: str) -> Any:
    """torch.load a checkpoint on CPU, turning I/O and unpickling failures into DataError."""
    if not path.is_file():
        raise DataError(where, f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(where, f"cannot read checkpoint ({type(exc).__name__}: {first_line})") from exc


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def unwrap_state_dict(obj: Any, where: str, *, key: str | None = None) -> Mapping[str, torch.Tensor]:
    """Return the state dict inside a loaded checkpoint (see the module docstring for the rules)."""
    if key is None and _is_state_dict(obj):
        return obj
    if not isinstance(obj, Mapping):
        raise DataError(where, f"checkpoint is a {type(obj).__name__}, not a dict of tensors")
    if key is not None:
        candidates = [key] if key in obj else []
        if not candidates:
            raise DataError(where, f"no entry {key!r} in checkpoint (keys: {_preview(list(obj))})")
    else:
        candidates = [k for k in WRAPPER_KEYS if k in obj]
        if len(candidates) > 1:
            raise DataError(where, f"checkpoint wraps several state dicts {candidates}: "
                                   "choose one with key=...")
        if not candidates:
            raise DataError(where, "not a state dict and none of the wrapper keys "
                                   f"{list(WRAPPER_KEYS)} present (keys: {_preview(list(obj))})")
    inner = obj[candidates[0]]
    if not _is_state_dict(inner):
        raise DataError(where, f"entry {candidates[0]!r} is not a dict of tensors")
    return inner


def describe_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
                      ) -> str | None:
    """One line describing how `got` differs from `expected` in keys and shapes, or None."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shape_bad = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shape_bad):
        return None
    parts = [f"state dict does not match the model ({len(expected)} keys expected, {len(got)} given)"]
    if missing:
        parts.append(f"{len(missing)} missing: {_preview(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_preview(unexpected)}")
    if shape_bad:
        k = shape_bad[0]
        parts.append(f"{len(shape_bad)} shape mismatch(es), first {k}: checkpoint "
                     f"{list(got[k].shape)} vs model {list(expected[k].shape)}")
    if unexpected and all(k.startswith("module.") for k in unexpected):
        parts.append("hint: keys carry a DistributedDataParallel 'module.' prefix")
    return "; ".join(parts)


def _preview(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (", ..." if len(keys) > SHOWN_KEYS else "")
