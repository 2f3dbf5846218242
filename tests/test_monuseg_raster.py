"""The MoNuSeg rasteriser is MATLAB poly2mask (the organisers' rasteriser), in 0-based pixels."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from bench.data.monuseg_xml import parse_polygons, rasterise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from rasteriser_areas import NucleusShape, as_xml, compare, nuclei  # noqa: E402


def _mask(vertices: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    return rasterise([np.array(vertices, dtype=np.float64)], height, width) > 0


def _box(height: int, width: int, rows: range, cols: range) -> np.ndarray:
    out = np.zeros((height, width), bool)
    out[rows.start:rows.stop, cols.start:cols.stop] = True
    return out


def test_matlab_documentation_example() -> None:
    """poly2mask([4 10 10 4], [4 4 10 10], 12, 12) is printed in MATLAB's documentation with
    rows 5-10 and columns 5-10 set (1-based): bench rows and columns 4-9."""
    np.testing.assert_array_equal(_mask([(4, 4), (10, 4), (10, 10), (4, 10)], 12, 12),
                                  _box(12, 12, range(4, 10), range(4, 10)))


def test_integer_square_has_its_area() -> None:
    """(2,2)-(6,5): MATLAB centres x 3..6, y 3..5 (left/top edges out, right/bottom in): 12
    pixels, bench rows 2-4, columns 2-5. skimage.draw.polygon would give 20."""
    np.testing.assert_array_equal(_mask([(2, 2), (6, 2), (6, 5), (2, 5)], 8, 8),
                                  _box(8, 8, range(2, 5), range(2, 6)))


def test_float_square_takes_the_centres_inside() -> None:
    """(2.3,2.3)-(5.7,4.6): MATLAB centres x 3..5, y 3..4 are inside: bench rows 2-3, cols 2-4."""
    np.testing.assert_array_equal(_mask([(2.3, 2.3), (5.7, 2.3), (5.7, 4.6), (2.3, 4.6)], 8, 8),
                                  _box(8, 8, range(2, 4), range(2, 5)))


def test_diagonal_edge_through_centres() -> None:
    """Triangle (2,2) (8,2) (2,8): MATLAB centres with x > 2, y > 2 and x + y <= 10 (the
    hypotenuse, a down-right edge, keeps its centres): rows y=3..7 hold x=3..10-y."""
    expected = np.zeros((10, 10), bool)
    for y in range(3, 8):
        expected[y - 1, 2:10 - y] = True
    got = _mask([(2, 2), (8, 2), (2, 8)], 10, 10)
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == 15


def test_vertex_order_and_closing_vertex_do_not_matter() -> None:
    square = [(2.0, 2.0), (6.0, 2.0), (6.0, 5.0), (2.0, 5.0)]
    reference = _mask(square, 8, 8)
    np.testing.assert_array_equal(_mask(square[::-1], 8, 8), reference)
    np.testing.assert_array_equal(_mask(square + [square[0]], 8, 8), reference)


def test_polygon_past_the_image_edges_is_clipped() -> None:
    """A square from (-3,-3) to (5,20) on a 10 x 4 image: centres x 1..4 (cols 0-3), y 1..10."""
    np.testing.assert_array_equal(_mask([(-3, -3), (5, -3), (5, 20), (-3, 20)], 10, 4),
                                  np.ones((10, 4), bool))
    assert not _mask([(20, 20), (30, 20), (30, 30)], 10, 10).any()


def test_areas_against_skimage_on_nucleus_xml(tmp_path: Path) -> None:
    """On ~20 px nuclei, integer vertices (the test release): poly2mask keeps the polygon's area,
    skimage.draw.polygon adds a boundary ring (docs/data.md: +7.4%); with float vertices both agree."""
    pytest.importorskip("skimage")
    shape = NucleusShape()
    integer = compare(nuclei(200, shape, True, 0), shape.canvas)
    assert abs(integer["bench vs polygon area %"]) < 1.0
    assert 5.0 < integer["skimage vs bench %"] < 10.0
    floats = compare(nuclei(200, shape, False, 0), shape.canvas)
    assert abs(floats["skimage vs bench %"]) < 1.0
    path = tmp_path / "n.xml"
    path.write_text(as_xml(nuclei(3, shape, True, 1)))
    assert len(parse_polygons(path)) == 3
