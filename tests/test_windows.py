"""Our sliding-window loop agrees with MONAI's sliding_window_inference (REFERENCE §2)."""
from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from bench.windows import scan_starts, sliding_window_predict, tile_positions


@pytest.mark.parametrize("hw", [(64, 64), (100, 130), (129, 192), (257, 300)])
def test_matches_monai_gaussian_blending(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, *hw)
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def position_dependent(crops: torch.Tensor, _positions=None) -> torch.Tensor:
        # Border effects of the conv make each window's output depend on where it was cut.
        with torch.no_grad():
            return conv(crops)

    ours = sliding_window_predict(x, 64, 0.2, 4, position_dependent)
    theirs = sliding_window_inference(x, (64, 64), 4, lambda c: position_dependent(c), overlap=0.2,
                                      mode="gaussian")
    assert ours.shape == (1, 2, *hw)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_small_images_are_padded_and_cropped_back() -> None:
    x = torch.rand(1, 3, 40, 50)
    out = sliding_window_predict(x, 64, 0.2, 2, lambda c, p: c[:, :2] * 2)
    torch.testing.assert_close(out, x[:, :2] * 2)


def test_positions_reach_the_predictor() -> None:
    seen: list[tuple[int, int]] = []
    sliding_window_predict(torch.rand(1, 3, 100, 130), 64, 0.2, 3, lambda c, p: (seen.extend(p), c[:, :1])[1])
    assert seen == [(y, x) for y in scan_starts(100, 64, 0.2) for x in scan_starts(130, 64, 0.2)]
    assert scan_starts(100, 64, 0.2) == [0, 36]  # stride 51 overshoots; the last window is flush


def test_tiles_cover_without_overlap_except_the_last() -> None:
    assert tile_positions(64, 64) == [0]
    assert tile_positions(150, 64) == [0, 64, 86]
    assert tile_positions(30, 64) == [0]
