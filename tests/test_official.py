"""The official protocol's rules, each pinned against a plain re-statement of the official code."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench import registry
from bench.config import load_config
from bench.context import RunContext
from bench.data import label_subset
from bench.data.types import Sample
from bench.errors import ConfigError, FieldError
from bench.official import LastBatchStop, ProbeLoop, probe_loop, train_loop
from bench.probe.official import random_crop, train_official_probe
from bench.probe.train import ProbeConfig
from bench.progress import collect_histories
from bench.protocol import identity, subset_rule


def reference_loop(losses: list[list[float]], start_epoch: int, max_break: int, counts: str) -> int:
    """The official loop on given per-step losses; returns the epoch it stops in. `counts`:
    what its check compares with start_epoch, "iterations" (train_unet.py) or "epochs"
    (train_interpreter_medical.py)."""
    iteration, break_count, best_loss = 0, 0, 10000000.0
    steps = len(losses[0])
    for epoch in range(len(losses)):
        for loss in losses[epoch]:
            iteration += 1
            if iteration % steps == 0 and (iteration if counts == "iterations" else epoch) > start_epoch:
                if loss < best_loss:
                    best_loss, break_count = loss, 0
                else:
                    break_count += 1
                if break_count > max_break:
                    return epoch
    return len(losses) - 1


def reference_train_unet(losses: list[list[float]], start_epoch: int, max_break: int) -> int:
    return reference_loop(losses, start_epoch, max_break, "iterations")


def reference_interpreter(losses: list[list[float]], start_epoch: int, max_break: int) -> int:
    return reference_loop(losses, start_epoch, max_break, "epochs")


def _sequences() -> list[list[list[float]]]:
    rng = np.random.default_rng(0)
    out = []
    for steps in (1, 3, 11):
        for trend in (0.0, 1e-3, 0.02):
            noise = rng.uniform(0, 1, (400, steps))
            out.append((noise + np.maximum(0, 2 - trend * np.arange(400))[:, None]).tolist())
    out.append([[1.0]] * 400)  # flat: never improves after the first check
    return out


@pytest.mark.parametrize("losses", _sequences())
def test_supervised_stop_equals_the_official_loop(losses: list[list[float]]) -> None:
    loop = train_loop("glas")
    stop, iterations, stopped_at = LastBatchStop(loop.start_iteration, loop.max_break), 0, len(losses) - 1
    for epoch, epoch_losses in enumerate(losses):  # as SupervisedMethod.train_official drives it
        iterations += len(epoch_losses)
        if stop.check(iterations, epoch_losses[-1]):
            stopped_at = epoch
            break
    assert stopped_at == reference_train_unet(losses, loop.start_iteration, loop.max_break)


@pytest.mark.parametrize("losses", _sequences())
def test_probe_stop_equals_the_official_loop(losses: list[list[float]]) -> None:
    for dataset in ("glas", "monuseg"):
        loop = probe_loop(dataset)
        stop, stopped_at = LastBatchStop(loop.start_epoch, loop.max_break), len(losses) - 1
        for epoch, epoch_losses in enumerate(losses):  # as train_official_probe drives it
            if stop.check(epoch, epoch_losses[-1]):
                stopped_at = epoch
                break
        assert stopped_at == reference_interpreter(losses, loop.start_epoch, loop.max_break)


def test_official_numbers_are_the_configs() -> None:
    assert (train_loop("glas").start_iteration, train_loop("glas").max_break) == (30, 50)
    assert (train_loop("monuseg").start_iteration, train_loop("monuseg").max_break, train_loop("monuseg").batch) == (100, 60, 4)
    assert (probe_loop("glas").crops_per_step, probe_loop("glas").start_epoch, probe_loop("glas").max_break) == (1, 40, 20)
    assert (probe_loop("monuseg").crops_per_step, probe_loop("monuseg").start_epoch) == (16, 30)
    assert probe_loop("synthetic-glands") == probe_loop("glas")


def test_a_resumed_stop_stays_stopped() -> None:
    stop = LastBatchStop(0, 0)
    assert not stop.check(1, 1.0) and stop.check(2, 1.0)
    again = LastBatchStop(0, 0)
    again.load_state_dict(stop.state_dict())
    assert again.stopped and again.best == 1.0


def test_crops_differ_from_step_to_step_and_are_reproducible() -> None:
    image, labels = torch.rand(3, 50, 70), torch.randint(0, 2, (50, 70))
    gen = torch.Generator().manual_seed(0)
    crops = [random_crop(image, labels, 16, 255, gen)[0] for _ in range(8)]
    assert len({tuple(c.flatten()[:5].tolist()) for c in crops}) == 8
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop(image, labels, 16, 255, gen)[0], crops[0])
    small, small_labels = random_crop(image[:, :10, :10], labels[:10, :10], 16, 255, gen)
    assert small.shape == (3, 16, 16) and int((small_labels == 255).sum()) == 16 * 16 - 100


def test_the_official_probe_is_one_classifier_and_extracts_every_step() -> None:
    calls: list[torch.Tensor] = []

    def features(crops: torch.Tensor) -> torch.Tensor:  # a fixed random projection of the pixels
        calls.append(crops.clone())
        return torch.cat([crops, crops.mean(1, keepdim=True) ** 2], dim=1)

    rng = np.random.default_rng(0)
    images = [(torch.rand(3, 80, 80), rng.integers(0, 2, (80, 80))) for _ in range(3)]  # 65^2 crop positions
    loop = ProbeLoop(crops_per_step=2, start_epoch=1, max_break=1, max_epochs=30)  # under History's point budget
    with collect_histories() as history:
        probe = train_official_probe(features, 4, images, loop, 16, 2, ProbeConfig.medical(), seed=0,
                                     ignore_index=255, device=torch.device("cpu"))
    assert probe.members == 1 and not probe.training
    epochs = len(history["probe"]["step"])
    assert len(calls) == 2 * epochs  # ceil(3 / 2) steps an epoch, one extraction each
    assert len({tuple(c.flatten().tolist()) for c in calls}) >= len(calls) - 1  # fresh crops (a repeat: 1 in ~10^3)
    losses = [[loss] for loss in history["probe"]["loss"]]
    assert epochs - 1 == reference_interpreter(losses + [[math.inf]] * 5, loop.start_epoch, loop.max_break)


def test_sorted_subset_is_the_first_n_by_name() -> None:
    names = [f"train_{i}" for i in range(1, 86)]
    rng = np.random.default_rng(1)
    shuffled = [names[i] for i in rng.permutation(85)]
    chosen = [shuffled[i] for i in label_subset(85, 0.1, 7, "sorted", shuffled)]
    assert sorted(chosen) == sorted(names)[:8] == ["train_1", "train_10", "train_11", "train_12", "train_13",
                                                    "train_14", "train_15", "train_16"]
    assert label_subset(85, 0.1, 0, "sorted", shuffled) == label_subset(85, 0.1, 9, "sorted", shuffled)
    with pytest.raises(ValueError):
        label_subset(85, 0.1, 0, "sorted")


@pytest.mark.parametrize("method", ["unet", "mdm"])
def test_official_pins_and_refuses_contradicting_overrides(method: str) -> None:
    cls = registry.get(method)
    converged = cls.resolve_config("small")
    official = cls.resolve_config("small", {"protocol": "official"})
    assert converged.protocol == "converged" and subset_rule(converged) == "random"
    assert subset_rule(official) == "sorted"
    field, value = ("val_fraction", 0.2) if method == "unet" else ("l2_unit_rms", True)
    assert getattr(converged, field) == value and getattr(official, field) != value
    with pytest.raises(FieldError, match=f"params.{method}.{field}.*protocol 'official'"):
        cls.resolve_config("small", {"protocol": "official", field: value})
    assert cls.resolve_config("small", {"protocol": "official", "subset": "random"}).subset == "random"


@pytest.mark.parametrize("method", ["unet", "mdm", "mae"])
def test_converged_identity_has_no_new_fields(method: str) -> None:
    cfg = registry.get(method).resolve_config("small")
    assert "protocol" not in identity(cfg) and "subset" not in identity(cfg)
    assert identity(replace(cfg, protocol="official"))["protocol"] == "official"


def test_top_level_protocol_sets_every_method_unless_its_params_do(tmp_path: Path) -> None:
    (tmp_path / "bench.toml").write_text(
        'preset = "tiny"\nprotocol = "official"\nmethods = ["unet", "mdm"]\n'
        '[[datasets]]\nname = "synthetic-glands"\n[params.mdm]\nprotocol = "converged"\n')
    sweep = load_config(tmp_path / "bench.toml")
    assert sweep.params["unet"]["protocol"] == "official" and sweep.params["mdm"]["protocol"] == "converged"
    with pytest.raises(ConfigError, match="protocol"):
        load_config(tmp_path / "bench.toml", ["protocol=best"])
    override = load_config(tmp_path / "bench.toml", ["params.unet.protocol=converged"])
    assert override.params["unet"]["protocol"] == "converged"


@dataclass
class _Spec:
    dataset: str = "synthetic-glands"
    root: str | None = None
    fraction: float = 1.0
    method: str = "unet"
    seed: int = 0
    preset: str = "tiny"
    output: str = "."
    run_id: str = "x"

    def checkpoint_path(self, artefact: Path) -> Path:
        return artefact

    def on_data(self, dataset: str, root: str | None) -> Any:
        return self


def test_official_supervised_loop_stops_as_the_official_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real loop, real steps; the loss it sees is scripted (falling, then noisy and flat), so
    where it stops does not depend on how fast this CPU's arithmetic lets the network converge."""
    from bench.progress import SETTINGS

    monkeypatch.setattr(SETTINGS, "max_points", 100_000)  # one history point per epoch
    plugin = registry.create("unet", "tiny", {"protocol": "official"})
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        image = rng.integers(0, 255, (48, 48, 3)).astype(np.uint8)
        samples.append(Sample(f"s{i}", image, (image[..., 0] > 128).astype(np.int64)))
    script = iter((np.maximum(0.2, 1 - 0.01 * np.arange(5000)) + rng.uniform(0, 0.05, 5000)).tolist())
    real_step = plugin._step  # type: ignore[attr-defined]

    def scripted_step(*args: Any, **kwargs: Any) -> torch.Tensor:
        real_step(*args, **kwargs)
        return torch.tensor(next(script))

    monkeypatch.setattr(plugin, "_step", scripted_step)
    ctx = RunContext(spec=_Spec(), device=torch.device("cpu"))  # type: ignore[arg-type]
    with collect_histories() as history:
        model = plugin.train_official(samples, 2, 255, ctx)  # type: ignore[attr-defined]
    assert not model.training
    losses = [[loss] for loss in history["unet train"]["loss"]]  # batch 8 > 3 images: one step an epoch
    loop = train_loop("glas")
    assert loop.start_iteration < len(losses) < loop.max_epochs  # the rule, not the cap, ended it
    assert len(losses) - 1 == reference_train_unet(losses + [[math.inf]] * 5, loop.start_iteration, loop.max_break)


