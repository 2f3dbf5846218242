"""The shared SSL probe pipeline: pre-train once, extract frozen features, train the pixel probe.

An SSL plugin only says how to pre-train its backbone and which feature maps to read out; the
rest of the protocol (REFERENCE §6: feature bank, per-image L2 normalisation on medical data,
the batched MLP ensemble, sliding-window prediction) is done here once for every method.
"""
from __future__ import annotations

import contextlib
import math
import time
from abc import abstractmethod
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.context import RunContext, RunOutput
from bench.data import pretrain_pool
from bench.data.fingerprint import data_identity
from bench.data.scale import scale_floor, scale_record, spec_floor
from bench.data.types import Dataset, Sample
from bench.device import autocast, prepare_batch, retained_memory
from bench.distributed import build_once
from bench.errors import ConfigError, FieldError
from bench.imaging import resize_image, resize_labels, scores_to_labels, target_size, to_tensor
from bench.limits import NON_NEGATIVE, POSITIVE, UNIT, Rule, Text, at_least, check_fields
from bench.official import probe_loop
from bench.plugin import Plugin, Predictor
from bench.pretrain import pool_floor
from bench.probe import EnsembleMLP, FeatureBank, ProbeConfig, global_l2_scale, predict_window_votes, train_probe
from bench.probe.feature_cache import CACHE as FEATURES, Entry
from bench.probe.official import predict_logits, train_official_probe
from bench.progress import add_histories, collect_histories
from bench.protocol import PROTOCOL_LEGACY, ProtocolName, SubsetRule, identity
from bench.provenance import config_hash
from bench.windows import pad_to_window, sliding_window_predict, tile_positions


def _known_dataset(name: str) -> str | None:
    from bench.data import DATASETS

    return None if name in DATASETS else f"unknown data set {name!r}; known: {', '.join(DATASETS)}"


def _existing_folder(path: str) -> str | None:
    return None if Path(path).is_dir() else f"folder {path} does not exist"


