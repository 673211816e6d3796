"""The variance-preserving SDE (Song et al. 2021, Appendix C; Problem 3), derived in SymPy.

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,   beta(t) = beta_min + t (beta_max - beta_min),   t in [0, 1].

Reading order: the mean and variance ODEs solved for p(x(t) | x(0)); the marginal of the two-Gaussian mixture
(Problem 3a) and its score (Problem 3b), reusing ``derivations.mixture``; the reverse-time SDE and the
probability-flow ODE; the correspondence with the discrete DDPM chain.
"""

import sympy as sp

from derivations import mixture
from derivations._check import holds

t, u = sp.symbols("t u", nonnegative=True)
beta_min, beta_max = sp.symbols("beta_min beta_max", positive=True)
x, x0 = sp.symbols("x x_0", real=True)

beta = beta_min + t * (beta_max - beta_min)
drift = -beta * x / 2  # f(x, t)
diffusion = sp.sqrt(beta)  # g(t)

# --- 1. Transition kernel p(x(t) | x(0)) ------------------------------------------------------------------------
# For a linear SDE the kernel is Gaussian; its mean m and variance P obey (Sarkka and Solin 2019, eq. 5.50-5.51;
# Song et al. 2021, eq. 33) dm/dt = f(m, t) and dP/dt = -beta P + beta. Start from x(0) = x0 (P = 0) or, for a
# Gaussian component of p_0, from m = mu and P = s^2.
m, P = sp.Function("m"), sp.Function("P")
s = mixture.s
mean_solution = sp.dsolve(sp.Eq(m(t).diff(t), drift.subs(x, m(t))), m(t), ics={m(0): x0}).rhs
variance_solution = sp.dsolve(sp.Eq(P(t).diff(t), -beta * P(t) + beta), P(t), ics={P(0): s**2}).rhs

# Both are the variance-preserving kernel of ``derivations.mixture`` at log alpha_bar(t) = -int_0^t beta(u) du.
log_alpha_bar = -sp.integrate(beta.subs(t, u), (u, 0, t))
holds(mean_solution, x0 * sp.exp(log_alpha_bar / 2), "mean of p(x(t) | x(0)) is sqrt(alpha_bar(t)) x(0)")
holds(variance_solution, mixture.diffused_variance.subs(mixture.log_alpha_bar, log_alpha_bar),
      "variance from s^2 is alpha_bar(t) s^2 + 1 - alpha_bar(t)")

# --- 2. The marginal of the two-Gaussian mixture (Problem 3a) and its score (Problem 3b) ----------------------
# p_0 = pi_1 N(mu_1, s_1^2) + pi_2 N(mu_2, s_2^2), s_i standard deviations, pi_2 = 1 - pi_1.
pi_1 = sp.Symbol("pi_1", positive=True)
mu_1, mu_2 = sp.symbols("mu_1 mu_2", real=True)
s_1, s_2 = sp.symbols("s_1 s_2", positive=True)
marginal_density = mixture.mixture_density((pi_1, 1 - pi_1), (mu_1, mu_2), (s_1, s_2), level=log_alpha_bar)
marginal_score = sp.diff(sp.log(marginal_density), x)

# --- 3. Reverse time (Anderson 1982; Song et al. 2021, eq. 6 and 13) ------------------------------------------
# Run backwards from t = 1 to 0: dx = [f - g^2 score] dt + g dw_bar. The probability-flow ODE with the same
# marginals: dx/dt = f - 1/2 g^2 score.
score = sp.Symbol("score", real=True)
reverse_sde_drift = drift - diffusion**2 * score
probability_flow_drift = drift - diffusion**2 * score / 2

# --- 4. The discrete DDPM chain is a discretisation of this SDE (Song et al. 2021, Appendix B) ---------------
# With N steps of size 1/N and beta_i = beta(i/N)/N: log alpha_bar after n = tN steps is sum log(1 - beta_i),
# and log(1 - b) = -b + O(b^2). The first-order sum is a Riemann sum that converges to -int_0^t beta.
i, n_steps, n_done = sp.symbols("i N n", positive=True, integer=True)
b = sp.Symbol("b", positive=True)
holds(sp.series(sp.log(1 - b), b, 0, 2).removeO(), -b, "log(1 - b) = -b + O(b^2)")
riemann_sum = -sp.summation(beta.subs(t, i / n_steps) / n_steps, (i, 0, n_done - 1))
holds(sp.limit(riemann_sum.subs(n_done, t * n_steps), n_steps, sp.oo), log_alpha_bar,
      "discrete log alpha_bar converges to -int_0^t beta")
# So a chain of N steps with betas beta_i discretises the VP-SDE whose rate at t = i/N is N beta_i: the step sizes
# beta_i = beta(i/N)/N above, read backwards, a definition that the limit just checked justifies.
step_beta = sp.Symbol("beta_i", positive=True)
rate_of_chain = n_steps * step_beta

CLOSED_FORMS = {
    "vp_log_alpha_bar": ((t, beta_min, beta_max), sp.expand(log_alpha_bar),
                         "log alpha_bar(t) = -int_0^t beta(u) du of the VP-SDE (section 1)."),
    "vp_drift": ((x, t, beta_min, beta_max), drift, "Forward drift f(x, t) = -beta(t) x / 2."),
    "vp_rate_of_chain": ((step_beta, n_steps), rate_of_chain,
                         "The VP-SDE's rate N beta_i at t = i/N for a chain of N steps with betas beta_i (section 4)."),
    "vp_diffusion": ((t, beta_min, beta_max), diffusion, "Diffusion coefficient g(t) = sqrt(beta(t))."),
    "reverse_sde_drift": ((x, score, t, beta_min, beta_max), reverse_sde_drift,
                          "Drift f - g^2 score of the reverse-time SDE (Song et al. 2021, eq. 6)."),
    "probability_flow_drift": ((x, score, t, beta_min, beta_max), probability_flow_drift,
                               "Drift f - g^2 score / 2 of the probability-flow ODE (Song et al. 2021, eq. 13)."),
}
