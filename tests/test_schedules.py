"""ddpm_schedules follows the problem set's formula, cosine_schedule improved DDPM's; respacing keeps the marginals;
bad input is refused."""

import math

import numpy as np
import pytest
import torch

from dgm import ddpm_schedules, respace, respaced_timesteps
from dgm.check.sampler_checks import RESPACE_CHECKS
from dgm.schedules import cosine_schedule, noise_schedule_tables, rescaled_beta_range, schedule_from_betas


def test_linear_schedule_follows_the_problem_set():
    schedule = ddpm_schedules(1e-4, 0.02, 1000)
    assert set(schedule) >= {"beta", "alpha", "alpha_bar"}
    assert all(table.dtype == torch.float64 and table.shape == (1000,) for table in schedule.values())
    k = torch.arange(1000, dtype=torch.float64)
    torch.testing.assert_close(schedule["beta"], 1e-4 + k * (0.02 - 1e-4) / 999, rtol=1e-15, atol=0)
    torch.testing.assert_close(schedule["alpha"], 1 - schedule["beta"], rtol=0, atol=0)
    # alpha_bar[k] = prod_{i<=k} alpha[i], computed here by a plain loop
    product, expected = 1.0, []
    for alpha in schedule["alpha"].tolist():
        product *= alpha
        expected.append(product)
    torch.testing.assert_close(schedule["alpha_bar"], torch.tensor(expected, dtype=torch.float64), rtol=1e-13,
                               atol=0)
    assert schedule["alpha_bar_prev"][0] == 1.0


def test_rescaled_betas_keep_the_signal_left_at_the_last_step():
    assert rescaled_beta_range(1e-4, 0.02, 500) == (2e-4, 0.04)  # improved DDPM's 1000/T, by hand
    assert rescaled_beta_range(1e-4, 0.02, 2000) == (5e-5, 0.01)
    assert rescaled_beta_range(1e-4, 0.02, 1000) == (1e-4, 0.02)
    reference = float(ddpm_schedules(1e-4, 0.02, 1000)["alpha_bar"][-1])
    for T in (500, 2000):
        rescaled = float(ddpm_schedules(*rescaled_beta_range(1e-4, 0.02, T), T)["alpha_bar"][-1])
        assert rescaled == pytest.approx(reference, rel=0.1)
    assert float(ddpm_schedules(1e-4, 0.02, 500)["alpha_bar"][-1]) > 100 * reference  # what rescaling repairs
    with pytest.raises(ValueError, match="T must be an integer"):
        rescaled_beta_range(1e-4, 0.02, 500.0)


def test_cosine_schedule_follows_improved_ddpm():
    schedule = cosine_schedule(1000)
    assert set(schedule) == set(ddpm_schedules(1e-4, 0.02, 1000))
    # f(t) = cos^2((t/T + s)/(1 + s) pi/2) by hand, the paper's t = k + 1, s = 0.008
    f = [math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in (0, 1, 500, 999)]
    assert float(schedule["alpha_bar"][0]) == pytest.approx(f[1] / f[0], rel=1e-12)
    assert float(schedule["alpha_bar"][499]) == pytest.approx(f[2] / f[0], rel=1e-12)
    assert float(schedule["alpha_bar"][998]) == pytest.approx(f[3] / f[0], rel=1e-9)
    assert float(schedule["beta"][-1]) == 0.999  # the last beta, 1 before clipping
    assert bool((schedule["beta"][1:] > schedule["beta"][:-1]).all()) and float(schedule["beta"][0]) < 1e-4
    # half the signal variance is left half-way, where the linear chain has about 8% left
    assert float(schedule["alpha_bar"][499]) == pytest.approx(0.5, abs=0.01)
    assert float(ddpm_schedules(1e-4, 0.02, 1000)["alpha_bar"][499]) < 0.1


def test_noise_schedule_tables_by_name():
    torch.testing.assert_close(noise_schedule_tables("linear", 1e-4, 0.02, 50)["beta"],
                               ddpm_schedules(1e-4, 0.02, 50)["beta"], rtol=0, atol=0)
    torch.testing.assert_close(noise_schedule_tables("cosine", 1e-4, 0.02, 50)["beta"], cosine_schedule(50)["beta"],
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="noise schedule must be one of"):
        noise_schedule_tables("quadratic", 1e-4, 0.02, 50)
    for arguments in ({"T": 1}, {"T": 50, "offset": 0.0}, {"T": 50, "max_beta": 1.0}):
        with pytest.raises(ValueError):
            cosine_schedule(**arguments)


def test_posterior_variance_is_below_beta_and_zero_at_the_first_step():
    schedule = ddpm_schedules(1e-4, 0.02, 1000)
    assert schedule["posterior_variance"][0] == 0
    assert bool((schedule["posterior_variance"] <= schedule["beta"]).all())


