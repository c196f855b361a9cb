"""The Flower ``ServerApp``: the coordinator of a real federation, running :mod:`simulation.federation.rounds`.

It is ``secagg simulate`` with the sites replaced by Flower nodes: the same
:func:`~simulation.federation.setup.open_run` (noise calibration, protocol parameters,
run directory, privacy ledger, resume), the same round
(:func:`~simulation.federation.rounds.run_rounds`: budget check, spend committed when the
masked updates are in, FedAvg of the decoded sum, atomic checkpoints), with a
:class:`~simulation.engines.flower.fleet.FlowerFleet`. The coordinator has no data, so
there is no evaluation at the end; ``summary.json`` holds the privacy and
protocol record of the run.

Run configuration (``[tool.flwr.app.config]`` of ``app/pyproject.toml``, or
``flwr run --run-config``), with the names of ``secagg simulate``'s settings:

* federation: ``num-sites``, ``node-wait`` (seconds to wait for the nodes),
  ``stage-timeout`` (seconds a stage waits for answers; who has not answered
  dropped), ``out`` (the run directory on the coordinator's machine; required),
  ``resume`` (continue the run in ``out``);
* ``registry`` (the consortium's verify keys, :mod:`simulation.federation.identity`): every site's
  signature on its ledger spend is checked against it before the spend is committed
  (:mod:`.ledger_link`; without it the signatures are recorded unchecked); needed for ``active``.
  With it, only nodes that sign a fresh challenge with their site's registered key register
  (``_register``): a stranger or a node naming another site is left out, not fatal;
  ``registration = "names"`` takes the nodes' names as given instead (the coordinator's own
  choice: the nodes' checks in active mode do not depend on it). Where the registry records a
  site's Flower node key (``secagg keys new``), signed registration also requires the node's
  Flower identity to be that key: the ServerApp reads, through ``Grid.get_nodes()``, the public key
  the SuperLink authenticated each node under (flwr 1.42's ``NodeInfo.public_key``) and leaves out a
  node whose key is not its claimed site's (:class:`NodeKeyBinding`); ``node-auth`` (default false)
  requires a node key for every site. Run the SuperLink with ``--enable-supernode-auth`` and
  exactly the registry's keys (``secagg keys register-nodes``) so that a stranger does not
  become a node at all (this binding only refuses it a registered site's name);
* protocol: ``mode`` (``secagg`` or ``secagg+``), ``active`` (signed keys and the
  ConsistencyCheck round; every node checks the session against its own copy of the
  registry), ``threshold`` (0: the smallest safe t), ``update-clip``, ``dropout`` (expected per-stage dropout rate: the
  SecAgg+ parameter finder's input), ``corrupt-fraction``;
* privacy: ``epsilon``, ``delta``, ``secure-rng``, ``budget-policy``, ``on-abort``;
  distributed DP: ``distributed-dp`` (``skellam``, ``ddg`` or "" for off), ``ddp-epsilon``,
  ``ddp-clip``, ``ddp-colluding``, ``ddp-bits`` (0: automatic);
* training: ``model``, ``image-size``, ``rounds``, ``local-steps``,
  ``sample-rate``, ``max-grad-norm``, ``learning-rate``, ``seed`` (initial weights
  and the nodes' train/validation split), ``val-fraction``; ``privacy-unit``
  (``patient``, the default, or the labelled ``slice``), ``public-size`` (a declared
  public number of units per site for the DP-SGD normaliser; 0: none). FedAvg weights
  are public and equal over Flower (declared per-site weights are carried by
  ``secagg simulate`` only, not yet here); no site's record count is used or sent;
* tests and demos: ``update`` (``dp-sgd``, or ``synthetic``: fixed float updates
  whose FedAvg is known in advance), ``synthetic-seed``, ``simulate-drop``
  (``"SITE:ROUND:STAGE,..."``: those nodes stop answering there), and
  ``node-data-root``, ``node-state-root``, ``node-epsilon-budget``, ``node-site-level-budget``: what
  simulated nodes, which have no config of their own, use as their ``data``
  (``ROOT/<site>``), ``state-dir`` and ``epsilon-budget``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Mapping

from . import require_flwr

require_flwr()

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

import secagg  # noqa: E402

from ...config import SimulationConfigError, SimulationConfig  # noqa: E402
from ...federation.coordinator import Coordinator  # noqa: E402
from ...federation.dropout import NoDropout  # noqa: E402
from ...federation.rounds import run_rounds  # noqa: E402
from ...federation.runstore import atomic_write_json  # noqa: E402
from .fleet import FlowerFleet  # noqa: E402
from .deploy import deployment_facts, transport_security  # noqa: E402
from .transport import FACTS_RECORD, HELLO, hello_payload  # noqa: E402

__all__ = ["app", "run_federation", "flower_config", "DEFAULTS"]

app = ServerApp()

DEFAULTS = {
    "num-sites": 3, "node-wait": 120.0, "stage-timeout": 60.0, "out": "", "resume": False,
    "mode": "secagg", "active": False, "registry": "", "registration": "signed",
    "node-auth": False,
    "threshold": 0, "update-clip": 1.0, "dropout": 0.0, "corrupt-fraction": 0.0,
    "epsilon": 8.0, "delta": 1e-5, "secure-rng": True, "distributed-dp": "", "ddp-epsilon": 10.0,
    "ddp-clip": 1.0, "ddp-colluding": 0, "ddp-bits": 0, "budget-policy": "sit-out", "on-abort": "continue",
    "model": "compact-ae", "image-size": 32, "rounds": 2, "local-steps": 3, "sample-rate": 0.1,
    "max-grad-norm": 1.0, "learning-rate": 2e-3, "seed": 0, "val-fraction": 0.25,
    "privacy-unit": "patient", "public-size": 0,
    "update": "dp-sgd", "synthetic-seed": 0, "simulate-drop": "",
    # Flower's simulation engine only (its nodes have no config of their own): ROOT/<site>.
    "node-data-root": "", "node-state-root": "", "node-epsilon-budget": 0.0, "node-site-level-budget": 0.0,
}

#: run-config key -> SimulationConfig field
_CONFIG_KEYS = {
    "mode": "mode", "active": "active", "update-clip": "update_clip", "dropout": "dropout", "corrupt-fraction": "corrupt_fraction",
    "epsilon": "epsilon", "delta": "delta", "secure-rng": "secure_rng", "budget-policy": "budget_policy",
    "on-abort": "on_abort", "model": "model", "image-size": "image_size", "rounds": "rounds",
    "local-steps": "local_steps", "sample-rate": "sample_rate", "max-grad-norm": "max_grad_norm",
    "learning-rate": "learning_rate", "seed": "seed", "val-fraction": "val_fraction",
    "ddp-epsilon": "ddp_epsilon", "ddp-clip": "ddp_clip", "ddp-colluding": "ddp_colluding",
    "privacy-unit": "privacy_unit",
}


def _log(line: str) -> None:
    print(f"[secagg-flower] {line}", flush=True)


def flower_config(cfg: dict) -> SimulationConfig:
    """The run configuration as a validated :class:`SimulationConfig` (Flower supports a subset of modes)."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise SimulationConfigError(f"unknown run-config keys {unknown}; known: {sorted(DEFAULTS)}")
    values = {field: cfg[key] for key, field in _CONFIG_KEYS.items()}
    values["threshold"] = int(cfg["threshold"]) or None
    values["distributed_dp"] = str(cfg["distributed-dp"]) or None
    values["ddp_bits"] = int(cfg["ddp-bits"]) or None
    values["public_size"] = int(cfg["public-size"]) or None
    config = SimulationConfig(preset="flower", sites=int(cfg["num-sites"]), baselines=(), **values)
    if config.mode not in ("secagg", "secagg+"):
        raise SimulationConfigError(f"mode {config.mode!r} is not carried over Flower; use secagg or secagg+ "
                          "(he and plain run in `secagg simulate`)")
    if str(cfg["update"]) not in ("dp-sgd", "synthetic"):
        raise SimulationConfigError(f"update must be 'dp-sgd' or 'synthetic'; got {cfg['update']!r}")
    if not str(cfg["out"]):
        raise SimulationConfigError("set out=\"/path/to/run-dir\": the coordinator's run directory (ledger, checkpoints)")
    if config.active and not str(cfg["registry"]):
        raise SimulationConfigError("active mode needs registry=\"FILE\": the consortium's verify keys (secagg keys new)")
    if bool(cfg["node-auth"]) and (not str(cfg["registry"]) or str(cfg["registration"]) != "signed"):
        raise SimulationConfigError("node-auth = true needs registry=\"FILE\" with the sites' node keys and "
                          "registration = \"signed\": the coordinator binds each node's Flower key to its site there")
    return config


