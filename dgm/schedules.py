"""Noise schedules of the discrete chain (book chapter "The forward process"; derivations/ddpm.py).

A schedule is a dict of float64 tensors indexed by timestep k = 0..T-1 (the index convention of
``derivations.ddpm``); ``dgm.DDPM`` registers each entry as a buffer so ``.to(device)`` moves it.
"""

import torch

from dgm import closed_forms
from dgm._arguments import check_chain_length, checked_timesteps, is_integer

NOISE_SCHEDULES = ("linear", "cosine")
# The problem set's linear schedule (Problem 1): the defaults of dgm.DDPM and `dgm train`, and what the checks use.
PROBLEM_SET_BETA_MIN, PROBLEM_SET_BETA_MAX, PROBLEM_SET_T = 1e-4, 0.02, 1000


def linear_betas(beta_min, beta_max, T):
    """The problem set's linear betas, beta_k = beta_min + k (beta_max - beta_min)/(T - 1), k = 0..T-1."""
    check_chain_length(T)
    if not 0 < beta_min <= beta_max < 1:
        raise ValueError(f"need 0 < beta_min <= beta_max < 1, got beta_min={beta_min!r}, beta_max={beta_max!r}")
    return closed_forms.linear_beta(torch.arange(T, dtype=torch.float64), beta_min, beta_max, T)


def rescaled_beta_range(beta_min, beta_max, T, reference_T=1000):
    """(beta_min, beta_max) scaled by reference_T / T, as improved DDPM does (Nichol and Dhariwal 2021): the betas keep
    about the same sum, so alpha_bar at the last step stays near that of the reference chain (book, "The number of
    timesteps")."""
    check_chain_length(T)
    scale = reference_T / T
    return beta_min * scale, beta_max * scale


def schedule_from_betas(beta):
    """Every table the sampler and the book use, from a 1-D tensor of betas (float64)."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    if beta.ndim != 1 or len(beta) == 0 or not bool(((beta > 0) & (beta < 1)).all()):
        raise ValueError("beta must be a non-empty 1-D tensor with every entry in (0, 1)")
    alpha = 1 - beta  # definition of alpha_t (derivations/ddpm.py, section 1)
    alpha_bar = torch.cumprod(alpha, dim=0)  # alpha_bar[k] = prod_{i<=k} alpha[i] (index convention)
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])  # alpha_bar before the first step is 1
    return {
        "beta": beta,
        "alpha": alpha,
        "alpha_bar": alpha_bar,
        "alpha_bar_prev": alpha_bar_prev,
        "posterior_variance": closed_forms.posterior_variance(beta, alpha_bar_prev, alpha_bar),
    }


def ddpm_schedules(beta_min, beta_max, T):
    """The DDPM schedule of the problem set (Problem 1a): named float64 tensors of length T, indexed k = 0..T-1.

    Keys: beta, alpha, alpha_bar, alpha_bar_prev (1 before the first step) and posterior_variance (beta_tilde).
    """
    return schedule_from_betas(linear_betas(beta_min, beta_max, T))


def cosine_schedule(T, offset=0.008, max_beta=0.999):
    """The cosine schedule of improved DDPM (Nichol and Dhariwal 2021, eq. 17), as the same named tables as
    ``ddpm_schedules``: alpha_bar from ``closed_forms.cosine_alpha_bar``, each beta clipped at ``max_beta``."""
    check_chain_length(T)
    if not offset > 0 or not 0 < max_beta < 1:
        raise ValueError(f"need offset > 0 and 0 < max_beta < 1, got offset={offset!r}, max_beta={max_beta!r}")
    k = torch.arange(-1, T, dtype=torch.float64)  # k = -1 is "before the first step", where alpha_bar = 1
    alpha_bar = closed_forms.cosine_alpha_bar(k, offset, T)
    beta = closed_forms.respaced_beta(alpha_bar[1:], alpha_bar[:-1])  # consecutive steps (derivations/ddpm.py, 5)
    return schedule_from_betas(beta.clamp(max=max_beta))


def noise_schedule_tables(name, beta_min, beta_max, T):
    """The tables of the named schedule: "linear" (the problem set's, from beta_min to beta_max) or "cosine"
    (which has no beta range and ignores it)."""
    if name not in NOISE_SCHEDULES:
        raise ValueError(f"noise schedule must be one of {NOISE_SCHEDULES}, got {name!r}")
    return ddpm_schedules(beta_min, beta_max, T) if name == "linear" else cosine_schedule(T)


def respaced_timesteps(T, steps):
    """``steps`` timesteps evenly spaced over 0..T-1, ascending, including 0 and T-1 (Problem 2b); a single
    step is T-1 alone, the jump from pure noise to the data."""
    if not is_integer(steps) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in 1..T={T}, got {steps!r}")
    T, steps = int(T), int(steps)
    if steps == 1:
        return torch.tensor([T - 1])
    return torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long()


def respace(alpha_bar, timesteps):
    """The schedule of the chain that visits only ``timesteps`` (ascending), with the same marginals there.

    beta'_i = 1 - alpha_bar[tau_i] / alpha_bar[tau_{i-1}] (derivations/ddpm.py, section 5); the result also holds
    ``timesteps``, the original index the network is given at each respaced step.
    """
    timesteps = checked_timesteps(alpha_bar, timesteps)
    kept = alpha_bar[timesteps]
    kept_prev = torch.cat([kept.new_ones(1), kept[:-1]])
    schedule = schedule_from_betas(closed_forms.respaced_beta(kept, kept_prev))
    schedule["timesteps"] = timesteps
    return schedule
