"""Checks of Problem 1a (``ddpm_schedules``) and Problem 1b (``forward``) against ``dgm.schedules`` and the closed
forms of derivations/ddpm.py.

A short chain with large, distinct betas comes first: every classic mistake moves its tables far beyond rounding, so
a wrong table can be matched to the mistake that makes it. The problem set's chain (T = 1000) comes last.
"""

import numpy as np
import torch

from dgm import closed_forms
from dgm.check.verdicts import Mistake, as_float_array, call, compare, hint
from dgm.schedules import PROBLEM_SET_BETA_MAX, PROBLEM_SET_BETA_MIN, PROBLEM_SET_T
from dgm.schedules import ddpm_schedules as reference_schedules

SCHEDULE_SECTION = "forward-process-schedule"
MARGINAL_SECTION = "forward-process-marginal"
NOTATION_SECTION = "preface-notation"
TABLES = ("beta", "alpha", "alpha_bar")
SHORT_CHAIN = (0.1, 0.5, 5)  # beta_min, beta_max, T: betas 0.1, 0.2, ..., 0.5
PROBLEM_SET_CHAIN = (PROBLEM_SET_BETA_MIN, PROBLEM_SET_BETA_MAX, PROBLEM_SET_T)
FLOAT32_RTOL = 1e-4  # a float32 cumulative product over 1000 steps drifts by up to about 6e-5


def schedule_tables(ddpm_schedules, beta_min, beta_max, T):
    """The student's tables for one chain as float64 arrays, or the Mistake that their dict breaks the contract."""
    result = call(ddpm_schedules, beta_min, beta_max, T)
    if result is None:
        raise Mistake("returned None", "ddpm_schedules returned None: is its `return` statement missing?",
                      SCHEDULE_SECTION)
    if not isinstance(result, dict):
        raise Mistake("not a dict", f"ddpm_schedules returned a {type(result).__name__}; return a dict with keys "
                      f"{', '.join(TABLES)}", SCHEDULE_SECTION)
    missing = [name for name in TABLES if name not in result]
    if missing:
        raise Mistake("missing tables", f"the dict has no key {', '.join(map(repr, missing))} (it has "
                      f"{', '.join(map(repr, result))})", SCHEDULE_SECTION)
    tables = {}
    for name in TABLES:
        if not isinstance(result[name], torch.Tensor):
            raise Mistake(f"{name} is not a torch tensor", f'schedule["{name}"] is a {type(result[name]).__name__}; '
                          "the sampler indexes it with a tensor of timesteps", SCHEDULE_SECTION)
        tables[name] = as_float_array(result[name], f'schedule["{name}"]', SCHEDULE_SECTION, shape=(T,))
    return tables


def check_tables(ddpm_schedules):
    """The result is a dict of 1-D tensors beta, alpha, alpha_bar of length T."""
    schedule_tables(ddpm_schedules, *SHORT_CHAIN)


def chain_context(chain):
    """The inputs of a chain, as a failed comparison names them."""
    return "beta_min = {}, beta_max = {}, T = {}".format(*chain)


def check_beta(ddpm_schedules):
    """beta[k] = beta_min + k (beta_max - beta_min) / (T - 1), k = 0..T-1."""
    beta_min, beta_max, T = SHORT_CHAIN
    got = schedule_tables(ddpm_schedules, *SHORT_CHAIN)["beta"]
    over_T = beta_min + np.arange(T) * (beta_max - beta_min) / T
    from_one = beta_min + np.arange(1, T + 1) * (beta_max - beta_min) / (T - 1)
    over_T_explanation = (
        f"beta[k] = beta_min + k (beta_max - beta_min) / T stops short of beta_max: with T = {T}, beta[T - 1] is "
        f"{over_T[-1]:.3g} instead of {beta_max}. The step is (beta_max - beta_min) / (T - 1), so that the last "
        "index k = T - 1 reaches beta_max")
    compare(got, reference_schedules(*SHORT_CHAIN)["beta"].numpy(), "beta", SCHEDULE_SECTION,
            context=chain_context(SHORT_CHAIN),
            variants=[(over_T, "beta step over T instead of T - 1", over_T_explanation, SCHEDULE_SECTION),
                      (from_one, "k counted from 1",
                       f"your beta[0] is beta_min + (beta_max - beta_min) / (T - 1) = {from_one[0]:.3g} (here "
                       f"beta_min = {beta_min}, beta_max = {beta_max}, T = {T}): the index runs k = 0..T-1, so "
                       "beta[0] = beta_min and beta[T - 1] = beta_max", NOTATION_SECTION)])


