"""One training step of ``dgm train`` on its device (AdamW, fused where the device has the kernel; a foreach EMA;
optionally a compiled network), and the pace of those steps that a time budget (``--minutes``) turns into steps.

The fused optimizer and the foreach EMA update every tensor in one or a few kernels instead of one small kernel per
parameter, and a compiled network replays its passes as CUDA graphs: on a GPU, small U-Nets otherwise spend their
step waiting on launches. Nothing in a step waits for the device; the trainer reads its losses in windows.
"""

import copy
import functools
import math
import time

import torch

from dgm.config import ddpm_around


@functools.cache
def fused_adamw_supported(device):
    """Whether AdamW's fused kernel runs on ``device`` (CUDA, and the CPU in the pinned torch), tried on one tensor."""
    parameter = torch.zeros(1, device=device, requires_grad=True)
    try:
        optimizer = torch.optim.AdamW([parameter], fused=True)
        parameter.grad = torch.ones_like(parameter)
        optimizer.step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def build_optimizer(network, config):
    """AdamW at the config's rate and weight decay over ``network``'s parameters, fused where its device allows."""
    device = next(network.parameters()).device
    return torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                             fused=fused_adamw_supported(device) or None)


def compile_network(network, device):
    """``torch.compile`` of ``network``; on CUDA in mode "reduce-overhead", which replays its forward and backward
    passes as CUDA graphs, so that a step of small convolutions does not wait on hundreds of kernel launches. A
    training loop over it calls ``torch.compiler.cudagraph_mark_step_begin()`` before each step."""
    return torch.compile(network, mode="reduce-overhead" if device.type == "cuda" else None)


def update_ema(ema, network, decay):
    """ema <- decay * ema + (1 - decay) * network, for all parameters at once (``torch._foreach_lerp_``)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(network.parameters()), 1 - decay)


def training_step(training_model, network, ema, optimizer, batch, noise_generator, lr, config, autocast):
    """One AdamW step on ``batch`` at rate ``lr`` with clipped gradients, then the EMA update; returns the loss.

    ``training_model`` is the DDPM whose loss is minimised (around the compiled or DDP-wrapped network), ``network``
    the module whose gradients are clipped and averaged into ``ema``; ``lr`` is this step's rate
    (``dgm.train.learning_rate``); ``noise_generator`` draws the step's timesteps and noise."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        loss = training_model.loss(batch, generator=noise_generator, weighting=config.loss_weighting)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
    optimizer.step()
    update_ema(ema, network, config.ema_decay)
    return loss


# A time budget (``minutes``) is spent on steps timed before the run: at most PROBE_SECONDS, or a fiftieth of the
# budget, of steps after PROBE_WARMUP_STEPS untimed ones (at least PROBE_MIN_STEPS timed); the run then takes as many
# steps as fill BUDGET_SHARE of the budget at that pace, leaving the rest for the pace to drift.
PROBE_SECONDS, PROBE_WARMUP_STEPS, PROBE_MIN_STEPS, BUDGET_SHARE = 10.0, 3, 5, 0.95


def steps_for_budget(minutes, seconds_per_step):
    """The steps that fill BUDGET_SHARE of ``minutes`` at ``seconds_per_step`` (at least one)."""
    return max(1, math.floor(minutes * 60 * BUDGET_SHARE / seconds_per_step))


def standalone_step(network, config, batch, autocast):
    """A closure running one training step of ``network`` on ``batch`` as ``dgm train`` does (compiled if the config
    compiles), with an EMA, an optimizer and a noise generator of its own: what the pace and the benchmark time."""
    ema = copy.deepcopy(network).requires_grad_(False)
    optimizer = build_optimizer(network, config)
    model = ddpm_around(compile_network(network, batch.device) if config.compile else network, config).to(batch.device)
    noise_generator = torch.Generator(batch.device).manual_seed(0)

    def step():
        if config.compile:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer read
        return training_step(model, network, ema, optimizer, batch, noise_generator, config.lr, config, autocast)

    return step


def seconds_per_step(network, config, batch, autocast):
    """The pace of this process's training steps on ``batch``, timed on copies of the network (compiled if the config
    compiles), its EMA and a new optimizer under a forked random state, so the run itself is untouched (without DDP's
    traffic)."""
    step = standalone_step(copy.deepcopy(network), config, batch, autocast)
    duration = min(PROBE_SECONDS, config.minutes * 60 / 50)
    with torch.random.fork_rng(devices=[batch.device] if batch.device.type == "cuda" else []):
        timed, began = -PROBE_WARMUP_STEPS, None
        while timed < PROBE_MIN_STEPS or time.perf_counter() - began < duration:
            if timed == 0:
                began = time.perf_counter()
            step().item()  # waits for the step
            timed += 1
    return (time.perf_counter() - began) / timed
