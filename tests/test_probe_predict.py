"""Projected prediction (first layer at native resolution, then upsampled) against the dense oracle."""
from __future__ import annotations

import pytest
import torch

from bench import registry
from bench.probe.mlp import EnsembleMLP
from bench.probe.predict import chunk_logits, predict_probs, predict_votes, predict_window_probs, predict_window_votes

SSL_METHODS = [n for n in registry.names() if registry.get(n).kind == "ssl"]


def _maps(seed: int, sizes: list[tuple[int, int, int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(c, h, w, generator=gen).half() for c, h, w in sizes]


def _probe_with_stats(dim: int, classes: int, hidden: tuple[int, ...], seed: int) -> EnsembleMLP:
    """A random ensemble whose BatchNorm running statistics are not the identity."""
    torch.manual_seed(seed)
    probe = EnsembleMLP(4, dim, classes, hidden, init_std=0.3)
    probe.train()
    with torch.no_grad():
        for _ in range(3):
            probe(torch.randn(256, dim) * 2 + 0.5)
    return probe.eval()


# Odd native sizes, a map at output size, maps sharing a size, a 1x1 map, a map narrower than tall.
SIZES = [(6, 8, 8), (5, 13, 9), (4, 24, 30), (3, 8, 8), (2, 1, 1), (2, 24, 11)]


@pytest.mark.parametrize("rows", [1, 7, None])
def test_projected_logits_equal_dense_logits(rows: int | None) -> None:
    maps = _maps(0, SIZES)
    probe = _probe_with_stats(sum(c for c, _, _ in SIZES), 3, (7, 5), seed=1)
    dense = list(chunk_logits(probe, maps, (24, 30), 0.3, rows, "dense"))
    proj = list(chunk_logits(probe, maps, (24, 30), 0.3, rows, "projected"))
    assert [(a, b) for a, b, _ in dense] == [(a, b) for a, b, _ in proj]
    for (_, _, want), (_, _, got) in zip(dense, proj):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not probe.training


def test_projected_votes_and_probs_match_dense_and_restore_mode() -> None:
    maps = _maps(2, SIZES)
    probe = _probe_with_stats(sum(c for c, _, _ in SIZES), 4, (9,), seed=3).train()
    for fn in (predict_votes, predict_probs):
        want = fn(probe, maps, (24, 30), scale=0.5, path="dense")
        got = fn(probe, maps, (24, 30), scale=0.5)
        assert got.shape == (4, 24, 30)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert probe.training  # prediction ran in eval mode and put the mode back


def test_wrong_channel_count_and_unknown_path_are_refused() -> None:
    probe = _probe_with_stats(10, 2, (4,), seed=4)
    with pytest.raises(ValueError, match="channels"):
        predict_votes(probe, _maps(5, [(9, 4, 4)]), (8, 8))
    with pytest.raises(ValueError, match="path"):
        predict_votes(probe, _maps(5, [(10, 4, 4)]), (8, 8), path="sparse")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SSL_METHODS)
def test_every_ssl_method_predicts_the_same_votes_by_both_paths(name: str, one_thread: None) -> None:
    """On each method's own tiny feature maps (an untrained backbone), votes agree on >= 99.99%."""
    cls = registry.get(name)
    method = cls(cls.presets["tiny"])
    torch.manual_seed(0)
    backbone = method.build_model().eval()
    w = method.cfg.window
    with torch.no_grad():
        maps = [m[0].float() for m in method.extract(backbone, torch.rand(1, 3, w, w), "medical")]
    maps = [m / m.std().clamp_min(1e-6) for m in maps]  # unit scale, as the L2 + RMS step leaves them
    probe = _probe_with_stats(sum(int(m.shape[0]) for m in maps), 2, (128, 32), seed=6)
    dense = predict_votes(probe, maps, (w, w), path="dense").argmax(0)
    proj = predict_votes(probe, maps, (w, w)).argmax(0)
    assert float((dense == proj).float().mean()) >= 0.9999


@pytest.mark.parametrize("budget", [None, 2**16, 2**22])  # one window a table / several a table and chunk
def test_windows_predicted_together_equal_one_by_one(budget: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.probe import predict

    if budget is not None:
        monkeypatch.setattr(predict, "chunk_budget", lambda device: budget)
    probe = _probe_with_stats(sum(c for c, _, _ in SIZES), 3, (7, 5), seed=8)
    windows = [_maps(10 + i, SIZES) for i in range(5)]
    scales = [0.3, 0.7, 1.0, 0.2, 0.9]
    got = predict_window_votes(probe, windows, (24, 30), scales)
    probs = predict_window_probs(probe, windows, (24, 30), scales, chunk_rows=7)
    assert got.shape == probs.shape == (5, 3, 24, 30)
    for i, (maps, scale) in enumerate(zip(windows, scales)):
        assert torch.equal(got[i], predict_votes(probe, maps, (24, 30), scale, chunk_rows=5))
        torch.testing.assert_close(probs[i], predict_probs(probe, maps, (24, 30), scale), atol=0, rtol=0)
    with pytest.raises(ValueError, match="one shape"):
        predict_window_votes(probe, [windows[0], windows[1][:-1] + [windows[1][-1][:, :5]]], (24, 30))
