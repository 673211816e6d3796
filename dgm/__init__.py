"""dgm: the library behind the diffusion-models handout (see README.md and book/).

Public API: ``ddpm_schedules``, ``cosine_schedule``, ``DDPM`` and its ``SAMPLERS`` (Problem 1), ``respace`` and
``respaced_timesteps`` (Problem 2), ``VPSDE`` and ``GaussianMixture1D`` (Problem 3).
Every closed form comes from ``derivations/`` through the generated ``dgm.closed_forms``.
"""

from dgm.ddpm import DDPM, SAMPLERS
from dgm.schedules import cosine_schedule, ddpm_schedules, respace, respaced_timesteps
from dgm.mixture import GaussianMixture1D
from dgm.sde import VPSDE

__all__ = ["DDPM", "SAMPLERS", "ddpm_schedules", "cosine_schedule", "respace", "respaced_timesteps", "VPSDE",
           "GaussianMixture1D"]
