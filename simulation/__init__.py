"""Composition root: sites, coordinator, rounds, dropouts, engines and the ``secagg`` CLI.

Today it holds the command-line interface and the protocol demonstration
(:mod:`simulation.demo`); the federated training loop arrives with issue 5.
"""

from .demo import DemoReport, run_demo

__all__ = ["DemoReport", "run_demo"]
