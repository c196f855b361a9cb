"""Known-answer tests: the exact bytes of both wire formats, the key schedule, the PRG and Shamir.

The vectors are data files in ``tests/vectors/`` (pyca style), written once by
``tests/vectors/make_vectors.py``. Round-trip tests only prove that encode and decode
agree with each other; these prove that neither moved: a refactor that changes one
byte of a message, an HKDF label, the counter of the mask stream or the share
polynomial fails here. Where a value can be recomputed from its published definition
(HKDF-SHA256 from ``cryptography``, AES-256-CTR, X25519 of RFC 7748, polynomial
evaluation), the test also recomputes it independently of the code under test.
"""

from __future__ import annotations

import itertools
import json
from itertools import combinations
from pathlib import Path

import nacl.bindings
import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg import keyschedule, prg, shamir, wire
from secagg.config import SessionConfig
from secagg.errors import MalformedMessageError
from secagg.he import wire as he_wire

from .vector_codec import from_json

VECTORS = Path(__file__).parent / "vectors"
WIRE = json.loads((VECTORS / "wire.json").read_text())
KEYS = json.loads((VECTORS / "keyschedule.json").read_text())
PRG = json.loads((VECTORS / "prg.json").read_text())
SHAMIR = json.loads((VECTORS / "shamir.json").read_text())

CODECS = {"masking": wire, "he": he_wire}
CASES = [(path, case) for path in CODECS for case in WIRE[path]["messages"]]


def test_vectors_cover_every_message_type_of_both_paths():
    import secagg.he.messages as he_messages
    import secagg.messages as messages

    covered = {case["message"]["type"] for _, case in CASES}
    sent = {"AdvertiseKeys", "KeyDirectory", "ShareKeys", "MaskedInputRequest", "MaskedInput", "ConsistencyRequest",
            "ConsistencySignature", "UnmaskRequest", "UnmaskResponse", "HEAdvertise", "HEKeyDirectory",
            "HEContextBundle", "HEContextDelivery", "HEEncryptedInput", "HEDecryptRequest", "HEDecryptedSum"}
    assert covered == sent
    # Every class named in the typing unions of both message modules is a sent message type.
    unions = set()
    for union in (messages.Message, he_messages.HEMessage):
        unions |= {t.__name__ for t in union.__args__}
    assert unions == sent


@pytest.mark.parametrize("path, case", CASES, ids=[f"{p}:{c['name']}" for p, c in CASES])
def test_wire_bytes_are_pinned(path, case):
    codec = CODECS[path]
    message = from_json(case["message"])
    data = bytes.fromhex(case["hex"])
    assert codec.encode(message) == data
    assert codec.decode(data) == message
    assert data[2] == WIRE[path]["version"]  # the version byte follows the 2-byte magic


@pytest.mark.parametrize("path, case", CASES[:3] + CASES[-3:], ids=lambda v: v if isinstance(v, str) else v["name"])
def test_a_pinned_message_with_any_trailing_or_missing_byte_is_refused(path, case):
    codec, data = CODECS[path], bytes.fromhex(case["hex"])
    for bad in (data + b"\x00", data[:-1]):
        with pytest.raises(MalformedMessageError):
            codec.decode(bad)


def _hkdf(ikm: bytes, label: str, context: bytes) -> bytes:
    """HKDF-SHA256 as documented in secagg.crypto.derive_key, computed with cryptography directly."""
    info = b"secagg/v1/" + label.encode() + b"\x00" + context
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes.fromhex(KEYS["hkdf"]["salt"]), info=info).derive(ikm)


def test_key_schedule_outputs_are_pinned_and_follow_their_definition():
    fp = bytes.fromhex(KEYS["fingerprint"])
    sk, pk = bytes.fromhex(KEYS["x25519_private"]), bytes.fromhex(KEYS["x25519_peer_public"])
    seed = bytes.fromhex(KEYS["self_mask_seed"])
    u, v = KEYS["u"], KEYS["v"]
    pair = u.to_bytes(4, "big") + v.to_bytes(4, "big")
    shared = nacl.bindings.crypto_scalarmult(sk, pk)
    # RFC 7748 Section 6.1: the shared secret of Alice's private key and Bob's public key.
    assert shared.hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

    pairwise = keyschedule.pairwise_mask_key(fp, sk, pk, u, v)
    assert pairwise.hex() == KEYS["pairwise_mask_key"] == _hkdf(shared, "pairwise-mask", fp + pair).hex()
    assert keyschedule.pairwise_mask_key(fp, sk, pk, v, u) == pairwise  # symmetric in (u, v)
    encryption = keyschedule.share_encryption_key(fp, sk, pk, u, v)
    assert encryption.hex() == KEYS["share_encryption_key"] == _hkdf(shared, "share-encryption", fp + pair).hex()
    self_mask = keyschedule.self_mask_key(fp, seed, u)
    assert self_mask.hex() == KEYS["self_mask_key"] == _hkdf(seed, "self-mask", fp + u.to_bytes(4, "big")).hex()


