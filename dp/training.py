"""Local DP-SGD training of a torch model, at patient level by default.

One call to :func:`train_dp_sgd` starts from given weights, runs ``steps``
DP-SGD steps on the site's data and returns the weight delta together with
the :class:`~dp.events.PrivacyEvent` it spent.

Math (Abadi et al. 2016), **patient level** (``privacy_unit="patient"``, the
default; the GDPR data subject is the unit). The site's N records (2-D
slices) belong to P patients (``patients[i]`` is the patient of record i).
Each step samples every *patient* independently with probability q (Poisson
sampling over patients, so the accountants' subsampling analysis applies to
patients exactly); for each sampled patient p it computes the sum of the
per-slice gradients g_i, G_p = sum_{i in p} g_i, and clips the sum:
G_p * min(1, C / ||G_p||_2). It sums over sampled patients, adds
N(0, sigma^2 C^2 I) and divides by a **public** normaliser (q * ``public_size``
where ``public_size`` is a declared public number of patients at the site; 1
when none is declared - never the site's private count). Adding or removing
one patient (all of their slices) changes the clipped sum by at most C, so a
step is the Poisson-subsampled Gaussian mechanism over patients with
multiplier sigma; the event records ``unit="patient"``.
``max_slices_per_patient`` (a fixed, public number; off by default) caps the
slices of a sampled patient used in one step, to bound memory: the cap takes
evenly spaced slices of the patient's stack (a public rule); the bound C holds
whatever slices are used.

**Slice level** (``privacy_unit="slice"``, an explicitly labelled option):
records are sampled and clipped one by one (every slice is its own unit); the
guarantee then covers one slice, not one patient.

How the per-unit gradients are computed (the math above does not depend on it).
When every trainable layer is a ``Conv2d``, ``GroupNorm`` or ``Linear`` (every
model of :mod:`models`), both units use :mod:`dp.unit_gradients`: G_u for every
sampled unit in one backward pass, then the clipping, noise and normaliser above
(``_unit_steps``; issue 20, measured in the README's DP-step section). Other
models use Opacus: ``GradSampleModule`` per-slice gradients summed per patient
(patient level), and ``make_private`` (slice level, whose clipping factor is
Opacus' C / (||g|| + 1e-6), at most 1).

Empty batches are real steps: the update is pure noise, and the step is counted.

Randomness. With ``secure_mode=True`` (the default) both the Poisson sampling
and the Gaussian noise come from the CSPRNG (AES-CTR keyed from
:mod:`secrets`, via :mod:`secagg.prg`); the noise uses the floating-point
hardening of Opacus' secure mode (each coordinate is the sum of four
independent Gaussians of std sigma*C, divided by 2; Holohan & Braghin 2021),
because Opacus' own ``secure_mode`` needs ``torchcsprng``, which no longer
builds for current torch. ``secure_mode=False`` uses torch's (seedable,
non-cryptographic) generator - for experiments only; every event records
which one was used. Tests may inject their own seeded ``randomness`` (an
object with ``poisson_mask(n, q)`` and ``gaussian(shape, std)``); it is
refused unless ``secure_mode=False``, so the event says the noise was not
from the CSPRNG.

What stays at the site. The returned :class:`LocalTrainingResult` holds the
losses and the number of empty steps: statistics of the private data that no
DP guarantee covers. They are for the site itself, never for the coordinator.

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

from . import unit_gradients
from .errors import InvalidPrivacyParameterError, ModelNotPrivateError
from .events import PRIVACY_UNITS, PrivacyEvent

__all__ = [
    "DpSgdConfig",
    "LocalTrainingResult",
    "make_private_compatible",
    "train_dp_sgd",
    "train_non_private",
    "csprng_optimizer_class",
    "csprng_gaussian",
    "csprng_poisson_mask",
    "clipped_patient_sum",
    "clipped_unit_sum",
    "patient_groups",
    "AuditCanaries",
]


@dataclass(frozen=True)
class DpSgdConfig:
    """Hyper-parameters of one site's local DP-SGD run.

    ``sample_rate`` is q, the Poisson rate over privacy units (patients by
    default, slices with ``privacy_unit="slice"``). ``public_size`` is a
    declared, public number of units at the site (agreed before training, not
    measured from the data): the noisy sum is divided by q * ``public_size``;
    without it, by 1. ``max_slices_per_patient`` (patient level only) caps the
    slices of a sampled patient used in one step (memory); ``None`` uses all.
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
    privacy_unit: str = "patient"
    public_size: int | None = None
    max_slices_per_patient: int | None = None

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
        if self.privacy_unit not in PRIVACY_UNITS:
            raise InvalidPrivacyParameterError(f"privacy_unit must be one of {PRIVACY_UNITS}; got {self.privacy_unit!r}")
        for name in ("public_size", "max_slices_per_patient"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidPrivacyParameterError(f"{name} must be an int >= 1 or None; got {value!r}")

    @property
    def normaliser(self) -> float:
        """The public divisor of the noisy gradient sum: q * public_size, or 1 without a declared size."""
        return self.sample_rate * self.public_size if self.public_size is not None else 1.0


@dataclass(frozen=True)
class LocalTrainingResult:
    """What a site gets back from local training (the delta never leaves the site unprotected).

    ``losses``, ``empty_steps``, ``clipped_units`` and ``num_records`` are statistics of the
    private data that no DP guarantee covers: site-local, never for the coordinator.
    """

    delta: dict  # parameter name -> torch.Tensor (new - initial)
    event: PrivacyEvent
    losses: tuple  # mean training loss per non-empty step
    empty_steps: int  # steps whose Poisson batch was empty (noise-only updates)
    num_records: int
    clipped_units: int = 0  # sampled units whose gradient was clipped (slice level: one-pass path only, else 0)
    audit_observations: tuple | None = None  # AUDIT ONLY (AuditCanaries.observe): summed released gradient


@dataclass(frozen=True)
class AuditCanaries:
    """AUDIT ONLY: gradient canaries for :mod:`dp.audit`; a run never passes them.

    Canary j is one extra privacy unit (a patient, or a slice at slice level) whose
    CLIPPED gradient is the fixed vector ``signs[j] * C * e_{coordinates[j]}`` (norm exactly
    C, the clipping norm): a "Dirac" gradient canary (Nasr et al. 2023; Steinke, Nasr and
    Jagielski 2023). ``coordinates`` index the concatenation of the model's trainable
    parameters (``model.parameters()`` order, each flattened), distinct. In every step each
    canary is Poisson-sampled with the same q and the same randomness as the real units and
    the sampled canaries are added to the clipped sum BEFORE the noise, so what follows
    (noise, public normaliser, optimiser) is the run's own path. The canary's clipping is not
    exercised (its gradient is injected already at norm C); the real records' is.

    ``observe``: coordinates (the audit passes all canaries', included or not) at which the
    released noisy gradient of every step (clipped sum + canaries + noise, before the
    normaliser) is summed over the steps and returned in
    :attr:`LocalTrainingResult.audit_observations` - the white-box view of an auditor who sees
    each step's privatised gradient, which is what the accountant composes.
    """

    coordinates: tuple
    signs: tuple
    observe: tuple = ()

    def __post_init__(self) -> None:
        if len(self.coordinates) != len(self.signs) or not self.coordinates:
            raise InvalidPrivacyParameterError("audit canaries need one sign per coordinate, and at least one")
        if len(set(self.coordinates)) != len(self.coordinates) or min(self.coordinates) < 0:
            raise InvalidPrivacyParameterError("audit canary coordinates must be distinct and non-negative")
        if any(s not in (1, -1) for s in self.signs):
            raise InvalidPrivacyParameterError("audit canary signs must be +1 or -1")
        if any(c < 0 for c in self.observe):
            raise InvalidPrivacyParameterError("observed coordinates must be non-negative")


class _CanaryInjector:
    """Per step: Poisson-sample the canaries, return their clipped-gradient sum split per parameter."""

    def __init__(self, canaries: AuditCanaries, params, config: DpSgdConfig, randomness) -> None:
        import torch

        self.shapes = [p.shape for p in params]
        self.sizes = [p.numel() for p in params]
        total = sum(self.sizes)
        if max(canaries.coordinates + canaries.observe) >= total:
            raise InvalidPrivacyParameterError(
                f"audit canary coordinate {max(canaries.coordinates + canaries.observe)} outside the {total} "
                "trainable parameters")
        self.coordinates = torch.tensor(canaries.coordinates, dtype=torch.long)
        self.observed = torch.tensor(canaries.observe, dtype=torch.long)
        self.sums = torch.zeros(len(canaries.observe), dtype=torch.float64)
        self.values = torch.tensor(canaries.signs, dtype=torch.float64) * config.max_grad_norm
        self.total, self.config, self.randomness = total, config, randomness

    def __call__(self) -> list:
        import torch

        chosen = torch.from_numpy(np.asarray(
            self.randomness.poisson_mask(len(self.coordinates), self.config.sample_rate), dtype=bool))
        flat = torch.zeros(self.total, dtype=torch.float64)
        flat.index_add_(0, self.coordinates[chosen], self.values[chosen])
        return [t.view(shape) for t, shape in zip(torch.split(flat, self.sizes), self.shapes)]

    def observe(self, released) -> None:
        """Add this step's released noisy gradient (one tensor per parameter) at the observed coordinates."""
        import torch

        if self.observed.numel():
            flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in released])
            self.sums += flat[self.observed]


