"""Shared test helpers: fixed seeds and the problem set's two-Gaussian mixture."""

import numpy as np
import pytest

import dgm


@pytest.fixture
def rng():
    return np.random.default_rng(20260101)


@pytest.fixture
def mixture():
    """An asymmetric two-Gaussian p_0 in the spirit of Problem 3 (stds are standard deviations)."""
    return dgm.GaussianMixture1D(weights=[0.3, 0.7], means=[-2.0, 2.0], stds=[0.5, 0.3])


@pytest.fixture
def one_thread():
    """Run a test's small torch models on one thread: on a busy 2-core machine, threads of tiny ops mostly wait."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
