"""The MNIST U-Net: shapes, the time embedding, self-attention, depth, memory formats, the cost of a training step,
argument checks."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dgm.unet import ResidualBlock, SelfAttention, UNet, timestep_embedding, training_flops

TINY = (4, 8, 8)


def test_output_has_the_input_shape(one_thread):
    torch.manual_seed(0)
    model = UNet(channels=TINY)
    x = torch.randn(3, 1, 28, 28)
    assert model(x, torch.tensor([0, 10, 999])).shape == x.shape
    assert model(x, 5).shape == x.shape  # one timestep for the whole batch


def test_the_output_depends_on_the_timestep(one_thread):
    torch.manual_seed(0)
    model = UNet(channels=TINY)
    torch.nn.init.normal_(model.out.weight)
    x = torch.randn(1, 1, 28, 28)
    assert not torch.allclose(model(x, 0), model(x, 500))


def test_timestep_embedding_is_cosines_then_sines():
    t = torch.tensor([0, 1, 999])
    embedding = timestep_embedding(t, 16)
    assert embedding.shape == (3, 16)
    assert torch.equal(embedding[0], torch.cat([torch.ones(8), torch.zeros(8)]))
    assert math.isclose(float(embedding[1, 0]), math.cos(1.0), rel_tol=1e-6)
    assert math.isclose(float(embedding[1, 8]), math.sin(1.0), rel_tol=1e-6)
    assert len({tuple(row.tolist()) for row in timestep_embedding(torch.arange(1000), 16)}) == 1000
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(t, 15)


def test_self_attention_is_softmax_of_scaled_query_key_products_applied_to_the_values(one_thread):
    torch.manual_seed(0)
    layer, heads, head_dim = SelfAttention(8, groups=4, heads=2), 2, 4
    x = torch.randn(2, 8, 7, 7)
    q, k, v = layer.qkv(layer.norm(x)).reshape(2, 3, heads, head_dim, 49).unbind(1)  # (batch, head, dim, pixel)
    weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(head_dim), dim=-1)
    attended = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(2, 8, 7, 7)
    assert torch.allclose(layer(x), x + layer.project(attended), atol=1e-5)


def test_self_attention_lets_one_corner_see_the_other(one_thread):
    torch.manual_seed(0)
    layer = SelfAttention(8, groups=4)
    x = torch.randn(1, 8, 7, 7)
    changed = x.clone()
    changed[..., 0, 0] += 1
    assert not torch.allclose(layer(changed)[..., 6, 6], layer(x)[..., 6, 6])
    with pytest.raises(ValueError, match="divisible by heads"):
        SelfAttention(6, groups=2, heads=4)


def parameter_count(module):
    return sum(parameter.numel() for parameter in module.parameters())


def test_depth_adds_blocks_at_half_and_quarter_resolution_and_depth_one_keeps_the_old_names(one_thread):
    shallow, deep = UNet(channels=TINY), UNet(channels=TINY, depth=3)
    assert not any("_more." in name for name in shallow.state_dict())  # checkpoints from before depth still load
    _, c1, c2 = TINY
    half, quarter = (parameter_count(ResidualBlock(c, c, deep.embedding_dim, deep.groups)) for c in (c1, c2))
    assert parameter_count(deep) - parameter_count(shallow) == 2 * (2 * half + quarter)
    x = torch.randn(2, 1, 28, 28)
    assert deep(x, torch.tensor([1, 900])).shape == x.shape


@pytest.mark.parametrize("attention, depth", [(False, 1), (True, 1), (False, 2)])
def test_channels_last_gives_the_same_output(one_thread, attention, depth):
    torch.manual_seed(0)
    model = UNet(channels=TINY, attention=attention, depth=depth)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    expected = model(x, t)
    model.to(memory_format=torch.channels_last)
    assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last), t), expected, atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="channels"):
        UNet(channels=(8, 16))
    for depth in (0, 1.5, True):
        with pytest.raises(ValueError, match="depth"):
            UNet(channels=TINY, depth=depth)
    with pytest.raises(ValueError, match="must be even"):
        UNet(channels=(3, 8, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        UNet(channels=TINY)(torch.randn(2, 1, 30, 30), 0)
    with pytest.raises(ValueError, match="x must have shape"):
        UNet(channels=TINY)(torch.randn(2, 3, 28, 28), 0)


def test_training_flops_count_a_forward_and_a_backward_pass(one_thread):
    model = UNet(channels=TINY)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28), 0)
    forward = counter.get_total_flops()
    flops = training_flops(model)
    # The backward pass costs one to two forward passes: weight gradients everywhere, input gradients for all
    # layers but the first.
    assert 2 * forward < flops <= 3 * forward
    assert training_flops(model, batch_size=4) == 4 * flops
    assert all(parameter.grad is None for parameter in model.parameters())
    assert training_flops(UNet(channels=TINY).double()) == flops  # the inputs follow the network's dtype
