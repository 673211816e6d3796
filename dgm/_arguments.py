"""Checks of the library's arguments, kept out of the functions that implement the algorithms: each refuses what
would otherwise broadcast, truncate or index silently, with a ValueError that says what was expected."""

import numbers

import torch


def is_integer(value):
    """A Python or NumPy integer that is not a bool: what T, step counts, sample counts and sizes accept."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_json_int(value):
    """A Python int that is not a bool; unlike ``is_integer``, no NumPy integer, which JSON (a checkpoint's config, a
    report's settings) cannot hold and torch's seeding refuses."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_chain_length(T):
    """Refuse a number of timesteps T that is not an integer >= 2 (the linear schedule divides by T - 1)."""
    if not is_integer(T) or T < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")


def checked_sample_shape(shape):
    """One sample's shape as a tuple of positive ints, such as (1, 28, 28) or (1,)."""
    try:
        sizes = () if is_integer(shape) else tuple(shape)
    except TypeError:
        sizes = ()
    if not sizes or not all(is_integer(size) and size > 0 for size in sizes):
        raise ValueError(f"shape must be one sample's positive sizes such as (1, 28, 28) or (1,), got {shape!r}")
    return tuple(int(size) for size in sizes)


def check_shaped_like(value, like, requirement):
    """Refuse ``value`` unless it is a tensor of ``like``'s shape, which would otherwise broadcast silently;
    ``requirement`` begins the message."""
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{requirement} {tuple(like.shape)}, got {got}")


def check_prediction(output, x_t):
    """Refuse a network output that is not one prediction per entry of x_t."""
    check_shaped_like(output, x_t, "eps_model(x_t, t) must return a tensor of x_t's shape")


def check_batch(x0, shape):
    """Refuse ``x0`` unless it is a tensor of samples of ``shape``, (batch, *shape)."""
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape[1:]) != shape:
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a tensor of shape (batch, *{shape}), got {got}")


def checked_step_indices(t, x0, T):
    """``t`` as a long tensor of one 0-based step index in 0..T-1 per sample of ``x0`` (an int is every sample's)."""
    t = torch.as_tensor(t, device=x0.device)
    if t.dtype.is_floating_point or t.ndim > 1 or (t.ndim == 1 and len(t) != len(x0)):
        raise ValueError("t must be an integer or a 1-D integer tensor with one timestep per sample")
    if bool(((t < 0) | (t >= T)).any()):
        raise ValueError(f"t must lie in 0..T-1 = 0..{T - 1}, got values in {int(t.min())}..{int(t.max())}")
    return t.expand(len(x0))


def checked_timesteps(alpha_bar, timesteps):
    """``timesteps`` as a strictly increasing long tensor of indices into the 1-D floating table ``alpha_bar``."""
    if not isinstance(alpha_bar, torch.Tensor) or alpha_bar.ndim != 1 or not alpha_bar.is_floating_point():
        raise ValueError("alpha_bar must be a 1-D floating tensor, such as ddpm_schedules(...)['alpha_bar']")
    if isinstance(timesteps, numbers.Integral):
        raise ValueError(f"timesteps are the kept steps, not their number: pass respaced_timesteps(T, {timesteps})")
    timesteps = torch.as_tensor(timesteps, device=alpha_bar.device)
    if timesteps.ndim != 1 or len(timesteps) == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D sequence, got shape {tuple(timesteps.shape)}")
    if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dtype == torch.bool:
        raise ValueError(f"timesteps must be integers, got {timesteps.dtype} values")
    timesteps = timesteps.long()
    not_increasing = (timesteps[1:] <= timesteps[:-1]).nonzero()
    if len(not_increasing):
        first = int(not_increasing[0])
        raise ValueError(f"timesteps must be strictly increasing, got timesteps[{first}] = {int(timesteps[first])} "
                         f"then timesteps[{first + 1}] = {int(timesteps[first + 1])}")
    if int(timesteps[0]) < 0 or int(timesteps[-1]) >= len(alpha_bar):
        raise ValueError(f"timesteps must lie in 0..{len(alpha_bar) - 1}, got {int(timesteps[0])}.."
                         f"{int(timesteps[-1])}")
    return timesteps
