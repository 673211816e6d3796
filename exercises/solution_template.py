"""Problem set 4: your solutions, one function per problem that `dgm check` checks.

Check them with `.venv/bin/dgm check all exercises/solution_template.py`, or one problem with
`.venv/bin/dgm check 1a ...`. Written by `make exercises` from the handout's exercises;
exercises/ps4.ipynb holds the same functions in a notebook.
"""

import numpy as np
import torch


# Problem 1a: the schedule
#
# Implement `ddpm_schedules(beta_min, beta_max, T)` returning the arrays $\beta$, $\alpha$ and $\bar\alpha$ for the
# linear schedule, as a dict of torch tensors with keys `"beta"`, `"alpha"` and `"alpha_bar"`, whose entry $k = 0,
# \dots, T-1$ (step $t = k + 1$ of the chain) is $\beta[k] = \beta_{\min} + k (\beta_{\max} - \beta_{\min})/(T -
# 1)$.
#
# Check it with `.venv/bin/dgm check 1a exercises/solution_template.py`.
def ddpm_schedules(beta_min, beta_max, T):
    """The linear schedule as a dict of 1-D torch tensors of length T, keys
    "beta", "alpha", "alpha_bar", indexed k = 0..T-1 (the book's step
    t = k + 1): beta[k] = beta_min + k (beta_max - beta_min) / (T - 1),
    alpha = 1 - beta, alpha_bar[k] = prod of alpha[i] for i <= k."""
    # TODO: your code
    raise NotImplementedError("Problem 1a: ddpm_schedules")


# Problem 1b: the forward marginal
#
# Show that $q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I)$ and implement sampling
# from it.
#
# Check it with `.venv/bin/dgm check 1b exercises/solution_template.py`.
def forward(x0, t, noise, alpha_bar):
    """A draw of q(x_(k+1) | x_0): x0 and noise of shape (N, ...), t a long
    tensor of shape (N,) of array indices k in 0..T-1 (the book's step
    k + 1), alpha_bar the table of ddpm_schedules. Returns a tensor of
    the shape and dtype of x0."""
    # TODO: your code
    raise NotImplementedError("Problem 1b: forward")


# Problem 1c: the reverse step
#
# Derive the posterior $q(x_{t-1} \mid x_t, x_0)$, express its mean through the noise $\varepsilon$, and implement
# the sampler of Algorithm 2 with $\sigma_t^2 = \beta_t$ and $\sigma_t^2 = \tilde\beta_t$.
#
# Check it with `.venv/bin/dgm check 1c exercises/solution_template.py`.
def sample(eps_model, n, shape, schedule, sigma="beta", generator=None):
    """Ancestral sampling (Algorithm 2) from x ~ N(0, I) of shape
    (n, *shape). k is the array index (the book's step t = k + 1): steps
    run k = T-1, ..., 0, and eps_model(x, t) takes k as t, a long tensor
    of shape (n,). Every step but the last (k = 0) adds std[k] z, with
    std[k]^2 = beta[k] (sigma="beta") or, with sigma="posterior",
        beta_tilde[k] = (1 - alpha_bar[k-1]) / (1 - alpha_bar[k]) beta[k],
    where alpha_bar[k-1] at k = 0 is 1 (the book's alpha_bar_0), not
    Python's alpha_bar[-1]. schedule is the dict of ddpm_schedules;
    draw all noise with torch.randn(..., generator=generator). Returns
    x_0, a tensor of shape (n, *shape)."""
    # TODO: your code
    raise NotImplementedError("Problem 1c: sample")


