"""Typed errors of the privacy package.

Every error derives from :class:`PrivacyError`; those caused by bad arguments
also derive from :class:`ValueError`. Messages say what was expected, what
arrived and what to do.
"""

from __future__ import annotations

__all__ = [
    "PrivacyError",
    "InvalidPrivacyParameterError",
    "CalibrationError",
    "BudgetExceededError",
    "LedgerError",
    "LedgerIntegrityError",
    "SiteSignatureError",
    "ModelNotPrivateError",
]


class PrivacyError(Exception):
    """Base of every error raised by :mod:`dp`."""


class InvalidPrivacyParameterError(PrivacyError, ValueError):
    """A privacy parameter is out of its domain (delta outside (0,1), q outside (0,1], ...)."""


class CalibrationError(PrivacyError):
    """No noise multiplier reaches the target epsilon (or the accountants all failed)."""


class BudgetExceededError(PrivacyError):
    """Running a round would take a site past its epsilon budget; nothing was spent."""


class LedgerError(PrivacyError):
    """The privacy ledger is missing, foreign, or cannot be written."""


class LedgerIntegrityError(LedgerError):
    """The ledger is damaged or does not verify; ``seq``/``site``/``round`` name the entry when known."""

    def __init__(self, message: str, *, seq: int | None = None, site: str | None = None,
                 round: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq
        self.site = site
        self.round = round


class SiteSignatureError(LedgerError):
    """A site's signature on its spend is missing, refused or does not verify: nothing was committed."""

    def __init__(self, message: str, *, site: str | None = None, round: int | None = None) -> None:
        super().__init__(message)
        self.site = site
        self.round = round


class ModelNotPrivateError(PrivacyError, ValueError):
    """A model contains modules that DP-SGD cannot train privately (and could not be fixed)."""
