"""Checks of Problem 1d's ``loss``, Algorithm 1 of Ho et al. (2020), through a stand-in network that records what it
is given and returns what the loss must be scored against.

The loss draws its own t and noise, so the checks recover the noise from the x_t the network receives,
noise = (x_t - sqrt(alpha_bar[t]) x0) / sqrt(1 - alpha_bar[t]), and test that it is standard normal, fresh for every
entry and independent of x0; an x_t that is such a draw by another formula is named by that formula.
"""

import numpy as np
import scipy.stats
import torch

from dgm.check.sampler_checks import EPSILON_SECTION, GENERATOR_SEEDS, TOLERANCE_IN_STANDARD_ERRORS
from dgm.check.schedule_checks import (COEFFICIENT_MISTAKES, INDEXED_EARLY, MARGINAL_SECTION, NOTATION_SECTION,
                                      RESHAPE_HINT, SHORT_CHAIN, check_dtype)
from dgm.check.verdicts import Mistake, Stopped, as_float_array, call, compare, hint
from dgm.schedules import ddpm_schedules as reference_schedules

EXERCISE_SECTION = "reverse-process-exercises"  # Problem 1d's contract: t and the noise drawn from generator
LOSS_N, LOSS_SHAPE = 4000, (2, 3)  # 24,000 entries: a mean or a correlation with x0 off by 0.04 is 6 standard errors
UNIFORM_P_VALUE = 1e-6  # a chi-square p-value below it: t is not uniform over 0..T-1


class LossNetwork:
    """A stand-in eps_model with one weight, ``scale``: returns scale times standard normal draws of its own generator,
    recording (x, t, prediction), so that the loss's value and its gradient can be checked."""

    def __init__(self, seed=2**31 - 1):  # a seed the loss's generators never get
        self.generator = torch.Generator().manual_seed(seed)
        self.scale = torch.ones((), dtype=torch.float64, requires_grad=True)
        self.calls = []

    def __call__(self, x, t):
        if not isinstance(x, torch.Tensor):
            raise Stopped(Mistake("eps_model given x that is not a tensor", f"eps_model got x as a "
                                  f"{type(x).__module__}.{type(x).__name__}: the network takes torch tensors",
                                  EPSILON_SECTION))
        dtype = x.dtype if x.is_floating_point() else torch.float64
        prediction = self.scale.to(dtype) * torch.randn(x.shape, generator=self.generator, dtype=dtype)
        self.calls.append((x.detach().clone(), t.detach().clone() if isinstance(t, torch.Tensor) else t,
                           prediction.detach().clone()))
        return prediction


def loss_inputs(dtype=torch.float32):
    """x0 (mean 1, so that a coefficient on the wrong term shows) and the short chain's alpha_bar, 0.9 ... 0.15."""
    generator = torch.Generator().manual_seed(0)
    x0 = 1 + torch.randn(LOSS_N, *LOSS_SHAPE, generator=generator, dtype=torch.float64)
    return x0.to(dtype), reference_schedules(*SHORT_CHAIN)["alpha_bar"]


def probe(loss, seed=0):
    """The student's loss on a float32 batch: (network, the result, x0, alpha_bar)."""
    network, (x0, alpha_bar) = LossNetwork(), loss_inputs()

    def eps_model(x, t):  # named as the student calls it, so that their TypeError reads right
        return network(x, t)

    eps_model.__qualname__ = "eps_model"

    with hint("out of bounds", "t holds array indices 0..T-1 (the book's steps 1..T): draw them with "
              "torch.randint(0, T, (N,)), whose upper bound is left out, and index alpha_bar[t] as it is "
              "(not t + 1)"), hint("eps_model()", "the network is called as eps_model(x, t), with two positional "
                                   "arguments"):
        result = call(loss, eps_model, x0, alpha_bar, generator=torch.Generator().manual_seed(seed))
    return network, result, x0, alpha_bar


