"""Streaming (chunked) masking and unmasking equal the whole-vector computation bit for bit.

The chunk size is forced to a few bytes (``secagg.prg.CHUNK_BYTES`` or ``chunk_bytes=``), so
vectors of a length that is no multiple of it run through many chunks, most starting in the
middle of an AES block, and the last one short. Three levels:

* the PRG: ``apply_masks`` against ``base + sum +-keystream_words(key, m)``, and
  ``keystream_into(..., offset=a)`` against the slice ``[a, b)`` of the whole stream;
* one client: the same session state (a deep copy taken before the masked-input round)
  answers the same request with tiny chunks and with one whole-vector chunk: same bytes;
* whole sessions with tiny chunks, 32 and 64 bits, dropouts at each stage, passive and
  active: the server's ring sum is exactly the survivors' inputs.

And the memory the streaming is for, counted with tracemalloc (every numpy buffer and bytes
object allocated): a client holds its input copy, its message and a few chunks; the server
one running sum, a few chunks and nothing per survivor (the messages it reads are views).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secagg
from secagg import ANSWER_STAGE, STAGES, wire
from secagg.crypto import SigningKeyPair
from secagg.exchange import run_exchange
from secagg.prg import apply_masks, keystream_into, keystream_words

KEYS = st.binary(min_size=32, max_size=32)
TINY = (1, 4, 8, 12, 20, 24, 40)  # bytes: 1 word per chunk, and chunks that straddle AES blocks


def _dtype(bits):
    return np.dtype(np.uint32) if bits == 32 else np.dtype(np.uint64)


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from((32, 64)), m=st.integers(1, 257), chunk=st.sampled_from(TINY),
       masks=st.lists(st.tuples(KEYS, st.booleans()), max_size=4), seed=st.integers(0, 2**32 - 1))
def test_apply_masks_in_chunks_equals_the_whole_vector_sum(bits, m, chunk, masks, seed):
    dtype = _dtype(bits)
    base = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, size=m, dtype=dtype, endpoint=True)
    expected = base.copy()
    for key, subtract in masks:
        stream = keystream_words(key, m, dtype)
        expected = expected - stream if subtract else expected + stream
    original = base.copy()
    out = np.empty_like(base)
    np.testing.assert_array_equal(apply_masks(out, masks, base=base, chunk_bytes=chunk), expected)
    np.testing.assert_array_equal(base, original)  # base is read, not written
    in_place = base.copy()
    np.testing.assert_array_equal(apply_masks(in_place, masks, chunk_bytes=chunk), expected)
    np.testing.assert_array_equal(apply_masks(base.copy(), masks), expected)  # default chunk size


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from((8, 32, 64)), key=KEYS, bounds=st.tuples(st.integers(0, 300), st.integers(0, 300)))
def test_keystream_at_an_offset_is_that_slice_of_the_whole_stream(bits, key, bounds):
    a, b = sorted(bounds)
    dtype = np.dtype(np.uint8) if bits == 8 else _dtype(bits)
    whole = keystream_words(key, 300, dtype)
    np.testing.assert_array_equal(keystream_into(key, np.empty(b - a, dtype=dtype), offset=a), whole[a:b])


def test_offsets_and_shapes_are_checked():
    with pytest.raises(secagg.InvalidInputError, match="offset"):
        keystream_into(bytes(32), np.empty(4, dtype=np.uint32), offset=-1)
    with pytest.raises(secagg.InvalidInputError, match="differ"):
        apply_masks(np.empty(4, dtype=np.uint32), [], base=np.empty(4, dtype=np.uint64))


def _config(bits, n, m, *, active=False):
    identities = {i: SigningKeyPair.generate() for i in range(1, n + 1)} if active else {}
    config = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=tuple(range(1, n + 1)),
                                  threshold=n // 2 + 1, vector_length=m, bit_width=bits, active=active,
                                  verify_keys={i: k.verify_key for i, k in identities.items()})
    return config, identities


def _rings(config, seed):
    dtype = _dtype(config.bit_width)
    rng = np.random.default_rng(seed)
    return {i: rng.integers(0, np.iinfo(dtype).max, size=config.vector_length, dtype=dtype, endpoint=True)
            for i in config.participants}


@pytest.mark.parametrize("bits", [32, 64])
def test_a_client_masks_the_same_bytes_in_tiny_chunks_and_in_one_chunk(bits, monkeypatch):
    config, _ = _config(bits, 4, 1001)
    rings = _rings(config, bits)
    clients = {i: secagg.ClientSession(config, i, masked_input=rings[i]) for i in config.participants}
    server = secagg.ServerSession(config)
    for client in clients.values():
        server.receive(wire.encode(client.advertise()))
    for i, message in server.advance().items():
        server.receive(wire.encode(clients[i].handle(wire.encode(message))))
    for i, request in server.advance().items():
        twin = copy.deepcopy(clients[i])
        monkeypatch.setattr(secagg.prg, "CHUNK_BYTES", 12)
        chunked = clients[i].handle(wire.encode(request))
        monkeypatch.setattr(secagg.prg, "CHUNK_BYTES", 1 << 40)  # one chunk: the whole-vector stream
        whole = twin.handle(wire.encode(request))
        assert bytes(chunked.data) == bytes(whole.data)
        assert wire.encode(chunked) == wire.encode(whole)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("stage", STAGES)
def test_sessions_with_tiny_chunks_sum_exactly_with_dropouts_at_each_stage(bits, stage, monkeypatch):
    monkeypatch.setattr(secagg.prg, "CHUNK_BYTES", 12)  # 3 or 1.5 words: chunks straddle words and AES blocks
    active = stage == "consistency"  # the consistency round exists only in active mode
    config, identities = _config(bits, 6, 1001, active=active)
    rings = _rings(config, len(stage) + bits)
    clients = {i: secagg.ClientSession(config, i, masked_input=rings[i],
                                       signing_key=identities[i].seed if active else None)
               for i in config.participants}
    server = secagg.ServerSession(config)
    run_exchange(server.receive, server.advance, clients, stages=STAGES, answer_stage=ANSWER_STAGE,
                 encode=wire.encode, silent_from={2: stage, 5: stage}, refusals="raise")
    survivors = server.result.survivors
    # Clients silent before uploading are out of the sum; later dropouts stay in it.
    assert survivors == (set(config.participants) - {2, 5} if STAGES.index(stage) <= STAGES.index("mask")
                         else set(config.participants))
    expected = np.zeros(config.vector_length, dtype=_dtype(bits))
    for i in survivors:
        expected += rings[i]
    np.testing.assert_array_equal(server.result.ring_sum, expected)


# -- memory: what the docstrings of secagg.client / secagg.server say is held -------------------
# tracemalloc sees numpy's data buffers and bytes/bytearray objects, so the traced peak counts
# every full-length buffer a party allocates. A vector here is 400,000 bytes; a chunk 16 KiB.

M_MEM, CHUNK_MEM = 100_000, 1 << 14


def _ready(monkeypatch, n=6):
    import secagg.prg

    monkeypatch.setattr(secagg.prg, "CHUNK_BYTES", CHUNK_MEM)
    secagg.prg.keystream_words(bytes(32), 4 * CHUNK_MEM, np.uint8)  # the shared zero buffer exists already
    config, _ = _config(32, n, M_MEM)
    rings = _rings(config, 7)
    clients = {i: secagg.ClientSession(config, i) for i in config.participants}
    server = secagg.ServerSession(config)
    for client in clients.values():
        server.receive(wire.encode(client.advertise()))
    for i, message in server.advance().items():
        server.receive(wire.encode(clients[i].handle(wire.encode(message))))
    requests = {i: wire.encode(message) for i, message in server.advance().items()}
    return config, rings, clients, server, requests


def _traced_peak(work) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_client_holds_its_input_and_its_message_and_a_few_chunks(monkeypatch):
    config, rings, clients, _, requests = _ready(monkeypatch)
    vector = M_MEM * 4
    out = {}

    def mask():
        clients[1].provide_input(rings[1])  # the client's own copy of its update
        out["reply"] = clients[1].handle(requests[1])

    peak = _traced_peak(mask)
    assert 2 * vector <= peak < 2 * vector + 4 * CHUNK_MEM + 64 * 1024, peak
    assert bytes(out["reply"].data) != rings[1].tobytes()


def test_the_server_holds_one_running_sum_and_one_message_and_a_few_chunks(monkeypatch):
    config, rings, clients, server, requests = _ready(monkeypatch)
    uploads = []
    for i, request in requests.items():
        clients[i].provide_input(rings[i])
        uploads.append(wire.encode(clients[i].handle(request)))
    vector = M_MEM * 4

    def aggregate():
        for data in uploads:  # the messages exist before: the server must not copy or keep them
            server.receive(data)
        for i, message in server.advance().items():
            server.receive(wire.encode(clients[i].handle(wire.encode(message))))
        server.advance()

    peak = _traced_peak(aggregate)
    assert vector <= peak < vector + 4 * CHUNK_MEM + 64 * 1024, peak
    expected = np.zeros(M_MEM, dtype=np.uint32)
    for i in config.participants:
        expected += rings[i]
    np.testing.assert_array_equal(server.result.ring_sum, expected)
