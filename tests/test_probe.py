"""The shared pixel probe: feature bank, batched ensemble, training and prediction."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.probe import ProbeConfig, accumulate_grads, make_optimizer, predict_probs, predict_votes, train_probe
from bench.probe.bank import FeatureBank, global_l2_scale
from bench.probe.mlp import EnsembleMLP
from bench.probe.sampler import FEISTEL_ROUNDS, PixelStreams, keyed_permutation, member_generators
from bench.probe.train import _EarlyStop

TOL = dict(atol=1e-6, rtol=1e-6)  # float32 rounding: the kernel fuses multiply-adds


def _maps(gen: torch.Generator, sizes: list[tuple[int, int, int]]) -> list[torch.Tensor]:
    """Random maps whose values are exactly representable in float16, as the bank stores them."""
    return [torch.randn(c, h, w, generator=gen).half().float() for c, h, w in sizes]


def _dense(maps: list[torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
    up = [F.interpolate(m[None], size=hw, mode="bilinear", align_corners=False)[0] for m in maps]
    return torch.cat(up)  # (D, H, W)


def test_gather_equals_interpolate_at_random_and_edge_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    # Non-integer scale factors, one map at label size, two maps sharing a size (one group).
    images = [((37, 50), _maps(gen, [(3, 8, 8), (2, 5, 7), (4, 37, 50), (2, 8, 8), (1, 13, 9)])),
              ((20, 31), _maps(gen, [(3, 4, 4), (2, 3, 5), (4, 20, 31), (2, 4, 4), (1, 1, 1)]))]
    bank = FeatureBank()
    for i, (hw, maps) in enumerate(images):
        bank.add(maps, np.zeros(hw, np.uint8), scale=0.5 + i)
    img_idx, ys, xs, want = [], [], [], []
    for i, (hw, maps) in enumerate(images):
        corners_y = torch.tensor([0, hw[0] - 1, 0, hw[0] - 1])
        corners_x = torch.tensor([0, hw[1] - 1, hw[1] - 1, 0])
        y = torch.cat([torch.randint(0, hw[0], (40,), generator=gen), corners_y])
        x = torch.cat([torch.randint(0, hw[1], (40,), generator=gen), corners_x])
        dense = _dense(maps, hw) * (0.5 + i)
        torch.testing.assert_close(bank.gather(i, y, x), dense[:, y, x].T, **TOL)
        img_idx.append(torch.full_like(y, i))
        ys.append(y), xs.append(x), want.append(dense[:, y, x].T)
    mixed = bank.gather(torch.cat(img_idx), torch.cat(ys), torch.cat(xs))
    assert mixed.dtype == torch.float32 and mixed.shape == (88, bank.dim) and bank.dim == 12
    torch.testing.assert_close(mixed, torch.cat(want), **TOL)


def test_global_l2_scale_equals_dense_norm() -> None:
    # Upsampled, at output size, and downsampled (a map larger than the output).
    maps = _maps(torch.Generator().manual_seed(1), [(5, 6, 6), (3, 11, 7), (2, 40, 30), (2, 57, 45)])
    dense = _dense(maps, (40, 30)).double()
    want = 1.0 / float(dense.square().sum().sqrt())
    assert global_l2_scale(maps, (40, 30), chunk_bytes=40 * 30 * 4 * 3) == pytest.approx(want, rel=1e-6)
    assert global_l2_scale(maps, (40, 30)) == pytest.approx(want, rel=1e-6)


def test_bank_is_float16_at_native_size_and_segmenting_changes_nothing(monkeypatch) -> None:
    gen = torch.Generator().manual_seed(2)
    sizes = [(64, 8, 8), (32, 16, 16)]
    data = [(_maps(gen, sizes), np.full((64, 64), 3, np.uint8)) for _ in range(3)]
    plain, reserved = FeatureBank(), FeatureBank(reserve_images=3)
    for maps, labels in data:
        for bank in (plain, reserved):
            bank.add(maps, labels)
    monkeypatch.setattr("bench.probe.bank.SEGMENT_BYTES", 1)  # one segment per image
    short = FeatureBank(reserve_images=2)
    for maps, labels in data:
        short.add(maps, labels)
    assert [len(segs) for segs in short._segments] == [2, 2]
    native = 3 * (64 * 8 * 8 + 32 * 16 * 16) * 2 + 3 * 64 * 64  # float16 maps + uint8 labels
    assert plain.nbytes == reserved.nbytes == native
    assert native * 20 < 3 * 64 * 64 * 96 * 4  # vs full-resolution float32
    ys, xs = torch.randint(0, 64, (2, 30), generator=gen)
    for i in range(3):
        ref = plain.gather(i, ys, xs)
        assert torch.equal(reserved.gather(i, ys, xs), ref)
        assert torch.equal(short.gather(i, ys, xs), ref)
    assert short.nbytes == native and plain.num_images == 3
    assert all(seg.dtype == torch.float16 for segs in plain._segments for seg in segs)
    mixed_img = torch.tensor([2, 0, 1, 2, 0])
    torch.testing.assert_close(short.gather(mixed_img, ys[:5], xs[:5]),
                               plain.gather(mixed_img, ys[:5], xs[:5]), atol=0, rtol=0)


def test_labelled_pixels_skip_ignore_and_locate_round_trips() -> None:
    bank = FeatureBank()
    first, second = np.array([[0, 255], [1, 1]]), np.array([[255, 2, 2]])
    bank.add([torch.zeros(1, 1, 1)], first)
    bank.add([torch.zeros(1, 1, 1)], second)
    flat = bank.labelled_pixels(255)
    assert flat.tolist() == [0, 2, 3, 5, 6]
    img, ys, xs = bank.locate(flat)
    assert img.tolist() == [0, 0, 0, 1, 1]
    assert ys.tolist() == [0, 1, 1, 0, 0] and xs.tolist() == [0, 0, 1, 1, 2]
    assert bank.labels_at(flat).tolist() == [0, 1, 1, 2, 2]
    img, ys, xs = bank.sample(200, torch.Generator().manual_seed(0), ignore_index=255)
    drawn = {(int(i), int(y), int(x)) for i, y, x in zip(img, ys, xs)}
    assert drawn == {(0, 0, 0), (0, 1, 0), (0, 1, 1), (1, 0, 1), (1, 0, 2)}


def test_bank_rejects_inconsistent_maps() -> None:
    bank = FeatureBank()
    bank.add([torch.zeros(2, 4, 4), torch.zeros(3, 4, 4)], np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        bank.add([torch.zeros(2, 4, 4)], np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="shared a size"):
        bank.add([torch.zeros(2, 4, 4), torch.zeros(3, 5, 5)], np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="finite"):
        bank.add([torch.full((2, 4, 4), 1e6), torch.zeros(3, 4, 4)], np.zeros((8, 8), np.uint8))


def _random_ensemble(members: int, d: int, classes: int, hidden: tuple[int, ...]) -> EnsembleMLP:
    torch.manual_seed(3)
    model = EnsembleMLP(members, d, classes, hidden, generators=member_generators(0, members))
    with torch.no_grad():  # non-trivial biases, BN affine and running stats
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for name, buf in model.named_buffers():
            buf.copy_(torch.rand_like(buf) + (0.5 if "var" in name else -0.5))
    return model


def _sequential(model: EnsembleMLP, k: int) -> nn.Sequential:
    """Member k rebuilt from the raw stacked tensors with stock torch modules."""
    layers: list[nn.Module] = []
    n_hidden = len(model.hidden)
    for i in range(n_hidden + 1):
        w = model.weights[i][k].detach()
        lin = nn.Linear(w.shape[0], w.shape[1])
        lin.weight.data, lin.bias.data = w.T.clone(), model.biases[i][k, 0].detach().clone()
        layers.append(lin)
        if i < n_hidden:
            bn = nn.BatchNorm1d(w.shape[1])
            bn.weight.data = model.bn_weights[i][k].detach().clone()
            bn.bias.data = model.bn_biases[i][k].detach().clone()
            bn.running_mean.copy_(getattr(model, f"running_mean{i}")[k])
            bn.running_var.copy_(getattr(model, f"running_var{i}")[k])
            layers += [nn.ReLU(), bn]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("classes,hidden", [(4, (5, 3)), (31, (7, 6))])
def test_member_k_equals_a_standalone_sequential(classes: int, hidden: tuple[int, ...]) -> None:
    model = _random_ensemble(3, 6, classes, hidden)
    refs = [_sequential(model, k) for k in range(3)]
    x = torch.randn(3, 9, 6)
    out = model.train()(x)
    for k, ref in enumerate(refs):
        torch.testing.assert_close(out[k], ref.train()(x[k]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.member(k).eval()(x[k]), ref.eval()(x[k]))
    for k, ref in enumerate(refs):  # running stats were updated per member like BatchNorm1d
        torch.testing.assert_close(model.running_var0[k], ref[2].running_var)
        torch.testing.assert_close(model.eval()(x[k])[k], ref.eval()(x[k]), atol=1e-5, rtol=1e-5)
    shared = model.eval()(x[0])
    assert shared.shape == (3, 9, classes)
    torch.testing.assert_close(shared[2], refs[2](x[0]), atol=1e-5, rtol=1e-5)


def test_batched_adam_training_equals_separate_trainings() -> None:
    model = _random_ensemble(3, 6, 4, (5, 3))
    refs = [_sequential(model, k) for k in range(3)]
    opt = make_optimizer(model, ProbeConfig(lr=1e-2))  # fused; the references use plain Adam
    ref_opts = [torch.optim.Adam(r.parameters(), lr=1e-2) for r in refs]
    gen = torch.Generator().manual_seed(4)
    for step in range(6):
        x, y = torch.randn(3, 16, 6, generator=gen), torch.randint(0, 4, (3, 16), generator=gen)
        opt.zero_grad()
        if step % 2:  # in two member groups, as training does when a step exceeds step_bytes
            losses = torch.cat([accumulate_grads(model, x[:2], y[:2], slice(0, 2)),
                                accumulate_grads(model, x[2:], y[2:], slice(2, 3))])
        else:
            losses = accumulate_grads(model, x, y)
        opt.step()
        for k, (ref, ref_opt) in enumerate(zip(refs, ref_opts)):
            ref_opt.zero_grad()
            loss = F.cross_entropy(ref(x[k]), y[k])
            loss.backward()
            ref_opt.step()
            assert float(losses[k]) == pytest.approx(float(loss.detach()), rel=1e-5)
    for k, ref in enumerate(refs):
        torch.testing.assert_close(model.weights[0][k], ref[0].weight.T, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.bn_weights[1][k], ref[5].weight, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.running_mean1[k], ref[5].running_mean,
                                   atol=1e-5, rtol=1e-4)


def _separable_bank(images: int, seed: int) -> tuple[FeatureBank, list]:
    """Labels are the argmax of a hidden linear map of the (upsampled) features."""
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(3, 10, generator=gen)
    bank, items = FeatureBank(), []
    for _ in range(images):
        maps = _maps(gen, [(6, 6, 6), (4, 12, 12)])
        labels = torch.einsum("cd,dhw->chw", proj, _dense(maps, (24, 24))).argmax(0)
        labels[0, :3] = 255
        bank.add(maps, labels.numpy().astype(np.uint8))
        items.append((maps, labels))
    return bank, items


def test_probe_learns_a_linearly_separable_task() -> None:
    bank, items = _separable_bank(4, seed=5)
    cfg = ProbeConfig.natural(ensemble=3, batch_pixels=128, max_epochs=6, pixels_per_epoch=1024,
                              lr=1e-2)  # a higher rate than the protocol's, to keep this fast
    probe = train_probe(bank, 3, cfg, seed=0)
    assert not probe.training
    correct = total = 0
    for maps, labels in items:
        votes = predict_votes(probe, maps, (24, 24), chunk_rows=5)
        keep = labels != 255
        correct += int((votes.argmax(0) == labels)[keep].sum())
        total += int(keep.sum())
    assert correct / total > 0.95


def test_training_is_deterministic_and_members_are_independent() -> None:
    bank, _ = _separable_bank(2, seed=6)
    cfg = ProbeConfig.natural(ensemble=3, batch_pixels=32, max_epochs=4, warmup_epochs=0,
                              patience_iters=2, pixels_per_epoch=256, hidden=(8, 4))
    three = train_probe(bank, 3, cfg, seed=7).state_dict()
    again = train_probe(bank, 3, cfg, seed=7).state_dict()
    alone = train_probe(bank, 3, ProbeConfig.natural(**{**cfg.__dict__, "ensemble": 1}), seed=7)
    assert all(torch.equal(three[n], again[n]) for n in three)
    assert not torch.allclose(three["weights.0"][0], three["weights.0"][1])
    for name, tensor in alone.state_dict().items():  # member 0 trains (and stops) as if alone
        torch.testing.assert_close(three[name][0], tensor[0], atol=1e-5, rtol=1e-4)


def test_early_stop_rules_count_like_their_references() -> None:
    natural = _EarlyStop(2)  # ddpm-segmentation: stop when the count exceeds the patience
    stops = [natural.update(torch.tensor(v), limit=2, inclusive=False).tolist()
             for v in ([1.0, 1.0], [2.0, 0.5], [2.0, 0.4], [2.0, 0.3], [2.0, 0.3])]
    assert stops == [[False, False], [False, False], [False, False], [True, False], [False, False]]
    plateau = _EarlyStop(1)  # MDM medical: stop after `patience` epochs without a decrease
    stops = [bool(plateau.update(torch.tensor([v]), limit=2, inclusive=True))
             for v in (3.0, 2.0, 2.0, 2.5)]
    assert stops == [False, False, False, True] and plateau.span() == slice(0, 0)


def test_majority_vote_fractions_and_lower_index_ties() -> None:
    probe = EnsembleMLP(3, 2, 3, (4,))
    with torch.no_grad():
        probe.weights[1].zero_()
        probe.biases[1].copy_(torch.tensor([[[0.0, 0, 5]], [[0.0, 0, 5]], [[5.0, 0, 0]]]))
    maps = [torch.randn(2, 3, 3)]
    votes = predict_votes(probe, maps, (5, 4))
    assert votes.shape == (3, 5, 4) and votes.dtype == torch.float32
    assert torch.allclose(votes[:, 2, 1], torch.tensor([1 / 3, 0, 2 / 3]))
    assert bool((votes.argmax(0) == 2).all())
    with torch.no_grad():  # 1 vote class 0, 1 vote class 2, one member with tied logits 1 and 2
        probe.biases[1].copy_(torch.tensor([[[5.0, 0, 0]], [[0.0, 0, 5]], [[0.0, 3, 3]]]))
    votes = predict_votes(probe, maps, (5, 4))
    assert torch.allclose(votes[:, 0, 0], torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    assert bool((votes.argmax(0) == 0).all())
    probs = predict_probs(probe, maps, (5, 4))
    torch.testing.assert_close(probs.sum(0), torch.ones(5, 4))


def test_chunked_prediction_equals_dense_prediction() -> None:
    bank, items = _separable_bank(1, seed=8)
    probe = _random_ensemble(4, bank.dim, 3, (5, 3)).eval()
    maps, _ = items[0]
    dense = _dense(maps, (24, 24)).reshape(bank.dim, -1).T * 0.25
    want = F.one_hot(probe(dense).argmax(-1), 3).sum(0).float().T.reshape(3, 24, 24) / 4
    for rows in (1, 7, None):
        assert torch.equal(predict_votes(probe, maps, (24, 24), scale=0.25, chunk_rows=rows,
                                         path="dense"), want)
    assert not probe.training


def test_a_gpu_predicts_in_larger_row_chunks_than_a_cpu() -> None:
    """On a GPU the budget is set by launch overhead, not by host memory (results/gpu-h200)."""
    from bench.probe import predict

    assert predict.chunk_budget(torch.device("cpu")) == predict.CHUNK_BYTES
    assert predict.chunk_budget(torch.device("cuda")) == predict.GPU_CHUNK_BYTES > predict.CHUNK_BYTES


@pytest.mark.parametrize("order_bytes", [2**30, 0])  # materialised randperm / keyed Feistel
def test_pixel_streams_are_per_member_permutations(order_bytes: int) -> None:
    labelled = torch.arange(0, 3 * 101, 3)
    streams = PixelStreams(labelled, member_generators(9, 2), batch=16, order_bytes=order_bytes)
    assert streams.materialise == bool(order_bytes) and streams.steps == 7
    streams.start_epoch()
    epoch = torch.cat([streams.batch_pixels(s) for s in range(streams.steps)], dim=1)
    assert all(sorted(row.tolist()) == labelled.tolist() for row in epoch)
    assert not torch.equal(epoch[0], epoch[1])
    streams.start_epoch()
    assert not torch.equal(streams.batch_pixels(0), epoch[:, :16])
    single = PixelStreams(labelled, member_generators(9, 1), batch=16, order_bytes=order_bytes)
    single.start_epoch()
    assert torch.equal(single.batch_pixels(0)[0], epoch[0, :16])  # a member's stream is its own
    assert PixelStreams(torch.arange(33), member_generators(0, 1), batch=16).steps == 2


def test_keyed_permutation_is_a_bijection_for_awkward_sizes() -> None:
    keys = torch.randint(0, 2**32, (FEISTEL_ROUNDS,), generator=torch.Generator().manual_seed(0))
    for n in (1, 2, 3, 17, 1000, 4097):
        out = keyed_permutation(torch.arange(n), n, keys)
        assert torch.equal(out.sort().values, torch.arange(n))


def test_config_presets_and_validation() -> None:
    assert ProbeConfig().hidden_sizes(19) == (128, 32)
    assert ProbeConfig().hidden_sizes(34) == (256, 128)
    assert ProbeConfig(hidden=(16,)).hidden_sizes(34) == (16,)
    medical = ProbeConfig.medical()
    assert (medical.batch_pixels, medical.stop_rule, medical.patience, medical.max_epochs) == (
        65_536, "loss_plateau", 20, None)
    with pytest.raises(ConfigError, match="stop_rule"):
        ProbeConfig(stop_rule="never")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_pixels"):
        ProbeConfig(batch_pixels=1)
    bank, _ = _separable_bank(1, seed=10)
    with pytest.raises(ValueError, match="classes"):
        train_probe(bank, 2, ProbeConfig(ensemble=1, max_epochs=1))


@pytest.mark.parametrize("rule", ["natural", "loss_plateau"])
def test_a_killed_probe_training_resumes_bit_for_bit(rule: str, tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A run's probe inside its resumable scope (a requeued Slurm job): killed after epoch 3, the
    next process continues at epoch 4 and ends with the weights of a run never interrupted;
    the checkpoint is gone once the probe has finished. loss_plateau runs without an epoch cap."""
    from bench.probe import train as train_module
    from bench.resume import resumable

    bank, _ = _separable_bank(2, seed=3)
    cap = 6 if rule == "natural" else None
    cfg = ProbeConfig(ensemble=3, batch_pixels=64, pixels_per_epoch=512, stop_rule=rule,  # type: ignore[arg-type]
                      max_epochs=cap, warmup_epochs=1, patience_iters=3, patience=1)
    real = train_module._run_epoch
    epochs: list[int] = []

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        epochs.append(args[7])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_run_epoch", counted)
    want = train_probe(bank, 3, cfg, seed=5)
    total, epochs[:] = len(epochs), []
    assert total > 3, "the probe must outlast the kill for this test to mean anything"

    def killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        if args[7] == 3:
            raise KeyboardInterrupt  # what a job sees of SIGTERM / scancel, as late as it comes
        return counted(*args, **kwargs)

    checkpoint = tmp_path / "checkpoints" / "run.probe.pt"
    monkeypatch.setattr(train_module, "_run_epoch", killed)
    with pytest.raises(KeyboardInterrupt), resumable(checkpoint, every_s=0.0):
        train_probe(bank, 3, cfg, seed=5)
    assert [p.name for p in checkpoint.parent.iterdir()] == ["run.probe.loop0.pt"]
    monkeypatch.setattr(train_module, "_run_epoch", counted)
    epochs[:] = []
    with resumable(checkpoint, every_s=0.0):
        got = train_probe(bank, 3, cfg, seed=5)
    assert epochs == list(range(3, total))
    assert "resuming from" in capsys.readouterr().err
    for name, tensor in want.state_dict().items():
        assert torch.equal(got.state_dict()[name], tensor), name
    assert not any(checkpoint.parent.iterdir())