def the_call(network):
    """The one (x, t, prediction) the network was given, or the Mistake of calling it otherwise."""
    if not network.calls:
        raise Mistake("eps_model never called", "the loss never called eps_model: it is the network's error on x_t, "
                      "eps_model(x_t, t), that training reduces", EPSILON_SECTION)
    if len(network.calls) > 1:
        raise Mistake("eps_model called more than once", f"the loss called eps_model {len(network.calls)} times: call "
                      f"it once, on the whole batch x_t of shape (N, ...) with t of shape (N,)", EPSILON_SECTION)
    return network.calls[0]


def check_loss_returns(loss):
    """A 0-d tensor that a gradient step can follow back to the network."""
    network, result, _, _ = probe(loss)
    x, _, _ = the_call(network)
    if result is None or isinstance(result, tuple):
        as_float_array(result, "the loss", EPSILON_SECTION)
    if not isinstance(result, torch.Tensor):
        raise Mistake("the loss is not a tensor", f"loss returned a {type(result).__name__}: .item(), float() or NumPy "
                      "cut it from the graph, so loss.backward() cannot train the network; return the tensor",
                      EPSILON_SECTION)
    if result.shape != ():
        per_sample = result.shape == (len(x),)
        raise Mistake("a loss per sample" if per_sample else "the loss is not 0-d",
                      f"the loss has shape {tuple(result.shape)}; return one number, a 0-d tensor: the mean over the "
                      "batch and every entry (.mean() with no dim)", EPSILON_SECTION)
    if not bool(torch.isfinite(result.detach())):
        raise Mistake("the loss is not finite", f"the loss is {float(result.detach())}: a square root of a negative "
                      "number, a division by zero or a NaN in the arithmetic", EPSILON_SECTION)
    if not result.requires_grad:
        raise Mistake("no gradient reaches the network", "the loss does not depend on eps_model's output through "
                      "torch's graph (computed under torch.no_grad(), from a .detach()ed prediction, or in NumPy): "
                      "compute it from eps_model(x_t, t) with torch operations", EPSILON_SECTION)
    result.backward()
    if network.scale.grad is None or not torch.isfinite(network.scale.grad) or network.scale.grad == 0:
        raise Mistake("no gradient reaches the network", f"the gradient of the loss with respect to the network's "
                      f"weight is {network.scale.grad}: compute the loss from eps_model(x_t, t)", EPSILON_SECTION)


def check_loss_timesteps(loss):
    """t is a long tensor of shape (N,), one index per sample, uniform over 0..T-1."""
    network, _, x0, alpha_bar = probe(loss)
    _, t, _ = the_call(network)
    T, N = len(alpha_bar), len(x0)
    if not isinstance(t, torch.Tensor) or t.dtype != torch.long or t.shape != (N,):
        got = f"a {t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else \
            f"a {type(t).__name__}" + (f" of {len(t)} items" if hasattr(t, "__len__") else f", {t!r}")
        raise Mistake("t is not a long tensor of shape (N,)", f"eps_model got t as {got}; draw one index per sample, "
                      "torch.randint(0, T, (N,), generator=generator)", EPSILON_SECTION)
    counts = np.bincount(t.numpy(), minlength=T) if t.min() >= 0 and t.max() < T else None
    if counts is None:
        raise Mistake("t outside 0..T-1", f"eps_model got t from {int(t.min())} to {int(t.max())} on a chain of "
                      f"T = {T}: t is the array index 0..T-1 of the book's step 1..T", NOTATION_SECTION)
    if np.count_nonzero(counts) == 1:
        raise Mistake("one timestep for the whole batch", f"every sample got t = {int(t[0])}: draw one t per "
                      "sample, torch.randint(0, T, (N,), generator=generator), so that each batch trains every "
                      "noise level", EPSILON_SECTION)
    if counts[0] == 0:
        raise Mistake("t never 0", f"no sample got t = 0 (counts of t = 0..{T - 1}: {counts.tolist()}): the array "
                      "indices start at 0, the book's step 1; draw torch.randint(0, T, (N,))", NOTATION_SECTION)
    if counts[-1] == 0:
        raise Mistake("t never T - 1", f"no sample got t = T - 1 = {T - 1} (counts of t = 0..{T - 1}: "
                      f"{counts.tolist()}): torch.randint leaves out its upper bound, so torch.randint(0, T, (N,)) "
                      "reaches T - 1", NOTATION_SECTION)
    if scipy.stats.chisquare(counts).pvalue < UNIFORM_P_VALUE:
        raise Mistake("t not uniform over 0..T-1", f"the counts of t = 0..{T - 1} over {N} samples are "
                      f"{counts.tolist()}: Algorithm 1 draws t uniformly, torch.randint(0, T, (N,))", EPSILON_SECTION)


