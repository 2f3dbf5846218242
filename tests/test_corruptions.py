"""The corruptions of fig8, and the robustness evaluation a run does with its trained model."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from bench.corruptions import (
    ALL_CORRUPTIONS,
    IMAGENET_C,
    PAPER_CORRUPTIONS,
    SEVERITIES,
    Robustness,
    corrupt,
    corruption_seed,
)
from bench.data import get_dataset
from bench.errors import ConfigError
from bench.provenance import config_hash
from bench.runner import RunSpec

# Per-method overrides that make a tiny run take about a second (as tests/test_executors.py).
FAST = {
    "unet": dict(max_side=64, crop=32, max_epochs=2, steps_per_epoch=3),
}


@pytest.fixture(scope="module")
def gland() -> np.ndarray:
    """A natural-looking 128 x 160 test image (flat noise would hide what blurs do)."""
    return get_dataset("synthetic-glands", None, "test")[0].image


def test_the_sets_are_fifteen_known_corruptions() -> None:
    assert len(PAPER_CORRUPTIONS) == len(set(PAPER_CORRUPTIONS)) == 15
    assert len(IMAGENET_C) == 15 and len(ALL_CORRUPTIONS) == 19
    assert set(PAPER_CORRUPTIONS) <= set(ALL_CORRUPTIONS)


@pytest.mark.parametrize("shape", [(64, 64, 3), (45, 83, 3), (20, 40, 3)])
def test_every_corruption_and_severity_keeps_size_and_dtype(shape: tuple[int, int, int]) -> None:
    """All 19 x 5, on a square, a non-square and a below-minimum (32 px) image."""
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for name in ALL_CORRUPTIONS:
        for severity in SEVERITIES:
            out = corrupt(image, name, severity, seed=3)
            assert out.shape == shape and out.dtype == np.uint8, (name, severity)


def test_deterministic_and_leaves_global_random_state_alone(gland: np.ndarray) -> None:
    np.random.seed(123)
    random.seed(123)
    before = (np.random.get_state()[1].copy(), random.getstate())
    for name in ALL_CORRUPTIONS:
        a, b = corrupt(gland, name, 3, seed=7), corrupt(gland, name, 3, seed=7)
        assert np.array_equal(a, b), name
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    noisy = [n for n in ALL_CORRUPTIONS if "noise" in n]
    assert all(not np.array_equal(corrupt(gland, n, 3, 1), corrupt(gland, n, 3, 2)) for n in noisy)
    assert np.array_equal(corrupt(gland, "gaussian_noise", 0, 1), gland)


def test_severity_increases_the_pixel_change(gland: np.ndarray) -> None:
    change = {n: [float(np.abs(corrupt(gland, n, s, 0).astype(float) - gland).mean()) for s in SEVERITIES]
              for n in ALL_CORRUPTIONS}
    mean = np.mean(list(change.values()), axis=0)
    assert np.all(np.diff(mean) > 0), mean
    # frost blends towards a bright texture less at high severity; its L1 change is not monotone
    grows = [n for n in ALL_CORRUPTIONS if change[n][-1] > change[n][0]]
    assert set(ALL_CORRUPTIONS) - set(grows) <= {"frost"}, change


def test_bad_input_fails_with_a_clear_message(gland: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown corruption 'fogg'"):
        corrupt(gland, "fogg", 1, 0)
    with pytest.raises(ValueError, match="severity 6"):
        corrupt(gland, "fog", 6, 0)
    with pytest.raises(ConfigError, match="robustness: corruptions: unknown corruption 'fogg'"):
        Robustness(corruptions=("fogg",))
    with pytest.raises(ConfigError, match="robustness: severities"):
        Robustness(severities=(0,))
    with pytest.raises(ConfigError, match="max_images"):
        Robustness(max_images=0)


def test_seeds_differ_per_image_and_are_stable() -> None:
    assert corruption_seed(0, "a", "fog", 1) == corruption_seed(0, "a", "fog", 1)
    assert len({corruption_seed(0, n, "fog", s) for n in "abc" for s in SEVERITIES}) == 15
    assert Robustness(max_images=3).chosen(8) == [0, 4, 7] and Robustness().chosen(5) == list(range(5))


def _spec(tmp_path, method: str, robustness: Robustness | None = None) -> RunSpec:
    return RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method=method, seed=0, preset="tiny",
                   output=str(tmp_path), params=FAST[method], robustness=robustness)


def test_run_ids_do_not_change_without_robustness(tmp_path) -> None:
    """The hash of a spec without `robustness` is exactly what it was before the field existed."""
    from bench.protocol import identity

    spec = _spec(tmp_path, "unet")
    legacy = config_hash({"dataset": spec.dataset, "root": spec.root, "fraction": spec.fraction,
                          "method": spec.method, "preset": spec.preset,
                          "config": identity(spec.resolved_config())})
    assert spec.config_hash == legacy
    rob = _spec(tmp_path, "unet", Robustness(corruptions=("fog",), severities=(1,)))
    assert rob.run_id != spec.run_id
    assert _spec(tmp_path, "unet", Robustness(corruptions=("fog",), severities=(1,))).run_id == rob.run_id
    assert _spec(tmp_path, "unet", Robustness(corruptions=("fog",), severities=(2,))).run_id != rob.run_id


def test_a_run_records_robustness_with_its_trained_model(tmp_path) -> None:
    """unet here; tests/test_exp_fig8.py runs an SSL method (ddpm) through the same path."""
    method = "unet"
    rob = Robustness(corruptions=("gaussian_noise", "contrast"), severities=(1, 5), max_images=3)
    path = _spec(tmp_path, method, rob).execute()
    record = json.loads(path.read_text())
    res = record["robustness"]
    assert len(res["images"]) == 3 and set(res["clean"]) >= {"dice", "iou"}
    assert set(res["corruptions"]) == {"gaussian_noise", "contrast"}
    for by_sev in res["corruptions"].values():
        assert set(by_sev) == {"1", "5"}
        assert all(0.0 <= m["iou"] <= 1.0 for m in by_sev.values())
    assert record["timings"]["robustness_s"] > 0
    plain = json.loads(_spec(tmp_path, method).execute().read_text())
    assert "robustness" not in plain and plain["metrics"] == record["metrics"]  # same model, same clean score
