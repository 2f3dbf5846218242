"""SwAV and SwAVw2 (REFERENCE §5): Sinkhorn codes, the swapped loss, the two ResNets, a tiny run."""
from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F

from bench.errors import FieldError
from bench.nn.multicrop import CropSpec, Distortion, gaussian_blur, multi_crop, resized_crops
from bench.nn.swav_loss import EmbeddingQueue, sinkhorn, swapped_prediction_loss
from bench.nn.swav_resnet import resnet_trunk
from methods.swav import SwAV, SwAVStep, SwAVW2

RESNET50 = (3, 4, 6, 3)


def _cosine_scores(batch: int, prototypes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(batch, 8, generator=g), dim=1)
    return z @ F.normalize(torch.randn(prototypes, 8, generator=g), dim=1).t()


def test_sinkhorn_rows_are_distributions_and_prototypes_share_the_batch() -> None:
    scores = _cosine_scores(64, 16)
    codes = sinkhorn(scores, epsilon=0.05, iters=3)
    assert torch.allclose(codes.sum(1), torch.ones(64), atol=1e-5) and (codes >= 0).all()

    def imbalance(q: torch.Tensor) -> float:
        """Mean relative deviation of each prototype's share from the uniform B / K."""
        return float((q.sum(0) / (64 / 16) - 1).abs().mean())

    plain = torch.softmax(scores / 0.05, dim=1)  # no equipartition: the assignment SwAV avoids
    assert imbalance(codes) < 0.7 * imbalance(plain)
    assert imbalance(sinkhorn(scores, 0.05, 10)) < imbalance(codes)
    assert imbalance(sinkhorn(scores, 0.05, 30)) < 0.01  # converges to uniform column marginals


def test_a_prototype_every_sample_prefers_does_not_absorb_the_batch() -> None:
    scores = _cosine_scores(64, 16, seed=1)
    biased = scores.clone()
    biased[:, 0] += 0.3  # with eps 0.05 a plain softmax hands prototype 0 most of the batch
    assert torch.softmax(biased / 0.05, dim=1)[:, 0].sum() > 3 * torch.softmax(scores / 0.05, dim=1)[:, 0].sum()
    assert torch.allclose(sinkhorn(biased, 0.05, 3), sinkhorn(scores, 0.05, 3), atol=1e-5)


def test_swapped_prediction_loss_decreases_on_a_toy_problem(one_thread: None) -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 16, generator=g), dim=1) * 3
    labels = torch.randint(4, (128,), generator=g)
    net, protos = torch.nn.Linear(16, 8), torch.nn.Linear(8, 4, bias=False)
    opt = torch.optim.Adam([*net.parameters(), *protos.parameters()], lr=1e-2)
    losses = []
    for _ in range(40):
        views = [centres[labels] + 0.5 * torch.randn(128, 16, generator=g) for _ in range(4)]
        scores = [F.normalize(net(v), dim=1) @ F.normalize(protos.weight, dim=1).t() for v in views]
        loss = swapped_prediction_loss(scores, 2, temperature=0.1, epsilon=0.05, iters=3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_queue_keeps_the_newest_embeddings_and_fills_up() -> None:
    queue = EmbeddingQueue(crops=2, length=6, dim=3, device=torch.device("cpu"))
    first, second = torch.ones(4, 3), 2 * torch.ones(4, 3)
    for crop in range(2):
        queue.push(crop, first)
    assert not queue.full
    for crop in range(2):
        queue.push(crop, second)
    assert queue.full
    assert queue.store[0, :4].eq(2).all() and queue.store[0, 4:].eq(1).all()


def test_prototypes_are_frozen_for_the_first_steps_and_kept_on_the_sphere(one_thread: None) -> None:
    cfg = dataclasses.replace(SwAV.presets["tiny"], freeze_prototypes_steps=1, queue_length=0)
    model = SwAV(cfg).build_model()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, cfg.base_crop, cfg.base_crop) * 2 - 1
    SwAVStep(cfg)(model, x, gen).backward()
    assert model.prototypes.weight.grad is None
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(cfg.prototypes))
    # The step count travels with the weights, so a resumed run does not freeze them again.
    resumed = SwAV(cfg).build_model()
    resumed.load_state_dict(model.state_dict())
    SwAVStep(cfg)(resumed, x, gen).backward()
    assert resumed.prototypes.weight.grad is not None and int(resumed.steps) == 2


