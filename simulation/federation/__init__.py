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

from .coordinator import Coordinator, PlainAggregator, RoundAggregate
from .dropout import DropoutModel, NoDropout, ProbabilisticDropout, ScheduledDropout, load_schedule, parse_schedule
from .identity import (REGISTRY_FILE, SITES_DIR, IdentityError, RunIdentities, SiteIdentity, add_node_key,
                       add_to_registry, check_session_keys, load_node_keys, load_registry, load_signing_key,
                       run_site_identities, write_identity, write_site_node_key)
from .ledger_check import RunLedgerCheck, verify_run_ledger
from .node_keys import NODE_KEY_SUFFIX, NodeKey, NodeKeyError, parse_node_public_key, same_node_key, write_node_key
from .passphrase import DEFAULT_PASSPHRASE_ENV, PassphraseError, is_sealed, open_seed, passphrase_from_env, seal_seed
from .protocol_round import HE_STAGE_OF, ProtocolOutcome, run_he_round, run_masked_round, run_plain_round
from .rounds import (Fleet, FleetRound, PlainSession, ReleaseCommitter, RoundPlan, RunContext, build_session,
                     close_round, plan_round, planned_event, round_line, run_round, run_rounds)
from .runstore import (PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, InsecurePermissionsError, RunDirectory, RunDirectoryError,
                       atomic_write_bytes, atomic_write_json, private_dir, private_umask, require_private_dir)
from .server_optimizer import SERVER_OPTIMIZERS, ServerRule, ServerState, server_step
from .setup import OpenRun, SimulationError, check_resume, dp_sgd_config, open_run, protocol_parameters, resume_config
from .site import LocalUpdate, Site, encode_update, flatten, unflatten
from .summary import privacy_summary, public_site_facts

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
