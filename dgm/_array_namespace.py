"""Pick NumPy or torch by the arguments, so the generated closed forms serve both."""

import numpy as np
import torch


def as_arrays(*values):
    """Return (xp, values as arrays of xp): torch if any value is a tensor, else NumPy in float64.

    Python numbers become tensors on the first tensor's device and dtype, so ``xp.sqrt`` accepts them.
    """
    reference = next((value for value in values if isinstance(value, torch.Tensor)), None)
    if reference is None:
        return np, tuple(np.asarray(value, dtype=np.float64) for value in values)
    return torch, tuple(value if isinstance(value, torch.Tensor)
                        else torch.as_tensor(value, dtype=reference.dtype, device=reference.device)
                        for value in values)
