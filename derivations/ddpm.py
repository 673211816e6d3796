"""DDPM in discrete time (Ho et al. 2020; Problems 1a-1c and 2), derived in SymPy.

Index convention, used everywhere in this project: timesteps are indexed k = 0, ..., T-1, as the problem set
indexes beta. The latent at index k has been noised by steps 0..k, so

    alpha_bar[k] = prod_{i=0}^{k} alpha[i]          (the paper's alpha_bar_{k+1}),

and "before the first step" (k = -1) means alpha_bar = 1, i.e. clean data. The paper's x_0 is the data and its
step t = 1..T is our index k = t - 1. Below, "t" names a generic step and "t-1" the one before it.

Reading order: schedule, marginal q(x_t | x_0), posterior q(x_{t-1} | x_t, x_0), epsilon parameterisation,
respacing, DDIM, the loss's timestep weights, the cosine schedule, v-prediction. Every claimed closed form is
checked against the derivation with ``holds`` when the module is imported, and the final forms are collected in
``CLOSED_FORMS`` for ``derivations.generate``.
"""

import sympy as sp

from derivations._check import holds

# --- 1. The linear schedule (Problem 1a) -----------------------------------------------------------------------
k, T = sp.symbols("k T", integer=True, nonnegative=True)
beta_min, beta_max = sp.symbols("beta_min beta_max", positive=True)

linear_beta = beta_min + k * (beta_max - beta_min) / (T - 1)
holds(linear_beta.subs(k, 0), beta_min, "the schedule starts at beta_min")
holds(linear_beta.subs(k, T - 1), beta_max, "the schedule ends at beta_max")

# One step of the forward chain: q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t), alpha_t = 1 - beta_t.
beta = sp.Symbol("beta", positive=True)  # beta_t

# --- 2. Composing the one-step kernels gives q(x_t | x_0) (Problem 1b) ----------------------------------------
# Induction on t. Suppose x_{t-1} | x_0 ~ N(sqrt(alpha_bar_{t-1}) x_0, 1 - alpha_bar_{t-1}); it holds at the start,
# where alpha_bar = 1 and x_{t-1} is the data. Then x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps with
# independent eps ~ N(0, 1), so means scale by sqrt(alpha_t) and independent variances add.
x0, xt, x_prev, eps = sp.symbols("x_0 x_t x_prev epsilon", real=True)
# alpha_t is a positive symbol of its own, so that sqrt(alpha_t) simplifies; beta_t = 1 - alpha_t and
# alpha_bar_t = alpha_t alpha_bar_{t-1} enter through the substitution bar_in_terms_of_prev.
a_t, alpha_bar_prev = sp.symbols("alpha_t alphabar_prev", positive=True)
alpha_bar = sp.Symbol("alphabar", positive=True)
bar_in_terms_of_prev = {alpha_bar: a_t * alpha_bar_prev, beta: 1 - a_t}

mean_t = sp.sqrt(a_t) * sp.sqrt(alpha_bar_prev) * x0
variance_t = a_t * (1 - alpha_bar_prev) + (1 - a_t)
holds(mean_t, (sp.sqrt(alpha_bar) * x0).subs(bar_in_terms_of_prev), "mean of q(x_t | x_0) is sqrt(alpha_bar_t) x_0")
holds(variance_t, (1 - alpha_bar).subs(bar_in_terms_of_prev), "variance of q(x_t | x_0) is 1 - alpha_bar_t")

# Sampling q(x_t | x_0) by reparameterisation, and its inverse: the x_0 that a noise eps explains.
forward_sample = sp.sqrt(alpha_bar) * x0 + sp.sqrt(1 - alpha_bar) * eps
predict_x0 = sp.solve(sp.Eq(xt, forward_sample), x0)[0]
holds(predict_x0, (xt - sp.sqrt(1 - alpha_bar) * eps) / sp.sqrt(alpha_bar), "x_0 recovered from x_t and eps")

