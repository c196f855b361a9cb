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