def test_signed_payloads_are_pinned():
    fp = bytes.fromhex(KEYS["fingerprint"])
    a, b = bytes([0x11]) * 32, bytes([0x22]) * 32
    share = shamir.PRIME - 2
    assert keyschedule.share_associated_data(fp, 3, 7).hex() == KEYS["share_associated_data"]
    assert keyschedule.advertise_payload(fp, 3, a, b).hex() == KEYS["advertise_payload"]
    assert keyschedule.consistency_payload(fp, {7, 1, 3}).hex() == KEYS["consistency_payload"]
    assert keyschedule.masked_input_payload(fp, 3, 32, b"\x00" * 8).hex() == KEYS["masked_input_payload"]
    assert (keyschedule.unmask_response_payload(fp, 3, {1: 5, 2: share}, {4: 9}).hex()
            == KEYS["unmask_response_payload"])
    # Every signed payload starts with its own label, so no signature can stand for another round's.
    prefixes = {name: bytes.fromhex(KEYS[name]).split(fp)[0] for name in
                ("advertise_payload", "consistency_payload", "masked_input_payload", "unmask_response_payload")}
    assert len(set(prefixes.values())) == 4
    assert not any(p1.startswith(p2) for p1, p2 in itertools.permutations(prefixes.values(), 2))


def test_session_fingerprint_and_harary_graph_are_pinned():
    pinned = KEYS["session_config"]
    config = SessionConfig(session_id=bytes.fromhex(pinned["session_id"]), participants=tuple(pinned["participants"]),
                           threshold=pinned["threshold"], vector_length=pinned["vector_length"],
                           bit_width=pinned["bit_width"], degree=pinned["degree"])
    assert config.fingerprint.hex() == pinned["fingerprint"]
    assert {str(u): sorted(v) for u, v in config.neighbors.items()} == pinned["neighbors"]


def test_prg_stream_is_pinned_and_is_aes_256_ctr_from_counter_zero():
    key = bytes.fromhex(PRG["key"])
    reference = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(64))
    assert reference.hex() == PRG["keystream_64_bytes"]
    assert prg.keystream_words(key, 64, np.uint8).tobytes() == reference
    assert prg.keystream_words(key, 8, np.uint32).tolist() == PRG["uint32_words"] == \
        np.frombuffer(reference[:32], dtype="<u4").tolist()
    assert prg.keystream_words(key, 4, np.uint64).tolist() == PRG["uint64_words"] == \
        np.frombuffer(reference[:32], dtype="<u8").tolist()
    assert prg.uniform_floats(key, 4).tolist() == PRG["uniform_floats"] == \
        [(w >> 11) / 2**53 for w in PRG["uint64_words"]]
    assert prg.DeterministicStream(key).shuffle(list(range(10))) == PRG["deterministic_stream_shuffle_10"]


def test_shamir_shares_are_pinned(monkeypatch):
    prime = int(SHAMIR["prime"])
    assert prime == shamir.PRIME == 2**256 + 297
    secret, threshold = bytes.fromhex(SHAMIR["secret"]), SHAMIR["threshold"]
    coefficients = [int(c) for c in SHAMIR["coefficients"]]
    poly = [int.from_bytes(secret, "big"), *coefficients]
    draws = iter(coefficients)
    monkeypatch.setattr(shamir.secrets, "randbelow", lambda bound: next(draws))  # fix the random coefficients
    xs = [row["x"] for row in SHAMIR["shares"]]
    shares = shamir.split(secret, threshold, xs)
    for row in SHAMIR["shares"]:
        assert row["x"] == shamir.x_coordinate(row["client_id"])
        y = sum(c * pow(row["x"], k, prime) for k, c in enumerate(poly)) % prime
        assert shares[row["x"]] == y == int(row["y"])
        assert y.to_bytes(shamir.SHARE_BYTES, "big").hex() == row["wire"]
    for subset in combinations(xs, threshold):
        assert shamir.reconstruct({x: shares[x] for x in subset}, threshold) == secret
