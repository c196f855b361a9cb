"""The pieces the masking and HE paths share: message envelopes and freezing, config checks, key pairs."""

import dataclasses

import pytest

from secagg import InvalidInputError, SessionConfig
from secagg.crypto import SigningKeyPair, X25519KeyPair
from secagg.he import messages as he
from secagg.he.config import HESessionConfig
from secagg.he.params import find_he_parameters
from secagg.messagebase import FromParty, FrozenMap, ToParty
from secagg.messages import KeyDirectory, MaskedInput, ShareKeys, UnmaskRequest, UnmaskResponse

SESSION = bytes(32)


@pytest.mark.parametrize("cls", [ShareKeys, MaskedInput, UnmaskResponse, he.HEAdvertise, he.HEEncryptedInput,
                                 he.HEDecryptedSum])
def test_party_messages_carry_session_then_sender(cls):
    assert issubclass(cls, FromParty)
    assert [f.name for f in dataclasses.fields(cls)][:2] == ["session", "sender"]


@pytest.mark.parametrize("cls", [KeyDirectory, UnmaskRequest, he.HEKeyDirectory, he.HEContextDelivery,
                                 he.HEDecryptRequest])
def test_server_messages_carry_session_then_recipient(cls):
    assert issubclass(cls, ToParty)
    assert [f.name for f in dataclasses.fields(cls)][:2] == ["session", "recipient"]


def test_container_fields_are_frozen_on_construction_in_both_paths():
    request = UnmaskRequest(SESSION, 1, [3, 2], {5}, {2: b"sig"})
    assert request.survivors == frozenset({2, 3}) and isinstance(request.survivors, frozenset)
    assert isinstance(request.dropped, frozenset)
    assert isinstance(request.signatures, FrozenMap) and list(request.signatures) == [2]
    chunk = bytearray(b"ciphertext")
    upload = he.HEEncryptedInput(SESSION, 1, bytes(32), [chunk, memoryview(b"more")])
    chunk[0] ^= 1  # the caller's buffer changes; the message does not
    assert upload.chunks == (b"ciphertext", b"more") and all(type(c) is bytes for c in upload.chunks)
    request = he.HEDecryptRequest(SESSION, 1, bytes(32), {4, 2}, [bytearray(b"s")], {4: he.HEContribution()})
    assert isinstance(request.survivors, frozenset) and request.summed == (b"s",)
    assert isinstance(request.contributions, FrozenMap)
    hash(request)  # immutable all the way down, so hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.survivors = frozenset()


def test_empty_defaults_are_shared_immutable_maps():
    assert KeyDirectory(SESSION, 1).keys == {} and isinstance(KeyDirectory(SESSION, 1).keys, FrozenMap)


def _he_config(**changes):
    fields = dict(session_id=SESSION, participants=(3, 1, 2), threshold=2, vector_length=4, key_holder=1,
                  params=find_he_parameters(vector_length=4, max_summands=3))
    return HESessionConfig(**{**fields, **changes})


def _config(**changes):
    return SessionConfig(**{**dict(session_id=SESSION, participants=(3, 1, 2), threshold=2, vector_length=4),
                            **changes})


@pytest.mark.parametrize("make, party", [(_config, "client"), (_he_config, "site")])
def test_both_configs_check_participants_alike(make, party):
    assert make().participants == (1, 2, 3)
    for participants, match in (((1, 1, 2), f"duplicate {party} ids"), ((1, True), f"{party} ids must be ints"),
                                ((1, 2**32 - 1), f"{party} ids must be in"), ((1,), f"at least 2 {party}s")):
        with pytest.raises(InvalidInputError, match=match):
            make(participants=participants)
    with pytest.raises(InvalidInputError, match="session_id must be 32 bytes"):
        make(session_id=b"short")
    with pytest.raises(InvalidInputError, match="verify key for every participant"):
        make(active=True, verify_keys={1: bytes(32)})
    with pytest.raises(InvalidInputError, match="32-byte Ed25519"):
        make(verify_keys={1: bytes(31)})


@pytest.mark.parametrize("make", [_config, _he_config])
def test_every_shared_field_enters_the_fingerprint(make):
    base = make().fingerprint
    for changes in (dict(session_id=bytes([1]) * 32), dict(participants=(1, 2, 4)), dict(vector_length=5),
                    dict(verify_keys={1: bytes(32)})):
        assert make(**changes).fingerprint != base, changes


@pytest.mark.parametrize("cls, public", [(X25519KeyPair, "public_key"), (SigningKeyPair, "verify_key")])
def test_key_pairs_are_fresh_and_show_only_their_public_key(cls, public):
    a, b = cls.generate(), cls.generate()
    secret = dataclasses.fields(cls)[0].name
    assert getattr(a, secret) != getattr(b, secret)
    assert getattr(a, secret).hex()[:16] not in repr(a)
    assert repr(a) == f"{cls.__name__}({public}={getattr(a, public).hex()[:16]}...)"
