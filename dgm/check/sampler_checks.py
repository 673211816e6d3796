"""Checks of Problem 1c (``sample``) and Problem 2b (``respace``).

The sampler is run with a network of our own that records every call: it returns noise predictions eps drawn
independently of x, so that each of the student's steps x_(t-1) = a x_t + b eps + sigma z can be recovered by least
squares from the recorded x_t, eps and x_(t-1), and compared coefficient by coefficient with Algorithm 2. The chain
it runs on is short with large betas, so the last step's noise (tiny under the problem set's betas) stands out.
The sampler then runs on the problem set's chain with the exact noise predictor of the 1-D mixture, and its samples
are compared with p_0.
"""

import functools

import numpy as np
import scipy.stats
import torch

from dgm import closed_forms
from dgm.check.schedule_checks import NOTATION_SECTION, PROBLEM_SET_CHAIN
from dgm.check.verdicts import Mistake, NotImplementedYet, Stopped, as_float_array, call, compare, hint
from dgm.ddpm import SIGMA_CHOICES
from dgm.mixture import exact_noise_predictor, toy_mixture
from dgm.schedules import ddpm_schedules, respace as reference_respace, schedule_from_betas

EPSILON_SECTION = "reverse-process-epsilon"
EXERCISE_SECTION = "reverse-process-exercises"  # Problem 1c's contract: the generator the sampler draws from
POSTERIOR_SECTION = "reverse-process-posterior"
RESPACING_SECTION = "respacing-formula"
PROBE_BETAS = (0.1, 0.18, 0.26, 0.34, 0.42, 0.5)  # large and distinct: sigma = sqrt(beta) is far from beta
PROBE_N, PROBE_SHAPE = 4000, (2, 3)
TOLERANCE_IN_STANDARD_ERRORS = 6
END_TO_END_N, END_TO_END_P_VALUE = 2000, 1e-4
VARIANCE_NAMES = {"beta": "beta[k]", "posterior": "beta_tilde[k]"}  # the noise's variance that each sigma asks for
STALE_CORRELATION = 0.5  # fresh noise at two steps correlates within about 1 / sqrt(all the entries drawn) of 0
GENERATOR_SEEDS = (5, 6)  # two generators, seeded otherwise, give a sampler other noise
CALLS_PER_STEP_LIMIT = 20  # a sampler calling eps_model more than this many times T is stopped: its loop never ends


def limit_calls(network, T, n):
    """``network`` that stops the sampler with a Mistake once it is called more than CALLS_PER_STEP_LIMIT * T times
    (a loop that never ends would otherwise run, and fill memory, until killed), called as eps_model(t, x), on x that
    is not a tensor, or at a timestep far outside the chain of T steps (a schedule other than the one given)."""
    count, largest = 0, 0

    def eps_model(x, t):  # named as the student calls it, so that their TypeError reads right
        nonlocal count, largest
        count += 1
        if isinstance(x, torch.Tensor) and not x.is_floating_point() \
                and isinstance(t, torch.Tensor) and t.is_floating_point():
            raise Stopped(Mistake("eps_model's arguments swapped", f"eps_model got an integer tensor of shape "
                                  f"{tuple(x.shape)} as x and a float tensor of shape {tuple(t.shape)} as t: call it "
                                  "as eps_model(x, t), the samples first", EPSILON_SECTION))
        if not isinstance(x, torch.Tensor):
            raise Stopped(Mistake("eps_model given x that is not a tensor", f"eps_model got x as a "
                                  f"{type(x).__module__}.{type(x).__name__}: the network takes torch tensors, so run "
                                  "the chain in torch, x of shape (n, *shape)", EPSILON_SECTION))
        # beyond the chain by more than one step (off by one, the timestep check names the numbering)
        outside = [int(k) for k in np.ravel(np.asarray(t, dtype=np.float64)) if not -1 <= k <= T] \
            if isinstance(t, (int, torch.Tensor, np.ndarray)) else []
        if outside:
            raise Stopped(Mistake("timestep outside the chain", f"eps_model got t = {outside[0]} on a chain of "
                                  f"T = {T} steps, whose indices are 0..{T - 1}: take T and every table from the "
                                  "schedule argument (T = len(schedule['beta'])), and call eps_model with t = k at "
                                  "index k", EPSILON_SECTION))
        largest = max(largest, len(x) if getattr(x, "ndim", 0) else 1)
        if count > CALLS_PER_STEP_LIMIT * T:
            if largest < n:
                raise Stopped(Mistake("eps_model called on part of the batch", f"eps_model was called {count - 1} "
                                      f"times on a chain of T = {T} steps, each time on at most {largest} of the "
                                      f"n = {n} samples: run the chain on the whole batch at once, one call per step "
                                      "with x of shape (n, *shape) and t = torch.full((n,), k, dtype=torch.long)",
                                      EPSILON_SECTION))
            raise Stopped(Mistake("eps_model called without end", f"eps_model was called {count - 1} times on a chain "
                                  f"of T = {T} steps and the sampler had not returned: does the loop stop after "
                                  "k = 0?", EPSILON_SECTION))
        return network(x, t)

    eps_model.__qualname__ = "eps_model"
    return eps_model


