"""Denoising diffusion probabilistic models (Ho et al. 2020): forward process, loss and samplers.

Book chapters "The forward process" and "The reverse process"; every formula comes from
``derivations/ddpm.py`` through ``dgm.closed_forms``. The same class serves MNIST images and 1-D toy data.
"""

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dgm import closed_forms
from dgm._arguments import (check_batch, check_prediction, check_shaped_like, checked_sample_shape,
                            checked_step_indices, is_integer)
from dgm.schedules import (PROBLEM_SET_BETA_MAX, PROBLEM_SET_BETA_MIN, PROBLEM_SET_T, noise_schedule_tables, respace,
                           respaced_timesteps)

SIGMA_CHOICES = ("beta", "posterior")
# How the loss weighs its timesteps: Ho et al.'s uniform average, or P2 with offset = gamma = 1 (Choi et al. 2022).
LOSS_WEIGHTINGS = ("uniform", "p2")
# What the network predicts: the noise (Ho et al.) or the velocity v (Salimans and Ho 2022; DDPM.predict_eps).
PREDICTIONS = ("eps", "v")


def reverse_steps(schedule, x, progress):
    """Indices i = K-1, ..., 0 of a (respaced) schedule, each with the batch of original timesteps for the network."""
    count = len(schedule["timesteps"])
    for i in tqdm(reversed(range(count)), total=count, disable=not progress, desc="sampling"):
        yield i, x.new_full((len(x),), int(schedule["timesteps"][i]), dtype=torch.long)


def check_noise_predictor(eps_model):
    """Refuse a DDPM where its noise predictor belongs: its forward() noises x_0, and sampling with it would return
    noise without an error."""
    if isinstance(eps_model, DDPM):
        raise ValueError("eps_model(x_t, t) predicts the noise: pass ddpm.predict_eps, or call ddpm.sample(...)")


def sample_ancestral(eps_model, x, schedule, sigma="beta", generator=None, callback=None, progress=False):
    """Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2) on a possibly respaced schedule.

    ``eps_model(x_t, t)`` predicts the noise (``DDPM.predict_eps``); ``sigma="beta"`` draws with sigma^2 = beta_t,
    ``"posterior"`` with beta_tilde_t; no noise at the last step.
    """
    check_noise_predictor(eps_model)
    if sigma not in SIGMA_CHOICES:
        raise ValueError(f"sigma must be one of {SIGMA_CHOICES}, got {sigma!r}")
    variance = schedule["beta"] if sigma == "beta" else schedule["posterior_variance"]
    for i, t in reverse_steps(schedule, x, progress):
        # Kept in float64 (no .to(x.dtype)): a long respaced jump has beta' within 1e-8 of 1, which float32 rounds to 1.
        beta, alpha_bar = (schedule[name][i] for name in ("beta", "alpha_bar"))
        eps = eps_model(x, t)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "x0_pred": closed_forms.predict_x0(x, eps, alpha_bar)})
        x = closed_forms.reverse_mean_from_eps(x, eps, beta, alpha_bar)  # eq. 11
        if i > 0:  # Algorithm 2, line 3: no noise at the last step (the paper's t = 1)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + variance[i].to(x.dtype).sqrt() * noise  # Algorithm 2, line 4
    return x


def sample_ddim(eps_model, x, schedule, sigma=None, generator=None, callback=None, progress=False):
    """Deterministic DDIM sampling, eta = 0 (Song, Meng and Ermon 2021, eq. 12, whose alpha_t is our alpha_bar); adds no
    noise, ignores sigma. ``eps_model(x_t, t)`` predicts the noise (``DDPM.predict_eps``)."""
    check_noise_predictor(eps_model)
    for i, t in reverse_steps(schedule, x, progress):  # x's dtype suffices here: DDIM never forms 1 - beta
        alpha_bar, alpha_bar_prev = (schedule[name][i].to(x.dtype) for name in ("alpha_bar", "alpha_bar_prev"))
        eps = eps_model(x, t)
        x0_pred = closed_forms.predict_x0(x, eps, alpha_bar)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "x0_pred": x0_pred})
        # Re-noise the prediction to the previous level with the predicted noise (derivations/ddpm.py, section 6).
        x = closed_forms.forward_sample(x0_pred, eps, alpha_bar_prev)
    return x