# The signal-to-noise ratio of q(x_t | x_0): squared signal coefficient over noise variance.
signal_to_noise = alpha_bar / (1 - alpha_bar)

# --- 3. The posterior q(x_{t-1} | x_t, x_0) by Gaussian conditioning (Problem 1c) ------------------------------
# Bayes: q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0). Its log is a quadratic
# a x_{t-1}^2 + b x_{t-1} + c, i.e. a Gaussian with variance -1/(2a) and mean -b/(2a).
log_joint = (-(xt - sp.sqrt(a_t) * x_prev) ** 2 / (2 * (1 - a_t))
             - (x_prev - sp.sqrt(alpha_bar_prev) * x0) ** 2 / (2 * (1 - alpha_bar_prev)))
quadratic = sp.Poly(sp.expand(log_joint), x_prev)
a_coef, b_coef = quadratic.coeff_monomial(x_prev**2), quadratic.coeff_monomial(x_prev)
derived_variance = sp.factor(-1 / (2 * a_coef))
mean_by_conditioning = sp.simplify(-b_coef / (2 * a_coef))
# Written as a coefficient times x_t plus a coefficient times x_0, each factored, which the check below confirms.
derived_mean = (sp.factor(sp.diff(mean_by_conditioning, xt)) * xt
                + sp.factor(sp.diff(mean_by_conditioning, x0)) * x0)

# The textbook forms (Ho et al. 2020, eq. 6-7), written with beta_t and alpha_bar_t, and checked.
posterior_mean_coef_x0 = sp.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)
posterior_mean_coef_xt = sp.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - alpha_bar)
posterior_variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
holds(derived_variance, posterior_variance.subs(bar_in_terms_of_prev), "posterior variance beta_tilde_t")
holds(sp.diff(derived_mean, x0), posterior_mean_coef_x0.subs(bar_in_terms_of_prev), "posterior mean, x_0 coefficient")
holds(sp.diff(derived_mean, xt), posterior_mean_coef_xt.subs(bar_in_terms_of_prev), "posterior mean, x_t coefficient")
holds(derived_mean, mean_by_conditioning, "posterior mean is linear in x_t and x_0")
posterior_mean = posterior_mean_coef_x0 * x0 + posterior_mean_coef_xt * xt

# --- 4. The epsilon parameterisation (Ho et al. 2020, eq. 11) ------------------------------------------------
# Put the x_0 that the noise eps explains into the posterior mean: the reverse step needs only eps.
reverse_mean_from_eps = (xt - beta / sp.sqrt(1 - alpha_bar) * eps) / sp.sqrt(1 - beta)
holds(posterior_mean.subs(x0, predict_x0).subs(bar_in_terms_of_prev),
      reverse_mean_from_eps.subs(bar_in_terms_of_prev), "epsilon-form mean equals the posterior mean")

# --- 5. Respacing for fast sampling (Problem 2b) --------------------------------------------------------------
# Keep timesteps tau_1 < ... < tau_K and give the short chain the betas beta'_i = 1 - abar[tau_i]/abar[tau_{i-1}]
# (abar before the first kept step is 1). Its cumulative product telescopes to abar[tau_i], so by section 2 the
# short chain has exactly the marginals q(x_{tau_i} | x_0) that the network was trained on.
alpha_bar_kept = sp.Symbol("alphabar_kept", positive=True)  # abar[tau_i]
alpha_bar_kept_prev = sp.Symbol("alphabar_kept_prev", positive=True)  # abar[tau_{i-1}]
respaced_beta = 1 - alpha_bar_kept / alpha_bar_kept_prev


def respaced_cumulative_product(kept_alpha_bars):
    """prod_{j<=i} (1 - beta'_j) of the respaced chain, for every i (section 5)."""
    chain, products = sp.Integer(1), []
    for previous, current in zip([sp.Integer(1)] + kept_alpha_bars[:-1], kept_alpha_bars):
        chain *= 1 - respaced_beta.subs({alpha_bar_kept: current, alpha_bar_kept_prev: previous})
        products.append(chain)
    return products


