"""The layering the package docstrings and the README state, read from the source (no import runs):
``secagg`` imports nothing of dp/models/simulation, ``models`` nothing of the others, ``dp`` only
``secagg``. Lazy imports inside functions count as much as top-level ones."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"secagg", "dp", "models", "simulation"}
ALLOWED = {"secagg": set(), "models": set(), "dp": {"secagg"}}


def project_imports(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """{file: the other project packages it imports}, absolute imports only (relative ones stay inside)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[path.relative_to(root).as_posix()] = (names & PROJECT) - {package}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_layering_allows(package):
    files = project_imports(package)
    assert files, f"no source found under {package}/"
    wrong = {path: sorted(names - ALLOWED[package]) for path, names in files.items() if names - ALLOWED[package]}
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing'} of the project: {wrong}"


def test_dp_uses_secagg_for_randomness_signatures_and_encoding():
    """dp/__init__'s docstring names what dp takes from secagg; the ring encoding is one of them."""
    uses = {path for path, names in project_imports("dp").items() if "secagg" in names}
    assert "dp/distributed/calibration.py" in uses  # secagg.encoding: ring widths and dtypes
    assert {"dp/discrete.py", "dp/rotation.py", "dp/training.py", "dp/ledger_signatures.py"} <= uses


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The scan is not vacuous: a dp module importing simulation is reported."""
    (tmp_path / "dp").mkdir()
    (tmp_path / "dp" / "bad.py").write_text("def f():\n    from simulation.config import load_config\n")
    assert project_imports("dp", tmp_path) == {"dp/bad.py": {"simulation"}}


#: What a test or benchmark may import from: the project's packages and the test helpers.
OURS = PROJECT | {"tests", "benchmarks"}


def private_imports(folder: str, root: Path = ROOT) -> list[str]:
    """``file:line name`` of every import, in ``folder``, of an underscore name of ours: a private module or
    name of secagg/dp/models/simulation, or of another test or benchmark module (relative imports included).
    Dunder names (``__version__``) are public."""

    def private(dotted: str) -> bool:
        return any(part.startswith("_") and not part.startswith("__") for part in dotted.split(".") if part)

    found = []
    for path in sorted((root / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            where = f"{path.relative_to(root).as_posix()}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [f"{where} {a.name}" for a in node.names
                          if a.name.split(".")[0] in OURS and private(a.name)]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 0 and module.split(".")[0] not in OURS:
                    continue
                found += [f"{where} {'.' * node.level}{module} {a.name}" for a in node.names
                          if private(f"{module}.{a.name}")]
    return found


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_no_test_or_benchmark_imports_a_private_name_of_ours(folder):
    assert (ROOT / folder).is_dir()
    wrong = private_imports(folder)
    assert not wrong, f"make the name public (a helper module under tests/) or test through the public API: {wrong}"


def test_the_private_import_check_sees_each_form(tmp_path):
    """Not vacuous: a private name from another test module, relative or absolute, a private module of a
    package, and a private name of a package are each reported; public and foreign ones are not."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import os._x\nfrom collections import _chain\nfrom .test_b import helper, __doc__\n"
        "from .test_b import _federate\nfrom tests.test_c import _tool\nimport models._deps as deps\n"
        "def f():\n    from simulation.cli import _cmd_params\n")
    assert private_imports("tests", tmp_path) == [
        "tests/test_a.py:4 .test_b _federate", "tests/test_a.py:5 tests.test_c _tool",
        "tests/test_a.py:6 models._deps", "tests/test_a.py:8 simulation.cli _cmd_params"]


def simulation_imports(subpackage: str, root: Path = ROOT) -> dict[str, set[str]]:
    """{file: the parts of ``simulation`` it imports} for the files under ``simulation/SUBPACKAGE``, relative
    imports resolved (``from ...reports.plots import x`` in ``simulation/engines/inprocess/`` is ``reports``).
    A part is a subpackage or top-level module of ``simulation`` (``engines.flower`` for the engines).
    A package's lazy exports (``lazy_exports(__name__, {"name": ".submodule"})``, :mod:`simulation.lazy`) count
    as imports of their submodules: laziness must not hide an edge."""
    found = {}
    for path in sorted((root / "simulation" / subpackage).rglob("*.py")):
        package = path.relative_to(root).with_suffix("").parts[:-1]
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name.split(".") for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (node.module or "").split(".") if node.module else []
                if node.level:
                    base = list(package[:len(package) - node.level + 1]) + base
                targets = [base + [alias.name] for alias in node.names] if not node.module else [base]
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports"
                  and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
                for value in node.args[1].values:
                    relative = value.value  # ".engines.inprocess.demo": relative to the package itself
                    level = len(relative) - len(relative.lstrip("."))
                    targets.append(list(package[:len(package) - level + 1]) + relative.lstrip(".").split("."))
            for parts in targets:
                if parts[:1] == ["simulation"] and len(parts) > 1:
                    names.add(".".join(parts[1:3]) if parts[1] == "engines" and len(parts) > 2 else parts[1])
        found[path.relative_to(root).as_posix()] = names
    return found


def test_the_federation_imports_no_engine_report_experiment_or_cli():
    """simulation/__init__'s docstring: the engines, reports, experiment and CLI use the federation, never the
    reverse; and neither engine imports the other."""
    files = simulation_imports("federation")
    assert "simulation/federation/setup.py" in files
    allowed = {"federation", "config", "errors", "lazy"}
    wrong = {path: sorted(names - allowed) for path, names in files.items() if names - allowed}
    assert not wrong, wrong
    for engine, other in (("engines/flower", "engines.inprocess"), ("engines/inprocess", "engines.flower")):
        assert not {p for p, names in simulation_imports(engine).items() if other in names}, engine


def test_the_simulation_scan_resolves_relative_imports(tmp_path):
    """Not vacuous: a federation module reaching into an engine or a report, relatively or absolutely, is seen."""
    (tmp_path / "simulation" / "federation").mkdir(parents=True)
    (tmp_path / "simulation" / "federation" / "bad.py").write_text(
        "from ..engines.flower import fleet\nfrom .rounds import x\ndef f():\n    from ..reports.plots import plot_run\n"
        "    import simulation.cli\n    from .. import experiment\n")
    (tmp_path / "simulation" / "federation" / "__init__.py").write_text(
        "from ..lazy import lazy_exports\n__getattr__, __dir__ = lazy_exports(__name__, {'run': '..engines.inprocess.x',"
        " 'y': '.rounds'})\n")
    assert simulation_imports("federation", tmp_path) == {
        "simulation/federation/__init__.py": {"lazy", "engines.inprocess", "federation"},
        "simulation/federation/bad.py": {"engines.flower", "federation", "reports", "cli", "experiment"}}
