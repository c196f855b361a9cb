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
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=5, learning_rate=1e-2,
                         privacy_unit="slice")
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
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=1, privacy_unit="slice")
    result = train_dp_sgd(model, data, config, site="h1", round_index=0, weights=start)
    for name, p in model.named_parameters():
        assert torch.allclose(p.detach(), result.delta[name])


def test_noise_dominates_with_huge_noise_multiplier(data):
    """With sigma = 1e4 the update is essentially noise of std lr-scaled sigma*C/(q*N_public): the delta
    is large and independent of the data (N_public: the declared public size, here the true 64)."""
    model = tiny_autoencoder()
    config = DpSgdConfig(noise_multiplier=1e4, max_grad_norm=1.0, sample_rate=0.25, steps=1, optimizer="sgd",
                         learning_rate=1.0, privacy_unit="slice", public_size=64)
    result = train_dp_sgd(model, data, config, site="h1", round_index=0)
    delta = torch.cat([d.flatten() for d in result.delta.values()]).numpy()
    expected_std = 1e4 * 1.0 / (0.25 * 64)
    assert np.std(delta) == pytest.approx(expected_std, rel=0.15)


def test_insecure_mode_is_recorded(data):
    model = tiny_autoencoder()
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=1, secure_mode=False,
                         privacy_unit="slice")
    result = train_dp_sgd(model, data, config, site="h1", round_index=0, generator=torch.Generator().manual_seed(1))
    assert result.event.secure_rng is False


def test_batchnorm_refused_then_fixed(data):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=1, privacy_unit="slice")
    with pytest.raises(ModelNotPrivateError, match="BatchNorm"):
        train_dp_sgd(model, data, config, site="h1", round_index=0)
    with pytest.warns(UserWarning, match="GroupNorm"):
        fixed = make_private_compatible(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fixed.modules())
    train_dp_sgd(fixed, data, config, site="h1", round_index=0)


@pytest.mark.parametrize("kwargs", [
    {"noise_multiplier": 0.0}, {"max_grad_norm": -1.0}, {"sample_rate": 0.0}, {"sample_rate": 1.5},
    {"steps": 0}, {"optimizer": "lbfgs"}, {"privacy_unit": "hospital"}, {"public_size": 0},
    {"max_slices_per_patient": 0}, {"public_size": 2.5},
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


# -- patient level (the default unit) -----------------------------------------------------------


from .seeded_randomness import SeededTestRandomness  # noqa: E402


def reference_patient_sum(model, data, groups, clip):
    """Per-example gradients by looping over slices with plain autograd, summed per patient, clipped."""
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for group in groups:
        summed = [torch.zeros_like(p) for p in params]
        for i in group.tolist():
            x = data[i:i + 1]
            grads = torch.autograd.grad(F.mse_loss(model(x), x), params)
            summed = [s + g for s, g in zip(summed, grads)]
        norm = torch.sqrt(sum((s ** 2).sum() for s in summed))
        factor = min(1.0, clip / float(norm))
        total = [t + factor * s for t, s in zip(total, summed)]
    return total


@pytest.mark.parametrize("clip", [1e-3, 1e3])  # every patient clipped / none clipped
def test_clipped_patient_sum_matches_autograd_reference(data, clip):
    from opacus import GradSampleModule

    from dp.training import clipped_patient_sum, patient_groups

    model = tiny_autoencoder()
    patients = np.repeat(np.arange(8), 8)  # 8 patients of 8 slices
    groups = patient_groups(patients, 64)
    chosen = [groups[i] for i in (0, 3, 5, 6)]
    expected = reference_patient_sum(model, data, chosen, clip)
    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    try:
        got, loss, clipped = clipped_patient_sum(module, data, chosen, clip)
    finally:
        module.to_standard_module()
    assert clipped == (4 if clip < 1 else 0)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5), float((g - e).abs().max())
    if clip < 1:  # each patient contributes exactly C: the total has norm <= 4C
        assert float(torch.sqrt(sum((g ** 2).sum() for g in got))) <= 4 * clip * (1 + 1e-5)


def test_patient_sum_sensitivity_is_one_patient(data):
    """Adding a whole patient (all their slices) moves the clipped sum by at most C, whatever their
    slice count; with per-slice clipping a patient of k slices would move it by up to k*C."""
    from opacus import GradSampleModule

    from dp.training import clipped_patient_sum, patient_groups

    model = tiny_autoencoder()
    patients = np.array([0] * 40 + [1] * 12 + [2] * 12)
    groups = patient_groups(patients, 64)
    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    try:
        with_big, _, _ = clipped_patient_sum(module, data * 5, groups, 0.01)
        without, _, _ = clipped_patient_sum(module, data * 5, groups[1:], 0.01)
    finally:
        module.to_standard_module()
    moved = float(torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(with_big, without))))
    assert moved <= 0.01 * (1 + 1e-5)