kept_alpha_bars = list(sp.symbols("abar_tau1:7", positive=True))
for kept, product in zip(kept_alpha_bars, respaced_cumulative_product(kept_alpha_bars)):
    holds(product, kept, f"respaced chain keeps the marginal at {kept}")

# --- 6. DDIM with eta = 0 (Song, Meng and Ermon 2021, eq. 12) -------------------------------------------------
# Deterministic: predict x_0, then re-noise it to the previous level with the *predicted* noise. This is the
# forward sample of section 2 taken at alpha_bar_{t-1}; the step reuses ``forward_sample``.
# Its stochastic family with variance sigma^2 = beta_tilde_t is again the ancestral posterior step. The noise
# coefficient sqrt(1 - alpha_bar_{t-1} - sigma^2) is then a square root of a perfect square, taken positive:
ddim_noise_coef_squared = 1 - alpha_bar_prev - posterior_variance
ddim_noise_coef = sp.sqrt(a_t) * (1 - alpha_bar_prev) / sp.sqrt(1 - alpha_bar)
holds(ddim_noise_coef_squared.subs(bar_in_terms_of_prev), (ddim_noise_coef**2).subs(bar_in_terms_of_prev),
      "DDIM noise coefficient with sigma^2 = beta_tilde")
holds((sp.sqrt(alpha_bar_prev) * predict_x0 + ddim_noise_coef * eps).subs(bar_in_terms_of_prev),
      reverse_mean_from_eps.subs(bar_in_terms_of_prev), "DDIM with sigma^2 = beta_tilde is the DDPM posterior step")

# --- 7. Weighting the timesteps of the loss (Choi et al. 2022, "P2 weighting") ---------------------------------
# Ho et al.'s loss averages the epsilon-MSE uniformly over t. Perception-prioritised (P2) weighting multiplies
# the term at level alpha_bar by (offset + SNR)^(-gamma): it moves the effort from the nearly clean steps, where
# the network only removes a little noise, to the noisy ones, where the digit's shape is decided. With
# offset = gamma = 1 the weight is simply the noise variance of q(x_t | x_0).
p2_offset, p2_gamma = sp.symbols("offset gamma", positive=True)
p2_weight = (p2_offset + signal_to_noise) ** (-p2_gamma)
# DDPM.timestep_weights('p2') uses this unit weight, then scales the weights to mean 1.
p2_weight_unit = sp.cancel(p2_weight.subs({p2_offset: 1, p2_gamma: 1}))
holds(p2_weight_unit, 1 - alpha_bar, "P2 weight with offset = gamma = 1 is 1 - alpha_bar")

# --- 8. The cosine schedule (Nichol and Dhariwal 2021, eq. 17) ------------------------------------------------
# Instead of the betas, fix alpha_bar: f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), alpha_bar_t = f(t)/f(0), so the
# noise grows slowly at both ends and the signal fades gradually instead of being almost gone by the last quarter of
# the linear chain. Our index k is the paper's t = k + 1; the offset s keeps the first beta from
# being too small (about (pi / 2T)^2 without it) for the network to predict eps.
cosine_offset = sp.Symbol("s", positive=True)


def cosine_f(step):
    """The paper's f(t) at step t = ``step``."""
    return sp.cos((step / T + cosine_offset) / (1 + cosine_offset) * sp.pi / 2) ** 2


cosine_alpha_bar = cosine_f(k + 1) / cosine_f(0)
holds(cosine_alpha_bar.subs(k, -1), 1, "cosine schedule: alpha_bar before the first step is 1")
holds(cosine_alpha_bar.subs(k, T - 1), 0, "cosine schedule: no signal is left at the last step")
# So its last beta = 1 - alpha_bar[T-1] / alpha_bar[T-2] is 1: the paper clips every beta at 0.999 (dgm.schedules).
# The betas themselves are section 5's ratio of consecutive alpha_bars; nothing else about the chain changes.


