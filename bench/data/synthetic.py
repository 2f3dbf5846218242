"""The embedded synthetic-glands data set, so the default sweep needs no download.

It is generated once into `$BENCH_CACHE/synthetic-glands-<config hash>` (default cache
`~/.cache/bench`) in the GlaS release layout as PNG, then read back through the GlaS loader, so the
real loader runs on every default sweep. The folder appears atomically: it is written under a
temporary name beside its final place and renamed; if another process renamed first, theirs is used.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.glas import load_glas
from bench.data.synthetic_config import SYNTHETIC_GLANDS, SyntheticGlandsConfig
from bench.data.synthetic_render import render
from bench.data.types import Sample
from bench.errors import DataError
from bench.store import public_mode

GENERATOR_VERSION = 1  # bump when render() changes, so old caches are not reused
CACHE_ENV = "BENCH_CACHE"
DEFAULT_CACHE = Path("~/.cache/bench")
FOLDER_PREFIX = "synthetic-glands"
_SPLIT_CODES = {"train": 0, "testA": 1}


def cache_base() -> Path:
    """Where generated data lives: $BENCH_CACHE, else ~/.cache/bench."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser().resolve()


def config_hash(cfg: SyntheticGlandsConfig) -> str:
    payload = json.dumps({"version": GENERATOR_VERSION, "config": dataclasses.asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _image_names(cfg: SyntheticGlandsConfig) -> list[tuple[str, int]]:
    """(release prefix, N): training images are train_N, test images testA_N."""
    return [("train", n) for n in range(1, cfg.n_train + 1)] + [("testA", n) for n in range(1, cfg.n_test + 1)]


def write_glas_layout(cfg: SyntheticGlandsConfig, folder: Path) -> None:
    """Render every image with its own seed stream, so image i does not depend on the set's size."""
    for prefix, number in _image_names(cfg):
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODES[prefix], number])
        image, anno = render(rng, cfg)
        Image.fromarray(image).save(folder / f"{prefix}_{number}.png")
        Image.fromarray(anno).save(folder / f"{prefix}_{number}_anno.png")
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")


def _publish(tmp: Path, final: Path) -> None:
    """Rename into place; losing the race to another process is fine, any other failure is not."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise


def ensure_synthetic_glands(cfg: SyntheticGlandsConfig = SYNTHETIC_GLANDS, base: Path | None = None) -> Path:
    """The folder holding the generated set, generating it first if no process has yet."""
    base = cache_base() if base is None else base
    final = base / f"{FOLDER_PREFIX}-{config_hash(cfg)}"
    if final.is_dir():
        return final
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=base))
        public_mode(tmp, folder=True)  # mkdtemp's 0700 would hide the shared cache from labmates
    except OSError as exc:
        raise DataError(base, f"cannot create the data cache ({exc}); set {CACHE_ENV} to a writable folder") from exc
    try:
        write_glas_layout(cfg, tmp)
        _publish(tmp, final)
    except OSError as exc:
        raise DataError(final, f"cannot write the synthetic data set ({exc}); set {CACHE_ENV} to a "
                               "writable folder") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_synthetic_glands(base: Path, split: str, cfg: SyntheticGlandsConfig = SYNTHETIC_GLANDS) -> list[Sample]:
    """One split of the generated set, read back through the GlaS loader."""
    return load_glas(ensure_synthetic_glands(cfg, base), split)