@torch.no_grad()
def test_extraction_draws_shared_noise_fresh_masks_fresh_test_noise() -> None:
    from bench.ssl import Draws

    for method in ("mdm", "ddpm"):
        plugin = registry.create(method, "tiny")
        backbone = plugin.build_model().eval()
        x = torch.rand(1, 3, 64, 64).expand(2, 3, 64, 64).contiguous()  # two identical windows

        def read(draws: Draws | None) -> torch.Tensor:
            with plugin.drawing(draws):  # type: ignore[attr-defined]
                return plugin.extract(backbone, x, "medical")[0]  # type: ignore[attr-defined]

        fixed = read(None)
        assert torch.equal(fixed, read(None)) and torch.equal(fixed[0], fixed[1])  # the noise_seed draws
        train = Draws(torch.Generator().manual_seed(0), shared_seed=5)
        a, b = read(train), read(train)
        if method == "mdm":  # a fresh patch mask at every extraction, per window
            assert not torch.equal(a, b) and not torch.equal(a[0], a[1])
        else:  # one shared noise for every training extraction
            assert torch.equal(a, b) and torch.equal(a[0], a[1])
        test = read(Draws(torch.Generator().manual_seed(0)))
        assert not torch.equal(test[0], test[1])  # fresh noise (and masks) per window