def contract_schedule(schedule):
    """The keys of the template's contract only: beta, alpha and alpha_bar."""
    return {name: schedule[name] for name in ("beta", "alpha", "alpha_bar")}


def call_sampler(sample, eps_model, n, shape, schedule, sigma, generator):
    """The student's samples; a KeyError on the schedule gets a hint after their traceback, since the library's
    schedule (which the handout's code reads) has more tables than the contract's, and so do a call of eps_model that
    the contract does not make and their own NotImplementedError for a value of sigma."""
    with hint("KeyError", f"schedule is Problem 1a's dict, with the keys {', '.join(schedule)} only (the library's "
              "ddpm_schedules adds more); compute other tables, such as beta_tilde, from these"), \
            hint("eps_model()", "the network is called as eps_model(x, t), with two positional arguments"), \
            hint(("NotImplementedError", sigma), f'sigma is "beta" or "posterior" (the posterior variance '
                 f'beta_tilde); this call passed sigma="{sigma}"'):
        return call(sample, eps_model, n, shape, schedule, sigma=sigma, generator=generator)


class RecordingNetwork:
    """A stand-in eps_model: returns standard normal draws from its own seeded generator, recording (x, t, eps)."""

    def __init__(self, seed=2**31 - 1):  # a seed the sampler's generators never get
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = []

    def __call__(self, x, t):
        x = torch.as_tensor(x)
        dtype = x.dtype if x.is_floating_point() else torch.float64
        eps = torch.randn(x.shape, generator=self.generator, dtype=dtype)
        self.calls.append((x.detach().clone(), t.detach().clone() if isinstance(t, torch.Tensor) else t, eps))
        return eps.clone()  # the student may scale it in place; the record keeps what the step was given


def probe(sample, seed=0, sigma="beta"):
    """The student's sampler on the probe chain: (recording network, samples, the chain's tables as float64)."""
    network = RecordingNetwork()
    schedule = schedule_from_betas(torch.tensor(PROBE_BETAS, dtype=torch.float64))
    generator = torch.Generator().manual_seed(seed)
    samples = call_sampler(sample, limit_calls(network, len(PROBE_BETAS), PROBE_N), PROBE_N, PROBE_SHAPE,
                           contract_schedule(schedule), sigma, generator)
    if samples is not None and not isinstance(samples, (torch.Tensor, tuple)):
        raise Mistake("samples are not a torch tensor", f"sample returned a {type(samples).__name__}; return x, the "
                      "tensor of shape (n, *shape) that the last step computes", EPSILON_SECTION)
    samples = as_float_array(samples, "the samples", EPSILON_SECTION, shape=(PROBE_N, *PROBE_SHAPE))
    half = next((x.dtype for x, _, _ in network.calls if x.dtype in (torch.float16, torch.bfloat16)), None)
    if half is not None:
        raise Mistake("the chain in half precision", f"eps_model got x in {half}, which keeps about three significant "
                      "digits: its rounding at every step reads as noise the step adds. Run the chain in float64, "
                      "the schedule's dtype, or float32", EPSILON_SECTION)
    states = chain_states(network, samples)[1:]  # x_(t-1) of the steps at index k = T-1, ..., 0
    broken = next((k for k, x in zip(reversed(range(len(states))), states) if not np.isfinite(x).all()), None)
    if broken is not None:
        raise Mistake("samples not finite", f"the step at index k = {broken} (the book's t = {broken + 1}) returns "
                      "NaN or infinity: a square root of a negative number (a variance written upside down?) or a "
                      "division by zero (1 - alpha_bar[k - 1] at k = 0 is 0)", EPSILON_SECTION)
    if np.ptp(samples) == 0:
        raise Mistake("every sample is the same", f"every entry of every sample is {samples.flat[0]:.4g}: does the "
                      "step leave a placeholder, or return something other than the x it computes?", EPSILON_SECTION)
    if np.abs(samples).max() <= 1:  # this chain, from N(0, I), ends beyond 1 in most samples
        raise Mistake("samples clamped to [-1, 1]", "every sample lies in [-1, 1]: Algorithm 2 returns x_0 as its "
                      "last step computes it; clamping belongs to turning samples into images, not to the sampler",
                      EPSILON_SECTION)
    return network, samples, {name: table.numpy() for name, table in schedule.items()}


def each_sigma(check):
    """``check(sample, sigma)`` run with sigma="beta" and then "posterior", as a check of ``sample`` alone; a
    mistake found only with "posterior" says so, since the two branches of a sampler can differ in more than noise."""
    @functools.wraps(check)
    def both(sample):
        check(sample, "beta")
        try:
            check(sample, "posterior")
        except NotImplementedYet:  # the sampler is written, one branch is not: a mistake, not an empty template
            raise Mistake('sigma="posterior" not implemented', 'sample works with sigma="beta" but raises '
                          'NotImplementedError with sigma="posterior": write the branch whose noise has variance '
                          "beta_tilde[k]", POSTERIOR_SECTION) from None
        except Mistake as mistake:
            raise Mistake(mistake.name, f'with sigma="posterior", {mistake.explanation}', mistake.section) from None
    return both


