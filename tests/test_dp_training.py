"""Local DP-SGD with Opacus: deltas, events, validation, CSPRNG sampling and noise."""

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
nn = torch.nn

from dp import DpSgdConfig, ModelNotPrivateError, make_private_compatible, train_dp_sgd  # noqa: E402
from dp.errors import InvalidPrivacyParameterError  # noqa: E402
from dp.training import csprng_gaussian, csprng_poisson_mask  # noqa: E402


def tiny_autoencoder():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
    )


@pytest.fixture
def data():
    torch.manual_seed(0)
    return torch.rand(64, 1, 16, 16)


def test_training_returns_delta_and_event(data):
    model = tiny_autoencoder()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=5, learning_rate=1e-2)
    result = train_dp_sgd(model, data, config, site="h1", round_index=3)
    assert result.event.site == "h1" and result.event.round == 3 and result.event.steps == 5
    assert result.event.sample_rate == 0.25 and result.event.secure_rng
    assert set(result.delta) == set(before)
    for name, p in model.named_parameters():
        assert torch.allclose(p.detach() - before[name], result.delta[name])
    assert any(float(d.abs().sum()) > 0 for d in result.delta.values())
    # Opacus' hooks are removed: the model is a plain module again.
    assert all(not m._forward_hooks for m in model.modules())


def test_training_starts_from_given_weights(data):
    model = tiny_autoencoder()
    start = {n: torch.zeros_like(p) for n, p in model.state_dict().items()}
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=1)
    result = train_dp_sgd(model, data, config, site="h1", round_index=0, weights=start)
    for name, p in model.named_parameters():
        assert torch.allclose(p.detach(), result.delta[name])


def test_noise_dominates_with_huge_noise_multiplier(data):
    """With sigma = 1e4 the update is essentially noise of std lr-scaled sigma*C/(qN): the delta is
    large and independent of the data."""
    model = tiny_autoencoder()
    config = DpSgdConfig(noise_multiplier=1e4, max_grad_norm=1.0, sample_rate=0.25, steps=1, optimizer="sgd",
                         learning_rate=1.0)
    result = train_dp_sgd(model, data, config, site="h1", round_index=0)
    delta = torch.cat([d.flatten() for d in result.delta.values()]).numpy()
    expected_std = 1e4 * 1.0 / (0.25 * 64)
    assert np.std(delta) == pytest.approx(expected_std, rel=0.15)


def test_insecure_mode_is_recorded(data):
    model = tiny_autoencoder()
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=1, secure_mode=False)
    result = train_dp_sgd(model, data, config, site="h1", round_index=0, generator=torch.Generator().manual_seed(1))
    assert result.event.secure_rng is False


def test_batchnorm_refused_then_fixed(data):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=1)
    with pytest.raises(ModelNotPrivateError, match="BatchNorm"):
        train_dp_sgd(model, data, config, site="h1", round_index=0)
    with pytest.warns(UserWarning, match="GroupNorm"):
        fixed = make_private_compatible(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fixed.modules())
    train_dp_sgd(fixed, data, config, site="h1", round_index=0)


@pytest.mark.parametrize("kwargs", [
    {"noise_multiplier": 0.0}, {"max_grad_norm": -1.0}, {"sample_rate": 0.0}, {"sample_rate": 1.5},
    {"steps": 0}, {"optimizer": "lbfgs"},
])
def test_bad_config_refused(kwargs):
    base = dict(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, steps=1)
    with pytest.raises(InvalidPrivacyParameterError):
        DpSgdConfig(**(base | kwargs))


def test_csprng_gaussian_is_standard_normal():
    draws = csprng_gaussian((200_000,), 2.0)
    assert abs(draws.mean()) < 0.03
    assert draws.std() == pytest.approx(2.0, rel=0.01)
    assert stats.kstest(draws / 2.0, "norm").pvalue > 1e-6


def test_csprng_poisson_mask_rate():
    masks = np.stack([csprng_poisson_mask(1000, 0.1) for _ in range(50)])
    assert masks.mean() == pytest.approx(0.1, abs=0.01)
    assert csprng_poisson_mask(10, 1.0).all()
    # independent across calls
    assert not np.array_equal(masks[0], masks[1])
