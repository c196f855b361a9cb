"""A parameter used outside its own layer's calls is refused, not silently dropped from G_u (review finding).

A supported layer's weight used functionally elsewhere (tied encoder/decoder weights:
``F.linear(h, enc.weight.t())``) passes supports_unit_gradients, and only the hooked call would
contribute to G_u. dp.unit_gradients walks the loss's graph and refuses such a loss; a Parameter
shared by two supported layers (every use is a hooked call) stays exact.
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


def _reconstruction_loss(m, b):
    return F.mse_loss(m(b), b)


def _model_and_batch(cls, seed, rows):
    torch.manual_seed(seed)
    return cls().double(), torch.randn(rows, 4, dtype=torch.float64)


def test_parameter_used_outside_its_layer_is_refused():
    model, batch = _model_and_batch(_TiedFunctional, 0, 4)
    loss_fn = _reconstruction_loss
    assert supports_unit_gradients(model)  # the structure alone cannot tell: the refusal comes per loss
    with UnitGradients(model) as gradients:
        with pytest.raises(ValueError, match="outside its layer"):
            gradients.compute(loss_fn, batch, torch.arange(4), 4)


class _SharedBetweenLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight  # one Parameter, two supported layers: every use is a hooked call

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_a_parameter_shared_by_two_supported_layers_is_exact():
    model, batch = _model_and_batch(_SharedBetweenLayers, 1, 3)
    loss_fn = _reconstruction_loss
    with UnitGradients(model) as gradients:
        got, _ = gradients.compute(loss_fn, batch, torch.arange(3), 3)
    params = [p for p in model.parameters() if p.requires_grad]
    for i in range(3):
        expected = torch.autograd.grad(loss_fn(model, batch[i:i + 1]), params)
        for g, e in zip(got, expected):
            assert torch.allclose(g[i], e, rtol=1e-9, atol=1e-11), float((g[i] - e).abs().max())
