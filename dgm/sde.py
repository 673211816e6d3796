"""The VP-SDE (book chapter "Continuous time", Problem 3): its marginals over a Gaussian mixture, their score, and
Euler(-Maruyama) simulators of the forward SDE, the reverse SDE and the probability-flow ODE.

Formulas come from ``derivations/vp_sde.py`` through ``dgm.closed_forms``; the mixture is ``dgm.mixture``. The
simulators step in the input's array type, NumPy or torch.
"""

import numbers

import numpy as np
import torch

from dgm import closed_forms
from dgm._array_namespace import as_arrays
from dgm._arguments import is_integer

PROBLEM_3_BETA_MIN, PROBLEM_3_BETA_MAX = 0.1, 20.0  # the VP-SDE of Problem 3, beta(t) over t in [0, 1]


class VPSDE:
    """dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw on t in [0, 1] (Song et al. 2021, Appendix C; Problem 3)."""

    def __init__(self, beta_min=PROBLEM_3_BETA_MIN, beta_max=PROBLEM_3_BETA_MAX):
        numbers_given = all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in (beta_min, beta_max))
        if not (numbers_given and np.isfinite(beta_min) and np.isfinite(beta_max) and 0 < beta_min <= beta_max):
            raise ValueError(f"need 0 < beta_min <= beta_max, got beta_min={beta_min!r}, beta_max={beta_max!r}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def __repr__(self):
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def log_alpha_bar(self, t):
        """log alpha_bar(t) = -int_0^t beta: the noise level of p(x(t) | x(0))."""
        return closed_forms.vp_log_alpha_bar(t, self.beta_min, self.beta_max)

    def drift(self, x, t):
        return closed_forms.vp_drift(x, t, self.beta_min, self.beta_max)

    def diffusion(self, t):
        return closed_forms.vp_diffusion(t, self.beta_min, self.beta_max)

    @staticmethod
    def _check_time(t):
        """Refuse times outside the SDE's interval [0, 1] (or NaN)."""
        values = t.detach() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if not 0 <= low <= high <= 1:
            raise ValueError(f"t must lie in [0, 1], got values in {low:g}..{high:g}")

    def marginal(self, p0, t):
        """p_t for a scalar t, as a GaussianMixture1D (Problem 3a)."""
        if np.ndim(t) != 0:
            raise ValueError(f"t must be a scalar time (marginal_pdf takes an array of times), got shape {np.shape(t)}")
        self._check_time(t)
        return p0.diffused(self.log_alpha_bar(float(t)))

    def marginal_log_pdf(self, p0, x, t):
        """log p_t(x), broadcasting over x and t."""
        self._check_time(t)
        return p0.log_pdf(x, self.log_alpha_bar(t))

    def marginal_pdf(self, p0, x, t):
        """p_t(x), broadcasting over x and t (the heat map of the continuous-time chapter)."""
        self._check_time(t)
        return p0.pdf(x, self.log_alpha_bar(t))

    def score(self, p0, x, t):
        """d/dx log p_t(x), broadcasting over x and t (Problem 3b)."""
        self._check_time(t)
        return p0.score(x, self.log_alpha_bar(t))

    def _check_steps(self, steps):
        if not is_integer(steps) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")

    def sample_forward(self, x0, steps=1000, rng=None, return_path=False):
        """Euler-Maruyama for the forward SDE from t = 0 to 1, one path per entry of x0."""
        return self._integrate(x0, 0.0, 1.0, steps, rng, return_path, self.drift, noisy=True)

    def sample_reverse(self, x1, score, steps=1000, rng=None, t_min=0.0, return_path=False):
        """Euler-Maruyama for the reverse-time SDE from t = 1 to t_min, given ``score(x, t)`` (Song et al. eq. 6)."""
        self._check_end_time(t_min)

        def drift(x, t):
            return closed_forms.reverse_sde_drift(x, score(x, t), t, self.beta_min, self.beta_max)
        return self._integrate(x1, 1.0, t_min, steps, rng, return_path, drift, noisy=True)

    def sample_probability_flow(self, x1, score, steps=1000, t_min=0.0, return_path=False):
        """Euler steps of the probability-flow ODE from t = 1 to t_min (Song et al. 2021, eq. 13); deterministic."""
        self._check_end_time(t_min)

        def drift(x, t):
            return closed_forms.probability_flow_drift(x, score(x, t), t, self.beta_min, self.beta_max)
        return self._integrate(x1, 1.0, t_min, steps, None, return_path, drift, noisy=False)

    @staticmethod
    def _check_end_time(t_min):
        """The reverse-time samplers run from t = 1 down to t_min, which must lie in [0, 1)."""
        if not (isinstance(t_min, (int, float)) and 0 <= t_min < 1):
            raise ValueError(f"t_min must lie in [0, 1), got {t_min!r}")

    def _integrate(self, x, t_start, t_end, steps, rng, return_path, drift, noisy):
        """x_{n+1} = x_n + drift dt (+ g(t_n) sqrt(|dt|) z) on a uniform grid, in either direction of time.

        Works in the input's array type: NumPy float64, or torch in the tensor's dtype and device. ``rng`` is a seed,
        a numpy Generator or a torch Generator to match.
        """
        self._check_steps(steps)
        xp, (x,) = as_arrays(x)
        normal = standard_normal_draws(x, rng)
        times = np.linspace(t_start, t_end, int(steps) + 1)
        path = [x]
        for t, t_next in zip(times[:-1], times[1:]):
            step = drift(x, float(t)) * (t_next - t)  # dt < 0 in reverse time
            if noisy:
                step = step + self.diffusion(float(t)).item() * np.sqrt(abs(t_next - t)) * normal()
            x = x + step
            if return_path:
                path.append(x)
        if not bool(xp.isfinite(x).all()):
            raise FloatingPointError("the paths reached non-finite values; check the score and the step count")
        return xp.stack(path) if return_path else x


def standard_normal_draws(x, rng):
    """A function that draws a standard normal array of x's shape and array type each call, from ``rng``: a seed or
    None, or a generator of x's kind (numpy Generator for NumPy, torch.Generator for torch)."""
    if isinstance(x, torch.Tensor):
        if isinstance(rng, np.random.Generator):
            raise ValueError("torch input needs rng as a seed or a torch.Generator, not a numpy Generator")
        generator = rng if isinstance(rng, torch.Generator) or rng is None else (
            torch.Generator(device=x.device).manual_seed(int(rng)))
        return lambda: torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if isinstance(rng, torch.Generator):
        raise ValueError("NumPy input needs rng as a seed or a numpy Generator, not a torch.Generator")
    generator = np.random.default_rng(rng)
    return lambda: generator.standard_normal(x.shape)
