"""Distributed differential privacy: discrete noise added by each site before masking.

Each site clips, rotates, scales and rounds its update, adds exact discrete Gaussian or Skellam
noise and reduces it into the ring that secure aggregation masks; the coordinator decodes the
sum. The guarantee is site level and holds against the coordinator as long as enough honest
sites' noise is in the sum (Kairouz, Liu, Steinke, ICML 2021; Agarwal, Kairouz, Liu, NeurIPS 2021).

The package mirrors the local DP-SGD path of :mod:`dp` (events, accounting, calibration, the
mechanism); each module's docstring states its part of the math:

* :mod:`dp.distributed.events` - :class:`DistributedDpEvent`, one round's guarantee as plain
  data, and the adjacency and trust assumption behind it.
* :mod:`dp.distributed.accounting` - Renyi DP per round (KLS21 Thm. 1; AKL21 Cor. 4.1),
  composed by addition and converted to (epsilon, delta).
* :mod:`dp.distributed.wraparound` - the bound on the probability that a sum wraps the ring.
* :mod:`dp.distributed.calibration` - :class:`DistributedDpConfig` (what the consortium asks)
  and :func:`calibrate` (scale, noise and ring width that meet it).
* :mod:`dp.distributed.site` - the site side: :func:`privatize` (steps 1-6 of the pipeline).
* :mod:`dp.distributed.coordinator` - the coordinator side: :func:`decode_sum`.

Imports flow one way inside the package: checks <- events <- accounting, wraparound <-
calibration <- site, coordinator; outside it only to the rest of :mod:`dp` and to
:mod:`secagg.encoding` (the ring widths).
"""

from .accounting import DEFAULT_ORDERS, compute_distributed_epsilon, distributed_rdp, rdp_to_epsilon
from .calibration import (
    SUPPORTED_RING_BITS,
    CalibratedDistributedDp,
    DistributedDpConfig,
    calibrate,
    rounded_l2_norm_bound,
)
from .coordinator import decode_sum
from .events import DISTRIBUTED_NEIGHBOURING, MECHANISMS, DistributedDpEvent
from .site import PrivatizedUpdate, privatize, privatize_detailed
from .wraparound import wrap_probability_bound

__all__ = [
    "MECHANISMS",
    "DISTRIBUTED_NEIGHBOURING",
    "DEFAULT_ORDERS",
    "DistributedDpEvent",
    "DistributedDpConfig",
    "CalibratedDistributedDp",
    "PrivatizedUpdate",
    "rounded_l2_norm_bound",
    "distributed_rdp",
    "rdp_to_epsilon",
    "compute_distributed_epsilon",
    "wrap_probability_bound",
    "calibrate",
    "privatize",
    "privatize_detailed",
    "decode_sum",
]