SAMPLERS = {"ancestral": sample_ancestral, "ddim": sample_ddim}


class DDPM(nn.Module):
    """A DDPM around a noise predictor ``eps_model(x_t, t)`` with the problem set's linear schedule, or the cosine
    one (``noise_schedule="cosine"``, which ignores beta_min and beta_max; ``dgm.schedules.cosine_schedule``).

    ``shape`` is one sample's shape: (1, 28, 28) for MNIST, (1,) for the 1-D toy. The schedule tables are
    non-persistent buffers: they follow ``.to(device)`` and are rebuilt from the arguments, not saved. With
    ``prediction="v"`` the network predicts the velocity v instead of the noise; ``predict_eps`` converts.
    """

    def __init__(self, eps_model, beta_min=PROBLEM_SET_BETA_MIN, beta_max=PROBLEM_SET_BETA_MAX, T=PROBLEM_SET_T,
                 shape=(1, 28, 28), noise_schedule="linear", prediction="eps"):
        super().__init__()
        if not callable(eps_model):
            raise ValueError("eps_model must be a module or callable eps_model(x_t, t)")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.eps_model = eps_model
        self.beta_min, self.beta_max, self.shape = beta_min, beta_max, checked_sample_shape(shape)
        self.noise_schedule, self.prediction = noise_schedule, prediction
        for name, table in noise_schedule_tables(noise_schedule, beta_min, beta_max, T).items():
            self.register_buffer(name, table, persistent=False)
        self.T = int(T)
        self._loss_weights = {}  # timestep_weights by name, on the tables' device

    def _per_sample(self, table, t, like):
        """table[t] shaped to broadcast against a batch ``like``, in its dtype."""
        return table[t].to(like.dtype).reshape(-1, *([1] * len(self.shape)))

    def forward(self, x0, t, noise=None):
        """A draw of q(x_{t+1} | x_0) at 0-based step indices ``t`` in 0..T-1, the book's steps t + 1 (Problem 1b)."""
        check_batch(x0, self.shape)
        t = checked_step_indices(t, x0, self.T)
        noise = torch.randn_like(x0) if noise is None else noise
        check_shaped_like(noise, x0, "noise must be a tensor of x0's shape")
        return closed_forms.forward_sample(x0, noise, self._per_sample(self.alpha_bar, t, x0))

    def predict_eps(self, x_t, t):
        """The network's noise prediction at x_t and original timesteps t, converted from v if it predicts v
        (``closed_forms.eps_from_velocity``, derivations/ddpm.py, section 9); the samplers call this."""
        output = self.eps_model(x_t, t)
        check_prediction(output, x_t)
        if self.prediction == "eps":
            return output
        return closed_forms.eps_from_velocity(x_t, output, self._per_sample(self.alpha_bar, t, x_t))

    def timestep_weights(self, weighting="uniform"):
        """The loss weight of each timestep 0..T-1, scaled to mean 1 so that the loss keeps its scale, and gradient
        clipping acts alike, under every weighting; "p2" is (1 + SNR)^(-1) = 1 - alpha_bar (derivations/ddpm.py,
        section 7)."""
        if weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")
        if weighting == "uniform":
            return torch.ones_like(self.alpha_bar)
        weights = closed_forms.p2_weight(self.alpha_bar, 1.0, 1.0)
        return weights / weights.mean()

    def loss(self, x0, generator=None, weighting="uniform"):
        """Epsilon-prediction MSE with t uniform over 0..T-1 (Ho et al. 2020, Algorithm 1), or v's MSE if the network
        predicts v (section 9 of derivations/ddpm.py), each sample's term multiplied by its timestep's weight
        (``timestep_weights``)."""
        check_batch(x0, self.shape)
        if len(x0) == 0:
            raise ValueError("x0 must hold at least one sample: the loss of an empty batch is undefined")
        weights = self._timestep_weights_on_device(weighting)  # also checks the name
        t = torch.randint(0, self.T, (len(x0),), device=x0.device, generator=generator)  # Algorithm 1, line 3
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)  # line 4
        alpha_bar = self._per_sample(self.alpha_bar, t, x0)
        # x_t ~ q(x_t | x_0) in one jump, as forward() draws it (t is in range by construction: no checks).
        x_t = closed_forms.forward_sample(x0, noise, alpha_bar)
        predicted = self.eps_model(x_t, t)
        check_prediction(predicted, x_t)
        target = noise if self.prediction == "eps" else closed_forms.velocity(x0, noise, alpha_bar)
        if weighting == "uniform":  # line 5: the squared error to the target (eps, or v), averaged
            return F.mse_loss(predicted, target)
        return (weights[t].to(x0.dtype) * (predicted - target).square().flatten(1).mean(dim=1)).mean()

    def _timestep_weights_on_device(self, weighting):
        """``timestep_weights(weighting)`` on the tables' device, built once: copying its constants there waits."""
        if weighting not in self._loss_weights:
            self._loss_weights[weighting] = self.timestep_weights(weighting)
        return self._loss_weights[weighting]

    def sampling_schedule(self, steps=None):
        """The full schedule (steps=None or T) or the one respaced to ``steps`` timesteps (Problem 2b)."""
        timesteps = respaced_timesteps(self.T, self.T if steps is None else steps).to(self.alpha_bar.device)
        return respace(self.alpha_bar, timesteps)

    @torch.no_grad()
    def sample(self, n, steps=None, sigma="beta", generator=None, return_trajectory=False, sampler="ancestral",
               callback=None, progress=False, dtype=None):
        """Draw n samples by the reverse process from x_T ~ N(0, I) (Problem 1c).

        ``steps`` respaces to that many timesteps (all T by default); ``sampler`` is "ancestral" (with ``sigma``
        "beta" or "posterior") or "ddim" (no noise, ``sigma`` ignored). ``callback`` receives {x, i, t, x0_pred}
        before each step; ``return_trajectory`` also returns x at every step, stacked as (steps + 1, n, *shape)
        from x_T to x_0. ``dtype`` defaults to that of the model's parameters (float64 for a parameter-free
        callable such as an exact predictor).
        """
        if not is_integer(n) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ValueError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {tuple(SAMPLERS)}, got {sampler!r}")
        if sigma not in SIGMA_CHOICES and not (sampler == "ddim" and sigma is None):  # DDIM ignores a valid one
            raise ValueError(f"sigma must be one of {SIGMA_CHOICES}, got {sigma!r}")
        schedule = self.sampling_schedule(steps)
        if dtype is None:
            parameters = self.eps_model.parameters() if isinstance(self.eps_model, nn.Module) else iter(())
            dtype = next(parameters, torch.zeros((), dtype=torch.float64)).dtype
        x = torch.randn((int(n), *self.shape), generator=generator, device=self.alpha_bar.device, dtype=dtype)
        trajectory = []

        def record(step):
            if return_trajectory:
                trajectory.append(step["x"])
            if callback is not None:
                callback(step)

        sample = SAMPLERS[sampler](self.predict_eps, x, schedule, sigma=sigma, generator=generator,
                                   callback=record if return_trajectory or callback else None, progress=progress)
        if not bool(torch.isfinite(sample).all()):
            raise FloatingPointError("sampling produced non-finite values; check the model and the schedule")
        if return_trajectory:
            return sample, torch.stack(trajectory + [sample])
        return sample

    def _apply(self, fn, recurse=True):
        """Move the schedule tables with the module but keep them float64, so ``.float()`` or ``.half()`` casts only
        the network: a long respaced jump needs float64's digits (see sample_ancestral)."""
        super()._apply(fn, recurse)
        device = self.alpha_bar.device
        for name, table in noise_schedule_tables(self.noise_schedule, self.beta_min, self.beta_max, self.T).items():
            setattr(self, name, table.to(device))
        self._loss_weights = {}
        return self
