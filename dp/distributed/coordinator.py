"""The coordinator side of the distributed mechanism: decode the sum of the surviving sites.

Take the signed representative of each coordinate in [-2^(b-1), 2^(b-1)), divide by s, undo
the rotation and drop the padding: steps 6, 3 and 2 of :mod:`dp.distributed.site`, reversed.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidPrivacyParameterError
from ..rotation import unrotate
from .calibration import CalibratedDistributedDp
from .checks import int_at_least

__all__ = ["decode_sum"]


def decode_sum(ring_sum, calibrated: CalibratedDistributedDp, public_seed: bytes, n_contributors: int) -> np.ndarray:
    """The noisy float sum (length ``calibrated.dimension``) of ``n_contributors`` privatized updates.

    Refuses ``n_contributors`` below the threshold t (the calibration assumed at least t noise
    shares) or above ``max_contributors`` (the wrap-around bound assumed at most that many).
    """
    if not isinstance(calibrated, CalibratedDistributedDp):
        raise InvalidPrivacyParameterError(f"expected CalibratedDistributedDp; got {type(calibrated).__name__}")
    config = calibrated.config
    n = int_at_least("n_contributors", n_contributors, 1)
    if not config.min_contributors <= n <= config.max_contributors:
        raise InvalidPrivacyParameterError(
            f"n_contributors must be in [{config.min_contributors}, {config.max_contributors}] (the threshold "
            f"and the calibrated maximum); got {n}"
        )
    array = np.asarray(ring_sum)
    if array.dtype != calibrated.ring_dtype or array.ndim != 1 or array.shape[0] != calibrated.vector_length:
        raise InvalidPrivacyParameterError(
            f"expected a 1-D {calibrated.ring_dtype} ring vector of length {calibrated.vector_length}; "
            f"got {array.dtype}{array.shape}"
        )
    signed = array.view(np.int32 if calibrated.bits == 32 else np.int64).astype(np.float64)
    signed /= calibrated.scale
    if config.rotation:
        return unrotate(signed, public_seed, calibrated.dimension)
    return signed[: calibrated.dimension]
