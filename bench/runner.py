"""The runner: a sweep becomes self-contained runs; each run writes exactly one record.

A `RunSpec` holds plain values and paths, and, built once on first use, the method's frozen
Config and the data's content fingerprint (bench.data.fingerprint): its run id follows from
them. It pickles with both (Slurm ships it as is), so a worker needs nothing but the spec to do
its job and never builds the Config again. The record, written atomically as the run's very last
act, is the commit point: a run with a record is done, a run without one is redone, and a kill
at any moment can neither lose a finished run nor leave half a record behind. A run is done under
its claim (a flock on `locks/<run_id>.lock`, released by the OS if the worker dies), so two
processes sharing an output folder never do the same run at once: the second moves on and, at the
end, waits for the first (and does the run itself if the first died without its record).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, cast

import numpy as np
import torch
from PIL import Image

from bench import official, registry
from bench.config import SweepConfig
from bench.context import RunContext, run_checkpoint_path
from bench.corruptions import Robustness, evaluate_robustness
from bench.data import DATASETS, get_dataset, label_subset
from bench.data.fingerprint import data_identity, fingerprint
from bench.device import pick_device, seed_everything
from bench.distributed import main_says, sharding
from bench.errors import BenchError, ConfigError
from bench.evaluate import evaluate
from bench.limits import before_run_problems
from bench.plugin import Plugin, Predictor
from bench.progress import collect_histories
from bench.protocol import identity, subset_rule
from bench.provenance import SHORT_HASH, config_hash, machine_load, provenance
from bench.records import claim_path, is_done, record_path
from bench.resume import DEFAULT_CHECKPOINT_EVERY_S, loop_files, resumable
from bench.store import atomic_write_bytes, atomic_write_json, try_lock
from bench.thumbnails import thumbnails

if TYPE_CHECKING:
    from bench.linear_probe import LinearProbeConfig
    from bench.ssl import SSLMethod

log = logging.getLogger("bench")


@dataclass(frozen=True)
class RunSpec:
    """One cell x seed: everything a worker needs, as plain data."""

    dataset: str
    root: str | None
    fraction: float
    method: str
    seed: int
    preset: str
    output: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    robustness: Robustness | None = None  # also test the trained model on corrupted test images
    shards: int | None = None  # `[pretrain] shards`: how pre-training cuts its batch (not in run_id)
    smoke: Any = None  # a bench.smoke.run.SmokeRun: a few steps on a few images, measured (bench run --smoke)
    # Table 8: a linear probe of the frozen backbone on whole-image classes (bench.linear_probe), not
    # a segmentation run; the same runner, executors and record.
    linear_probe: LinearProbeConfig | None = None

    # Built on first use and then carried (pickled with the spec); `dataclasses.replace` makes a
    # new spec, which builds its own, so a changed field never meets a stale Config or id.
    @cached_property
    def config(self) -> Any:
        """The method's Config at `preset` with `params` applied (frozen): the one this run uses."""
        return registry.get(self.method).resolve_config(self.preset, self.params)

    def resolved_config(self) -> Any:
        return self.config

    def plugin(self) -> Plugin:
        """A fresh plugin of this run's method, made from its Config."""
        return registry.get(self.method)(self.config)

    @cached_property
    def data(self) -> str:
        """The content fingerprint of the run's data (`generated:NAME` for a generated set)."""
        return fingerprint(self.dataset, self.root)

    @cached_property
    def config_hash(self) -> str:
        """What determines the result apart from the seed (records of one cell share it)."""
        cfg = identity(self.config)
        fields = {"dataset": self.dataset, **data_identity(self.dataset, self.data), "fraction": self.fraction,
                  "method": self.method, "preset": self.preset, "config": cfg}
        if self.robustness is not None:  # only when set, so every other run keeps its id
            fields["robustness"] = self.robustness.identity()
        if self.smoke is not None:  # a smoke run never shares an id (or a record) with a real one
            fields.update(self.smoke.identity())
        if self.linear_probe is not None:
            fields["linear_probe"] = dataclasses.asdict(self.linear_probe)
        return config_hash(fields)

    @cached_property
    def run_id(self) -> str:
        cell = "linear" if self.linear_probe is not None else f"f{self.fraction:g}"
        return f"{self.dataset}-{cell}-{self.method}-s{self.seed}-{self.config_hash[:SHORT_HASH]}"

    @property
    def record_path(self) -> Path:
        return record_path(self.output, self.run_id)

    def execute(self, progress: bool = False, checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
                wait: bool = True) -> Path | None:
        """Do the run unless its record exists; return the record's path.

        Another process doing this run holds its claim: then wait for it (and redo the run if
        it ended without a record), or with `wait=False` return None at once.
        """
        if is_done(self.record_path):
            return self.record_path
        with try_lock(claim_path(self.output, self.run_id), wait) as claimed:
            if not claimed:
                return None
            if is_done(self.record_path):  # the other process finished it while we waited
                return self.record_path
            log.debug("%s: claimed, running", self.run_id)
            artefact = self.artefact()
            every_s = None if self.smoke is not None else checkpoint_every_s
            if artefact is None or artefact.exists():
                path = execute(self, progress, every_s)
            else:
                with self._resumable(artefact, checkpoint_every_s), sharding(self.shards):
                    path = execute(self, progress, every_s)
            self.remove_spent_checkpoints()
            return path

    def remove_spent_checkpoints(self) -> list[Path]:
        """Delete the resumable state no run can need once this one is done: that of every stage
        whose artefact is built (a run killed between the artefact and its record leaves it) and
        this run's own loops'. A stage still being built elsewhere has no artefact yet: kept."""
        spent = [p for a in self.artefacts() if a.exists() for p in loop_files(self.checkpoint_path(a))]
        spent += run_checkpoint_files(self.output, self.run_id)
        for path in spent:
            path.unlink(missing_ok=True)
        return spent

    def artefact(self) -> Path | None:
        """The last shared artefact this run reads (the one its own work waits for), if any."""
        stages = self.artefacts()
        return stages[-1] if stages else None

    def artefacts(self) -> list[Path]:
        """The shared artefacts this run reads, in build order: the pre-trained backbone (the path
        `SSLMethod.backbone` caches to, from the same key functions) and any stage a method
        builds on it (datasetddpm's sampled images), so a scheduler can build each in a job
        of its own before the runs that need them."""
        if registry.get(self.method).kind != "ssl":
            return []
        plugin = self.plugin()
        ctx = RunContext(spec=self, device=torch.device("cpu"))
        if self.linear_probe is not None:
            from bench.linear_probe import artefact_path

            return [] if plugin.cfg.checkpoint else [artefact_path(cast("SSLMethod", plugin), ctx, self.linear_probe)]
        return plugin.stage_artefacts(ctx)

    def on_data(self, dataset: str, root: str | None) -> RunSpec:
        return dataclasses.replace(self, dataset=dataset, root=root)

    def _resumable(self, artefact: Path, every_s: float) -> ContextManager[object]:
        """Checkpoint the pre-training of `artefact` (a smoke run measures a few steps and is not
        resumed: at paper size its checkpoint after the last step alone wrote 3.7 GB, 18 s here)."""
        return nullcontext() if self.smoke is not None else resumable(self.checkpoint_path(artefact), every_s)

    def checkpoint_path(self, artefact: Path) -> Path:
        """Where the in-progress pre-training of `artefact` keeps its resumable state."""
        return Path(self.output) / "checkpoints" / artefact.relative_to(Path(self.output) / "artefacts")

    def pretrain(self, checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
                 artefact: Path | None = None) -> Path | None:
        """Build only one shared artefact of this run (default: the last of `artefacts()`; no
        probe, no record); resumes from its checkpoint.

        Seeded like `execute`, so the artefact is the one the first run of the sweep would build.
        In a data-parallel group every rank calls this; rank 0 alone writes the artefact.
        """
        artefact = artefact or self.artefact()
        if artefact is None or main_says(artefact.exists()):
            return artefact
        seed_everything(self.seed)
        plugin = self.plugin()
        device = pick_device()
        with self._resumable(artefact, checkpoint_every_s), sharding(self.shards):
            if self.linear_probe is not None:
                from bench.linear_probe import pretrained_backbone

                pretrained_backbone(cast("SSLMethod", plugin), RunContext(spec=self, device=device), self.linear_probe)
            elif self.smoke is None:
                plugin.build_stage(artefact, RunContext(spec=self, device=device))
            else:
                from bench.smoke.run import measured_pretrain

                with measured_pretrain(self, artefact, device):
                    plugin.build_stage(artefact, RunContext(spec=self, device=device))
        return artefact