@each_sigma
def check_returns(sample, sigma):
    """The sampler returns, with x_0 of shape (n, *shape) as its last step computes it (not clamped)."""
    probe(sample, sigma=sigma)


@each_sigma
def check_calls(sample, sigma):
    """eps_model gets x of shape (n, *shape) and t as a long tensor of shape (n,), for k = T-1 down to 0."""
    network, _, _ = probe(sample, sigma=sigma)
    T = len(PROBE_BETAS)
    if len(network.calls) != T:
        raise Mistake("wrong number of steps", f"eps_model was called {len(network.calls)} times on a chain of "
                      f"T = {T} steps; call it once per step, k = T-1, ..., 0", EPSILON_SECTION)
    steps = []
    for x, t, _ in network.calls:
        if x.shape != (PROBE_N, *PROBE_SHAPE):
            raise Mistake("x has the wrong shape", f"eps_model got x of shape {tuple(x.shape)}, expected (n, *shape) "
                          f"= {(PROBE_N, *PROBE_SHAPE)}", EPSILON_SECTION)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or t.shape != (PROBE_N,):
            got = f"a {t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else repr(t)
            raise Mistake("t is not a long tensor of shape (n,)", f"eps_model got t = {got}; pass "
                          "torch.full((n,), k, dtype=torch.long)", EPSILON_SECTION)
        steps.append(sorted(set(t.tolist())))
    expected = [[k] for k in reversed(range(T))]
    if steps == [[k + 1] for k in reversed(range(T))]:
        raise Mistake("timesteps numbered 1..T", f"eps_model got t = {T}, ..., 1 (Ho et al.'s numbering); the code "
                      f"indexes k = 0..T-1, so the first step gets t = T - 1 = {T - 1} and the last t = 0",
                      NOTATION_SECTION)
    if steps != expected:
        raise Mistake("wrong timesteps", f"eps_model got t = {steps}, expected {expected}", EPSILON_SECTION)


@each_sigma
def check_start(sample, sigma):
    """The first x the network sees (at k = T - 1, the book's x_T) is drawn from N(0, I)."""
    network, _, _ = probe(sample, sigma=sigma)
    x = network.calls[0][0].double()
    if bool((x.reshape(len(x), -1).std(dim=1) == 0).all()):
        raise Mistake("x_T is not drawn from N(0, I)", "every sample of the first x given to eps_model holds one "
                      "number in all its entries: draw x_T = torch.randn((n, *shape), generator=generator), one "
                      "standard normal per entry", EPSILON_SECTION)
    mean, std, count = float(x.mean()), float(x.std()), x.numel()
    tolerance = TOLERANCE_IN_STANDARD_ERRORS
    if abs(mean) > tolerance / np.sqrt(count) or abs(std - 1) > tolerance / np.sqrt(2 * count):
        raise Mistake("x_T is not drawn from N(0, I)", f"the first x given to eps_model has mean {mean:.3g} and "
                      f"standard deviation {std:.3g}; start from torch.randn((n, *shape), generator=generator)",
                      EPSILON_SECTION)


def fit_steps(network, samples):
    """Least squares x_(t-1) = a x_t + b eps + r at each step of the chain, which runs t = T..1.

    Returns arrays indexed by k = t - 1 (0..T-1): a, b, their standard errors, and the standard deviation of r (the
    noise the step added).
    """
    states = chain_states(network, samples)
    fits = []
    for (_, _, eps), x_in, x_out in zip(network.calls, states[:-1], states[1:]):
        design, coefficients, residual = fit_step(x_in, eps, x_out)
        noise_std = np.sqrt(residual @ residual / (len(residual) - 2))
        errors = noise_std * np.sqrt(np.diag(np.linalg.inv(design.T @ design)))
        fits.append((*coefficients, *errors, noise_std))
    return [np.array(column[::-1]) for column in zip(*fits)]  # reversed: index k


def fit_step(x_in, eps, x_out):
    """The least-squares fit x_out = a x_in + b eps + r of one step: (design matrix, (a, b), r), flattened."""
    design = np.stack([x_in.ravel(), eps.double().numpy().ravel()], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, x_out.ravel(), rcond=None)
    return design, coefficients, x_out.ravel() - design @ coefficients


def chain_states(network, samples):
    """x at every step of a probe, from x_T (the network's first input) to the samples, as float64 arrays."""
    return [x.double().numpy() for x, _, _ in network.calls] + [samples]


def step_noises(network, samples):
    """What the least-squares fit of each step k = T-1, ..., 1 leaves unexplained: the noise the step added."""
    states = chain_states(network, samples)
    return [fit_step(x_in, eps, x_out)[2] for (_, _, eps), x_in, x_out in zip(network.calls[:-1], states[:-2],
                                                                            states[1:-1])]


