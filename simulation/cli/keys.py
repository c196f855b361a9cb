"""``secagg keys new|node-auth|register-nodes``: a site's Ed25519 identity and Flower node key, and
registering the registry's node keys with a SuperLink."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_FAILED_CHECK, Formatter, Parser, one_line, passphrase_from_env_option
from .output import emit

__all__ = ["register", "cmd_keys_new", "cmd_keys_node_auth", "cmd_keys_register_nodes"]


def cmd_keys_new(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..federation.identity import add_to_registry, load_registry, write_identity, write_site_node_key

    passphrase = passphrase_from_env_option(args, "keys new")
    if args.registry and Path(args.registry).exists():
        load_registry(args.registry)  # a broken registry is refused before any key is made
    identity = write_identity(args.out, args.site, passphrase=passphrase)
    node_key = write_site_node_key(args.out, args.site)
    registry = add_to_registry(args.registry, identity, node_key.public_key) if args.registry else None
    emit(args, lambda: identity.to_dict() | node_key.to_dict()
         | {"registry": args.registry, "registered_sites": sorted(registry) if registry else None},
         _new_key_lines(args, identity, node_key, registry, encrypted=bool(passphrase)))
    return 0


def _new_key_lines(args: argparse.Namespace, identity, node_key, registry, *, encrypted: bool):
    yield (f"wrote {identity.signing_key_path} (mode 0600: this site's signing key; it never leaves this machine"
           + (f"; encrypted under the passphrase in ${args.passphrase_env}, which the node needs in the same variable "
              "or the one its --node-config 'passphrase-env' names)" if encrypted else ")"))
    yield f"verify key of {identity.site}: {identity.verify_key.hex()}"
    yield from _node_key_lines(node_key)
    if args.registry:
        yield (f"added both to {args.registry} ({len(registry)} sites); every site needs an identical copy, "
               "delivered out of band - never from the coordinator alone")


def _node_key_lines(node_key):
    yield (f"wrote {node_key.private_key_path} (mode 0600: this node's Flower key: "
           f"flower-supernode --auth-supernode-private-key {node_key.private_key_path})")
    yield f"node key of {node_key.site}: {node_key.public_key} (also in {node_key.public_key_path})"


def cmd_keys_node_auth(args: argparse.Namespace) -> int:
    from ..federation.identity import add_node_key

    node_key = add_node_key(args.out, args.site, args.registry)
    emit(args, lambda: {"site": args.site, "registry": args.registry} | node_key.to_dict(),
         _node_auth_lines(args, node_key))
    return 0


def _node_auth_lines(args: argparse.Namespace, node_key):
    yield from _node_key_lines(node_key)
    if args.registry:
        yield (f"recorded in {args.registry} next to {args.site}'s verify key; deliver the new registry to every "
               "site and to the SuperLink's operator")


def cmd_keys_register_nodes(args: argparse.Namespace) -> int:
    from ..engines.flower.node_registration import NodeRegistrationError, register_node_keys
    from ..federation.identity import load_node_keys

    node_keys = load_node_keys(args.registry)
    try:
        node_ids = register_node_keys(node_keys, args.superlink)
    except NodeRegistrationError as exc:
        print(f"secagg keys register-nodes: FAILED: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    emit(args, lambda: {"registry": args.registry, "superlink": args.superlink,
                        "node_ids": {site: str(node) for site, node in sorted(node_ids.items())}},
         lambda: [*(f"{site}: node {node}" for site, node in sorted(node_ids.items())),
                  f"the SuperLink admits exactly the {len(node_ids)} node key(s) of {args.registry}"])
    return 0


def register(sub) -> None:
    """Add ``keys`` and its sub-commands."""
    keys = sub.add_parser("keys", help="site identities and Flower node keys, and their registry",
                          formatter_class=Formatter,
                          epilog="Example:\n  secagg keys new --site site-1 --out /var/secagg/keys --registry registry.json")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=Parser)
    new_key = keys_sub.add_parser(
        "new", formatter_class=Formatter,
        help="generate a site's Ed25519 identity and Flower node key (and register both)",
        description=(
            "Writes OUT/SITE.ed25519 (the signing key, mode 0600; never overwritten) and prints the verify key,\n"
            "and the node's Flower authentication key: OUT/SITE.flower-auth (mode 0600; the SuperNode's\n"
            "--auth-supernode-private-key) and OUT/SITE.flower-auth.pub (what the SuperLink registers).\n"
            "Active mode checks every signature against a registry of the sites' verify keys that each site\n"
            "holds itself (JSON: site -> keys); --registry adds this site's two public keys to such a file.\n"
            "Deliver the finished registry to every site out of band: a key list that only the coordinator hands out\n"
            "would let it substitute identities."
        ),
        epilog=("Examples:\n  secagg keys new --site site-1 --out keys/ --registry registry.json\n"
                "  secagg keys new --site site-2 --out keys/ --registry registry.json --json"),
    )
    new_key.add_argument("--site", required=True, help="the site's name (as its node reports it)")
    new_key.add_argument("--out", required=True, help="directory for the signing key and the node key")
    new_key.add_argument("--registry",
                         help="a registry JSON file to add the verify key and node key to (created if missing)")
    new_key.add_argument("--passphrase-env", metavar="VAR",
                         help="encrypt the signing key under the passphrase held by environment variable VAR "
                              "(Argon2id + XSalsa20-Poly1305); a passphrase is never taken on the command line")
    new_key.add_argument("--json", action="store_true", help="print one JSON object")
    new_key.set_defaults(func=cmd_keys_new)
    node_auth = keys_sub.add_parser(
        "node-auth", formatter_class=Formatter,
        help="add a Flower node-authentication key to an existing site identity",
        description=(
            "For a site made before node keys existed: writes OUT/SITE.flower-auth (mode 0600) and\n"
            "OUT/SITE.flower-auth.pub beside OUT/SITE.ed25519 (which must exist), and with --registry\n"
            "records the public key next to the site's verify key. `secagg keys new` makes both at once."
        ),
        epilog="Example:\n  secagg keys node-auth --site site-1 --out keys/ --registry registry.json",
    )
    node_auth.add_argument("--site", required=True, help="the site's name")
    node_auth.add_argument("--out", required=True, help="the directory holding SITE.ed25519")
    node_auth.add_argument("--registry", help="the registry JSON file that holds the site's verify key")
    node_auth.add_argument("--json", action="store_true", help="print one JSON object")
    node_auth.set_defaults(func=cmd_keys_node_auth)
    register_nodes = keys_sub.add_parser(
        "register-nodes", formatter_class=Formatter,
        help="register the registry's Flower node keys with a SuperLink (run with --enable-supernode-auth)",
        description=(
            "Registers every node key in the registry with the SuperLink's Control API (what `flwr supernode\n"
            "register` does; the connection, TLS root and login come from $FLWR_HOME/config.toml) and checks\n"
            "that the SuperLink then admits exactly those keys. Keys already admitted are kept (it can be run\n"
            "again). Exit 1 when the SuperLink cannot be reached, refuses a key, or admits a node whose key\n"
            "the registry does not name (it removes nothing itself)."
        ),
        epilog="Example:\n  FLWR_HOME=~/flwr-home secagg keys register-nodes --registry registry.json --superlink loop",
    )
    register_nodes.add_argument("--registry", required=True, help="the consortium's registry JSON file")
    register_nodes.add_argument("--superlink", help="the SuperLink connection's name in $FLWR_HOME/config.toml "
                                "(default: its default connection)")
    register_nodes.add_argument("--json", action="store_true", help="print one JSON object")
    register_nodes.set_defaults(func=cmd_keys_register_nodes)
