"""One base class for the simulation side's bad input (simulation/errors.py), caught once by the CLI.

Claims tested: every error class defined under simulation/ is a SimulationInputError unless it
is one of the documented exceptions; the CLI maps that base and exactly the listed bases of
secagg, dp and models to exit code 2, and everything else keeps its own code; the two
configuration errors are distinct and the old simulation name is an alias."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import secagg
from dp.errors import (BudgetExceededError, CalibrationError, InvalidPrivacyParameterError, LedgerError,
                       LedgerIntegrityError, ModelNotPrivateError)
from simulation import cli
from simulation.cli import protocol
from simulation.config import ConfigError, SimulationConfigError
from simulation.errors import SimulationInputError, bad_input_errors

ROOT = Path(__file__).resolve().parents[1]
#: Not bad input, as simulation/errors.py documents: the CLI's own usage error, a failed check,
#: a protocol verification failure and control flow.
NOT_BAD_INPUT = {"UsageError", "NodeRegistrationError", "ReplayedSessionError", "StopTraining", "AppNotTrustedError"}


def _exception_classes_defined_in_simulation() -> dict[str, str]:
    """{class name: module} of every top-level class under simulation/ named ``*Error`` or deriving
    directly from Exception or ValueError (read from the source, so a new one cannot be missed)."""
    found = {}
    for path in sorted((ROOT / "simulation").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {ast.unparse(base) for base in node.bases}
            if node.name.endswith("Error") or bases & {"Exception", "ValueError"}:
                found[node.name] = module.removesuffix(".__init__")
    return found


def test_every_simulation_error_is_bad_input_or_a_documented_exception():
    import importlib

    classes = _exception_classes_defined_in_simulation()
    assert {"DPIAError", "RunDirectoryError", "SimulationError", "ExperimentError", "IdentityError",
            "NodeKeyError", "PassphraseError", "SimulationConfigError"} <= set(classes)
    for name, module in classes.items():
        cls = getattr(importlib.import_module(module), name)
        if name in NOT_BAD_INPUT:
            assert not issubclass(cls, SimulationInputError), name
        else:
            assert issubclass(cls, SimulationInputError), f"{module}.{name} does not derive from SimulationInputError"
    assert NOT_BAD_INPUT <= set(classes), "a documented exception no longer exists: update simulation/errors.py"


def test_the_two_configuration_errors_are_distinct_and_the_old_name_is_an_alias():
    from models.errors import ConfigError as ModelsConfigError

    assert ConfigError is SimulationConfigError
    assert not issubclass(SimulationConfigError, ModelsConfigError)
    assert not issubclass(ModelsConfigError, SimulationInputError)


def test_a_bad_bids_table_surfaces_as_the_simulation_configuration_error():
    from simulation.config import SimulationConfig

    with pytest.raises(SimulationConfigError):
        SimulationConfig(bids={"no such option": 1})


def test_bad_input_is_the_simulation_base_plus_the_listed_foreign_bases():
    from models.errors import ModelsError

    assert set(bad_input_errors()) == {
        SimulationInputError, secagg.InvalidInputError, secagg.InfeasibleParametersError,
        InvalidPrivacyParameterError, CalibrationError, LedgerError, ModelsError,
    }


class _FreshSimulationError(SimulationInputError):
    """A subclass the CLI has never heard of: caught through the base."""


def _models_config_error():
    from models.errors import ConfigError as ModelsConfigError

    return ModelsConfigError("bad image size")


@pytest.mark.parametrize("make, code", [
    (lambda: _FreshSimulationError("a new kind of\nbad input"), 2),
    (lambda: SimulationConfigError("bad setting"), 2),
    (lambda: secagg.InvalidInputError("bad vector"), 2),
    (lambda: CalibrationError("no noise fits"), 2),
    (_models_config_error, 2),
    (lambda: LedgerIntegrityError("hash chain broken"), 1),
    (lambda: BudgetExceededError("spent"), 3),  # not bad input: an internal error, as before
    (lambda: ModelNotPrivateError("no"), 3),
])
def test_the_cli_exit_code_of_each_error_family(make, code, capsys, monkeypatch, tmp_path):
    def raises(args):
        raise make()

    monkeypatch.setattr(protocol, "cmd_params", raises)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a crash report of code 3 goes
    assert cli.main(["params", "--n", "10"]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if code == 2:
        assert err.startswith("secagg params: error: ")
