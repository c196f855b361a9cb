"""Models by name: ``create_model("compact-feddis", image_size=64)``.

Every entry states its architecture, exact parameter count (total and shared
in federation), and its cost measured on the project's reference CPU machine
(2 cores of an AMD EPYC, torch 2.13 CPU, 2 intra-op threads, quiet machine,
best of 3-8 steps after a warm-up; re-measure with :func:`measure_cost`):

==============  ==============================  =========  =======  =========  =======  ==========  =========
name            architecture                    params     shared   MMAC fwd   ms/sample fwd+bwd    DP step
                                                                    (64 x 64)  64 x 64  128 x 128   16 @ 64
==============  ==============================  =========  =======  =========  =======  ==========  =========
conv-ae         5x5, 64-128-128, latent 16      1,238,033  all      402        15.2     68          600 ms
feddis          shape 5x5 64-128-128 (16) +     1,277,717  619,024  407        15.4     76          598 ms
                appearance 16-32-32 (4)
compact-ae      3x3, 16-32-32, latent 8         28,937     all      9.6        1.15     5.6         43 ms
compact-feddis  shape 3x3 16-32-32 (8) +        32,683     14,472   10.1       1.3      4.4         39 ms
                appearance 8-16-16 (2)
==============  ==============================  =========  =======  =========  =======  ==========  =========

**FedDis ablations** (:mod:`models.feddis`): ``feddis`` and ``compact-feddis``
train on the published objective (L1 reconstruction + shape consistency +
latent orthogonality). The same architectures are registered with one or both
extra losses switched off: ``<base>-no-consistency``, ``<base>-no-orthogonality``
and ``<base>-reconstruction-only`` for ``<base>`` in ``feddis``,
``compact-feddis``. Their parameter counts equal the base model's; the cost
columns are the base model's *reconstruction-only* step (the shape-consistency
loss adds one gradient-free forward pass of the shape encoder per step).

"ms/sample": one non-private forward + backward + SGD step on a batch of 16,
divided by 16. "DP step": one Opacus DP-SGD step (per-sample gradients,
clipping, noise, optimiser) on 16 slices of 64 x 64. MMAC: convolution
multiply-accumulates of one forward pass (:func:`models.autoencoders.count_macs`;
x4 at 128 x 128). The FedDis-sized models are what the paper trains on a GPU;
on two CPU cores a DP step costs over half a second. The compact variants keep
a DP step well under 100 ms, which the CPU demo needs. On a loaded machine two
OpenMP threads wait on each other: there one thread can be 3x faster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import ConfigError, UnknownModelError
from .feddis import FedDisLosses

__all__ = [
    "ModelSpec",
    "CostMeasurement",
    "available_models",
    "model_spec",
    "create_model",
    "measure_cost",
    "COSTS",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what it costs.

    ``parameters`` / ``shared_parameters``: exact scalar counts (independent
    of the image size: the models are fully convolutional). ``cost_ms``: mean
    milliseconds per sample of one non-private forward + backward pass, by
    image size; ``dp_step_ms``: one Opacus DP-SGD step (per-sample gradients,
    clipping, noise, optimiser) on a batch of 16 at 64 x 64. Both measured on
    the reference machine (module docstring).
    """

    name: str
    description: str
    family: str  # "autoencoder" or "feddis"
    kernel_size: int
    channels: tuple[int, ...]
    latent_channels: int
    appearance_channels: tuple[int, ...] | None
    appearance_latent: int | None
    parameters: int
    shared_parameters: int
    cost_ms: Mapping[int, float] = field(default_factory=dict)
    dp_step_ms: float | None = None
    losses: FedDisLosses | None = None  # FedDis family: the training objective (None: as published)

    def build(self, image_size: int = 128, losses: FedDisLosses | None = None):
        from .autoencoders import ConvAutoencoder, DisentangledAutoencoder

        if self.family == "feddis":
            assert self.appearance_channels is not None and self.appearance_latent is not None
            return DisentangledAutoencoder(
                shape_channels=self.channels,
                appearance_channels=self.appearance_channels,
                kernel_size=self.kernel_size,
                shape_latent=self.latent_channels,
                appearance_latent=self.appearance_latent,
                image_size=image_size,
                losses=losses if losses is not None else self.losses,
            )
        if losses is not None:
            raise ConfigError(f"model {self.name!r} is not a FedDis model: it takes no FedDis losses")
        return ConvAutoencoder(
            channels=self.channels,
            kernel_size=self.kernel_size,
            latent_channels=self.latent_channels,
            image_size=image_size,
        )


#: Measured on the reference machine (see the module docstring):
#: name -> ({image size: ms per sample, fwd+bwd}, ms per Opacus DP step at batch 16, 64 x 64).
COSTS: dict[str, tuple[dict[int, float], float]] = {
    "conv-ae": ({64: 15.2, 128: 68.2}, 600.0),
    "feddis": ({64: 15.4, 128: 75.7}, 598.0),
    "compact-ae": ({64: 1.15, 128: 5.6}, 43.1),
    "compact-feddis": ({64: 1.3, 128: 4.4}, 39.3),
}