def test_patient_level_event_and_public_normaliser(data):
    """Patient level: the event says unit 'patient'; with huge sigma the delta is noise of std
    sigma*C/(q*N_public) - the declared public size, not the private record count."""
    model = tiny_autoencoder()
    patients = np.repeat(np.arange(16), 4)
    config = DpSgdConfig(noise_multiplier=1e4, max_grad_norm=1.0, sample_rate=0.5, steps=1, optimizer="sgd",
                         learning_rate=1.0, public_size=100)
    result = train_dp_sgd(model, data, config, site="h1", round_index=2, patients=patients)
    assert result.event.unit == "patient" and result.event.guarantee == "patient-level, add/remove one patient"
    assert result.event.sample_rate == 0.5 and result.event.round == 2
    delta = torch.cat([d.flatten() for d in result.delta.values()]).numpy()
    assert np.std(delta) == pytest.approx(1e4 / (0.5 * 100), rel=0.15)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_patient_level_needs_patients_and_refuses_misaligned_ids(data):
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=1)
    with pytest.raises(InvalidPrivacyParameterError, match="patient of each record"):
        train_dp_sgd(tiny_autoencoder(), data, config, site="h1", round_index=0)
    with pytest.raises(InvalidPrivacyParameterError, match="one patient id per record"):
        train_dp_sgd(tiny_autoencoder(), data, config, site="h1", round_index=0, patients=np.zeros(10))


def test_injected_randomness_is_test_only_and_deterministic(data):
    patients = np.repeat(np.arange(8), 8)
    config = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=3)
    with pytest.raises(InvalidPrivacyParameterError, match="secure_mode=False"):
        train_dp_sgd(tiny_autoencoder(), data, config, site="h1", round_index=0, patients=patients,
                     randomness=SeededTestRandomness(0))
    insecure = DpSgdConfig(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=3, secure_mode=False)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_autoencoder()
        result = train_dp_sgd(model, data, insecure, site="h1", round_index=0, patients=patients,
                              randomness=SeededTestRandomness(7))
        runs.append(result)
    assert runs[0].event.secure_rng is False
    for name in runs[0].delta:
        assert torch.equal(runs[0].delta[name], runs[1].delta[name])


def test_slice_cap_is_public_and_bounded(data):
    """max_slices_per_patient uses at most that many (evenly spaced) slices of each sampled patient."""
    from opacus import GradSampleModule

    from dp.training import clipped_patient_sum, patient_groups

    model = tiny_autoencoder()
    groups = patient_groups(np.repeat(np.arange(2), 32), 64)
    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    try:
        capped, _, _ = clipped_patient_sum(module, data, groups, 1e3, max_slices_per_patient=4)
    finally:
        module.to_standard_module()
    used = [g[torch.linspace(0, 31, 4).round().long()] for g in groups]
    expected = reference_patient_sum(model, data, used, 1e3)
    for g, e in zip(capped, expected):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5)


# -- per-unit gradients in one pass (dp.unit_gradients; issue 20) -------------------------------


