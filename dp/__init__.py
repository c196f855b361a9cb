"""Privacy: local DP-SGD, epsilon accounting, calibration and the privacy ledger.

* :mod:`dp.events` - :class:`PrivacyEvent`, one private release (site, round, sigma, q, steps, delta,
  and its privacy unit: ``"patient"`` by default, ``"slice"`` as a labelled option).
* :mod:`dp.accounting` - epsilon from events with Opacus RDP, Opacus PRV and dp-accounting
  PLD side by side; the reported bound is the tightest valid upper bound.
* :mod:`dp.calibration` - the noise multiplier for a target epsilon over the whole run.
* :mod:`dp.ledger` - the append-only, hash-chained SQLite ledger and its verification;
  :mod:`dp.ledger_signatures` - the sites' signatures on their spends and their anchors of the head;
  :mod:`dp.round_chain` - what a site checks of a round's committed spends before it helps unmask.
* :mod:`dp.training` - local DP-SGD with Opacus (CSPRNG sampling and noise by default), at
  patient level by default: Poisson-sampled patients, each patient's summed per-slice gradient
  clipped to C, a public normaliser. :mod:`dp.unit_gradients` computes the per-unit (slice or
  patient) gradients in one backward pass for the layers :mod:`models` builds; other models
  go through Opacus.
* :mod:`dp.discrete`, :mod:`dp.rotation`, :mod:`dp.distributed` - distributed DP: exact
  CSPRNG discrete Gaussian / Skellam noise added by each site in the integer domain before
  masking, with the site-level guarantee of the released sum. :mod:`dp.distributed` is a
  package that mirrors the local path above: ``events``, ``accounting`` (with ``wraparound``),
  ``calibration``, and the mechanism's two sides, ``site`` (privatize) and ``coordinator``
  (decode the sum).

Imports flow one way: ``dp`` uses ``secagg`` and nothing else of this project. From it, it takes
the CSPRNG (key derivation, random bytes and the PRG keystream: :mod:`dp.discrete`,
:mod:`dp.rotation`, :mod:`dp.training`), the Ed25519 signatures and their errors
(:mod:`dp.ledger_signatures`) and the fixed-point encoding's ring widths and dtypes
(:mod:`dp.distributed`, which works in the ring the protocol masks). ``dp`` never imports
``models`` or ``simulation``. torch and Opacus are imported lazily by the functions that need them.
"""

from .accounting import (
    ACCOUNTANTS,
    APPROXIMATIONS,
    DEFAULT_ACCOUNTANTS,
    AccountantResult,
    EpsilonReport,
    accountant_version,
    compute_epsilon,
    epsilon_for,
)
from .calibration import Calibration, calibrate_noise
from .errors import (
    BudgetExceededError,
    CalibrationError,
    InvalidPrivacyParameterError,
    LedgerError,
    LedgerIntegrityError,
    ModelNotPrivateError,
    SiteSignatureError,
    PrivacyError,
)
from .discrete import discrete_gaussian_variance, sample_discrete_gaussian, sample_poisson, sample_skellam
from .distributed import (
    CalibratedDistributedDp,
    DistributedDpConfig,
    DistributedDpEvent,
    PrivatizedUpdate,
    compute_distributed_epsilon,
    decode_sum,
    distributed_rdp,
    privatize,
    privatize_detailed,
    wrap_probability_bound,
)
from .distributed import calibrate as calibrate_distributed
from .events import NEIGHBOURING_RELATIONS, PRIVACY_UNITS, PrivacyEvent, describe_guarantee
from .ledger import BudgetDecision, LedgerEntry, PrivacyLedger, ProjectedSpend, VerificationReport, verify_ledger
from .ledger_signatures import EntryStatement, LedgerSigner, ReleaseRecord, SiteAnchor, load_anchors, load_releases
from .round_chain import ChainEntry, check_round_chain, round_chain
from .training import (
    AuditCanaries,
    DpSgdConfig,
    LocalTrainingResult,
    clipped_patient_sum,
    clipped_unit_sum,
    csprng_gaussian,
    csprng_poisson_mask,
    make_private_compatible,
    patient_groups,
    train_dp_sgd,
    train_non_private,
)
from .unit_gradients import UnitGradients, supports_unit_gradients

__all__ = [
    "PrivacyEvent", "NEIGHBOURING_RELATIONS", "PRIVACY_UNITS", "describe_guarantee",
    "ACCOUNTANTS", "APPROXIMATIONS", "DEFAULT_ACCOUNTANTS", "AccountantResult", "EpsilonReport",
    "compute_epsilon", "epsilon_for", "accountant_version",
    "Calibration", "calibrate_noise",
    "PrivacyLedger", "LedgerEntry", "BudgetDecision", "ProjectedSpend", "VerificationReport", "verify_ledger",
    "LedgerSigner", "SiteAnchor", "EntryStatement", "load_anchors", "ReleaseRecord", "load_releases",
    "ChainEntry", "round_chain", "check_round_chain",
    "DpSgdConfig", "LocalTrainingResult", "train_dp_sgd", "train_non_private", "make_private_compatible",
    "csprng_gaussian", "csprng_poisson_mask", "clipped_patient_sum", "patient_groups", "AuditCanaries",
    "clipped_unit_sum", "UnitGradients", "supports_unit_gradients",
    "DistributedDpConfig", "CalibratedDistributedDp", "DistributedDpEvent", "PrivatizedUpdate",
    "calibrate_distributed", "privatize", "privatize_detailed", "decode_sum", "compute_distributed_epsilon",
    "distributed_rdp", "wrap_probability_bound",
    "sample_discrete_gaussian", "sample_poisson", "sample_skellam", "discrete_gaussian_variance",
    "PrivacyError", "InvalidPrivacyParameterError", "CalibrationError", "BudgetExceededError",
    "LedgerError", "LedgerIntegrityError", "SiteSignatureError", "ModelNotPrivateError",
]
