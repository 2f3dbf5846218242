"""MoNuSeg annotation XML: nucleus polygons and their rasterisation to an instance map.

The file holds `<Annotations><Annotation><Regions><Region><Vertices><Vertex X=".." Y=".."/>`;
every Region is one nucleus. Coordinates are floats (training release) or integers (test release).

Rasterisation reproduces the organisers' ground truth: their MATLAB script hands each Region's
X, Y to `poly2mask(X, Y, rows, cols)` unchanged, so the XML coordinates are read as MATLAB's
1-based pixel coordinates (pixel (r, c) has its centre at x = c, y = r), and MATLAB pixel (r, c)
is bench's 0-based pixel (r - 1, c - 1). poly2mask's rule (its documented algorithm, done here
exactly): a pixel is inside when its centre is inside the polygon, where the polygon is first
snapped to a grid of 5 x 5 subpixels per pixel (vertices rounded to the nearest subpixel corner,
edges traced between them on that grid), which decides the centres that lie on an edge. With
integer vertices a centre on a left or top edge is outside and one on a right or bottom edge is
inside, so a pixel-aligned rectangle gets exactly its area: the square (2,2)-(6,5) is 4 x 3 = 12
pixels, where skimage.draw.polygon, which keeps every centre on the boundary, gives 5 x 4 = 20.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from bench.errors import DataError

MIN_POLYGON_VERTICES = 3  # fewer vertices enclose no area; such Regions are skipped
SUBPIXELS = 5             # poly2mask's subpixel grid per pixel side (odd)


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


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """MATLAB's round: halves go away from zero (numpy's round goes to even)."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _trace(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected integer path through the closed vertex list (MATLAB's intline per edge,
    concatenated): each edge is stepped along its major axis from its lower end, the minor
    coordinate rounded, then put back in the edge's own direction."""
    x1, x2, y1, y2 = x[:-1], x[1:], y[:-1], y[1:]
    dx, dy = np.abs(x2 - x1), np.abs(y2 - y1)
    x_major = dx >= dy
    length = np.maximum(dx, dy)
    n = length.astype(np.int64) + 1
    seg = np.repeat(np.arange(len(n)), n)
    j = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    flip = np.where(x_major, x1 > x2, y1 > y2)[seg]
    i = np.where(flip, length[seg] - j, j).astype(np.float64)
    lo_x = np.where(np.where(x_major, x1 > x2, y1 > y2), x2, x1)[seg]
    lo_y = np.where(np.where(x_major, x1 > x2, y1 > y2), y2, y1)[seg]
    hi_x = np.where(np.where(x_major, x1 > x2, y1 > y2), x1, x2)[seg]
    hi_y = np.where(np.where(x_major, x1 > x2, y1 > y2), y1, y2)[seg]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(x_major[seg], (hi_y - lo_y) / (hi_x - lo_x), (hi_x - lo_x) / (hi_y - lo_y))
    major = x_major[seg]
    px = np.where(major, lo_x + i, _round_half_away(lo_x + slope * i))
    py = np.where(major, _round_half_away(lo_y + slope * i), lo_y + i)
    still = (length == 0)[seg]  # a repeated vertex is one point
    return np.where(still, x1[seg], px).astype(np.int64), np.where(still, y1[seg], py).astype(np.int64)


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> tuple[slice, slice, np.ndarray]:
    """MATLAB `poly2mask(X, Y, height, width)` of the XML vertices, in bench's 0-based pixels (see
    the module docstring), cut to the rows and columns it can touch: (rows, cols, inside)."""
    x, y = polygon[:, 0], polygon[:, 1]
    if x[-1] != x[0] or y[-1] != y[0]:
        x, y = np.append(x, x[0]), np.append(y, y[0])
    shift = (SUBPIXELS - 1) // 2
    sx, sy = _trace(_round_half_away(SUBPIXELS * (x - 0.5) + 1), _round_half_away(SUBPIXELS * (y - 0.5) + 1))
    # Horizontal edges of the subpixel path: where x changes, at the lower of the two y values.
    step = np.diff(sx)
    at = np.flatnonzero(step)
    xe = sx[at] - (step[at] < 0)
    ye = np.minimum(sy[at], sy[at + 1])
    # Keep the edges on a pixel's centre column; each toggles the columnwise parity from its row.
    centre = (xe + shift) % SUBPIXELS == 0
    cols = (xe[centre] + shift) // SUBPIXELS - 1
    rows = -((-(ye[centre] + shift)) // SUBPIXELS) - 1
    if rows.size == 0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), bool)
    last_row = min(height - 1, int(rows.max()))
    keep = (cols >= 0) & (cols < width) & (rows < height)
    cols, rows = cols[keep], np.maximum(rows[keep], 0)
    if cols.size == 0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), bool)
    r0, c0, c1 = int(rows.min()), int(cols.min()), int(cols.max())
    toggles = np.zeros((last_row - r0 + 1, c1 - c0 + 1), np.int64)
    np.add.at(toggles, (rows - r0, cols - c0), 1)
    inside = np.cumsum(toggles, axis=0) % 2 == 1
    return slice(r0, last_row + 1), slice(c0, c1 + 1), inside


def rasterise(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """H x W int64 instance map, polygon i -> id i+1; where polygons overlap the earlier id wins,
    as in the organisers' rasteriser. Parts outside the image are clipped."""
    canvas = np.zeros((height, width), np.int64)
    for label, polygon in enumerate(polygons, start=1):
        rows, cols, inside = polygon_mask(polygon, height, width)
        window = canvas[rows, cols]
        window[inside & (window == 0)] = label
    return canvas
