"""Flower's SecAgg+ (flwr 1.42) at the settings our protocol and scaling suites measure (issue 10).

The peer runs Flower's own ``SecAggPlusWorkflow`` stages and ``secaggplus_mod``
through an in-process grid (:mod:`benchmarks.flower_peer`), in the same run as
ours, so the ratios in ``conftest.RATIOS`` compare like with like on one machine:

* ``peer_flower_client_mask_1m_k10``: one node's ``collect_masked_vectors``
  request, bytes in to bytes out (decrypt 10 share bundles, quantize 1M
  parameters, add 1 self and 10 pairwise masks, serialise), against our
  ``client_mask_1m_k10`` (n = 11, complete graph, threshold 6);
* ``peer_flower_server_unmask_n50_1m``: the workflow's ``unmask`` stage alone
  (the nodes' replies were recorded beforehand) for n = 50, m = 1M, complete
  graph, threshold 26, 5 nodes silent after sharing keys, against our
  ``server_unmask_n50_1m``;
* ``test_peer_scaling`` (slow): whole rounds at our scaling suite's complete
  and SecAgg+ settings, client and server time and bytes in ``extra_info``
  under the same keys as ours, graph labelled ``flower-...``.

Every timed round is checked: Flower's aggregate must equal the plain sum of
the survivors' quantized inputs.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common.secure_aggregation.quantization import quantize  # noqa: E402
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key  # noqa: E402

import secagg  # noqa: E402

from .conftest import record, rounds  # noqa: E402
from .flower_peer import FlowerSecAggPlus, PeerSettings, Stage, from_wire  # noqa: E402

M = 1_000_000


def test_peer_flower_sum_is_exact():
    """Not timed: the driver runs a working protocol, with and without dropouts, on both graphs."""
    cases = [
        PeerSettings.complete(10, 10_000, 6),
        PeerSettings.complete(10, 10_000, 6, drop=0.2),
        PeerSettings(10, 10_000, 1.0, 6, frozenset({0, 1}), Stage.UNMASK),
        PeerSettings.ring(30, 10_000, degree=8, threshold=5, drop=0.1),
    ]
    for settings in cases:
        session = FlowerSecAggPlus(settings)
        session.run()
        session.check()
        expected = settings.n - (len(settings.dropped) if settings.drop_stage != Stage.UNMASK else 0)
        assert len(session.survivors()) == expected


@pytest.mark.quick
def test_peer_flower_client_mask_1m_k10(benchmark):
    """One Flower node's masked-input stage: 10 neighbours, 1M parameters (bytes in, bytes out)."""
    session = FlowerSecAggPlus(PeerSettings.complete(11, M, threshold=6))
    session.run_until(Stage.SHARE_KEYS)
    requests = session.intercept(Stage.COLLECT_MASKED_VECTORS, deliver=False)
    node = min(requests)
    assert len(from_wire(requests[node]).content.config_records[RECORD_KEY_CONFIGS][Key.CIPHERTEXT_LIST]) == 10

    def setup():
        return (session.clients[node].fork(), requests[node]), {}

    reply, _ = benchmark.pedantic(lambda client, request: client.handle(request), setup=setup,
                                  rounds=rounds(10, 5), warmup_rounds=1)
    masked = from_wire(reply).content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
    assert len(masked) == 2  # the quantized weight, then the 1M masked parameters
    session.run_until(Stage.UNMASK)  # the round the timed request belongs to, finished and checked
    session.check()

    x = np.zeros(M, dtype=np.float32)
    quantize_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        quantize([x], 8.0, 1 << 22)
        quantize_s.append(time.perf_counter() - t0)
    benchmark.extra_info.update(bytes_in=len(requests[node]), bytes_out=len(reply), quantize_1m_s=min(quantize_s),
                                note="includes Flower's quantization; ours starts from an encoded vector")
    record(benchmark, "peer_flower_client_mask_1m_k10")


@pytest.mark.quick
def test_peer_flower_server_unmask_n50_1m(benchmark):
    """Flower's unmask stage, server alone: n=50, m=1M, complete graph, 5 dropped after sharing keys."""
    sessions = []

    def setup():
        session = FlowerSecAggPlus(PeerSettings.complete(50, M, threshold=26, drop=0.1))
        session.run_until(Stage.COLLECT_MASKED_VECTORS)
        session.intercept(Stage.UNMASK, deliver=True)
        sessions.append(session)
        return (session,), {}

    benchmark.pedantic(lambda session: session.run_stage(Stage.UNMASK), setup=setup, rounds=1, iterations=1)
    sessions[-1].check()
    assert len(sessions[-1].survivors()) == 45
    benchmark.extra_info.update(sessions[-1].summary(),
                                note="unmask replies recorded beforehand: the stage's client time is not in it")
    record(benchmark, "peer_flower_server_unmask_n50_1m")


def _scaling_settings(graph: str, n: int, m: int, drop: float) -> PeerSettings:
    """Our scaling suite's settings: complete with threshold n//2+1, or SecAgg+ from find_parameters."""
    if graph == "complete":
        return PeerSettings.complete(n, m, n // 2 + 1, drop)
    params = secagg.find_parameters(n, corrupt_fraction=0.05, dropout_fraction=0.1)
    if params.complete:
        return PeerSettings.complete(n, m, params.threshold, drop)
    return PeerSettings.ring(n, m, params.degree, params.threshold, drop)


CASES = [
    (graph, n, m, drop)
    for graph, sizes in (("complete", (10, 50, 100)), ("secagg+", (50, 100)))
    for n in sizes
    for m in (100_000, 1_000_000)
    for drop in (0.0, 0.1)
    if not (graph == "complete" and n == 100 and m == 1_000_000)  # ~8 min per run on 2 cores: run by hand
]


@pytest.mark.slow
@pytest.mark.parametrize("graph,n,m,drop", CASES,
                         ids=[f"{g}-n{n}-m{m}-drop{int(d * 100)}" for g, n, m, d in CASES])
def test_peer_scaling(benchmark, graph, n, m, drop):
    """A whole Flower SecAgg+ round (all nodes' and the server's work), checked against the plain sum."""
    sessions = []

    def setup():
        sessions.append(FlowerSecAggPlus(_scaling_settings(graph, n, m, drop)))
        return (sessions[-1],), {}

    benchmark.pedantic(lambda session: session.run(), setup=setup, rounds=1, iterations=1)
    sessions[-1].check()
    benchmark.extra_info.update(sessions[-1].summary(), graph=f"flower-{graph}", n=n, m=m, dropout=drop)
    record(benchmark, f"peer_flower_scaling_{graph}_n{n}_m{m}_drop{int(drop * 100)}")
