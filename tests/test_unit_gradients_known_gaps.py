"""FAILS on main (review finding): a parameter used outside its own layer's forward is silently dropped.

A supported layer's weight used functionally elsewhere (tied encoder/decoder weights:
``F.linear(h, enc.weight.t())``) passes supports_unit_gradients, but only the hooked call
contributes to G_u: the functional use's share of the gradient is missing, with no error.
Correct behaviour: refuse (or fall back to a path that is exact), or compute it exactly.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dp import UnitGradients, supports_unit_gradients


class _TiedFunctional(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 3)

    def forward(self, x):
        return F.linear(torch.tanh(self.enc(x)), self.enc.weight.t())


def test_parameter_used_outside_its_layer_is_refused_or_exact():
    torch.manual_seed(0)
    model = _TiedFunctional().double()
    batch = torch.randn(4, 4, dtype=torch.float64)

    def loss_fn(m, b):
        return F.mse_loss(m(b), b)

    if not supports_unit_gradients(model):
        with pytest.raises(ValueError):
            UnitGradients(model)
        return
    try:
        with UnitGradients(model) as gradients:
            got, _ = gradients.compute(loss_fn, batch, torch.arange(4), 4)
    except ValueError:
        return  # refused at compute time: acceptable
    params = list(model.parameters())
    for i in range(4):
        expected = torch.autograd.grad(loss_fn(model, batch[i:i + 1]), params)
        for g, e in zip(got, expected):
            assert torch.allclose(g[i], e, rtol=1e-9, atol=1e-11), float((g[i] - e).abs().max())
