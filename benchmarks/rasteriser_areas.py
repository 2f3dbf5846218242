"""How much the MoNuSeg rasteriser's boundary rule moves nucleus areas (docs/data.md, "MoNuSeg polygons").

bench rasterises annotation polygons with MATLAB poly2mask's rule, as the organisers did
(bench/data/monuseg_xml.py); `skimage.draw.polygon` instead keeps every pixel whose centre is on
the boundary. This draws nucleus-like polygons (ellipses about 20 px across, 16-32 jittered
vertices, rounded to integers as in the test release or kept as floats as in the training
release), writes them as MoNuSeg XML, reads them back with bench's parser and compares areas.

    python benchmarks/rasteriser_areas.py [--nuclei 500] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.data.monuseg_xml import parse_polygons, rasterise  # noqa: E402


@dataclass(frozen=True)
class NucleusShape:
    radius: tuple[float, float] = (6.0, 12.0)    # semi-axes, px (nuclei ~20 px across)
    vertices: tuple[int, int] = (16, 32)
    jitter: float = 0.6                          # px, radial noise of each vertex
    canvas: int = 48


def nuclei(n: int, shape: NucleusShape, integer: bool, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.uniform(*shape.radius, size=2)
        k = int(rng.integers(shape.vertices[0], shape.vertices[1] + 1))
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        rot = rng.uniform(0, np.pi)
        r = 1 + rng.normal(0, shape.jitter / max(a, b), k)
        x, y = a * r * np.cos(t), b * r * np.sin(t)
        c = shape.canvas / 2 + rng.uniform(-0.5, 0.5, 2)
        xy = np.stack([c[0] + x * np.cos(rot) - y * np.sin(rot), c[1] + x * np.sin(rot) + y * np.cos(rot)], 1)
        out.append(np.round(xy) if integer else np.round(xy, 4))
    return out


def as_xml(polygons: list[np.ndarray]) -> str:
    regions = "".join(f'<Region Id="{i}"><Vertices>' + "".join(f'<Vertex X="{x:g}" Y="{y:g}"/>' for x, y in p)
                      + "</Vertices></Region>" for i, p in enumerate(polygons, 1))
    return f"<Annotations><Annotation><Regions>{regions}</Regions></Annotation></Annotations>"


def shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def compare(polygons: list[np.ndarray], canvas: int) -> dict[str, float]:
    from skimage.draw import polygon as sk_polygon

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nuclei.xml"
        path.write_text(as_xml(polygons))
        parsed = parse_polygons(path)
    ours, theirs, exact, iou, iou_shifted = [], [], [], [], []
    for p in parsed:
        mask = rasterise([p], canvas, canvas) > 0
        ours.append(int(mask.sum()))
        exact.append(shoelace(p))
        sk = []
        for offset in (0.0, 1.0):  # skimage on the XML as 0-based, and as 1-based (as bench reads it)
            other = np.zeros_like(mask)
            other[sk_polygon(p[:, 1] - offset, p[:, 0] - offset, (canvas, canvas))] = True
            sk.append(other)
        theirs.append(int(sk[0].sum()))
        iou.append((mask & sk[0]).sum() / (mask | sk[0]).sum())
        iou_shifted.append((mask & sk[1]).sum() / (mask | sk[1]).sum())
    o, s, e = np.array(ours, float), np.array(theirs, float), np.array(exact)
    return {"polygon area": e.mean(), "bench (poly2mask)": o.mean(), "skimage": s.mean(),
            "skimage vs bench %": float(np.mean((s - o) / o) * 100),
            "bench vs polygon area %": float(np.mean((o - e) / e) * 100),
            "IoU bench-skimage": float(np.mean(iou)),
            "IoU bench-skimage(1-based)": float(np.mean(iou_shifted))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = NucleusShape()
    for integer in (True, False):
        stats = compare(nuclei(args.nuclei, shape, integer, args.seed), shape.canvas)
        print(f"{'integer' if integer else 'float'} vertices, {args.nuclei} nuclei: "
              + ", ".join(f"{k} {v:.2f}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
