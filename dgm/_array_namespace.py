"""Pick NumPy or torch by the arguments, so the generated closed forms serve both."""

import numpy as np
import torch


def as_arrays(*values):
    """Return (xp, values as arrays of xp): torch if any value is a tensor, else NumPy in float64.

    Python numbers and integer tensors become floating tensors on the device and dtype of the first floating tensor
    (the default dtype if none is), so ``xp.sqrt`` accepts them and a timestep index ``k`` is not truncated.
    """
    tensors = [value for value in values if isinstance(value, torch.Tensor)]
    if not tensors:
        return np, tuple(np.asarray(value, dtype=np.float64) for value in values)
    reference = next((tensor for tensor in tensors if tensor.is_floating_point()), None)
    dtype = torch.get_default_dtype() if reference is None else reference.dtype
    device = (tensors[0] if reference is None else reference).device
    return torch, tuple(value if isinstance(value, torch.Tensor) and value.is_floating_point()
                        else torch.as_tensor(value, dtype=dtype, device=device) for value in values)