def _wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {count} nodes connected within {timeout:g} s")
        time.sleep(0.5)


def _register(grid: Grid, nodes: list[int], timeout: float,
              registry: dict[str, bytes] | None = None, binding: NodeKeyBinding | None = None,
              facts: dict | None = None) -> dict[str, int]:
    """Ask each node for its site's name: site -> Flower node id.

    With a ``registry``, each node must also sign a fresh challenge with the key registered for the
    site it names (:func:`.transport.hello_payload`): a node whose site is not in the registry, or
    that cannot sign for the site it claims, is left out (logged) and never aborts the registered
    sites' run. Without one, names are taken as given, and two nodes naming one site is an error.
    With a ``binding`` (the registry's Flower node keys), a node is also left out unless the public
    key the SuperLink authenticated it under (``Grid.get_nodes``) is the one the registry holds for
    the site it claims (:meth:`NodeKeyBinding.refusal`).
    """
    import secrets

    from secagg.crypto import verify_signature

    challenge = secrets.token_bytes(32)
    content = RecordDict() if registry is None else RecordDict({"challenge": ConfigRecord({"nonce": challenge})})
    messages = [Message(content, dst_node_id=node, message_type=HELLO, group_id="hello", ttl=timeout + 60)
                for node in nodes]
    flower_keys = {} if binding is None else {int(info.node_id): bytes(info.public_key) for info in grid.get_nodes()}
    node_of: dict[str, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            _log(f"node {node} did not register: {reply.error.reason}")
            continue
        answer = reply.content.config_records["site"]
        site = str(answer["site"])
        if registry is not None:
            if site not in registry:
                _log(f"node {node} left out: its site {site!r} is not in the registry")
                continue
            try:
                verify_signature(registry[site], hello_payload(challenge, site), bytes(answer.get("signature", b"")))
            except (secagg.ProtocolError, TypeError):
                _log(f"node {node} left out: it claims site {site!r} but cannot sign with that site's key")
                continue
        if binding is not None:
            refusal = binding.refusal(site, flower_keys.get(node, b""))
            if refusal:
                _log(f"node {node} left out: it claims site {site!r} but {refusal}")
                continue
        if site in node_of:
            raise ValueError(f"two nodes claim site {site!r}; give each node its own site name")
        node_of[site] = node
        if facts is not None and FACTS_RECORD in reply.content.config_records:
            facts[site] = dict(reply.content.config_records[FACTS_RECORD])
    return node_of


@dataclass(frozen=True)
class NodeKeyBinding:
    """The registry's Flower node keys (:func:`simulation.federation.identity.load_node_keys`): a node registers as
    site S only if the SuperLink authenticated it under S's node key.

    ``required`` (run config ``node-auth = true``): a site with no node key in the registry is refused
    too. Without it, only sites whose registry entry names a node key are checked.
    """

    node_keys: Mapping[str, str]  # site -> OpenSSH public-key line
    required: bool

    def refusal(self, site: str, flower_key: bytes) -> str:
        """Why a node that the SuperLink knows under ``flower_key`` cannot be ``site`` ("" if it can)."""
        from ...federation.node_keys import same_node_key

        expected = self.node_keys.get(site)
        if expected is None:
            return "the registry holds no Flower node key for it (node-auth = true)" if self.required else ""
        if not flower_key:
            return "the SuperLink reports no authenticated Flower key for that node"
        if not same_node_key(expected, flower_key):
            return "its Flower node key is not the one the registry holds for that site"
        return ""


def _register_sites(grid: Grid, count: int, timeout: float, registry: dict[str, bytes] | None,
                    binding: NodeKeyBinding | None = None, facts: dict | None = None) -> dict[str, int]:
    """Wait for ``count`` nodes and register them; with a registry, until ``count`` registered sites are in
    (nodes left out do not count, each node is asked once) or ``timeout`` passes. ``facts`` collects what
    each registered node reports of its deployment (``client_app.node_facts``)."""
    nodes = _wait_for_nodes(grid, count, timeout)
    node_of = _register(grid, nodes, timeout, registry, binding, facts)
    if registry is None:
        return node_of
    asked, deadline = set(nodes), time.monotonic() + timeout
    while len(node_of) < count and time.monotonic() < deadline:
        time.sleep(0.5)
        new = sorted(set(grid.get_node_ids()) - asked)
        asked |= set(new)
        for site, node in _register(grid, new, timeout, registry, binding, facts).items() if new else ():
            if site in node_of:
                raise ValueError(f"two nodes sign for site {site!r}: one key is on two nodes")
            node_of[site] = node
    return node_of


def run_federation(grid: Grid, cfg: dict) -> dict:
    """All rounds of a federated run over ``grid``; returns (and writes) the run's summary."""
    import torch

    import models
    from dp import verify_ledger

    from ...federation.setup import open_run
    from ...federation.summary import privacy_summary, public_site_facts

    config = flower_config(cfg)
    consortium, binding = None, None
    if str(cfg["registry"]):
        from ...federation.identity import load_node_keys, load_registry

        consortium = load_registry(str(cfg["registry"]))
        if str(cfg["registration"]) == "signed":
            binding = NodeKeyBinding(load_node_keys(str(cfg["registry"])), bool(cfg["node-auth"]))
    if str(cfg["registration"]) not in ("signed", "names"):
        raise SimulationConfigError(f"registration must be 'signed' or 'names'; got {cfg['registration']!r}")
    reported: dict[str, dict] = {}
    node_of = _register_sites(grid, config.sites, float(cfg["node-wait"]),
                              consortium if str(cfg["registration"]) == "signed" else None, binding, reported)
    if len(node_of) != config.sites:
        raise RuntimeError(f"{len(node_of)} of {config.sites} sites registered: {sorted(node_of)}")
    names = sorted(node_of)
    _log(f"{len(names)} sites registered: {names}")

    torch.manual_seed(config.seed)  # the same initial weights as every site's model
    reference = models.create_model(config.model, image_size=config.image_size)
    shared_names = models.shared_parameter_names(reference)
    if set(shared_names) != {n for n, _ in reference.named_parameters()}:
        raise SimulationConfigError(f"model {config.model!r} keeps parameters at the sites between rounds; over Flower "
                          "the nodes hold no state between rounds yet: use a fully shared model (compact-ae, conv-ae)")
    coordinator = Coordinator({n: p.detach().clone() for n, p in reference.named_parameters()}, shared_names)
    # FedAvg weights are public: equal over Flower (declared per-site weights are not carried there yet).
    weight_bound = 1.0
    verify_keys, registry = {}, None
    if consortium is not None:
        registry = consortium
        missing = sorted(set(names) - set(registry))
        if missing:
            raise SimulationConfigError(f"sites {missing} are not in the registry {cfg['registry']}")
        registry = {name: registry[name] for name in names}
        if config.active:
            verify_keys = dict(registry)
    run = open_run(config, names, coordinator, weight_bound, str(cfg["out"]), resume=bool(cfg["resume"]), log=_log,
                   verify_keys=verify_keys)
    fleet = FlowerFleet(grid, node_of, float(cfg["stage-timeout"]), {
        "update": str(cfg["update"]), "synthetic_seed": int(cfg["synthetic-seed"]),
        "simulate_drop": str(cfg["simulate-drop"]),
    }, log=_log, registry=registry)
    try:
        stopped, _ = run_rounds(run.ctx, fleet, run.store, run.state, run.start_round, NoDropout())
    finally:
        run.ctx.ledger.close()
    unanchored = fleet.deliver_anchors()
    if unanchored:
        _log(f"the nodes of {unanchored} did not take their last ledger anchor: theirs stays one round behind")
    metrics = run.store.read_metrics()
    # With the registry, every spend must carry its site's signature (checked again, as an auditor would).
    verification = verify_ledger(run.store.root, registry=registry)
    summary = {
        "engine": "flower",
        "mode": config.mode,
        "protection": "secure aggregation over Flower: the coordinator saw only sums of masked updates",
        "active": config.active,
        # The coordinator never learns a site's data or its size: FedAvg weights are public and equal.
        "sites": public_site_facts(config, names),
        "preset": config.preset,
        "scale": "user data",
        "data": "each site's own data, on its own node; never on the coordinator",
        "model": config.model,
        "image_size": config.image_size,
        "secagg_plus_parameters": run.ctx.protocol["finder"],
        "dropouts_survived": sum(len(m["participants"]) - len(m["included"]) for m in metrics
                                 if m["status"] == "completed"),
        "rounds_planned": config.rounds,
        "rounds_completed": sum(m["status"] == "completed" for m in metrics),
        "rounds_aborted": [m["round"] for m in metrics if m["status"] == "aborted"],
        "stopped": stopped,
        "threshold": run.ctx.protocol["threshold"],
        "graph": "complete" if run.ctx.protocol["degree"] is None else f"Harary degree {run.ctx.protocol['degree']}",
        "privacy": privacy_summary(config, run.ctx.dp_config.noise_multiplier, metrics, verification.ok),
        "deployment": {
            "engine": "Flower (ServerApp + one SuperNode per site)",
            "node_ledgers": "each node keeps its own site-signed ledger and budget and refuses rounds past it",
            "ledger_signatures": ("every spend in the coordinator's ledger is signed on the site's node and "
                                  "anchored in the node's state"
                                  + ("; checked against the registry before each commit" if registry is not None
                                     else "; not checked by the coordinator (no registry)")),
            "identities": "each site's Ed25519 key, checked against every node's own registry" if config.active
            else "none (passive mode)",
            "node_authentication": _node_authentication_fact(binding, names),
        } | deployment_facts(cfg, transport_security(sys.argv), {site: reported.get(site, {}) for site in names}),
        "update": str(cfg["update"]),
    }
    atomic_write_json(run.store.summary_path, summary)
    _log(f"done: {summary['rounds_completed']}/{config.rounds} rounds completed; ledger verified: "
         f"{verification.ok}; run directory {run.store.root}")
    return summary


def _node_authentication_fact(binding: NodeKeyBinding | None, names: list[str]) -> dict:
    """What the run's configuration says about node authentication, for the summary and the DPIA: whether
    ``node-auth`` required it, and which registered sites' Flower node keys were checked at registration.
    Whether the SuperLink ran with ``--enable-supernode-auth`` is not visible to the coordinator."""
    checked = [] if binding is None else sorted(site for site in names if site in binding.node_keys)
    return {"required": bool(binding is not None and binding.required), "sites_checked": checked,
            "sites_unchecked": sorted(set(names) - set(checked))}


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_federation(grid, DEFAULTS | dict(context.run_config))
