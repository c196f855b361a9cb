"""A hospital: its data, its local model, its trainer and its side of the protocol.

A site never hands its plaintext update to anyone: :meth:`Site.train`
returns the update to the site itself, :meth:`Site.encode` turns it into a
ring vector (clipped, FedAvg-weighted, stochastically rounded), and only the
site's :class:`secagg.ClientSession` - which masks it - talks to the
coordinator. In ``plain`` mode (the unprotected baseline) the ring vector is
sent as is.

FedAvg weights are public (declared per site before training, equal by
default; :meth:`simulation.config.SimulationConfig.public_weights`) and ride
inside the vector (:func:`secagg.weighted_vector`): the site multiplies its
update by ``w_i / weight_bound`` and appends that factor, so the decoded sum
of weights is a function of who survived and of public numbers only. A
site's record or patient count is never used as a weight: under add/remove
adjacency a released exact count has no finite epsilon.

What stays here: the training losses, empty-step and clip counts
(:class:`LocalUpdate`) are statistics of the site's private data that no DP
guarantee covers; the site keeps them (the simulation writes them to a
site-local file, :mod:`simulation.engines.inprocess.fleet`), never the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import secagg
from dp import DpSgdConfig, train_dp_sgd
from dp.events import PrivacyEvent

__all__ = ["Site", "LocalUpdate", "flatten", "unflatten", "encode_update"]


def flatten(tensors: dict, names: list[str]) -> np.ndarray:
    """Concatenate the named tensors into one float64 vector (the order of ``names``)."""
    return np.concatenate([tensors[n].detach().cpu().numpy().ravel().astype(np.float64) for n in names])


def unflatten(vector: np.ndarray, like: dict, names: list[str]) -> dict:
    """Inverse of :func:`flatten`, shaped like the tensors in ``like``."""
    import torch

    out, start = {}, 0
    for name in names:
        reference = like[name]
        size = reference.numel()
        out[name] = torch.from_numpy(vector[start : start + size].reshape(tuple(reference.shape))).to(reference.dtype)
        start += size
    if start != vector.size:
        raise ValueError(f"vector has {vector.size} values; the shared parameters need {start}")
    return out


def encode_update(vector: np.ndarray, public_weight: float, encoder: secagg.FixedPointEncoder, weight_bound: float):
    """A site's update as its ring vector (clipped, weighted by its PUBLIC FedAvg weight, stochastically
    rounded), and how many coordinates the clip changed (a site-local statistic: it stays at the site)."""
    weighted = secagg.weighted_vector(vector, float(public_weight), max_weight=weight_bound, clip=encoder.clip)
    clipped = int(np.count_nonzero(np.abs(vector) > encoder.clip))
    return encoder.encode(weighted).ring, clipped


@dataclass(frozen=True)
class LocalUpdate:
    """A site's local result, which stays at the site."""

    vector: np.ndarray  # flattened delta of the shared parameters
    num_records: int  # site-local
    event: PrivacyEvent
    losses: tuple  # site-local
    empty_steps: int  # site-local
    clipped_units: int = 0  # site-local: sampled patients whose summed gradient was clipped


class Site:
    """One participant: data, local model and local training."""

    def __init__(self, name: str, client_id: int, train_data, model, shared_names: list[str], *,
                 patients=None, public_weight: float = 1.0, randomness=None) -> None:
        self.name = name
        self.client_id = client_id
        self.train_data = train_data  # torch tensor (N, 1, H, W); never leaves the site
        self.patients = patients  # patient id of each slice (patient-level DP-SGD); never leaves the site
        self.model = model
        self.shared_names = list(shared_names)
        self.public_weight = float(public_weight)  # declared before training; public
        self.randomness = randomness  # TEST ONLY: injected seeded sampling and noise (None: the CSPRNG)

    @property
    def num_records(self) -> int:
        return int(self.train_data.shape[0])

    def load_global(self, shared: dict) -> None:
        """Overwrite the shared parameters with the global ones (local ones stay)."""
        import torch

        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name in self.shared_names:
                params[name].copy_(shared[name])

    def train(self, shared: dict, config: DpSgdConfig, round_index: int, progress=None) -> LocalUpdate:
        from models import training_loss  # the model's own objective (FedDis: its extra losses)

        self.load_global(shared)
        result = train_dp_sgd(self.model, self.train_data, config, site=self.name, round_index=round_index,
                              progress=progress, patients=self.patients, randomness=self.randomness,
                              loss_fn=training_loss(self.model))
        return LocalUpdate(
            vector=flatten(result.delta, self.shared_names),
            num_records=result.num_records,
            event=result.event,
            losses=result.losses,
            empty_steps=result.empty_steps,
            clipped_units=result.clipped_units,
        )

    def snapshot(self) -> dict:
        """The site's whole local model state (shared and site-local parameters), for a rollback."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def rollback(self, snapshot: dict) -> None:
        """Undo a round's training: nothing of it was released, so nothing of it may be kept.

        Local DP-SGD builds a fresh optimiser every round, so the model state is the site's whole
        training state."""
        self.model.load_state_dict(snapshot)

    def encode(self, update: LocalUpdate, encoder: secagg.FixedPointEncoder, weight_bound: float):
        """Weighted (public weight), clipped, encoded ring vector, and how many coordinates were clipped."""
        return encode_update(update.vector, self.public_weight, encoder, weight_bound)
