"""The working scale each data set gets, and what it costs its instances (docs/working-scale.md).

For every data set given: the median equivalent diameter of its TRAINING instances, the scale
floor and working size the rule (bench/data/scale.py) chooses from it, and the ground truth's
instance score after the round trip to a working size and back (bench.imaging.round_trip, then
connected components of the foreground, AJI against the labelled instances), on the test images,
at native size, at the chosen size and at the 256-px cap the small preset had for every data set.

There is no real MoNuSeg copy here, so `--make-monuseg DIR` first writes MoNuSeg-format files
(1,000 x 1,000 LZW TIFFs + Aperio XML, 30 training and 14 test images as the release has) of
nucleus fields calibrated on the real release's numbers: median nucleus 22.5 px, a ground-truth
AJI of about 0.90 at native size (touching nuclei merge into one component), 0.85 at 512 px
and 0.73 at 256 px.

    python benchmarks/working_scale.py --glas /work/shared/data/GlaS --make-monuseg /tmp/monuseg \
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.data import get_dataset  # noqa: E402
from bench.data.monuseg_xml import rasterise  # noqa: E402
from bench.data.scale import SCALE_RULE, object_sizes, working_size  # noqa: E402
from bench.imaging import round_trip  # noqa: E402
from bench.metrics import aji, dice, instances_from_mask  # noqa: E402

CAP = 256  # the small preset's max_side


@dataclass(frozen=True)
class NucleusField:
    """A 40x H&E-like nucleus field; lengths in pixels. The defaults match the real MoNuSeg test
    release's ground-truth round trip (module docstring) within a few hundredths of AJI."""

    side: int = 1000
    nuclei: int = 600
    diameter: float = 22.5             # mean equivalent diameter
    diameter_sd: float = 5.0
    min_diameter: float = 8.0
    elongation: tuple[float, float] = (1.0, 1.5)  # major / minor axis
    vertices: int = 20
    near: float = 0.6                  # probability a nucleus is placed beside an earlier one
    near_distance: tuple[float, float] = (1.1, 1.5)  # its centre distance / (sum of radii)
    touch_probability: float = 0.25    # a nucleus may come this close to any other ...
    touch: float = 0.9                 # ... centre distance / (sum of radii): they touch
    apart: float = 1.1                 # otherwise at least this far apart
    attempts_per_nucleus: int = 100


def nucleus_polygons(cfg: NucleusField, rng: np.random.Generator) -> list[np.ndarray]:
    """Ellipse polygons (x, y vertices, 0.1-px precision as the training release writes them)."""
    polys: list[np.ndarray] = []
    centres: list[np.ndarray] = []
    radii: list[float] = []
    t = np.linspace(0, 2 * math.pi, cfg.vertices, endpoint=False)
    for _ in range(cfg.attempts_per_nucleus * cfg.nuclei):
        if len(polys) == cfg.nuclei:
            break
        d = max(cfg.min_diameter, rng.normal(cfg.diameter, cfg.diameter_sd))
        ecc = rng.uniform(*cfg.elongation)
        a, b = d / 2 * math.sqrt(ecc), d / 2 / math.sqrt(ecc)
        r = (a + b) / 2
        if centres and rng.random() < cfg.near:
            j = int(rng.integers(len(centres)))
            angle = rng.uniform(0, 2 * math.pi)
            c = centres[j] + (radii[j] + r) * rng.uniform(*cfg.near_distance) * np.array([math.cos(angle), math.sin(angle)])
        else:
            c = rng.uniform(a + 1, cfg.side - a - 1, 2)
        if not (a < c[0] < cfg.side - a and a < c[1] < cfg.side - a):
            continue
        if centres:
            ratio = np.hypot(*(np.array(centres) - c).T) / (np.array(radii) + r)
            if np.any(ratio < (cfg.touch if rng.random() < cfg.touch_probability else cfg.apart)):
                continue
        rot = rng.uniform(0, math.pi)
        x, y = a * np.cos(t), b * np.sin(t)
        polys.append(np.round(np.stack([c[0] + x * math.cos(rot) - y * math.sin(rot),
                                        c[1] + x * math.sin(rot) + y * math.cos(rot)], 1), 1))
        centres.append(c)
        radii.append(r)
    return polys