@dataclass(frozen=True)
class SSLConfig:
    """Knobs every SSL method shares; a plugin's Config subclasses this."""

    max_side: int | None = None          # downscale images whose longest side exceeds this
    window: int = 256                    # backbone input / sliding window size
    overlap: float = 0.2
    window_batch: int = 8
    pretrain_seed: int = 0
    checkpoint: str | None = None        # use these weights instead of pre-training
    probe_ensemble: int = 10
    probe_lr: float = 1e-3
    probe_batch_medical: int = 65536
    probe_batch_natural: int = 64
    probe_max_epochs: int = 100
    probe_patience_medical: int = 20     # epochs without a lower training loss
    probe_patience_natural: int = 50     # iterations without improvement past epoch 3
    probe_pixels_per_epoch: int | None = None
    l2_normalize_medical: bool = True
    l2_unit_rms: bool = False            # multiply the L2-normalised features by sqrt(numel), see below
    rare_class_pixels: int = 20          # natural data: rarer classes in an image are ignored
    pretrain_dataset: str | None = None  # pre-train on this data set, not the run's (CelebA-19 uses FFHQ-34)
    pretrain_root: str | None = None     # its root folder
    protocol: ProtocolName = "converged"  # converged: the probe above | official: bench.official's loop
    subset: SubsetRule | None = None     # labelled subset; None: the protocol's (official sorted, else random)

    # What protocol "official" fixes (REFERENCE §6): Adam 1e-3, per-crop L2 normalisation of the
    # medical features as they are (no rescaling), sliding windows overlapping by 0.2, and the
    # natural-image probe of ddpm-segmentation. The medical loop's own numbers (one classifier,
    # crops per step, stopping) are per data set (bench.official).
    OFFICIAL: ClassVar[dict[str, Any]] = dict(
        probe_lr=1e-3, overlap=0.2, l2_normalize_medical=True, l2_unit_rms=False, probe_batch_natural=64,
        probe_patience_natural=50, rare_class_pixels=20)
    LEGACY: ClassVar[dict[str, Any]] = dict(PROTOCOL_LEGACY)

    # What each field may hold (bench.limits; a plugin's Config adds its own fields' limits).
    LIMITS: ClassVar[dict[str, Rule]] = {
        "max_side": POSITIVE, "window": POSITIVE, "overlap": UNIT, "window_batch": POSITIVE,
        "pretrain_seed": NON_NEGATIVE,
        "checkpoint": Text("a weights file (resolved against the sweep file, which checks it exists)"),
        "probe_ensemble": POSITIVE, "probe_lr": POSITIVE, "probe_batch_medical": at_least(2),
        "probe_batch_natural": at_least(2), "probe_max_epochs": POSITIVE, "probe_patience_medical": POSITIVE,
        "probe_patience_natural": POSITIVE, "probe_pixels_per_epoch": at_least(2),
        "rare_class_pixels": NON_NEGATIVE,
        "pretrain_dataset": Text("a data set name", check=_known_dataset),
        "pretrain_root": Text("the pre-training data set's folder", before_run=_existing_folder),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        if self.pretrain_root is not None and self.pretrain_dataset is None:
            raise FieldError("pretrain_root", "set only together with pretrain_dataset (it is that data set's root)")
        for domain in ("medical", "natural"):  # the probe's own checks, now, not after pre-training
            try:
                self.probe(domain)
            except ConfigError as exc:
                raise FieldError(_PROBE_FIELDS.get((exc.key, domain), exc.key), exc.message) from None

    def probe(self, domain: str) -> ProbeConfig:
        """The probe protocol's settings for a data set of `domain` (medical or natural)."""
        medical = domain == "medical"
        return ProbeConfig(
            ensemble=self.probe_ensemble, lr=self.probe_lr,
            batch_pixels=self.probe_batch_medical if medical else self.probe_batch_natural,
            max_epochs=self.probe_max_epochs, patience=self.probe_patience_medical,
            patience_iters=self.probe_patience_natural,
            stop_rule="loss_plateau" if medical else "natural",
            pixels_per_epoch=self.probe_pixels_per_epoch,
        )


# ProbeConfig's field (and the domain) -> the SSLConfig field that sets it.
_PROBE_FIELDS = {
    **{(key, d): f"probe_{name}" for d in ("medical", "natural")
       for key, name in (("ensemble", "ensemble"), ("lr", "lr"), ("max_epochs", "max_epochs"),
                         ("pixels_per_epoch", "pixels_per_epoch"))},
    ("batch_pixels", "medical"): "probe_batch_medical", ("batch_pixels", "natural"): "probe_batch_natural",
    ("patience", "medical"): "probe_patience_medical", ("patience", "natural"): "probe_patience_medical",
    ("patience_iters", "medical"): "probe_patience_natural", ("patience_iters", "natural"): "probe_patience_natural",
}


# The probe settings every `tiny` preset shares: a 4-member ensemble trained for a few short
# epochs on unit-RMS features, so a run takes seconds on a 2-core CPU.
TINY_PROBE: dict[str, Any] = dict(
    max_side=192, window=64, window_batch=16, probe_ensemble=4, probe_batch_medical=4096,
    probe_max_epochs=8, probe_patience_medical=3, probe_pixels_per_epoch=32768, l2_unit_rms=True,
)


# The probe settings every `small` preset shares (docs/small-preset.md): images at most 256 px on
# their long side, 128-px windows, the protocol's ensemble of 10 and its loss-plateau stopping
# rule on 8,192-pixel batches, epochs of 65,536 sampled pixels, unit-RMS features.
SMALL_PROBE: dict[str, Any] = dict(
    max_side=256, window=128, window_batch=8, probe_ensemble=10, probe_batch_medical=8192,
    probe_max_epochs=40, probe_patience_medical=5, probe_pixels_per_epoch=65536, l2_unit_rms=True,
)


# Where pre-training data comes from, not how the backbone is trained: never part of the artefact
# key (the key hashes the source data set itself), so the source's own runs share the artefact.
PRETRAIN_SOURCE_FIELDS = ("pretrain_dataset", "pretrain_root")

# The SSLConfig fields that shape pre-training (in the artefact key); every other SSLConfig field
# (the probe_* fields, checkpoint, the feature read-out and the pre-training source) is probe-only.
# tests/test_registry_contract.py checks that every SSLConfig field is in exactly one of the two.
SSL_PRETRAIN_FIELDS = ("max_side", "window", "pretrain_seed")
SSL_PROBE_ONLY_FIELDS = (
    "overlap", "window_batch", "checkpoint", "probe_ensemble", "probe_lr", "probe_batch_medical",
    "probe_batch_natural", "probe_max_epochs", "probe_patience_medical", "probe_patience_natural",
    "probe_pixels_per_epoch", "l2_normalize_medical", "l2_unit_rms", "rare_class_pixels",
    "protocol", "subset", *PRETRAIN_SOURCE_FIELDS,
)


@dataclass
class Draws:
    """Where an extraction's random inputs come from under protocol "official" (outside it, every
    extraction takes the fixed draws of the Config's `noise_seed`): one noise image from
    `shared_seed` for every extraction (the official training's `share_noise`), or with None a
    fresh one from `gen` each time (its test); masks (MDM's) always fresh from `gen`."""

    gen: torch.Generator
    shared_seed: int | None = None


class SSLMethod(Plugin):
    """A self-supervised backbone read out by the shared pixel probe."""

    kind = "ssl"
    draws: Draws | None = None  # set by `drawing` for the extractions of the official protocol
    # A plugin's own Config fields that only change how features are read out (blocks, timesteps,
    # the extraction noise seed): changing them reuses the pre-trained backbone.
    probe_only_fields: ClassVar[tuple[str, ...]] = ()

    # --- what a plugin implements -------------------------------------------------------
    @abstractmethod
    def pretrain(self, images: list[np.ndarray], ctx: RunContext) -> dict[str, Any]:
        """Train the backbone on unlabelled images; return a state to save (torch-saveable).

        Each loop through `bench.pretrain.pretrain` gets a `desc` that is a key of `schedules()`
        (the contract runs the tiny pre-training and checks it)."""

    def load_backbone(self, state: dict[str, Any]) -> nn.Module:
        """The backbone with the pre-trained state (default: `build_model()` + load_state_dict)."""
        model = self.build_model()
        model.load_state_dict(state)
        return model

    @abstractmethod
    def extract(self, backbone: nn.Module, x: torch.Tensor, domain: str) -> list[torch.Tensor]:
        """x: B x 3 x w x w in [0, 1] -> the feature maps at native resolutions (B x C_i x h_i x w_i)."""

    @classmethod
    def definition_problems(cls) -> list[str]:
        out = super().definition_problems()
        config = getattr(cls, "Config", None)
        if isinstance(config, type) and is_dataclass(config):
            if not issubclass(config, SSLConfig):
                out.append(f"Config {config.__name__} does not subclass bench.ssl.SSLConfig")
            unknown = sorted(set(cls.probe_only_fields) - {f.name for f in fields(config)})
            if unknown:
                out.append(f"probe_only_fields names no Config field: {', '.join(unknown)}")
        return out

    @contextlib.contextmanager
    def drawing(self, draws: Draws | None) -> Iterator[None]:
        """Extractions inside take their random inputs from `draws` (see Draws)."""
        saved, self.draws = self.draws, draws
        try:
            yield
        finally:
            self.draws = saved

    def extraction_noise(self, x: torch.Tensor) -> torch.Tensor:
        """The noise of an extraction of batch x: one image for every window of the batch, from the
        Config's `noise_seed` or the draws' shared seed; with fresh draws, one per window."""
        d = self.draws
        seed = int(self.cfg.noise_seed) if d is None else d.shared_seed
        if seed is None:  # fresh draws (the official test: each window on its own)
            return torch.randn(x.shape, generator=d.gen).to(x.device, x.dtype)  # type: ignore[union-attr]
        noise = torch.randn((1, *x.shape[1:]), generator=torch.Generator().manual_seed(seed))
        return noise.to(x.device, x.dtype).expand_as(x)

    @classmethod
    def probe_only(cls) -> frozenset[str]:
        """Every Config field that never changes the pre-trained weights."""
        return frozenset(SSL_PROBE_ONLY_FIELDS) | frozenset(cls.probe_only_fields)

    def pretrain_identity(self) -> dict[str, Any]:
        """What determines the pre-trained weights (the artefact key): the config minus `probe_only()`."""
        return identity(self.cfg, self.probe_only())

    # --- the shared pipeline -------------------------------------------------------------
    def probe_config(self, domain: str) -> ProbeConfig:
        return self.cfg.probe(domain)

    def pretrain_context(self, ctx: RunContext) -> RunContext:
        """The run as pre-training sees it: with `pretrain_dataset` set, that data set and root.

        The artefact key and file then are exactly those of a run on that data set, so CelebA-19
        runs reuse the FFHQ-34 runs' backbone instead of training one of their own.
        """
        c = self.cfg
        if c.pretrain_dataset is None:
            return ctx
        return replace(ctx, spec=ctx.spec.on_data(c.pretrain_dataset, c.pretrain_root))

    def artefact_path(self, ctx: RunContext) -> Path:
        """Where the backbone of this run is cached: the one path the runner, the schedulers and
        `backbone` agree on (a CelebA-19 run's is the FFHQ-34 backbone's)."""
        source = self.pretrain_context(ctx)
        return source.artefact_path(self.name, source.artefact_key(self.name, self.pretrain_identity()))

    def backbone(self, ctx: RunContext) -> tuple[nn.Module, float, bool]:
        """The pre-trained backbone (built once per artefact key), its build time, and whether cached."""
        if self.cfg.checkpoint:
            state = self.load_checkpoint(Path(self.cfg.checkpoint))
            return self.load_backbone(state), 0.0, True
        source = self.pretrain_context(ctx)
        path = self.artefact_path(ctx)
        built: list[float] = []

        def build() -> dict[str, Any]:
            start = time.perf_counter()
            images = pretrain_pool(source.spec.dataset, source.spec.root)
            if ctx.spec.smoke is not None:  # a few steps need a few images (bench.smoke.run.SmokeRun.pool)
                images = ctx.spec.smoke.pool(images, self.cfg)
            # the pool at the working scale of the data set it comes from
            with collect_histories() as history, pool_floor(scale_floor(source.spec.dataset, source.spec.root)):
                state = self.pretrain(images, ctx)
            built.append(time.perf_counter() - start)
            return {"state": state, "seconds": built[0], "history": history}

        saved = build_once(path, build)  # in a pre-training group: all ranks train, rank 0 saves
        add_histories(saved.get("history", {}))  # into the record of every run that uses it
        model = self.load_backbone(saved["state"]).to(ctx.device).eval()
        return model, float(saved["seconds"]), not built

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """A state dict for `build_model()` (e.g. published weights), loaded strictly: one clear
        error naming the first missing and unexpected keys if it does not fit."""
        from bench.nn.checkpoint import load_state_dict_strict

        model = self.build_model()
        load_state_dict_strict(model, path, source=f"{path} (params.{self.name}.checkpoint)")
        return model.state_dict()

    def stage_artefacts(self, ctx: RunContext) -> list[Path]:
        """The shared artefacts a run needs, in build order (the Slurm plan gives each its own
        job, each after the one before): the backbone, unless a checkpoint replaces it."""
        return [] if self.cfg.checkpoint else [self.artefact_path(ctx)]

    def build_stage(self, artefact: Path, ctx: RunContext) -> None:
        """Build one of `stage_artefacts` (and, where it needs them, the ones before it)."""
        self.backbone(ctx)

    def fit_probe(self, ctx: RunContext, train: Sequence[Sample], test: Dataset,
                  timings: dict[str, float]) -> tuple["FeatureReader", EnsembleMLP, dict[str, Any]]:
        """Load the backbone, fill the feature bank and train the probe ensemble (timed)."""
        start = time.perf_counter()
        backbone, timings["pretrain_s"], cached = self.backbone(ctx)
        timings["load_s"] = time.perf_counter() - start
        reader = FeatureReader(self, backbone, test.domain, ctx)
        start = time.perf_counter()
        bank = self.fill_bank(reader, train, test)
        timings["features_s"] = time.perf_counter() - start
        start = time.perf_counter()
        # A requeued job continues the probe where it stopped; its steps reuse freed big blocks.
        with ctx.run_checkpoint("probe"), retained_memory():
            probe = train_probe(bank, test.num_classes, self.probe_config(test.domain), seed=ctx.spec.seed,
                                ignore_index=test.ignore_index, device=ctx.device, progress=ctx.progress)
        timings["probe_train_s"] = time.perf_counter() - start
        return reader, probe, {"pretrain_cached": cached, "feature_dim": bank.dim, "bank_bytes": bank.nbytes,
                               "working_scale": self.working_scale(ctx, test)}

    def working_scale(self, ctx: RunContext, test: Dataset) -> dict[str, Any]:
        """The record's statement of the size this run worked at (bench.data.scale)."""
        return scale_record(ctx.spec.dataset, ctx.spec.root, self.cfg.max_side, [s.semantic.shape for s in test])

    def official_medical(self, domain: str) -> bool:
        """Whether this run reads out with the official single-classifier medical loop."""
        return self.cfg.protocol == "official" and domain == "medical"

    def fit_official(self, ctx: RunContext, train: Sequence[Sample], test: Dataset,
                     timings: dict[str, float]) -> tuple["FeatureReader", EnsembleMLP, dict[str, Any]]:
        """The official medical probe (bench.probe.official): one classifier on fresh crops whose
        features are extracted in each step; the reader it returns extracts every test window
        afresh (new noise and masks per window, as the official test), bypassing the cache."""
        start = time.perf_counter()
        backbone, timings["pretrain_s"], cached = self.backbone(ctx)
        timings["load_s"] = time.perf_counter() - start
        loop, w, seed = probe_loop(ctx.spec.dataset), self.cfg.window, ctx.spec.seed
        normalise = self.cfg.l2_normalize_medical
        train_draws = Draws(torch.Generator().manual_seed(seed), shared_seed=seed)

        def features(crops: torch.Tensor) -> torch.Tensor:
            with autocast(ctx.device), self.drawing(train_draws):
                maps = self.extract(backbone, prepare_batch(crops, ctx.device), test.domain)
            up = torch.cat([F.interpolate(m.float(), size=(w, w), mode="bilinear", align_corners=False)
                            for m in maps], dim=1)
            return up / up.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) if normalise else up

        with torch.no_grad(), autocast(ctx.device):  # the depth, from fixed draws (no generator moves)
            dim = sum(int(m.shape[1]) for m in self.extract(backbone, torch.zeros(1, 3, w, w, device=ctx.device),
                                                             test.domain))
        images = [self._working_copy(s, spec_floor(ctx.spec)) for s in train]
        start = time.perf_counter()
        with ctx.run_checkpoint("probe"):
            probe = train_official_probe(features, dim, [(x[0], y) for x, y in images], loop, w,
                                         test.num_classes, self.probe_config(test.domain), seed,
                                         test.ignore_index, ctx.device, ctx.progress)
        timings["probe_train_s"] = time.perf_counter() - start
        reader = FeatureReader(self, backbone, test.domain, ctx,
                               draws=Draws(torch.Generator().manual_seed(seed + 1)))
        return reader, probe, {"pretrain_cached": cached, "feature_dim": dim, "official_loop": asdict(loop),
                               "working_scale": self.working_scale(ctx, test)}

    def run(self, ctx: RunContext, train: Sequence[Sample], test: Dataset,
            on_trained: Callable[[Predictor], None] | None = None) -> RunOutput:
        timings: dict[str, float] = {}
        fit = self.fit_official if self.official_medical(test.domain) else self.fit_probe
        reader, probe, extra = fit(ctx, train, test, timings)
        start = time.perf_counter()
        predictions = [self.predict(reader, probe, s, test.split) for s in test]
        timings["predict_s"] = time.perf_counter() - start
        if on_trained is not None:
            on_trained(lambda sample, key: self.predict(reader, probe, sample, key))
        extra.update(feature_cache_hits=reader.hits, feature_cache_misses=reader.misses)
        return RunOutput(predictions=predictions, timings=timings, extra=extra)

    def feature_identity(self) -> dict[str, Any]:
        """What determines the extracted features: everything but the probe's own settings."""
        return {k: v for k, v in identity(self.cfg).items() if not k.startswith("probe_")}

    def fill_bank(self, reader: "FeatureReader", train: Sequence[Sample], test: Dataset) -> FeatureBank:
        """Native-resolution features of every window of every labelled image (fp16, on the CPU)."""
        bank = FeatureBank()
        w = self.cfg.window
        for sample in train:
            x, labels = self._working_copy(sample, reader.floor)
            if test.domain == "natural":
                labels = _ignore_rare_classes(labels, self.cfg.rare_class_pixels, test.ignore_index)
            x = pad_to_window(x, w)
            tiles = [(y, x0) for y in tile_positions(x.shape[-2], w) for x0 in tile_positions(x.shape[-1], w)]
            crops = torch.cat([x[..., y : y + w, x0 : x0 + w] for y, x0 in tiles])
            for (y, x0), (maps, scale) in zip(tiles, reader.read(crops, f"train/{sample.name}", tiles)):
                bank.add(maps, _crop_labels(labels, y, x0, w, test.ignore_index), scale)
        return bank

    def _working_copy(self, sample: Sample, floor: float) -> tuple[torch.Tensor, np.ndarray]:
        size = target_size(sample.image.shape[:2], self.cfg.max_side, floor)
        return resize_image(to_tensor(sample.image), size), resize_labels(sample.semantic, size)

    @torch.no_grad()
    def predict(self, reader: "FeatureReader", probe: EnsembleMLP, sample: Sample, split: str) -> np.ndarray:
        x, _ = self._working_copy(sample, reader.floor)
        w = self.cfg.window

        official = self.official_medical(reader.domain)

        def windows(crops: torch.Tensor, positions: list[tuple[int, int]]) -> torch.Tensor:
            read = reader.read(crops, f"{split}/{sample.name}", positions)
            if official:  # the official probe: one classifier's logits, blended
                return predict_logits(probe, [maps for maps, _ in read], (w, w), [scale for _, scale in read])
            return predict_window_votes(probe, [maps for maps, _ in read], (w, w), [scale for _, scale in read])

        scores = sliding_window_predict(x, w, self.cfg.overlap, self.cfg.window_batch, windows)
        return scores_to_labels(scores[0], sample.image.shape[:2])