def supported_autoencoder():
    """Every exact form of dp.unit_gradients: grouped (1 input channel), per-unit kernel (8 -> 8),
    1 x 1 product, GroupNorm, and a Linear acting on the last axis (extra leading dims)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 6, 1),
        nn.Upsample(scale_factor=2), nn.Conv2d(6, 1, 3, padding=1), nn.Linear(16, 16),
    ).double()


UNIT_LAYOUTS = {
    "slice": (np.arange(12), 12),  # every record its own unit
    "patient-equal": (np.repeat(np.arange(3), 4), 3),
    "patient-uneven-interleaved": (np.array([0, 1, 0, 2, 2, 2, 0, 1, 3, 2, 0, 0]), 4),
}


@pytest.mark.parametrize("layout", UNIT_LAYOUTS, ids=list(UNIT_LAYOUTS))
def test_unit_gradients_equal_per_record_autograd_sums(data, layout):
    """G_u from one pass equals sum over u's records of each record's own autograd gradient (float64)."""
    import torch.nn.functional as F

    from dp import UnitGradients, supports_unit_gradients

    torch.manual_seed(1)
    model = supported_autoencoder()
    assert supports_unit_gradients(model) and not supports_unit_gradients(tiny_autoencoder())
    owner, units = UNIT_LAYOUTS[layout]
    batch = data[:12].double()
    params = list(model.parameters())
    with UnitGradients(model) as gradients:
        got, loss = gradients.compute(lambda m, b: F.mse_loss(m(b), b), batch, torch.as_tensor(owner), units)
    assert all(not m._forward_hooks for m in model.modules())
    for u in range(units):
        expected = [torch.zeros_like(p) for p in params]
        for i in np.flatnonzero(owner == u):
            x = batch[i:i + 1]
            expected = [e + g for e, g in zip(expected, torch.autograd.grad(F.mse_loss(model(x), x), params))]
        for g, e in zip(got, expected):
            assert torch.allclose(g[u], e, rtol=1e-10, atol=1e-12), float((g[u] - e).abs().max())


def test_every_registered_model_takes_the_one_pass_path():
    """dp.training's docstring: every model of `models` has only Conv2d / GroupNorm / Linear trainable layers."""
    from dp import supports_unit_gradients
    from models import available_models, create_model

    names = available_models()
    assert "compact-ae" in names
    for name in names:
        assert supports_unit_gradients(create_model(name, image_size=64)), name


def test_unit_gradients_add_every_call_and_skip_no_grad_calls(data):
    """A layer applied twice adds both calls' shares; a call under no_grad (a fixed target) adds nothing."""
    from dp import UnitGradients

    torch.manual_seed(2)
    model = supported_autoencoder()
    batch = data[:6].double()
    params = list(model.parameters())

    def loss_fn(m, b):
        with torch.no_grad():
            target = m(b)
        return ((m(m(b)) - b) ** 2 + (m(b) - target) ** 2).flatten(1).mean(1).mean()

    with UnitGradients(model) as gradients:
        got, _ = gradients.compute(loss_fn, batch, torch.arange(6), 6)
    for i in range(6):
        expected = torch.autograd.grad(loss_fn(model, batch[i:i + 1]), params)
        for g, e in zip(got, expected):
            assert torch.allclose(g[i], e, rtol=1e-10, atol=1e-12)


def test_unit_gradients_refuse_calls_that_mix_records(data):
    from dp import UnitGradients

    model = supported_autoencoder()
    with UnitGradients(model) as gradients, pytest.raises(ValueError, match="row i of every call"):
        gradients.compute(lambda m, b: ((m(b[:3]) - b[:3]) ** 2).mean(), data[:6].double(), torch.arange(6), 6)
    with UnitGradients(model) as gradients, pytest.raises(ValueError, match="at least one record"):
        gradients.compute(lambda m, b: ((m(b) - b) ** 2).mean(), data[:6].double(), torch.arange(6), 7)
    with pytest.raises(ValueError, match="Conv2d"):
        UnitGradients(tiny_autoencoder())


