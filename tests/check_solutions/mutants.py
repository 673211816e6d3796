"""Wrong solutions, one classic mistake each, derived from reference_solution.py: `dgm check` must reject every one
and name its mistake.

``MUTANTS`` lists (problem, the mistake's name as the checker prints it, the wrong function).
"""

import numpy as np
import scipy.special
import torch

import reference_solution as reference


def alpha_bar_shifted(beta_min, beta_max, T):
    schedule = reference.ddpm_schedules(beta_min, beta_max, T)
    alpha = schedule["alpha"]
    schedule["alpha_bar"] = torch.cat([alpha.new_ones(1), torch.cumprod(alpha, 0)[:-1]])  # prod over i < k
    return schedule


def beta_step_over_T(beta_min, beta_max, T):
    beta = beta_min + torch.arange(T, dtype=torch.float64) * (beta_max - beta_min) / T
    return {"beta": beta, "alpha": 1 - beta, "alpha_bar": torch.cumprod(1 - beta, 0)}


def forward_with(signal, noise_coefficient, index_shift=0):
    """forward() with the coefficients of x0 and of the noise as functions of alpha_bar[t + index_shift]."""
    def forward(x0, t, noise, alpha_bar):
        level = alpha_bar[t + index_shift].reshape(-1, *([1] * (x0.ndim - 1)))
        return signal(level) * x0 + noise_coefficient(level) * noise
    return forward


def forward_one_step_early(x0, t, noise, alpha_bar):
    return reference.forward(x0, (t - 1).clamp(min=0), noise, alpha_bar)


def forward_under_a_negative_root(x0, t, noise, alpha_bar):
    level = alpha_bar[t].to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return level.sqrt() * x0 + (level - 1).sqrt() * noise  # NaN: the square root of a negative variance


def forward_for_4d_or_2d_only(x0, t, noise, alpha_bar):
    level = alpha_bar[t].to(x0.dtype)
    level = level[:, None, None, None] if x0.dim() == 4 else level[:, None]
    return level.sqrt() * x0 + (1 - level).sqrt() * noise


def forward_ignoring_noise(x0, t, noise, alpha_bar):
    return reference.forward(x0, t, torch.randn_like(x0), alpha_bar)


def beta_std(schedule, k):
    return schedule["beta"][k].sqrt()


def posterior_std(schedule, k):
    """sqrt(beta_tilde_k), the posterior's standard deviation."""
    alpha_bar = schedule["alpha_bar"]
    previous = alpha_bar[k - 1] if k > 0 else alpha_bar.new_ones(())
    return (schedule["beta"][k] * (1 - previous) / (1 - alpha_bar[k])).sqrt()


def inverted_posterior_std(schedule, k):
    alpha_bar = schedule["alpha_bar"]
    return (schedule["beta"][k] * (1 - alpha_bar[k]) / (1 - alpha_bar[k - 1])).sqrt()


def wrapped_posterior_std(schedule, k):
    """sqrt(beta_tilde_k) with alpha_bar[k - 1] as Python reads it: the last entry at k = 0."""
    alpha_bar = schedule["alpha_bar"]
    return (schedule["beta"][k] * (1 - alpha_bar[k - 1]) / (1 - alpha_bar[k])).sqrt()


def none_at_last_step(std):
    return lambda schedule, k: std(schedule, k) * (k > 0)


def correct_std(beta=beta_std, posterior=posterior_std):
    """noise_std(schedule, k, sigma) with one of its two branches replaced."""
    return lambda schedule, k, chosen: (beta if chosen == "beta" else posterior)(schedule, k)


