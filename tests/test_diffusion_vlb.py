"""The hybrid loss's variational-bound term (improved/guided-diffusion) and DDPM training with it."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from bench import registry
from bench.context import RunContext
from bench.diffusion import Schedule
from bench.diffusion_vlb import approx_standard_normal_cdf, vlb_bits
from bench.errors import FieldError

T = 1000


def _posterior_by_bayes(betas: torch.Tensor, t: int) -> tuple[float, float, float]:
    """q(x_{t-1} | x_t, x0) from q(x_t | x_{t-1}) q(x_{t-1} | x0), a product of two Gaussians in
    x_{t-1}: (coefficient of x0, coefficient of x_t, variance)."""
    if t == 0:  # x_{-1} is x0 itself
        return 1.0, 0.0, 0.0
    alphas = [1 - float(b) for b in betas]
    ab_prev = math.prod(alphas[:t])          # alpha-bar_{t-1}
    a_t, b_t = alphas[t], float(betas[t])
    precision = a_t / b_t + 1 / (1 - ab_prev)
    return (math.sqrt(ab_prev) / (1 - ab_prev)) / precision, (math.sqrt(a_t) / b_t) / precision, 1 / precision


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_posterior_equals_the_gaussian_product(schedule: str) -> None:
    sched = Schedule(schedule, T)
    for t in (1, 2, 17, 500, 999):
        cx0, cxt, var = _posterior_by_bayes(sched.betas, t)
        assert math.isclose(float(sched.posterior_mean_coef_x0[t]), cx0, rel_tol=1e-9)
        assert math.isclose(float(sched.posterior_mean_coef_xt[t]), cxt, rel_tol=1e-9)
        assert math.isclose(float(sched.posterior_variance[t]), var, rel_tol=1e-9)
    assert float(sched.posterior_variance[0]) == 0.0  # log clipped to the t = 1 value there
    assert sched.posterior_log_variance_clipped[0] == sched.posterior_log_variance_clipped[1]


def _restated_vlb(sched: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                  eps: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The term restated per sample in float64 with torch.distributions for the KL."""
    out = []
    for i, step in enumerate(t.tolist()):
        cx0, cxt, var = _posterior_by_bayes(sched.betas, step)
        ab = math.prod(1 - float(b) for b in sched.betas[: step + 1])
        x0_hat = (x_t[i].double() - math.sqrt(1 - ab) * eps[i].double()) / math.sqrt(ab)
        beta = float(sched.betas[step])
        beta_tilde = var if step > 0 else _posterior_by_bayes(sched.betas, 1)[2]
        frac = (v[i].double() + 1) / 2
        model_std = torch.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(beta_tilde)))
        model_mean = cx0 * x0_hat + cxt * x_t[i].double()
        if step > 0:
            true = Normal(cx0 * x0[i].double() + cxt * x_t[i].double(), math.sqrt(var))
            nats = kl_divergence(true, Normal(model_mean, model_std)).mean()
        else:  # the decoder: the Gaussian's mass on x0's 8-bit bin, the tails at the edges
            cdf = lambda z: 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))  # noqa: E731
            x = x0[i].double()
            upper = cdf((x - model_mean + 1 / 255) / model_std)
            lower = cdf((x - model_mean - 1 / 255) / model_std)
            mass = torch.where(x < -0.999, upper, torch.where(x > 0.999, 1 - lower, upper - lower))
            nats = -torch.log(mass.clamp(min=1e-12)).mean()
        out.append(nats / math.log(2))
    return torch.stack(out)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_vlb_term_equals_the_restated_formulas(schedule: str) -> None:
    sched = Schedule(schedule, T)
    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 0, 1, 10, 250, 999])
    x0 = (torch.randint(0, 256, (6, 3, 4, 5), generator=gen).float() / 127.5 - 1)  # 8-bit images, edges included
    x0[0, :, 0, 0], x0[1, :, 0, 0] = -1.0, 1.0
    noise = torch.randn(x0.shape, generator=gen)
    x_t = sched.q_sample(x0, t, noise)
    eps = noise + 0.3 * torch.randn(x0.shape, generator=gen)    # an imperfect prediction
    v = torch.rand(x0.shape, generator=gen) * 2 - 1               # variance outputs in [-1, 1]
    got = vlb_bits(sched, x0, x_t, t, eps, v)
    want = _restated_vlb(sched, x0, x_t, t, eps, v)
    assert got.shape == (6,)
    assert torch.allclose(got.double(), want, rtol=1e-3, atol=1e-5)


