"""The ``secagg`` command line.

Subcommands: ``demo`` (a protocol demonstration with dropouts and a
malicious-coordinator attack), ``params`` (the SecAgg+ parameter finder),
``epsilon`` and ``noise`` (privacy accounting and calibration), ``ledger show``
and ``ledger verify`` (the run's privacy ledger), ``dpia`` (a Data Protection Impact Assessment
drawn from a run directory), ``audit`` (an empirical lower bound on epsilon),
``keys new`` / ``keys node-auth`` / ``keys register-nodes`` (a site's Ed25519 identity and its Flower
node key; registering the registry's node keys with a SuperLink), ``flower app-path|certs|check``
(the installed Flower app folder, loopback certificates, whether a Flower run finished), ``flower
app-key|sign-app|supernode`` (the consortium's app-signing key, its signature of an app bundle, and a
SuperNode that runs only bundles so signed), ``export`` (a run's model as
one self-describing file), ``detect`` (NIfTI anomaly maps of new scans) and ``experiment`` (a multi-seed
comparison of federated, local, central and non-private training, with seeded - labelled - noise).
Exit codes: 0 success, 2 bad input (a one-line error on stderr), 1 a failed
check (e.g. a ledger that does not verify), 3 an unexpected internal error
(one line on stderr naming a crash report written, mode 0600, in the run
directory, or in a new private temporary directory when there is none),
130 interrupted. No traceback ever reaches the terminal; warnings are one line.
What counts as bad input is :func:`simulation.errors.bad_input_errors`: the one simulation-side
base :class:`~simulation.errors.SimulationInputError` and the bad-input bases of secagg, dp and
models (which cannot derive from a simulation class: they may not import it).

Layout: one module per command group, in the order of ``secagg --help`` (:data:`GROUPS`):
:mod:`~simulation.cli.protocol` (demo, params), :mod:`~simulation.cli.accounting` (epsilon, noise),
:mod:`~simulation.cli.simulate`, :mod:`~simulation.cli.experiment`, :mod:`~simulation.cli.data`,
:mod:`~simulation.cli.model` (export, detect), :mod:`~simulation.cli.keys`, :mod:`~simulation.cli.flower`,
:mod:`~simulation.cli.reports` (dpia, audit) and :mod:`~simulation.cli.ledger`. Each has a
``register(sub)`` that adds its sub-parsers and their handlers; :func:`build_parser` only calls them, and
:func:`main` is the one place where errors become exit codes. :mod:`~simulation.cli.common` holds the
parser classes, argument types and exit codes, :mod:`~simulation.cli.output` the one printer of JSON
(``--json``) or text, :mod:`~simulation.cli.crash` the crash report.
"""

from __future__ import annotations

import argparse
import sys

from . import accounting, data, experiment, flower, keys, ledger, model, protocol, reports, simulate
from .common import (EXIT_BAD_INPUT, EXIT_FAILED_CHECK, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, Formatter, Parser,
                     UsageError, one_line)
from .crash import write_crash_report

__all__ = ["main", "build_parser", "write_crash_report", "UsageError", "EXIT_OK", "EXIT_FAILED_CHECK",
           "EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED"]

#: The command groups, in the order their commands appear in ``secagg --help``.
GROUPS = (protocol, accounting, simulate, experiment, data, model, keys, flower, reports, ledger)


def build_parser() -> argparse.ArgumentParser:
    """The ``secagg`` parser: each group of :data:`GROUPS` adds its sub-parsers, in that order."""
    parser = Parser(
        prog="secagg",
        description="Privacy-hardened secure aggregation for federated learning of brain-MRI autoencoders.",
        formatter_class=Formatter,
        epilog=(
            "Examples:\n  secagg demo\n  secagg params --n 1000 --corrupt 0.05 --dropout 0.05\n"
            "  secagg epsilon --noise-multiplier 1.1 --sample-rate 0.01 --steps 1000 --delta 1e-5\n"
            "  secagg noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000\n"
            "  secagg ledger verify runs/demo"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr (no source line, no file path of ours)."""
    print(f"secagg: warning: {one_line(message)}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one ``secagg`` command; returns its exit code and never lets a traceback reach the user.

    0 success; 1 a failed check (a ledger that does not verify, an audit above the
    accounted epsilon, a demo that is not exact); 2 bad input (one line naming what
    was wrong: a file, a configuration value, a run directory, a ledger, a registry,
    or an operating-system error on a path the user gave); 3 an unexpected internal
    error (one line naming the crash report: a 0600 file in the run directory, or
    in a new private temporary directory when the command has none); 130 Ctrl-C.
    """
    import warnings

    from dp.errors import LedgerIntegrityError

    from ..errors import bad_input_errors

    args = None
    command = "secagg"
    bad_input: tuple = ()
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        bad_input = bad_input_errors()
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(argv if argv is not None else sys.argv[1:])
        command = f"secagg {args.command}"
        return args.func(args)
    except LedgerIntegrityError as exc:  # a damaged ledger: a failed check, not bad input
        print(f"{command}: ledger BROKEN: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    except UsageError as exc:
        print(one_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except bad_input as exc:
        print(f"{command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a path the user gave: missing, a directory, unreadable, full disk
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{command}: error: {one_line(exc.strerror or exc)}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback on the terminal
        report = write_crash_report(args, argv, exc)
        print(f"{command}: internal error ({type(exc).__name__}: {one_line(exc)[:200]}); this is a bug - "
              f"crash report: {report}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = previous