def mean_coefficients(chain):
    """Algorithm 2's coefficients a, b of x_t and eps in the mean of each step, on the probe's tables."""
    return (closed_forms.reverse_mean_from_eps(1.0, 0.0, chain["beta"], chain["alpha_bar"]),
            closed_forms.reverse_mean_from_eps(0.0, 1.0, chain["beta"], chain["alpha_bar"]))


def within(got, expected, error):
    return bool(np.all(np.abs(got - expected) <= TOLERANCE_IN_STANDARD_ERRORS * error + 1e-5 * (1 + np.abs(expected))))


def signed(value):
    """A term's coefficient as "+ 0.5" or "- 0.5"."""
    return f"{'-' if value < 0 else '+'} {abs(value):.4g}"


def mean_variants(chain, a_ref, b_ref):
    """(a, b, name, explanation) of the classic mistakes in Algorithm 2's mean, as the coefficients a of x_t and b of
    eps that each gives on the probe's chain."""
    beta, alpha, alpha_bar = chain["beta"], chain["alpha"], chain["alpha_bar"]
    return (
        (a_ref, -beta / (np.sqrt(alpha) * (1 - alpha_bar)), "1 - alpha_bar instead of its square root",
         "the coefficient of eps is beta_t / (1 - alpha_bar_t) / sqrt(alpha_t); it is "
         "beta_t / sqrt(1 - alpha_bar_t) / sqrt(alpha_t), because x_t carries the noise times sqrt(1 - alpha_bar_t)"),
        (a_ref, -b_ref, "the epsilon term's sign",
         "the step adds the predicted noise; the mean subtracts it: (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / "
         "sqrt(alpha_t)"),
        (np.ones_like(a_ref), b_ref * np.sqrt(alpha), "1/sqrt(alpha_t) missing",
         "the step does not divide by sqrt(alpha_t): the mean is (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / "
         "sqrt(alpha_t), undoing the forward step's sqrt(alpha_t)"),
        (a_ref, b_ref * np.sqrt(alpha), "1/sqrt(alpha_t) applied to x_t only",
         "only x_t is divided by sqrt(alpha_t); the whole bracket (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) is"),
        (a_ref * np.sqrt(alpha / alpha_bar), b_ref * np.sqrt(alpha / alpha_bar),
         "sqrt(alpha_bar_t) instead of sqrt(alpha_t)",
         "the step divides by sqrt(alpha_bar_t); one step back undoes one forward step, which scaled x by "
         "sqrt(alpha_t), so the mean is (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)"),
    )


@each_sigma
def check_mean(sample, sigma):
    """The mean of step t is (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) (Ho et al., eq. 11)."""
    network, samples, chain = probe(sample, sigma=sigma)
    a, b, a_error, b_error, _ = fit_steps(network, samples)
    beta, alpha_bar = chain["beta"], chain["alpha_bar"]
    a_ref, b_ref = mean_coefficients(chain)
    if within(a, a_ref, a_error) and within(b, b_ref, b_error):
        return
    stale = stale_noise(network, samples, a_ref, b_ref)  # such noise skews the fit: named before the mean is blamed
    if stale is not None:
        raise stale

    def differing(k):
        """The coefficients of the step at index k that differ from Algorithm 2's beyond the fit's error."""
        return [name for name, ours, theirs, error in (("x_t", a[k], a_ref[k], a_error[k]),
                                                       ("eps", b[k], b_ref[k], b_error[k]))
                if not within(ours, theirs, error)]

    k = next(k for k in reversed(range(len(beta))) if differing(k))  # the first step the sampler takes that is off
    off = differing(k)
    step = (f"at step t = {k + 1} (index k = {k}) your x_(t-1) = {a[k]:.4g} x_t {signed(b[k])} eps + noise; "
            f"Algorithm 2 gives {a_ref[k]:.4g} x_t {signed(b_ref[k])} eps (beta_t = {beta[k]:.3g}, "
            f"alpha_bar_t = {alpha_bar[k]:.3g}); "
            + ("both coefficients differ" if len(off) == 2 else f"only the {off[0]} coefficient differs")
            + " beyond the fit's error")
    for a_mistake, b_mistake, name, explanation in mean_variants(chain, a_ref, b_ref):
        if within(a, a_mistake, a_error) and within(b, b_mistake, b_error):
            raise Mistake(name, f"{explanation}. {step[0].upper()}{step[1:]}", EPSILON_SECTION)
    raise Mistake("wrong reverse mean", f"{step}. Your coefficients are a least-squares fit over the batch, exact "
                  "for a step linear in x_t and eps, as Algorithm 2's is", EPSILON_SECTION)