def csprng_gaussian(shape, std: float) -> np.ndarray:
    """Gaussian noise from the CSPRNG: Box-Muller on 53-bit uniforms, float64.

    Returns the sum of four independent N(0, std^2) draws divided by 2 (same
    distribution, hardened against floating-point attacks on the sampler). The
    uniforms come from the CSPRNG; the logarithms and trigonometry run in torch
    (float64, vectorised; numpy's float64 cos and sin took about 4x as long, issue 20).
    """
    import torch

    size = int(np.prod(shape))
    total = torch.zeros(size, dtype=torch.float64)
    for _ in range(2):  # each Box-Muller pass yields two independent normals per pair of uniforms
        u = torch.from_numpy(uniform_floats(random_bytes(), 2 * size))
        radius = torch.sqrt(-2.0 * torch.log(1.0 - u[:size]))  # 1 - u in (0, 1]: log is finite
        angle = (2.0 * math.pi) * u[size:]
        total += radius * torch.cos(angle)
        total += radius * torch.sin(angle)
    return (total * (std / 2.0)).numpy().reshape(shape)


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


class _Csprng:
    """The default randomness: CSPRNG Poisson sampling and hardened Gaussian noise."""

    secure = True

    @staticmethod
    def poisson_mask(n: int, sample_rate: float) -> np.ndarray:
        return csprng_poisson_mask(n, sample_rate)

    @staticmethod
    def gaussian(shape, std: float) -> np.ndarray:
        return csprng_gaussian(shape, std)


