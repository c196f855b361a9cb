#!/usr/bin/env bash
# The guide (README.md beside this file) as one script: a secagg federation over Flower's
# deployment engine on ONE machine - a SuperLink and one SuperNode per site on loopback TLS -
# from nothing to a verified run and its DPIA. Everything lives under one user-writable
# directory (owner-only: umask 077), nothing needs root, nothing is downloaded.
#
#   bash "$(secagg flower app-path)/deploy-local.sh" [--dir DIR] [--active] [--sites N] [--num-sites N]
#        [--rounds N] [--port PORT] [--epsilon-budget EPS] [--insecure] [--passphrase-env VAR]
#        [--run-config 'key=value ...']
#
# Steps, in order: 1 data (a synthetic cohort), 2 certificates, 3 each site's keys (signing key and
# Flower node key) and the registry, and the consortium's app-signing key, which signs this app's bundle,
# 4 the SuperLink with SuperNode authentication and the
# registry's node keys registered, 5 the SuperNodes, each running only app bundles the consortium signed
# (`secagg flower supernode`), 6 `flwr run`, 7 the run's outcome and both sides' ledgers
# (`secagg ledger verify`), 8 the DPIA. Exit status 0 only when every planned round completed and
# every ledger verified; non-zero otherwise (`flwr run` itself exits 0 on a failed run, so the
# script asks `secagg flower check`). The SuperLink and SuperNodes are stopped on exit.
#
# Options:
#   --dir DIR           where everything goes (must be new or empty; default: a new
#                       ${TMPDIR:-/tmp}/secagg-deploy.XXXXXX)
#   --active            active mode: signed keys and the ConsistencyCheck round; every node checks the
#                       session against its own copy of the registry
#   --sites N           SuperNodes to start, site-1 .. site-N (default 3)
#   --num-sites N       sites the run waits for (the run config's num-sites; default: --sites)
#   --rounds N          rounds (default 2)
#   --port PORT         the SuperLink's port; SuperNode i uses PORT+i (default 9093)
#   --epsilon-budget E  each node's own budget (default 8.0)
#   --insecure          no TLS (loopback demos only; the DPIA then says TLS was off). flwr allows
#                       SuperNode authentication only over TLS, so the nodes are then not
#                       authenticated and the run takes their site names as given (registration=names)
#   --passphrase-env VAR  store each site's signing key encrypted under the passphrase held by the
#                       environment variable VAR (set it before running; never on the command line);
#                       the SuperNodes inherit it and read it through their node config's passphrase-env
#   --run-config STR    further run-config keys, e.g. 'image-size=16 local-steps=2 node-wait=20.0'
#
# Environment: SECAGG (default `secagg`) is the secagg command (it also starts each flower-supernode, with
# the app verifier in front of its ClientApps); flower-superlink, flower-supernode and flwr come from PATH (the environment where secagg and flwr are installed).
set -euo pipefail
umask 077

SECAGG=${SECAGG:-secagg}
DIR="" ACTIVE=0 SITES=3 NUM_SITES="" ROUNDS=2 PORT=9093 BUDGET=8.0 TLS=1 EXTRA="" PASSPHRASE_ENV=""
die() { echo "deploy-local: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --active) ACTIVE=1; shift ;;
    --sites) SITES=${2:?--sites needs a value}; shift 2 ;;
    --num-sites) NUM_SITES=${2:?--num-sites needs a value}; shift 2 ;;
    --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
    --port) PORT=${2:?--port needs a value}; shift 2 ;;
    --epsilon-budget) BUDGET=${2:?--epsilon-budget needs a value}; shift 2 ;;
    --insecure) TLS=0; shift ;;
    --passphrase-env) PASSPHRASE_ENV=${2:?--passphrase-env needs a variable name}; shift 2 ;;
    --run-config) EXTRA=${2?--run-config needs a value}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
for n in "$SITES" "$ROUNDS" "$PORT" ${NUM_SITES:+"$NUM_SITES"}; do
  case "$n" in ''|*[!0-9]*) die "--sites, --num-sites, --rounds and --port take positive integers; got '$n'" ;; esac
done
NUM_SITES=${NUM_SITES:-$SITES}
if [ -n "$PASSPHRASE_ENV" ]; then
  case "$PASSPHRASE_ENV" in [A-Za-z_]*) ;; *) die "--passphrase-env takes a variable name; got '$PASSPHRASE_ENV'" ;; esac
  [ -n "$(printenv "$PASSPHRASE_ENV" || true)" ] || die "the environment variable $PASSPHRASE_ENV holds no passphrase"