def test_consolidated_and_host_staged_banks_gather_what_interpolation_gives(monkeypatch) -> None:
    """Before its first gather a bank's segments become one table per size group; a bank kept on
    the host for a GPU picks corner rows there and combines them where it computes. Both gather
    the interpolated features, bit for bit alike, and hand out the same training batches."""
    gen = torch.Generator().manual_seed(11)
    monkeypatch.setattr("bench.probe.bank.SEGMENT_BYTES", 1)  # one segment per image
    banks, images = [FeatureBank(), FeatureBank()], []
    for i in range(4):
        maps, labels = _maps(gen, [(5, 6, 6), (3, 11, 7), (2, 6, 6)]), np.full((20, 15), i, np.uint8)
        images.append(_dense(maps, (20, 15)) * (0.5 + i))
        for bank in banks:
            bank.add(maps, labels, scale=0.5 + i)
    resident, staged = banks
    assert [len(segs) for segs in resident._segments] == [4, 4]
    img = torch.tensor([3, 0, 2, 1, 3, 0])
    ys, xs = torch.tensor([0, 19, 7, 3, 12, 5]), torch.tensor([0, 14, 2, 9, 6, 11])
    got = resident.gather(img, ys, xs)
    want = torch.stack([images[i][:, y, x] for i, y, x in zip(img.tolist(), ys.tolist(), xs.tolist())])
    torch.testing.assert_close(got, want, **TOL)
    assert [len(segs) for segs in resident._segments] == [1, 1] and resident.nbytes == staged.nbytes
    assert staged.to("cpu", resident=False) is staged and not staged.resident and resident.resident
    assert torch.equal(staged.gather(img, ys, xs), got)
    flat = torch.tensor([[0, 299, 300, 1199], [650, 3, 901, 42]])
    for a, b in zip(resident.gather_flat(flat), staged.take(staged.stage(flat))):
        assert torch.equal(a, b)
    assert resident.gather_flat(flat)[1].tolist() == [[0, 0, 1, 3], [2, 0, 3, 0]]
    maps = _maps(gen, [(5, 6, 6), (3, 11, 7), (2, 6, 6)])  # a bank grows after its first gather
    for bank in banks:
        bank.add(maps, np.full((20, 15), 7, np.uint8), scale=2.0)
    more = torch.tensor([4, 1, 4])
    torch.testing.assert_close(resident.gather(more, ys[:3], xs[:3])[0], _dense(maps, (20, 15))[:, 0, 0] * 2, **TOL)
    assert torch.equal(staged.gather(more, ys[:3], xs[:3]), resident.gather(more, ys[:3], xs[:3]))
    assert resident.labels_at(torch.tensor([1200, 1499])).tolist() == [7, 7]