class _TorchGenerator:
    """``secure_mode=False``: torch's seedable, non-cryptographic generator (experiments only)."""

    secure = False

    def __init__(self, generator=None) -> None:
        self.generator = generator

    def poisson_mask(self, n: int, sample_rate: float) -> np.ndarray:
        import torch

        return (torch.rand(n, generator=self.generator) < sample_rate).numpy()

    def gaussian(self, shape, std: float) -> np.ndarray:
        import torch

        return (torch.randn(tuple(shape), generator=self.generator, dtype=torch.float64) * std).numpy()


def patient_groups(patients, num_records: int) -> list:
    """Record indices of each patient (``patients[i]`` is record i's patient id), in first-seen order."""
    import torch

    ids = np.asarray(patients.cpu().numpy() if hasattr(patients, "cpu") else patients)
    if ids.ndim != 1 or ids.shape[0] != num_records:
        raise InvalidPrivacyParameterError(
            f"patient-level DP-SGD needs one patient id per record: got {ids.shape} for {num_records} records")
    order: dict = {}
    for index, patient in enumerate(ids.tolist()):
        order.setdefault(patient, []).append(index)
    return [torch.tensor(v, dtype=torch.long) for v in order.values()]


def _cap(indices, cap: int | None):
    """At most ``cap`` evenly spaced records of one patient (a public rule: never chosen by content)."""
    import torch

    if cap is None or indices.numel() <= cap:
        return indices
    return indices[torch.linspace(0, indices.numel() - 1, cap).round().long()]


