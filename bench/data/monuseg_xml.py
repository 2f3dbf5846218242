"""MoNuSeg annotation XML: nucleus polygons and their rasterisation to an instance map.

The file holds `<Annotations><Annotation><Regions><Region><Vertices><Vertex X=".." Y=".."/>`;
every Region is one nucleus. Coordinates are floats (training release) or integers (test release).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from bench.errors import DataError

MIN_POLYGON_VERTICES = 3  # fewer vertices enclose no area; such Regions are skipped


def parse_polygons(xml_path: Path) -> list[np.ndarray]:
    """One (k, 2) float array of (x, y) vertices per Region, in file order."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(xml_path, f"cannot parse MoNuSeg annotation XML: {exc}") from exc
    if root.tag != "Annotations":
        raise DataError(xml_path, f"not a MoNuSeg annotation file: root element is <{root.tag}>, "
                                  "expected <Annotations>")
    polygons = []
    for region in root.findall("./Annotation/Regions/Region"):
        vertices = region.findall("./Vertices/Vertex")
        if len(vertices) < MIN_POLYGON_VERTICES:
            continue
        polygons.append(_vertices(xml_path, region, vertices))
    return polygons


def _vertices(xml_path: Path, region: ET.Element, vertices: list[ET.Element]) -> np.ndarray:
    try:
        return np.array([(float(v.attrib["X"]), float(v.attrib["Y"])) for v in vertices], dtype=np.float64)
    except (KeyError, ValueError) as exc:
        raise DataError(xml_path, f"Region Id={region.get('Id', '?')}: vertex without numeric X/Y "
                                  f"({exc})") from exc


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> tuple[slice, slice, np.ndarray]:
    """Pixels whose centre (integer x, y) lies inside the polygon (even-odd rule), within its box.

    Pixel centres at integer coordinates is the convention of MATLAB's poly2mask and of
    skimage.draw.polygon, which MoNuSeg preprocessing uses; vertices keep their float precision.
    """
    x, y = polygon[:, 0], polygon[:, 1]
    r0, r1 = max(0, int(np.ceil(y.min()))), min(height - 1, int(np.floor(y.max())))
    c0, c1 = max(0, int(np.ceil(x.min()))), min(width - 1, int(np.floor(x.max())))
    if r0 > r1 or c0 > c1:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), bool)
    py = np.arange(r0, r1 + 1, dtype=np.float64)[:, None, None]
    px = np.arange(c0, c1 + 1, dtype=np.float64)[None, :, None]
    x1, y1, x2, y2 = x, y, np.roll(x, -1), np.roll(y, -1)
    crosses = (y1 > py) != (y2 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    inside = (np.count_nonzero(crosses & (px < x_at), axis=-1) % 2) == 1
    return slice(r0, r1 + 1), slice(c0, c1 + 1), inside


def rasterise(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """H x W int64 instance map, polygon i -> id i+1; where polygons overlap the earlier id wins,
    as in the organisers' rasteriser. Parts outside the image are clipped."""
    canvas = np.zeros((height, width), np.int64)
    for label, polygon in enumerate(polygons, start=1):
        rows, cols, inside = polygon_mask(polygon, height, width)
        window = canvas[rows, cols]
        window[inside & (window == 0)] = label
    return canvas
