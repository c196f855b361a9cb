"""The deployment facts of a Flower run, in words, exactly as the run recorded them (``summary["deployment"]``).

Every fact about how a Flower deployment ran - transport security, active mode, the registry and
registration, where each ledger and key lives, node authentication, the node state at rest - is
turned into text here and only here; :func:`deployment_items` is the list the measures section
(Art. 35(7)(d)) prints under "Deployment (Flower)". A new deployment fact is one more line in
:func:`deployment_items` (and, when it needs words of its own, one more function beside these).
Nothing is assumed: a fact the run did not record is said to be not recorded.
"""

from __future__ import annotations

__all__ = ["deployment_items", "transport_text", "deployment_fact_lines", "node_authentication_text"]


def deployment_items(deployment: dict) -> list[str]:
    """The bullet list "Deployment (Flower)" of the measures section, one fact a line."""
    return [
        transport_text(deployment),
        *deployment_fact_lines(deployment),
        f"Each site's own privacy accounting: {deployment.get('node_ledgers', 'n/a')}.",
        *([f"Site signatures on the coordinator's ledger: {deployment['ledger_signatures']}."]
          if deployment.get("ledger_signatures") else []),
        f"Site identities: {deployment.get('identities', 'n/a')}.",
        f"Node authentication: {node_authentication_text(deployment.get('node_authentication'))}.",
        f"App verification at the nodes (a verifying node runs only consortium-signed app bundles; as the nodes "
        f"reported at registration; it does not protect a node that shares the SuperLink's host and user, where a "
        f"submitted ServerApp runs unchecked): "
        f"{deployment.get('app_verification', 'not recorded by this run (an older secagg)')}.",
        "Node state at rest: during a round each node keeps its state of the round (its protocol session with "
        "its private keys and masked update, the round's setup and DP parameters, what it released and signed) "
        "in Flower's node state, sealed as one record with XChaCha20-Poly1305 under a key that stays in the "
        "node's own state directory (STATE_DIR/state.key, 0600), and loads it only once it authenticated. "
        "Residual risk: whoever reads that state directory holds the key as well as the node's ledger and "
        "identity; protect the node host.",
    ]


def transport_text(deployment: dict) -> str:
    """The run's transport as recorded (``deployment.tls``, observed by the ServerApp), never assumed."""
    tls = deployment.get("tls", "absent")
    observed = deployment.get("tls_observed")
    if tls is True:
        text = "Transport: TLS ON between the SuperLink and every party (Fleet, Control and runtime APIs over HTTPS)"
    elif tls is False:
        text = ("Transport: TLS OFF - the SuperLink served its APIs in plain HTTP: anyone on the network path reads "
                "and can alter the protocol messages and the run's control traffic. Not acceptable outside loopback")
    elif tls is None:
        text = "Transport: TLS not observed by this run (it did not run under Flower's flwr-serverapp)"
    else:
        text = "Transport: not recorded by this run (a summary from an older secagg)"
    return text + (f" ({observed})." if observed else ".") + " Only protocol messages (wire bytes) travel."


def deployment_fact_lines(deployment: dict) -> list[str]:
    """Active mode, registry and registration, and where the ledgers and keys live, as the run recorded them."""
    if "active_mode" not in deployment:
        return []
    lines = [
        "Active mode (signed keys and the ConsistencyCheck round against a malicious coordinator): "
        + ("ON" if deployment["active_mode"] else "OFF (passive: the coordinator is trusted to follow the protocol)")
        + ".",
        f"Registry of the sites' verify keys at the coordinator: {deployment.get('registry') or 'none'}; "
        f"registration: {deployment.get('registration', 'n/a')}.",
        f"The coordinator's privacy ledger: {deployment.get('coordinator_ledger', 'n/a')}.",
    ]
    for site, node in sorted((deployment.get("nodes") or {}).items()):
        if not node.get("reported"):
            lines.append(f"{site}: its node reported no deployment facts (an older secagg).")
            continue
        key = node.get("signing_key") or "none"
        lines.append(f"{site} (as its node reported at registration): own ledger {node.get('ledger') or 'none'}; "
                     f"signing key {key}"
                     + (" (passphrase-protected)" if node.get("key_protected") else
                        " (not passphrase-protected: a copy of the disk holds the key)" if key != "none" else "")
                     + f"; its own registry copy {node.get('registry') or 'none'}.")
    return lines


def node_authentication_text(fact) -> str:
    """The run's node-authentication settings as its summary recorded them (``run-config node-auth`` and the
    registry's node keys); the SuperLink's own ``--enable-supernode-auth`` is not visible to the coordinator."""
    if not isinstance(fact, dict):
        return "not recorded for this run"
    checked, unchecked = list(fact.get("sites_checked") or []), list(fact.get("sites_unchecked") or [])
    unseen = ("; whether the SuperLink itself ran with --enable-supernode-auth (which keeps nodes with "
              "unregistered keys out altogether) is not recorded by the coordinator")
    if fact.get("required"):
        return ("ON, required by the run configuration (node-auth = true): every registered site's node had "
                "to be known to the SuperLink under the Flower node key the consortium's registry binds to that "
                f"site ({', '.join(checked)})" + unseen)
    if checked:
        return ("partial, not required by the run configuration (node-auth = false): the Flower node keys of "
                f"{', '.join(checked)} were checked against the registry; "
                + (f"those of {', '.join(unchecked)} were not" if unchecked else "every site had one") + unseen)
    return ("OFF in the run configuration (node-auth = false, and no site's Flower node key was checked at "
            "registration): the coordinator did not check which Flower node a site's name came from" + unseen)
