"""Convolutional autoencoders for unsupervised anomaly detection on axial slices.

Both models are plain :class:`torch.nn.Module` s whose ``forward(x)`` maps a batch
``(B, 1, H, W)`` to its reconstruction of the same shape, built only from
layers Opacus computes per-sample gradients for (``Conv2d``, ``GroupNorm``;
``LeakyReLU``, ``Upsample`` and concatenation have no parameters). GroupNorm,
not BatchNorm: BatchNorm mixes samples of a batch, which breaks both
per-sample gradient clipping (DP-SGD) and the privacy argument, and Opacus'
``ModuleValidator`` refuses it.

**Encoder** (per branch): ``len(channels)`` stages of
``Conv2d(k x k, stride 2) -> GroupNorm -> LeakyReLU(0.2)``, halving the size
each time (128 -> 16 with three stages, as in FedDis' 16 x 16 intermediate
resolution), then a 1 x 1 convolution to ``latent_channels``: the bottleneck
that keeps the network from learning the identity (an autoencoder that can
copy its input also copies lesions, and the residual vanishes).

**Decoder**: the encoder's mirror. A 1 x 1 convolution from the latent code
back to the deepest width, then per inner stage ``Upsample(x2, nearest) ->
Conv2d(k x k) -> GroupNorm -> LeakyReLU`` (nearest upsampling + convolution
instead of transposed convolution: no checkerboard artefacts in the residual
maps, and Opacus supports it), and a last ``Upsample -> Conv2d(k x k)`` to one
channel with no activation (intensities are normalised to brain median 1, not
to [0, 1]).

**FedDis** (:class:`DisentangledAutoencoder`, after Bercea et al., Nature
Machine Intelligence 2022, and the authors' repository ``albarqounilab/FedDis-NMI``):
a *shape* encoder (wide: 64-128-128) and an *appearance* encoder (narrow:
16-32-32) read the same slice; the decoder reconstructs from the channel-wise
concatenation of both codes (16 x 16 codes for 128 x 128 slices, the authors'
intermediate resolution). In federated training only the shape parameters are
aggregated: the paper's premise is that healthy anatomy is shared across
hospitals while intensity appearance (scanner, protocol) is site-specific, so
each site keeps its appearance encoder and - our reading, since the decoder is
what turns the global shape code into the site's intensities - its decoder.
:func:`shared_parameter_names` returns the shape encoder's parameters
(``include_decoder=True`` also shares the decoder, for ablations). The model
carries its training objective's configuration (``losses``, a
:class:`~models.feddis.FedDisLosses`: reconstruction, shape consistency under
gamma intensity augmentation, latent orthogonality, each switchable);
:func:`models.feddis.training_loss` turns it into the DP-SGD trainer's loss,
and :mod:`models.feddis` states the objective and where our reading differs
from the paper.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .errors import ConfigError
from .feddis import FedDisLosses

__all__ = [
    "ConvAutoencoder",
    "DisentangledAutoencoder",
    "shared_parameter_names",
    "count_parameters",
    "count_macs",
]


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 8, with at least two channels per group."""
    for groups in (8, 4, 2):
        if channels % groups == 0 and channels // groups >= 2:
            return groups
    return 1


def _stage(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2),
        nn.GroupNorm(_groups(c_out), c_out),
        nn.LeakyReLU(0.2),
    ]


def _check_architecture(channels: Sequence[int], kernel: int, latent: int) -> tuple[int, ...]:
    channels = tuple(int(c) for c in channels)
    if not channels or any(c < 1 for c in channels):
        raise ConfigError(f"channels must be a non-empty sequence of positive widths; got {channels!r}")
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"kernel_size must be odd and positive (same padding); got {kernel!r}")
    if latent < 1:
        raise ConfigError(f"latent channels must be positive; got {latent!r}")
    return channels


class Encoder(nn.Sequential):
    """Strided convolution stages followed by a 1 x 1 bottleneck projection."""

    def __init__(self, channels: Sequence[int], kernel_size: int, latent_channels: int, in_channels: int = 1):
        layers: list[nn.Module] = []
        c = in_channels
        for width in channels:
            layers += _stage(c, width, kernel_size, stride=2)
            c = width
        layers.append(nn.Conv2d(c, latent_channels, 1))
        super().__init__(*layers)


