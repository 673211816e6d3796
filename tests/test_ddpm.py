"""DDPM: the forward process matches theory, samplers run on any data shape, bad input is refused."""

import numpy as np
import pytest
import torch
from torch import nn

from dgm import DDPM, SAMPLERS, closed_forms, cosine_schedule
from dgm.check.sampler_checks import SAMPLE_CHECKS


class TinyEpsModel(nn.Module):
    """A stand-in noise predictor with parameters, for shape and plumbing tests."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, x, t):
        return self.scale * x + t.float().reshape(-1, *([1] * (x.ndim - 1))) * 0


def test_forward_has_the_closed_form_moments():
    model = DDPM(TinyEpsModel(), T=1000, shape=(1,))
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    for t in (0, 300, 999):
        torch.manual_seed(t)
        x_t = model(x0, t)
        alpha_bar = float(model.alpha_bar[t])
        mean_error = (x_t.mean() - alpha_bar**0.5 * 0.7) / ((1 - alpha_bar) / len(x0)) ** 0.5
        assert abs(float(mean_error)) < 4.5
        assert float(x_t.var()) == pytest.approx(1 - alpha_bar, rel=0.02)
        # power check: the same test against a neighbouring timestep's mean fails when the levels differ enough
    x_t = model(x0, 100)
    wrong = float(model.alpha_bar[300]) ** 0.5 * 0.7
    assert abs(float(x_t.mean()) - wrong) / (1 / len(x0)) ** 0.5 > 10


def test_forward_uses_the_given_noise_and_validates_input():
    model = DDPM(TinyEpsModel(), T=10, shape=(1, 4, 4))
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 5, 9])
    expected = (model.alpha_bar[t].float().sqrt().reshape(-1, 1, 1, 1) * x0
                + (1 - model.alpha_bar[t].float()).sqrt().reshape(-1, 1, 1, 1) * noise)
    torch.testing.assert_close(model(x0, t, noise), expected)
    with pytest.raises(ValueError, match=r"t must lie in 0..T-1 = 0..9"):
        model(x0, 10)
    with pytest.raises(ValueError, match=r"t must lie in 0..T-1"):
        model(x0, torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match="one timestep per sample"):
        model(x0, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"x0 must be a tensor of shape \(batch, \*\(1, 4, 4\)\)"):
        model(torch.randn(3, 1, 28, 28), 1)
    with pytest.raises(ValueError, match="x0 must be a tensor"):
        model.loss(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match=r"noise must be a tensor of x0's shape \(3, 1, 4, 4\), got \(3,\)"):
        model(x0, t, torch.randn(3))


@pytest.mark.parametrize("weighting", ["uniform", "p2"])
def test_a_prediction_of_another_shape_is_refused_not_broadcast(weighting):
    model = DDPM(lambda x, t: torch.zeros(len(x)), T=10, shape=(1,))  # one number per sample, not per entry
    with pytest.raises(ValueError, match=r"must return a tensor of x_t's shape \(4, 1\), got \(4,\)"):
        model.loss(torch.zeros(4, 1), weighting=weighting)
    with pytest.raises(ValueError, match=r"x_t's shape \(4, 1\), got \(4,\)"):
        model.sample(4)


def test_p2_weights_move_the_loss_to_the_noisy_steps():
    model = DDPM(TinyEpsModel(), T=1000, shape=(1,))
    torch.testing.assert_close(model.timestep_weights("uniform"), torch.ones(1000, dtype=torch.float64))
    weights = model.timestep_weights("p2")
    assert float(weights.mean()) == pytest.approx(1.0, rel=1e-12)
    assert bool((weights.diff() > 0).all())  # alpha_bar falls with t, so 1 - alpha_bar rises
    # offset = gamma = 1: the weight is the noise variance 1 - alpha_bar, rescaled
    torch.testing.assert_close(weights / weights[-1], (1 - model.alpha_bar) / (1 - model.alpha_bar[-1]))
    with pytest.raises(ValueError, match="weighting must be one of"):
        model.timestep_weights("snr")


def test_weighted_loss_is_the_weighted_mean_of_per_sample_errors():
    model = DDPM(TinyEpsModel(), T=50, shape=(1, 4, 4))
    x0 = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    weighted = model.loss(x0, generator=torch.Generator().manual_seed(2), weighting="p2")
    # the same draws as the loss makes them: timesteps first, then the noise
    generator = torch.Generator().manual_seed(2)
    t = torch.randint(0, 50, (6,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    errors = (model.eps_model(model(x0, t, noise), t) - noise).square().mean(dim=(1, 2, 3))
    weights = (1 - model.alpha_bar[t]) / (1 - model.alpha_bar).mean()
    torch.testing.assert_close(weighted, (weights.float() * errors).mean())
    uniform = model.loss(x0, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(uniform, errors.mean())
    assert not torch.isclose(weighted, uniform)


def test_the_loss_builds_its_weights_once_per_device(monkeypatch):
    """Building the P2 table copies its constants to the device, which waits for the device: once, not every step."""
    model = DDPM(TinyEpsModel(), T=50, shape=(1, 4, 4))
    built = []
    p2_weight = closed_forms.p2_weight
    monkeypatch.setattr(closed_forms, "p2_weight", lambda *args: built.append(args) or p2_weight(*args))
    x0 = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    first = model.loss(x0, generator=torch.Generator().manual_seed(2), weighting="p2")
    model.loss(x0, generator=torch.Generator().manual_seed(3), weighting="p2")
    assert len(built) == 1
    model.to("cpu")  # a move rebuilds the tables, and so the weights, on their new device
    torch.testing.assert_close(model.loss(x0, generator=torch.Generator().manual_seed(2), weighting="p2"), first)
    assert len(built) == 2


class TimestepEpsModel(nn.Module):
    """Predicts t / T whatever x_t is, so the expected error at step t is (t / T)^2 + 1, known in closed form."""

    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, x, t):
        return (t.double() / self.T).reshape(-1, *([1] * (x.ndim - 1))).expand_as(x).to(x.dtype)


def test_the_p2_loss_averages_the_weighted_expected_errors():
    T = 20
    model = DDPM(TimestepEpsModel(T), T=T, shape=(1,)).double()
    weights = model.timestep_weights("p2")
    expected = float((weights * ((torch.arange(T) / T) ** 2 + 1)).mean())  # (1/T) sum_t w_t E[error_t]
    x0 = torch.zeros(200_000, 1, dtype=torch.float64)
    weighted_terms = model.loss(x0, generator=torch.Generator().manual_seed(0), weighting="p2")
    assert float(weighted_terms) == pytest.approx(expected, rel=0.01)
    # the plain loss is a different number, so an unweighted loss would fail the check above
    uniform = model.loss(x0, generator=torch.Generator().manual_seed(0))
    assert float(uniform) == pytest.approx(float(((torch.arange(T) / T) ** 2 + 1).mean()), rel=0.01)
    assert abs(float(uniform) / expected - 1) > 0.05


@pytest.mark.parametrize("kwargs, message", [
    ({"T": 1}, "T must be"), ({"beta_min": 0.0}, "beta_min"), ({"beta_max": 1.0}, "beta_max"),
    ({"beta_min": 0.05, "beta_max": 0.02}, "beta_min <= beta_max"),
])
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DDPM(TinyEpsModel(), **kwargs)


def test_shapes_and_counts_may_be_numpy_integers_but_not_a_bare_number():
    model = DDPM(TinyEpsModel(), T=np.int64(10), shape=np.array([1, 2]))
    assert model.T == 10 and type(model.T) is int and model.shape == (1, 2)
    assert model.sample(np.int64(3), steps=np.int64(2)).shape == (3, 1, 2)
    for shape in (28, None, (1, 0), (1.0,)):
        with pytest.raises(ValueError, match="shape must be one sample's positive sizes"):
            DDPM(TinyEpsModel(), shape=shape)


@pytest.mark.parametrize("cast", [lambda m: m.float(), lambda m: m.half(), lambda m: m.to(torch.bfloat16)])
def test_casting_the_module_casts_the_network_and_keeps_the_tables_float64(cast):
    model = cast(DDPM(TinyEpsModel().double(), T=2000, shape=(1,)))
    assert model.eps_model.scale.dtype != torch.float64
    reference = DDPM(TinyEpsModel(), T=2000, shape=(1,))
    for name in ("beta", "alpha_bar", "posterior_variance"):
        torch.testing.assert_close(getattr(model, name), getattr(reference, name), rtol=0, atol=0)
    assert model.sample(4, steps=1, dtype=torch.float32).shape == (4, 1)  # beta' = 1 - alpha_bar_T, below 1


def test_v_prediction_targets_the_velocity_and_samples_through_eps():
    model = DDPM(TinyEpsModel(), T=50, shape=(1, 4, 4), prediction="v")
    x0 = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    loss = model.loss(x0, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(2)  # the loss's draws: timesteps, then the noise
    t = torch.randint(0, 50, (6,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    alpha_bar = model.alpha_bar[t].float().reshape(-1, 1, 1, 1)
    velocity = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0  # Salimans and Ho (2022), by hand
    x_t = model(x0, t, noise)
    torch.testing.assert_close(loss, (model.eps_model(x_t, t) - velocity).square().mean())
    # a network that predicts the true v gives back the true noise, so every sampler sees eps
    exact = DDPM(lambda x, steps: velocity, T=50, shape=(1, 4, 4), prediction="v")
    torch.testing.assert_close(exact.predict_eps(x_t, t), noise)
    assert model.sample(3, steps=5).shape == (3, 1, 4, 4)
    with pytest.raises(ValueError, match="prediction must be one of"):
        DDPM(TinyEpsModel(), prediction="x0")


def test_the_cosine_schedule_replaces_the_linear_one():
    model = DDPM(TinyEpsModel(), T=100, shape=(1,), noise_schedule="cosine")
    torch.testing.assert_close(model.alpha_bar, cosine_schedule(100)["alpha_bar"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="noise schedule must be one of"):
        DDPM(TinyEpsModel(), noise_schedule="quadratic")


def test_bad_sample_arguments():
    model = DDPM(TinyEpsModel(), T=20, shape=(2,))
    for kwargs, message in [({"steps": 0}, "steps must be an integer in 1..T=20"), ({"steps": 21}, "steps"),
                            ({"sigma": "large"}, "sigma must be one of"), ({"sampler": "euler"}, "sampler must be"),
                            ({"sampler": "ddim", "sigma": "large"}, "sigma must be one of"),
                            ({"sigma": None}, "sigma must be one of"),
                            ({"n": 0}, "n must be a positive integer"), ({"n": 2.0}, "n must be a positive"),
                            ({"dtype": "float32"}, "dtype must be a torch.dtype")]:
        with pytest.raises(ValueError, match=message):
            model.sample(**{"n": 2, **kwargs})


def test_samplers_refuse_a_ddpm_in_place_of_its_noise_predictor():
    model = DDPM(TinyEpsModel(), T=20, shape=(2,))
    for sampler in SAMPLERS.values():
        with pytest.raises(ValueError, match="pass ddpm.predict_eps"):
            sampler(model, torch.zeros(3, 2), model.sampling_schedule())
        assert sampler(model.predict_eps, torch.zeros(3, 2), model.sampling_schedule()).shape == (3, 2)


def test_sampling_shapes_determinism_and_trajectory():
    model = DDPM(TinyEpsModel(), T=50, shape=(1, 3, 3))
    first = model.sample(4, steps=10, generator=torch.Generator().manual_seed(0))
    again = model.sample(4, steps=10, generator=torch.Generator().manual_seed(0))
    assert first.shape == (4, 1, 3, 3) and first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    sample, trajectory = model.sample(4, steps=10, return_trajectory=True, sampler="ddim",
                                      generator=torch.Generator().manual_seed(1))
    assert trajectory.shape == (11, 4, 1, 3, 3)
    torch.testing.assert_close(trajectory[0], torch.randn((4, 1, 3, 3), generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(trajectory[-2], sample)  # x_T first, then one entry per step
    seen = []
    model.sample(2, steps=5, callback=seen.append)
    assert [step["i"] for step in seen] == [4, 3, 2, 1, 0]
    assert [int(step["t"][0]) for step in seen] == [49, 37, 24, 12, 0]  # original timesteps go to the network
    assert set(seen[0]) == {"x", "i", "t", "x0_pred"}


def test_buffers_follow_the_module_and_are_not_saved():
    model = DDPM(TinyEpsModel(), T=10, shape=(1,)).to("meta")
    assert model.alpha_bar.device.type == "meta"
    assert set(DDPM(TinyEpsModel(), T=10, shape=(1,)).state_dict()) == {"eps_model.scale"}


def test_non_finite_samples_raise():
    model = DDPM(lambda x, t: torch.full_like(x, float("nan")), T=10, shape=(1,))
    with pytest.raises(FloatingPointError, match="non-finite"):
        model.sample(3)


def test_float32_sampling_survives_a_jump_whose_beta_rounds_to_one():
    model = DDPM(lambda x, t: torch.zeros_like(x), T=2000, shape=(1,))
    beta = model.sampling_schedule(2)["beta"]
    assert float(beta[1].to(torch.float32)) == 1.0 and float(beta[1]) < 1  # float32 cannot hold this beta'
    # With eps = 0, Algorithm 2 only rescales and adds noise: x_0 = (x_T / sqrt(1 - b1) + sqrt(b1) z) / sqrt(1 - b0).
    expected_std = float(((1 / (1 - beta[1]) + beta[1]) / (1 - beta[0])).sqrt())
    for dtype in (torch.float32, torch.float64):
        samples = model.sample(20_000, steps=2, dtype=dtype, generator=torch.Generator().manual_seed(0))
        assert samples.dtype == dtype
        assert float(samples.double().std()) == pytest.approx(expected_std, rel=0.03)


def library_sampler(eps_model, n, shape, schedule, sigma="beta", generator=None):
    """DDPM.sample behind Problem 1c's signature, on the linear chain that ``schedule`` tabulates."""
    beta = schedule["beta"]
    model = DDPM(eps_model, beta_min=float(beta[0]), beta_max=float(beta[-1]), T=len(beta), shape=shape)
    torch.testing.assert_close(model.beta, beta.to(model.beta.dtype))
    return model.sample(n, sigma=sigma, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("check", [check for _, check in SAMPLE_CHECKS], ids=lambda check: check.__name__)
def test_the_library_sampler_passes_the_checks_of_problem_1c(check):
    """The checks that name a student's mistakes (mean, both variances, no noise at the last step, timesteps, the
    generator, samples of p_0 with the exact predictor) hold for the sampler behind every figure."""
    check(library_sampler)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_the_callback_gets_the_prediction_of_x0_from_the_network(sampler):
    model = DDPM(TinyEpsModel(), T=50, shape=(1, 2, 2))
    seen = []
    model.sample(3, steps=5, sampler=sampler, callback=seen.append, dtype=torch.float64)
    for step in seen:
        alpha_bar = model.alpha_bar[step["t"]].reshape(-1, 1, 1, 1)
        expected = (step["x"] - (1 - alpha_bar).sqrt() * model.eps_model(step["x"], step["t"])) / alpha_bar.sqrt()
        torch.testing.assert_close(step["x0_pred"], expected)


def test_a_parameter_free_predictor_samples_in_float64_and_progress_is_shown_only_when_asked(capsys):
    model = DDPM(lambda x, t: torch.zeros_like(x), T=20, shape=(1,))
    assert model.sample(2, progress=False).dtype == torch.float64
    assert capsys.readouterr().err == ""
    model.sample(2, progress=True)
    assert "sampling" in capsys.readouterr().err