def implied_noise(x, t, x0, levels, signal=np.sqrt, spread=lambda level: np.sqrt(1 - level), shift=0, wrap=False):
    """The noise that makes x = signal(level) x0 + spread(level) noise, with level = levels[t + shift] (levels is
    alpha_bar, or a table a mistake puts in its place), an index beyond the ends held there or, with ``wrap``, read
    as Python reads alpha_bar[-1]."""
    levels = np.asarray(levels, dtype=np.float64)
    index = t.numpy() + shift
    index = index % len(levels) if wrap else np.clip(index, 0, len(levels) - 1)
    level = levels[index].reshape(-1, *[1] * (x0.ndim - 1))
    return (x.double().numpy() - signal(level) * x0.double().numpy()) / spread(level)


def is_fresh_normal(noise, x0):
    """Whether ``noise`` looks like independent standard normal draws, one per entry, unrelated to x0."""
    count, tolerance = noise.size, TOLERANCE_IN_STANDARD_ERRORS
    flat, signal = noise.reshape(-1), x0.double().numpy().reshape(-1)
    return bool(np.isfinite(flat).all() and abs(flat.mean()) < tolerance / np.sqrt(count)
                and abs(flat.std() - 1) < tolerance / np.sqrt(2 * count)
                and abs(np.corrcoef(flat, signal)[0, 1]) < tolerance / np.sqrt(count))


def input_variants(alpha_bar):
    """x_t by a classic mistake of q(x_t | x_0): (name, explanation, table of levels, signal, spread, index shift,
    whether the index wraps), the coefficient mistakes being Problem 1b's."""
    root, spread = np.sqrt, (lambda level: np.sqrt(1 - level))
    alpha = alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])
    return [
        *[(name, explanation, alpha_bar, signal, spread_of) for name, explanation, signal, spread_of
          in COEFFICIENT_MISTAKES],
        (*INDEXED_EARLY, alpha_bar, root, spread, -1, True),  # at t = 0, Python's last entry
        (*INDEXED_EARLY, alpha_bar, root, spread, -1),  # held at the first entry
        ("alpha in place of alpha_bar", "your draw uses alpha[t] = 1 - beta[t], one step's share of the signal; "
         "q(x_t | x_0) jumps all t + 1 steps at once, with alpha_bar[t], the product of the alphas", alpha, root,
         spread, 0)]


