"""A 1-D Gaussian mixture with its exact marginals and score under the noising kernel (book chapter "Continuous
time"), the handout's mixture, and the exact noise predictor that a DDPM chain over it would learn.

Formulas come from ``derivations/mixture.py`` through ``dgm.closed_forms``. Densities and scores accept NumPy arrays
(float64) or torch tensors (autograd works).
"""

import numpy as np
import scipy.special
import torch

from dgm import closed_forms
from dgm._array_namespace import as_arrays
from dgm._arguments import is_integer


def _log_sum_exp_and_softmax(xp, log_terms):
    """log sum_i exp(log_terms_i) and the softmax over the first axis, stable by subtracting the maximum."""
    top = torch.amax(log_terms, dim=0) if xp is torch else log_terms.max(axis=0)
    shifted = xp.exp(log_terms - top)
    total = shifted.sum(0)
    return top + xp.log(total), shifted / total


def _check_noise_level(log_alpha_bar):
    """Refuse log alpha_bar > 0 or NaN: alpha_bar lies in (0, 1], and a time t passed in its place gives NaN."""
    if not bool((log_alpha_bar <= 0).all()):
        raise ValueError("log_alpha_bar must be <= 0 (alpha_bar in (0, 1]); for the VP-SDE at time t, pass "
                         "sde.log_alpha_bar(t) or call sde.score(p0, x, t)")


class GaussianMixture1D:
    """p_0 = sum_i weights_i N(means_i, stds_i^2), with stds standard deviations (the handout's convention).

    Every density method takes ``log_alpha_bar`` (0 by default, i.e. p_0 itself): the density of
    sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps, the marginal of both the DDPM chain and the VP-SDE.
    """

    def __init__(self, weights, means, stds):
        weights, means, stds = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (weights, means, stds))
        if not weights.ndim == means.ndim == stds.ndim == 1 or not len(weights) == len(means) == len(stds):
            raise ValueError(f"weights, means and stds must be 1-D of one length, got lengths "
                             f"{len(weights)}, {len(means)}, {len(stds)}")
        if not all(np.isfinite(v).all() for v in (weights, means, stds)):
            raise ValueError("weights, means and stds must be finite")
        if (weights <= 0).any() or abs(weights.sum() - 1) > 1e-9:
            raise ValueError(f"weights must be positive and sum to 1, got {weights.tolist()}")
        if (stds <= 0).any():
            raise ValueError(f"stds (standard deviations) must be positive, got {stds.tolist()}")
        self.weights, self.means, self.stds = weights, means, stds

    def __repr__(self):
        return (f"GaussianMixture1D(weights={self.weights.tolist()}, means={self.means.tolist()}, "
                f"stds={self.stds.tolist()})")

    def _component_terms(self, x, log_alpha_bar):
        """log(w_i N_i(x)) and each component's mean and variance after the kernel, components on the first axis.

        Components go first so that the sums over them are elementwise, which NumPy does fast.
        """
        xp, (x, log_alpha_bar, weights, means, stds) = as_arrays(x, log_alpha_bar, self.weights, self.means,
                                                                  self.stds)
        _check_noise_level(log_alpha_bar)
        per_component = (slice(None),) + (None,) * max(x.ndim, log_alpha_bar.ndim)
        mean = closed_forms.diffused_mean(means[per_component], log_alpha_bar)
        variance = closed_forms.diffused_variance(stds[per_component], log_alpha_bar)
        log_terms = xp.log(weights[per_component]) + closed_forms.normal_log_pdf(x, mean, variance)
        return xp, x, log_terms, mean, variance

    def log_pdf(self, x, log_alpha_bar=0.0):
        """log p(x), by log-sum-exp over components: finite where every component density underflows."""
        xp, _, log_terms, _, _ = self._component_terms(x, log_alpha_bar)
        log_p, _ = _log_sum_exp_and_softmax(xp, log_terms)
        return log_p

    def pdf(self, x, log_alpha_bar=0.0):
        """p(x)."""
        xp, _, log_terms, _, _ = self._component_terms(x, log_alpha_bar)
        log_p, _ = _log_sum_exp_and_softmax(xp, log_terms)
        return xp.exp(log_p)

    def score(self, x, log_alpha_bar=0.0):
        """d/dx log p(x) as the responsibility-weighted mean of component scores (derivations/mixture.py, sec. 3)."""
        xp, x, log_terms, mean, variance = self._component_terms(x, log_alpha_bar)
        _, responsibilities = _log_sum_exp_and_softmax(xp, log_terms)
        return (responsibilities * closed_forms.normal_score(x, mean, variance)).sum(0)

    def cdf(self, x, log_alpha_bar=0.0):
        """P(X <= x) for NumPy input, for goodness-of-fit tests."""
        x, log_alpha_bar = np.asarray(x, dtype=np.float64), np.asarray(log_alpha_bar, dtype=np.float64)
        per_component = (slice(None),) + (None,) * max(x.ndim, log_alpha_bar.ndim)
        mean = closed_forms.diffused_mean(self.means[per_component], log_alpha_bar)
        std = np.sqrt(closed_forms.diffused_variance(self.stds[per_component], log_alpha_bar))
        return (self.weights[per_component] * scipy.special.ndtr((x - mean) / std)).sum(0)

    def diffused(self, log_alpha_bar):
        """The mixture that p_0 becomes under the noising kernel at a scalar level (Problem 3a: it stays a mixture)."""
        return GaussianMixture1D(self.weights, closed_forms.diffused_mean(self.means, log_alpha_bar),
                                 np.sqrt(closed_forms.diffused_variance(self.stds, log_alpha_bar)))

    def sample(self, n, rng=None):
        """n independent draws as a float64 array; ``rng`` is a seed or a numpy Generator."""
        if not is_integer(n) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        rng = np.random.default_rng(rng)
        component = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[component] + self.stds[component] * rng.standard_normal(n)


def toy_mixture():
    """The handout's p_0: an asymmetric mixture of two Gaussians (stds are standard deviations)."""
    return GaussianMixture1D(weights=[0.3, 0.7], means=[-2.0, 2.0], stds=[0.5, 0.3])


def exact_noise_predictor(mixture, alpha_bar):
    """eps*(x, t) = -sqrt(1 - alpha_bar_t) d/dx log q(x_t), the perfect noise model of a DDPM chain with these
    alpha_bar over ``mixture`` (Tweedie's formula, derivations/mixture.py, sec. 4); t indexes alpha_bar."""
    def predict(x, t):
        # one noise level per batch when every sample is at the same step (always, when sampling): much cheaper
        level = alpha_bar[t[:1]] if bool((t == t[0]).all()) else alpha_bar[t].reshape(-1, 1)
        log_alpha_bar = torch.log(level).to(x)
        return closed_forms.eps_from_score(mixture.score(x, log_alpha_bar), log_alpha_bar)
    return predict
