"""The Flower engine (issue 9): the same sans-IO protocol, carried in Flower messages.

``simulation.flower.server_app:app`` is a Flower ``ServerApp`` and
``simulation.flower.client_app:app`` a Flower ``ClientApp`` (Message API,
flwr >= 1.10; built and checked against flwr 1.42). Each protocol message
travels as its wire bytes (:func:`secagg.wire.encode`) in a ``ConfigRecord``;
the round itself is the in-process engine's loop
(:func:`simulation.engine.run_masked_round`), driven through
:class:`~simulation.flower.transport.FlowerTransport`, which sends one
stage's messages to all recipients at once and lets Flower's
``send_and_receive`` timeout decide who dropped.

**Status: prototype (issue 9 is open).** It carries the masking protocol over
Flower's simulation and deployment engines (checked against flwr 1.42 in a
separate venv: SuperLink + 3 SuperNodes on loopback, one client dropping at the
mask stage, sums equal to the in-process engine's). Not yet: the privacy
ledger, budgets and checkpoints on the ServerApp side, active mode, HE and
distributed DP over Flower, real data on the nodes (they train on random
slices), TLS. Each node keeps its ``ClientSession`` - private keys included -
pickled in Flower's ``context.state`` between messages (on the hospital's own
machine; a DPIA must say so). ``tests/test_flower.py`` runs only where flwr is
installed; ``make test`` does not install it (flwr 1.42 pins packaging<26 and
rich<15, which downgrades nilearn).

Nothing outside this package imports ``flwr``; install it with
``pip install 'secagg[flower]'``. The Flower app directory (``app/``) holds
the ``pyproject.toml`` that ``flwr run`` needs and documents the commands.
"""

from __future__ import annotations

__all__ = ["require_flwr"]


def require_flwr():
    """Import flwr, or fail with a message naming the extra to install."""
    try:
        import flwr  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the Flower engine needs flwr: pip install 'secagg[flower]'") from exc
    return flwr