def check_loss_input(loss):
    """eps_model gets x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise in x0's dtype, the noise fresh
    standard normal draws."""
    network, _, x0, alpha_bar = probe(loss)
    x, t, _ = the_call(network)
    if x.shape != x0.shape:
        raise Mistake("x_t has the wrong shape", f"eps_model got x of shape {tuple(x.shape)} for x0 of shape "
                      f"{tuple(x0.shape)}: {RESHAPE_HINT}", MARGINAL_SECTION)
    check_dtype(x, x0, alpha_bar, "eps_model got x in", otherwise="keep x_t in the dtype x0 comes in")
    if torch.equal(x, x0):
        raise Mistake("eps_model given x0, not x_t", "the network got the clean x0; it learns to predict the noise "
                      "of x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise, so give it x_t", EPSILON_SECTION)
    if not bool(torch.isfinite(x).all()):
        raise Mistake("x_t not finite", "eps_model got x holding NaN or infinity: a square root of a negative number "
                      "(sqrt(alpha_bar - 1) for sqrt(1 - alpha_bar)?) or a division by zero", MARGINAL_SECTION)
    table = alpha_bar.numpy()
    noise = implied_noise(x, t, x0, table).reshape(len(x0), -1)
    if np.allclose(noise.std(axis=0), 0, atol=1e-5):
        raise Mistake("the same noise for every sample", "every sample of the batch got the same noise: draw it of "
                      "x0's shape, torch.randn(x0.shape, generator=generator)", EPSILON_SECTION)
    if np.allclose(noise.std(axis=1), 0, atol=1e-5):
        raise Mistake("the same noise for every entry of a sample", "each sample's noise is one number in all its "
                      "entries: draw it of x0's shape, torch.randn(x0.shape, generator=generator)", EPSILON_SECTION)
    if is_fresh_normal(noise, x0):  # the right formula: is the noise fresh in every entry?
        correlation = np.abs(np.corrcoef(noise, rowvar=False) - np.eye(noise.shape[1]))
        if correlation.max() > TOLERANCE_IN_STANDARD_ERRORS / np.sqrt(len(noise)):
            i, j = np.unravel_index(np.argmax(correlation), correlation.shape)
            raise Mistake("noise shared between entries", f"entries {i} and {j} of each sample (flattened) got "
                          f"noise with correlation {np.corrcoef(noise[:, i], noise[:, j])[0, 1]:.3g}, where fresh "
                          "noise has 0: draw one number per entry, torch.randn(x0.shape, generator=generator), not "
                          "one shared over channels or pixels", EPSILON_SECTION)
        return
    for name, explanation, levels, *form in input_variants(table):
        if is_fresh_normal(implied_noise(x, t, x0, levels, *form), x0):
            raise Mistake(name, explanation, MARGINAL_SECTION)
    flat = noise.reshape(-1)
    if flat.min() >= -1e-4 and flat.max() <= 1 + 1e-4:
        raise Mistake("uniform noise", f"the noise that made x_t lies in [0, 1] (mean {flat.mean():.3g}): torch.rand "
                      "draws uniformly; Algorithm 1's noise is standard normal, torch.randn", EPSILON_SECTION)
    raise Mistake("x_t is not a draw of q(x_t | x_0)", f"the noise that eps_model's x implies at the t it is given, "
                  f"(x - sqrt(alpha_bar[t]) x0) / sqrt(1 - alpha_bar[t]), has mean {flat.mean():.3g}, standard "
                  f"deviation {flat.std():.3g} and correlation "
                  f"{np.corrcoef(flat, x0.double().numpy().reshape(-1))[0, 1]:.3g} with x0, where standard normal "
                  "noise has 0, 1 and 0: is x_t made with the t that eps_model gets, and the formula of Problem 1b?",
                  MARGINAL_SECTION)


