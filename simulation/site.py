"""A hospital: its data, its local model, its trainer and its side of the protocol.

A site never hands its plaintext update to anyone: :meth:`Site.train`
returns the update to the site itself, :meth:`Site.encode` turns it into a
ring vector (clipped, FedAvg-weighted, stochastically rounded), and only the
site's :class:`secagg.ClientSession` - which masks it - talks to the
coordinator. In ``plain`` mode (the unprotected baseline) the ring vector is
sent as is.

FedAvg weights ride inside the vector (:func:`secagg.weighted_vector`): the
site multiplies its update by ``n_i / weight_bound`` and appends that factor,
so the coordinator learns only the sum of the weights.
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


def encode_update(vector: np.ndarray, num_records: int, encoder: secagg.FixedPointEncoder, weight_bound: float):
    """A site's update as its ring vector (clipped, FedAvg-weighted, stochastically rounded), and how
    many coordinates the clip changed (a count, not a statistic of the values)."""
    weighted = secagg.weighted_vector(vector, float(num_records), max_weight=weight_bound, clip=encoder.clip)
    clipped = int(np.count_nonzero(np.abs(vector) > encoder.clip))
    return encoder.encode(weighted).ring, clipped


@dataclass(frozen=True)
class LocalUpdate:
    """A site's local result, which stays at the site."""

    vector: np.ndarray  # flattened delta of the shared parameters
    num_records: int
    event: PrivacyEvent
    losses: tuple
    empty_steps: int


class Site:
    """One participant: data, local model and local training."""

    def __init__(self, name: str, client_id: int, train_data, model, shared_names: list[str]) -> None:
        self.name = name
        self.client_id = client_id
        self.train_data = train_data  # torch tensor (N, 1, H, W); never leaves the site
        self.model = model
        self.shared_names = list(shared_names)

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
        self.load_global(shared)
        result = train_dp_sgd(self.model, self.train_data, config, site=self.name, round_index=round_index,
                              progress=progress)
        return LocalUpdate(
            vector=flatten(result.delta, self.shared_names),
            num_records=result.num_records,
            event=result.event,
            losses=result.losses,
            empty_steps=result.empty_steps,
        )

    def encode(self, update: LocalUpdate, encoder: secagg.FixedPointEncoder, weight_bound: float):
        """Weighted, clipped, encoded ring vector, and how many coordinates were clipped."""
        return encode_update(update.vector, update.num_records, encoder, weight_bound)
