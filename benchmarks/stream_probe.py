"""One large-m measurement in a fresh process (run by benchmarks/test_bench_stream.py).

``python benchmarks/stream_probe.py {client|server} M N BITS`` prints one JSON line.
It uses only the public API (sessions and wire bytes), so the same file measures any
checkout: ``PYTHONPATH=/path/to/checkout python benchmarks/stream_probe.py ...``.

* ``client``: rounds 0-1 for N clients on the complete graph (no inputs yet), then the
  process's baseline RSS is read, the peak-RSS mark is reset (``/proc/self/clear_refs``),
  client 0 gets a fresh uint-BITS update of M words (the caller drops its own reference,
  as a transport would) and answers the masked-input request; the answer is encoded to
  wire bytes; that peak RSS above the baseline is reported. Timing: three clients mask in
  turn, each followed by the AES-CTR floor (the seconds ``cryptography`` alone takes to
  produce the same keystream bytes, N masks of M words: the self mask and N-1 pairwise
  masks, in 4 MiB pieces, in this process); reported are the medians and the median of
  the three paired ratios.
* ``server``: the N clients' masked inputs are made first and written to files (one
  client at a time; client N-1 drops out before masking, so unmasking removes both
  self masks and a dropped client's pairwise masks); then the baseline is read and the
  mark reset, and the server reads each file, receives it, closes the round, takes the
  unmasking answers and unmasks. Reported: unmasking seconds (the last ``advance``),
  receive seconds, peak RSS above the baseline.

Peak RSS is ``VmHWM`` after the reset minus ``VmRSS`` at the baseline, in MiB and as a
multiple of one vector (M * BITS / 8 bytes).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg import ClientSession, ServerSession, SessionConfig, new_session_id, wire

MIB = 1 << 20


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _setup(m: int, n: int, bits: int):
    config = SessionConfig(session_id=new_session_id(), participants=tuple(range(n)), threshold=n // 2 + 1,
                           vector_length=m, bit_width=bits)
    clients = {i: ClientSession(config, i) for i in range(n)}
    server = ServerSession(config)
    for i in range(n):
        server.receive(wire.encode(clients[i].advertise()))
    for i, message in server.advance().items():
        server.receive(wire.encode(clients[i].handle(wire.encode(message))))
    requests = {i: wire.encode(message) for i, message in server.advance().items()}
    return config, clients, server, requests


def _update(m: int, bits: int, seed: int) -> np.ndarray:
    # Benchmark data, not a secret: any values do.
    dtype = np.uint32 if bits == 32 else np.uint64
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, size=m, dtype=dtype, endpoint=True)


def floor_seconds(total_bytes: int) -> float:
    """AES-256-CTR keystream of ``total_bytes`` with cryptography alone (4 MiB pieces, one key per mask)."""
    piece = 4 * MIB
    zeros, out = bytes(piece), bytearray(piece)
    start = time.perf_counter()
    done = 0
    while done < total_bytes:
        encryptor = Cipher(algorithms.AES(bytes(32)), modes.CTR(bytes(16))).encryptor()
        size = min(piece, total_bytes - done)
        encryptor.update_into(memoryview(zeros)[:size], out)
        done += size
    return time.perf_counter() - start


def client(m: int, n: int, bits: int, pairs: int = 3) -> dict:
    config, clients, _server, requests = _setup(m, n, bits)
    mask_s, floor_s, peak = [], [], None
    for i in range(pairs):  # masking and floor interleaved (A, B, A, B, ...): load hits both alike
        baseline = _status("VmRSS")
        _reset_peak()
        update = _update(m, bits, i)
        clients[i].provide_input(update)
        del update
        start = time.perf_counter()
        reply = clients[i].handle(requests[i])
        mask_s.append(time.perf_counter() - start)
        data = wire.encode(reply)
        del reply
        if peak is None:  # the first client's peak; the later ones only time
            peak = _status("VmHWM") - baseline
        assert len(data) > m * bits // 8
        del data
        floor_s.append(floor_seconds(n * m * bits // 8))
    ratios = sorted(a / b for a, b in zip(mask_s, floor_s))
    return {"mask_s": sorted(mask_s)[pairs // 2], "floor_s": sorted(floor_s)[pairs // 2],
            "ratio": ratios[pairs // 2], "ratios": ratios, "peak_bytes": peak}


def server(m: int, n: int, bits: int) -> dict:
    config, clients, server, requests = _setup(m, n, bits)
    dropped = n - 1
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(n):
            if i == dropped:
                continue
            clients[i].provide_input(_update(m, bits, i))
            path = Path(tmp) / f"masked-{i}"
            path.write_bytes(wire.encode(clients[i].handle(requests[i])))
            files.append(path)
        baseline = _status("VmRSS")
        _reset_peak()
        start = time.perf_counter()
        for path in files:
            data = path.read_bytes()
            server.receive(data)
            del data
        receive_s = time.perf_counter() - start
    unmask_requests = server.advance()
    for i, message in unmask_requests.items():
        server.receive(wire.encode(clients[i].handle(wire.encode(message))))
    start = time.perf_counter()
    server.advance()
    unmask_s = time.perf_counter() - start
    peak = _status("VmHWM") - baseline
    expected = np.zeros(m, dtype=np.uint32 if bits == 32 else np.uint64)
    for i in range(n):
        if i != dropped:
            np.add(expected, _update(m, bits, i), out=expected)
    assert np.array_equal(server.result.ring_sum, expected), "wrong sum"
    return {"receive_s": receive_s, "unmask_s": unmask_s, "peak_bytes": peak, "survivors": n - 1, "dropped": 1}


def he(m: int, n: int, bits: int) -> dict:
    """The HE path's three parties at m, one after the other, each with its own baseline and peak.

    Site: fixed-point encoding and encryption of one update (ciphertext bytes kept). Coordinator:
    parse and add n uploads (the same upload n times: the cost of distinct ones) and serialise the
    sum. Key holder: parse and decrypt the sum. ``bits`` is unused (CKKS parameters come from
    :func:`secagg.he.find_he_parameters` for m and n).
    """
    from secagg.he import CKKSContext, find_he_parameters

    params = find_he_parameters(vector_length=m, max_summands=n)
    private = CKKSContext.generate(params)
    public = CKKSContext.from_public_bytes(private.public_bytes, params)
    out = {}

    def measure(name, work):
        baseline = _status("VmRSS")
        _reset_peak()
        start = time.perf_counter()
        value = work()
        out[f"{name}_s"] = time.perf_counter() - start
        out[f"{name}_peak_bytes"] = _status("VmHWM") - baseline
        return value

    def encrypt():
        update = np.random.default_rng(0).uniform(-1, 1, m)
        return private.encrypt(params.encoder.encode(update).ring.view(np.int64))

    upload = measure("site_encrypt", encrypt)
    out["upload_bytes"] = sum(map(len, upload))

    def coordinate():
        total = None
        for _ in range(n):
            total = public.add(total, public.load(upload, m))
        return public.serialize(total)

    summed = measure("coordinator_sum", coordinate)
    measure("key_holder_decrypt",
            lambda: private.decrypt_sum(private.load(summed, m), summands=n, vector_length=m))
    out["peak_bytes"] = max(out[k] for k in out if k.endswith("_peak_bytes"))
    return out


ROLES = {"client": client, "server": server, "he": he}


def main(argv: list[str]) -> None:
    role, m, n, bits = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    result = ROLES[role](m, n, bits)
    vector = m * bits // 8
    result |= {"role": role, "m": m, "n": n, "bits": bits, "peak_mib": result["peak_bytes"] / MIB,
               "peak_vectors": result["peak_bytes"] / vector}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
