"""The VP-SDE toy: exact marginals and score against SymPy, finite differences, autograd and Monte Carlo."""

import numpy as np
import pytest
import scipy.stats
import sympy as sp
import torch

from derivations import vp_sde as derivation
from derivations._check import expand_stable_functions
from dgm import VPSDE, GaussianMixture1D, ddpm_schedules
from dgm.mixture import exact_noise_predictor, toy_mixture


def test_marginal_and_score_match_the_sympy_expressions(mixture, rng):
    sde = VPSDE()
    parameters = {derivation.beta_min: sde.beta_min, derivation.beta_max: sde.beta_max, derivation.pi_1: 0.3,
                  derivation.mu_1: -2.0, derivation.mu_2: 2.0, derivation.s_1: 0.5, derivation.s_2: 0.3}
    arguments = (derivation.x, derivation.t)
    density = expand_stable_functions(derivation.marginal_density).subs(parameters)
    exact_log_pdf = sp.lambdify(arguments, sp.log(density), modules="mpmath")
    exact_score = sp.lambdify(arguments, expand_stable_functions(derivation.marginal_score).subs(parameters),
                              modules="mpmath")
    for x, t in zip(rng.uniform(-4, 4, 25), rng.uniform(1e-3, 1, 25)):
        point = (sp.Float(x, 40), sp.Float(t, 40))
        assert sde.marginal_log_pdf(mixture, x, t) == pytest.approx(float(exact_log_pdf(*point)), rel=1e-12)
        assert sde.score(mixture, x, t) == pytest.approx(float(exact_score(*point)), rel=1e-10, abs=1e-12)


