"""Checks of Problem 3a (``marginal_pdf``) and Problem 3b (``score``) against ``dgm.mixture``'s exact mixture.

Each classic mistake is modelled as the mixture it wrongly computes (component means m_i and variances v_i at
time t), whose density and score ``dgm.mixture.GaussianMixture1D`` evaluates; a wrong answer that matches one is named.
"""

import numpy as np
import scipy.optimize
import scipy.special

from dgm import closed_forms
from dgm.check.verdicts import Mistake, as_float_array, call, close, compare, hint
from dgm.mixture import GaussianMixture1D, toy_mixture
from dgm.sde import PROBLEM_3_BETA_MAX, PROBLEM_3_BETA_MIN, VPSDE

KERNEL_SECTION = "continuous-time-kernel"
MARGINAL_SECTION = "continuous-time-marginal"
SCORE_SECTION = "continuous-time-score"
BETA_RANGE = (PROBLEM_3_BETA_MIN, PROBLEM_3_BETA_MAX)
TIMES = (0.0, 0.05, 0.2, 0.5, 1.0)  # t = 1: alpha_bar(1) = 4.3e-5, where Problem 3c's reverse SDE starts
GRID = np.linspace(-5.0, 5.0, 201)
FIT_RTOL = 1e-4  # a result this close to the exact one at another B is that one, up to the student's rounding
SAME_B_RTOL = 1e-3  # a fitted B this close to the true one is rounding (float32), not a wrong integral
GRID_2D = GRID.reshape(3, 67)  # a heat map's grid, as Problem 3c evaluates it
TAILS = np.array([-100.0, -40.0, 40.0, 100.0])
# A case unlike the handout's: three components, another chain and another time.
OTHER_CASE = {"weights": (0.2, 0.5, 0.3), "means": (-3.0, 0.5, 4.0), "stds": (0.4, 1.5, 0.7), "t": 0.25,
              "beta_min": 0.5, "beta_max": 10.0}


def problem_mixture():
    """The handout's p_0 as (weights, means, stds) arrays: stds are standard deviations."""
    mixture = toy_mixture()
    return mixture.weights.copy(), mixture.means.copy(), mixture.stds.copy()


def mistaken_mixtures(weights, means, stds, t, beta_min, beta_max):
    """(the mixture a mistake computes for p_t, its name, explanation and section) for each classic mistake."""
    log_level = closed_forms.vp_log_alpha_bar(t, beta_min, beta_max)  # log alpha_bar(t) = -B(t)
    without_half = -(beta_min * t + (beta_max - beta_min) * t**2)  # B(t) with t^2 where int_0^t beta has t^2 / 2

    def diffused(level, component_stds=stds, mean_level=None):
        """p_0 under the kernel at log alpha_bar = ``level``, its means decayed at ``mean_level`` if given."""
        mean = closed_forms.diffused_mean(means, level if mean_level is None else mean_level)
        return GaussianMixture1D(weights, mean, np.sqrt(closed_forms.diffused_variance(component_stds, level)))

    def with_stds(component_stds):
        """The right component means at t, with these standard deviations."""
        return GaussianMixture1D(weights, closed_forms.diffused_mean(means, log_level), component_stds)

    return [
        (diffused(log_level, component_stds=np.sqrt(stds)), "mixture stds used as variances",
         "each component's variance uses s_i where it needs s_i^2: the stds are standard deviations, "
         "p_0 = sum_i pi_i N(mu_i, s_i^2), and a component's variance at time t is s_i^2 e^(-B) + 1 - e^(-B)",
         MARGINAL_SECTION),
        (diffused(log_level, mean_level=2 * log_level), "mean decaying as exp(-B) instead of exp(-B/2)",
         "the component means are mu_i e^(-B(t)); the kernel's mean is x_0 sqrt(alpha_bar(t)) = x_0 e^(-B(t)/2), "
         "with B(t) = int_0^t beta", KERNEL_SECTION),
        (diffused(without_half), "B(t) without the 1/2",
         "your B(t) = beta_min t + (beta_max - beta_min) t^2; int_0^t beta(u) du = beta_min t + "
         "(beta_max - beta_min) t^2 / 2", KERNEL_SECTION),
        (with_stds(np.sqrt(stds**2 - np.expm1(log_level))), "component variance not scaled",  # s_i^2 + 1 - alpha_bar
         "each component's variance is s_i^2 + 1 - e^(-B); the data's part shrinks with the signal: "
         "s_i^2 e^(-B) + 1 - e^(-B)", MARGINAL_SECTION),
        (with_stds(closed_forms.diffused_variance(stds, log_level)), "variance used as the standard deviation",
         "a component's density is N(x; m_i, v_i) = exp(-(x - m_i)^2 / (2 v_i)) / sqrt(2 pi v_i) with v_i its "
         "variance; yours squares v_i as if it were the standard deviation", MARGINAL_SECTION),
    ]