class Decoder(nn.Sequential):
    """The encoder's mirror: 1 x 1 expansion, (upsample x2 -> conv -> norm -> act) per
    inner stage, and a last upsample x2 -> k x k convolution to the output channel."""

    def __init__(self, channels: Sequence[int], kernel_size: int, latent_channels: int, out_channels: int = 1):
        widths = tuple(reversed(tuple(channels)))  # deepest first
        layers: list[nn.Module] = [
            nn.Conv2d(latent_channels, widths[0], 1),
            nn.GroupNorm(_groups(widths[0]), widths[0]),
            nn.LeakyReLU(0.2),
        ]
        c = widths[0]
        for width in widths[1:]:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers += _stage(c, width, kernel_size)
            c = width
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers.append(nn.Conv2d(c, out_channels, kernel_size, padding=kernel_size // 2))
        super().__init__(*layers)


class _Autoencoder(nn.Module):
    """Shared input checks: the spatial size must be divisible by 2^stages."""

    #: Parameter-name prefixes aggregated in federation (None: every parameter).
    SHARED_PREFIXES: tuple[str, ...] | None = None

    def __init__(self, stages: int, image_size: int):
        super().__init__()
        self.stages = stages
        factor = 2**stages
        if image_size < factor or image_size % factor:
            raise ConfigError(f"image_size must be a positive multiple of {factor}; got {image_size!r}")
        self.image_size = int(image_size)

    def _check(self, x: torch.Tensor) -> None:
        factor = 2**self.stages
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"expected a batch (B, 1, H, W) with H and W multiples of {factor}; got {tuple(x.shape)}"
            )


class ConvAutoencoder(_Autoencoder):
    """Convolutional autoencoder; the whole model is shared in federation (FedAvg)."""

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 128),
        kernel_size: int = 5,
        latent_channels: int = 16,
        image_size: int = 128,
    ):
        channels = _check_architecture(channels, kernel_size, latent_channels)
        super().__init__(len(channels), image_size)
        self.encoder = Encoder(channels, kernel_size, latent_channels)
        self.decoder = Decoder(channels, kernel_size, latent_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.decoder(self.encoder(x))


class DisentangledAutoencoder(_Autoencoder):
    """FedDis-style autoencoder: shape and appearance encoders, one decoder on both codes.

    ``forward(x) = decoder(concat(shape_encoder(x), appearance_encoder(x)))``.
    The two encoders must have the same number of stages so their codes share
    a spatial size. ``losses`` configures the training objective
    (:class:`~models.feddis.FedDisLosses`; default: as published, both extra
    losses on).
    """

    SHARED_PREFIXES = ("shape_encoder.",)

    def __init__(
        self,
        shape_channels: Sequence[int] = (64, 128, 128),
        appearance_channels: Sequence[int] = (16, 32, 32),
        kernel_size: int = 5,
        shape_latent: int = 16,
        appearance_latent: int = 4,
        image_size: int = 128,
        losses: FedDisLosses | None = None,
    ):
        if losses is not None and not isinstance(losses, FedDisLosses):
            raise ConfigError(f"losses must be a FedDisLosses; got {type(losses).__name__}")
        shape_channels = _check_architecture(shape_channels, kernel_size, shape_latent)
        appearance_channels = _check_architecture(appearance_channels, kernel_size, appearance_latent)
        if len(shape_channels) != len(appearance_channels):
            raise ConfigError(
                "shape and appearance encoders need the same number of stages; got "
                f"{shape_channels!r} and {appearance_channels!r}"
            )
        super().__init__(len(shape_channels), image_size)
        self.shape_encoder = Encoder(shape_channels, kernel_size, shape_latent)
        self.appearance_encoder = Encoder(appearance_channels, kernel_size, appearance_latent)
        self.decoder = Decoder(shape_channels, kernel_size, shape_latent + appearance_latent)
        self.losses = losses if losses is not None else FedDisLosses()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shape_code, appearance_code)``, each ``(B, C, H / 2^stages, W / 2^stages)``."""
        return self.shape_encoder(x), self.appearance_encoder(x)

    def decode(self, shape_code: torch.Tensor, appearance_code: torch.Tensor) -> torch.Tensor:
        """Reconstruct from a shape code and an appearance code (possibly of another slice)."""
        return self.decoder(torch.cat([shape_code, appearance_code], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.decode(*self.encode(x))


def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The model inside an Opacus ``GradSampleModule`` (attribute ``_module``) and its name prefix."""
    prefix = ""
    while isinstance(getattr(model, "_module", None), nn.Module):
        model = model._module  # type: ignore[assignment]
        prefix += "_module."
    return model, prefix


def shared_parameter_names(model: nn.Module, *, include_decoder: bool = False) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters aggregated in federation.

    :class:`ConvAutoencoder`: every parameter (plain FedAvg). FedDis
    (:class:`DisentangledAutoencoder`): the shape encoder only - appearance
    encoder and decoder stay local - or shape encoder and decoder with
    ``include_decoder=True``. Models wrapped by Opacus keep working (names get
    the wrapper's ``_module.`` prefix). Any other module: every trainable
    parameter.
    """
    inner, prefix = _unwrap(model)
    prefixes = getattr(inner, "SHARED_PREFIXES", None)
    if prefixes is not None and include_decoder:
        prefixes = tuple(prefixes) + ("decoder.",)
    names = []
    for name, parameter in inner.named_parameters():
        if not parameter.requires_grad:
            continue
        if prefixes is None or name.startswith(tuple(prefixes)):
            names.append(prefix + name)
    return names


def count_parameters(model: nn.Module, names: Sequence[str] | None = None) -> int:
    """Number of scalar parameters (of the named ones, if ``names`` is given)."""
    selected = None if names is None else set(names)
    return sum(p.numel() for n, p in model.named_parameters() if selected is None or n in selected)


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one ``image_size`` x ``image_size`` slice.

    Counts convolutions only (``H_out W_out C_out C_in k_h k_w / groups`` each);
    normalisation, activations and upsampling add well under 1 %. A training
    step costs about three forward passes (forward, and backward for inputs and
    weights); DP-SGD adds the per-sample weight gradients on top.
    """
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = (module.in_channels // module.groups) * kh * kw
            total += output.shape[2] * output.shape[3] * module.out_channels * per_output

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return int(total)