def test_the_labelled_pixels_are_found_on_the_host_in_the_masks_order() -> None:
    from bench.probe.official import _labelled

    labels = torch.tensor([0, 255, 1, 1, 255, 0])
    y, keep = _labelled(labels, 255, torch.device("cpu"))
    assert keep is not None and keep.tolist() == [0, 2, 3, 5]
    assert torch.equal(y, labels[labels != 255])
    y, keep = _labelled(torch.tensor([0, 1, 1]), 255, torch.device("cpu"))
    assert keep is None and y.tolist() == [0, 1, 1]


@torch.no_grad()
def test_official_windows_predicted_together_equal_one_by_one() -> None:
    from bench.probe.mlp import EnsembleMLP
    from bench.probe.official import predict_logits
    from bench.probe.predict import chunk_logits

    torch.manual_seed(0)
    probe = EnsembleMLP(1, 12, 3, (16, 8), 0.02, 0.1, 1e-5, [torch.Generator().manual_seed(0)]).eval()
    windows = [[torch.rand(8, 8, 8), torch.rand(4, 16, 16)] for _ in range(3)]
    scales = [1.0, 0.5, 2.0]
    together = predict_logits(probe, windows, (32, 32), scales)
    assert together.shape == (3, 3, 32, 32)
    for b, (maps, scale) in enumerate(zip(windows, scales)):
        alone = torch.empty(3, 32, 32)
        for r0, r1, logits in chunk_logits(probe, maps, (32, 32), scale, 5):  # rows in chunks of 5
            alone[:, r0:r1] = logits[0].T.reshape(3, r1 - r0, 32)
        torch.testing.assert_close(together[b], alone)