def expand(sweep: SweepConfig) -> list[RunSpec]:
    """datasets x fractions x methods x seeds, in an order that reuses pre-trained artefacts.
    Every method's config is checked where the sweep is made (bench.config.load_config and
    with_preset), so a rejected override never gets this far. Each spec builds its Config and
    run id here, once, and carries them."""
    runs = [
        RunSpec(dataset=d.name, root=d.root, fraction=f, method=m, seed=s, preset=sweep.preset,
                output=sweep.output, params=sweep.params.get(m, {}), shards=sweep.pretrain.shards)
        for d in sweep.datasets for m in sweep.methods for f in d.label_fractions for s in sweep.seeds
    ]
    for spec in runs:
        _ = spec.run_id  # built here, so an unreadable data file fails before anything runs
    return runs


def execute(spec: RunSpec, progress: bool = False, checkpoint_every_s: float | None = None) -> Path:
    wall, cpu, load = time.perf_counter(), time.process_time(), machine_load()
    device = pick_device()
    seed_everything(spec.seed)
    plugin_cls = registry.get(spec.method)
    plugin = spec.plugin()
    if spec.linear_probe is not None:  # whole-image classes (Table 8): its own body, the same record
        from bench.linear_probe import run_linear_probe

        ctx = RunContext(spec=spec, device=device, progress=progress, checkpoint_every_s=checkpoint_every_s)
        return write_record(spec, plugin, run_linear_probe(plugin, ctx, spec.linear_probe), (wall, cpu, load), device)
    train = get_dataset(spec.dataset, spec.root, "train")
    test = get_dataset(spec.dataset, spec.root, "test")
    labelled = [train[i] for i in label_subset(len(train), spec.fraction, spec.seed, subset_rule(plugin.cfg), train.names)]
    smoke = None
    if spec.smoke is not None:
        from bench.smoke.run import SmokeSession

        smoke = SmokeSession(spec, plugin.cfg, device, labelled, test)
        labelled, test = smoke.labelled, smoke.test
        del train  # the run holds the session's cut images, not the data set
    ctx = RunContext(spec=spec, device=device, progress=progress, checkpoint_every_s=checkpoint_every_s)
    trained: list[Predictor] = []
    caps = nullcontext() if smoke is None else official.capped(spec.smoke.settings.epochs, spec.smoke.settings.batch)
    with collect_histories() as history, caps:  # every stage's learning curve, pre-training included
        if spec.robustness is None:
            output = plugin.run(ctx, labelled, test)
        else:
            output = plugin.run(ctx, labelled, test, on_trained=trained.append)
    metrics, per_image = evaluate(test, output.predictions)
    save_predictions(Path(spec.output) / "predictions" / spec.run_id, test.names, output.predictions)
    robustness = None
    if spec.robustness is not None:
        if not trained:
            raise BenchError(f"{spec.method}: its run() handed back no predictor (on_trained), "
                             "which the robustness evaluation needs")
        robustness = evaluate_robustness(spec.robustness, test, output.predictions, trained[0])
        output.timings["robustness_s"] = robustness.pop("seconds")
    fields = {"kind": plugin_cls.kind, "labelled": [s.name for s in labelled], "n_test": len(test),
              "metrics": metrics, "per_image": per_image, "timings": output.timings, "extra": output.extra,
              "history": {**history, **output.history},
              "thumbnails": thumbnails(test.names, output.predictions)}
    if robustness is not None:
        fields["robustness"] = robustness
    return write_record(spec, plugin, fields, (wall, cpu, load), device, smoke)