def check_alpha(ddpm_schedules):
    """alpha[k] = 1 - beta[k]."""
    got = schedule_tables(ddpm_schedules, *SHORT_CHAIN)["alpha"]
    compare(got, reference_schedules(*SHORT_CHAIN)["alpha"].numpy(), "alpha", SCHEDULE_SECTION,
            context=chain_context(SHORT_CHAIN))


def check_alpha_bar(ddpm_schedules):
    """alpha_bar[k] = prod of alpha[i] for i <= k."""
    got = schedule_tables(ddpm_schedules, *SHORT_CHAIN)["alpha_bar"]
    reference = reference_schedules(*SHORT_CHAIN)
    shifted = np.concatenate([[1.0], reference["alpha_bar"].numpy()[:-1]])
    logarithm = np.log(reference["alpha_bar"].numpy())
    compare(got, reference["alpha_bar"].numpy(), "alpha_bar", SCHEDULE_SECTION, context=chain_context(SHORT_CHAIN),
            variants=[(shifted, "alpha_bar shifted by one step",
                       f"your alpha_bar[k] is the product of alpha[i] over i < k, so alpha_bar[0] = 1. With the index "
                       "k = 0..T-1 the latent at index k has been noised by the steps at indices 0..k (the book's "
                       "steps 1..k + 1): alpha_bar[k] = prod of alpha[i] for i <= k, and alpha_bar[0] = alpha[0] "
                       f"(here {reference['alpha'][0].item():.3g}, for betas {SHORT_CHAIN[0]:g}, ..., "
                       f"{SHORT_CHAIN[1]:g})", NOTATION_SECTION),
                      (logarithm, "alpha_bar left as a logarithm",
                       "your alpha_bar is the sum of log alpha[i], which is log alpha_bar: take its exp (or use "
                       "torch.cumprod of alpha)", NOTATION_SECTION)])


def check_problem_set_chain(ddpm_schedules):
    """The problem set's chain (float32 accepted)."""
    got = schedule_tables(ddpm_schedules, *PROBLEM_SET_CHAIN)
    reference = reference_schedules(*PROBLEM_SET_CHAIN)
    for name in TABLES:
        compare(got[name], reference[name].numpy(), name, SCHEDULE_SECTION, rtol=FLOAT32_RTOL,
                context=chain_context(PROBLEM_SET_CHAIN))


SCHEDULE_CHECKS = (
    ("returns a dict of 1-D tensors beta, alpha, alpha_bar of length T", check_tables),
    ("beta[k] = beta_min + k (beta_max - beta_min) / (T - 1)", check_beta),
    ("alpha[k] = 1 - beta[k]", check_alpha),
    ("alpha_bar[k] = prod of alpha[i] for i <= k", check_alpha_bar),
    (f"the problem set's chain, T = {PROBLEM_SET_CHAIN[2]}", check_problem_set_chain),
)


def forward_inputs():
    """x0 (a batch of 2 x 3 'images', mean 1 so that a swapped coefficient shows), t, noise and the short chain's
    alpha_bar, whose levels 0.9 ... 0.15 keep x and sqrt(x) far apart."""
    generator = torch.Generator().manual_seed(0)
    x0 = 1 + torch.randn(6, 1, 2, 3, generator=generator, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 4, 2])
    return x0, t, noise, reference_schedules(*SHORT_CHAIN)["alpha_bar"]


