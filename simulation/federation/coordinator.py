"""The coordinator: owns the global model and the server side of each round.

It never holds an individual plaintext update in the masking modes: all it
receives are wire bytes (keys, ciphertexts, masked vectors, shares), logged
in :attr:`Coordinator.inbox` so tests can check exactly that. It decodes only
the *sum* (:meth:`finish_round`), turns it into the FedAvg mean with the
weights that rode inside the vectors, and applies it to the global model.

In ``plain`` mode (a baseline, labelled as unprotected everywhere) sites send
their encoded update in clear and the coordinator sums them itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

import secagg
from secagg.encoding import ring_dtype

from .server_optimizer import ServerRule, ServerState, server_step
from .site import unflatten

__all__ = ["Coordinator", "PlainAggregator", "RoundAggregate"]


@dataclass(frozen=True)
class RoundAggregate:
    """What the coordinator learns from a completed round."""

    mean_update: np.ndarray  # FedAvg-weighted mean of the included sites' updates
    weight_sum: float  # sum of the included sites' normalised weights
    included: frozenset  # client ids in the sum


class PlainAggregator:
    """Unprotected aggregation: sums encoded vectors it receives in clear (baseline only)."""

    _HEADER = struct.Struct(">4sIB")

    def __init__(self, participants, vector_length: int, bit_width: int) -> None:
        self.participants = frozenset(participants)
        self.vector_length = vector_length
        self.bit_width = bit_width
        self._sum = np.zeros(vector_length, dtype=ring_dtype(bit_width))
        self.released: set[int] = set()

    @classmethod
    def pack(cls, client_id: int, bit_width: int, ring: np.ndarray) -> bytes:
        return cls._HEADER.pack(b"PLN1", client_id, bit_width) + ring.astype(ring.dtype.newbyteorder("<")).tobytes()

    def receive(self, data: bytes) -> None:
        magic, client_id, bit_width = self._HEADER.unpack_from(data)
        if magic != b"PLN1" or bit_width != self.bit_width or client_id not in self.participants:
            raise secagg.MalformedMessageError("not a plain update of this round")
        if client_id in self.released:
            raise secagg.UnexpectedMessageError(f"duplicate plain update from client {client_id}")
        vector = np.frombuffer(data, dtype=ring_dtype(bit_width).newbyteorder("<"), offset=self._HEADER.size)
        if vector.size != self.vector_length:
            raise secagg.InvalidInputError(f"plain update of {vector.size} values; expected {self.vector_length}")
        np.add(self._sum, vector, out=self._sum)
        self.released.add(client_id)

    @property
    def ring_sum(self) -> np.ndarray:
        return self._sum


class Coordinator:
    """Global model, per-round server session, FedAvg."""

    def __init__(self, global_shared: dict, shared_names: list[str], server_rule: ServerRule | None = None) -> None:
        self.global_shared = {n: global_shared[n].detach().clone() for n in shared_names}
        self.shared_names = list(shared_names)
        # How the decoded mean becomes a step (simulation.federation.server_optimizer); FedAvg by default.
        self.server_rule = server_rule or ServerRule()
        self.server_state = ServerState()
        self.inbox: list[bytes] = []  # everything received, in wire form (for audits and tests)
        self.server: secagg.ServerSession | PlainAggregator | None = None

    # -- a round ----------------------------------------------------------------

    def open_masked_round(self, config: secagg.SessionConfig) -> secagg.ServerSession:
        self.server = secagg.ServerSession(config)
        return self.server

    def open_he_round(self, config):
        """A CKKS session (:mod:`secagg.he`): the coordinator holds only the public parameters."""
        from secagg.he import HEServerSession

        self.server = HEServerSession(config)
        return self.server

    def open_plain_round(self, participants, vector_length: int, bit_width: int) -> PlainAggregator:
        self.server = PlainAggregator(participants, vector_length, bit_width)
        return self.server

    def receive(self, data: bytes) -> None:
        self.inbox.append(bytes(data))
        self.server.receive(data)

    def advance(self) -> dict:
        return self.server.advance()

    @property
    def released(self) -> frozenset:
        """Sites whose (masked or plain) update reached the coordinator this round."""
        return frozenset(self.server.released)

    def finish_round(self, encoder: secagg.FixedPointEncoder) -> RoundAggregate:
        """Decode the sum of the round and compute the FedAvg mean from it."""
        if isinstance(self.server, PlainAggregator):
            ring_sum, included = self.server.ring_sum, frozenset(self.server.released)
        else:
            result = self.server.result
            ring_sum, included = result.ring_sum, result.survivors
        total = encoder.decode(ring_sum)
        mean, weight_sum = secagg.weighted_mean(total, clip=encoder.clip)
        self.server = None
        return RoundAggregate(mean_update=mean, weight_sum=weight_sum, included=included)

    def finish_round_distributed(self, calibrated, public_seed: bytes) -> RoundAggregate:
        """Distributed DP: decode the noisy sum (inverse rotation, unscaling) into an unweighted mean.

        The FedAvg weight does not ride inside the vector here: it would be noised and count
        against the L2 clip, so every included site gets the same weight.
        """
        from dp.distributed import decode_sum

        if isinstance(self.server, PlainAggregator):
            ring_sum, included = self.server.ring_sum, frozenset(self.server.released)
        else:
            result = self.server.result
            ring_sum, included = result.ring_sum, result.survivors
        total = decode_sum(ring_sum, calibrated, public_seed, len(included))
        self.server = None
        return RoundAggregate(mean_update=total / len(included), weight_sum=float(len(included)), included=included)

    def apply(self, aggregate: RoundAggregate) -> None:
        """global <- global + the server optimiser's step for the decoded mean (FedAvg: the mean itself)."""
        step, self.server_state = server_step(self.server_rule, aggregate.mean_update, self.server_state)
        delta = unflatten(step, self.global_shared, self.shared_names)
        for name in self.shared_names:
            self.global_shared[name] = self.global_shared[name] + delta[name]

    def server_state_dict(self) -> dict | None:
        """The server optimiser's state (None for FedAvg, which has none), for checkpoints."""
        if self.server_state.first is None:
            return None
        import torch

        state = {"t": torch.tensor(self.server_state.t), "first": torch.from_numpy(self.server_state.first.copy())}
        if self.server_state.second is not None:
            state["second"] = torch.from_numpy(self.server_state.second.copy())
        return state

    def load_server_state_dict(self, state: dict) -> None:
        self.server_state = ServerState(int(state["t"]), state["first"].numpy().astype(np.float64),
                                        state["second"].numpy().astype(np.float64) if "second" in state else None)

    def state_dict(self) -> dict:
        return {n: t.clone() for n, t in self.global_shared.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shared_names) - set(state)
        if missing:
            raise ValueError(f"global checkpoint lacks parameters {sorted(missing)[:5]}")
        self.global_shared = {n: state[n].clone() for n in self.shared_names}