def stale_noise(network, samples, a_ref, b_ref):
    """The Mistake of a sampler whose steps k > 0 add, beside Algorithm 2's mean, noise that is the same for every
    sample of the batch or for every entry of a sample, the same z at every step (drawn once, before the loop), or
    not centred (torch.rand is uniform on [0, 1)); None if the added noise looks fresh. Such noise also skews the
    least-squares fit of the mean, so it is named before the mean is blamed."""
    states = chain_states(network, samples)
    steps = zip(network.calls[:-1], states[:-2], states[1:-1], range(len(network.calls) - 1, 0, -1))
    previous = None  # what the fit of the step before (index k + 1) leaves unexplained: its noise
    for (_, _, eps), x_in, x_out, k in steps:
        added = (x_out - a_ref[k] * x_in - b_ref[k] * eps.double().numpy()).reshape(len(x_out), -1)
        spread, count = added.std(), added.size
        if spread < 1e-9:
            continue  # no noise, up to rounding: the noise check names it
        residual = fit_step(x_in, eps, x_out)[2]
        if previous is not None and abs(np.corrcoef(previous, residual)[0, 1]) > STALE_CORRELATION:
            return Mistake("the same noise at every step", f"the steps at indices k = {k + 1} and k = {k} add the "
                           "same z, scaled: draw z afresh inside the loop, torch.randn((n, *shape), "
                           "generator=generator) at every step", EPSILON_SECTION)
        previous = residual
        if np.all(added.std(axis=1) < 1e-3 * spread + 1e-12):
            return Mistake("the same noise for every entry of a sample", f"the step at index k = {k} adds one number "
                           "z per sample to all its entries: draw z of the batch's shape, torch.randn((n, *shape), "
                           "generator=generator), one standard normal per entry", EPSILON_SECTION)
        if np.all(added.std(axis=0) < 1e-3 * spread + 1e-12) or np.all(added == added[:1]):
            return Mistake("the same noise for every sample", f"the step at index k = {k} adds the same z to every "
                           "sample of the batch: draw z of the batch's shape, torch.randn((n, *shape), "
                           "generator=generator), afresh at every step", EPSILON_SECTION)
        if abs(added.mean()) > TOLERANCE_IN_STANDARD_ERRORS * spread / np.sqrt(count):
            return Mistake("noise not centred", f"the noise added at index k = {k} has mean {added.mean():.3g} and "
                           f"standard deviation {spread:.3g}: z must be standard normal, torch.randn (torch.rand is "
                           "uniform on [0, 1))", EPSILON_SECTION)
    return None


def noise_variants(sigma, chain):
    """The noise's standard deviation that ``sigma`` asks for on ``chain`` (the probe's tables), and (standard
    deviation, name, explanation) of the mistakes that give another."""
    beta, posterior = chain["beta"], chain["posterior_variance"]
    wanted = VARIANCE_NAMES[sigma]
    no_noise = (np.zeros_like(beta), "no noise added", f"the steps add no noise; Algorithm 2 adds std[k] z with "
                f"std[k]^2 = {wanted} at every step but the last")
    variance = beta if sigma == "beta" else posterior
    one_late = (np.sqrt(np.concatenate([[0.0], variance[:-1]])), "noise variance one index late",
                f"the step at index k adds noise of variance {wanted.replace('[k]', '[k - 1]')}, the previous "
                f"index's; index k holds the book's step t = k + 1, whose variance is {wanted}")
    if sigma == "beta":
        return np.sqrt(beta), (
            (beta, "beta used as the noise's standard deviation",
             "std[k] z with std[k] = beta[k]: beta[k] is a variance, so std[k] = sqrt(beta[k])"),
            (np.sqrt(posterior), "sigma^2 = beta_tilde instead of beta",
             'with sigma="beta" the noise has variance beta_tilde[k]; it should have variance beta[k]'),
            one_late, no_noise)
    alpha_bar, previous = chain["alpha_bar"], chain["alpha_bar_prev"]  # alpha_bar[k - 1] is 1 before the first step
    return np.sqrt(posterior), (
        (np.sqrt(beta), "sigma^2 = beta instead of beta_tilde",
         'with sigma="posterior" the noise has variance beta[k] (is sigma ignored?); it should have the posterior '
         "variance beta_tilde[k] = (1 - alpha_bar[k - 1]) / (1 - alpha_bar[k]) beta[k]"),
        (posterior, "beta_tilde used as the noise's standard deviation",
         "std[k] z with std[k] = beta_tilde[k]: beta_tilde[k] is a variance, so std[k] = sqrt(beta_tilde[k])"),
        (np.sqrt((1 - alpha_bar) / (1 - previous + 1e-300) * beta), "beta_tilde's ratio inverted",
         "the noise has variance (1 - alpha_bar[k]) / (1 - alpha_bar[k - 1]) beta[k]; the posterior variance is "
         "beta_tilde[k] = (1 - alpha_bar[k - 1]) / (1 - alpha_bar[k]) beta[k], smaller than beta[k]"),
        (np.sqrt(np.concatenate([[0.0], beta[:-1]])), "alpha instead of alpha_bar in beta_tilde",
         "the noise has variance (1 - alpha[k - 1]) / (1 - alpha[k]) beta[k] = beta[k - 1]; the posterior variance "
         "uses the cumulative products: beta_tilde[k] = (1 - alpha_bar[k - 1]) / (1 - alpha_bar[k]) beta[k]"),
        one_late, no_noise)


