"""Load run on Flower's deployment engine (issue 18): many SuperNodes, three rounds, random kills.

A SuperLink and ``FLOWER_LOAD_NODES`` SuperNodes (10 by default) on loopback over TLS, each with
its own state directory and ledger; synthetic updates, mode secagg, three rounds. In every round
one node still alive, picked by a seeded ``numpy`` generator (it picks who is killed, never a key,
mask or noise), is SIGKILLed with its children as soon as it joined the round's session. The
benchmark asserts that every round completes with the nodes still alive and that, per site and
round, the coordinator's ledger charges exactly what the node's own ledger charges (a node killed
before its masked input left is charged on neither side), and records the wall time of the run
(pytest-benchmark, one round) with the node count in ``extra_info``. Not in ``make test``.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

pytest.importorskip("flwr")

from dp import PrivacyLedger  # noqa: E402
from tests.flower_processes import RUN, Federation, journal_lines, metrics, submit, wait_for  # noqa: E402

N_NODES = int(os.environ.get("FLOWER_LOAD_NODES", "10"))
ROUNDS = 3


def _spends(ledger_dir, site: str, node: bool, run_id: str | None = None) -> list[int]:
    ledger = PrivacyLedger.open(ledger_dir)
    try:
        if not node:
            return [e.round for e in ledger.events(site)]
        return [(e.body.get("extra") or {}).get("round") for e in ledger.entries()
                if e.kind == "round" and (e.body.get("extra") or {}).get("run") == run_id]
    finally:
        ledger.close()


def _load_run(tmp_path) -> dict:
    sites = [f"site-{i + 1}" for i in range(N_NODES)]
    states = {site: tmp_path / f"node-{site}" for site in sites}
    fed = Federation(tmp_path)
    rng = np.random.default_rng(18)
    killed: dict[int, str] = {}
    try:
        fed.superlink()
        for i, site in enumerate(sites):
            fed.supernode(i, f'site="{site}" state-dir="{states[site]}" epsilon-budget=8.0')
        run_dir = tmp_path / "run"
        submit(fed, run_dir, RUN | {"num-sites": N_NODES, "rounds": ROUNDS, "update": "synthetic", "mode": "secagg",
                                    "stage-timeout": 60.0, "node-wait": 600.0})
        alive = list(sites)
        for round_index in range(ROUNDS):
            victim = str(rng.choice(alive))
            wait_for(lambda: journal_lines(states[victim]) >= round_index + 1, 900,
                     f"{victim} joins round {round_index}", fed)
            os.killpg(fed.procs[1 + sites.index(victim)].pid, signal.SIGKILL)
            killed[round_index] = victim
            alive.remove(victim)
        wait_for(lambda: (run_dir / "summary.json").exists(), 1200, "the run finishes", fed)
    finally:
        fed.stop()
    records = metrics(run_dir)
    assert [m["status"] for m in records] == ["completed"] * ROUNDS, records
    from dp import verify_ledger

    run_id = verify_ledger(run_dir).run_id
    gone: set[str] = set()
    for round_index, record in enumerate(records):
        gone.add(killed[round_index])
        assert set(record["included"]) == set(sites) - gone, (round_index, record["included"])
    for site in sites:
        at_coordinator = _spends(run_dir, site, node=False)
        assert at_coordinator == _spends(states[site] / "ledger", site, node=True, run_id=run_id), site
    return {"killed": killed, "rounds_completed": len(records)}


@pytest.mark.slow
def test_flower_deployment_many_supernodes_three_rounds_random_kills(benchmark, tmp_path_factory):
    outcome = benchmark.pedantic(lambda: _load_run(tmp_path_factory.mktemp("flower-load")), rounds=1, iterations=1)
    benchmark.extra_info.update(nodes=N_NODES, rounds=ROUNDS, killed=json.dumps(outcome["killed"]))
