"""A 1-D Gaussian mixture pushed through a variance-preserving Gaussian kernel, derived in SymPy.

Both noising processes of the handout have the same kernel x = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps:
the discrete DDPM chain (``derivations.ddpm``, alpha_bar[k]) and the VP-SDE (``derivations.vp_sde``,
alpha_bar(t) = exp(-int_0^t beta)). So the marginal of a mixture, its score and the exact noise predictor are
derived once here, in terms of log_alpha_bar <= 0, the form in which both processes hand over their noise level.

Convention: p_0 = sum_i pi_i N(mu_i, s_i^2), with s_i a *standard deviation* (the problem set leaves this open).
"""

import sympy as sp
from sympy.codegen.cfunctions import expm1

from derivations._check import holds

x, x0, eps = sp.symbols("x x_0 epsilon", real=True)
mu = sp.Symbol("mu", real=True)
s = sp.Symbol("s", positive=True)  # standard deviation of a component of p_0
log_alpha_bar = sp.Symbol("log_alphabar", negative=True)  # t > 0; the forms are continuous at 0, where p_t is p_0
alpha_bar = sp.exp(log_alpha_bar)
mean, variance = sp.Symbol("m", real=True), sp.Symbol("v", positive=True)


def normal_pdf(value, m, v):
    """Density of N(m, v) at value; v is a variance."""
    return sp.exp(-(value - m) ** 2 / (2 * v)) / sp.sqrt(2 * sp.pi * v)


# --- 1. One component through the kernel ---------------------------------------------------------------------
# x = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps with x_0 ~ N(mu, s^2) and eps ~ N(0, 1) independent. The
# moment generating function of a sum of independent variables is the product of theirs, and
# M(lambda) = exp(m lambda + v lambda^2 / 2) is that of N(m, v); the product is again of that form.
lam = sp.Symbol("lambda", real=True)


def normal_mgf(m, v):
    """Moment generating function of N(m, v) at lambda."""
    return sp.exp(m * lam + v * lam**2 / 2)


diffused_mean = sp.exp(log_alpha_bar / 2) * mu
# The textbook variance alpha_bar s^2 + 1 - alpha_bar loses all digits of 1 - alpha_bar when alpha_bar is near 1
# (small t): the stable form uses expm1.
diffused_variance = s**2 * sp.exp(log_alpha_bar) - expm1(log_alpha_bar)
mgf_of_sum = (normal_mgf(mu, s**2).subs(lam, sp.exp(log_alpha_bar / 2) * lam)
              * normal_mgf(0, 1).subs(lam, sp.sqrt(1 - alpha_bar) * lam))
holds(mgf_of_sum, normal_mgf(diffused_mean, diffused_variance), "a component stays Gaussian with these moments")

# --- 2. Log-density and score of one Gaussian ----------------------------------------------------------------
normal_log_pdf = -(x - mean) ** 2 / (2 * variance) - sp.log(2 * sp.pi * variance) / 2
holds(normal_log_pdf, sp.expand_log(sp.log(normal_pdf(x, mean, variance)), force=True), "log N(x; m, v)")
normal_score = -(x - mean) / variance
holds(normal_score, sp.diff(normal_log_pdf, x), "the score of N(m, v) is -(x - m)/v")

# --- 3. The mixture: density and score (Problems 3a, 3b with alpha_bar(t) from the VP-SDE) -------------------
# p(x) = sum_i pi_i N(x; m_i, v_i). Its score is the responsibility-weighted mean of the component scores,
#     d/dx log p = sum_i r_i(x) (-(x - m_i)/v_i),   r_i = pi_i N_i(x) / p(x) = softmax_i(log pi_i + log N_i(x)),
# a form that stays finite where every N_i underflows (log-sum-exp). Checked for two and three components.
for n_components in (2, 3):
    weights = sp.symbols(f"pi1:{n_components + 1}", positive=True)
    means = sp.symbols(f"m1:{n_components + 1}", real=True)
    variances = sp.symbols(f"v1:{n_components + 1}", positive=True)
    terms = [w * normal_pdf(x, m, v) for w, m, v in zip(weights, means, variances)]
    density = sum(terms)
    responsibility_score = sum(term / density * normal_score.subs({mean: m, variance: v})
                               for term, m, v in zip(terms, means, variances))
    holds(sp.diff(sp.log(density), x), responsibility_score,
          f"score of a {n_components}-component mixture in responsibility form")


def mixture_density(weights, means, stds, level=log_alpha_bar):
    """SymPy density of sum_i pi_i N(mu_i, s_i^2) pushed through the kernel at log_alpha_bar = level (section 1)."""
    return sum(w * normal_pdf(x, diffused_mean.subs({mu: m, log_alpha_bar: level}),
                              diffused_variance.subs({s: sd, log_alpha_bar: level}))
               for w, m, sd in zip(weights, means, stds))


# --- 4. The exact noise predictor (Tweedie) -------------------------------------------------------------------
# The best predictor of eps from x in mean square is E[eps | x]. For one component, (x, eps) is jointly Gaussian
# with Cov(x, eps) = sqrt(1 - alpha_bar), so E[eps | x] = sqrt(1 - alpha_bar) (x - m)/v = -sqrt(1 - alpha_bar) score.
# Both sides are linear in the responsibilities, so the same holds for the mixture:
#     eps*(x) = -sqrt(1 - alpha_bar) d/dx log q(x).
score = sp.Symbol("score", real=True)
conditional_mean_of_eps = sp.sqrt(1 - alpha_bar) / diffused_variance * (x - diffused_mean)
eps_from_score = -sp.sqrt(-expm1(log_alpha_bar)) * score
holds(conditional_mean_of_eps,
      eps_from_score.subs(score, normal_score.subs({mean: diffused_mean, variance: diffused_variance})),
      "E[eps | x] = -sqrt(1 - alpha_bar) score")

CLOSED_FORMS = {
    "diffused_mean": ((mu, log_alpha_bar), diffused_mean,
                      "Mean sqrt(alpha_bar) mu of a component N(mu, s^2) after the noising kernel."),
    "diffused_variance": ((s, log_alpha_bar), diffused_variance,
                          "Variance alpha_bar s^2 + 1 - alpha_bar of a component (s a std) after the kernel."),
    "normal_log_pdf": ((x, mean, variance), normal_log_pdf, "log N(x; m, v), v a variance."),
    "normal_score": ((x, mean, variance), normal_score, "d/dx log N(x; m, v) = -(x - m)/v."),
    "eps_from_score": ((score, log_alpha_bar), eps_from_score,
                       "Exact noise predictor -sqrt(1 - alpha_bar) score (Tweedie; section 4)."),
}