@pytest.mark.parametrize("clip", [1e-3, 1e3])  # every unit clipped / none clipped
@pytest.mark.parametrize("unit", ["slice", "patient"])
def test_clipped_unit_sum_matches_autograd_reference(data, clip, unit):
    """The one-pass clipped sum equals the autograd reference, at both privacy units."""
    from dp import UnitGradients, clipped_unit_sum
    from dp.training import patient_groups

    torch.manual_seed(3)
    model = supported_autoencoder()
    data = data.double()
    if unit == "slice":
        chosen = [torch.tensor([i]) for i in (1, 5, 9, 17, 40)]
    else:
        groups = patient_groups(np.repeat(np.arange(8), 8), 64)
        chosen = [groups[i] for i in (0, 3, 5, 6)]
    expected = reference_patient_sum(model, data, chosen, clip)
    with UnitGradients(model) as gradients:
        got, loss, clipped = clipped_unit_sum(gradients, data, chosen, clip)
    assert clipped == (len(chosen) if clip < 1 else 0)
    assert not any(g.requires_grad for g in got)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-9, atol=1e-12), float((g - e).abs().max())
    if clip < 1:
        assert float(torch.sqrt(sum((g ** 2).sum() for g in got))) <= len(chosen) * clip * (1 + 1e-9)


@pytest.mark.parametrize("unit", ["slice", "patient"])
def test_one_pass_training_equals_the_opacus_path(data, unit, monkeypatch):
    """train_dp_sgd on a supported model (one-pass per-unit gradients) gives the same delta as the
    Opacus path (make_private at slice level, GradSampleModule at patient level) with the same
    sampling and noise: the same DP-SGD, only computed differently."""
    import dp.unit_gradients as unit_gradients

    patients = np.repeat(np.arange(16), 4) if unit == "patient" else None
    config = DpSgdConfig(noise_multiplier=0.5, max_grad_norm=0.05, sample_rate=0.3, steps=3, optimizer="sgd",
                         learning_rate=0.5, secure_mode=False, privacy_unit=unit, public_size=64)
    deltas = []
    for one_pass in (True, False):
        monkeypatch.setattr(unit_gradients, "supports_unit_gradients", lambda model, flag=one_pass: flag)
        torch.manual_seed(0)
        model = supported_autoencoder().float()
        result = train_dp_sgd(model, data, config, site="h1", round_index=0, patients=patients,
                              randomness=SeededTestRandomness(11))
        assert result.event.unit == unit and result.empty_steps == 0
        assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
        deltas.append(result.delta)
    for name in deltas[0]:
        assert torch.allclose(deltas[0][name], deltas[1][name], rtol=1e-4, atol=1e-6), name
    assert any(float(d.abs().sum()) > 0 for d in deltas[0].values())


@pytest.mark.parametrize("unit", ["slice", "patient"])
def test_one_pass_training_equals_the_opacus_path_on_compact_ae(unit, monkeypatch):
    """The same check on the demo's model and optimiser (compact-ae at 64 x 64, Adam)."""
    import dp.unit_gradients as unit_gradients
    from models import create_model

    torch.manual_seed(0)
    data = torch.rand(24, 1, 64, 64)
    patients = np.repeat(np.arange(6), 4) if unit == "patient" else None
    config = DpSgdConfig(noise_multiplier=0.9, max_grad_norm=1.0, sample_rate=0.4, steps=3, secure_mode=False,
                         privacy_unit=unit, public_size=6 if unit == "patient" else 24)
    deltas = []
    for one_pass in (True, False):
        monkeypatch.setattr(unit_gradients, "supports_unit_gradients", lambda model, flag=one_pass: flag)
        torch.manual_seed(0)
        result = train_dp_sgd(create_model("compact-ae", image_size=64), data, config, site="h1", round_index=0,
                              patients=patients, randomness=SeededTestRandomness(5))
        deltas.append(result.delta)
    for name in deltas[0]:
        assert torch.allclose(deltas[0][name], deltas[1][name], rtol=1e-4, atol=1e-7), name