def exact(method, case, x):
    """The library's p_t(x) (method "pdf") or score (method "score") for one case."""
    weights, means, stds, t, beta_min, beta_max = case
    sde, p0 = VPSDE(beta_min, beta_max), GaussianMixture1D(weights, means, stds)
    return (sde.marginal_pdf if method == "pdf" else sde.score)(p0, x, t)


def cases():
    """(weights, means, stds, t, beta_min, beta_max) for the handout's mixture at several times, and another one."""
    weights, means, stds = problem_mixture()
    other = tuple(np.array(OTHER_CASE[name]) for name in ("weights", "means", "stds"))
    return [(weights, means, stds, t, *BETA_RANGE) for t in TIMES] + [
        (*other, OTHER_CASE["t"], OTHER_CASE["beta_min"], OTHER_CASE["beta_max"])]


def student_values(function, x, case, what, section):
    weights, means, stds, t, beta_min, beta_max = case
    with hint("could not be broadcast", f"x may have any shape (this call's is {x.shape}): put the components on a "
              "new last axis with x[..., None], which works for every shape, not x[:, None]"):
        result = call(function, x.copy(), float(t), weights.copy(), means.copy(), stds.copy(), beta_min, beta_max)
    return as_float_array(result, what, section, shape=x.shape)


def describe(case):
    weights, means, stds, t, beta_min, beta_max = case
    return (f"t = {t}, weights {weights.tolist()}, means {means.tolist()}, stds {stds.tolist()}, "
            f"beta_min = {beta_min}, beta_max = {beta_max}")


def score_variants(case, x):
    """The scores of two mistakes in mixing the component scores, as compare's variants."""
    weights, means, stds, t, beta_min, beta_max = case
    level = closed_forms.vp_log_alpha_bar(t, beta_min, beta_max)
    mean = closed_forms.diffused_mean(means[:, None], level)
    variance = closed_forms.diffused_variance(stds[:, None], level)
    component_scores = closed_forms.normal_score(x.ravel()[None], mean, variance)
    log_pdfs = closed_forms.normal_log_pdf(x.ravel()[None], mean, variance)
    responsibilities = scipy.special.softmax(np.log(weights)[:, None] + log_pdfs, axis=0)

    def mixed_by(logits, axis=0):
        """The score with responsibilities softmax(logits) over the components (axis=None: over every point too)."""
        return (scipy.special.softmax(logits, axis=axis) * component_scores).sum(0).reshape(x.shape)

    return [
        (mixed_by(log_pdfs), "responsibilities without the weights",
         "your responsibilities are softmax_i(log N_i(x)); they are r_i(x) = pi_i N_i(x) / p_t(x) = "
         "softmax_i(log pi_i + log N_i(x)), the weights inside", SCORE_SECTION),
        (mixed_by(np.log(weights)[:, None] - (x.ravel()[None] - mean) ** 2 / (2 * variance)),
         "responsibilities without the normalising constant",
         "your log N_i(x) leaves out -log(2 pi v_i) / 2, which differs between components of different variance: "
         "log N_i(x) = -(x - m_i)^2 / (2 v_i) - log(2 pi v_i) / 2", SCORE_SECTION),
        ((weights[:, None] * component_scores).sum(0).reshape(x.shape), "prior weights instead of responsibilities",
         "your score weights each component's score by pi_i; grad log p_t = (sum_i pi_i grad N_i) / p_t weights it by "
         "the responsibility r_i(x) = pi_i N_i(x) / p_t(x), which depends on x", SCORE_SECTION),
        ((responsibilities * component_scores * np.sqrt(variance)).sum(0).reshape(x.shape),
         "divided by the std instead of the variance",
         "a component's score is (m_i - x) / v_i, with v_i its variance, not its standard deviation", SCORE_SECTION),
        ((weights[:, None] * np.exp(log_pdfs) * component_scores).sum(0).reshape(x.shape),
         "the gradient of p_t, not of log p_t", "your score is sum_i pi_i N_i(x) (m_i - x) / v_i = grad p_t; the score "
         "is grad log p_t = grad p_t / p_t, which divides by the density: the responsibilities sum to 1",
         SCORE_SECTION),
        (mixed_by(np.log(weights)[:, None] + log_pdfs, axis=None),
         "responsibilities normalised over every point",
         "your softmax normalises over the whole array, points and components together; the responsibilities of "
         "each x sum to 1 over the components alone (axis=-1 with x[..., None])", SCORE_SECTION),
    ]


