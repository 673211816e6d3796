"""A small U-Net noise predictor eps_theta(x_t, t) for 1 x 28 x 28 MNIST, sized to train on a CPU.

Problem 1(d). Two resolutions below 28 x 28 (14, 7), one residual block per level (optionally more at 14 x 14 and
7 x 7), a sinusoidal embedding of the timestep added inside every block, and optionally self-attention at 7 x 7.
Each residual block normalises once (not twice, as in Ho et al. 2020): on a CPU a normalisation pass costs memory
bandwidth, not FLOPs, so fewer of them bring a training step closer to the machine's matmul rate.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

MAX_PERIOD = 10_000  # longest wavelength of the sinusoidal embedding, as in Vaswani et al. (2017)


def timestep_embedding(t, dim):
    """Sinusoidal embedding of integer timesteps t (batch,) into (batch, dim): cosines then sines of
    t / 10000^(i/half)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    frequencies = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.to(torch.float32)[:, None] * frequencies[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResidualBlock(nn.Module):
    """norm -> SiLU -> conv, SiLU -> conv, plus a (1 x 1 if needed) skip connection; the time embedding is added
    after the first conv, as in Ho et al. (2020), through a linear map (theirs has a SiLU before it; without one, the
    map composes with the embedding MLP's last layer)."""

    def __init__(self, in_channels, out_channels, embedding_dim, groups):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)  # the time term is its bias
        self.time = nn.Linear(embedding_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x, embedding):
        h = self.conv1(F.silu(self.norm(x))) + self.time(embedding)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, added back (norm -> q, k, v -> attend -> 1 x 1).

    At the quarter resolution (7 x 7 for MNIST) it lets every position see the whole digit in one layer, as the
    attention layers of Ho et al. (2020) at 16 x 16 do; its cost there is small next to the convolutions'.
    """

    def __init__(self, channels, groups, heads=4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, height * width).unbind(1)
        attended = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.project(attended.transpose(-1, -2).reshape(batch, channels, height, width))


class UNet(nn.Module):
    """eps_theta(x_t, t) for images (batch, image_channels, H, W) with H and W divisible by 4 (28 for MNIST).

    ``channels`` are the widths at full, half and quarter resolution; ``groups`` the GroupNorm groups;
    ``attention`` adds self-attention after the middle block, at the quarter resolution; ``depth`` is the number of
    residual blocks at the half and quarter resolutions on each path (the extra ones add layers where the digit's
    shape is drawn).
    """

    def __init__(self, image_channels=1, channels=(32, 64, 64), groups=8, attention=False, depth=1):
        super().__init__()
        if len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be three positive widths (full, half, quarter), got {channels!r}")
        if int(channels[0]) % 2:
            raise ValueError(f"the first width sizes the sinusoidal time embedding, so it must be even, got "
                             f"{channels!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        c0, c1, c2 = (int(c) for c in channels)
        self.image_channels, self.channels, self.groups = image_channels, (c0, c1, c2), groups
        self.attention, self.depth = attention, depth
        self.embedding_dim = 4 * c0
        self.time_mlp = nn.Sequential(nn.Linear(c0, self.embedding_dim), nn.SiLU(),
                                      nn.Linear(self.embedding_dim, self.embedding_dim))
        self.stem = nn.Conv2d(image_channels, c0, 3, padding=1)
        self.down0 = self.block(c0, c0)
        self.downsample0 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.down1 = self.block(c1, c1)
        self.down1_more = self.more_blocks(c1)
        self.downsample1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.middle = self.block(c2, c2)
        self.middle_more = self.more_blocks(c2)
        self.middle_attention = SelfAttention(c2, groups) if attention else nn.Identity()
        self.upsample1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.up1 = self.block(2 * c1, c1)
        self.up1_more = self.more_blocks(c1)
        self.upsample0 = nn.ConvTranspose2d(c1, c0, 2, stride=2)
        self.up0 = self.block(2 * c0, c0)
        self.out_norm = nn.GroupNorm(min(groups, c0), c0)
        self.out = nn.Conv2d(c0, image_channels, 3, padding=1)

    def more_blocks(self, width):
        """The depth - 1 blocks that follow a level's first (none at depth 1)."""
        return nn.ModuleList(self.block(width, width) for _ in range(self.depth - 1))

    def block(self, in_channels, out_channels):
        """A residual block with this U-Net's time embedding and groups."""
        return ResidualBlock(in_channels, out_channels, self.embedding_dim, self.groups)

    @staticmethod
    def run_blocks(h, first, more, embedding):
        """h through a level's first block and then its extra ones."""
        for block in (first, *more):
            h = block(h, embedding)
        return h

    def forward(self, x, t):
        if x.ndim != 4 or x.shape[1] != self.image_channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"x must have shape (batch, {self.image_channels}, H, W) with H, W divisible by 4, "
                             f"got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device).expand(len(x))
        embedding = self.time_mlp(timestep_embedding(t, self.channels[0]).to(x.dtype))
        h0 = self.down0(self.stem(x), embedding)
        h1 = self.run_blocks(self.downsample0(h0), self.down1, self.down1_more, embedding)
        h = self.middle_attention(self.run_blocks(self.downsample1(h1), self.middle, self.middle_more, embedding))
        h = self.run_blocks(torch.cat([self.upsample1(h), h1], dim=1), self.up1, self.up1_more, embedding)
        h = self.up0(torch.cat([self.upsample0(h), h0], dim=1), embedding)
        return self.out(F.silu(self.out_norm(h)))

    def config(self):
        """The constructor arguments, for checkpoints' JSON."""
        return {"image_channels": self.image_channels, "channels": list(self.channels), "groups": self.groups,
                "attention": self.attention, "depth": self.depth}


def training_flops(network, batch_size=1):
    """FLOPs of one forward and backward pass of ``network`` on a batch of 28 x 28 images, what a training step
    costs before the optimizer's elementwise work: how ``benchmarks/train_throughput.py`` sizes U-Nets.
    The gradients are returned to the counter, not stored, so the network's ``.grad`` stays as it was."""
    like = next(network.parameters())
    x = like.new_zeros(batch_size, network.image_channels, 28, 28)
    with FlopCounterMode(display=False) as counter:
        output = network(x, torch.zeros(batch_size, dtype=torch.long, device=like.device)).square().mean()
        torch.autograd.grad(output, list(network.parameters()))
    return counter.get_total_flops()