def sampler(mean_step=None, noise_std=correct_std(), noise_from=1, timestep_offset=0, own_noise=False,
            posterior_mean_step=None, change_model=None, start_scale=1.0, steps_from=0, draw=None):
    """sample() with one part changed: the mean step (of both branches, or of sigma="posterior" only), the noise's
    standard deviation at step k, the first step k that adds noise, the timesteps given to the network, noise that
    ignores the generator (with every sigma, or with the one ``own_noise`` names), the network it calls, the start's
    scale, the last step k it runs, or how z is drawn (``draw(x, generator)``)."""
    def correct_mean(x, eps, beta, alpha, alpha_bar):
        return (x - beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()

    mean_step = mean_step or correct_mean

    def sample(eps_model, n, shape, schedule, sigma="beta", generator=None):
        beta, alpha, alpha_bar = schedule["beta"], schedule["alpha"], schedule["alpha_bar"]
        model = change_model(eps_model) if change_model else eps_model
        x = start_scale * torch.randn((n, *shape), generator=generator, dtype=torch.float64)
        for k in reversed(range(steps_from, len(beta))):
            eps = model(x, torch.full((n,), k + timestep_offset, dtype=torch.long))
            step = posterior_mean_step if sigma == "posterior" and posterior_mean_step else mean_step
            x = step(x, eps, beta[k], alpha[k], alpha_bar[k])
            if k >= noise_from:
                z = torch.randn_like(x) if own_noise in (True, sigma) else draw(x, generator) if draw else \
                    torch.randn(x.shape, generator=generator, dtype=x.dtype)
                x = x + noise_std(schedule, k, sigma) * z
        return x
    return sample


def sample_seeding_its_own_generator(eps_model, n, shape, schedule, sigma="beta", generator=None):
    return reference.sample(eps_model, n, shape, schedule, sigma, torch.Generator().manual_seed(0))


def sample_one_at_a_time(eps_model, n, shape, schedule, sigma="beta", generator=None):
    return torch.cat([reference.sample(eps_model, 1, shape, schedule, sigma, generator) for _ in range(n)])


def sample_reusing_one_z(eps_model, n, shape, schedule, sigma="beta", generator=None):
    beta, alpha, alpha_bar = schedule["beta"], schedule["alpha"], schedule["alpha_bar"]
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    variance = beta if sigma == "beta" else (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype)  # drawn once, before the loop
    for k in reversed(range(len(beta))):
        eps = eps_model(x, torch.full((n,), k, dtype=torch.long))
        x = (x - beta[k] / (1 - alpha_bar[k]).sqrt() * eps) / alpha[k].sqrt()
        if k > 0:
            x = x + variance[k].sqrt() * z
    return x


def sample_returning_numpy(*args, **kwargs):
    return reference.sample(*args, **kwargs).numpy()


def respace_without_the_first_beta(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    kept = alpha_bar[timesteps]
    return timesteps, 1 - kept[1:] / kept[:-1]


def sample_drawing(draw_start=None, draw_z=None, variance_of=None):
    """The reference sampler with x_T drawn by ``draw_start(n, shape, generator)``, each z by ``draw_z(x, k,
    generator)`` or beta_tilde replaced by ``variance_of(beta, alpha_bar, alpha_bar_prev)``."""
    def sample(eps_model, n, shape, schedule, sigma="beta", generator=None):
        beta, alpha, alpha_bar = schedule["beta"], schedule["alpha"], schedule["alpha_bar"]
        alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        variance = beta if sigma == "beta" else (variance_of or (lambda b, a, p: (1 - p) / (1 - a) * b))(
            beta, alpha_bar, alpha_bar_prev)
        x = (draw_start or (lambda n, shape, g: torch.randn((n, *shape), generator=g, dtype=torch.float64)))(
            n, shape, generator)
        for k in reversed(range(len(beta))):
            eps = eps_model(x, torch.full((n,), k, dtype=torch.long))
            x = (x - beta[k] / (1 - alpha_bar[k]).sqrt() * eps) / alpha[k].sqrt()
            if k > 0:
                z = draw_z(x, k, generator) if draw_z else torch.randn(x.shape, generator=generator, dtype=x.dtype)
                x = x + variance[k].sqrt() * z
        return x
    return sample


def one_number_per_sample(n, shape, generator):
    return torch.randn(n, generator=generator, dtype=torch.float64).reshape(n, *[1] * len(shape)).expand(n, *shape)


def sample_left_as_zeros(eps_model, n, shape, schedule, sigma="beta", generator=None):
    reference.sample(eps_model, n, shape, schedule, sigma, generator)
    return torch.zeros((n, *shape), dtype=torch.float64)


def sample_without_posterior(eps_model, n, shape, schedule, sigma="beta", generator=None):
    if sigma == "posterior":  # the template's TODO left in one branch
        raise NotImplementedError
    return reference.sample(eps_model, n, shape, schedule, sigma, generator)


def posterior_mean_with_alpha_bar_t(x, eps, beta, alpha, alpha_bar):
    """mu_tilde(x_t, x0_hat) with sqrt(alpha_bar_t) where sqrt(alpha_bar_(t-1)) multiplies x0_hat."""
    alpha_bar_prev = alpha_bar / alpha
    x0_hat = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    return (alpha_bar.sqrt() * beta * x0_hat + alpha.sqrt() * (1 - alpha_bar_prev) * x) / (1 - alpha_bar)


def respace_original_betas(alpha_bar, steps):
    timesteps, _ = reference.respace(alpha_bar, steps)
    beta = 1 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return timesteps, beta[timesteps]


def respace_original_betas_wrapped(alpha_bar, steps):
    timesteps, _ = reference.respace(alpha_bar, steps)
    return timesteps, 1 - alpha_bar[timesteps] / alpha_bar[timesteps - 1]  # alpha_bar[-1] at index 0


def respace_with_timesteps(choose):
    """respace() with the kept timesteps ``choose(T, steps)`` and the right betas for them."""
    def respace(alpha_bar, steps):
        timesteps = choose(len(alpha_bar), steps)
        kept = alpha_bar[timesteps]
        return timesteps, 1 - kept / torch.cat([kept.new_ones(1), kept[:-1]])
    return respace


def respace_numbered_from_one(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    return timesteps + 1, betas  # the book's steps tau_i, not their array indices


def respace_wrapping(alpha_bar, steps):
    timesteps, _ = reference.respace(alpha_bar, steps)
    kept = alpha_bar[timesteps]
    return timesteps, torch.stack([1 - kept[i] / kept[i - 1] for i in range(steps)])  # kept[-1] at i = 0


def mixture_functions(moments):
    """marginal_pdf and a naive score (a ratio of densities) with the component moments ``moments``."""
    def densities(x, t, weights, means, stds, beta_min, beta_max):
        m, v = moments(t, means, stds, beta_min, beta_max)
        x = np.asarray(x)[..., None]
        return weights * np.exp(-(x - m) ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v), x, m, v

    def marginal_pdf(*args):
        return densities(*args)[0].sum(-1)

    def score(*args):
        terms, x, m, v = densities(*args)
        return (terms * (m - x) / v).sum(-1) / terms.sum(-1)
    return marginal_pdf, score


def decay(t, beta_min, beta_max):
    return np.exp(-(beta_min * t + (beta_max - beta_min) * t**2 / 2))


def stds_as_variances(t, means, stds, beta_min, beta_max):
    level = decay(t, beta_min, beta_max)
    return means * np.sqrt(level), stds * level + 1 - level


def mean_decays_fully(t, means, stds, beta_min, beta_max):
    level = decay(t, beta_min, beta_max)
    return means * level, stds**2 * level + 1 - level


def integral_without_half(t, means, stds, beta_min, beta_max):
    level = np.exp(-(beta_min * t + (beta_max - beta_min) * t**2))
    return means * np.sqrt(level), stds**2 * level + 1 - level


def score_with_flipped_sign(*args):
    return -reference.score(*args)


def sample_clamped(*args, **kwargs):
    return reference.sample(*args, **kwargs).clamp(-1, 1)


def sample_with_trajectory(*args, **kwargs):
    samples = reference.sample(*args, **kwargs)
    return samples, [samples]


def sample_without_end(eps_model, n, shape, schedule, sigma="beta", generator=None):
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    k = len(schedule["beta"]) - 1
    while k >= 0:  # k is never decremented
        x = x - eps_model(x, torch.full((n,), k, dtype=torch.long))
    return x


def respace_decreasing(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    return timesteps.flip(0), betas.flip(0)


def in_float32(function):
    """``function`` computed from float32 copies of its array arguments."""
    def single(*args):
        return function(*(np.asarray(a, dtype=np.float32) if isinstance(a, (np.ndarray, float)) else
                          a.float() if isinstance(a, torch.Tensor) else a for a in args))
    return single


def score_zero_where_undefined(*args):
    return np.nan_to_num(mixture_functions(reference.component_moments)[1](*args))


def respace_swapped(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    return betas, timesteps


def respace_float_timesteps(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    return timesteps.double(), betas


def beta_from_one(beta_min, beta_max, T):
    beta = beta_min + torch.arange(1, T + 1, dtype=torch.float64) * (beta_max - beta_min) / (T - 1)
    return {"beta": beta, "alpha": 1 - beta, "alpha_bar": torch.cumprod(1 - beta, 0)}


def alpha_bar_as_log(beta_min, beta_max, T):
    schedule = reference.ddpm_schedules(beta_min, beta_max, T)
    schedule["alpha_bar"] = torch.cumsum(schedule["alpha"].log(), 0)  # exp forgotten
    return schedule


def forward_first_timestep(x0, t, noise, alpha_bar):
    return reference.forward(x0, t[:1].expand(len(t)), noise, alpha_bar)


def forward_for_images_only(x0, t, noise, alpha_bar):
    level = alpha_bar[t].to(x0.dtype).view(-1, 1, 1, 1)  # samples assumed (C, H, W)
    return level.sqrt() * x0 + (1 - level).sqrt() * noise


def forward_in_float64(x0, t, noise, alpha_bar):
    return reference.forward(x0.double(), t, noise.double(), alpha_bar)


def forward_in_float32(x0, t, noise, alpha_bar):
    return reference.forward(x0, t, noise, alpha_bar).float()


def forward_in_numpy(x0, t, noise, alpha_bar):
    return reference.forward(x0, t, noise, alpha_bar).numpy()


def sample_reading_library_tables(eps_model, n, shape, schedule, sigma="beta", generator=None):
    variance = schedule["beta"] if sigma == "beta" else schedule["posterior_variance"]
    return reference.sample(eps_model, n, shape, {**schedule, "beta": variance}, sigma, generator)


def respace_in_numpy(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    return timesteps.numpy().astype(np.int32), betas.numpy()


def respace_first_beta_zero(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    return timesteps, torch.cat([betas.new_zeros(1), betas[1:]])


def respace_ratio_upside_down(alpha_bar, steps):
    timesteps, _ = reference.respace(alpha_bar, steps)
    kept = alpha_bar[timesteps]
    return timesteps, 1 - torch.cat([kept.new_ones(1), kept[:-1]]) / kept


def integral_of_beta_as_rate_times_t(t, means, stds, beta_min, beta_max):
    level = np.exp(-(beta_min * t + (beta_max - beta_min) * t))  # beta(t) t, not int_0^t beta
    return means * np.sqrt(level), stds**2 * level + 1 - level


def respace_without_the_ratio(alpha_bar, steps):
    timesteps, _ = reference.respace(alpha_bar, steps)
    return timesteps, 1 - alpha_bar[timesteps]  # the whole chain's noise up to each kept step


def marginal_log_pdf(x, t, weights, means, stds, beta_min, beta_max):
    terms, *_ = reference.log_terms(x, t, weights, means, stds, beta_min, beta_max)
    return scipy.special.logsumexp(terms, axis=-1)  # log p_t: the exp left out


def loss_with(t=None, noise=None, x_t=None, target=None, reduce=None):
    """loss() with one part changed: how t or the noise is drawn, how x_t is formed, what the network's output is
    compared with, how the squared errors are reduced."""
    def loss(eps_model, x0, alpha_bar, generator=None):
        T, N = len(alpha_bar), len(x0)
        steps = t(T, N, generator) if t else torch.randint(0, T, (N,), generator=generator)
        drawn = noise(x0, generator) if noise else torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        noised = x_t(x0, drawn, alpha_bar, steps) if x_t else reference.forward(x0, steps, drawn, alpha_bar)
        error = (target(x0, drawn, noised) if target else drawn) - eps_model(noised, steps)
        return reduce(error) if reduce else error.square().mean()
    return loss


def level_at(alpha_bar, t, x0):
    return alpha_bar[t].to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))


def loss_returning_a_float(eps_model, x0, alpha_bar, generator=None):
    return reference.loss(eps_model, x0, alpha_bar, generator).item()


def loss_without_gradient(eps_model, x0, alpha_bar, generator=None):
    return reference.loss(lambda x, t: eps_model(x, t).detach(), x0, alpha_bar, generator)


def loss_in_two_halves(eps_model, x0, alpha_bar, generator=None):
    half = len(x0) // 2
    return (reference.loss(eps_model, x0[:half], alpha_bar, generator)
            + reference.loss(eps_model, x0[half:], alpha_bar, generator)) / 2


def loss_p2_weighted(eps_model, x0, alpha_bar, generator=None):
    t = torch.randint(0, len(alpha_bar), (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    error = (noise - eps_model(reference.forward(x0, t, noise, alpha_bar), t)).square().flatten(1).mean(1)
    return ((1 - alpha_bar[t]).to(x0.dtype) * error).mean()  # P2 with c = gamma = 1, as the presets train


def loss_against_v(eps_model, x0, alpha_bar, generator=None):
    t = torch.randint(0, len(alpha_bar), (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    level = level_at(alpha_bar, t, x0)
    velocity = level.sqrt() * noise - (1 - level).sqrt() * x0  # v-prediction's target
    return (velocity - eps_model(reference.forward(x0, t, noise, alpha_bar), t)).square().mean()


def loss_noise_first_with_mse(eps_model, x0, alpha_bar, generator=None):
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)  # drawn before t: the draws differ, not the law
    t = torch.randint(high=len(alpha_bar), size=(len(x0),), generator=generator)
    return torch.nn.functional.mse_loss(eps_model(reference.forward(x0, t, noise, alpha_bar), t), noise)


def loss_by_multinomial_inline(eps_model, x0, alpha_bar, generator=None):
    t = torch.multinomial(torch.ones(len(alpha_bar)), len(x0), replacement=True, generator=generator)
    noise = torch.empty_like(x0).normal_(generator=generator)
    level = alpha_bar[t].to(x0.dtype)[:, None, None]  # this batch's samples are 2-D
    x_t = level.sqrt() * x0 + (1 - level).sqrt() * noise
    return ((noise.double() - eps_model(x_t, t).double()) ** 2).mean()  # in float64


def score_of_p_itself(x, t, weights, means, stds, beta_min, beta_max):
    terms, x, m, v = reference.log_terms(x, t, weights, means, stds, beta_min, beta_max)
    return (np.exp(terms) * (m - x) / v).sum(-1)  # grad p_t: never divided by p_t


def score_with_softmax_over_everything(x, t, weights, means, stds, beta_min, beta_max):
    terms, x, m, v = reference.log_terms(x, t, weights, means, stds, beta_min, beta_max)
    return (scipy.special.softmax(terms) * (m - x) / v).sum(-1)  # no axis: over every point and component


def loss_with_its_own_generator(eps_model, x0, alpha_bar, generator=None):
    return reference.loss(eps_model, x0, alpha_bar, torch.Generator().manual_seed(0))


def integral_of_beta_as_the_rate(t, means, stds, beta_min, beta_max):
    level = np.exp(-(beta_min + (beta_max - beta_min) * t))  # beta(t) itself, not int_0^t beta: 0.9 at t = 0
    return means * np.sqrt(level), stds**2 * level + 1 - level


def moments_at_the_handouts_betas(t, means, stds, beta_min, beta_max):
    return reference.component_moments(t, means, stds, 0.1, 20.0)  # the handout's numbers, not the arguments


def sample_on_the_problem_sets_chain(eps_model, n, shape, schedule, sigma="beta", generator=None):
    chain = reference.ddpm_schedules(1e-4, 0.02, 1000)  # a schedule of its own, not the one it is given
    return reference.sample(eps_model, n, shape, chain, sigma, generator)


def marginal_pdf_variance_as_std(x, t, weights, means, stds, beta_min, beta_max):
    m, v = reference.component_moments(t, means, stds, beta_min, beta_max)
    x = np.asarray(x)[..., None]
    return (weights * np.exp(-(x - m) ** 2 / (2 * v**2)) / np.sqrt(2 * np.pi * v**2)).sum(-1)


def alpha_bar_in_float32(t, means, stds, beta_min, beta_max):
    level = float(np.float32(decay(t, beta_min, beta_max)))  # the right alpha_bar(t), rounded to float32
    return means * np.sqrt(level), stds**2 * level + 1 - level


def marginal_pdf_in_column_order(x, *args):
    return reference.marginal_pdf(np.ravel(x), *args).reshape(np.shape(x), order="F")


def marginal_pdf_without_return(*args):
    reference.marginal_pdf(*args)


def score_with_prior_weights(x, t, weights, means, stds, beta_min, beta_max):
    m, v = reference.component_moments(t, means, stds, beta_min, beta_max)
    return (weights * (m - np.asarray(x)[..., None]) / v).sum(-1)


def score_over_std(x, t, weights, means, stds, beta_min, beta_max):
    terms, x, m, v = reference.log_terms(x, t, weights, means, stds, beta_min, beta_max)
    responsibilities = np.exp(terms - terms.max(-1, keepdims=True))
    responsibilities /= responsibilities.sum(-1, keepdims=True)
    return (responsibilities * (m - x) / np.sqrt(v)).sum(-1)


def score_with_responsibilities(drop):
    """score() whose log terms leave out the log weights (``drop="weights"``) or -log(2 pi v) / 2 ("constant")."""
    def score(x, t, weights, means, stds, beta_min, beta_max):
        m, v = reference.component_moments(t, means, stds, beta_min, beta_max)
        x = np.asarray(x)[..., None]
        terms = -(x - m) ** 2 / (2 * v) + (np.log(weights) if drop == "constant" else -0.5 * np.log(2 * np.pi * v))
        responsibilities = np.exp(terms - terms.max(-1, keepdims=True))
        responsibilities /= responsibilities.sum(-1, keepdims=True)
        return (responsibilities * (m - x) / v).sum(-1)
    return score


def alpha_bar_floored_at(floor):
    """component_moments with alpha_bar(t) = exp(-B(t)) kept above ``floor``."""
    def moments(t, means, stds, beta_min, beta_max):
        decay = max(np.exp(-(beta_min * t + (beta_max - beta_min) * t**2 / 2)), floor)
        return means * np.sqrt(decay), stds**2 * decay + 1 - decay
    return moments


def score_with_max_over_x(x, t, weights, means, stds, beta_min, beta_max):
    terms, x, m, v = reference.log_terms(x, t, weights, means, stds, beta_min, beta_max)
    responsibilities = np.exp(terms - terms.max(0, keepdims=True))  # the max over the points, not the components
    responsibilities /= responsibilities.sum(-1, keepdims=True)
    return (responsibilities * (m - x) / v).sum(-1)


def schedule_in_numpy(beta_min, beta_max, T):
    return {name: table.numpy() for name, table in reference.ddpm_schedules(beta_min, beta_max, T).items()}


def schedule_as_tuple(beta_min, beta_max, T):
    schedule = reference.ddpm_schedules(beta_min, beta_max, T)
    return schedule["beta"], schedule["alpha"], schedule["alpha_bar"]


def schedule_with_diffusers_key(beta_min, beta_max, T):
    schedule = reference.ddpm_schedules(beta_min, beta_max, T)
    return {"beta": schedule["beta"], "alpha": schedule["alpha"], "alphas_cumprod": schedule["alpha_bar"]}


def alpha_bar_floored(beta_min, beta_max, T):
    """Right on short chains; wrong where alpha_bar falls below 0.01, as only the T = 1000 chain's does."""
    schedule = reference.ddpm_schedules(beta_min, beta_max, T)
    schedule["alpha_bar"] = schedule["alpha_bar"].clamp(min=0.01)
    return schedule


def sample_changing_the_schedule(eps_model, n, shape, schedule, sigma="beta", generator=None):
    root = schedule["alpha"].sqrt_()  # in place: the caller's alpha is now sqrt(alpha)
    return reference.sample(eps_model, n, shape, {**schedule, "alpha": root**2}, sigma, generator)


def respace_timesteps_only(alpha_bar, steps):
    return reference.respace(alpha_bar, steps)[0]


def respace_quadratic_spacing(alpha_bar, steps):
    """Denser near t = 0, as some papers space steps; rounding repeats the first few."""
    T = len(alpha_bar)
    timesteps = (torch.linspace(0, (T - 1) ** 0.5, steps) ** 2).long()
    timesteps[-1] = T - 1
    kept = alpha_bar[timesteps]
    return timesteps, 1 - kept / torch.cat([kept.new_ones(1), kept[:-1]])


def respace_half_percent_off(alpha_bar, steps):
    timesteps, betas = reference.respace(alpha_bar, steps)
    return timesteps, betas * 1.005


def marginal_pdf_of_two_components(x, t, weights, means, stds, beta_min, beta_max):
    return reference.marginal_pdf(x, t, weights[:2], means[:2], stds[:2], beta_min, beta_max)


def marginal_pdf_without_the_sum(x, t, *args):
    terms, *_ = reference.log_terms(x, t, *args)
    return np.exp(terms)  # one column per component


# Right answers written otherwise than the reference: `dgm check` must pass each.
CORRECT_VARIANTS = [
    ("1d", loss_noise_first_with_mse),
    ("1d", loss_by_multinomial_inline),
    ("1c", sampler(mean_step=lambda x, eps, beta, alpha, alpha_bar:  # eps scaled in place, as a step may use it
                   (x - eps.mul_(beta / (1 - alpha_bar).sqrt())) / alpha.sqrt())),
]

MUTANTS = [
    ("1a", "alpha_bar shifted by one step", alpha_bar_shifted),
    ("1a", "beta step over T instead of T - 1", beta_step_over_T),
    ("1a", "k counted from 1", beta_from_one),
    ("1a", "not a dict", schedule_as_tuple),
    ("1a", "beta is not a torch tensor", schedule_in_numpy),
    ("1a", "missing tables", schedule_with_diffusers_key),
    ("1a", "wrong alpha_bar", alpha_bar_floored),
    ("1a", "alpha_bar left as a logarithm", alpha_bar_as_log),
    ("1b", "one timestep for the whole batch", forward_first_timestep),
    ("1b", "x_t has the wrong shape", forward_for_images_only),
    ("1b", "x_t not in x0's dtype", forward_in_float64),
    ("1b", "x_t is not a torch tensor", forward_in_numpy),
    ("1b", "missing square roots in q(x_t | x_0)", forward_with(lambda a: a, lambda a: 1 - a)),
    ("1b", "missing square root on the noise", forward_with(lambda a: a.sqrt(), lambda a: 1 - a)),
    ("1b", "missing square root on x0", forward_with(lambda a: a, lambda a: (1 - a).sqrt())),
    ("1b", "signal and noise coefficients swapped", forward_with(lambda a: (1 - a).sqrt(), lambda a: a.sqrt())),
    ("1b", "alpha_bar indexed at t - 1", forward_with(lambda a: a.sqrt(), lambda a: (1 - a).sqrt(), -1)),
    ("1b", "noise argument ignored", forward_ignoring_noise),
    ("1b", "alpha_bar indexed at t - 1", forward_one_step_early),
    ("1c", "noise added at the last step", sampler(noise_from=0)),
    ("1c", "beta used as the noise's standard deviation",
     sampler(noise_std=correct_std(beta=lambda schedule, k: schedule["beta"][k]))),
    ("1c", "1 - alpha_bar instead of its square root",
     sampler(mean_step=lambda x, eps, beta, alpha, alpha_bar: (x - beta / (1 - alpha_bar) * eps) / alpha.sqrt())),
    ("1c", "the epsilon term's sign",
     sampler(mean_step=lambda x, eps, beta, alpha, alpha_bar:
             (x + beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt())),
    ("1c", "sqrt(alpha_bar_t) instead of sqrt(alpha_t)",
     sampler(mean_step=lambda x, eps, beta, alpha, alpha_bar:
             (x - beta / (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt())),
    ("1c", "1/sqrt(alpha_t) missing",
     sampler(mean_step=lambda x, eps, beta, alpha, alpha_bar: x - beta / (1 - alpha_bar).sqrt() * eps)),
    ("1c", "sigma^2 = beta_tilde instead of beta", sampler(noise_std=correct_std(beta=posterior_std))),
    ("1c", "sigma^2 = beta instead of beta_tilde", sampler(noise_std=correct_std(posterior=beta_std))),
    ("1c", "beta_tilde used as the noise's standard deviation",
     sampler(noise_std=correct_std(posterior=lambda schedule, k: posterior_std(schedule, k) ** 2))),
    ("1c", "beta_tilde's ratio inverted", sampler(noise_std=correct_std(posterior=inverted_posterior_std))),
    ("1c", "wrong reverse mean", sampler(posterior_mean_step=posterior_mean_with_alpha_bar_t)),
    ("1c", "noise not drawn from generator", sampler(own_noise="posterior")),
    ("1c", "alpha instead of alpha_bar in beta_tilde",
     sampler(noise_std=correct_std(posterior=lambda schedule, k: schedule["beta"][k - 1].sqrt()))),
    ("1c", "timesteps numbered 1..T", sampler(timestep_offset=1)),
    ("1c", "generator ignored", sample_seeding_its_own_generator),
    ("1c", "the same noise for every sample",
     sampler(draw=lambda x, generator: torch.randn(x.shape[1:], generator=generator, dtype=x.dtype))),
    ("1c", "noise not centred", sampler(draw=lambda x, generator: torch.rand(x.shape, generator=generator,
                                                                            dtype=x.dtype))),
    ("1c", "every sample is the same", sample_left_as_zeros),
    ("1c", 'sigma="posterior" not implemented', sample_without_posterior),
    ("1c", "the chain in half precision",
     sampler(mean_step=lambda x, eps, beta, alpha, alpha_bar:
             ((x - beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()).bfloat16())),
    ("1c", "samples not finite",  # beta_tilde's ratio written as 1 - alpha_bar[k-1] / alpha_bar[k] < 0
     sample_drawing(variance_of=lambda beta, alpha_bar, previous: 1 - previous / alpha_bar)),
    ("1c", "the same noise for every entry of a sample",
     sample_drawing(draw_z=lambda x, k, generator: one_number_per_sample(len(x), x.shape[1:], generator))),
    ("1c", "x_T is not drawn from N(0, I)", sample_drawing(draw_start=one_number_per_sample)),
    ("1c", "generator ignored",
     sample_drawing(draw_z=lambda x, k, generator: torch.randn(x.shape, generator=torch.Generator().manual_seed(k),
                                                               dtype=x.dtype))),
    ("1b", "wrong x_t", forward_under_a_negative_root),
    ("3a", "wrong alpha_bar(t) = exp(-B(t))", mixture_functions(alpha_bar_floored_at(0.01))[0]),
    ("3b", "wrong alpha_bar(t) = exp(-B(t))", mixture_functions(alpha_bar_floored_at(0.01))[1]),
    ("3b", "score differs on a 2-D x", score_with_max_over_x),
    ("3b", "responsibilities without the weights", score_with_responsibilities(drop="weights")),
    ("3b", "responsibilities without the normalising constant", score_with_responsibilities(drop="constant")),
    ("2b", "betas has the wrong shape", respace_without_the_first_beta),
    ("1c", "eps_model called on part of the batch", sample_one_at_a_time),
    ("1c", "the same noise at every step", sample_reusing_one_z),
    ("1c", "eps_model's arguments swapped", sampler(change_model=lambda m: lambda x, t: m(t, x))),
    ("1c", "samples are not a torch tensor", sample_returning_numpy),
    ("1c", "noise not drawn from generator", sampler(own_noise=True)),
    ("1c", "samples clamped to [-1, 1]", sample_clamped),
    ("1c", "returned a tuple, not the samples", sample_with_trajectory),
    ("1c", "eps_model called without end", sample_without_end),
    ("1c", "wrong number of steps", sampler(change_model=lambda m: lambda x, t: (m(x, t), m(x, t))[1])),
    ("1c", "wrong number of steps", sampler(steps_from=1)),
    ("1c", "t is not a long tensor of shape (n,)", sampler(change_model=lambda m: lambda x, t: m(x, t.int()))),
    ("1c", "x_T is not drawn from N(0, I)", sampler(start_scale=0.8)),
    ("1c", "wrong noise", sampler(noise_from=2)),
    ("1c", "noise variance one index late",
     sampler(noise_std=correct_std(beta=lambda schedule, k: schedule["beta"][k - 1].sqrt()))),
    ("1c", "alpha_bar[k - 1] wraps around at k = 0",
     sampler(noise_from=0, noise_std=correct_std(beta=none_at_last_step(beta_std), posterior=wrapped_posterior_std))),
    ("1c", "1/sqrt(alpha_t) applied to x_t only",
     sampler(mean_step=lambda x, eps, beta, alpha, alpha_bar:
             x / alpha.sqrt() - beta / (1 - alpha_bar).sqrt() * eps)),
    ("2b", "not a pair", respace_timesteps_only),
    ("2b", "timesteps not strictly increasing", respace_quadratic_spacing),
    ("2b", "wrong beta'", respace_half_percent_off),
    ("3a", "wrong p_t(x)", marginal_pdf_of_two_components),
    ("3a", "p_t(x) has the wrong shape", marginal_pdf_without_the_sum),
    ("2b", "respacing keeps the original betas", respace_original_betas),
    ("2b", "respacing keeps the original betas", respace_original_betas_wrapped),
    ("2b", "kept steps miss the last timestep",
     respace_with_timesteps(lambda T, steps: torch.arange(0, T, T // steps))),
    ("2b", "kept steps miss the first timestep",
     respace_with_timesteps(lambda T, steps: torch.arange(T // steps - 1, T, T // steps))),
    ("2b", "first beta' wraps around", respace_wrapping),
    ("2b", "timesteps numbered 1..T", respace_numbered_from_one),
    ("2b", "timesteps in decreasing order", respace_decreasing),
    ("2b", "timesteps are floats", respace_float_timesteps),
    ("2b", "timesteps are floats", respace_swapped),
    ("2b", "too few correct digits", in_float32(reference.respace)),
    ("2b", "first beta' is 0", respace_first_beta_zero),
    ("2b", "not a long and a float tensor", respace_in_numpy),
    ("2b", "beta' ratio upside down", respace_ratio_upside_down),
    ("3a", "wrong alpha_bar(t) = exp(-B(t))", mixture_functions(integral_of_beta_as_rate_times_t)[0]),
    ("3a", "p_t(x) differs on a 2-D x", marginal_pdf_in_column_order),
    ("3a", "variance used as the standard deviation", marginal_pdf_variance_as_std),
    ("3a", "too few correct digits", mixture_functions(alpha_bar_in_float32)[0]),
    ("3b", "too few correct digits", mixture_functions(alpha_bar_in_float32)[1]),
    ("3a", "returned None", marginal_pdf_without_return),
    ("3b", "wrong alpha_bar(t) = exp(-B(t))", mixture_functions(integral_of_beta_as_rate_times_t)[1]),
    ("3b", "prior weights instead of responsibilities", score_with_prior_weights),
    ("3b", "divided by the std instead of the variance", score_over_std),
    ("3a", "mixture stds used as variances", mixture_functions(stds_as_variances)[0]),
    ("3a", "mean decaying as exp(-B) instead of exp(-B/2)", mixture_functions(mean_decays_fully)[0]),
    ("3a", "B(t) without the 1/2", mixture_functions(integral_without_half)[0]),
    ("3a", "too few correct digits", in_float32(reference.marginal_pdf)),
    ("3b", "mixture stds used as variances", mixture_functions(stds_as_variances)[1]),
    ("3b", "mean decaying as exp(-B) instead of exp(-B/2)", mixture_functions(mean_decays_fully)[1]),
    ("3b", "the score's sign", score_with_flipped_sign),
    ("3b", "score not finite in the tails", mixture_functions(reference.component_moments)[1]),
    ("3b", "score zero in the tails", score_zero_where_undefined),
    ("3a", "wrong alpha_bar(t) = exp(-B(t))", mixture_functions(integral_of_beta_as_the_rate)[0]),
    ("3a", "beta_min and beta_max ignored", mixture_functions(moments_at_the_handouts_betas)[0]),
    ("3b", "beta_min and beta_max ignored", mixture_functions(moments_at_the_handouts_betas)[1]),
    ("2b", "beta' without the previous kept alpha_bar", respace_without_the_ratio),
    ("3a", "log p_t(x) instead of p_t(x)", marginal_log_pdf),
    ("1d", "the loss is not a tensor", loss_returning_a_float),
    ("1d", "a loss per sample", loss_with(reduce=lambda error: error.square().flatten(1).mean(1))),
    ("1d", "no gradient reaches the network", loss_without_gradient),
    ("1d", "eps_model called more than once", loss_in_two_halves),
    ("1d", "one timestep for the whole batch",
     loss_with(t=lambda T, N, generator: torch.randint(0, T, (1,), generator=generator).expand(N))),
    ("1d", "t never T - 1", loss_with(t=lambda T, N, generator: torch.randint(0, T - 1, (N,), generator=generator))),
    ("1d", "t never 0", loss_with(t=lambda T, N, generator: torch.randint(1, T, (N,), generator=generator))),
    ("1d", "t not uniform over 0..T-1",
     loss_with(t=lambda T, N, generator: (torch.rand(N, generator=generator) ** 2 * T).long())),
    ("1d", "t is not a long tensor of shape (N,)",
     loss_with(t=lambda T, N, generator: torch.randint(0, T, (N,), generator=generator, dtype=torch.int32))),
    ("1d", "missing square root on x0",
     loss_with(x_t=lambda x0, noise, alpha_bar, t: level_at(alpha_bar, t, x0) * x0
               + (1 - level_at(alpha_bar, t, x0)).sqrt() * noise)),
    ("1d", "alpha_bar indexed at t - 1",
     loss_with(x_t=lambda x0, noise, alpha_bar, t: reference.forward(x0, (t - 1).clamp(min=0), noise, alpha_bar))),
    ("1d", "alpha_bar indexed at t - 1",  # at t = 0, alpha_bar[-1]: Python's last entry
     loss_with(x_t=lambda x0, noise, alpha_bar, t: reference.forward(x0, t - 1, noise, alpha_bar))),
    ("1d", "x_t not in x0's dtype", loss_with(x_t=lambda x0, noise, alpha_bar, t: forward_in_float64(x0, t, noise,
                                                                                                    alpha_bar))),
    ("1d", "eps_model given x0, not x_t", loss_with(x_t=lambda x0, noise, alpha_bar, t: x0)),
    ("1d", "the same noise for every sample",
     loss_with(noise=lambda x0, generator: torch.randn(x0.shape[1:], generator=generator, dtype=x0.dtype)
               .expand_as(x0))),
    ("1d", "summed over each sample's entries",
     loss_with(reduce=lambda error: error.square().flatten(1).sum(1).mean())),
    ("1d", "summed, not averaged", loss_with(reduce=lambda error: error.square().sum())),
    ("1d", "the root of the mean square", loss_with(reduce=lambda error: error.square().mean().sqrt())),
    ("1d", "scored against x0, not the noise", loss_with(target=lambda x0, noise, x_t: x0)),
    ("1d", "noise not drawn from generator", loss_with(noise=lambda x0, generator: torch.randn_like(x0))),
    ("1d", "t not drawn from generator", loss_with(t=lambda T, N, generator: torch.randint(0, T, (N,)))),
    ("1d", "t not drawn from generator", loss_with_its_own_generator),
    ("1d", "t not drawn from generator", loss_with(t=lambda T, N, generator: torch.arange(N) % T)),
    ("1d", "noise not drawn from generator",
     loss_with(noise=lambda x0, generator: torch.randn(x0.shape, generator=torch.Generator().manual_seed(0),
                                                        dtype=x0.dtype))),
    ("1d", "noise shared between entries",
     loss_with(noise=lambda x0, generator: torch.randn((len(x0), 1, *x0.shape[2:]), generator=generator,
                                                        dtype=x0.dtype).expand_as(x0))),
    ("1d", "uniform noise", loss_with(noise=lambda x0, generator: torch.rand(x0.shape, generator=generator,
                                                                             dtype=x0.dtype))),
    ("1d", "alpha in place of alpha_bar",
     loss_with(x_t=lambda x0, noise, alpha_bar, t: reference.forward(
         x0, t, noise, alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])))),
    ("1d", "x_t not finite",
     loss_with(x_t=lambda x0, noise, alpha_bar, t: level_at(alpha_bar, t, x0).sqrt() * x0
               + (level_at(alpha_bar, t, x0) - 1).sqrt() * noise)),
    ("1d", "x_t not in x0's dtype",
     loss_with(x_t=lambda x0, noise, alpha_bar, t: reference.forward(x0, t, noise, alpha_bar).half())),
    ("1d", "the loss is not finite", loss_with(reduce=lambda error: error.square().mean() * float("nan"))),
    ("1d", "the square of the mean error", loss_with(reduce=lambda error: error.mean().square())),
    ("1d", "a weighted loss", loss_p2_weighted),
    ("1d", "scored against v, not the noise", loss_against_v),
    ("3b", "the gradient of p_t, not of log p_t", score_of_p_itself),
    ("3b", "responsibilities normalised over every point", score_with_softmax_over_everything),
    ("1c", "timestep outside the chain", sample_on_the_problem_sets_chain),
    ("1c", "eps_model given x that is not a tensor",
     sampler(change_model=lambda m: lambda x, t: torch.as_tensor(m(x.numpy(), t)))),
]
