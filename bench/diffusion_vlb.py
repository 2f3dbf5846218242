"""The variational-bound term of improved/guided-diffusion's hybrid loss (Nichol & Dhariwal, §3.1).

A diffusion UNet with a learned sigma predicts, beside epsilon (or x0), per-pixel values v in
[-1, 1] that interpolate its reverse-process log variance between the posterior's and beta_t
("learned range"): log sigma_t^2 = frac log beta_t + (1 - frac) log beta~_t, frac = (v + 1) / 2.
The hybrid loss adds to the epsilon MSE the bound's term at the sampled t, in bits per dimension:
- t > 0: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) between two diagonal Gaussians;
- t = 0: the negative log-likelihood of x0 under p's Gaussian discretised to 8-bit bins.
The mean of p is computed from the prediction with its gradient stopped, so the term trains the
variance only and the mean keeps learning from the MSE alone (guided-diffusion's `frozen_out`).
The term is not rescaled: guided-diffusion's default loss type (MSE, `rescale_learned_sigmas`
off), which at T = 1000 equals improved-diffusion's rescaled one.
"""
from __future__ import annotations

import math

import torch

from bench.diffusion import Schedule

BIN = 1.0 / 255.0   # half an 8-bit step of an image in [-1, 1]
EDGE = 0.999        # pixels beyond +-EDGE take the whole tail (the bins at -1 and 1)
LOG_FLOOR = 1e-12


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF the reference implementations use."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) per element (nats) of N(means, e^(2 log_scales)) integrated over x's 8-bit bin;
    the outermost bins (x at -1 or 1) take the whole tail beyond them."""
    centred = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centred + BIN))
    cdf_min = approx_standard_normal_cdf(inv_std * (centred - BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=LOG_FLOOR))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=LOG_FLOOR))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=LOG_FLOOR))
    return torch.where(x < -EDGE, log_cdf_plus, torch.where(x > EDGE, log_one_minus_cdf_min, log_delta))


def learned_range_log_variance(sched: Schedule, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """log sigma_t^2 from the model's variance outputs in [-1, 1]: -1 is beta~_t, 1 is beta_t."""
    frac = (values + 1) / 2
    max_log = sched.at(torch.log(sched.betas), t, values)
    min_log = sched.at(sched.posterior_log_variance_clipped, t, values)
    return frac * max_log + (1 - frac) * min_log


def predicted_x0(sched: Schedule, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor, target: str) -> torch.Tensor:
    """x0 from the model's prediction: epsilon (x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)) or x0 itself."""
    if target == "x0":
        return prediction
    if target != "eps":
        raise ValueError(f"unknown model target {target!r}; expected eps or x0")
    ac = sched.alphas_cumprod.to(x_t.device)
    return sched.at(torch.sqrt(1 / ac), t, x_t) * x_t - sched.at(torch.sqrt(1 / ac - 1), t, x_t) * prediction


def posterior_mean(sched: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The mean of q(x_{t-1} | x_t, x0)."""
    return (sched.at(sched.posterior_mean_coef_x0, t, x_t) * x0
            + sched.at(sched.posterior_mean_coef_xt, t, x_t) * x_t)


def vlb_bits(sched: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor,
             variance_values: torch.Tensor, target: str = "eps") -> torch.Tensor:
    """The bound's term at t, per sample (B), in bits per dimension, with the mean's gradient stopped.

    `prediction`: the model's epsilon (or x0) output channels; `variance_values`: its other half.
    x0 predicted from `prediction` is not clipped (the training loss's `clip_denoised=False`).
    """
    with torch.autocast(x0.device.type, enabled=False):
        x0, x_t = x0.float(), x_t.float()
        frozen = prediction.detach().float()
        mean = posterior_mean(sched, predicted_x0(sched, x_t, t, frozen, target), x_t, t)
        log_var = learned_range_log_variance(sched, variance_values.float(), t)
        true_mean = posterior_mean(sched, x0, x_t, t)
        true_log_var = sched.at(sched.posterior_log_variance_clipped, t, x_t)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).flatten(1).mean(1) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)
