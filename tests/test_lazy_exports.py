"""simulation.lazy: the packages' public names resolve on first use, and a process that needs one job's
modules (a Flower node answering a message, a ``secagg`` command) does not import the other jobs'."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulation.lazy import lazy_exports

ROOT = Path(__file__).resolve().parents[1]
LAZY_PACKAGES = ("simulation", "simulation.federation", "simulation.reports", "simulation.engines.inprocess")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_resolves_and_is_listed(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(module, name) is value  # stored after the first lookup
        assert name in dir(module)
        exec(f"from {package} import {name}", {})
    with pytest.raises(AttributeError, match="no attribute 'not_a_public_name'"):
        module.not_a_public_name


def test_a_name_is_imported_from_its_submodule_on_first_use_only(monkeypatch):
    package = type(sys)("lazy_probe")
    monkeypatch.setitem(sys.modules, "lazy_probe", package)
    imported = []
    monkeypatch.setattr(importlib, "import_module", lambda name, anchor=None: _submodule(imported, name, anchor))
    package.__getattr__, package.__dir__ = lazy_exports("lazy_probe", {"answer": ".sub"})
    assert package.__getattr__("answer") == 42 and package.answer == 42
    assert imported == [(".sub", "lazy_probe")]
    assert "answer" in package.__dir__()


def _submodule(imported, name, anchor):
    imported.append((name, anchor))
    module = type(sys)("sub")
    module.answer = 42
    return module


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("statement", [
    "import simulation.engines.flower.client_app",
    "import simulation.engines.flower.server_app",
    "import simulation.engines.flower.verified_clientapp",
    "import simulation.cli",
])
def test_a_node_or_command_process_imports_only_its_own_job(statement):
    pytest.importorskip("flwr")
    loaded = _modules_after(statement)
    for job in ("simulation.engines.inprocess", "simulation.experiment", "simulation.reports.dpia", "torch",
                "opacus"):
        assert not {m for m in loaded if m == job or m.startswith(job + ".")}, (statement, job)


def test_the_check_sees_an_eager_import():
    """Not vacuous: importing the whole composition root does load the in-process engine."""
    loaded = _modules_after("import simulation; simulation.run_simulation")
    assert "simulation.engines.inprocess.simulate" in loaded