fi
if [ -z "$DIR" ]; then
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/secagg-deploy.XXXXXX")
elif [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
  die "$DIR is not empty: give a new directory (a node's ledger there would carry its spent budget into this run)"
fi
mkdir -p "$DIR" && chmod 700 "$DIR" && DIR=$(cd "$DIR" && pwd)
APP=$($SECAGG flower app-path)
LOGS=$DIR/logs RUN=$DIR/run REGISTRY=$DIR/registry.json
mkdir -p "$LOGS" "$DIR/flwr-home"
# Flower's own files (the installed app bundles, the CLI's connection config) stay under DIR too.
export FLWR_HOME=$DIR/flwr-home
step() { echo "== $*"; }

# Processes we start, each in its own session, so that stopping one stops its children too.
PIDS=()
start() { local log=$1; shift; setsid "$@" >"$LOGS/$log" 2>&1 & PIDS+=("$!"); }
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "1/8 data: a synthetic cohort of $SITES sites in $DIR/data"
$SECAGG data synth --out "$DIR/data" --sites "$SITES" --scale tiny

if [ "$TLS" = 1 ]; then
  step "2/8 certificates: a throwaway loopback CA in $DIR/certs (a consortium uses its own PKI)"
  $SECAGG flower certs --out "$DIR/certs"
  LINK_TLS=(--ssl-ca-certfile "$DIR/certs/ca.pem" --ssl-certfile "$DIR/certs/server.pem"
            --ssl-keyfile "$DIR/certs/server.key")
  NODE_TLS=(--root-certificates "$DIR/certs/ca.pem")
  CLI_TLS="root-certificates = \"$DIR/certs/ca.pem\""
else
  step "2/8 certificates: none (--insecure: no TLS)"
  LINK_TLS=(--insecure) NODE_TLS=(--insecure) CLI_TLS="insecure = true"
fi

step "3/8 keys: each site's Ed25519 key and Flower node key in its node's state directory, both registered in $REGISTRY; the consortium's app-signing key, and its signature of the app"
for i in $(seq "$SITES"); do
  $SECAGG keys new --site "site-$i" --out "$DIR/nodes/site-$i" --registry "$REGISTRY" \
    ${PASSPHRASE_ENV:+--passphrase-env "$PASSPHRASE_ENV"}
done

# The consortium's app-signing key signs the bundle `flwr run "$APP"` submits (the same bytes: `flwr build` is
# reproducible); every node gets the verify key and the signature out of band and runs no other bundle.
$SECAGG flower app-key --out "$DIR/consortium"
$SECAGG flower sign-app "$APP" --key "$DIR/consortium/consortium-apps.ed25519" --out "$DIR/trusted-apps"

cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-fed"

[superlink.local-fed]
address = "127.0.0.1:$PORT"
$CLI_TLS
TOML
if [ "$TLS" = 1 ]; then
  step "4/8 SuperLink on 127.0.0.1:$PORT, admitting only the registry's node keys"
  start superlink.log flower-superlink "${LINK_TLS[@]}" --enable-supernode-auth \
    --disable-runtime-dependency-installation --port "$PORT"
else
  step "4/8 SuperLink on 127.0.0.1:$PORT (no TLS, hence no SuperNode authentication)"
  start superlink.log flower-superlink "${LINK_TLS[@]}" --disable-runtime-dependency-installation --port "$PORT"
fi
for _ in $(seq 150); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$LOGS/superlink.log" >&2; echo "deploy-local: the SuperLink stopped" >&2; exit 1; }
  sleep 0.4
done
if [ "$TLS" = 1 ]; then
  $SECAGG keys register-nodes --registry "$REGISTRY" --superlink local-fed
fi

step "5/8 SuperNodes: $SITES, one per site, each running only consortium-signed app bundles$([ "$ACTIVE" = 1 ] && echo ', with its signing key and its copy of the registry')"
for i in $(seq "$SITES"); do
  state="$DIR/nodes/site-$i"
  config="partition-id=$((i - 1)) site=\"site-$i\" data=\"$DIR/data/site-$i\" state-dir=\"$state\" epsilon-budget=$BUDGET"
  [ -n "$PASSPHRASE_ENV" ] && config="$config passphrase-env=\"$PASSPHRASE_ENV\""
  if [ "$ACTIVE" = 1 ]; then
    config="$config signing-key=\"$state/site-$i.ed25519\" registry=\"$REGISTRY\""
  fi
  NODE_AUTH=()
  [ "$TLS" = 1 ] && NODE_AUTH=(--auth-supernode-private-key "$state/site-$i.flower-auth")
  start "supernode-$i.log" $SECAGG flower supernode --app-key "$DIR/consortium/consortium-apps.pub" \
    --trusted-apps "$DIR/trusted-apps" -- "${NODE_TLS[@]}" "${NODE_AUTH[@]}" --superlink "127.0.0.1:$PORT" \
    --port "$((PORT + i))" --node-config "$config"
done

step "6/8 flwr run: $ROUNDS rounds, num-sites=$NUM_SITES, run directory $RUN"
RUN_CONFIG="out=\"$RUN\" rounds=$ROUNDS num-sites=$NUM_SITES registry=\"$REGISTRY\""
[ "$ACTIVE" = 1 ] && RUN_CONFIG="$RUN_CONFIG active=true"
if [ "$TLS" = 1 ]; then RUN_CONFIG="$RUN_CONFIG node-auth=true"; else RUN_CONFIG="$RUN_CONFIG registration=\"names\""; fi
RUN_CONFIG="$RUN_CONFIG $EXTRA"
flwr run "$APP" local-fed --stream --run-config "$RUN_CONFIG" 2>&1 | tee "$LOGS/flwr-run.log"

step "7/8 verify: the run's outcome, the coordinator's ledger with the nodes' anchors, each node's own ledger"
if ! RUN_ID=$($SECAGG flower check "$RUN" --run-id); then
  echo "deploy-local: the run failed; logs in $LOGS" >&2
  exit 1
fi
ANCHORS=()
for i in $(seq "$SITES"); do
  [ -d "$DIR/nodes/site-$i/anchors/$RUN_ID" ] && ANCHORS+=("$DIR/nodes/site-$i/anchors/$RUN_ID")
done
$SECAGG ledger verify "$RUN" --registry "$REGISTRY" ${ANCHORS[@]:+--anchors "${ANCHORS[@]}"}
for i in $(seq "$SITES"); do
  if [ -e "$DIR/nodes/site-$i/ledger" ]; then
    $SECAGG ledger verify "$DIR/nodes/site-$i/ledger" --registry "$REGISTRY"
  fi
done

step "8/8 DPIA: $RUN/dpia.md"
$SECAGG dpia "$RUN" --format md
echo "done: everything is in $DIR"