def check_loss_value(loss):
    """The loss is the mean over the batch and every entry of (noise - eps_model(x_t, t))^2."""
    network, result, x0, alpha_bar = probe(loss)
    x, t, prediction = the_call(network)
    got = as_float_array(result, "the loss", EPSILON_SECTION).reshape(())
    noise = implied_noise(x, t, x0, alpha_bar.numpy())
    prediction, clean = prediction.double().numpy(), x0.double().numpy()
    level = alpha_bar.numpy()[t.numpy()].reshape(-1, *[1] * (x0.ndim - 1))
    squares = (noise - prediction) ** 2
    per_sample, entries = squares.reshape(len(x0), -1).mean(axis=1), squares[0].size
    p2 = 1 - level.reshape(-1)  # P2 with c = gamma = 1 (reverse-process-epsilon), and scaled to mean 1 over the steps
    weighted = "your loss weights each sample's squared error by its step; the contract is Algorithm 1's plain mean " \
               "(the library's --loss-weighting uniform), whatever the presets train with"
    velocity = np.sqrt(level) * noise - np.sqrt(1 - level) * clean
    compare(got, np.array(squares.mean()), "loss", EPSILON_SECTION, rtol=1e-4, context="the mean of (noise - "
            "eps_model(x_t, t))^2, with the noise that made x_t and eps_model's output for that x_t", variants=[
                (np.array(squares.mean() * entries), "summed over each sample's entries",
                 "your loss sums each sample's squared errors (Ho et al.'s ||.||^2); the contract, like the library's "
                 f"F.mse_loss, takes the mean over every entry too, {entries} times less", EPSILON_SECTION),
                (np.array(squares.sum()), "summed, not averaged", "your loss is the sum over the batch and the "
                 "entries; take the mean, so that the loss and its gradient do not grow with the batch",
                 EPSILON_SECTION),
                (np.array(np.sqrt(squares.mean())), "the root of the mean square", "your loss is the root of the mean "
                 "square; Algorithm 1 descends on the mean square itself", EPSILON_SECTION),
                (np.array((noise - prediction).mean() ** 2), "the square of the mean error", "your loss squares the "
                 "mean of the errors, which cancel; square each entry's error, then take the mean", EPSILON_SECTION),
                (np.array(np.abs(noise - prediction).mean()), "absolute error, not squared", "your loss is the mean "
                 "absolute error; Algorithm 1's is the mean squared error", EPSILON_SECTION),
                (np.array((p2 * per_sample).mean()), "a weighted loss", weighted, EPSILON_SECTION),
                (np.array((p2 / (1 - alpha_bar.numpy()).mean() * per_sample).mean()), "a weighted loss", weighted,
                 EPSILON_SECTION),
                (np.array(((clean - prediction) ** 2).mean()), "scored against x0, not the noise",
                 "your loss compares eps_model's output with x0; eps_model predicts the noise that made x_t",
                 EPSILON_SECTION),
                (np.array(((x.double().numpy() - prediction) ** 2).mean()), "scored against x_t, not the noise",
                 "your loss compares eps_model's output with x_t; eps_model predicts the noise that made x_t",
                 EPSILON_SECTION),
                (np.array(((velocity - prediction) ** 2).mean()), "scored against v, not the noise",
                 "your loss compares eps_model's output with v = sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) x0, "
                 "the target of v-prediction; Algorithm 1's eps_model predicts the noise", EPSILON_SECTION)])


def check_loss_generator(loss):
    """t and the noise come from ``generator``: generators seeded alike give the same t and noise, seeded otherwise
    other t and other noise."""
    seed, other_seed = GENERATOR_SEEDS
    draws = {}
    for name, chosen in (("first", seed), ("again", seed), ("other", other_seed)):
        network, _, x0, alpha_bar = probe(loss, seed=chosen)
        x, t, _ = the_call(network)
        draws[name] = t, implied_noise(x, t, x0, alpha_bar.numpy())
    (t, noise), (t_again, noise_again), (t_other, noise_other) = draws["first"], draws["again"], draws["other"]
    if not torch.equal(t, t_again):
        raise Mistake("t not drawn from generator", "two calls with generators seeded alike drew different t: draw "
                      "t = torch.randint(0, T, (N,), generator=generator)", EXERCISE_SECTION)
    if not np.allclose(noise, noise_again, atol=1e-5):
        raise Mistake("noise not drawn from generator", "two calls with generators seeded alike drew different "
                      "noise: draw it with torch.randn(x0.shape, generator=generator, dtype=x0.dtype) "
                      "(torch.randn_like(x0) without generator= draws from torch's global generator)",
                      EXERCISE_SECTION)
    for what, same, draw in (("t", torch.equal(t, t_other), "t = torch.randint(0, T, (N,), generator=generator)"),
                             ("noise", np.allclose(noise, noise_other, atol=1e-5),
                              "the noise with torch.randn(x0.shape, generator=generator, dtype=x0.dtype)")):
        if same:
            raise Mistake(f"{what} not drawn from generator", f"generators seeded {seed} and {other_seed} gave the "
                          f"same {what}, so every training step would too: the loss fixes it (torch.manual_seed, a "
                          f"generator of its own, or no draw at all) instead of drawing {draw}", EXERCISE_SECTION)


LOSS_CHECKS = (
    ("returns a 0-d tensor that a gradient follows back to eps_model", check_loss_returns),
    ("t: a long tensor of shape (N,), uniform over 0..T-1", check_loss_timesteps),
    ("eps_model gets x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise, noise ~ N(0, I)", check_loss_input),
    ("the loss is the mean of (noise - eps_model(x_t, t))^2", check_loss_value),
    ("draws t and the noise from generator", check_loss_generator),
)
