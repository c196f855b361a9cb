"""FedDis training objective: reconstruction, shape consistency, latent orthogonality.

After Bercea, Wiestler, Rueckert and Albarqouni, "FedDis: Disentangled Federated
Learning for Unsupervised Brain Pathology Segmentation" (arXiv:2103.03705;
Nature Machine Intelligence 2022, "Federated disentangled representation
learning for unsupervised brain anomaly detection") and the authors' public
repository ``albarqounilab/FedDis-NMI`` (commit 70fcb25, read for facts only).

For a slice ``x_i`` with shape code ``s_i = E_s(x_i)`` and appearance code
``a_i = E_a(x_i)`` (both ``(C, h, w)``, flattened for the cosines), the
per-sample loss is

``L_i = R_i + w_c * C_i + w_o * O_i``

* **reconstruction** ``R_i = mean |D(s_i, a_i) - x_i|`` (L1, as the authors'
  code; ``reconstruction="mse"`` for the squared error);
* **shape consistency** ``C_i = 1 - cos(s_i, sg[E_s(g_i(x_i))])``: the shape
  code of the same slice after a random gamma intensity transform ``g_i``
  (``gamma_i ~ U(0.5, 2)``, applied to the slice min-max rescaled to [0, 1] and
  scaled back) must point the same way. ``sg`` is stop-gradient: the
  augmented code is a target computed without gradients, as in the authors'
  code, so ``C`` trains the shape encoder only;
* **latent orthogonality** ``O_i = max(0, cos(a_i, P(sg[s_i])))``: the
  appearance code is pushed to be orthogonal to (a projection of) the shape
  code. ``P`` sums the shape channels and repeats the sum once per appearance
  channel (the authors use a freshly initialised 1 x 1 convolution with all-ones
  weights for this; ours has no bias). The shape code is detached, as in the
  authors' code, so ``O`` trains the appearance encoder only: the *shared*
  shape encoder is never pulled by a site's appearance. ``orthogonality_to_shape=True``
  lets it reach the shape encoder too (an ablation; it makes the shared
  parameters depend on site-specific appearance).

The batch loss is the mean of ``L_i`` over the batch (0 for an empty batch).

**Per-sample decomposability (DP-SGD).** ``L_i`` depends only on ``x_i`` and its
own augmentation ``g_i(x_i)``: the gamma and the min-max range are drawn and
computed per slice, the encoders use GroupNorm (per sample), and the
augmented forward pass runs without gradients (Opacus records no activations
then), so each trainable module sees exactly one differentiable forward pass
per step. Opacus' per-sample gradients of the batch mean are therefore the
gradients of each ``L_i`` alone (``tests/test_models_feddis.py`` checks this
against single-sample backward passes), and clipping bounds each sample's
(or patient's) contribution as DP-SGD requires. The authors' code applied one
gamma and one min-max range to the whole batch, which would couple samples:
we draw them per slice.

**Where this reading differs from the paper / the authors' code**

* The paper's text (method section) was not available to us; the losses
  follow the abstract ("a shape embedding that is orthogonal to the appearance
  and consistent under different intensity augmentations") and the
  shape-consistency / latent-orthogonality code in the authors' repository,
  where these two losses are present but *commented out*: in the published
  ``FedCollaborator.py`` the variables named ``l_scl`` / ``l_lol`` hold a VGG
  perceptual loss and a total-variation loss instead, and the repository's
  ``config/feddis_config.yaml`` sets ``lambda_R = 0`` (reconstruction only).
  We implement the shape-consistency and orthogonality losses, not the
  perceptual or TV losses.
* Weights: the README's configuration has ``lambda_R = 0.2``,
  ``lambda_S = lambda_L = 1`` (effective weight 0.2 each), switched on from
  round 25 of 50 (``round_scl_injection``). We use 0.2 each from the first
  step (no round schedule).
* The authors train with self-supervised rectangle in-painting (random bright
  rectangles painted into the input, reconstruction of the clean slice) and an
  Adam optimiser with gradient-norm clipping 0.5 and exponential learning-rate
  decay; none of that is here (our optimiser and clipping are DP-SGD's).
* Architecture (:class:`~models.autoencoders.DisentangledAutoencoder`): the
  authors' widths (shape 64 -> 128, appearance 16 -> 32) and 16 x 16
  intermediate resolution for 128 x 128 slices are the ``feddis`` registry
  entry; at 64 x 64 (the CPU demo) three stages give 8 x 8, and the
  ``compact-feddis`` widths (16-32-32 / 8-16-16) are ours. BatchNorm is
  replaced by GroupNorm (DP-SGD needs per-sample normalisation). Their
  slices are 2-D axial slices 15-125 of 1 mm volumes resampled to 128 x 128;
  ours are the slices :mod:`models.preprocess` keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import ConfigError

__all__ = ["FedDisLosses", "gamma_augment", "feddis_loss_terms", "feddis_loss", "training_loss"]

_RECONSTRUCTIONS = ("l1", "mse")


@dataclass(frozen=True)
class FedDisLosses:
    """Which FedDis objectives train the model, and their weights (module docstring).

    ``shape_consistency`` / ``orthogonality`` switch each extra loss on or off
    (the ablation); with both off the model trains on reconstruction alone.
    """

    shape_consistency: bool = True
    orthogonality: bool = True
    consistency_weight: float = 0.2
    orthogonality_weight: float = 0.2
    gamma_range: tuple[float, float] = (0.5, 2.0)
    reconstruction: str = "l1"
    orthogonality_to_shape: bool = False

    def __post_init__(self) -> None:
        if self.reconstruction not in _RECONSTRUCTIONS:
            raise ConfigError(f"reconstruction must be one of {_RECONSTRUCTIONS}; got {self.reconstruction!r}")
        for name in ("consistency_weight", "orthogonality_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{name} must be a non-negative number; got {value!r}")
        lo, hi = (float(v) for v in self.gamma_range)
        if not 0 < lo <= hi:
            raise ConfigError(f"gamma_range must satisfy 0 < low <= high; got {self.gamma_range!r}")

    def as_dict(self) -> dict:
        return {
            "shape_consistency": self.shape_consistency, "orthogonality": self.orthogonality,
            "consistency_weight": self.consistency_weight, "orthogonality_weight": self.orthogonality_weight,
            "gamma_range": list(self.gamma_range), "reconstruction": self.reconstruction,
            "orthogonality_to_shape": self.orthogonality_to_shape,
        }


def gamma_augment(batch, gamma):
    """Per-slice gamma transform: ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma_i``.

    ``lo``/``hi`` are each slice's own minimum and maximum, ``gamma`` a tensor
    of one exponent per slice: slice ``i``'s output depends on slice ``i`` only.
    A constant slice is returned unchanged.
    """
    import torch

    flat = batch.reshape(batch.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (batch.dim() - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (batch.dim() - 1)))
    span = hi - lo
    unit = torch.where(span > 0, (batch - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(batch))
    g = gamma.to(batch.dtype).view(-1, *([1] * (batch.dim() - 1)))
    return torch.where(span > 0, lo + span * unit.clamp_min(0.0).pow(g), batch)


def _inner(module):
    """The model inside Opacus wrappers (its submodules carry the wrapper's hooks)."""
    from torch import nn

    while isinstance(getattr(module, "_module", None), nn.Module):
        module = module._module
    return module


def _cosine(a, b):
    import torch.nn.functional as F

    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)


