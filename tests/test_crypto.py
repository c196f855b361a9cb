"""The hazmat layer: RFC 7748 vectors, AEAD binding, key separation, signatures, PRG."""

import json
from pathlib import Path

import numpy as np
import pytest

from secagg import crypto, prg
from secagg.errors import InvalidInputError, VerificationError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc7748_x25519.json").read_text())


@pytest.mark.parametrize("case", VECTORS["scalarmult"], ids=lambda c: c["scalar"][:8])
def test_x25519_rfc7748_scalarmult(case):
    out = crypto.x25519_shared_secret(bytes.fromhex(case["scalar"]), bytes.fromhex(case["u"]))
    assert out.hex() == case["output"]


def test_x25519_rfc7748_diffie_hellman():
    dh = VECTORS["diffie_hellman"]
    a, b = bytes.fromhex(dh["alice_private"]), bytes.fromhex(dh["bob_private"])
    assert crypto.x25519_public_key(a).hex() == dh["alice_public"]
    assert crypto.x25519_public_key(b).hex() == dh["bob_public"]
    assert crypto.x25519_shared_secret(a, bytes.fromhex(dh["bob_public"])).hex() == dh["shared"]
    assert crypto.x25519_shared_secret(b, bytes.fromhex(dh["alice_public"])).hex() == dh["shared"]


def test_x25519_rejects_low_order_point():
    with pytest.raises(VerificationError):
        crypto.x25519_shared_secret(crypto.random_bytes(), bytes(32))


def test_generated_keypairs_are_fresh_and_consistent():
    a, b = crypto.X25519KeyPair.generate(), crypto.X25519KeyPair.generate()
    assert a.secret_key != b.secret_key
    assert crypto.x25519_public_key(a.secret_key) == a.public_key
    assert a.secret_key.hex() not in repr(a)
    assert crypto.x25519_shared_secret(a.secret_key, b.public_key) == crypto.x25519_shared_secret(
        b.secret_key, a.public_key
    )


def test_aead_roundtrip_and_binding():
    key = crypto.random_bytes()
    ct = crypto.aead_encrypt(key, b"shares", b"ad-1")
    assert crypto.aead_decrypt(key, ct, b"ad-1") == b"shares"
    with pytest.raises(VerificationError):
        crypto.aead_decrypt(key, ct, b"ad-2")  # other session/round/sender/recipient
    with pytest.raises(VerificationError):
        crypto.aead_decrypt(crypto.random_bytes(), ct, b"ad-1")
    for i in (0, 30, len(ct) - 1):
        flipped = bytearray(ct)
        flipped[i] ^= 1
        with pytest.raises(VerificationError):
            crypto.aead_decrypt(key, bytes(flipped), b"ad-1")
    with pytest.raises(VerificationError):
        crypto.aead_decrypt(key, ct[:10], b"ad-1")
    assert crypto.aead_encrypt(key, b"shares", b"ad-1") != ct  # random nonces


def test_derive_key_separates_labels_and_contexts():
    ikm = crypto.random_bytes()
    keys = {
        crypto.derive_key(ikm, "pairwise-mask", b"session-a"),
        crypto.derive_key(ikm, "pairwise-mask", b"session-b"),
        crypto.derive_key(ikm, "self-mask", b"session-a"),
    }
    assert len(keys) == 3
    assert crypto.derive_key(ikm, "self-mask", b"x") == crypto.derive_key(ikm, "self-mask", b"x")
    with pytest.raises(InvalidInputError):
        crypto.derive_key(ikm, "", b"x")


def test_ed25519_sign_verify_and_forgery():
    pair = crypto.SigningKeyPair.generate()
    sig = crypto.sign(pair.seed, b"message")
    crypto.verify_signature(pair.verify_key, b"message", sig)
    with pytest.raises(VerificationError):
        crypto.verify_signature(pair.verify_key, b"messagE", sig)
    with pytest.raises(VerificationError):
        crypto.verify_signature(crypto.SigningKeyPair.generate().verify_key, b"message", sig)
    with pytest.raises(VerificationError):
        crypto.verify_signature(pair.verify_key, b"message", sig[:-1])


def test_constant_time_equal():
    assert crypto.constant_time_equal(b"abc", b"abc")
    assert not crypto.constant_time_equal(b"abc", b"abd")


def test_prg_is_aes_ctr_keystream():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = crypto.random_bytes()
    words = prg.keystream_words(key, 1000, np.uint32)
    reference = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(4000))
    assert words.tobytes() == reference
    assert np.array_equal(prg.keystream_words(key, 1000, np.uint32), words)
    assert not np.array_equal(prg.keystream_words(crypto.random_bytes(), 1000, np.uint32), words)
    wide = prg.keystream_words(key, 500, np.uint64)
    assert wide.tobytes() == reference


def test_prg_add_and_subtract_cancel():
    key = crypto.random_bytes()
    acc = np.arange(1000, dtype=np.uint32)
    scratch = np.empty_like(acc)
    prg.add_keystream(acc, key, scratch)
    assert not np.array_equal(acc, np.arange(1000, dtype=np.uint32))
    prg.add_keystream(acc, key, scratch, subtract=True)
    assert np.array_equal(acc, np.arange(1000, dtype=np.uint32))


def test_prg_rejects_bad_keys_and_buffers():
    with pytest.raises(InvalidInputError):
        prg.keystream_words(b"short", 10)
    with pytest.raises(InvalidInputError):
        prg.keystream_into(crypto.random_bytes(), np.empty(10, dtype=np.float64))


def test_deterministic_stream_randbelow_is_uniform():
    from scipy.stats import chisquare

    stream = prg.DeterministicStream(bytes(32))
    draws = np.array([stream.randbelow(7) for _ in range(14_000)])
    assert draws.min() == 0 and draws.max() == 6
    assert chisquare(np.bincount(draws, minlength=7)).pvalue > 1e-6
    assert prg.DeterministicStream(bytes(32)).shuffle(list(range(50))) == prg.DeterministicStream(
        bytes(32)
    ).shuffle(list(range(50)))
