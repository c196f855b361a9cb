"""``secagg flower app-path|certs|check|app-key|sign-app|supernode``: what a Flower deployment needs."""

from __future__ import annotations

import argparse
import sys

from .common import Formatter, Parser, UsageError, one_line, passphrase_from_env_option, positive
from .output import emit

__all__ = ["register", "cmd_flower_app_path", "cmd_flower_certs", "cmd_flower_check", "cmd_flower_app_key",
           "cmd_flower_sign_app", "cmd_flower_supernode"]


def cmd_flower_app_path(args: argparse.Namespace) -> int:
    from ..engines.flower.deploy import app_path

    print(app_path())
    return 0


def cmd_flower_certs(args: argparse.Namespace) -> int:
    from ..engines.flower.tls import write_loopback_certificates

    paths = write_loopback_certificates(args.out, days=args.days)
    emit(args, {"ca_cert": str(paths.ca_cert), "server_cert": str(paths.server_cert),
                "server_key": str(paths.server_key)},
         f"wrote {paths.ca_cert}, {paths.server_cert} and {paths.server_key} (mode 0600): a throwaway loopback "
         "CA and server certificate for tests and demos, not a deployment PKI")
    return 0


def cmd_flower_check(args: argparse.Namespace) -> int:
    """Exit 0 when the Flower run directory holds a finished run, 1 (one line on stderr) when it does not."""
    from ..engines.flower.deploy import run_outcome

    outcome = run_outcome(args.run_dir)
    emit(args, {"ok": outcome.ok, "reason": outcome.reason, "rounds_completed": outcome.rounds_completed,
                "rounds_planned": outcome.rounds_planned, "run_id": outcome.run_id}, _check_lines(args, outcome))
    if not outcome.ok:
        print(f"run FAILED: {outcome.reason}", file=sys.stderr)
    return 0 if outcome.ok else 1


def _check_lines(args: argparse.Namespace, outcome):
    """Nothing on stdout for a failed run (stderr names why); --run-id: the run id alone."""
    if not outcome.ok:
        return
    if args.run_id:
        yield outcome.run_id
    else:
        yield (f"run OK: {outcome.reason}; ledger run id {outcome.run_id} (the nodes' anchors: "
               f"STATE_DIR/anchors/{outcome.run_id})")


def cmd_flower_app_key(args: argparse.Namespace) -> int:
    """The consortium's app-signing key: DIR/consortium-apps.ed25519 (0600) and DIR/consortium-apps.pub."""
    from pathlib import Path

    from ..engines.flower.app_trust import APP_KEY_NAME
    from ..federation.identity import write_identity

    passphrase = passphrase_from_env_option(args, "flower app-key")
    key = write_identity(args.out, APP_KEY_NAME, passphrase=passphrase)
    public = Path(args.out) / f"{APP_KEY_NAME}.pub"
    public.write_text(key.verify_key.hex() + "\n")
    emit(args, {"signing_key": str(key.signing_key_path), "verify_key_file": str(public),
                "verify_key": key.verify_key.hex()},
         [f"wrote {key.signing_key_path} (mode 0600: the consortium's app-signing key; keep it off the SuperLink)",
          f"wrote {public}: the app verify key {key.verify_key.hex()}; give it to every node out of band "
          "(secagg flower supernode --app-key)"])
    return 0