def clipped_patient_sum(module, data, groups, max_grad_norm: float, *, loss_fn: Callable | None = None,
                        max_slices_per_patient: int | None = None):
    """Sum over ``groups`` (index tensors, one per sampled patient) of each patient's clipped gradient sum.

    ``module`` is an Opacus ``GradSampleModule`` (``loss_reduction="mean"``) whose per-example
    gradients ``grad_sample`` are d loss_i / d theta for the per-example loss. For patient p:
    G_p = sum_{i in p} g_i, clipped to L2 norm ``max_grad_norm`` over all trainable parameters
    jointly: G_p * min(1, C / ||G_p||). Returns ``(sums, loss, clipped)``: one tensor per trainable
    parameter (zeros when ``groups`` is empty), the mean per-example loss (None when empty) and the
    number of patients whose sum was clipped. No noise: see :func:`train_dp_sgd`.
    """
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    if not groups:
        return [torch.zeros_like(p) for p in params], None, 0
    loss_fn = loss_fn or _default_loss
    groups = [_cap(g, max_slices_per_patient) for g in groups]
    indices = torch.cat(groups)
    owner = torch.cat([torch.full((g.numel(),), k, dtype=torch.long) for k, g in enumerate(groups)])
    for p in params:
        p.grad_sample = None
        p.grad = None
    loss = loss_fn(module, data[indices])
    loss.backward()
    per_patient = []
    for p in params:
        grad_sample = p.grad_sample
        if grad_sample is None:  # a parameter the loss does not reach: zero gradient for everyone
            grad_sample = torch.zeros((indices.numel(), *p.shape), dtype=p.dtype)
        summed = torch.zeros((len(groups), *p.shape), dtype=grad_sample.dtype)
        summed.index_add_(0, owner, grad_sample.detach())
        per_patient.append(summed)
        p.grad_sample = None
        p.grad = None
    sums, clipped = _clip_and_sum(per_patient, max_grad_norm)
    return sums, float(loss.detach()), clipped


def _clip_and_sum(per_unit: list, max_grad_norm: float):
    """sum_u G_u * min(1, C / ||G_u||) over units u (``per_unit``: one (U, *shape) tensor per parameter).

    ||G_u|| is the L2 norm over all parameters jointly. Returns the sums (one tensor per
    parameter) and the number of clipped units.
    """
    import torch

    units = per_unit[0].shape[0]
    norms = torch.sqrt(sum(torch.linalg.vector_norm(t.reshape(units, -1), dim=1).pow(2) for t in per_unit))
    factor = torch.where(norms > max_grad_norm, max_grad_norm / norms.clamp_min(1e-30), torch.ones_like(norms))
    sums = [torch.tensordot(factor, t, dims=1) for t in per_unit]
    return sums, int((norms > max_grad_norm).sum())