def test_multi_crop_sizes_and_an_exact_full_crop() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    specs = (CropSpec(2, 24, (0.3, 1.0)), CropSpec(4, 8, (0.05, 0.3)))
    out = multi_crop(x, specs, Distortion(), gen)
    assert [o.shape for o in out] == [(6, 3, 24, 24), (12, 3, 8, 8)]
    assert all(0 <= o.min() and o.max() <= 1 for o in out)
    whole = resized_crops(x, CropSpec(1, 32, (1.0, 1.0)), Distortion(ratio=(1.0, 1.0), hflip_prob=0.0), gen)
    assert torch.allclose(whole, x, atol=1e-6)
    assert torch.allclose(gaussian_blur(x, Distortion(blur_prob=0.0), gen), x, atol=1e-6)
    assert not torch.allclose(gaussian_blur(x, Distortion(blur_prob=1.0), gen), x, atol=1e-2)


def test_width_64_trunk_is_timm_resnet50() -> None:
    with torch.device("meta"):
        ours = resnet_trunk(64, RESNET50).state_dict()
        ref = timm.create_model("resnet50", pretrained=False, num_classes=0, global_pool="").state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in ref.items()]


def test_rn50w2_doubles_every_width_including_the_stem() -> None:
    with torch.device("meta"):
        w2 = resnet_trunk(128, RESNET50)
        wide = timm.create_model("wide_resnet50_2", pretrained=False, num_classes=0, global_pool="")
    assert w2.conv1.out_channels == 128 and w2.num_features == 4096
    assert [w2.layer1[0].conv2.in_channels, w2.layer4[2].conv3.out_channels] == [128, 4096]
    count = sum(p.numel() for p in w2.parameters())
    assert count == 93_907_072  # SwAV reports 94M for RN50w2
    assert count != sum(p.numel() for p in wide.parameters())


@pytest.mark.parametrize(("cls", "dims", "width"), [(SwAV, 6720, 64), (SwAVW2, 13440, 128)])
def test_paper_features_are_inputs_of_every_second_bottleneck(cls: type[SwAV], dims: int, width: int) -> None:
    method = cls(cls.presets["paper"])
    with torch.device("meta"):
        model = method.build_model()
        maps = method.extract(model, torch.rand(1, 3, 256, 256), "medical")
    assert sum(m.shape[1] for m in maps) == dims
    assert [m.shape[1] // width for m in maps] == [1, 4, 4, 8, 8, 16, 16, 16, 32]
    assert [m.shape[-1] for m in maps] == [64, 64, 64, 32, 32, 16, 16, 16, 8]
    cfg = cls.presets["paper"]
    assert (cfg.prototypes, cfg.temperature, cfg.epsilon, cfg.sinkhorn_iters) == (3000, 0.1, 0.05, 3)
    assert (cfg.hidden_mlp, cfg.out_dim, cfg.global_crops, cfg.local_crops) == (2048, 128, 2, 6)


def test_extraction_leaves_no_hooks_behind(one_thread: None) -> None:
    method = SwAV(SwAV.presets["tiny"])
    model = method.build_model().eval()
    x = torch.rand(2, 3, 64, 64)
    first = method.extract(model, x, "medical")
    again = method.extract(model, x, "medical")
    assert len(first) == len(again) == 4 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(not b._forward_pre_hooks for b in model.trunk.modules())


def test_bad_settings_fail_before_pretraining() -> None:
    tiny = SwAV.presets["tiny"]
    with pytest.raises(FieldError, match="global_crops"):
        dataclasses.replace(tiny, global_crops=1, local_crops=0)
    with pytest.raises(FieldError, match="queue_length"):
        dataclasses.replace(tiny, queue_length=4)
    assert dataclasses.replace(tiny) == tiny


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dims"), [("swav", 4 + 16 + 32 + 64), ("swavw2", 2 * (4 + 16 + 32 + 64))])
def test_tiny_preset_runs_end_to_end(name: str, dims: int, tiny_records: dict[str, dict]) -> None:
    record = tiny_records[name]
    assert record["method"] == name and record["extra"]["feature_dim"] == dims
    assert record["metrics"]["dice"] > 0.5, record["metrics"]