def fitted_level_variant(got, method, case, x):
    """If ``got`` is the exact p_t (or its score) at another B than int_0^t beta, the variant that names that B."""
    weights, means, stds, t, beta_min, beta_max = case
    p0 = GaussianMixture1D(weights, means, stds)

    def misfit(B):
        return float(np.nanmax(np.abs(getattr(p0, method)(x, -B) - got)))

    B = -closed_forms.vp_log_alpha_bar(t, beta_min, beta_max)
    if not np.isfinite(got).all():
        return []
    candidates = np.linspace(0.0, 10 * beta_max, 2001)
    start = candidates[np.argmin([misfit(c) for c in candidates])]
    step = candidates[1]
    fitted = scipy.optimize.minimize_scalar(misfit, bounds=(max(start - step, 0.0), start + step), method="bounded",
                                            options={"xatol": 1e-12}).x
    if abs(fitted - B) <= SAME_B_RTOL * max(B, SAME_B_RTOL) or not close(got, getattr(p0, method)(x, -fitted),
                                                                         FIT_RTOL, 1e-9):
        return []  # the right B up to rounding (compare names too few correct digits), or no B fits
    chapter_B = -closed_forms.vp_log_alpha_bar(t, *BETA_RANGE)
    if (beta_min, beta_max) != BETA_RANGE and abs(fitted - chapter_B) <= SAME_B_RTOL * chapter_B:
        return [(got, "beta_min and beta_max ignored",
                 f"your result is the exact one for the handout's beta_min = {BETA_RANGE[0]:g} and beta_max = "
                 f"{BETA_RANGE[1]:g}, but this case passes beta_min = {beta_min:g} and beta_max = {beta_max:g}: "
                 "compute B(t) from the arguments", KERNEL_SECTION)]
    return [(got, "wrong alpha_bar(t) = exp(-B(t))",
             f"your result is the exact one at the noise level alpha_bar = {np.exp(-fitted):.6g} (B = {fitted:.6g}), "
             f"where t = {t} has alpha_bar(t) = exp(-B(t)) = {np.exp(-B):.6g}, B(t) = int_0^t beta(u) du = beta_min t "
             f"+ (beta_max - beta_min) t^2 / 2 = {B:.6g}: check your integral of beta and its exp", KERNEL_SECTION)]


def log_pdf_variant(expected):
    """The variant of a density returned as its logarithm (a log-sum-exp without its exp)."""
    with np.errstate(divide="ignore"):
        return [(np.log(expected), "log p_t(x) instead of p_t(x)", "your values are the logarithm of the density, "
                 "negative where p_t(x) < 1: a log-sum-exp needs its exp to give p_t(x) itself", MARGINAL_SECTION)]


def check_against_mixtures(function, method, what, section, x):
    """``function`` on every case against the exact p_t's ``method`` ("pdf" or "score"), naming a matching mistake."""
    for case in cases():
        expected = exact(method, case, x)
        got = student_values(function, x, case, what, section)
        variants = [(getattr(mixture, method)(x), name, explanation, mistake_section)
                    for mixture, name, explanation, mistake_section in mistaken_mixtures(*case)]
        if method == "score":
            variants += [(-expected, "the score's sign", "your score is -grad log p_t: the score points towards "
                          "higher density, sum_i r_i (m_i - x) / v_i", SCORE_SECTION)] + score_variants(case, x)
        else:
            variants += log_pdf_variant(expected)
        compare(got, expected, what, section, variants=variants, x=x, context=describe(case),
                more_variants=lambda: fitted_level_variant(got, method, case, x))


