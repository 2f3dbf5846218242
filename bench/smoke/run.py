"""`bench run --smoke`: every run of the sweep at its real shapes, for a handful of steps.

A smoke run is an ordinary `RunSpec` whose plugin config is overridden (`smoke_overrides`, the
one mechanism: step, epoch and optionally batch fields of the plugin's Config dataclass are
capped, whatever the method) and whose data is cut to a few images of one window each
(`SmokeSession`). Its spec carries a `SmokeRun`, which enters the config hash, so a smoke run
never shares a run id, a record or an artefact with a real run; its output goes to a separate
folder (`<output>/smoke/`), and its record carries a `smoke` field (measured step times, peak
memory, estimated full wall times) that every real table and report refuses.
"""
from __future__ import annotations

import contextlib
import dataclasses
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bench import registry
from bench.data.types import Dataset, Sample
from bench.protocol import official_pins
from bench.smoke.config import FOLDER, SmokeConfig
from bench.steptime import STEPS, peak_memory, reset_peak_memory

# The Config fields a smoke run caps, by what they count. A method whose loop has another
# count adds a field of one of these names to its Config (or a name here), never a special case.
STEP_FIELDS = ("train_steps", "stage1_steps", "stage2_steps", "steps_per_epoch",
               "sample_steps", "n_samples")  # datasetddpm: sampling steps, and samples drawn
EPOCH_FIELDS = ("max_epochs", "probe_max_epochs", "deeplab_epochs")
BATCH_FIELDS = ("train_batch", "stage1_batch", "stage2_batch", "batch", "sample_batch",
                "deeplab_batch")  # [smoke] batch
# [smoke] probe_ensemble caps `probe_ensemble`; estimates scale the probe by the member ratio.


@dataclass(frozen=True)
class SmokeRun:
    """Attached to a smoke RunSpec: the settings and the real run's params (what estimates scale to)."""

    settings: SmokeConfig
    real_params: dict[str, Any] = field(default_factory=dict, hash=False)

    def identity(self) -> dict[str, Any]:
        """The mark and the data cut: the capped counts are in the config overrides, which the
        config hash holds already (so a setting a method has no field for changes no run id)."""
        s = self.settings
        return {"smoke": {"labelled": s.labelled, "test": s.test, "one_window": s.one_window}}

    def pool(self, images: list[np.ndarray], cfg: Any) -> list[np.ndarray]:
        """The pre-training pool of a smoke run: as many images as it has labelled and test ones,
        cut like them (copies), its crops the real ones. The data sets' memoised loads are then
        forgotten, so the whole pool (2 GB of GlaS as float crops' source and labels) is not held
        while it pre-trains: what the real run holds beside the model is measured, not added."""
        from bench.data import clear_cache
        from bench.device import release_free_memory

        side = window_side(cfg) if self.settings.one_window else None
        kept = [np.ascontiguousarray(image[_centre(image.shape[:2], side)])
                for image in images[: self.settings.labelled + self.settings.test]]
        clear_cache()
        release_free_memory()
        return kept


def smoke_overrides(cfg: Any, domain: str, smoke: SmokeConfig) -> dict[str, Any]:
    """The Config overrides that make `cfg` a smoke run: counts capped, shapes kept."""
    names = {f.name for f in dataclasses.fields(cfg)}
    if getattr(cfg, "protocol", None) == "official":  # its pinned counts are capped by bench.official.capped
        names -= set(official_pins(type(cfg)))
    out: dict[str, Any] = {}
    for key in STEP_FIELDS:
        if key in names and getattr(cfg, key) > smoke.steps:
            out[key] = smoke.steps       # 0 (a stage switched off) stays 0
    for key in EPOCH_FIELDS:
        if key in names and (getattr(cfg, key) is None or getattr(cfg, key) > smoke.epochs):
            out[key] = smoke.epochs
    if smoke.batch is not None:
        for key in BATCH_FIELDS:
            if key in names and getattr(cfg, key) > smoke.batch:
                out[key] = smoke.batch
    if smoke.probe_ensemble is not None and "probe_ensemble" in names and cfg.probe_ensemble > smoke.probe_ensemble:
        out["probe_ensemble"] = smoke.probe_ensemble  # members are independent: a batch dimension
    if "probe_pixels_per_epoch" in names:  # a probe epoch of `steps` batches at the probe's real width
        width = cfg.probe_batch_medical if domain == "medical" else cfg.probe_batch_natural
        current = cfg.probe_pixels_per_epoch
        out["probe_pixels_per_epoch"] = min(current or smoke.steps * width, smoke.steps * width)
    return out


def smoke_specs(runs: list[Any], smoke: SmokeConfig, domain_of: Any) -> list[Any]:
    """One smoke spec per (data set, fraction, method) of `runs` (seeds change no shape)."""
    out, seen = [], set()
    for spec in runs:
        key = (spec.dataset, spec.root, spec.fraction, spec.method)
        if key in seen:
            continue
        seen.add(key)
        overrides = smoke_overrides(spec.config, domain_of(spec.dataset), smoke)
        out.append(dataclasses.replace(
            spec, output=str(Path(spec.output) / FOLDER), params={**spec.params, **overrides},
            smoke=SmokeRun(smoke, dict(spec.params))))
    return out