# The classic mistakes in the coefficients of q(x_t | x_0), as (name, explanation, signal(level), spread(level)) with
# level = alpha_bar[t], for tensors and arrays alike: Problem 1b's forward and the x_t of Problem 1d's loss.
COEFFICIENT_MISTAKES = (
    ("missing square roots in q(x_t | x_0)",
     "your x = alpha_bar[t] x0 + (1 - alpha_bar[t]) noise: the draw at index t has mean sqrt(alpha_bar[t]) x0 "
     "and variance 1 - alpha_bar[t], so x = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise",
     lambda level: level, lambda level: 1 - level),
    ("missing square root on x0",
     "your coefficient of x0 is alpha_bar[t]; the draw at index t has mean sqrt(alpha_bar[t]) x0",
     lambda level: level, lambda level: (1 - level) ** 0.5),
    ("missing square root on the noise",
     "your coefficient of the noise is the variance 1 - alpha_bar[t]; scale the noise by the standard deviation "
     "sqrt(1 - alpha_bar[t])", lambda level: level ** 0.5, lambda level: 1 - level),
    ("signal and noise coefficients swapped",
     "your x = sqrt(1 - alpha_bar[t]) x0 + sqrt(alpha_bar[t]) noise: the signal keeps sqrt(alpha_bar[t]), which "
     "is near 1 for the first steps, and the noise gets sqrt(1 - alpha_bar[t])",
     lambda level: (1 - level) ** 0.5, lambda level: level ** 0.5),
)
INDEXED_EARLY = ("alpha_bar indexed at t - 1", "your draw uses alpha_bar[t - 1]; t is already the array index "
                 "k = 0..T-1 of step k + 1 (t = 0 is noised once), so its level is alpha_bar[t]")


def forward_variants(x0, t, noise, alpha_bar):
    """What each classic mistake of q(x_t | x_0) returns, as (values, name, explanation, section)."""
    def at(index):
        return alpha_bar[index].reshape(-1, 1, 1, 1)

    level = at(t)
    variants = [
        *[(signal(level) * x0 + spread(level) * noise, name, explanation)
          for name, explanation, signal, spread in COEFFICIENT_MISTAKES],
        *[(closed_forms.forward_sample(x0, noise, level_before), *INDEXED_EARLY)
          for level_before in (at(t - 1), at((t - 1).clamp(min=0)),  # wrapped to the last entry, or held at 0
                               torch.where(t == 0, 1.0, at((t - 1).clamp(min=0)).flatten()).reshape(-1, 1, 1, 1))],
        (closed_forms.forward_sample(x0, noise, at(t[:1])), "one timestep for the whole batch",
         "your draw uses alpha_bar[t[0]] for every sample; each sample has its own timestep, so index alpha_bar with "
         "the whole tensor t and reshape the result to (N, 1, ..., 1)"),
    ]
    return [(values.numpy(), name, explanation, MARGINAL_SECTION) for values, name, explanation in variants]


RESHAPE_HINT = ("alpha_bar[t] has shape (N,); reshape it to (N, 1, ..., 1), with one 1 per dimension of a sample, "
                "so that it multiplies each sample of x0 whatever its shape: "
                "alpha_bar[t].reshape(-1, *[1] * (x0.ndim - 1))")


def forward_result(forward, x0, t, noise, alpha_bar):
    """The student's x_t: a tensor of x0's shape and dtype; a failed broadcast of alpha_bar[t] against x0 gets a hint
    after their traceback."""
    with hint("must match the size of tensor", RESHAPE_HINT), \
            hint("out of bounds", "t holds array indices k in 0..T-1 (the book's step k + 1) already: index "
                 "alpha_bar[t] as it is"):
        result = call(forward, x0, t, noise, alpha_bar)
    if isinstance(result, torch.Tensor) and result.shape != x0.shape:
        raise Mistake("x_t has the wrong shape", f"for x0 of shape {tuple(x0.shape)}, x_t has shape "
                      f"{tuple(result.shape)}: {RESHAPE_HINT}", MARGINAL_SECTION)
    values = as_float_array(result, "x_t", MARGINAL_SECTION, shape=x0.shape)
    if not isinstance(result, torch.Tensor):
        raise Mistake("x_t is not a torch tensor", f"x_t is a {type(result).__name__}; the training loop passes it "
                      "to the network, so return a tensor like x0", MARGINAL_SECTION)
    check_dtype(result, x0, alpha_bar, "x_t is")
    return values