def last_step_noise(sigma, chain, noise_std):
    """The Mistake of a sampler whose last step (index 0) adds noise of standard deviation ``noise_std``."""
    alpha_bar, beta = chain["alpha_bar"], chain["beta"]
    wrapped = np.sqrt(closed_forms.posterior_variance(beta[0], alpha_bar[-1], alpha_bar[0]))  # alpha_bar[0 - 1]
    shown = f'with sigma="{sigma}", the last step (index k = 0, the book\'s t = 1) adds noise of standard deviation ' \
            f"{noise_std:.3g}"
    if sigma == "posterior" and abs(noise_std / wrapped - 1) < 0.05:
        return Mistake("alpha_bar[k - 1] wraps around at k = 0", f"{shown}, which is sqrt(beta_tilde[0]) computed "
                       "with alpha_bar[-1], the last entry of alpha_bar in Python. Before the first step alpha_bar "
                       "is 1 (the book's alpha_bar_0), so beta_tilde[0] = 0: the last step adds no noise",
                       POSTERIOR_SECTION)
    return Mistake("noise added at the last step", f"{shown} (beta[0] = {beta[0]:.3g}); Algorithm 2 returns the mean "
                   "at the last step, z = 0 when k = 0", EPSILON_SECTION)


def check_noise(sample):
    """Each step k > 0 adds noise of variance beta[k] (sigma="beta") or beta_tilde[k] (sigma="posterior"); the last
    step, k = 0, adds none."""
    count = PROBE_N * np.prod(PROBE_SHAPE)
    tolerance = TOLERANCE_IN_STANDARD_ERRORS / np.sqrt(2 * count)
    inner = slice(1, None)
    for sigma in SIGMA_CHOICES:
        network, samples, chain = probe(sample, sigma=sigma)
        stale = stale_noise(network, samples, *mean_coefficients(chain))
        if stale is not None:
            raise stale
        noise_std = fit_steps(network, samples)[-1]
        expected, variants = noise_variants(sigma, chain)

        def matches(target):
            return bool(np.all(np.abs(noise_std[inner] - target[inner]) <= tolerance * target[inner] + 1e-6))

        if not matches(expected):
            k = int(np.argmax(np.abs(noise_std[inner] / expected[inner] - 1))) + 1
            step = (f'with sigma="{sigma}", the step at index k = {k} (the book\'s t = {k + 1}) adds noise of '
                    f"standard deviation {noise_std[k]:.4g}, expected sqrt({VARIANCE_NAMES[sigma]}) = "
                    f"{expected[k]:.4g}, with beta[k] = {chain['beta'][k]:.3g}, alpha_bar[k - 1] = "
                    f"{chain['alpha_bar_prev'][k]:.3g} and alpha_bar[k] = {chain['alpha_bar'][k]:.3g}")
            section = EPSILON_SECTION if sigma == "beta" else POSTERIOR_SECTION  # where sigma^2 = beta, beta_tilde
            for target, mistake, explanation in variants:
                if matches(target):
                    raise Mistake(mistake, f"{explanation}. {step[0].upper()}{step[1:]}", section)
            raise Mistake("wrong noise", step, section)
        if noise_std[0] > 1e-4:
            raise last_step_noise(sigma, chain, noise_std[0])


@each_sigma
def check_generator(sample, sigma):
    """The noise comes from ``generator``: generators seeded alike give the same samples, seeded otherwise other
    samples."""
    seed, other_seed = GENERATOR_SEEDS
    (network, first, _), second = probe(sample, seed=seed, sigma=sigma), probe(sample, seed=seed, sigma=sigma)[1]
    if not np.array_equal(first, second):
        raise Mistake("noise not drawn from generator", "two runs with generators seeded alike gave different "
                      "samples: draw x_T and every z with torch.randn(..., generator=generator) (torch.randn_like "
                      "without generator= draws from torch's global generator)", EXERCISE_SECTION)
    other_network, other, _ = probe(sample, seed=other_seed, sigma=sigma)
    if np.array_equal(first, other):
        raise Mistake("generator ignored", f"generators seeded {seed} and {other_seed} gave the same samples: the "
                      "sampler seeds its own randomness (torch.manual_seed, or a generator of its own) instead of "
                      "drawing x_T and every z with the generator it is given", EXERCISE_SECTION)
    for k, noise, other_noise in zip(range(len(network.calls) - 1, 0, -1), step_noises(network, first),
                                     step_noises(other_network, other)):
        if abs(np.corrcoef(noise, other_noise)[0, 1]) > STALE_CORRELATION:
            raise Mistake("generator ignored", f"the noise added at index k = {k} is the same for generators seeded "
                          f"{seed} and {other_seed} (only x_T differs): the sampler seeds its own randomness for z "
                          "(torch.manual_seed, or a generator of its own) instead of drawing it with the generator it "
                          "is given", EXERCISE_SECTION)