def write_record(spec: RunSpec, plugin: Any, fields: dict[str, Any], start: tuple[float, float, Any],
                 device: torch.device, smoke: Any = None) -> Path:
    """The run's record, written atomically as its last act (the commit point): what every record
    holds (identity, config, timings, provenance) around `fields`, what the run measured. `start`
    is the run's (perf_counter, process_time, machine_load) as it began."""
    wall, cpu, load = start
    # cpu_s: this process's CPU seconds, every thread; beside total_s and the threads it tells
    # how much of the machine the run had
    timings = {**fields.pop("timings"), "total_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    record = {
        "run_id": spec.run_id, "dataset": spec.dataset, "root": spec.root, "data": spec.data,
        "fraction": spec.fraction, "method": spec.method, "seed": spec.seed, "preset": spec.preset,
        "config": dataclasses.asdict(plugin.cfg), "params": spec.params, **fields, "timings": timings,
        "provenance": provenance(spec.config_hash, spec.seed, device, load),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if smoke is not None:
        record["smoke"] = smoke.finish(timings)
    atomic_write_json(spec.record_path, record)
    log.info("%s: done in %.1f s", spec.run_id, timings["total_s"])
    return spec.record_path


def save_predictions(folder: Path, names: list[str], predictions: list[np.ndarray]) -> None:
    """Per-image class maps as PNG (uint8), for the qualitative figures."""
    for name, pred in zip(names, predictions):
        buf = io.BytesIO()
        Image.fromarray(pred.astype(np.uint8)).save(buf, format="PNG")
        atomic_write_bytes(folder / f"{name}.png", buf.getvalue())


def validate_data(sweep: SweepConfig, runs: list[RunSpec]) -> None:
    """Load every data set the pending runs need and make every check a Config leaves for
    before a run (files, slow name lists), so bad files fail before anything is written."""
    configs = [(spec.method, spec.resolved_config()) for spec in runs]
    sources = {(r.dataset, r.root) for r in runs if r.linear_probe is None}
    sources |= {(c.pretrain_dataset, c.pretrain_root) for _, c in configs if getattr(c, "pretrain_dataset", None)}
    for entry in sources:
        for split in ("train", "test"):
            get_dataset(entry[0], entry[1], split)
    for root in {r.root for r in runs if r.linear_probe is not None}:
        from bench.linear_probe import check_data

        check_data(root)
    checked: set[tuple[str, str]] = set()
    for method, cfg in configs:
        if (method, repr(cfg)) not in checked:
            checked.add((method, repr(cfg)))
            for name, problem in before_run_problems(cfg):
                raise ConfigError(sweep.source, f"params.{method}.{name}", problem)
        path = getattr(cfg, "checkpoint", None)
        if path and (method, path) not in checked:
            registry.get(method)(cfg).load_checkpoint(Path(path))  # fails with one clear line
            checked.add((method, path))


# The top-level folders of an output folder bench writes into (the trivial cache is `reference`).
OUTPUT_FOLDERS = ("records", "locks", "artefacts", "checkpoints", "predictions", "reference")


def check_output_layout(sweep: SweepConfig, runs: list[RunSpec]) -> None:
    """Fail now, naming the entry, where something in the output folder is in the way of what the
    pending `runs` will create (a plain file named `records`, a folder named like a record), so it
    is not found after the training."""
    output = Path(sweep.output)
    folders = [output / name for name in OUTPUT_FOLDERS + (("slurm",) if sweep.executor == "slurm" else ())]
    files: list[Path] = []
    for spec in runs:
        folders += [output / "predictions" / spec.run_id, run_checkpoint_path(output, spec.run_id, "stage").parent]
        files += [spec.record_path, claim_path(spec.output, spec.run_id)]
        for artefact in spec.artefacts():
            files.append(artefact)
            folders.append(spec.checkpoint_path(artefact).parent)
    for path in dict.fromkeys(folders):
        _in_the_way(path, output, folder=True, source=sweep.source)
    for path in dict.fromkeys(files):
        _in_the_way(path, output, folder=False, source=sweep.source)


def _in_the_way(path: Path, output: Path, folder: bool, source: str) -> None:
    """ConfigError if `path` (a folder or a file bench will create) or a folder above it, up to
    `output`, exists as something else."""
    parents = [p for p in path.parents if p != output and output in p.parents]
    for above in reversed(parents):
        if above.exists() and not above.is_dir():
            raise ConfigError(source, "output", f"{above} is a file where bench keeps a folder; move it away")
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(source, "output", f"{path} is a file where bench keeps a folder; move it away")
    if not folder and (path.is_symlink() or path.exists()) and not path.is_file():
        raise ConfigError(source, "output", f"{path} is not a regular file (bench writes one there); move it away")


def run_checkpoint_files(output: str | Path, run_id: str) -> list[Path]:
    """The files of a run's own resumable loops (RunContext.run_checkpoint), any stage."""
    folder = run_checkpoint_path(output, run_id, "stage").parent
    return sorted(folder.glob(f"{run_id}.*")) if folder.is_dir() else []


def pending(runs: list[RunSpec]) -> list[RunSpec]:
    return [r for r in runs if not is_done(r.record_path)]


def domain_of(dataset: str) -> str:
    return DATASETS[dataset].domain
