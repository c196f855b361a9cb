"""Local DP-SGD training of a torch model with Opacus.

One call to :func:`train_dp_sgd` starts from given weights, runs ``steps``
DP-SGD steps on the site's data and returns the weight delta together with
the :class:`~dp.events.PrivacyEvent` it spent.

Math (Abadi et al. 2016). Each step samples every record independently with
probability q (Poisson sampling, so the accountants' subsampling analysis
applies exactly), computes per-example gradients (Opacus ``GradSampleModule``),
clips each to L2 norm C, sums, adds N(0, sigma^2 C^2 I), divides by the
*expected* batch size qN and takes an optimiser step. Empty batches are
real steps: the update is pure noise, and the step is counted.

Randomness. With ``secure_mode=True`` (the default) both the Poisson sampling
and the Gaussian noise come from the CSPRNG (AES-CTR keyed from
:mod:`secrets`, via :mod:`secagg.prg`); the noise uses the floating-point
hardening of Opacus' secure mode (each coordinate is the sum of four
independent Gaussians of std sigma*C, divided by 2; Holohan & Braghin 2021),
because Opacus' own ``secure_mode`` needs ``torchcsprng``, which no longer
builds for current torch. ``secure_mode=False`` uses torch's (seedable,
non-cryptographic) generator - for experiments only; every event records
which one was used.

Models are validated with Opacus' ``ModuleValidator``; fixable modules
(BatchNorm -> GroupNorm) are fixed by :func:`make_private_compatible`, others
raise :class:`~dp.errors.ModelNotPrivateError` naming each module and why.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from secagg.crypto import random_bytes
from secagg.prg import keystream_words, uniform_floats

from .errors import InvalidPrivacyParameterError, ModelNotPrivateError
from .events import PrivacyEvent

__all__ = [
    "DpSgdConfig",
    "LocalTrainingResult",
    "make_private_compatible",
    "train_dp_sgd",
    "train_non_private",
    "csprng_gaussian",
    "csprng_poisson_mask",
]


@dataclass(frozen=True)
class DpSgdConfig:
    """Hyper-parameters of one site's local DP-SGD run.

    ``sample_rate`` is q; the expected batch size is q * N for N records.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    delta: float = 1e-5
    secure_mode: bool = True
    neighbouring: str = "add_remove_one"

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "max_grad_norm", "learning_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidPrivacyParameterError(f"{name} must be a positive number; got {value!r}")
        if not 0 < self.sample_rate <= 1:
            raise InvalidPrivacyParameterError(f"sample_rate must be in (0, 1]; got {self.sample_rate}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidPrivacyParameterError(f"steps must be an int >= 1; got {self.steps!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise InvalidPrivacyParameterError(f"optimizer must be 'sgd' or 'adam'; got {self.optimizer!r}")


@dataclass(frozen=True)
class LocalTrainingResult:
    """What a site gets back from local training (the delta never leaves the site unprotected)."""

    delta: dict  # parameter name -> torch.Tensor (new - initial)
    event: PrivacyEvent
    losses: tuple  # mean training loss per non-empty step
    empty_steps: int  # steps whose Poisson batch was empty (noise-only updates)
    num_records: int


def csprng_gaussian(shape, std: float) -> np.ndarray:
    """Gaussian noise from the CSPRNG: Box-Muller on 53-bit uniforms, float64.

    Returns the sum of four independent N(0, std^2) draws divided by 2 (same
    distribution, hardened against floating-point attacks on the sampler).
    """
    size = int(np.prod(shape))
    total = np.zeros(size, dtype=np.float64)
    for _ in range(2):  # each Box-Muller pass yields two independent normals per pair of uniforms
        u = uniform_floats(random_bytes(), 2 * size)
        u1 = 1.0 - u[:size]  # in (0, 1]: log is finite
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * np.pi * u[size:]
        total += radius * np.cos(angle)
        total += radius * np.sin(angle)
    return (total * (std / 2.0)).reshape(shape)


def csprng_poisson_mask(num_records: int, sample_rate: float) -> np.ndarray:
    """Independent inclusion of each record with probability q, from the CSPRNG.

    Compares 64-bit keystream words with floor(q * 2^64): exact up to 2^-64.
    """
    if sample_rate >= 1.0:
        return np.ones(num_records, dtype=bool)
    words = keystream_words(random_bytes(), num_records, np.uint64)
    return words < np.uint64(int(sample_rate * 2**64))


def make_private_compatible(model):
    """Return a model Opacus can train privately, fixing what can be fixed.

    Raises :class:`ModelNotPrivateError` listing each refused module and why.
    """
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if not errors:
        return model
    fixed = ModuleValidator.fix(copy.deepcopy(model))
    remaining = ModuleValidator.validate(fixed, strict=False)
    if remaining:
        reasons = "; ".join(str(e) for e in remaining)
        raise ModelNotPrivateError(f"the model cannot be trained with DP-SGD: {reasons}")
    warnings.warn(
        "model modified for DP-SGD: " + "; ".join(str(e) for e in errors) + " (replaced, e.g. BatchNorm -> GroupNorm)",
        stacklevel=2,
    )
    return fixed


def _default_loss(model, batch):
    """Autoencoder reconstruction loss: mean squared error per example, averaged."""
    import torch.nn.functional as F

    return F.mse_loss(model(batch), batch)


def _optimizer(config: DpSgdConfig, params):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    return torch.optim.SGD(params, lr=config.learning_rate)


def _load(model, weights: Mapping | None) -> dict:
    """Load ``weights`` (if given) and snapshot the trainable parameters."""
    if weights is not None:
        model.load_state_dict(weights, strict=False)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_dp_sgd(
    model,
    data,
    config: DpSgdConfig,
    *,
    site: str,
    round_index: int,
    weights: Mapping | None = None,
    loss_fn: Callable | None = None,
    progress: Callable[[int, float | None], None] | None = None,
    generator=None,
) -> LocalTrainingResult:
    """Train ``model`` in place for ``config.steps`` DP-SGD steps on ``data`` (a tensor, N records first).

    Returns the delta of every trainable parameter and the privacy event spent.
    ``progress(step, loss)`` is called after each step. ``generator`` (a
    ``torch.Generator``) is used only when ``secure_mode=False``.
    """
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    n = int(data.shape[0])
    if n < 1:
        raise InvalidPrivacyParameterError(f"site {site!r} has no training records")
    problems = _validation_errors(model)
    if problems:
        raise ModelNotPrivateError(
            f"the model cannot be trained with DP-SGD as is: {problems}; pass it through "
            "make_private_compatible() first (it replaces BatchNorm with GroupNorm where possible)"
        )
    initial = _load(model, weights)
    model.train()
    expected_batch = max(1, int(round(config.sample_rate * n)))
    optimizer = _optimizer(config, [p for p in model.parameters() if p.requires_grad])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns that its own secure RNG is off: ours replaces it
        engine = PrivacyEngine(accountant="rdp")
        private_model, private_optimizer, _ = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=DataLoader(TensorDataset(data), batch_size=expected_batch),
            noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            poisson_sampling=True,
        )
    # Opacus derives the expected batch size from the loader; pin it to q*N exactly.
    private_optimizer.expected_batch_size = config.sample_rate * n
    if config.secure_mode:
        # Same object layout, one overridden method: swap the class in place.
        private_optimizer.__class__ = _csprng_optimizer_class()
    loss_fn = loss_fn or _default_loss
    losses, empty = [], 0
    # Opacus' hooks fire on module outputs when inputs need no grad; torch warns about it every step.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    try:
        for step in range(config.steps):
            if config.secure_mode:
                mask = torch.from_numpy(csprng_poisson_mask(n, config.sample_rate))
            else:
                mask = torch.rand(n, generator=generator) < config.sample_rate
            batch = data[mask]
            private_optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(private_model, batch)
            loss.backward()
            private_optimizer.step()
            if batch.shape[0] == 0:
                empty += 1
                value = None
            else:
                value = float(loss.detach())
                losses.append(value)
            if progress is not None:
                progress(step + 1, value)
    finally:
        private_model._close()  # remove Opacus hooks: the caller's model is a plain module again
    delta = {name: p.detach() - initial[name] for name, p in model.named_parameters() if name in initial}
    event = PrivacyEvent(
        site=site,
        round=round_index,
        noise_multiplier=config.noise_multiplier,
        sample_rate=config.sample_rate,
        steps=config.steps,
        delta=config.delta,
        clipping_norm=config.max_grad_norm,
        neighbouring=config.neighbouring,
        secure_rng=config.secure_mode,
    )
    return LocalTrainingResult(delta=delta, event=event, losses=tuple(losses), empty_steps=empty, num_records=n)


def _validation_errors(model) -> str:
    from opacus.validators import ModuleValidator

    return "; ".join(str(e) for e in ModuleValidator.validate(model, strict=False))


def train_non_private(model, data, *, steps: int, batch_size: int, learning_rate: float = 1e-3,
                      weights: Mapping | None = None, loss_fn: Callable | None = None) -> dict:
    """The same loop without privacy (baselines and benchmarks): returns the weight delta."""
    import torch

    initial = _load(model, weights)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    loss_fn = loss_fn or _default_loss
    n = int(data.shape[0])
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),))
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, data[idx]).backward()
        optimizer.step()
    return {name: p.detach() - initial[name] for name, p in model.named_parameters() if name in initial}


def _csprng_add_noise(self) -> None:
    """DPOptimizer.add_noise with CSPRNG noise (see :func:`csprng_gaussian`)."""
    import torch
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    std = self.noise_multiplier * self.max_grad_norm
    for p in self.params:
        _check_processed_flag(p.summed_grad)
        noise = torch.from_numpy(csprng_gaussian(tuple(p.summed_grad.shape), std)).to(p.summed_grad.dtype)
        p.grad = (p.summed_grad + noise).view_as(p)
        _mark_as_processed(p.summed_grad)


_CSPRNG_OPTIMIZER = None


def _csprng_optimizer_class():
    """A DPOptimizer subclass whose only change is :func:`_csprng_add_noise` (built lazily: torch is optional)."""
    global _CSPRNG_OPTIMIZER
    if _CSPRNG_OPTIMIZER is None:
        from opacus.optimizers import DPOptimizer

        _CSPRNG_OPTIMIZER = type(
            "CsprngNoiseDPOptimizer", (DPOptimizer,), {"add_noise": _csprng_add_noise, "__doc__": "DPOptimizer with CSPRNG noise."}
        )
    return _CSPRNG_OPTIMIZER