def check_end_to_end(sample):
    """With the exact noise predictor of the 1-D mixture on the problem set's chain, the samples follow p_0, with
    either sigma."""
    mixture = toy_mixture()
    schedule = contract_schedule(ddpm_schedules(*PROBLEM_SET_CHAIN))
    predictor = exact_noise_predictor(mixture, schedule["alpha_bar"])
    for sigma in SIGMA_CHOICES:
        generator = torch.Generator().manual_seed(0)
        samples = call_sampler(sample, limit_calls(predictor, PROBLEM_SET_CHAIN[2], END_TO_END_N), END_TO_END_N, (1,),
                               schedule, sigma, generator)
        samples = as_float_array(samples, "the samples", EPSILON_SECTION, shape=(END_TO_END_N, 1))[:, 0]
        test = scipy.stats.kstest(samples, mixture.cdf)
        if not np.isfinite(samples).all() or test.pvalue < END_TO_END_P_VALUE:
            raise Mistake("samples do not follow p_0", f'{END_TO_END_N} samples (sigma="{sigma}") of the mixture '
                          f"{mixture} drawn with its exact noise predictor: Kolmogorov-Smirnov statistic "
                          f"{test.statistic:.3g}, p = {test.pvalue:.2g} (mean {np.mean(samples):.3g}, expected "
                          f"{float(mixture.weights @ mixture.means):.3g})", EPSILON_SECTION)


SAMPLE_CHECKS = (
    ("returns x_0 of shape (n, *shape), not clamped", check_returns),
    ("calls eps_model(x, t) once per step, t = T-1, ..., 0", check_calls),
    ("starts from x ~ N(0, I)", check_start),
    ("mean of step t: (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)", check_mean),
    ("noise std[k] z, std[k]^2 = beta[k] or beta_tilde[k], at indices k > 0, none at k = 0", check_noise),
    ("draws its noise from generator", check_generator),
    ("the exact predictor of the 1-D mixture gives samples of p_0, with either sigma", check_end_to_end),
)


def respace_result(respace, alpha_bar, steps):
    """The student's (timesteps, betas) as integer and float arrays, or the Mistake that breaks the contract."""
    T = len(alpha_bar)
    with hint("out of bounds", f"alpha_bar has indices 0..T-1 = 0..{T - 1} (T = {T}, steps = {steps}): the last "
              f"kept timestep is T - 1, as torch.linspace(0, T - 1, steps) ends"):
        result = call(respace, alpha_bar, steps)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise Mistake("not a pair", f"respace returned {type(result).__name__}; return (timesteps, betas)",
                      RESPACING_SECTION)
    kept, betas = result
    if kept.is_floating_point() if isinstance(kept, torch.Tensor) else \
            isinstance(kept, np.ndarray) and np.issubdtype(kept.dtype, np.floating):
        swapped = bool((np.asarray(kept) < 1).all())  # betas lie in (0, 1); steps count up to T - 1
        raise Mistake("timesteps are floats", f"timesteps is a {kept.dtype} {type(kept).__name__}"
                      + (" whose values all lie below 1, like betas: return (timesteps, betas), in that order"
                         if swapped else "; the sampler indexes alpha_bar with them and passes them to eps_model as "
                         "integers: return a long tensor (dtype=torch.long)"), RESPACING_SECTION)
    try:
        timesteps = as_float_array(kept, "timesteps", RESPACING_SECTION, shape=(steps,))
        float_betas = as_float_array(betas, "betas", RESPACING_SECTION, shape=(steps,))
    except Mistake as mistake:
        if not mistake.name.endswith("wrong shape"):
            raise
        one_short = mistake.name.startswith("betas") and np.shape(betas) == (steps - 1,)
        raise Mistake(mistake.name, f"{mistake.explanation} (T = {T}, steps = {steps})" + (
            ": betas holds one beta' per kept step, the first too, betas[0] = 1 - alpha_bar[timesteps[0]] (alpha_bar "
            "is 1 before the first kept step)" if one_short else ""), RESPACING_SECTION) from None
    if not np.array_equal(timesteps, np.round(timesteps)):
        raise Mistake("timesteps are not integers", f"timesteps = {timesteps[:5]} ...", RESPACING_SECTION)
    if not (isinstance(kept, torch.Tensor) and kept.dtype == torch.long and isinstance(betas, torch.Tensor)
            and betas.is_floating_point()):
        got = ", ".join(f"{name} as {type(value).__name__} of {getattr(value, 'dtype', 'no dtype')}" for name, value in
                        (("timesteps", kept), ("betas", betas)))
        raise Mistake("not a long and a float tensor", f"respace returned {got}; the contract asks for torch "
                      "tensors, timesteps of dtype torch.long (the sampler indexes with them and passes them to "
                      "eps_model) and float betas, such as torch.as_tensor(timesteps, dtype=torch.long)",
                      RESPACING_SECTION)
    return timesteps.astype(np.int64), float_betas


def respace_cases():
    """(alpha_bar, steps): the problem set's chain at 50 and 100 steps, and a short chain whose numbers can be read."""
    long_chain = ddpm_schedules(*PROBLEM_SET_CHAIN)["alpha_bar"]
    return [(long_chain, 50), (long_chain, 100), (ddpm_schedules(0.05, 0.3, 10)["alpha_bar"], 4)]