def clipped_unit_sum(gradients, data, groups, max_grad_norm: float, *, loss_fn: Callable | None = None,
                     max_slices_per_patient: int | None = None):
    """:func:`clipped_patient_sum` computed by ``gradients``, a :class:`dp.unit_gradients.UnitGradients`.

    Same result (up to float rounding) and the same ``(sums, loss, clipped)``: for each group
    (a sampled patient, or one slice at slice level) G_u = sum_{i in u} g_i is computed
    directly (no per-slice gradients stored when the layer's form sums inside), clipped
    to ``max_grad_norm`` jointly over all parameters, and summed over the groups.
    """
    import torch

    params = gradients.params
    if not groups:
        return [torch.zeros_like(p) for p in params], None, 0
    groups = [_cap(g, max_slices_per_patient) for g in groups]
    indices = torch.cat(groups)
    owner = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([g.numel() for g in groups]))
    per_unit, loss = gradients.compute(loss_fn or _default_loss, data[indices], owner, len(groups))
    sums, clipped = _clip_and_sum(per_unit, max_grad_norm)
    return sums, float(loss.detach()), clipped


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
    patients=None,
    randomness=None,
    audit_canaries: AuditCanaries | None = None,
) -> LocalTrainingResult:
    """Train ``model`` in place for ``config.steps`` DP-SGD steps on ``data`` (a tensor, N records first).

    ``patients`` (patient level, required there): the patient id of each record, aligned with
    ``data``. Returns the delta of every trainable parameter and the privacy event spent.
    ``progress(step, loss)`` is called after each step (site-local). ``generator`` (a
    ``torch.Generator``) is used only when ``secure_mode=False``; ``randomness`` is a TEST-ONLY
    injected source of sampling and noise, refused with ``secure_mode=True``.
    ``audit_canaries`` (AUDIT ONLY, :mod:`dp.audit`): gradient canaries added to the clipped
    sum before the noise (:class:`AuditCanaries`); the returned event is then not a spend of
    the site's data and must never reach a ledger.
    """
    n = int(data.shape[0])
    if n < 1:
        raise InvalidPrivacyParameterError(f"site {site!r} has no training records")
    problems = _validation_errors(model)
    if problems:
        raise ModelNotPrivateError(
            f"the model cannot be trained with DP-SGD as is: {problems}; pass it through "
            "make_private_compatible() first (it replaces BatchNorm with GroupNorm where possible)"
        )
    if randomness is not None and config.secure_mode:
        raise InvalidPrivacyParameterError(
            "injected randomness is for tests only: it needs secure_mode=False, so the event records that the "
            "noise did not come from the CSPRNG")
    if randomness is None:
        randomness = _Csprng() if config.secure_mode else _TorchGenerator(generator)
    if config.privacy_unit == "patient":
        if patients is None:
            raise InvalidPrivacyParameterError(
                "patient-level DP-SGD needs the patient of each record (patients=...); pass "
                "privacy_unit='slice' for the labelled slice-level guarantee")
        groups = patient_groups(patients, n)
    initial = _load(model, weights)
    model.train()
    loss_fn = loss_fn or _default_loss
    if unit_gradients.supports_unit_gradients(model):  # exact per-unit forms for every trainable layer
        unit_groups = groups if config.privacy_unit == "patient" else None  # slice level: every record a unit
        losses, empty, clipped, observed = _unit_steps(model, data, unit_groups, config, randomness, loss_fn, progress,
                                                       audit_canaries)
    elif config.privacy_unit == "patient":
        losses, empty, clipped, observed = _patient_steps(model, data, groups, config, randomness, loss_fn, progress,
                                                          audit_canaries)
    else:
        losses, empty, clipped, observed = _slice_steps(model, data, config, randomness, loss_fn, progress,
                                                        audit_canaries)
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
        unit=config.privacy_unit,
    )
    return LocalTrainingResult(delta=delta, event=event, losses=tuple(losses), empty_steps=empty, num_records=n,
                               clipped_units=clipped, audit_observations=observed)


def _release(params, sums, config: DpSgdConfig, randomness, optimizer, inject) -> None:
    """Noise the clipped sum, divide by the public normaliser, take the optimiser step (both unit paths)."""
    import torch

    std = config.noise_multiplier * config.max_grad_norm
    if inject is not None:  # audit only: canary units join the clipped sum before the noise
        sums = [total + extra.to(total.dtype) for total, extra in zip(sums, inject())]
    optimizer.zero_grad(set_to_none=True)
    # One draw for all parameters (i.i.d. coordinates, the same distribution as one draw per
    # parameter): one CSPRNG key and keystream per step instead of one per tensor (issue 20).
    sizes = [p.numel() for p in params]
    noise = torch.from_numpy(np.asarray(randomness.gaussian((sum(sizes),), std))).split(sizes)
    released = []
    for p, total, z in zip(params, sums, noise):
        released.append(total.to(p.dtype) + z.view(p.shape).to(p.dtype))
        p.grad = released[-1] / config.normaliser
    if inject is not None:
        inject.observe(released)
    optimizer.step()


