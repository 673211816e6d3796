"""The generated closed forms against their SymPy expressions, hand-checked values, and the generator itself."""

import math
import zlib

import numpy as np
import pytest
import sympy as sp
import torch

from derivations import generate
from derivations._check import expand_stable_functions, holds
from dgm import closed_forms

FORMS = generate.all_closed_forms()


def random_value(symbol, rng):
    """A random point in the symbol's domain: probabilities and levels in (0, 1), times in [0, 1], and so on."""
    if symbol.name == "T":
        return int(rng.integers(2, 3000))
    if symbol.name == "k":
        return int(rng.integers(0, 2))
    if symbol.is_negative:
        return float(rng.uniform(-8.0, -1e-3))
    if symbol.is_positive or symbol.is_nonnegative:
        return float(rng.uniform(0.02, 0.98))
    return float(rng.uniform(-4.0, 4.0))


def test_generated_module_is_up_to_date():
    assert generate.TARGET.read_text() == generate.render(), "run `make generate` (python -m derivations.generate)"


@pytest.mark.parametrize("form", FORMS, ids=[form[1] for form in FORMS])
def test_matches_sympy_at_random_points(form):
    _, name, arguments, expression, _ = form
    function = getattr(closed_forms, name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    exact = sp.lambdify(arguments, expand_stable_functions(expression), modules="mpmath")
    for _ in range(20):
        values = [random_value(symbol, rng) for symbol in arguments]
        expected = float(sp.N(exact(*[sp.Float(v, 40) if isinstance(v, float) else v for v in values]), 30))
        got = float(function(*values))
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-300), (name, values)
        # the torch path gives the same numbers in float64
        got_torch = function(*[torch.tensor(v, dtype=torch.float64) for v in values])
        assert float(got_torch) == pytest.approx(got, rel=1e-14, abs=1e-300)


def test_hand_checked_values():
    assert closed_forms.linear_beta(0, 1e-4, 0.02, 1000) == pytest.approx(1e-4, rel=1e-15)
    assert closed_forms.linear_beta(999, 1e-4, 0.02, 1000) == pytest.approx(0.02, rel=1e-15)
    assert closed_forms.cosine_alpha_bar(-1, 0.008, 1000) == pytest.approx(1.0, rel=1e-15)  # before the first step
    assert closed_forms.cosine_alpha_bar(499, 1e-12, 1000) == pytest.approx(0.5, rel=1e-9)  # cos^2(pi/4) half-way
    assert closed_forms.velocity(2.0, 1.0, 0.64) == pytest.approx(0.8 - 0.6 * 2.0, rel=1e-15)
    assert closed_forms.eps_from_velocity(0.8 * 2.0 + 0.6 * 1.0, 0.8 - 0.6 * 2.0, 0.64) == pytest.approx(1.0, rel=1e-14)
    assert closed_forms.posterior_variance(0.02, 0.5, 0.49) == pytest.approx(0.02 * 0.5 / 0.51, rel=1e-15)
    assert closed_forms.p2_weight(0.8, 1.0, 2.0) == pytest.approx(1 / (1 + 4) ** 2, rel=1e-15)  # SNR = 4
    assert closed_forms.vp_log_alpha_bar(1.0, 0.1, 20.0) == pytest.approx(-(0.1 + 19.9 / 2), rel=1e-15)
    # the problem set's chain (1e-4 to 0.02 over T = 1000) discretises Problem 3's VP-SDE (beta from 0.1 to 20)
    assert [closed_forms.vp_rate_of_chain(b, 1000) for b in (1e-4, 0.02)] == pytest.approx([0.1, 20.0], rel=1e-15)
    assert closed_forms.normal_log_pdf(0.0, 0.0, 1.0) == pytest.approx(-0.5 * math.log(2 * math.pi), rel=1e-15)
    assert closed_forms.normal_score(3.0, 1.0, 4.0) == pytest.approx(-0.5, rel=1e-15)
    # the stable variance keeps its digits where 1 - alpha_bar is tiny: 1 - exp(-1e-12) = 1e-12 - 5e-25
    assert closed_forms.diffused_variance(0.0, -1e-12) == pytest.approx(1e-12 - 5e-25, rel=1e-15)


def test_integer_tensors_are_computed_in_floating_point():
    """A timestep index as a long tensor must not truncate the float constants to integers."""
    steps = torch.arange(3)
    torch.testing.assert_close(closed_forms.linear_beta(steps, 1e-4, 0.02, 3),
                               torch.tensor([1e-4, 0.01005, 0.02], dtype=torch.get_default_dtype()))
    torch.testing.assert_close(closed_forms.vp_log_alpha_bar(torch.tensor([0, 1]), 0.1, 20.0),
                               torch.tensor([0.0, -(0.1 + 19.9 / 2)]))
    mixed = closed_forms.linear_beta(steps, torch.tensor(1e-4, dtype=torch.float64), 0.02, 3)
    assert mixed.dtype == torch.float64  # a floating tensor among the arguments sets the dtype


def test_holds_rejects_a_false_step():
    x = sp.Symbol("x")
    with pytest.raises(AssertionError, match="wrong on purpose"):
        holds(sp.sin(x) ** 2, 1 - sp.cos(x), "wrong on purpose")


def test_generator_refuses_a_form_with_unlisted_symbols():
    a, b = sp.symbols("a b")
    with pytest.raises(ValueError, match="not among its arguments"):
        generate.render_function(generate.ddpm, "bad", (a,), a + b, "bad form.")
