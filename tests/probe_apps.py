"""Flower app bundles for the app-signing tests (issue 21), so that each test states only what differs.

:func:`fab_zip` builds a FAB-shaped zip of the given files in memory (for the node's checks, which read
any bytes); :func:`app_pyproject` writes a Flower app's ``pyproject.toml`` (for ``flwr build`` and
``flwr run`` of a real app folder). Nothing binary is committed: every bundle is built by the test.
"""

from __future__ import annotations

import io
import zipfile

__all__ = ["fab_zip", "app_pyproject"]


def fab_zip(files: dict[str, str]) -> bytes:
    """A zip holding ``files`` (name -> text), in the given order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def app_pyproject(name: str, components: dict[str, str], *, publisher: str = "stranger",
                  config: dict[str, str] | None = None, wheel_packages: bool = True) -> str:
    """A Flower app's ``pyproject.toml``: version 1.0.0, no dependencies, the given components
    (``{"clientapp": "module:app", ...}``) and string run-config defaults."""
    lines = ['[build-system]', 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', '',
             '[project]', f'name = "{name}"', 'version = "1.0.0"', 'dependencies = []', '']
    if wheel_packages:
        lines += ['[tool.hatch.build.targets.wheel]', 'packages = ["."]', '']
    lines += ['[tool.flwr.app]', f'publisher = "{publisher}"', '', '[tool.flwr.app.components]',
              *(f'{key} = "{value}"' for key, value in components.items())]
    if config is not None:
        lines += ['', '[tool.flwr.app.config]', *(f'{key} = "{value}"' for key, value in config.items())]
    return "\n".join(lines) + "\n"