@pytest.mark.parametrize("arguments, message", [
    ((1e-4, 0.02, 1), "T must be an integer >= 2"),
    ((1e-4, 0.02, 10.0), "T must be an integer >= 2"),
    ((0.0, 0.02, 10), "0 < beta_min"),
    ((-1e-4, 0.02, 10), "0 < beta_min"),
    ((1e-4, 1.0, 10), "beta_max < 1"),
    ((0.03, 0.02, 10), "beta_min <= beta_max"),
    ((float("nan"), 0.02, 10), "beta_min"),
])
def test_bad_schedule_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        ddpm_schedules(*arguments)


@pytest.mark.parametrize("T, steps", [(1000, 50), (1000, 100), (1000, 1000), (500, 7), (2000, 2), (10, 1)])
def test_respaced_timesteps(T, steps):
    timesteps = respaced_timesteps(T, steps)
    assert len(timesteps) == steps and len(set(timesteps.tolist())) == steps
    assert int(timesteps[-1]) == T - 1 and (steps == 1 or int(timesteps[0]) == 0)
    assert bool((timesteps[1:] > timesteps[:-1]).all())


@pytest.mark.parametrize("steps", [0, -1, 1001, 2.5])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps must be an integer in 1..T"):
        respaced_timesteps(1000, steps)


def test_respaced_chain_has_the_same_marginals():
    alpha_bar = ddpm_schedules(1e-4, 0.02, 1000)["alpha_bar"]
    timesteps = respaced_timesteps(1000, 50)
    respaced = respace(alpha_bar, timesteps)
    torch.testing.assert_close(respaced["alpha_bar"], alpha_bar[timesteps], rtol=1e-12, atol=0)
    original_beta = ddpm_schedules(1e-4, 0.02, 1000)["beta"]
    assert respaced["beta"][0] == pytest.approx(float(original_beta[0]), rel=1e-12)  # first kept step is 0
    assert bool((respaced["beta"][1:] > original_beta[timesteps[1:]]).all())  # longer jumps, larger betas


def test_respacing_all_steps_changes_nothing():
    full = ddpm_schedules(1e-4, 0.02, 100)
    same = respace(full["alpha_bar"], torch.arange(100))
    for name in full:
        torch.testing.assert_close(same[name], full[name], rtol=1e-10, atol=1e-15)


def test_respace_refuses_bad_timesteps():
    alpha_bar = ddpm_schedules(1e-4, 0.02, 10)["alpha_bar"]
    refusals = [([0, 5, 3], r"strictly increasing, got timesteps\[1\] = 5 then timesteps\[2\] = 3"),
                ([3, 3], r"strictly increasing, got timesteps\[0\] = 3 then timesteps\[1\] = 3"),
                ([0, 10], r"lie in 0\.\.9, got 0\.\.10$"), ([-1, 3], r"lie in 0\.\.9, got -1\.\.3$"),
                ([], r"a non-empty 1-D sequence, got shape \(0,\)"),
                ([[0, 9]], r"a non-empty 1-D sequence, got shape \(1, 2\)")]
    for timesteps, message in refusals:
        with pytest.raises(ValueError, match=f"^timesteps must (be )?{message}"):
            respace(alpha_bar, timesteps)
    with pytest.raises(ValueError, match="integers"):
        respace(alpha_bar, [0, 4.7, 9])  # would truncate to 4
    with pytest.raises(ValueError, match=r"not their number: pass respaced_timesteps\(T, 5\)"):
        respace(alpha_bar, 5)  # the exercise's respace(alpha_bar, steps)
    for wrong in (alpha_bar.numpy(), ddpm_schedules(1e-4, 0.02, 10), alpha_bar.long()):
        with pytest.raises(ValueError, match="alpha_bar must be a 1-D floating tensor"):
            respace(wrong, [0, 9])


def test_numpy_integers_count_as_integers():
    assert torch.equal(ddpm_schedules(1e-4, 0.02, np.int64(10))["beta"], ddpm_schedules(1e-4, 0.02, 10)["beta"])
    assert torch.equal(respaced_timesteps(np.int64(10), np.int32(4)), respaced_timesteps(10, 4))


def test_schedule_from_betas_refuses_betas_outside_the_unit_interval():
    for beta in ([0.1, 1.0], [0.0, 0.1], [-0.1, 0.1]):  # beta = 0 would make beta_tilde 0/0
        with pytest.raises(ValueError, match="beta must be"):
            schedule_from_betas(torch.tensor(beta))


def library_respace(alpha_bar, steps):
    """The exercise's respace(alpha_bar, steps), as the 2b solution composes it from the library's two functions."""
    schedule = respace(alpha_bar, respaced_timesteps(len(alpha_bar), steps))
    return schedule["timesteps"], schedule["beta"]


@pytest.mark.parametrize("check", [check for _, check in RESPACE_CHECKS], ids=lambda check: check.__name__)
def test_the_library_respacing_passes_the_checks_of_problem_2b(check):
    check(library_respace)
