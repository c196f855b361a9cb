"""The one base class of the simulation side's bad-input errors, and how the CLI maps errors to exit codes.

Every error that :mod:`simulation` raises because the *user's input* is wrong - a configuration
value, a run directory, a DPIA's organisation file, a key registry, a passphrase, an experiment's
output directory - derives from :class:`SimulationInputError` (itself a :class:`ValueError`, so
generic callers still catch it). ``secagg`` on the command line catches it once and prints one
line with exit code 2 (:func:`simulation.cli.main`).

The other packages may not import :mod:`simulation` (the layering is ``secagg`` <- ``dp`` <-
``simulation`` and ``models`` <- ``simulation``), so their errors cannot derive from this class;
the CLI therefore also catches, as bad input, exactly these bases of theirs (:func:`bad_input_errors`):

* ``secagg``: :class:`secagg.InvalidInputError` and :class:`secagg.InfeasibleParametersError`;
* ``dp``: :class:`dp.errors.InvalidPrivacyParameterError`, :class:`dp.errors.CalibrationError`
  and :class:`dp.errors.LedgerError` (but :class:`dp.errors.LedgerIntegrityError`, a damaged
  ledger, is a failed check: exit 1);
* ``models`` (when the ``mri`` extra is installed): :class:`models.errors.ModelsError`.

Deliberately *not* bad input: :class:`simulation.engines.flower.node_registration.NodeRegistrationError`
(a SuperLink that refuses a key is a failed check, exit 1),
:class:`simulation.engines.flower.session_journal.ReplayedSessionError` (a protocol verification
failure), :class:`simulation.engines.flower.app_trust.AppNotTrustedError` (a node refusing an app bundle
the consortium did not sign: a failed check) and
:class:`simulation.experiment.early_stopping.StopTraining` (control flow).

Two configuration errors exist and are different classes: :class:`simulation.config.SimulationConfigError`
(a run's or experiment's settings; ``simulation.config.ConfigError`` is the same class under its
old name) and :class:`models.errors.ConfigError` (an argument of the brain-MRI package, which
cannot know about runs). Where :class:`~simulation.config.SimulationConfig` validates a setting
that :mod:`models` checks (the ``[bids]`` table), it re-raises the second as the first. Both are
bad input to the CLI.

:class:`simulation.cli.UsageError` (a bad command line) is the CLI's own: it also exits 2 but is
printed as argparse words it, without the ``secagg CMD: error:`` prefix.
"""

from __future__ import annotations

__all__ = ["SimulationInputError", "bad_input_errors"]


class SimulationInputError(ValueError):
    """Bad input to a simulation-side command: reported in one line, exit code 2."""


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """What the CLI reports as bad input (exit code 2): :class:`SimulationInputError` and the
    other packages' bases listed in the module docstring (``models`` only when it imports: without
    the ``mri`` extra it cannot raise)."""
    import secagg
    from dp.errors import CalibrationError, InvalidPrivacyParameterError, LedgerError

    classes: tuple[type[BaseException], ...] = (
        SimulationInputError,
        secagg.InvalidInputError, secagg.InfeasibleParametersError,
        InvalidPrivacyParameterError, CalibrationError, LedgerError,
    )
    try:
        from models.errors import ModelsError
    except ImportError:
        return classes
    return classes + (ModelsError,)
