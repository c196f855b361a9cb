"""Autoencoders and the registry: shapes, Opacus compatibility, shared parameters, costs."""

from __future__ import annotations

import warnings

import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.validators import ModuleValidator

from models import (
    ConfigError,
    ConvAutoencoder,
    DisentangledAutoencoder,
    UnknownModelError,
    available_models,
    count_parameters,
    create_model,
    model_spec,
    shared_parameter_names,
)
from models.autoencoders import count_macs

COMPACT = [name for name in available_models() if name.startswith("compact")]

# Opacus' hooks note that the input batch needs no gradient: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def test_registry_lists_the_required_models():
    assert {"conv-ae", "feddis", "compact-ae", "compact-feddis"} <= set(available_models())
    for name in available_models():
        spec = model_spec(name)
        assert spec.description and spec.parameters > 0
        assert set(spec.cost_ms) == {64, 128} and all(v > 0 for v in spec.cost_ms.values())
        assert spec.dp_step_ms is not None and spec.dp_step_ms > 0


@pytest.mark.parametrize("name", available_models())
def test_registered_parameter_counts_are_exact(name):
    model = create_model(name, image_size=64)
    spec = model_spec(name)
    assert count_parameters(model) == spec.parameters
    assert count_parameters(model, shared_parameter_names(model)) == spec.shared_parameters


@pytest.mark.parametrize("name", available_models())
def test_opacus_validator_accepts_every_model(name):
    model = create_model(name)
    assert ModuleValidator.validate(model, strict=True) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", COMPACT)
@pytest.mark.parametrize("size", [64, 128])
def test_reconstruction_has_the_input_shape(name, size):
    model = create_model(name, image_size=size)
    x = torch.randn(3, 1, size, size)
    assert model(x).shape == x.shape


def test_feddis_sized_models_work_at_64_and_128():
    for name in ("conv-ae", "feddis"):
        for size in (64, 128):
            model = create_model(name, image_size=size)
            with torch.no_grad():
                assert model(torch.randn(1, 1, size, size)).shape == (1, 1, size, size)


@pytest.mark.parametrize("name", COMPACT)
def test_one_dp_sgd_step_with_opacus(name):
    torch.manual_seed(0)
    model = create_model(name, image_size=64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 64, 64))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # secure_mode / accountant notices
        engine = PrivacyEngine()
        private, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
        )
    (x,) = next(iter(loader))
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(private(x), x)
    loss.backward()
    for parameter in private.parameters():
        assert parameter.grad_sample is not None and parameter.grad_sample.shape[0] == len(x)
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before)
    assert engine.get_epsilon(delta=1e-5) > 0


@pytest.mark.parametrize("name", COMPACT)
def test_per_sample_gradients_match_single_sample_backward(name):
    """GradSampleModule's per-sample gradients equal gradients of each sample alone."""
    torch.manual_seed(1)
    model = create_model(name, image_size=64)
    x = torch.randn(3, 1, 64, 64)
    wrapped = GradSampleModule(model, loss_reduction="sum")
    torch.nn.functional.mse_loss(wrapped(x), x, reduction="sum").backward()
    samples = {n: p.grad_sample.clone() for n, p in wrapped.named_parameters()}
    reference = create_model(name, image_size=64)
    reference.load_state_dict(model.state_dict())
    for i in range(len(x)):
        reference.zero_grad()
        torch.nn.functional.mse_loss(reference(x[i : i + 1]), x[i : i + 1], reduction="sum").backward()
        for n, p in reference.named_parameters():
            # float32 sums in different orders: compare relative to the gradient's scale.
            error = (samples["_module." + n][i] - p.grad).abs().max()
            assert error <= 1e-3 * p.grad.abs().max() + 1e-6, (n, float(error))


def test_shared_parameters_follow_feddis():
    ae = create_model("compact-ae")
    assert shared_parameter_names(ae) == [n for n, _ in ae.named_parameters()]
    feddis = create_model("compact-feddis")
    shared = shared_parameter_names(feddis)
    assert shared and all(n.startswith("shape_encoder.") for n in shared)
    assert len(shared) == len([n for n, _ in feddis.named_parameters() if n.startswith("shape_encoder.")])
    with_decoder = shared_parameter_names(feddis, include_decoder=True)
    assert set(shared) < set(with_decoder)
    assert not any(n.startswith("appearance_encoder.") for n in with_decoder)
    wrapped = GradSampleModule(create_model("compact-feddis"))
    assert shared_parameter_names(wrapped) == ["_module." + n for n in shared]
    names = dict(wrapped.named_parameters())
    assert all(n in names for n in shared_parameter_names(wrapped))


def test_feddis_codes_recombine():
    model = DisentangledAutoencoder((8, 16), (4, 8), kernel_size=3, shape_latent=4, appearance_latent=2, image_size=32)
    x = torch.randn(2, 1, 32, 32)
    shape, appearance = model.encode(x)
    assert shape.shape == (2, 4, 8, 8) and appearance.shape == (2, 2, 8, 8)
    swapped = model.decode(shape, appearance.flip(0))
    assert swapped.shape == x.shape
    torch.testing.assert_close(model.decode(shape, appearance), model(x))


def test_bad_configurations_are_refused():
    with pytest.raises(UnknownModelError, match="available: conv-ae"):
        create_model("resnet")
    with pytest.raises(ConfigError, match="multiple of 8"):
        create_model("compact-ae", image_size=60)
    with pytest.raises(ConfigError, match="odd"):
        ConvAutoencoder(kernel_size=4)
    with pytest.raises(ConfigError, match="same number of stages"):
        DisentangledAutoencoder((8, 16, 16), (4, 8))
    with pytest.raises(ValueError, match="multiples of 8"):
        create_model("compact-ae")(torch.randn(1, 1, 60, 60))


@pytest.mark.parametrize("name", available_models())
def test_compute_per_sample_is_stated_and_compact_models_are_small(name):
    """Deterministic cost check: multiply-accumulates per 64 x 64 forward pass."""
    macs = count_macs(create_model(name, image_size=64), 64)
    assert macs == count_macs(create_model(name, image_size=128), 64)  # fully convolutional
    if name.startswith("compact"):
        assert macs < 15e6  # a DP step on 16 slices is ~1 GFLOP: tens of ms on two cores
    else:
        assert 3e8 < macs < 5e8