# --- 9. Predicting v instead of epsilon (Salimans and Ho 2022, "v-prediction") --------------------------------
# The network may predict the velocity v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 instead of the noise:
# Var v = alpha_bar + (1 - alpha_bar) Var x_0, so for data of unit variance a target of unit variance at every level,
# which neither vanishes nor explodes at the ends of the chain. Given x_t,
# eps follows from v, so the samplers stay as they are:
v = sp.Symbol("v", real=True)
velocity = sp.sqrt(alpha_bar) * eps - sp.sqrt(1 - alpha_bar) * x0
eps_from_velocity = sp.solve(sp.Eq(v, velocity.subs(x0, predict_x0)), eps)[0]
holds(eps_from_velocity, sp.sqrt(alpha_bar) * v + sp.sqrt(1 - alpha_bar) * xt, "eps recovered from x_t and v")
# An error in eps is an error in v scaled by sqrt(alpha_bar), so v's MSE is eps's MSE weighted by 1 / alpha_bar =
# 1 + 1/SNR: it moves the effort to the noisy steps, as P2 weighting does, and multiplies with it.
v_hat = sp.Symbol("vhat", real=True)
holds(eps_from_velocity.subs(v, v_hat) - eps_from_velocity, sp.sqrt(alpha_bar) * (v_hat - v),
      "eps error is sqrt(alpha_bar) times the v error")


# --- The closed forms that ``dgm`` uses ------------------------------------------------------------------------
# name: (arguments in order, expression, one-line docstring)
CLOSED_FORMS = {
    "linear_beta": ((k, beta_min, beta_max, T), linear_beta,
                    "beta at step k = 0..T-1 of the problem set's linear schedule (Problem 1a)."),
    "cosine_alpha_bar": ((k, cosine_offset, T), cosine_alpha_bar,
                         "alpha_bar at step k = 0..T-1 of the cosine schedule, and 1 at k = -1 "
                         "(Nichol and Dhariwal 2021, eq. 17)."),
    "forward_sample": ((x0, eps, alpha_bar), forward_sample,
                       "x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps, a draw of q(x_t | x_0) "
                       "(Ho et al. 2020, eq. 4)."),
    "signal_to_noise": ((alpha_bar,), signal_to_noise,
                        "Signal-to-noise ratio alpha_bar / (1 - alpha_bar) of q(x_t | x_0) (Problem 1b)."),
    "predict_x0": ((xt, eps, alpha_bar), predict_x0,
                   "The clean image x_0 that noise eps explains at level alpha_bar (inverse of forward_sample)."),
    "posterior_variance": ((beta, alpha_bar_prev, alpha_bar), posterior_variance,
                           "beta_tilde_t, the variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7)."),
    "reverse_mean_from_eps": ((xt, eps, beta, alpha_bar), reverse_mean_from_eps,
                              "Mean of p(x_{t-1} | x_t) given predicted noise eps (Ho et al. 2020, eq. 11)."),
    "respaced_beta": ((alpha_bar_kept, alpha_bar_kept_prev), respaced_beta,
                      "beta' of a respaced chain between two kept steps (Problem 2b)."),
    "velocity": ((x0, eps, alpha_bar), velocity,
                 "The v-prediction target sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans and Ho 2022)."),
    "eps_from_velocity": ((xt, v, alpha_bar), eps_from_velocity,
                          "The noise eps that a predicted v implies at x_t and level alpha_bar (inverse of velocity)."),
    "p2_weight": ((alpha_bar, p2_offset, p2_gamma), p2_weight,
                  "Loss weight (offset + SNR)^(-gamma) of the timestep at level alpha_bar (Choi et al. 2022)."),
}
