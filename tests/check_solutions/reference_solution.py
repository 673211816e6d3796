"""A correct solution of the problem set written as a student would, without the library: `dgm check` must pass it.

The handout's solutions show these functions; tests/check_solutions/mutants.py derives one wrong variant of a
function per classic mistake from them.
"""

import numpy as np
import torch


def ddpm_schedules(beta_min, beta_max, T):
    beta = beta_min + torch.arange(T, dtype=torch.float64) * (beta_max - beta_min) / (T - 1)
    alpha = 1 - beta
    return {"beta": beta, "alpha": alpha, "alpha_bar": torch.cumprod(alpha, dim=0)}


def forward(x0, t, noise, alpha_bar):
    level = alpha_bar[t].to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return level.sqrt() * x0 + (1 - level).sqrt() * noise


def sample(eps_model, n, shape, schedule, sigma="beta", generator=None):
    beta, alpha, alpha_bar = schedule["beta"], schedule["alpha"], schedule["alpha_bar"]
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    variance = beta if sigma == "beta" else (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    for k in reversed(range(len(beta))):
        eps = eps_model(x, torch.full((n,), k, dtype=torch.long))
        x = (x - beta[k] / (1 - alpha_bar[k]).sqrt() * eps) / alpha[k].sqrt()
        if k > 0:
            x = x + variance[k].sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


def loss(eps_model, x0, alpha_bar, generator=None):
    t = torch.randint(0, len(alpha_bar), (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return (noise - eps_model(forward(x0, t, noise, alpha_bar), t)).square().mean()


def respace(alpha_bar, steps):
    T = len(alpha_bar)
    timesteps = torch.linspace(0, T - 1, steps).round().long()
    kept = alpha_bar[timesteps]
    previous = torch.cat([kept.new_ones(1), kept[:-1]])
    return timesteps, 1 - kept / previous


def component_moments(t, means, stds, beta_min, beta_max):
    """Means and variances of the mixture's components at time t of the VP-SDE."""
    decay = np.exp(-(beta_min * t + (beta_max - beta_min) * t**2 / 2))
    return means * np.sqrt(decay), stds**2 * decay + 1 - decay


def log_terms(x, t, weights, means, stds, beta_min, beta_max):
    """log(weight_i N(x; m_i, v_i)) with components on the last axis, and the m_i and v_i."""
    m, v = component_moments(t, means, stds, beta_min, beta_max)
    x = np.asarray(x)[..., None]
    return np.log(weights) - 0.5 * np.log(2 * np.pi * v) - (x - m) ** 2 / (2 * v), x, m, v


def marginal_pdf(x, t, weights, means, stds, beta_min, beta_max):
    terms, *_ = log_terms(x, t, weights, means, stds, beta_min, beta_max)
    return np.exp(terms).sum(-1)


def score(x, t, weights, means, stds, beta_min, beta_max):
    terms, x, m, v = log_terms(x, t, weights, means, stds, beta_min, beta_max)
    responsibilities = np.exp(terms - terms.max(-1, keepdims=True))
    responsibilities /= responsibilities.sum(-1, keepdims=True)
    return (responsibilities * (m - x) / v).sum(-1)