def render(instances: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An H&E-like RGB image of an instance map: pink stroma, purple nuclei, pixel noise."""
    stroma, nucleus = np.array([228, 160, 200.0]), np.array([95, 50, 140.0])
    image = np.where((instances > 0)[..., None], nucleus, stroma) + rng.normal(0, 12, (*instances.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def monuseg_xml(polygons: Sequence[np.ndarray]) -> str:
    """One Aperio `Region` of `Vertex` points per nucleus, as the release writes them."""
    regions = "".join(f'<Region Id="{i}" Type="0" Zoom="1"><Attributes/><Vertices>'
                      + "".join(f'<Vertex X="{x:g}" Y="{y:g}" Z="0"/>' for x, y in p) + "</Vertices></Region>"
                      for i, p in enumerate(polygons, start=1))
    return ('<?xml version="1.0" encoding="utf-8"?><Annotations MicronsPerPixel="0.252100">'
            '<Annotation Id="1" Name="" Type="4"><Attributes/><Regions><RegionAttributeHeaders/>'
            f"{regions}</Regions><Plots/></Annotation></Annotations>")


def write_case(image_dir: Path, xml_dir: Path, stem: str, cfg: NucleusField, seed: int) -> None:
    """`stem`.tif (LZW RGB) and `stem`.xml of one nucleus field."""
    rng = np.random.default_rng(seed)
    polys = nucleus_polygons(cfg, rng)
    image_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    image = render(rasterise(polys, cfg.side, cfg.side), rng)
    Image.fromarray(image).save(image_dir / f"{stem}.tif", compression="tiff_lzw")
    (xml_dir / f"{stem}.xml").write_text(monuseg_xml(polys))


def write_monuseg(root: Path, cfg: NucleusField = NucleusField(), n_train: int = 30, n_test: int = 14,
                  seed: int = 0) -> Path:
    """A MoNuSeg root: `train/` in the training release's layout, `test/` flat as the test release."""
    for i in range(n_train):
        write_case(root / "train" / "Tissue Images", root / "train" / "Annotations", f"TCGA-TRAIN-{i + 1}",
                   cfg, seed * 1000 + i)
    for i in range(n_test):
        write_case(root / "test", root / "test", f"TCGA-TEST-{i + 1}", cfg, seed * 1000 + 500 + i)
    return root


def round_trip_scores(instances: np.ndarray, size: tuple[int, int]) -> tuple[float, float]:
    """(AJI, foreground Dice) of the ground truth after the round trip to `size`."""
    back = round_trip(instances > 0, size)
    return aji(instances, instances_from_mask(back)), dice(back, (instances > 0).astype(np.int64))


def report(dataset: str, root: str, cap: int = CAP, sides: Sequence[int] = ()) -> dict[str, Any]:
    """The rule's choice for one data set, and the test ground truth's AJI at native, chosen and cap
    sizes (and at each long side of `sides`, with the median training instance's size there)."""
    sizes = object_sizes(dataset, root)
    floor = sizes.floor()
    test = get_dataset(dataset, root, "test")
    rows: dict[str, list[tuple[float, float]]] = {"native": [], "chosen": [], "cap": []}
    rows.update({f"side{side}": [] for side in sides})
    chosen_sides: set[int] = set()
    for s in test:
        assert s.instances is not None
        hw = (s.semantic.shape[0], s.semantic.shape[1])
        chosen = working_size(hw, cap, floor)
        chosen_sides.add(max(chosen))
        rows["native"].append(round_trip_scores(s.instances, hw))
        rows["chosen"].append(round_trip_scores(s.instances, chosen))
        rows["cap"].append(round_trip_scores(s.instances, working_size(hw, cap)))
        for side in sides:
            rows[f"side{side}"].append(round_trip_scores(s.instances, working_size(hw, side)))
    return {"dataset": dataset, "root": root, "train_images": sizes.images, "train_instances": sizes.instances,
            "median_diameter_px": sizes.median_diameter_px, "min_diameter_px": SCALE_RULE.min_diameter_px,
            "floor": floor, "cap": cap, "chosen_long_sides": sorted(chosen_sides),
            "test_images": len(test), **{f"aji_{k}": float(np.mean([a for a, _ in v])) for k, v in rows.items()},
            **{f"dice_{k}": float(np.mean([d for _, d in v])) for k, v in rows.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glas", help="a GlaS root (release layout)")
    ap.add_argument("--monuseg", help="a MoNuSeg root (release layout)")
    ap.add_argument("--make-monuseg", help="write MoNuSeg-format nucleus fields here first, then report them")
    ap.add_argument("--sides", default="", help="also the AJI at these long sides, e.g. 512,640,768")
    ap.add_argument("--json", help="also write the reports here")
    args = ap.parse_args(argv)
    roots = [("glas", args.glas), ("monuseg", args.monuseg)]
    if args.make_monuseg:
        roots.append(("monuseg", str(write_monuseg(Path(args.make_monuseg)))))
    sides = [int(x) for x in args.sides.split(",") if x]
    reports = [report(name, root, sides=sides) for name, root in roots if root]
    if not reports:
        ap.error("give --glas, --monuseg or --make-monuseg")
    print(f"rule: median training instance >= {SCALE_RULE.min_diameter_px:g} px; cap {CAP} px; "
          "AJI of the test ground truth after the round trip (connected components)")
    for r in reports:
        print(f"{r['dataset']} ({r['root']}): median {r['median_diameter_px']:.1f} px over {r['train_instances']} "
              f"training instances -> floor {r['floor']:.3f}, long side {r['chosen_long_sides']} | AJI native "
              f"{r['aji_native']:.3f}, chosen {r['aji_chosen']:.3f}, cap {r['aji_cap']:.3f} | Dice chosen "
              f"{r['dice_chosen']:.3f}, cap {r['dice_cap']:.3f}")
        for side in sides:  # the median instance there, for an image of the data set's largest side
            print(f"  long side {side}: AJI {r[f'aji_side{side}']:.3f}, Dice {r[f'dice_side{side}']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"field": asdict(NucleusField()), "reports": reports}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