def test_training_from_a_host_staged_bank_equals_a_resident_one() -> None:
    """The staged path (a bank on the host feeding a GPU), run on the CPU, trains the same
    weights as the resident path, the natural rule's members stopping mid-epoch."""
    cfg = ProbeConfig.natural(ensemble=4, batch_pixels=32, max_epochs=4, warmup_epochs=0,
                              patience_iters=2, pixels_per_epoch=256, hidden=(8, 4))
    resident = train_probe(_separable_bank(2, seed=6)[0], 3, cfg, seed=7).state_dict()
    bank = _separable_bank(2, seed=6)[0].to("cpu", resident=False)
    staged = train_probe(bank, 3, cfg, seed=7).state_dict()
    assert not bank.resident  # train_probe's own placement kept the explicit choice
    assert all(torch.equal(resident[n], staged[n]) for n in resident)


def test_device_stop_bookkeeping_spans_and_mirrors() -> None:
    stop = _EarlyStop(5)
    stop.active = torch.tensor([False, True, False, True, False])
    assert stop.in_span().tolist() == [False, True, True, True, False] and stop.span() == slice(1, 4)
    assert not stop.all_stopped()
    stop.post_live()
    assert not stop.all_stopped()
    stop.active = torch.zeros(5, dtype=torch.bool)
    stop.post_live()
    assert stop.all_stopped() and stop.in_span().tolist() == [False] * 5
    host = stop.finish_epoch(torch.tensor([1.0, 2.0, math.inf, 3.0, 4.0]))
    assert stop.host_active == [False] * 5 and stop.host_span() == slice(0, 0)
    assert host.tolist() == [1.0, 2.0, math.inf, 3.0, 4.0]