def window_side(cfg: Any) -> int | None:
    """The side of one window in a method's working pixels (None: whole images are resized)."""
    if getattr(cfg, "input_size", None):
        return None
    return int(getattr(cfg, "window", None) or cfg.crop)


def _centre(hw: tuple[int, ...], side: int | None) -> tuple[slice, slice]:
    """The centre side x side box of an h x w image (all of it where it is no larger)."""
    h, w = hw[0], hw[1]
    ch, cw = (h, w) if side is None else (min(h, side), min(w, side))
    y, x = (h - ch) // 2, (w - cw) // 2
    return slice(y, y + ch), slice(x, x + cw)


def cut(sample: Sample, side: int | None) -> Sample:
    """The centre side x side crop of a sample, copied (images no larger are kept whole)."""
    h, w = sample.semantic.shape
    if side is None or (h <= side and w <= side):
        return sample
    box = _centre((h, w), side)
    inst = None if sample.instances is None else np.ascontiguousarray(sample.instances[box])
    return dataclasses.replace(sample, image=np.ascontiguousarray(sample.image[box]),
                               semantic=np.ascontiguousarray(sample.semantic[box]), instances=inst)


def shape_only(sample: Sample) -> Sample:
    """A sample with the shapes of `sample` and no pixels (zero-stride views of one value): what
    the estimates read of the full sets (sizes, counts), without holding their images."""
    h, w = sample.semantic.shape
    return Sample(sample.name, np.broadcast_to(np.zeros((), np.uint8), (h, w, 3)),
                  np.broadcast_to(np.zeros((), np.int64), (h, w)))


class SmokeSession:
    """One smoke run inside `runner.execute`: its data, then its measurements for the record."""

    def __init__(self, spec: Any, cfg: Any, device: torch.device, labelled: list[Sample], test: Dataset) -> None:
        s: SmokeConfig = spec.smoke.settings
        self.spec, self.cfg, self.device = spec, cfg, device
        side = window_side(cfg) if s.one_window else None
        self.labelled = [cut(x, side) for x in labelled[: s.labelled]]
        self.test = dataclasses.replace(test, samples=[cut(x, side) for x in test.samples[: s.test]])
        # the full sets by their shapes only: the run holds the cut images, not the data set
        self.full_labelled = [shape_only(x) for x in labelled]
        self.full_test = dataclasses.replace(test, samples=[shape_only(x) for x in test.samples])
        STEPS.reset(enabled=True)
        reset_peak_memory(device)

    def finish(self, timings: dict[str, float]) -> dict[str, Any]:
        """The record's `smoke` field: settings, peak memory, step times, full-run estimates."""
        from bench.smoke.estimates import estimate_stages

        plugin_cls = registry.get(self.spec.method)
        real_cfg = plugin_cls.resolve_config(self.spec.preset, self.spec.smoke.real_params)
        memory = peak_memory(self.device)
        steps = dict(STEPS.steps)
        artefact = self.spec.artefact()
        if artefact is not None:  # pre-trained here: keep its steps for the runs that reuse it
            names = plugin_cls(self.cfg).schedules()
            built = {k: v for k, v in steps.items() if k in names}
            if built:
                _save_pretrain_steps(artefact, built, memory)
            else:  # built before (another fraction, or a Slurm pre-training job): its measurements
                built, before = _load_pretrain_steps(artefact)
                steps.update(built)
                memory = {k: max(v, before.get(k, 0)) for k, v in memory.items()}
        stages = estimate_stages(plugin_cls, real_cfg, self.cfg, self, steps, timings)
        STEPS.reset(enabled=False)
        usage = resource.getrusage(resource.RUSAGE_SELF)  # the whole process: a local smoke run has its own
        return {"settings": dataclasses.asdict(self.spec.smoke.settings), "device": str(self.device),
                "threads": torch.get_num_threads(), "peak_memory": memory, "stages": stages,
                "process_cpu_s": usage.ru_utime + usage.ru_stime}


def _steps_file(artefact: Path) -> Path:
    return artefact.with_name(artefact.name + ".steps.json")


def _save_pretrain_steps(artefact: Path, steps: dict[str, list[float]], memory: dict[str, int]) -> None:
    from bench.store import atomic_write_json

    atomic_write_json(_steps_file(artefact), {"steps": steps, "peak_memory": memory})


def _load_pretrain_steps(artefact: Path) -> tuple[dict[str, list[float]], dict[str, int]]:
    import json

    try:
        saved = json.loads(_steps_file(artefact).read_text())
        return saved["steps"], saved["peak_memory"]
    except (OSError, ValueError, KeyError):
        return {}, {}


@contextlib.contextmanager
def measured_pretrain(spec: Any, artefact: Path, device: torch.device) -> Iterator[None]:
    """Around a pre-training job of a smoke spec (`RunSpec.pretrain`): keep its steps and peak."""
    STEPS.reset(enabled=True)
    reset_peak_memory(device)
    try:
        yield
        _save_pretrain_steps(artefact, dict(STEPS.steps), peak_memory(device))
    finally:
        STEPS.reset(enabled=False)