def _spec(name, description, family, kernel, channels, latent, app_channels, app_latent, params, shared):
    cost, dp = COSTS[name]
    return ModelSpec(
        name=name, description=description, family=family, kernel_size=kernel, channels=channels,
        latent_channels=latent, appearance_channels=app_channels, appearance_latent=app_latent,
        parameters=params, shared_parameters=shared, cost_ms=dict(cost), dp_step_ms=dp,
    )


#: FedDis ablations: name suffix -> (description suffix, objective).
_ABLATIONS = {
    "no-consistency": ("ablation: shape-consistency loss off", FedDisLosses(shape_consistency=False)),
    "no-orthogonality": ("ablation: orthogonality loss off", FedDisLosses(orthogonality=False)),
    "reconstruction-only": ("ablation: both extra losses off (L1 reconstruction only)",
                            FedDisLosses(shape_consistency=False, orthogonality=False)),
}


def _ablations(base: ModelSpec) -> list[ModelSpec]:
    return [replace(base, name=f"{base.name}-{suffix}", description=f"{base.description}; {text}", losses=losses)
            for suffix, (text, losses) in _ABLATIONS.items()]


_BASE_SPECS = (
    _spec(
        "conv-ae",
        "FedDis-sized convolutional autoencoder: 5x5 convs, 64-128-128 channels, 16-channel "
        "bottleneck at 1/8 resolution; every parameter shared (FedAvg)",
        "autoencoder", 5, (64, 128, 128), 16, None, None, 1_238_033, 1_238_033,
    ),
    _spec(
        "feddis",
        "FedDis disentangled autoencoder: shape encoder 5x5 64-128-128 (16-ch code, shared), "
        "appearance encoder 16-32-32 (4-ch code, local), decoder on both codes (local)",
        "feddis", 5, (64, 128, 128), 16, (16, 32, 32), 4, 1_277_717, 619_024,
    ),
    _spec(
        "compact-ae",
        "CPU-demo autoencoder: 3x3 convs, 16-32-32 channels, 8-channel bottleneck; every "
        "parameter shared",
        "autoencoder", 3, (16, 32, 32), 8, None, None, 28_937, 28_937,
    ),
    _spec(
        "compact-feddis",
        "CPU-demo FedDis: shape encoder 3x3 16-32-32 (8-ch code, shared), appearance "
        "encoder 8-16-16 (2-ch code, local), decoder local",
        "feddis", 3, (16, 32, 32), 8, (8, 16, 16), 2, 32_683, 14_472,
    ),
)
_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for base in _BASE_SPECS
    for spec in [base] + (_ablations(base) if base.family == "feddis" else [])
}


def available_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; :class:`UnknownModelError` lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}") from None


def create_model(name: str, *, image_size: int = 128, losses: FedDisLosses | None = None):
    """A freshly initialised model (``torch.nn.Module``) for ``image_size x image_size`` slices.

    ``losses`` overrides a FedDis model's training objective (ConfigError for other models).
    """
    return model_spec(name).build(image_size, losses)


@dataclass(frozen=True)
class CostMeasurement:
    """Timing of one model: best-of-``repeats`` milliseconds per step and per sample."""

    name: str
    image_size: int
    batch_size: int
    private: bool
    step_ms: float
    per_sample_ms: float
    threads: int


def measure_cost(
    name: str,
    *,
    image_size: int = 64,
    batch_size: int = 16,
    repeats: int = 5,
    private: bool = False,
    threads: int | None = None,
) -> CostMeasurement:
    """Time one training step of ``name`` on random data (best of ``repeats``, after one warm-up).

    Non-private: forward, MSE loss, backward, SGD step. ``private=True``: the
    same through Opacus (``PrivacyEngine.make_private``, noise multiplier 1,
    clipping norm 1, no Poisson sampling so the batch size is fixed), i.e.
    per-sample gradients, clipping and noise included. Best-of rather than mean:
    on a shared machine the minimum is the least disturbed estimate. ``threads``
    sets torch's intra-op threads for the measurement (restored afterwards).
    """
    import warnings

    import torch

    if repeats < 1 or batch_size < 1:
        raise ConfigError("repeats and batch_size must be positive")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            # Opacus warns that the input needs no gradient and about secure_mode: noise here.
            warnings.simplefilter("ignore", UserWarning)
            best = _best_step_ms(name, image_size, batch_size, repeats, private)
        return CostMeasurement(
            name=name, image_size=image_size, batch_size=batch_size, private=private,
            step_ms=best, per_sample_ms=best / batch_size, threads=torch.get_num_threads(),
        )
    finally:
        torch.set_num_threads(previous)


def _best_step_ms(name: str, image_size: int, batch_size: int, repeats: int, private: bool) -> float:
    """Best-of-``repeats`` milliseconds of one training step, after one warm-up step."""
    import torch

    torch.manual_seed(0)
    model = create_model(name, image_size=image_size)
    x = torch.randn(batch_size, 1, image_size, image_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    if private:
        from opacus import PrivacyEngine

        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size)
        model, optimizer, loader = PrivacyEngine().make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
        )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), x).backward()
        optimizer.step()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3