def check_dtype(x_t, x0, alpha_bar, what, otherwise="return x_t in the dtype x0 comes in"):
    """Refuse an x_t (``what``: "x_t is", or where it was seen) in another dtype than x0's, naming alpha_bar's float64
    when it came from there, else advising ``otherwise``."""
    if x_t.dtype != x0.dtype:
        advice = ("alpha_bar is float64, and a float32 network cannot take float64 input; cast alpha_bar[t] to x0's "
                  "dtype, such as alpha_bar[t].to(x0.dtype)" if x_t.dtype == alpha_bar.dtype else otherwise)
        raise Mistake("x_t not in x0's dtype", f"{what} {x_t.dtype} for x0 in {x0.dtype}: {advice}",
                      MARGINAL_SECTION)


def check_forward_shape(forward):
    """x_t has the shape of x0 (alpha_bar[t] broadcast over each sample), for images and for 1-D and 2-D samples."""
    x0, t, noise, alpha_bar = forward_inputs()
    forward_result(forward, x0, t, noise, alpha_bar)
    for sample_shape in ((-1,), (2, 3)):  # 1-D samples; 2-D ones, such as channels by length
        forward_result(forward, x0.reshape(len(x0), *sample_shape), t, noise.reshape(len(x0), *sample_shape), alpha_bar)


def check_forward_uses_noise(forward):
    """The noise passed in is the noise used: two calls with the same arguments agree."""
    inputs = forward_inputs()
    if not np.array_equal(forward_result(forward, *inputs), forward_result(forward, *inputs), equal_nan=True):
        raise Mistake("noise argument ignored", "two calls with the same x0, t and noise returned different x_t: "
                      "use the noise passed in rather than drawing your own", MARGINAL_SECTION)


def check_forward_formula(forward):
    """x = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise, t the array index."""
    x0, t, noise, alpha_bar = forward_inputs()
    expected = closed_forms.forward_sample(x0, noise, alpha_bar[t].reshape(-1, 1, 1, 1)).numpy()
    compare(forward_result(forward, x0, t, noise, alpha_bar), expected, "x_t", MARGINAL_SECTION,
            variants=forward_variants(x0, t, noise, alpha_bar), context=f"t = {t.tolist()}, alpha_bar = "
            f"{[round(value, 4) for value in alpha_bar.tolist()]}")


def check_forward_mnist_batch(forward):
    """A float32 batch of 28 x 28 images on the problem set's chain, t from 0 to T - 1."""
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 28, 28, generator=generator, dtype=torch.float32) * 2 - 1  # whatever their default dtype
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    t = torch.tensor([0, 10, 500, 999])
    alpha_bar = reference_schedules(*PROBLEM_SET_CHAIN)["alpha_bar"]
    expected = closed_forms.forward_sample(x0.double(), noise.double(), alpha_bar[t].reshape(-1, 1, 1, 1)).numpy()
    compare(forward_result(forward, x0, t, noise, alpha_bar), expected, "x_t", MARGINAL_SECTION, rtol=FLOAT32_RTOL,
            atol=1e-5, context=f"float32 x0 of shape {tuple(x0.shape)}, T = {len(alpha_bar)}, t = {t.tolist()}")


FORWARD_CHECKS = (
    ("returns a tensor x_t of the shape and dtype of x0, whatever a sample's shape", check_forward_shape),
    ("uses the noise it is given", check_forward_uses_noise),
    ("x = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise", check_forward_formula),
    ("a float32 MNIST batch on the problem set's chain", check_forward_mnist_batch),
)
