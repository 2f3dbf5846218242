"""Full-run estimates from a smoke run: measured seconds per step (or window) x configured counts.

Each stage's count is derived from the real (non-smoke) config and the real data: pre-training
steps from the plugin's `schedules()`, probe steps from its epochs and the labelled pixels,
trainer steps from epochs x steps per epoch, windows from the images' sizes. Epoch counts are
the configured maxima, so estimates are upper bounds where early stopping ends a stage sooner.
Where the smoke capped a batch (or the probe's ensemble), the step time is scaled linearly to the
configured batch (members): an upper bound for the probe's prediction, whose upsampling is shared.
"""
from __future__ import annotations

import math
from statistics import median
from typing import Any, Sequence

from bench.data.scale import spec_floor
from bench.data.types import Sample
from bench.imaging import target_size
from bench.windows import tile_positions, window_grid


def per_step(durations: Sequence[float]) -> float:
    """Seconds per step: the median of the steps after the first (warm-up), else the first."""
    return float(median(durations[1:])) if len(durations) > 1 else float(durations[0])


def _working(sample: Sample, cfg: Any, floor: float) -> tuple[int, int]:
    if getattr(cfg, "input_size", None):
        return cfg.input_size, cfg.input_size
    return target_size(sample.semantic.shape, cfg.max_side, floor)


def feature_windows(samples: Sequence[Sample], cfg: Any, floor: float = 0.0) -> int:
    """Windows an SSL run extracts to fill its bank (non-overlapping tiles of each padded image);
    `floor`: the data set's scale floor (bench.data.scale)."""
    w = cfg.window
    return sum(len(tile_positions(max(h, w), w)) * len(tile_positions(max(x, w), w))
               for h, x in (_working(s, cfg, floor) for s in samples))


def predict_windows(samples: Sequence[Sample], cfg: Any, floor: float = 0.0) -> int:
    """Windows of sliding-window prediction (one per image for fixed-input networks)."""
    if getattr(cfg, "input_size", None):
        return len(samples)
    w = int(getattr(cfg, "window", None) or cfg.crop)
    return sum(len(window_grid((max(h, w), max(x, w)), w, cfg.overlap))
               for h, x in (_working(s, cfg, floor) for s in samples))


def _entry(unit: str, measured: int, seconds: float, full_units: int, scale: float = 1.0,
           note: str = "") -> dict[str, Any]:
    out = {"unit": unit, "measured": measured, "s_per_unit": seconds, "full_units": full_units,
           "batch_scale": scale, "full_s": seconds * full_units * scale}
    if note:
        out["note"] = note
    return out


def _per_window(seconds: float | None, windows: int) -> float | None:
    return None if seconds is None or windows < 1 else seconds / windows


