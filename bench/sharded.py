"""A cached artefact built shard by shard, so a killed or requeued build resumes where it stopped.

Each shard is saved atomically as soon as it is made, next to the final artefact in
`<artefact>.shards/`; a rebuild loads the shards already there and makes only the missing
ones. A shard must depend only on its index (its own seeded generator), so a resumed build
gives the same artefact as an uninterrupted one. The final file, written atomically under a
lock, is the commit point; the shard folder is removed after it.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from bench.store import atomic_torch_save, file_lock, load_torch

MakeShard = Callable[[int, int], dict[str, torch.Tensor]]  # (shard index, items) -> tensors


def shard_folder(path: Path) -> Path:
    return path.with_name(path.name + ".shards")


def _load(path: Path) -> Any:
    return load_torch(path)


def cached_sharded(path: str | Path, total: int, shard_size: int, make_shard: MakeShard,
                   meta: dict[str, Any] | None = None, progress: bool = False,
                   desc: str = "shards") -> dict[str, Any]:
    """Load `path`, or build its `total` items in shards of `shard_size` and save them as one file:
    each tensor key concatenated over the shards (dim 0), plus `meta`, `"resumed_shards"` (how
    many shards an earlier, interrupted build had made) and `"seconds"` (summed over shards)."""
    path = Path(path)
    if path.exists():
        return _load(path)
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            return _load(path)
        folder = shard_folder(path)
        count = math.ceil(total / shard_size)
        resumed = 0
        saved_all: list[dict[str, Any]] = []
        bar = tqdm(total=total, desc=desc, unit="sample", leave=False, disable=not progress)
        for index in range(count):
            items = min(shard_size, total - index * shard_size)
            file = folder / f"shard-{index:05d}.pt"
            saved = _load(file) if file.exists() else None
            if saved is not None and saved.get("items") == items:
                resumed += 1
            else:
                start = time.perf_counter()
                tensors = make_shard(index, items)
                saved = {"items": items, "tensors": tensors, "seconds": time.perf_counter() - start}
                atomic_torch_save(file, saved)
            saved_all.append(saved)
            bar.update(items)
        bar.close()
        obj: dict[str, Any] = {k: torch.cat([p["tensors"][k] for p in saved_all])
                               for k in (saved_all[0]["tensors"] if saved_all else {})}
        obj.update(meta or {})
        obj["resumed_shards"] = resumed
        obj["seconds"] = float(sum(p["seconds"] for p in saved_all))
        atomic_torch_save(path, obj)
        shutil.rmtree(folder, ignore_errors=True)
        return obj
