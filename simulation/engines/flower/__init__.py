"""The Flower engine (issue 9): the same round, with the sites on Flower nodes.

``simulation.engines.flower.server_app:app`` is a Flower ``ServerApp`` and
``simulation.engines.flower.client_app:app`` a Flower ``ClientApp`` (Message API,
built and tested against flwr 1.42). The coordinator runs the *same* round as
``secagg simulate`` (:mod:`simulation.federation.rounds`: budget check, spend committed
to the ledger when the masked updates are in, FedAvg of the decoded sum,
atomic checkpoints, resume), with a :class:`~simulation.engines.flower.fleet.FlowerFleet`
in place of the in-process sites. Each protocol message travels as its wire
bytes (:func:`secagg.wire.encode`) in a ``ConfigRecord``; one stage's messages
go out together through ``Grid.send_and_receive``, and Flower's timeout
decides who dropped.

Each node trains with DP-SGD on its own NIfTI data, encodes, masks, and keeps
its own privacy ledger and budget (it refuses a round that would pass it, and
commits its spend before its masked update leaves). It signs the spends in its
own ledger and those the coordinator records for its site, and anchors the
coordinator's ledger in its own state (:mod:`.ledger_link`). In active mode each node
signs with its own Ed25519 key and accepts a session only if every verify key
in it matches its own copy of the consortium's registry
(:mod:`simulation.federation.identity`), so the coordinator cannot substitute identities.
With Flower's SuperNode authentication, each node's Flower key is made beside its site identity
and recorded in the registry (:mod:`simulation.federation.node_keys`); the coordinator registers a node only
as the site whose key the SuperLink authenticated it under (run config ``node-auth``).
A node started through ``secagg flower supernode`` runs only app bundles the consortium signed: each
ClientApp process checks the bundle's SHA-256 against the consortium's signatures before flwr installs
or imports it (:mod:`.app_trust`, :mod:`.verified_clientapp`).
Tested (``tests/test_flower.py``) on Flower's deployment engine - a SuperLink
and three SuperNodes on loopback over TLS, with certificates from :mod:`.tls`,
in active mode - and (``tests/test_flower_engine_dp.py``) on its simulation engine (Ray).

With distributed DP each node recalibrates the mechanism from the public
parameters (refusing a session that differs), adds its share of the discrete
noise before masking, and keeps its own site-level budget.

Not carried over Flower yet: the HE path and the plain baseline (both run in
``secagg simulate``), models that keep
parameters at the sites between rounds (FedDis), and evaluation at the nodes.
Each node keeps its ``ClientSession`` - private keys included - in Flower's
``context.state`` between the messages of a round, sealed (XChaCha20-Poly1305)
under a key kept in the node's own state directory (:mod:`.sealed_state`).

Nothing outside this package imports ``flwr``; install it with
``pip install 'secagg[flower]'``. The Flower app directory (``app/``) holds
the ``pyproject.toml`` that ``flwr run`` needs, documents the commands, and
holds ``deploy-local.sh``, the guide as one script; it ships in the wheel
(:func:`.deploy.app_path`, ``secagg flower app-path``). :mod:`.deploy` also
says whether a run finished (``flwr run`` exits 0 on a failed run) and records
the deployment facts the DPIA states.
"""

from __future__ import annotations

__all__ = ["require_flwr"]  # the apps are imported by Flower by name; see the docstring


def require_flwr():
    """Import flwr, or fail with a message naming the extra to install."""
    try:
        import flwr  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the Flower engine needs flwr: pip install 'secagg[flower]'") from exc
    return flwr
