"""Shared test helpers: fixed seeds and the problem set's two-Gaussian mixture."""

import numpy as np
import pytest

from dgm.mixture import toy_mixture


@pytest.fixture
def rng():
    return np.random.default_rng(20260101)


@pytest.fixture
def mixture():
    """The handout's two-Gaussian p_0 of Problem 3 (stds are standard deviations)."""
    return toy_mixture()


@pytest.fixture
def one_thread():
    """Run a test's small torch models on one thread: on a busy 2-core machine, threads of tiny ops mostly wait."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