def cmd_flower_sign_app(args: argparse.Namespace) -> int:
    """Sign an app folder's bundle (built as `flwr run` builds it) or a .fab file with the consortium's key."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from ..engines.flower.app_trust import sign_fab, write_signature
    from ..federation.identity import load_signing_key

    app = Path(args.app)
    if app.is_dir():
        flwr = shutil.which("flwr") or str(Path(sys.executable).parent / "flwr")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                built = subprocess.run([flwr, "build", "--app", str(app.resolve())], cwd=tmp, capture_output=True,
                                       text=True, timeout=300)
            except OSError as exc:
                raise UsageError(f"secagg flower sign-app: error: cannot run flwr build ({exc.strerror or exc}); "
                                 "pip install 'secagg[flower]'") from None
            fabs = sorted(Path(tmp).glob("*.fab"))
            if built.returncode != 0 or len(fabs) != 1:
                raise UsageError(f"secagg flower sign-app: error: flwr build --app {app} failed: "
                                 f"{one_line((built.stderr or built.stdout).strip()[-300:])}")
            content = fabs[0].read_bytes()
    elif app.is_file():
        content = app.read_bytes()
    else:
        raise UsageError(f"secagg flower sign-app: error: {app} is neither an app folder nor a .fab file")
    pair = load_signing_key(args.key, passphrase_env=args.passphrase_env)
    path = write_signature(sign_fab(content, pair.seed), args.out)
    digest = path.stem
    emit(args, {"fab_sha256": digest, "signature_file": str(path), "verify_key": pair.verify_key.hex()},
         f"signed app bundle sha256 {digest} ({app}) with app key {pair.verify_key.hex()[:16]}: wrote {path}; "
         "put it in every node's --trusted-apps folder")
    return 0


def cmd_flower_supernode(args: argparse.Namespace) -> int:
    from ..engines.flower.verified_clientapp import start_supernode

    rest = list(args.supernode_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return start_supernode(args.app_key, args.trusted_apps, rest)


def register(sub) -> None:
    """Add ``flower`` and its sub-commands."""
    flower = sub.add_parser(
        "flower", help="what a Flower deployment needs: the app folder, loopback certificates, the run's outcome",
        formatter_class=Formatter,
        description=("The Flower engine's app folder ships inside the installed package: `flwr run \"$(secagg flower\n"
                     "app-path)\" ...` needs no source checkout. Its deploy-local.sh runs the whole guide on one\n"
                     "machine."),
        epilog=("Examples:\n  secagg flower app-path\n  secagg flower certs --out ~/secagg/certs\n"
                "  secagg flower check ~/secagg/run"),
    )
    flower_sub = flower.add_subparsers(dest="flower_command", required=True, parser_class=Parser)
    app_path = flower_sub.add_parser("app-path", formatter_class=Formatter,
                                     help="print the installed Flower app folder (what `flwr run` takes)")
    app_path.set_defaults(func=cmd_flower_app_path)
    certs = flower_sub.add_parser(
        "certs", formatter_class=Formatter,
        help="write a throwaway CA and a loopback server certificate (tests and demos on one machine)",
        description=("Writes OUT/ca.pem, OUT/server.pem and OUT/server.key (0600; OUT created 0700) for a SuperLink\n"
                     "on 127.0.0.1/::1/localhost. The CA's private key is never written. Not a deployment PKI."))
    certs.add_argument("--out", required=True, help="directory for the PEM files")
    certs.add_argument("--days", type=positive(int, "days"), default=30, help="validity in days")
    certs.add_argument("--json", action="store_true", help="print one JSON object")
    certs.set_defaults(func=cmd_flower_certs)
    check = flower_sub.add_parser(
        "check", formatter_class=Formatter,
        help="exit 0 when a Flower run directory holds a finished run, 1 when it does not",
        description=("`flwr run` exits 0 even when the ServerApp failed. The ServerApp writes summary.json last:\n"
                     "this exits 1 (one line naming why) when it is missing or records fewer completed rounds\n"
                     "than planned."))
    check.add_argument("run_dir", help="the run directory (`out` of the run config)")
    check.add_argument("--run-id", action="store_true",
                       help="print only the ledger's run id (the folder of the nodes' anchors) when the run finished")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=cmd_flower_check)
    app_key = flower_sub.add_parser(
        "app-key", formatter_class=Formatter,
        help="generate the consortium's app-signing key (nodes run only app bundles it signed)",
        description=("Writes OUT/consortium-apps.ed25519 (Ed25519 signing key, mode 0600; never overwritten) and\n"
                     "OUT/consortium-apps.pub (its verify key, hex), which every node gets out of band as its\n"
                     "`secagg flower supernode --app-key`. Keep the signing key with the consortium, not on the SuperLink."),
        epilog="Example:\n  secagg flower app-key --out ~/consortium --passphrase-env APP_KEY_PASSPHRASE")
    app_key.add_argument("--out", required=True, help="directory for the key files (created 0700)")
    app_key.add_argument("--passphrase-env", metavar="VAR",
                         help="encrypt the signing key under the passphrase held by environment variable VAR")
    app_key.add_argument("--json", action="store_true", help="print one JSON object")
    app_key.set_defaults(func=cmd_flower_app_key)
    sign_app = flower_sub.add_parser(
        "sign-app", formatter_class=Formatter,
        help="sign an app bundle (FAB) with the consortium's app-signing key",
        description=("Builds the app folder's bundle exactly as `flwr run APP` does (`flwr build`: reproducible, so\n"
                     "the same folder gives the same SHA-256), or reads a .fab file, and writes OUT/<sha256>.json: an\n"
                     "Ed25519 signature over the bundle's SHA-256. Every node keeps these files in its --trusted-apps\n"
                     "folder and runs a bundle only when one of them verifies under the consortium's app key."),
        epilog=("Example:\n  secagg flower sign-app \"$(secagg flower app-path)\" --key ~/consortium/consortium-apps.ed25519 "
                "--out ~/trusted-apps"))
    sign_app.add_argument("app", help="the app folder (what `flwr run` takes) or a .fab file")
    sign_app.add_argument("--key", required=True, help="the consortium's app-signing key (secagg flower app-key)")
    sign_app.add_argument("--passphrase-env", metavar="VAR",
                          help="the environment variable holding the key's passphrase (default SECAGG_KEY_PASSPHRASE)")
    sign_app.add_argument("--out", required=True, help="folder for the signature file (created if missing)")
    sign_app.add_argument("--json", action="store_true", help="print one JSON object")
    sign_app.set_defaults(func=cmd_flower_sign_app)
    supernode = flower_sub.add_parser(
        "supernode", formatter_class=Formatter,
        help="run flower-supernode so that it runs only app bundles the consortium signed",
        description=("Starts `flower-supernode ARGS` (after --) with every ClientApp it starts checked first: the\n"
                     "bundle's SHA-256, computed at the node, must carry a signature of the consortium's app key in\n"
                     "--trusted-apps, and must be the bundle the run names. A refused bundle is never installed or\n"
                     "imported: the round gets an error reply and the node's log one line naming the hash and why.\n"
                     "Exits with flower-supernode's status."),
        epilog=("Example:\n  secagg flower supernode --app-key consortium-apps.pub --trusted-apps ~/trusted-apps -- \\\n"
                "      --root-certificates ca.pem --superlink 10.0.0.1:9092 --node-config 'site=\"site-1\" ...'"))
    from ..engines.flower.verified_clientapp import add_trust_arguments

    add_trust_arguments(supernode)
    supernode.add_argument("supernode_args", nargs=argparse.REMAINDER,
                           help="-- then the arguments of flower-supernode")
    supernode.set_defaults(func=cmd_flower_supernode)