def feddis_loss_terms(module, batch, losses: FedDisLosses | None = None, *, generator=None, gamma=None) -> dict:
    """Per-sample terms ``{"reconstruction", "consistency", "orthogonality"}``, each shape ``(B,)``.

    A switched-off term is all zeros (and not computed). ``generator``: a
    ``torch.Generator`` for the gamma draws (torch's default generator if None);
    ``gamma``: the per-slice exponents themselves (shape ``(B,)``), instead of a draw.
    """
    import torch

    losses = losses or FedDisLosses()
    model = _inner(module)
    shape_code, appearance_code = model.encode(batch)
    reconstruction = model.decode(shape_code, appearance_code)
    residual = reconstruction - batch
    per_pixel = residual.abs() if losses.reconstruction == "l1" else residual.pow(2)
    terms = {"reconstruction": per_pixel.flatten(1).mean(dim=1)}
    zeros = torch.zeros(batch.shape[0], dtype=batch.dtype, device=batch.device)
    terms["consistency"] = zeros
    terms["orthogonality"] = zeros
    if losses.shape_consistency and batch.shape[0]:
        if gamma is None:
            lo, hi = (float(v) for v in losses.gamma_range)
            gamma = lo + (hi - lo) * torch.rand(batch.shape[0], generator=generator, dtype=torch.float64)
        with torch.no_grad():
            target = model.shape_encoder(gamma_augment(batch, gamma))
        terms["consistency"] = 1.0 - _cosine(shape_code, target)
    if losses.orthogonality and batch.shape[0]:
        shape = shape_code if losses.orthogonality_to_shape else shape_code.detach()
        projected = shape.sum(dim=1, keepdim=True).expand_as(appearance_code)
        terms["orthogonality"] = _cosine(appearance_code, projected).clamp_min(0.0)
    return terms


def feddis_loss(module, batch, losses: FedDisLosses | None = None, *, generator=None, gamma=None):
    """Mean over the batch of ``R_i + w_c C_i + w_o O_i`` (module docstring); 0 for an empty batch."""
    losses = losses or FedDisLosses()
    terms = feddis_loss_terms(module, batch, losses, generator=generator, gamma=gamma)
    total = (terms["reconstruction"] + losses.consistency_weight * terms["consistency"]
             + losses.orthogonality_weight * terms["orthogonality"])
    return total.sum() / max(int(batch.shape[0]), 1)


def _mse(module, batch):
    import torch.nn.functional as F

    return F.mse_loss(module(batch), batch)


def training_loss(model) -> Callable:
    """The training loss ``loss_fn(module, batch)`` for ``model`` (a plain or Opacus-wrapped module).

    A :class:`~models.autoencoders.DisentangledAutoencoder` trains on
    :func:`feddis_loss` with its ``losses`` configuration; any other model on
    the mean squared reconstruction error. Pass the result as ``loss_fn`` to
    the DP-SGD trainer.
    """
    from .autoencoders import DisentangledAutoencoder

    inner = _inner(model)
    if isinstance(inner, DisentangledAutoencoder):
        losses = inner.losses

        def loss_fn(module, batch):
            return feddis_loss(module, batch, losses)

        return loss_fn
    return _mse
