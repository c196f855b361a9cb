"""The federation every engine runs: sites, coordinator, the round, the run directory, identities.

One job: what a federated run is, independent of how its messages travel. The in-process engine
(:mod:`simulation.engines.inprocess`) and the Flower engine (:mod:`simulation.engines.flower`) both
run these modules; neither is imported from here.

* :mod:`.rounds` - the round (budget check, local DP-SGD, encoding, protocol, spend committed when
  the masked updates are in, FedAvg of the decoded sum, checkpoints), for every engine;
* :mod:`.protocol_round` - one round of the protocol over wire bytes, the loop both engines drive
  (the Flower fleet hands it its transport in place of the in-process sites);
* :mod:`.coordinator` (and :mod:`.server_optimizer`, its update rule) and :mod:`.site` (a hospital:
  data, local model, trainer, its side of the protocol);
* :mod:`.setup` - the run setup before the first round (:func:`open_run`: protocol parameters, noise
  calibration, encoding, run directory and ledger, resume), :mod:`.summary` - the parts of
  ``summary.json`` every engine writes;
* :mod:`.dropout` - who vanishes at which protocol stage (probabilistic or a schedule);
* :mod:`.runstore` - the run directory (owner-only, atomic writes), :mod:`.ledger_check` - its
  ledger verified with its registry and anchors;
* :mod:`.identity`, :mod:`.node_keys`, :mod:`.passphrase` - sites' Ed25519 identities and the
  consortium's registry, Flower node-authentication keys, passphrase-sealed signing keys.
"""

from ..lazy import lazy_exports

# Each public name and the submodule it lives in, imported on first use (simulation.lazy: a
# process that needs one name does not import the rest).
__getattr__, __dir__ = lazy_exports(__name__, {
    "Coordinator": ".coordinator", "PlainAggregator": ".coordinator", "RoundAggregate": ".coordinator",
    "DropoutModel": ".dropout", "NoDropout": ".dropout", "ProbabilisticDropout": ".dropout",
    "ScheduledDropout": ".dropout", "load_schedule": ".dropout", "parse_schedule": ".dropout",
    "REGISTRY_FILE": ".identity", "SITES_DIR": ".identity", "IdentityError": ".identity",
    "RunIdentities": ".identity", "SiteIdentity": ".identity", "add_node_key": ".identity",
    "add_to_registry": ".identity", "check_session_keys": ".identity", "load_node_keys": ".identity",
    "load_registry": ".identity", "load_signing_key": ".identity", "run_site_identities": ".identity",
    "write_identity": ".identity", "write_site_node_key": ".identity",
    "RunLedgerCheck": ".ledger_check", "verify_run_ledger": ".ledger_check",
    "NODE_KEY_SUFFIX": ".node_keys", "NodeKey": ".node_keys", "NodeKeyError": ".node_keys",
    "parse_node_public_key": ".node_keys", "same_node_key": ".node_keys", "write_node_key": ".node_keys",
    "DEFAULT_PASSPHRASE_ENV": ".passphrase", "PassphraseError": ".passphrase", "is_sealed": ".passphrase",
    "open_seed": ".passphrase", "passphrase_from_env": ".passphrase", "seal_seed": ".passphrase",
    "HE_STAGE_OF": ".protocol_round", "ProtocolOutcome": ".protocol_round", "run_he_round": ".protocol_round",
    "run_masked_round": ".protocol_round", "run_plain_round": ".protocol_round",
    "Fleet": ".rounds", "FleetRound": ".rounds", "PlainSession": ".rounds", "ReleaseCommitter": ".rounds",
    "RoundPlan": ".rounds", "RunContext": ".rounds", "build_session": ".rounds", "close_round": ".rounds",
    "plan_round": ".rounds", "planned_event": ".rounds", "round_line": ".rounds", "run_round": ".rounds",
    "run_rounds": ".rounds",
    "PRIVATE_DIR_MODE": ".runstore", "PRIVATE_FILE_MODE": ".runstore", "InsecurePermissionsError": ".runstore",
    "RunDirectory": ".runstore", "RunDirectoryError": ".runstore", "atomic_write_bytes": ".runstore",
    "atomic_write_json": ".runstore", "private_dir": ".runstore", "private_umask": ".runstore",
    "require_private_dir": ".runstore",
    "SERVER_OPTIMIZERS": ".server_optimizer", "ServerRule": ".server_optimizer", "ServerState": ".server_optimizer",
    "server_step": ".server_optimizer",
    "OpenRun": ".setup", "SimulationError": ".setup", "check_resume": ".setup", "dp_sgd_config": ".setup",
    "open_run": ".setup", "protocol_parameters": ".setup", "resume_config": ".setup",
    "LocalUpdate": ".site", "Site": ".site", "encode_update": ".site", "flatten": ".site", "unflatten": ".site",
    "privacy_summary": ".summary", "public_site_facts": ".summary",
})

__all__ = [
    # the run setup and summary
    "SimulationError", "OpenRun", "open_run", "protocol_parameters", "resume_config", "check_resume", "dp_sgd_config",
    "privacy_summary", "public_site_facts",
    # the round
    "RunContext", "RoundPlan", "PlainSession", "FleetRound", "Fleet", "ReleaseCommitter", "planned_event",
    "plan_round", "build_session", "close_round", "run_round", "run_rounds", "round_line",
    "ProtocolOutcome", "run_masked_round", "run_he_round", "run_plain_round", "HE_STAGE_OF",
    # coordinator and sites
    "Coordinator", "PlainAggregator", "RoundAggregate", "SERVER_OPTIMIZERS", "ServerRule", "ServerState",
    "server_step", "Site", "LocalUpdate", "flatten", "unflatten", "encode_update",
    # dropouts
    "DropoutModel", "ProbabilisticDropout", "ScheduledDropout", "NoDropout", "load_schedule", "parse_schedule",
    # the run directory
    "RunDirectory", "RunDirectoryError", "atomic_write_bytes", "atomic_write_json", "private_dir", "private_umask",
    "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "InsecurePermissionsError", "require_private_dir",
    "RunLedgerCheck", "verify_run_ledger",
    # identities and keys
    "SiteIdentity", "write_identity", "load_signing_key", "load_registry", "add_to_registry", "check_session_keys",
    "IdentityError", "RunIdentities", "run_site_identities", "SITES_DIR", "REGISTRY_FILE", "write_site_node_key",
    "load_node_keys", "add_node_key", "NodeKey", "NodeKeyError", "write_node_key", "parse_node_public_key",
    "same_node_key", "NODE_KEY_SUFFIX", "seal_seed", "open_seed", "is_sealed", "PassphraseError",
    "passphrase_from_env", "DEFAULT_PASSPHRASE_ENV",
]