def test_score_matches_finite_differences_and_autograd(mixture):
    sde = VPSDE()
    x = np.linspace(-5, 5, 41)
    for t in (1e-3, 0.1, 0.5, 1.0):
        h = 1e-5
        central = (sde.marginal_log_pdf(mixture, x + h, t) - sde.marginal_log_pdf(mixture, x - h, t)) / (2 * h)
        np.testing.assert_allclose(sde.score(mixture, x, t), central, rtol=1e-6, atol=1e-6)
        x_torch = torch.tensor(x, requires_grad=True)
        sde.marginal_log_pdf(mixture, x_torch, torch.tensor(t, dtype=torch.float64)).sum().backward()
        np.testing.assert_allclose(sde.score(mixture, x, t), x_torch.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_score_is_finite_in_the_tails(mixture):
    sde = VPSDE()
    x = np.array([-100.0, -50.0, 50.0, 100.0])[:, None]
    t = np.array([1e-5, 1e-3, 0.1, 1.0])[None, :]
    score = sde.score(mixture, x, t)
    assert np.isfinite(score).all() and np.isfinite(sde.marginal_log_pdf(mixture, x, t)).all()
    # far out, the widest component (here the first) dominates and the score is its own: -(x - m)/v
    widest = mixture.diffused(sde.log_alpha_bar(1e-5))
    for row, x_far in ((0, -100.0), (-1, 100.0)):
        assert score[row, 0] == pytest.approx(-(x_far - widest.means[0]) / widest.stds[0] ** 2, rel=1e-9)


def test_marginal_is_a_mixture_that_tends_to_the_standard_normal(mixture):
    sde = VPSDE()
    x = np.linspace(-4, 4, 9)
    np.testing.assert_allclose(sde.marginal(mixture, 0.0).pdf(x), mixture.pdf(x), rtol=1e-14)
    np.testing.assert_allclose(sde.marginal(mixture, 1.0).pdf(x), scipy.stats.norm.pdf(x), atol=1e-2)
    np.testing.assert_allclose(sde.marginal(mixture, 0.4).pdf(x), sde.marginal_pdf(mixture, x, 0.4), rtol=1e-14)


@pytest.mark.parametrize("weights, means, stds, message", [
    ([0.5, 0.6], [0, 1], [1, 1], "sum to 1"),
    ([-0.5, 1.5], [0, 1], [1, 1], "positive and sum to 1"),
    ([0.5, 0.5], [0, 1], [1, -1], "stds .* must be positive"),
    ([0.5, 0.5], [0, 1, 2], [1, 1], "one length"),
    ([0.5, 0.5], [0, np.nan], [1, 1], "finite"),
])
def test_invalid_mixtures_are_refused(weights, means, stds, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture1D(weights, means, stds)


def test_invalid_sde_and_steps_are_refused(mixture):
    for beta_min, beta_max in ((5.0, 1.0), (0.0, 20.0), (0.1, float("inf"))):
        with pytest.raises(ValueError, match="beta_min <= beta_max"):
            VPSDE(beta_min=beta_min, beta_max=beta_max)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        VPSDE().sample_forward(mixture.sample(10, 0), steps=0)
    with pytest.raises(ValueError, match="not a numpy Generator"):
        VPSDE().sample_forward(torch.zeros(3), steps=2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="not a torch.Generator"):
        VPSDE().sample_forward(np.zeros(3), steps=2, rng=torch.Generator())
    with pytest.raises(ValueError, match="beta_min <= beta_max"):
        VPSDE(None, 20.0)
    with pytest.raises(ValueError, match="t must be a scalar time"):
        VPSDE().marginal(mixture, np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        mixture.sample(10.0)


def test_a_time_passed_as_a_noise_level_is_refused_not_nan(mixture):
    """GaussianMixture1D.score takes log alpha_bar <= 0; a time t in (0, 1] there would give NaN."""
    for level in (0.5, np.array([-1.0, 0.5]), float("nan"), torch.tensor(0.5)):
        with pytest.raises(ValueError, match=r"log_alpha_bar must be <= 0 .* sde.score\(p0, x, t\)"):
            mixture.score(np.zeros(2), level)
    with pytest.raises(ValueError, match="log_alpha_bar must be <= 0"):
        VPSDE().sample_reverse(np.zeros(5), lambda x, t: mixture.score(x, t), steps=4)


def test_paths_that_blow_up_raise():
    with pytest.raises(FloatingPointError, match="non-finite"):
        VPSDE().sample_reverse(np.zeros(3), lambda x, t: np.full_like(x, np.nan), steps=3)
    with pytest.raises(FloatingPointError, match="non-finite"):
        VPSDE().sample_probability_flow(torch.zeros(3), lambda x, t: torch.full_like(x, np.inf), steps=3)


def test_forward_sde_reaches_the_closed_form_marginal(mixture):
    """Forward Euler-Maruyama from p_0, stopped at t = 0.3 and at t = 1, matches p_t; p_t at the wrong t does not."""
    sde = VPSDE()
    x0 = torch.from_numpy(mixture.sample(40_000, rng=1))
    path = sde.sample_forward(x0, steps=1000, rng=2, return_path=True)
    at_03, at_1 = path[300].numpy(), path[-1].numpy()
    assert scipy.stats.kstest(at_03, lambda x: mixture.cdf(x, sde.log_alpha_bar(0.3))).pvalue > 1e-3
    assert scipy.stats.kstest(at_1, lambda x: mixture.cdf(x, sde.log_alpha_bar(1.0))).pvalue > 1e-3
    assert scipy.stats.kstest(at_03, lambda x: mixture.cdf(x, sde.log_alpha_bar(0.2))).pvalue < 1e-6


@pytest.mark.parametrize("method", ["sample_reverse", "sample_probability_flow"])
def test_reverse_time_with_the_exact_score_returns_p0(mixture, method):
    sde = VPSDE()
    x1 = torch.from_numpy(mixture.diffused(sde.log_alpha_bar(1.0)).sample(40_000, rng=3))
    kwargs = {"rng": 4} if method == "sample_reverse" else {}
    x0 = getattr(sde, method)(x1, lambda x, t: sde.score(mixture, x, t), steps=1000, **kwargs).numpy()
    assert scipy.stats.kstest(x0, mixture.cdf).pvalue > 1e-3
    shifted = GaussianMixture1D(mixture.weights, mixture.means + 0.05, mixture.stds)  # power check
    assert scipy.stats.kstest(x0, shifted.cdf).pvalue < 1e-6


def test_simulators_are_reproducible_in_numpy_and_torch(mixture):
    sde = VPSDE()
    x0 = mixture.sample(100, rng=0)
    np.testing.assert_array_equal(sde.sample_forward(x0, 20, rng=5), sde.sample_forward(x0, 20, rng=5))
    torch.testing.assert_close(sde.sample_forward(torch.from_numpy(x0), 20, rng=5),
                               sde.sample_forward(torch.from_numpy(x0), 20, rng=5), rtol=0, atol=0)
    assert sde.sample_forward(x0, 20, rng=5, return_path=True).shape == (21, 100)


def test_exact_noise_predictor_matches_finite_differences():
    mixture = toy_mixture()
    alpha_bar = ddpm_schedules(1e-4, 0.02, 1000)["alpha_bar"]
    predict = exact_noise_predictor(mixture, alpha_bar)
    x = torch.linspace(-4, 4, 33, dtype=torch.float64).reshape(-1, 1)
    h = 1e-5
    for step in (0, 10, 500, 999):
        t = torch.full((len(x),), step)
        log_alpha_bar = float(torch.log(alpha_bar[step]))
        derivative = (mixture.log_pdf(x.numpy() + h, log_alpha_bar)
                      - mixture.log_pdf(x.numpy() - h, log_alpha_bar)) / (2 * h)
        expected = -np.sqrt(1 - np.exp(log_alpha_bar)) * derivative
        np.testing.assert_allclose(predict(x, t).numpy(), expected, rtol=1e-6, atol=1e-7)
    # per-sample timesteps give the same numbers as one shared timestep
    mixed = torch.tensor([0, 999] * 16 + [500])
    shared = torch.cat([predict(x[i:i + 1], mixed[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(predict(x, mixed), shared)
