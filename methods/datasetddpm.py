"""DatasetDDPM (Baranchuk et al.): a DeepLabV3 trained on images sampled from the DDPM and
labelled by the run's pixel-probe ensemble.

The stages (REFERENCE §4 and ddpm-segmentation's generate_dataset.py / train_deeplab.py):
1. the DDPM backbone: the very artefact (key and file) the `ddpm` plugin pre-trains;
2. `n_samples` images drawn from it by ancestral sampling (respaced for short presets), a
   cached artefact built in resumable shards; it depends on the backbone and the sampler only,
   so every seed and label fraction of a data set shares one image set;
3. the run's probe (the shared pixel probe on DDPM features, as `ddpm` trains it) labels each
   sample from the features of the finished sample, read exactly as the probe's training
   features are (the reference does the same: features of the clamped final sample, with its
   shared noise); images are ranked by the ensemble's Jensen-Shannon divergence and the most
   uncertain `drop_uncertain` are dropped (bench.probe.uncertainty);
4. DeepLabV3 (segmentation-models-pytorch) trained on the kept pairs, the best epoch chosen on
   the real labelled images, and scored on the real test images like any other run.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
import torch
from torch import nn

from bench.context import RunContext, RunOutput
from bench.data.types import Dataset, Sample
from bench.device import autocast, prepare_batch
from bench.diffusion_sampling import AncestralSampler, SamplerConfig
from bench.errors import FieldError
from bench.label_figure import save_inspection
from bench.limits import FRACTION, NON_NEGATIVE, POSITIVE, UNIT, Rule, Text
from bench.nn.smp_models import Architecture, build_smp, encoder_problem, file_problem
from bench.plugin import Predictor
from bench.pretrain import PretrainSchedule
from bench.probe import EnsembleMLP, global_l2_scale
from bench.probe.uncertainty import keep_certain, label_with_uncertainty
from bench.provenance import config_hash
from bench.registry import register
from bench.sharded import cached_sharded
from bench.ssl import FeatureReader
from bench.supervised import SupervisedConfig, SupervisedMethod
from methods.ddpm import DDPM, DDPMConfig

WHERE = "[params.datasetddpm]"


@dataclass(frozen=True)
class DatasetDDPMConfig(DDPMConfig):
    """The DDPM (its fields, the same as `ddpm`'s), the sampler, the filter and the DeepLab."""

    n_samples: int = 10_000
    sample_steps: int = 1000           # < diffusion_steps: respaced ancestral sampling
    sample_variance: Literal["fixed_large", "fixed_small", "learned"] = "fixed_large"  # learned: needs variance_loss "vlb"
    sample_batch: int = 32
    sample_shard: int = 256            # samples per resumable shard
    sample_seed: int = 0
    uncertainty_top: float = 0.1       # an image's uncertainty: mean JS over its top 10% pixels
    drop_uncertain: float = 0.1        # the most uncertain portion of images dropped
    skip_certain: int = 30             # train_deeplab.py's order[30:-n+30]: 30 of those dropped are the most certain
    deeplab_arch: Architecture = "DeepLabV3"
    deeplab_encoder: str = "resnet101"
    deeplab_encoder_checkpoint: str | None = None  # a local ImageNet encoder state dict (docs/methods.md)
    deeplab_lr: float = 1e-3
    deeplab_batch: int = 8
    deeplab_epochs: int = 20           # passes over the kept images (drop_last, as the reference); the best on the real images wins
    deeplab_patience: int = 20         # epochs without a better validation Dice
    inspect_samples: int = 16          # sampled images + labels saved under predictions/<run>/synthetic

    # Protocol "official": ddpm-segmentation samples with the DDPM's learned variance.
    OFFICIAL: ClassVar[dict[str, Any]] = dict(sample_variance="learned")
    LIMITS: ClassVar[dict[str, Rule]] = {
        "n_samples": POSITIVE, "sample_steps": POSITIVE, "sample_batch": POSITIVE, "sample_shard": POSITIVE,
        "sample_seed": NON_NEGATIVE, "uncertainty_top": FRACTION, "drop_uncertain": UNIT,
        "skip_certain": NON_NEGATIVE, "deeplab_encoder": Text("an smp encoder", before_run=encoder_problem),
        "deeplab_encoder_checkpoint": Text("a local encoder state dict", before_run=file_problem),
        "deeplab_lr": POSITIVE, "deeplab_batch": POSITIVE, "deeplab_epochs": POSITIVE, "deeplab_patience": POSITIVE,
        "inspect_samples": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_steps > self.diffusion_steps:
            raise FieldError("sample_steps", f"must be at most diffusion_steps ({self.diffusion_steps}), "
                             f"got {self.sample_steps}")
        if self.sample_variance == "learned" and not self.learn_sigma:
            raise FieldError("sample_variance", "learned needs learn_sigma = true (the model's variance output)")
        if self.sample_variance == "learned" and self.variance_loss != "vlb" and self.checkpoint is None:
            raise FieldError("sample_variance", "'learned' samples with the trained variance: it needs "
                                                "variance_loss = 'vlb' (or a checkpoint trained with it)")


def _ddpm_fields(cfg: DatasetDDPMConfig) -> DDPMConfig:
    return DDPMConfig(**{f.name: getattr(cfg, f.name) for f in fields(DDPMConfig)})


TINY_SAMPLING: dict[str, Any] = dict(
    n_samples=8, sample_steps=20, sample_variance="fixed_small", sample_batch=8, sample_shard=4,
    skip_certain=0, drop_uncertain=0.25, deeplab_encoder="resnet18", deeplab_batch=4, deeplab_epochs=3,
    deeplab_patience=3, inspect_samples=8,
)
SMALL_SAMPLING: dict[str, Any] = dict(
    n_samples=256, sample_steps=50, sample_variance="fixed_small", sample_batch=16, sample_shard=64,
    skip_certain=0, deeplab_encoder="resnet34", deeplab_epochs=10, deeplab_patience=5,
)


def _preset(ddpm: DDPMConfig, extra: dict[str, Any]) -> DatasetDDPMConfig:
    """The ddpm preset's fields (so the backbone artefact is shared) plus the sampling stage."""
    return DatasetDDPMConfig(**{**asdict(ddpm), **extra})


def _presets() -> dict[str, DatasetDDPMConfig]:
    backbones = {name: DDPM.presets[name] for name in ("tiny", "small", "paper")}
    extras = {"tiny": TINY_SAMPLING, "small": SMALL_SAMPLING, "paper": {"sample_variance": "learned"}}
    return {name: _preset(backbone, extras[name]) for name, backbone in backbones.items()}


class SyntheticDeepLab(SupervisedMethod):
    """The supervised trainer, on the synthetic pairs, with an smp network (not registered)."""

    name = "datasetddpm deeplab"
    drop_last = True  # train_deeplab.py's DataLoader(drop_last=True)

    def __init__(self, cfg: SupervisedConfig, arch: str, encoder: str, checkpoint: str | None) -> None:
        super().__init__(cfg)
        self.arch, self.encoder, self.checkpoint = arch, encoder, checkpoint

    def build_model(self, num_classes: int = 2) -> nn.Module:
        return build_smp(self.arch, self.encoder, num_classes, None, self.checkpoint, WHERE)


@register("datasetddpm", "ssl")
class DatasetDDPM(DDPM):
    """DatasetDDPM: DeepLabV3 trained on DDPM samples labelled by the DDPM pixel-probe ensemble."""

    Config = DatasetDDPMConfig
    presets = _presets()
    count_classes: ClassVar[int] = 34  # `bench list` counts the DeepLab of Table 2 (FFHQ-34)
    tiny_at_chance = ("the tiny DDPM (120 steps) samples noise, so its synthetic set teaches DeepLab "
                      "nothing; the tiny preset proves the plumbing only")

    # --- the backbone: ddpm's artefact ------------------------------------------------------
    def ddpm(self) -> DDPM:
        return DDPM(_ddpm_fields(self.cfg))

    def pretrain_identity(self) -> dict[str, Any]:
        return self.ddpm().pretrain_identity()

    def artefact_path(self, ctx: RunContext) -> Path:
        return self.ddpm().artefact_path(ctx)

    def schedules(self) -> dict[str, PretrainSchedule]:
        """ddpm's: its pre-training is ddpm's loop (`ddpm pretrain`), into ddpm's artefact."""
        return self.ddpm().schedules()

    # --- the sampled images ----------------------------------------------------------------
    def sample_identity(self, ctx: RunContext) -> dict[str, Any]:
        c = self.cfg
        backbone = self.artefact_path(ctx).relative_to(ctx.output) if not c.checkpoint else c.checkpoint
        return {"backbone": str(backbone), "size": c.window, "n": c.n_samples, "steps": c.sample_steps,
                "variance": c.sample_variance, "batch": c.sample_batch, "shard": c.sample_shard,
                "seed": c.sample_seed, "schedule": c.schedule, "T": c.diffusion_steps, "target": c.target}

    def samples_path(self, ctx: RunContext) -> Path:
        source = self.pretrain_context(ctx)
        return source.artefact_path(self.name, source.artefact_key(self.name, self.sample_identity(ctx)))

    def stage_artefacts(self, ctx: RunContext) -> list[Path]:
        return super().stage_artefacts(ctx) + [self.samples_path(ctx)]

    def build_stage(self, artefact: Path, ctx: RunContext) -> None:
        if artefact == self.samples_path(ctx):
            self.sample_set(ctx, None)
        else:
            super().build_stage(artefact, ctx)

    def sampler(self) -> AncestralSampler:
        c = self.cfg
        return AncestralSampler(SamplerConfig(schedule=c.schedule, diffusion_steps=c.diffusion_steps,
                                              sample_steps=c.sample_steps, variance=c.sample_variance,
                                              target=c.target))

    def sample_set(self, ctx: RunContext, backbone: nn.Module | None) -> dict[str, Any]:
        """{"images": N x w x w x 3 uint8, "seconds": build time, ...}, built once per key."""
        c, w = self.cfg, self.cfg.window
        model: list[nn.Module] = [backbone] if backbone is not None else []
        sampler = self.sampler()

        def make_shard(index: int, items: int) -> dict[str, torch.Tensor]:
            if not model:
                model.append(self.backbone(ctx)[0])
            gen = torch.Generator().manual_seed(int(config_hash({"seed": c.sample_seed, "shard": index})[:12], 16))
            out = []
            for start in range(0, items, c.sample_batch):
                n = min(c.sample_batch, items - start)
                x = sampler.sample(model[0], (n, 3, w, w), gen, ctx.device, ctx.progress,
                                   desc=f"sampling shard {index}")
                out.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
            return {"images": torch.cat(out)}

        return cached_sharded(self.samples_path(ctx), c.n_samples, c.sample_shard, make_shard,
                              meta={"identity": self.sample_identity(ctx)}, progress=ctx.progress,
                              desc="datasetddpm samples")

    # --- labelling and the DeepLab ---------------------------------------------------------
    @torch.no_grad()
    def label(self, reader: FeatureReader, probe: EnsembleMLP, images: torch.Tensor,
              domain: str) -> tuple[list[np.ndarray], list[float]]:
        """Each sample's majority-vote labels and its ensemble uncertainty, from the features the
        probe was trained on (same extraction, noise and L2 scaling; not cached)."""
        c, w = self.cfg, self.cfg.window
        labels, scores = [], []
        for start in range(0, len(images), c.window_batch):
            x = images[start : start + c.window_batch].permute(0, 3, 1, 2).float().div(255)
            with autocast(reader.ctx.device):
                maps = self.extract(reader.backbone, prepare_batch(x, reader.ctx.device), domain)
            for j in range(x.shape[0]):
                own = [m[j].float().cpu() for m in maps]
                scale = global_l2_scale(own, (w, w)) * reader.rms_factor(own) if reader.normalise else 1.0
                lab, score = label_with_uncertainty(probe, [m.half() for m in own], (w, w), scale,
                                                    c.uncertainty_top)
                labels.append(lab)
                scores.append(score)
        return labels, scores

    def deeplab(self) -> SyntheticDeepLab:
        c = self.cfg
        recipe = SupervisedConfig(max_side=c.max_side, crop=c.window, overlap=c.overlap, batch=c.deeplab_batch,
                                  lr=c.deeplab_lr, loss="ce", augment="none", max_epochs=c.deeplab_epochs,
                                  epoch_mode="pass", patience=c.deeplab_patience)
        return SyntheticDeepLab(recipe, c.deeplab_arch, c.deeplab_encoder, c.deeplab_encoder_checkpoint)

    @classmethod
    def param_count(cls) -> int:
        """Parameters of the paper DeepLab (34 classes), built on the meta device."""
        with torch.device("meta"):
            model = cls(cls.presets["paper"]).deeplab().build_model(cls.count_classes)
        return sum(p.numel() for p in model.parameters())

    def run(self, ctx: RunContext, train: Sequence[Sample], test: Dataset,
            on_trained: Callable[[Predictor], None] | None = None) -> RunOutput:
        timings: dict[str, float] = {}
        reader, probe, extra = self.fit_probe(ctx, train, test, timings)
        start = time.perf_counter()
        extra["samples_cached"] = self.samples_path(ctx).exists()
        synthetic = self.sample_set(ctx, reader.backbone)
        timings["sample_load_s"] = time.perf_counter() - start
        timings["sample_s"] = float(synthetic["seconds"])
        start = time.perf_counter()
        labels, scores = self.label(reader, probe, synthetic["images"], test.domain)
        kept = keep_certain(scores, self.cfg.drop_uncertain, self.cfg.skip_certain)
        timings["label_s"] = time.perf_counter() - start
        images = synthetic["images"].numpy()
        save_inspection(ctx.output / "predictions" / ctx.spec.run_id / "synthetic", images, labels, scores,
                        kept, test.num_classes, self.cfg.inspect_samples)
        pairs = [Sample(f"synthetic-{i}", images[i], labels[i]) for i in kept]
        start = time.perf_counter()
        trainer = self.deeplab()
        model = trainer.train(pairs, list(train), test.num_classes, test.ignore_index, ctx)
        timings["deeplab_train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        predictions = [trainer.predict(model, s.image, test.num_classes, ctx) for s in test]
        timings["predict_s"] = time.perf_counter() - start
        if on_trained is not None:
            on_trained(lambda sample, _key: trainer.predict(model, sample.image, test.num_classes, ctx))
        extra.update(n_samples=len(images), n_kept=len(kept), samples_resumed_shards=synthetic["resumed_shards"],
                     uncertainty_mean=float(np.mean(scores)), deeplab_params=sum(p.numel() for p in model.parameters()))
        return RunOutput(predictions=predictions, timings=timings, extra=extra)