def _unit_steps(model, data, groups, config: DpSgdConfig, randomness, loss_fn, progress, audit_canaries=None):
    """DP-SGD steps whose per-unit gradients come from :mod:`dp.unit_gradients` (supported models).

    ``groups`` (patient level): one index tensor per patient, Poisson-sampled over patients;
    ``None`` (slice level): every record is its own unit, Poisson-sampled over records. The
    rest (clip each unit's gradient to C jointly, sum, add N(0, sigma^2 C^2 I), divide by the
    public normaliser, optimiser step) is the same for both units: the module docstring's math.
    """
    import torch

    n = int(data.shape[0])
    params = [p for p in model.parameters() if p.requires_grad]
    cap = config.max_slices_per_patient if groups is not None else None
    with unit_gradients.UnitGradients(model) as gradients:
        def step_sums():
            if groups is None:
                chosen = torch.from_numpy(np.flatnonzero(randomness.poisson_mask(n, config.sample_rate)))
                step_groups = list(chosen.view(-1, 1))
            else:
                step_groups = [groups[i] for i in np.flatnonzero(randomness.poisson_mask(len(groups),
                                                                                          config.sample_rate))]
            return clipped_unit_sum(gradients, data, step_groups, config.max_grad_norm, loss_fn=loss_fn,
                                    max_slices_per_patient=cap)

        return _run_steps(params, config, randomness, progress, audit_canaries, step_sums)


def _run_steps(params, config: DpSgdConfig, randomness, progress, audit_canaries, step_sums):
    """The step loop both per-unit paths share: ``step_sums()`` samples the step's units and returns
    (clipped sums, loss or None for an empty step, units clipped); :func:`_release` noises and applies them."""
    optimizer = _optimizer(config, params)
    inject = _CanaryInjector(audit_canaries, params, config, randomness) if audit_canaries is not None else None
    losses, empty, clipped = [], 0, 0
    for step in range(config.steps):
        sums, value, count = step_sums()
        clipped += count
        _release(params, sums, config, randomness, optimizer, inject)
        if value is None:
            empty += 1
        else:
            losses.append(value)
        if progress is not None:
            progress(step + 1, value)
    return losses, empty, clipped, (tuple(inject.sums.tolist()) if inject is not None else None)


def _patient_steps(model, data, groups, config: DpSgdConfig, randomness, loss_fn, progress, audit_canaries=None):
    """Patient-level DP-SGD steps (module docstring): Opacus per-slice gradients, summed and clipped per patient."""
    from opacus import GradSampleModule

    params = [p for p in model.parameters() if p.requires_grad]
    with warnings.catch_warnings():
        # Opacus' hooks fire on module outputs when inputs need no grad; torch warns about it every step.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        module = GradSampleModule(model, batch_first=True, loss_reduction="mean")

        def step_sums():
            chosen = np.flatnonzero(randomness.poisson_mask(len(groups), config.sample_rate))
            return clipped_patient_sum(module, data, [groups[i] for i in chosen], config.max_grad_norm,
                                       loss_fn=loss_fn, max_slices_per_patient=config.max_slices_per_patient)

        try:
            return _run_steps(params, config, randomness, progress, audit_canaries, step_sums)
        finally:
            module.to_standard_module()  # remove Opacus hooks: the caller's model is a plain module again
            for p in params:
                p.grad_sample = None


