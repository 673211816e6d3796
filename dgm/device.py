"""The device and the precision a run computes in, and the name of the processor that its records give."""

import contextlib
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")  # of the forward and backward passes; weights and optimizer stay fp32


def select_device(name="auto", local_rank=0):
    """CUDA (this process's GPU under torchrun) if present, else CPU; ``name`` overrides. Apple's MPS is refused: it
    has no float64, in which the schedule tables and the samplers' long respaced jumps are computed (dgm/ddpm.py)."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "mps":
        raise ValueError("device 'mps' is not supported: Apple's GPU has no float64, which the schedule tables need; "
                         "use --device cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but torch finds no CUDA GPU here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return device


def native_bf16(device):
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, a CPU with AVX512-BF16 or
    AMX. Elsewhere bfloat16 is emulated and slower than float32 (benchmarks/train_throughput.py measures it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision, device):
    """``"auto"`` becomes ``"bf16"`` where ``device`` computes in bfloat16 natively, else ``"fp32"``; the others
    stay."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast_context(precision, device):
    """bfloat16 autocast for ``precision="bf16"`` (or "auto" resolved to it); else none."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def hardware_name(device):
    """The processor a run trains on, for its records: the GPU's name, or the CPU's model, vector instructions (with
    "+ BF16" where bfloat16 is native, "+ AMX" where matrix tiles compute it) and threads: what its minutes mean."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere platform's name for the processor
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    model = model or platform.processor() or platform.machine()
    instructions = (torch.backends.cpu.get_cpu_capability() + " + BF16" * native_bf16(device)
                    + " + AMX" * torch.cpu._is_amx_tile_supported())
    return f"{model}, {instructions}, {torch.get_num_threads()} threads"