def check_respace_timesteps(respace):
    """steps timesteps, strictly increasing, from 0 to T - 1."""
    for alpha_bar, steps in respace_cases():
        T = len(alpha_bar)
        timesteps, _ = respace_result(respace, alpha_bar, steps)
        shown = f"T = {T}, steps = {steps}: timesteps {timesteps[:3].tolist()} ... {timesteps[-2:].tolist()}"
        if timesteps[0] > timesteps[-1]:
            raise Mistake("timesteps in decreasing order", f"{shown}; return them increasing, from 0 to T - 1 (the "
                          "sampler walks them backwards)", RESPACING_SECTION)
        if timesteps[0] == 1 and timesteps[-1] == T:
            raise Mistake("timesteps numbered 1..T", f"{shown}: these are the book's steps, 1..T; return their array "
                          f"indices, 0..T-1 (alpha_bar has no index {T})", NOTATION_SECTION)
        if timesteps[0] != 0:
            raise Mistake("kept steps miss the first timestep", f"{shown}; the kept steps must include index 0 "
                          "(the book's step t = 1), the sampler's last step, which returns x_0", RESPACING_SECTION)
        if timesteps[-1] != T - 1:
            raise Mistake("kept steps miss the last timestep", f"{shown}; the kept steps must include index T - 1 = "
                          f"{T - 1} (the book's step t = T), the level the sampler's N(0, I) start stands for",
                          RESPACING_SECTION)
        if np.any(np.diff(timesteps) <= 0):
            raise Mistake("timesteps not strictly increasing", shown, RESPACING_SECTION)


def check_respace_betas(respace):
    """beta'_i = 1 - alpha_bar[tau_i] / alpha_bar[tau_(i-1)], with alpha_bar = 1 before the first kept step."""
    for alpha_bar, steps in respace_cases():
        timesteps, betas = respace_result(respace, alpha_bar, steps)
        kept = alpha_bar.numpy()[timesteps]
        original = reference_respace(alpha_bar, torch.arange(len(alpha_bar)))["beta"].numpy()  # every step kept
        original_wrapped = closed_forms.respaced_beta(kept, alpha_bar.numpy()[timesteps - 1])  # [-1] at index 0
        one_jump = ("the short chain jumps from tau_(i-1) to tau_i in one step, so beta'_i = 1 - alpha_bar[tau_i] / "
                    "alpha_bar[tau_(i-1)]")
        wrapped = closed_forms.respaced_beta(kept, np.roll(kept, 1))
        previous = np.concatenate([[1.0], kept[:-1]])
        first_zero = np.concatenate([[0.0], closed_forms.respaced_beta(kept, previous)[1:]])
        upside_down = closed_forms.respaced_beta(previous, kept)
        compare(betas, reference_respace(alpha_bar, torch.as_tensor(timesteps))["beta"].numpy(), "beta'",
                RESPACING_SECTION, context=f"T = {len(alpha_bar)}, steps = {steps}", variants=[
                    (original[timesteps], "respacing keeps the original betas",
                     f"your beta'_i is the original beta[tau_i], one step's worth of noise; {one_jump}",
                     RESPACING_SECTION),
                    (original_wrapped, "respacing keeps the original betas",
                     "your beta'_i = 1 - alpha_bar[tau_i] / alpha_bar[tau_i - 1] is the original beta[tau_i], one "
                     "step's worth of noise (and at the first kept index, 0, alpha_bar[-1] is Python's last entry); "
                     f"{one_jump}", RESPACING_SECTION),
                    (wrapped, "first beta' wraps around",
                     "betas[0] divides by alpha_bar[timesteps[-1]], which Python reads as the last kept step; "
                     "before the first kept step alpha_bar is 1, so betas[0] = 1 - alpha_bar[timesteps[0]]",
                     RESPACING_SECTION),
                    (first_zero, "first beta' is 0",
                     "betas[0] = 0 would keep x unchanged at the first step; before the first kept step alpha_bar "
                     "is 1, so betas[0] = 1 - alpha_bar[timesteps[0]] / 1", RESPACING_SECTION),
                    (1 - kept, "beta' without the previous kept alpha_bar",
                     "your beta'_i = 1 - alpha_bar[tau_i], the noise of the whole chain up to tau_i: the short "
                     "chain's steps would each add it again. One jump from tau_(i-1) to tau_i keeps "
                     "alpha_bar[tau_i] / alpha_bar[tau_(i-1)] of alpha_bar, so beta'_i = 1 - alpha_bar[tau_i] / "
                     "alpha_bar[tau_(i-1)]", RESPACING_SECTION),
                    (upside_down, "beta' ratio upside down",
                     "your beta'_i = 1 - alpha_bar[tau_(i-1)] / alpha_bar[tau_i], which is negative since alpha_bar "
                     "falls with t; alpha'_i = alpha_bar[tau_i] / alpha_bar[tau_(i-1)] is the share of alpha_bar "
                     "that one jump keeps, and beta'_i = 1 - alpha'_i", RESPACING_SECTION)])


RESPACE_CHECKS = (
    ("timesteps: steps of them, increasing, from 0 to T - 1", check_respace_timesteps),
    ("beta'_i = 1 - alpha_bar[tau_i] / alpha_bar[tau_(i-1)]", check_respace_betas),
)