def _slice_steps(model, data, config: DpSgdConfig, randomness, loss_fn, progress, audit_canaries=None):
    """Slice-level DP-SGD (labelled option): Opacus' make_private path, one record = one slice."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    n = int(data.shape[0])
    optimizer = _optimizer(config, [p for p in model.parameters() if p.requires_grad])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns that its own secure RNG is off: ours replaces it
        engine = PrivacyEngine(accountant="rdp")
        private_model, private_optimizer, _ = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=DataLoader(TensorDataset(data), batch_size=max(1, int(round(config.sample_rate * n)))),
            noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            poisson_sampling=True,
        )
    # Opacus derives the expected batch size from the private loader; pin it to the public normaliser.
    private_optimizer.expected_batch_size = config.normaliser
    if isinstance(randomness, _TorchGenerator) and randomness.generator is None:
        if audit_canaries is not None:
            raise InvalidPrivacyParameterError(
                "audit canaries need the project's noise path: secure_mode=True, a generator, or injected randomness")
        # Opacus' own (torch) noise, as before: experiments only
    else:
        # Same object layout, one overridden method: swap the class in place.
        private_optimizer.__class__ = csprng_optimizer_class()
        private_optimizer.secagg_gaussian = randomness.gaussian
        if audit_canaries is not None:  # audit only: canary slices join the clipped sum before the noise
            private_optimizer.secagg_canaries = _CanaryInjector(audit_canaries, private_optimizer.params, config,
                                                                randomness)
    losses, empty, clipped = [], 0, 0
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            for step in range(config.steps):
                mask = torch.from_numpy(np.asarray(randomness.poisson_mask(n, config.sample_rate), dtype=bool))
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
        private_model.to_standard_module()  # remove Opacus hooks: the caller's model is a plain module again
    inject = getattr(private_optimizer, "secagg_canaries", None)
    return losses, empty, clipped, (tuple(inject.sums.tolist()) if inject is not None else None)


def _validation_errors(model) -> str:
    from opacus.validators import ModuleValidator

    return "; ".join(str(e) for e in ModuleValidator.validate(model, strict=False))


def train_non_private(model, data, *, steps: int, batch_size: int, learning_rate: float = 1e-3,
                      weights: Mapping | None = None, loss_fn: Callable | None = None,
                      progress: Callable[[int, float], None] | None = None) -> dict:
    """The same loop without privacy (baselines and benchmarks): returns the weight delta.

    ``progress(step, loss)`` is called after each step, as in :func:`train_dp_sgd`."""
    import torch

    initial = _load(model, weights)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    loss_fn = loss_fn or _default_loss
    n = int(data.shape[0])
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, data[idx])
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1, float(loss.detach()))
    return {name: p.detach() - initial[name] for name, p in model.named_parameters() if name in initial}


def _csprng_add_noise(self) -> None:
    """DPOptimizer.add_noise with CSPRNG noise (see :func:`csprng_gaussian`), or a test's injected source."""
    import torch
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    std = self.noise_multiplier * self.max_grad_norm
    gaussian = getattr(self, "secagg_gaussian", csprng_gaussian)
    inject = getattr(self, "secagg_canaries", None)  # audit only (dp.audit): None in every run
    extras = inject() if inject is not None else [None] * len(self.params)
    for p, extra in zip(self.params, extras):
        _check_processed_flag(p.summed_grad)
        noise = torch.from_numpy(np.asarray(gaussian(tuple(p.summed_grad.shape), std))).to(p.summed_grad.dtype)
        total = p.summed_grad if extra is None else p.summed_grad + extra.view_as(p.summed_grad).to(p.summed_grad.dtype)
        p.grad = (total + noise).view_as(p)
    if inject is not None:
        inject.observe([p.grad for p in self.params])
        _mark_as_processed(p.summed_grad)


_CSPRNG_OPTIMIZER = None


def csprng_optimizer_class():
    """A DPOptimizer subclass whose only change is :func:`_csprng_add_noise` (built lazily: torch is optional)."""
    global _CSPRNG_OPTIMIZER
    if _CSPRNG_OPTIMIZER is None:
        from opacus.optimizers import DPOptimizer

        _CSPRNG_OPTIMIZER = type(
            "CsprngNoiseDPOptimizer", (DPOptimizer,), {"add_noise": _csprng_add_noise, "__doc__": "DPOptimizer with CSPRNG noise."}
        )
    return _CSPRNG_OPTIMIZER
