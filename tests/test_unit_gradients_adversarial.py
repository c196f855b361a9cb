"""Adversarial checks of dp.unit_gradients: G_u against per-record autograd sums (float64).

Every case builds a model, a loss that is a mean of per-record losses, and an owner layout;
the reference runs autograd separately on each record and sums per unit.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dp import UnitGradients, supports_unit_gradients

OWNERS = {
    "one-each": (np.arange(5), 5),
    "single-unit-all": (np.zeros(5, dtype=int), 1),
    "interleaved": (np.array([1, 0, 2, 0, 1]), 3),
}


def _reference(model, loss_fn, batch, owner, units):
    params = [p for p in model.parameters() if p.requires_grad]
    out = [torch.zeros((units, *p.shape), dtype=torch.float64) for p in params]
    for i in range(batch.shape[0]):
        grads = torch.autograd.grad(loss_fn(model, batch[i:i + 1]), params, allow_unused=True)
        for o, g in zip(out, grads):
            if g is not None:
                o[int(owner[i])] += g
    return out


def _check(model, loss_fn, batch, owner, units):
    owner = torch.as_tensor(owner)
    with UnitGradients(model) as gradients:
        got, _ = gradients.compute(loss_fn, batch, owner, units)
    expected = _reference(model, loss_fn, batch, owner, units)
    assert len(got) == len(expected) == len([p for p in model.parameters() if p.requires_grad])
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert torch.allclose(g, e, rtol=1e-9, atol=1e-11), float((g - e).abs().max())


def _mse(m, b):
    return F.mse_loss(m(b), b)


CONVS = {
    "stride2": dict(kernel_size=3, stride=2, padding=1),
    "stride2-odd-unused-rows": dict(kernel_size=3, stride=2, padding=0),
    "dilation2": dict(kernel_size=3, dilation=2, padding=2),
    "stride3-dil2-asym-pad": dict(kernel_size=(3, 2), stride=(3, 2), dilation=(2, 1), padding=(2, 0)),
    "1x1-stride2": dict(kernel_size=1, stride=2),
    "1x1-pad1": dict(kernel_size=1, padding=1),
    "1x1": dict(kernel_size=1),
    "nobias": dict(kernel_size=3, padding=1, bias=False),
}


@pytest.mark.parametrize("channels", [(1, 2), (6, 5)], ids=["grouped-form", "loop-form"])
@pytest.mark.parametrize("conv", CONVS, ids=list(CONVS))
@pytest.mark.parametrize("owners", OWNERS, ids=list(OWNERS))
def test_conv2d_variants(conv, channels, owners):
    torch.manual_seed(0)
    c_in, c_out = channels
    model = nn.Sequential(nn.Conv2d(c_in, c_out, **CONVS[conv]), nn.Tanh(), nn.Flatten(), nn.LazyLinear(3)).double()
    batch = torch.randn(5, c_in, 11, 9, dtype=torch.float64)
    model(batch)  # materialise the lazy layer
    _check(model, lambda m, b: m(b).pow(2).sum(1).mean(), batch, *OWNERS[owners])


@pytest.mark.parametrize("groups", [1, 3, 6], ids=["one-group", "three", "groups=channels"])
@pytest.mark.parametrize("owners", OWNERS, ids=list(OWNERS))
def test_group_norm_variants(groups, owners):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.GroupNorm(groups, 6), nn.SiLU(),
                          nn.Conv2d(6, 2, 3, padding=1)).double()
    batch = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    _check(model, _mse, batch, *OWNERS[owners])


def test_single_record_batch():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.GroupNorm(1, 3), nn.Conv2d(3, 1, 1)).double()
    _check(model, _mse, torch.randn(1, 1, 5, 5, dtype=torch.float64), [0], 1)


@pytest.mark.parametrize("name", ["conv-ae", "feddis", "feddis-no-consistency", "feddis-no-orthogonality",
                                  "feddis-reconstruction-only", "compact-ae", "compact-feddis"])
def test_registered_models(name):
    """Every registered model family with its own training loss (FedDis: fixed per-record gammas, so the
    consistency target is the same draw in the batched and per-record passes)."""
    from models import create_model
    from models.feddis import feddis_loss, training_loss

    torch.manual_seed(3)
    model = create_model(name, image_size=16).double()
    assert supports_unit_gradients(model)
    batch = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    gamma = torch.tensor([0.7, 1.3, 0.9, 1.1, 1.5], dtype=torch.float64)
    if hasattr(model, "losses"):
        def loss_fn(m, b):  # the batched pass: record i gets gamma[i]; the reference below passes gamma[i]
            assert b.shape[0] == 5
            return feddis_loss(m, b, model.losses, gamma=gamma)

        owner, units = np.array([1, 0, 2, 0, 1]), 3
        with UnitGradients(model) as gradients:
            got, _ = gradients.compute(loss_fn, batch, torch.as_tensor(owner), units)
        params = [p for p in model.parameters() if p.requires_grad]
        expected = [torch.zeros((units, *p.shape), dtype=torch.float64) for p in params]
        for i in range(5):
            loss = feddis_loss(model, batch[i:i + 1], model.losses, gamma=gamma[i:i + 1])
            for e, g in zip(expected, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    e[owner[i]] += g
        for g, e in zip(got, expected):
            assert torch.allclose(g, e, rtol=1e-9, atol=1e-11), float((g - e).abs().max())
    else:
        _check(model, training_loss(model), batch, np.array([1, 0, 2, 0, 1]), 3)


class _Shared(nn.Module):
    """One Linear module used twice, and a second module holding the SAME weight Parameter."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))


@pytest.mark.parametrize("owners", OWNERS, ids=list(OWNERS))
def test_parameter_shared_across_layers(owners):
    torch.manual_seed(4)
    model = _Shared().double()
    _check(model, lambda m, b: m(b).pow(2).sum(1).mean(), torch.randn(5, 4, dtype=torch.float64), *OWNERS[owners])


def test_frozen_parameters_are_left_out_and_the_rest_exact():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.GroupNorm(1, 3), nn.Conv2d(3, 1, 3, padding=1)).double()
    model[0].weight.requires_grad_(False)  # frozen weight, trainable bias in the same layer
    for p in model[1].parameters():
        p.requires_grad_(False)
    _check(model, _mse, torch.randn(5, 1, 6, 6, dtype=torch.float64), np.array([1, 0, 2, 0, 1]), 3)


def test_linear_on_sequence_input():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    _check(model, lambda m, b: m(b).pow(2).mean(), torch.randn(5, 7, 3, dtype=torch.float64), np.array([1, 0, 2, 0, 1]), 3)


class _RawParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.lin(x) * self.scale


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.ConvTranspose2d(1, 2, 3)),
    lambda: nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)),
    lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")),
    lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")),
    lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)),
    lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2, affine=True)),
    lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 2, 2])),
    _RawParam,
], ids=["convtranspose", "grouped-conv", "reflect-pad", "same-pad", "batchnorm", "instancenorm", "layernorm",
        "raw-parameter"])
def test_unsupported_trainable_layers_are_refused(make):
    model = make()
    assert not supports_unit_gradients(model)
    with pytest.raises(ValueError, match="Conv2d"):
        UnitGradients(model)


def test_frozen_unsupported_layer_is_fine():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Conv2d(2, 1, 1)).double().eval()
    for p in model[1].parameters():
        p.requires_grad_(False)
    assert supports_unit_gradients(model)
    _check(model, _mse, torch.randn(5, 1, 5, 5, dtype=torch.float64), np.array([1, 0, 2, 0, 1]), 3)
