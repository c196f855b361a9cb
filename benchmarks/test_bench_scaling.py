"""How client and server cost grow with n (clients) and m (vector length).

Each case drives one full session through the real sessions and wire bytes
and times the clients' work (all of it, reported per client) and the
server's work separately, with 0% or 10% of the clients dropping after
sharing keys (the costly case for the server: their pairwise masks must be
reconstructed and removed). Complete graphs run up to n = 100 (a client's
cost there grows with n); SecAgg+ graphs (degree and threshold from
:func:`secagg.find_parameters`) run up to n = 1000.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import secagg
from secagg import ClientSession, FixedPointEncoder, ServerSession, SessionConfig, new_session_id, wire

from .conftest import record

CASES = [
    (graph, n, m, drop)
    for graph, sizes in (("complete", (10, 50, 100)), ("secagg+", (50, 100, 1000)))
    for n in sizes
    for m in (100_000, 1_000_000)
    for drop in (0.0, 0.1)
    if not (graph == "secagg+" and n == 1000 and m == 1_000_000)  # ~1 min per run on 2 cores: run by hand
]


def _session(graph, n, m):
    encoder = FixedPointEncoder.create(clip=1.0, max_summands=n)
    if graph == "complete":
        degree, threshold = None, n // 2 + 1
    else:
        params = secagg.find_parameters(n, corrupt_fraction=0.05, dropout_fraction=0.1)
        degree = None if params.complete else params.degree
        threshold = params.threshold
    config = SessionConfig(new_session_id(), tuple(range(n)), threshold, m, encoder.bit_width, degree)
    zero = encoder.encode(np.zeros(m)).ring
    return config, {i: ClientSession(config, i, masked_input=zero) for i in range(n)}, ServerSession(config)


def _run(graph, n, m, drop):
    config, clients, server = _session(graph, n, m)
    client_s = server_s = 0.0
    up = down = 0
    dropped = set(range(int(round(drop * n))))

    def to_server(data):
        nonlocal server_s, up
        up += len(data)
        t0 = time.perf_counter()
        server.receive(data)
        server_s += time.perf_counter() - t0

    for c in clients.values():
        t0 = time.perf_counter()
        data = wire.encode(c.advertise())
        client_s += time.perf_counter() - t0
        to_server(data)
    stage = 0
    while True:
        t0 = time.perf_counter()
        outgoing = server.advance()
        encoded = {i: wire.encode(msg) for i, msg in outgoing.items()}
        server_s += time.perf_counter() - t0
        if not outgoing:
            break
        stage += 1
        for i, data in encoded.items():
            down += len(data)
            if stage == 2 and i in dropped:  # silent from the masked-input round on
                continue
            t0 = time.perf_counter()
            reply = wire.encode(clients[i].handle(data))
            client_s += time.perf_counter() - t0
            to_server(reply)
    return {"client_s_per_client": client_s / n, "server_s": server_s, "bytes_up_per_client": up / n,
            "bytes_down_per_client": down / n, "degree": config.effective_degree, "threshold": config.threshold}


@pytest.mark.slow
@pytest.mark.parametrize("graph,n,m,drop", CASES, ids=[f"{g}-n{n}-m{m}-drop{int(d * 100)}" for g, n, m, d in CASES])
def test_scaling(benchmark, graph, n, m, drop):
    result = benchmark.pedantic(_run, args=(graph, n, m, drop), rounds=1, iterations=1)
    benchmark.extra_info.update(result, graph=graph, n=n, m=m, dropout=drop)
    record(benchmark, f"scaling_{graph}_n{n}_m{m}_drop{int(drop * 100)}")
