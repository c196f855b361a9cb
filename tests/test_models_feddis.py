"""The FedDis objective: where each loss's gradient goes, what is shared, per-sample gradients, DP-SGD."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule

from dp import DpSgdConfig, train_dp_sgd
from models import (
    ConfigError,
    DisentangledAutoencoder,
    FedDisLosses,
    available_models,
    create_model,
    feddis_loss,
    model_spec,
    shared_parameter_names,
    training_loss,
)
from models.feddis import feddis_loss_terms, gamma_augment

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

FEDDIS = [name for name in available_models() if model_spec(name).family == "feddis"]
PARTS = ("shape_encoder.", "appearance_encoder.", "decoder.")


def _small(losses=None, seed=0):
    torch.manual_seed(seed)
    return DisentangledAutoencoder((8, 16), (4, 8), kernel_size=3, shape_latent=4, appearance_latent=2,
                                   image_size=32, losses=losses)


def _batch(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 32, 32, generator=g)
    x[:, :, :4] = 0.0  # a dark background band, as in skull-stripped slices
    return x


def _reached(model, term) -> set[str]:
    """Which parts of ``model`` get a non-zero gradient from ``term`` (a scalar)."""
    model.zero_grad(set_to_none=True)
    term.backward()
    reached = set()
    for name, p in model.named_parameters():
        if p.grad is not None and p.grad.abs().max() > 0:
            reached.add(next(part for part in PARTS if name.startswith(part)))
    return reached


def _positive_orthogonality(losses):
    """A (model, batch) whose orthogonality term is positive for some slice (the hinge is active)."""
    for seed in range(40):
        model, x = _small(losses, seed), _batch(seed)
        if feddis_loss_terms(model, x, losses)["orthogonality"].max() > 1e-3:
            return model, x
    raise AssertionError("no seed gives an active orthogonality hinge")


def test_each_loss_reaches_only_its_parameters():
    losses = FedDisLosses()
    model, x = _positive_orthogonality(losses)
    gamma = torch.full((len(x),), 1.7, dtype=torch.float64)
    assert _reached(model, feddis_loss_terms(model, x, losses, gamma=gamma)["reconstruction"].mean()) == set(PARTS)
    # Shape consistency: the shape encoder only (the augmented code is a stop-gradient target).
    assert _reached(model, feddis_loss_terms(model, x, losses, gamma=gamma)["consistency"].mean()) == {
        "shape_encoder."}
    # Orthogonality as published: the appearance encoder only (the shape code is detached) ...
    assert _reached(model, feddis_loss_terms(model, x, losses)["orthogonality"].mean()) == {"appearance_encoder."}
    # ... and with the ablation switch it reaches both encoders, never the decoder.
    both = FedDisLosses(orthogonality_to_shape=True)
    model, x = _positive_orthogonality(both)
    assert _reached(model, feddis_loss_terms(model, x, both)["orthogonality"].mean()) == {
        "shape_encoder.", "appearance_encoder."}


def test_losses_are_zero_and_non_zero_where_expected():
    model, x = _small(), _batch()
    # The identity augmentation (gamma = 1) leaves the shape code unchanged: consistency loss ~ 0.
    same = feddis_loss_terms(model, x, FedDisLosses(gamma_range=(1.0, 1.0)))["consistency"]
    assert same.abs().max() < 1e-5
    shifted = feddis_loss_terms(model, x, gamma=torch.full((len(x),), 0.5, dtype=torch.float64))["consistency"]
    assert (shifted > 1e-4).all()
    # Orthogonality is a hinge on the cosine: in [0, 1], zero where the codes already point apart.
    ortho = feddis_loss_terms(model, x)["orthogonality"]
    assert ((ortho >= 0) & (ortho <= 1)).all()
    # Switched off: the term is zero and the total is the reconstruction term alone.
    off = FedDisLosses(shape_consistency=False, orthogonality=False)
    terms = feddis_loss_terms(model, x, off)
    assert torch.equal(terms["consistency"], torch.zeros(len(x))) and torch.equal(
        terms["orthogonality"], torch.zeros(len(x)))
    torch.testing.assert_close(feddis_loss(model, x, off), terms["reconstruction"].mean())
    # On: the weighted sum, per sample, averaged.
    gamma = torch.full((len(x),), 2.0, dtype=torch.float64)
    on = FedDisLosses(consistency_weight=0.3, orthogonality_weight=0.7)
    t = feddis_loss_terms(model, x, on, gamma=gamma)
    expected = (t["reconstruction"] + 0.3 * t["consistency"] + 0.7 * t["orthogonality"]).mean()
    torch.testing.assert_close(feddis_loss(model, x, on, gamma=gamma), expected)
    assert feddis_loss(model, x[:0]).item() == 0.0  # an empty Poisson batch


def test_gamma_augmentation_is_per_slice():
    x = _batch(1, n=3)
    gamma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    out = gamma_augment(x, gamma)
    torch.testing.assert_close(out[1], x[1])
    for i in range(3):  # slice i alone gives the same result: no batch-wide statistics
        torch.testing.assert_close(gamma_augment(x[i:i + 1], gamma[i:i + 1]), out[i:i + 1])
    assert torch.equal(out.amin(dim=(1, 2, 3)), x.amin(dim=(1, 2, 3)))
    torch.testing.assert_close(out.amax(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)))
    assert (out[0] >= x[0] - 1e-6).all() and (out[2] <= x[2] + 1e-6).all()  # gamma < 1 brightens


def test_per_sample_gradients_of_the_feddis_loss_are_each_samples_own():
    """Opacus' per-sample gradients of the full objective equal each slice's loss differentiated alone."""
    losses = FedDisLosses(orthogonality_to_shape=True)
    model, x = _positive_orthogonality(losses)
    x = x[:4]
    gamma = torch.tensor([0.6, 1.4, 1.9, 0.8], dtype=torch.float64)
    reference = _small(losses)
    reference.load_state_dict(model.state_dict())
    wrapped = GradSampleModule(model, loss_reduction="mean")
    feddis_loss(wrapped, x, losses, gamma=gamma).backward()
    samples = {n: p.grad_sample.clone() for n, p in wrapped.named_parameters()}
    for i in range(len(x)):
        reference.zero_grad()
        feddis_loss(reference, x[i:i + 1], losses, gamma=gamma[i:i + 1]).backward()
        for n, p in reference.named_parameters():
            # loss_reduction="mean": grad_sample is the per-sample loss's gradient (batch scaling undone).
            error = (samples["_module." + n][i] - p.grad).abs().max()
            assert error <= 1e-3 * p.grad.abs().max() + 1e-6, (n, i, float(error))


@pytest.mark.parametrize("name", FEDDIS)
def test_only_shape_parameters_are_shared(name):
    model = create_model(name, image_size=32)
    shared = shared_parameter_names(model)
    assert shared == [n for n, _ in model.named_parameters() if n.startswith("shape_encoder.")]
    local = [n for n, _ in model.named_parameters() if n not in shared]
    assert local and all(n.startswith(("appearance_encoder.", "decoder.")) for n in local)


def test_ablation_models_carry_their_switches():
    assert create_model("compact-feddis").losses == FedDisLosses()
    assert create_model("feddis-no-consistency").losses == FedDisLosses(shape_consistency=False)
    assert create_model("compact-feddis-no-orthogonality").losses == FedDisLosses(orthogonality=False)
    assert create_model("compact-feddis-reconstruction-only").losses == FedDisLosses(
        shape_consistency=False, orthogonality=False)
    custom = FedDisLosses(consistency_weight=1.0)
    assert create_model("compact-feddis", losses=custom).losses == custom
    with pytest.raises(ConfigError, match="not a FedDis model"):
        create_model("compact-ae", losses=custom)
    for bad in ({"reconstruction": "huber"}, {"consistency_weight": -1.0}, {"gamma_range": (2.0, 1.0)}):
        with pytest.raises(ConfigError):
            FedDisLosses(**bad)


def test_training_loss_follows_the_model():
    x = _batch()[:, :, :, :]
    feddis = _small(FedDisLosses(shape_consistency=False))
    torch.testing.assert_close(training_loss(feddis)(feddis, x), feddis_loss(feddis, x, feddis.losses))
    ae = create_model("compact-ae", image_size=32)
    torch.testing.assert_close(training_loss(ae)(ae, x), torch.nn.functional.mse_loss(ae(x), x))
    wrapped = GradSampleModule(_small())
    assert training_loss(wrapped)(wrapped, x).requires_grad


@pytest.mark.parametrize("unit", ["patient", "slice"])
def test_dp_sgd_trains_with_the_feddis_losses(unit):
    torch.manual_seed(3)
    model = create_model("compact-feddis", image_size=32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = _batch(5, n=16)
    config = DpSgdConfig(noise_multiplier=0.5, max_grad_norm=1.0, sample_rate=0.5, steps=3, learning_rate=1e-2,
                         secure_mode=False, privacy_unit=unit)
    result = train_dp_sgd(model, data, config, site="s", round_index=0, loss_fn=training_loss(model),
                          patients=torch.arange(16) // 2 if unit == "patient" else None,
                          generator=torch.Generator().manual_seed(0))
    assert len(result.losses) + result.empty_steps == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses)
    assert set(result.delta) == set(before)
    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())