def check_shape(function, what, section):
    """An array of the shape of x, for a 1-D and a 2-D x, whose values on the 2-D grid are those of the same points
    given as 1-D (whether they are right is the next check's)."""
    case = cases()[1]
    flat = student_values(function, GRID, case, what, section).reshape(GRID_2D.shape)
    grid = student_values(function, GRID_2D, case, what, section)
    same = np.isclose(grid, flat, rtol=1e-9, atol=1e-300, equal_nan=True)  # NaN is the value check's to name
    if not same.all():
        index = np.unravel_index(np.argmin(same), GRID_2D.shape)
        raise Mistake(f"{what} differs on a 2-D x", f"at x = {GRID_2D[index]:g} your function gives "
                      f"{grid[index]:.6g} when x is a {GRID_2D.shape} grid and {flat[index]:.6g} "
                      "when x is 1-D: the value at a point must not depend on the other points of x. Put the "
                      "components on a new last axis (x[..., None]) and reduce over that axis only (axis=-1 in "
                      "every sum, max or softmax)", section)


def check_marginal_shape(marginal_pdf):
    """Returns an array of the shape of x, 1-D or 2-D."""
    check_shape(marginal_pdf, "p_t(x)", MARGINAL_SECTION)


def check_marginal_at_zero(marginal_pdf):
    """At t = 0 the marginal is p_0 itself, with the stds as standard deviations."""
    weights, means, stds = problem_mixture()
    case = (weights, means, stds, 0.0, *BETA_RANGE)
    got = student_values(marginal_pdf, GRID, case, "p_0(x)", MARGINAL_SECTION)
    compare(got, exact("pdf", case, GRID), "p_0(x)", MARGINAL_SECTION, x=GRID, context=describe(case),
            variants=[(mixture.pdf(GRID), *mistake) for mixture, *mistake in mistaken_mixtures(*case)]
            + log_pdf_variant(exact("pdf", case, GRID)),
            more_variants=lambda: fitted_level_variant(got, "pdf", case, GRID))


def check_marginal(marginal_pdf):
    """p_t(x) = sum_i pi_i N(x; mu_i e^(-B/2), s_i^2 e^(-B) + 1 - e^(-B)), B(t) = int_0^t beta."""
    check_against_mixtures(marginal_pdf, "pdf", "p_t(x)", MARGINAL_SECTION, GRID)


MARGINAL_CHECKS = (
    ("returns an array of the shape of x, 1-D or 2-D", check_marginal_shape),
    ("p_0 at t = 0 (stds are standard deviations)", check_marginal_at_zero),
    (f"p_t(x) at t = {', '.join(map(str, TIMES[1:]))} and for a three-component mixture", check_marginal),
)


def check_score_shape(score):
    """Returns an array of the shape of x, 1-D or 2-D."""
    check_shape(score, "score", SCORE_SECTION)


def check_score(score):
    """grad log p_t(x) = sum_i r_i(x) (m_i - x) / v_i, with r_i the responsibilities."""
    check_against_mixtures(score, "score", "score", SCORE_SECTION, GRID)


LOG_SUM_EXP = ("every pi_i N(x; m_i, v_i) underflows to 0 there and their ratio is 0/0. Compute the "
               "responsibilities as a softmax of log pi_i + log N(x; m_i, v_i) over the components, subtracting "
               "each x's own maximum over the components before exp (log-sum-exp; max(axis=-1, keepdims=True), not "
               "the maximum of the whole array)")


def check_score_tails(score):
    """Finite and exact far in the tails, where every component density underflows to 0."""
    for case in cases():
        got = student_values(score, TAILS, case, "score", SCORE_SECTION)
        if not np.isfinite(got).all():
            index = int(np.argmin(np.isfinite(got)))
            raise Mistake("score not finite in the tails", f"at x = {TAILS[index]:g}, {describe(case)}, your score "
                          f"is {got[index]}: {LOG_SUM_EXP}", SCORE_SECTION)
        if np.any(got == 0):  # the exact score there is about -x / v, far from 0
            index = int(np.argmax(got == 0))
            raise Mistake("score zero in the tails", f"at x = {TAILS[index]:g}, {describe(case)}, your score is 0, "
                          "which replaces 0/0 by 0 (such as by nan_to_num) where the score is about -x / v: "
                          f"{LOG_SUM_EXP}", SCORE_SECTION)
        compare(got, exact("score", case, TAILS), "score", SCORE_SECTION, x=TAILS, context=describe(case))


SCORE_CHECKS = (
    ("returns an array of the shape of x, 1-D or 2-D", check_score_shape),
    (f"the score at t = {', '.join(map(str, TIMES))} and for a three-component mixture", check_score),
    (f"finite and exact in the tails, |x| = {' and '.join(f'{x:g}' for x in sorted(set(abs(TAILS))))}",
     check_score_tails),
)