# Problem 1d: training on MNIST
#
# Implement the loss of Algorithm 1; `dgm train` trains the DDPM with $T = 1000$ on MNIST with the library's own,
# `DDPM.loss`, weighted with P2 by the presets (*The reverse process > The epsilon parameterisation* (handout));
# Algorithm 1's plain mean is `--loss-weighting uniform`. Without a GPU, `--preset cpu` trains a smaller model in 30
# minutes (*The number of timesteps > Training on a laptop* (handout)):
#
# ```bash
# .venv/bin/dgm train --preset gpu --T 1000 --out runs/T1000
# .venv/bin/dgm sample --ckpt runs/T1000 --n 64 --out samples.png
# ```
#
# Check it with `.venv/bin/dgm check 1d exercises/solution_template.py`.
def loss(eps_model, x0, alpha_bar, generator=None):
    """Algorithm 1's loss on a batch x0 of shape (N, ...): t, a long tensor
    of shape (N,) uniform over the array indices 0..T-1 (T is
    len(alpha_bar)), and noise ~ N(0, I) of x0's shape and dtype, both
    drawn with generator=generator; x_t as forward() draws it. Returns
    the mean over the batch and every entry of
    (noise - eps_model(x_t, t))^2, a 0-d tensor."""
    # TODO: your code
    raise NotImplementedError("Problem 1d: loss")


# Problem 2b: fewer sampling steps
#
# Sample from a model trained with $T = 1000$ using only 100 and 50 steps. Which schedule must the short chain use
# so that the network, trained on the long chain, still sees the inputs it expects? The library's respaced sampler
# draws from the shipped model with `.venv/bin/dgm sample --ckpt checkpoints/ddpm_mnist_T1000 --steps 100 --sigma
# posterior --out runs/grid100.png` (and `--steps 50`).
#
# Check it with `.venv/bin/dgm check 2b exercises/solution_template.py`.
def respace(alpha_bar, steps):
    """The kept timesteps, increasing array indices that include 0 and
    T - 1 (the book's steps 1 and T), and the respaced betas of a chain
    with the same alpha_bar at those steps, both of length steps
    (2 <= steps <= T): returns (timesteps, betas), a long and a float
    tensor. alpha_bar is Problem 1a's float64 table. Any such timesteps
    pass; the handout spaces them evenly."""
    # TODO: your code
    raise NotImplementedError("Problem 2b: respace")


# Problem 3a: the marginal
#
# For $p_0 = \pi_1 \mathcal N(\mu_1, s_1^2) + \pi_2 \mathcal N(\mu_2, s_2^2)$ (your function should take any number
# of components) and the VP-SDE $\mathrm{d}x = -\tfrac12 \beta(t)\, x\, \mathrm{d}t + \sqrt{\beta(t)}\, \mathrm{d}w$
# with $\beta(t) = \beta_{\min} + t\,(\beta_{\max} - \beta_{\min})$, $t \in [0, 1]$, derive the density $p_t(x)$ of
# $x(t)$ in terms of $t$, $\beta_{\min}$ and $\beta_{\max}$.
#
# Check it with `.venv/bin/dgm check 3a exercises/solution_template.py`.
def marginal_pdf(x, t, weights, means, stds, beta_min, beta_max):
    """p_t(x), the density of x(t) under the VP-SDE with
    beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1], started
    from p_0 = sum_i weights[i] N(means[i], stds[i]^2) (stds are standard
    deviations). x is a NumPy array, t a float, weights, means and stds
    1-D arrays; returns an array of x's shape."""
    # TODO: your code
    raise NotImplementedError("Problem 3a: marginal_pdf")


# Problem 3b: the score
#
# Derive $\nabla_x \log p_t(x)$ for the marginal of Problem 3a, in a form that can be evaluated for $|x| = 100$.
#
# Check it with `.venv/bin/dgm check 3b exercises/solution_template.py`.
def score(x, t, weights, means, stds, beta_min, beta_max):
    """The score d/dx log p_t(x) of the marginal of Problem 3a, finite for
    |x| up to 100 and beyond. Arguments as in Problem 3a; returns an
    array of x's shape."""
    # TODO: your code
    raise NotImplementedError("Problem 3b: score")


# Written by `make exercises`, which replaces this file only while it is unchanged: 73cf7d433d8871e7
