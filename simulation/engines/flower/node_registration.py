"""Register the consortium registry's Flower node keys with a SuperLink (``secagg keys register-nodes``).

A SuperLink started with ``--enable-supernode-auth`` (flwr 1.42) admits a SuperNode only if the
node's public key was registered through its Control API beforehand (what ``flwr supernode
register KEY.pub`` does); its Fleet API then refuses self-registration, so a node whose key is
not registered cannot activate. :func:`register_node_keys` makes the SuperLink admit exactly the
registry's node keys (:func:`simulation.federation.identity.load_node_keys`):

1. it lists the nodes the SuperLink already admits and refuses to go on if any of them holds a key
   the registry does not name (a persistent ``--database`` from an earlier deployment, or someone
   else's registration) - it never removes a node itself;
2. it registers each registry key not yet admitted, under the site's name (a key already admitted,
   e.g. on a second call, is kept: the call is idempotent);
3. it lists the nodes again and checks that their keys are exactly the registry's.

It talks to the Control API through Flower's own CLI client in this process, so the connection,
TLS root and any Control API login are the operator's ``$FLWR_HOME/config.toml`` (the connection
named by ``superlink``, else its default), exactly as for ``flwr supernode register``.
"""

from __future__ import annotations

import contextlib
import io
from typing import Mapping

import secagg

from ...federation.node_keys import parse_node_public_key
from . import require_flwr

__all__ = ["register_node_keys", "NodeRegistrationError"]


class NodeRegistrationError(Exception):
    """The SuperLink refused a key, could not be reached, or admits nodes the registry does not name
    (a failed check: ``secagg keys register-nodes`` exits 1)."""


def register_node_keys(node_keys: Mapping[str, str], superlink: str | None = None) -> dict[str, int]:
    """Make the SuperLink admit exactly ``node_keys`` (site -> OpenSSH public line); returns site -> node id."""
    if not node_keys:
        raise secagg.InvalidInputError("the registry names no node keys: make them with `secagg keys new` "
                                       "(or `secagg keys node-auth` for an existing site)")
    require_flwr()
    import click
    from cryptography.hazmat.primitives import serialization
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import flwr_cli_exc_handler, init_http_client_from_connection
    from flwr.proto.control_pb2 import ListNodesRequest, RegisterNodeRequest

    # The bytes flwr keeps for a node: PEM SubjectPublicKeyInfo (flwr.supercore.primitives.asymmetric).
    wanted = {site: parse_node_public_key(line).public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo)
              for site, line in node_keys.items()}
    site_of = {key: site for site, key in wanted.items()}
    try:
        connection = read_superlink_connection(superlink)
    except click.ClickException as exc:  # no such connection, or no config.toml: bad input
        raise secagg.InvalidInputError(exc.format_message()) from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # flwr prints "Using SuperLink: ..." on stdout
            client = init_http_client_from_connection(connection)
    except click.ClickException as exc:
        raise NodeRegistrationError(f"cannot reach the SuperLink {connection.name}: {exc.format_message()}") from None

    def admitted() -> dict[bytes, int]:
        with flwr_cli_exc_handler():
            nodes = client.ListNodes(ListNodesRequest()).nodes_info
        return {bytes(n.public_key): int(n.node_id) for n in nodes if n.status != "unregistered"}

    def check_no_strangers(known: dict[bytes, int]) -> None:
        strangers = sorted(node for key, node in known.items() if key not in site_of)
        if strangers:
            raise NodeRegistrationError(
                f"the SuperLink admits {len(strangers)} node(s) whose key the registry does not name (node ids "
                f"{strangers}): remove each with `flwr supernode unregister ID`, or start the SuperLink on a fresh "
                "database")

    try:
        known = admitted()
        check_no_strangers(known)
        for site, key in sorted(wanted.items()):
            if key not in known:
                with flwr_cli_exc_handler():
                    client.RegisterNode(RegisterNodeRequest(public_key=key, name=site))
        known = admitted()
        check_no_strangers(known)
        missing = sorted(site for site, key in wanted.items() if key not in known)
        if missing:
            raise NodeRegistrationError(f"the SuperLink does not list the node keys of {missing} after registering "
                                        "them")
    except click.ClickException as exc:
        raise NodeRegistrationError(f"the SuperLink's Control API: {exc.format_message()}") from None
    finally:
        client.close()
    return {site_of[key]: node for key, node in known.items()}
