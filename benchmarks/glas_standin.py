"""A GlaS-shaped stand-in for machines the data may not travel to (a lent GPU): the real file
names and image sizes, smooth random content and one rectangular gland per image, so that smoke
runs there (benchmarks/gpu_check.py) count the real windows and labelled pixels in their
estimates. Its Dice means nothing; its step times and estimates do.

    python benchmarks/glas_standin.py sizes ../shared/data/GlaS sizes.json   # where the data is
    python benchmarks/glas_standin.py make sizes.json ../shared/data/GlaS     # where it is not
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data.glas import GLAS_LAYOUT  # noqa: E402

CELL = 8  # side of the random content's cells, in pixels


def read_sizes(root: Path) -> dict[str, list[int]]:
    """{stem: [height, width]} of every image (not annotation) in a GlaS folder."""
    sizes = {}
    for f in sorted(root.iterdir()):
        if f.suffix.lower() in (".png", ".bmp") and not f.stem.endswith(GLAS_LAYOUT.label_suffix):
            with Image.open(f) as im:
                sizes[f.stem] = [im.height, im.width]
    return sizes


def make(sizes: dict[str, list[int]], out: Path, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for stem, (h, w) in sizes.items():
        cells = (rng.random((h // CELL + 1, w // CELL + 1, 3)) * 255).astype(np.uint8)
        Image.fromarray(cells).resize((w, h)).save(out / f"{stem}.png")
        anno = np.zeros((h, w), np.uint8)
        anno[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        Image.fromarray(anno).save(out / f"{stem}{GLAS_LAYOUT.label_suffix}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("verb", choices=("sizes", "make"))
    parser.add_argument("source", type=Path, help="sizes: the GlaS folder; make: the sizes file")
    parser.add_argument("target", type=Path, help="sizes: the sizes file to write; make: the folder")
    args = parser.parse_args(argv)
    if args.verb == "sizes":
        args.target.write_text(json.dumps(read_sizes(args.source)))
    else:
        make(json.loads(args.source.read_text()), args.target)


if __name__ == "__main__":
    main()