def estimate_stages(plugin_cls: Any, real_cfg: Any, smoke_cfg: Any, session: Any,
                    steps: dict[str, list[float]], timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per stage: what was measured, seconds per unit, and the full run's units and seconds."""
    if plugin_cls.kind == "ssl":
        return _ssl(plugin_cls, real_cfg, smoke_cfg, session, steps, timings)
    return _supervised(real_cfg, smoke_cfg, session, steps, timings)


def _ssl(plugin_cls: Any, real_cfg: Any, smoke_cfg: Any, session: Any, steps: dict[str, list[float]],
         timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    floor = spec_floor(session.spec)  # the data set's scale floor, for smoke and real sizes alike
    real_scheds = plugin_cls(real_cfg).schedules()
    for name, sched in plugin_cls(smoke_cfg).schedules().items():
        if name in steps and name in real_scheds:  # absent: the artefact existed (built by another run)
            real = real_scheds[name]
            out[name] = _entry("step", len(steps[name]), per_step(steps[name]), real.steps,
                               real.batch / sched.batch, note="shared by every run of the data set")
    domain = session.full_test.domain
    s_win = _per_window(timings.get("features_s"), feature_windows(session.labelled, smoke_cfg, floor))
    if s_win is not None:
        out["features"] = _entry("window", feature_windows(session.labelled, smoke_cfg, floor), s_win,
                                 feature_windows(session.full_labelled, real_cfg, floor))
    members = real_cfg.probe_ensemble / smoke_cfg.probe_ensemble  # each member's work is its own
    if "probe" in steps:
        out["probe"] = _entry("step", len(steps["probe"]), per_step(steps["probe"]),
                              _probe_steps(real_cfg, session.full_labelled, domain, floor), members,
                              note="epochs at their cap; early stopping ends sooner")
    s_win = _per_window(timings.get("predict_s"), predict_windows(session.test, smoke_cfg, floor))
    if s_win is not None:
        out["predict"] = _entry("window", predict_windows(session.test, smoke_cfg, floor), s_win,
                                predict_windows(session.full_test, real_cfg, floor), members)
    return out


def _probe_steps(cfg: Any, labelled: Sequence[Sample], domain: str, floor: float) -> int:
    """Epochs x steps per epoch of the probe on every labelled pixel at the working size."""
    pixels = sum(h * w for h, w in (_working(s, cfg, floor) for s in labelled))
    if cfg.probe_pixels_per_epoch:
        pixels = min(pixels, cfg.probe_pixels_per_epoch)
    batch = cfg.probe_batch_medical if domain == "medical" else cfg.probe_batch_natural
    return int(cfg.probe_max_epochs) * max(1, math.ceil(pixels / batch))


def _split_sizes(n: int, fraction: float) -> tuple[int, int]:
    """(fit, validation) image counts of `supervised.split_validation`."""
    if n < 2 or fraction <= 0:
        return n, 0
    n_val = min(n - 1, max(1, round(n * fraction)))
    return n - n_val, n_val


def _supervised(real_cfg: Any, smoke_cfg: Any, session: Any, steps: dict[str, list[float]],
                timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    from bench.supervised import split_validation

    out: dict[str, dict[str, Any]] = {}
    floor = spec_floor(session.spec)
    n_fit, n_val = _split_sizes(len(session.full_labelled), real_cfg.val_fraction)
    if "train" in steps:
        per_epoch = (real_cfg.steps_per_epoch if real_cfg.epoch_mode == "steps"
                     else math.ceil(n_fit / real_cfg.batch))
        out["train"] = _entry("step", len(steps["train"]), per_step(steps["train"]),
                              real_cfg.max_epochs * per_epoch, real_cfg.batch / smoke_cfg.batch,
                              note="epochs at their cap; early stopping ends sooner")
    if "validate" in steps:
        _, smoke_val = split_validation(list(session.labelled), smoke_cfg.val_fraction, session.spec.seed)
        _, full_val = split_validation(list(session.full_labelled), real_cfg.val_fraction, session.spec.seed)
        s_win = _per_window(per_step(steps["validate"]), predict_windows(smoke_val, smoke_cfg, floor))
        if s_win is not None:
            out["validate"] = _entry("window", predict_windows(smoke_val, smoke_cfg, floor), s_win,
                                     real_cfg.max_epochs * predict_windows(full_val, real_cfg, floor),
                                     note="every epoch")
    s_win = _per_window(timings.get("predict_s"), predict_windows(session.test, smoke_cfg, floor))
    if s_win is not None:
        out["predict"] = _entry("window", predict_windows(session.test, smoke_cfg, floor), s_win,
                                predict_windows(session.full_test, real_cfg, floor))
    return out


def pretrain_stages(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stages of a smoke record that build the shared backbone (a Slurm pre-training job)."""
    return {k: v for k, v in record["smoke"]["stages"].items() if v.get("note", "").startswith("shared")}


def run_stages(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stages one run does itself (a Slurm ssl or supervised job)."""
    shared = pretrain_stages(record)
    return {k: v for k, v in record["smoke"]["stages"].items() if k not in shared}