class FeatureReader:
    """Extracts (or recalls from the process-wide cache) each window's maps and L2 scale."""

    def __init__(self, method: SSLMethod, backbone: nn.Module, domain: str, ctx: RunContext,
                 draws: Draws | None = None) -> None:
        """`draws`: every window is extracted afresh with these draws, never cached."""
        self.method, self.backbone, self.domain, self.ctx, self.draws = method, backbone, domain, ctx, draws
        spec = ctx.spec
        self.key = config_hash({"features": method.feature_identity(), "method": method.name,
                                "dataset": spec.dataset, **data_identity(spec.dataset, spec.data),
                                "domain": domain})
        self.normalise = domain == "medical" and method.cfg.l2_normalize_medical
        self.floor = spec_floor(spec)  # the run's data set's scale floor (bench.data.scale)
        self.hits = self.misses = 0

    def rms_factor(self, maps: list[torch.Tensor]) -> float:
        """sqrt(numel) of the upsampled feature tensor when `l2_unit_rms`, else 1.

        The protocol divides each image's features by their global L2 norm, which leaves values
        of about 1/sqrt(numel) (1e-4 at paper size). The probe's BatchNorm removes any constant
        factor, except that its epsilon then dominates the variance and the probe needs many
        epochs before Adam has grown the first layer enough to learn. The paper preset keeps the
        reference's numerics; short presets set `l2_unit_rms` so features have unit RMS.
        """
        if not self.method.cfg.l2_unit_rms:
            return 1.0
        w = self.method.cfg.window
        return math.sqrt(sum(int(m.shape[0]) for m in maps) * w * w)

    @torch.no_grad()
    def read(self, crops: torch.Tensor, image_key: str, positions: list[tuple[int, int]]) -> list[Entry]:
        keys = [(self.key, image_key, y, x) for y, x in positions]
        out: list[Entry | None] = [None if self.draws else FEATURES.get(k) for k in keys]
        missing = [i for i, entry in enumerate(out) if entry is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        w = self.method.cfg.window
        for start in range(0, len(missing), self.method.cfg.window_batch):
            idx = missing[start : start + self.method.cfg.window_batch]
            with autocast(self.ctx.device), self.method.drawing(self.draws):
                maps = self.method.extract(self.backbone, prepare_batch(crops[idx], self.ctx.device), self.domain)
            for j, i in enumerate(idx):
                own = [m[j].float().cpu() for m in maps]
                scale = global_l2_scale(own, (w, w)) * self.rms_factor(own) if self.normalise else 1.0
                entry = ([m.half() for m in own], scale)
                if self.draws is None:
                    FEATURES.put(keys[i], entry, group=self.key)
                out[i] = entry
        return out  # type: ignore[return-value]


def _crop_labels(labels: np.ndarray, y: int, x0: int, w: int, ignore: int) -> np.ndarray:
    out = np.full((w, w), ignore, dtype=np.int64)
    crop = labels[y : y + w, x0 : x0 + w]
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out


def _ignore_rare_classes(labels: np.ndarray, min_pixels: int, ignore: int) -> np.ndarray:
    counts = np.bincount(labels[labels != ignore].ravel())
    rare = np.flatnonzero((counts > 0) & (counts < min_pixels))
    if rare.size == 0:
        return labels
    out = labels.copy()
    out[np.isin(out, rare)] = ignore
    return out
