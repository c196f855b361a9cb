"""What every command group shares: the parser and help formatter, argument types, the usage error
and the exit codes."""

from __future__ import annotations

import argparse

__all__ = ["Formatter", "Parser", "UsageError", "probability", "positive", "fmt_epsilon", "bids_flags",
           "passphrase_from_env_option", "one_line", "EXIT_OK", "EXIT_FAILED_CHECK", "EXIT_BAD_INPUT",
           "EXIT_INTERNAL", "EXIT_INTERRUPTED"]


#: Exit codes (documented in the module docstring and the README).
EXIT_OK, EXIT_FAILED_CHECK, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps description layout; appends a default only where the help does not state one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), as the project promises."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: error: {message}")


def probability(name: str, *, low_open: bool = True, high_closed: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number; got {text!r}") from None
        ok = (0 < value if low_open else 0 <= value) and (value <= 1 if high_closed else value < 1)
        if not ok:
            interval = ("(" if low_open else "[") + "0, 1" + ("]" if high_closed else ")")
            raise argparse.ArgumentTypeError(f"{name} must be in {interval}; got {value}")
        return value

    return parse


def positive(kind, name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive {'integer' if kind is int else 'number'}; got {text!r}") from None
        if not value > 0 or value != value or value in (float("inf"),):
            raise argparse.ArgumentTypeError(f"{name} must be positive and finite; got {text}")
        return value

    return parse


def fmt_epsilon(value) -> str:
    return "failed" if value is None else f"{value:.4f}"


def bids_flags(args: argparse.Namespace) -> dict | None:
    """The BIDS reading options given as flags (None when none is given: defaults or the TOML [bids] table)."""
    flags = {"suffix": args.bids_suffix, "group_column": args.bids_group_column,
             "site_column": args.bids_site_column, "pipeline": args.bids_pipeline}
    flags = {k: v for k, v in flags.items() if v is not None}
    return flags or None


def passphrase_from_env_option(args: argparse.Namespace, command: str):
    """The passphrase in the environment variable that ``--passphrase-env`` names (None without the option);
    an unset or empty one is a usage error of ``secagg COMMAND`` (a passphrase never travels on the command line)."""
    if not args.passphrase_env:
        return None
    from ..federation.passphrase import PassphraseError, passphrase_from_env

    try:
        return passphrase_from_env(args.passphrase_env)
    except PassphraseError as exc:
        raise UsageError(f"secagg {command}: error: {exc}; set it there (never on the command line)") from None


def one_line(text: str) -> str:
    return " ".join(str(text).split())
