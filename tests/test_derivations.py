"""SymPy itself: the derivations' central claims, re-checked as a reader would state them."""

import numpy as np
import pytest
import sympy as sp

from derivations import ddpm, mixture, vp_sde
from derivations._check import expand_stable_functions, holds
from derivations.display import in_powers_of, latex


def test_marginal_density_integrates_to_one():
    density = expand_stable_functions(vp_sde.marginal_density)
    values = {vp_sde.t: sp.Rational(3, 10), vp_sde.beta_min: sp.Rational(1, 10), vp_sde.beta_max: 20,
              vp_sde.pi_1: sp.Rational(1, 3), vp_sde.mu_1: -2, vp_sde.mu_2: 2, vp_sde.s_1: sp.Rational(1, 2),
              vp_sde.s_2: sp.Rational(3, 10)}
    total = sp.integrate(density.subs(values), (vp_sde.x, -sp.oo, sp.oo))  # exact, in erfc and exp terms
    assert abs(sp.N(total, 40) - 1) < 1e-35


def test_component_density_integrates_to_one_symbolically():
    m, v = sp.Symbol("m", real=True), sp.Symbol("v", positive=True)
    assert sp.simplify(sp.integrate(mixture.normal_pdf(mixture.x, m, v), (mixture.x, -sp.oo, sp.oo))) == 1


def test_marginal_score_is_derivative_of_log_density():
    """The derivative of log p_t equals the responsibility form, at random parameter points (high precision)."""
    rng = np.random.default_rng(3)
    symbols = (vp_sde.x, vp_sde.t, vp_sde.beta_min, vp_sde.beta_max, vp_sde.pi_1, vp_sde.mu_1, vp_sde.mu_2,
               vp_sde.s_1, vp_sde.s_2)
    density = expand_stable_functions(vp_sde.marginal_density)
    derivative = sp.diff(sp.log(density), vp_sde.x)
    level = vp_sde.log_alpha_bar
    terms = [w * mixture.normal_pdf(vp_sde.x, sp.exp(level / 2) * m, sd**2 * sp.exp(level) + 1 - sp.exp(level))
             for w, m, sd in ((vp_sde.pi_1, vp_sde.mu_1, vp_sde.s_1), (1 - vp_sde.pi_1, vp_sde.mu_2, vp_sde.s_2))]
    responsibility_form = sum(term / sum(terms) * -(vp_sde.x - sp.exp(level / 2) * m)
                              / (sd**2 * sp.exp(level) + 1 - sp.exp(level))
                              for term, m, sd in zip(terms, (vp_sde.mu_1, vp_sde.mu_2), (vp_sde.s_1, vp_sde.s_2)))
    for _ in range(5):
        point = dict(zip(symbols, [sp.Float(v, 30) for v in (rng.uniform(-3, 3), rng.uniform(0.01, 1), 0.1, 20,
                                                               rng.uniform(0.1, 0.9), rng.uniform(-3, 0),
                                                               rng.uniform(0, 3), rng.uniform(0.1, 1),
                                                               rng.uniform(0.1, 1))]))
        assert sp.N(derivative.subs(point) - responsibility_form.subs(point), 25) == pytest.approx(0, abs=1e-20)


def test_epsilon_mean_equals_posterior_mean():
    substituted = ddpm.posterior_mean.subs(ddpm.x0, ddpm.predict_x0).subs(ddpm.bar_in_terms_of_prev)
    assert holds(substituted, ddpm.reverse_mean_from_eps.subs(ddpm.bar_in_terms_of_prev), "epsilon form")


def test_respaced_chain_keeps_alpha_bar_at_kept_steps():
    kept = list(sp.symbols("a1:5", positive=True))
    for product, value in zip(ddpm.respaced_cumulative_product(kept), kept):
        assert sp.simplify(product - value) == 0


def test_transition_kernel_solves_the_sde_moment_odes():
    beta = vp_sde.beta
    mean, variance = vp_sde.mean_solution, vp_sde.variance_solution
    assert sp.simplify(sp.diff(mean, vp_sde.t) + beta * mean / 2) == 0
    assert sp.simplify(sp.diff(variance, vp_sde.t) + beta * variance - beta) == 0
    assert sp.simplify(variance.subs(vp_sde.t, 0) - mixture.s**2) == 0


def test_ddpm_chain_approaches_the_vp_sde():
    """Discrete beta_i = beta(t_i)/N: prod (1 - beta_i) -> exp(-int beta) as N grows (numbers, not only limits)."""
    errors = []
    for n in (100, 1000, 10000):
        grid = np.arange(n) / n
        betas = (0.1 + grid * 19.9) / n
        errors.append(abs(np.log1p(-betas).sum() - float(vp_sde.log_alpha_bar.subs(
            {vp_sde.t: 1, vp_sde.beta_min: sp.Rational(1, 10), vp_sde.beta_max: 20}))))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01


def test_displays_write_subtracted_terms_last_as_a_textbook_does():
    """The chapters' equations read 1 - alpha_t alpha_bar_{t-1}, not SymPy's -alpha_t alpha_bar_{t-1} + 1."""
    assert latex(sp.expand(ddpm.variance_t)) == r"1 - \alpha_t \bar\alpha_{t-1}"
    assert latex(ddpm.predict_x0) == r"\frac{x_{t} - \varepsilon \sqrt{1 - \bar\alpha_t}}{\sqrt{\bar\alpha_t}}"
    x, y = sp.symbols("x y")
    assert latex(-x - y) == sp.latex(-x - y) and latex(x + y) == sp.latex(x + y)  # nothing to move: SymPy's own


def test_the_vp_sde_kernel_and_its_integrated_rate_are_shown_in_one_form():
    """m(t), P(t) and log alpha_bar(t) display -beta_min t - t^2 (beta_max - beta_min)/2 alike, unchanged in value."""
    for expression in (vp_sde.mean_solution, vp_sde.variance_solution, vp_sde.log_alpha_bar):
        shown = in_powers_of(expression, vp_sde.t)
        assert sp.simplify(shown - expression) == 0
        assert r"\frac{t^{2} \left(\beta_{\max} - \beta_{\min}\right)}" in latex(shown)