def test_vlb_is_zero_for_the_true_posterior_and_trains_only_the_variance() -> None:
    sched = Schedule("cosine", T)
    gen = torch.Generator().manual_seed(1)
    t = torch.tensor([5, 300, 900])
    x0 = torch.rand(3, 3, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    x_t = sched.q_sample(x0, t, noise)
    at_posterior = -torch.ones_like(x0)  # -1: the posterior's variance beta-tilde
    assert vlb_bits(sched, x0, x_t, t, noise, at_posterior).abs().max() < 1e-4
    eps = (noise + 0.5).requires_grad_()
    v = torch.zeros_like(x0, requires_grad=True)
    vlb_bits(sched, x0, x_t, t, eps, v).sum().backward()
    assert eps.grad is None  # the mean's gradient is stopped: epsilon learns from the MSE only
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_approximate_cdf_is_close_to_the_normal_cdf() -> None:
    z = torch.linspace(-6, 6, 241, dtype=torch.float64)
    assert (approx_standard_normal_cdf(z) - Normal(0.0, 1.0).cdf(z)).abs().max() < 1e-3


def _ddpm(**overrides: object):  # type: ignore[no-untyped-def]
    cls = registry.get("ddpm")
    return cls(replace(cls.presets["tiny"], train_steps=1, train_batch=2, **overrides))


def test_a_pretraining_step_with_the_hybrid_loss_trains_the_variance_outputs() -> None:
    images = [np.random.default_rng(i).random((70, 80, 3)).astype(np.float32) for i in range(3)]
    ctx = RunContext(spec=None, device=torch.device("cpu"))  # type: ignore[arg-type]
    out_key = "out.2.weight"  # the zero-initialised last convolution: rows 0-2 epsilon, 3-5 the variance

    def trained(variance_loss: str) -> torch.Tensor:
        torch.manual_seed(0)
        state = _ddpm(variance_loss=variance_loss).pretrain(images, ctx)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        return state[out_key]

    plain, hybrid = trained("none"), trained("vlb")
    assert torch.count_nonzero(plain[3:]) == 0           # epsilon alone never reaches the variance rows
    assert torch.count_nonzero(hybrid[3:]) > 0
    assert torch.count_nonzero(plain[:3]) > 0 and torch.count_nonzero(hybrid[:3]) > 0


def test_ddpm_presets_and_protocols_choose_the_loss() -> None:
    cls = registry.get("ddpm")
    assert cls.resolve_config("small", {}).variance_loss == "none"  # the committed records' loss
    assert cls.resolve_config("small", {"protocol": "official"}).variance_loss == "vlb"
    paper = cls.resolve_config("paper", {})
    assert paper.protocol == "official" and paper.variance_loss == "vlb" and paper.learn_sigma
    with pytest.raises(FieldError, match="learn_sigma"):
        cls.resolve_config("small", {"variance_loss": "vlb", "learn_sigma": False})
    with pytest.raises(FieldError, match="official"):
        cls.resolve_config("small", {"protocol": "official", "variance_loss": "none"})
    dd = registry.get("datasetddpm")
    assert dd.resolve_config("small", {"protocol": "official"}).sample_variance == "learned"
    with pytest.raises(FieldError, match="sample_variance"):
        dd.resolve_config("small", {"sample_variance": "learned"})
