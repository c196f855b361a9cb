"""DP-SGD step overhead and accountant cost.

* One DP-SGD step (Opacus per-example gradients, clipping, CSPRNG noise) against the
  same non-private step, same model and batch (issue 3: aim for at most 2.5x).
* Each accountant on a 50-round run of one site (50 events of 20 steps).
"""

from __future__ import annotations

import warnings

import pytest

from .conftest import record

torch = pytest.importorskip("torch")
nn = torch.nn


def _model():
    """Until models/ registers its compact autoencoder: a comparable GroupNorm conv autoencoder."""
    try:
        from models import create_model

        return create_model("compact-ae", image_size=64)
    except Exception:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
        )


BATCH = 16


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return torch.rand(BATCH, 1, 64, 64)


def test_step_non_private(benchmark, batch):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(batch), batch).backward()
        optimizer.step()

    benchmark.pedantic(step, rounds=30, warmup_rounds=3)
    record(benchmark, "step_non_private_b16_64px")


@pytest.mark.parametrize("secure", [True, False], ids=["csprng", "torch-rng"])
def test_step_dp_sgd(benchmark, batch, secure):
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from dp.training import _csprng_optimizer_class

    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private, dp_optimizer, _ = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=optimizer, data_loader=DataLoader(TensorDataset(batch), batch_size=BATCH),
            noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=True,
        )
    if secure:
        dp_optimizer.__class__ = _csprng_optimizer_class()
    warnings.filterwarnings("ignore", message="Full backward hook is firing")

    def step():
        dp_optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(private(batch), batch).backward()
        dp_optimizer.step()

    benchmark.pedantic(step, rounds=30, warmup_rounds=3)
    record(benchmark, f"step_dp_sgd_{'csprng' if secure else 'torch_rng'}_b16_64px")


@pytest.mark.parametrize("accountant", ["rdp", "prv", "pld", "rdp-dpa"])
def test_accountant_50_rounds(benchmark, accountant):
    from dp.accounting import ACCOUNTANTS, _run, merge_events
    from dp.events import PrivacyEvent

    events = tuple(PrivacyEvent("site", r, 1.0, 0.05, 20, 1e-5) for r in range(50))

    def account():
        # What compute_epsilon does, minus its cache: merge equal mechanisms, then compose.
        return _run(ACCOUNTANTS[accountant], merge_events(events), 1e-5, upper=True)

    result = benchmark.pedantic(account, rounds=3, warmup_rounds=1)
    assert result.ok, result.error
    benchmark.extra_info["epsilon"] = result.epsilon
    record(benchmark, f"accountant_{accountant}_50_rounds")
