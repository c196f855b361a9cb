"""HE path against a malicious coordinator, malicious sites and bad input: always a typed refusal."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ts = pytest.importorskip("tenseal")

from secagg.crypto import X25519KeyPair, aead_encrypt, random_bytes, sign  # noqa: E402
from secagg.errors import (InvalidInputError, MalformedMessageError, ProtocolError,  # noqa: E402
                           SessionMismatchError, ThresholdNotMetError, UnexpectedMessageError, UnsafeRequestError,
                           VerificationError)
from secagg.he import (  # noqa: E402
    CKKSContext,
    HEAdvertisedKey,
    HEClientState,
    HEContribution,
    HEDecryptedSum,
    HEEncryptedInput,
    HEParameters,
    HEServerSession,
    HESessionConfig,
    context_id,
    find_he_parameters,
    run_local_he,
    wire,
)
from secagg.he.keyschedule import (  # noqa: E402
    ciphertext_digest,
    input_payload,
    seal_associated_data,
    seal_key,
)

from .test_he_harness import HEDeployment  # noqa: E402
from .wire_properties import mutated as mutated_bytes  # noqa: E402

replace = dataclasses.replace


def _flip(blob: bytes, index: int = -20) -> bytes:
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


# -- the sealed secret context ------------------------------------------------------


@pytest.mark.parametrize("active", [False, True])
def test_tampered_sealed_context_is_refused(active):
    d = HEDeployment(n=3, threshold=2, active=active, length=10)
    deliveries = d.to_upload_round()
    site = d.ids[1]
    with pytest.raises(VerificationError):
        d.sites[site].handle(wire.encode(replace(deliveries[site], sealed=_flip(deliveries[site].sealed))))
    assert d.sites[site].state is HEClientState.ADVERTISED  # nothing changed: the honest delivery still works
    d.sites[site].handle(wire.encode(deliveries[site]))


def test_rerouted_sealed_context_is_refused():
    d = HEDeployment(n=3, threshold=2, length=10)
    deliveries = d.to_upload_round()
    a, b = d.ids[1], d.ids[2]
    with pytest.raises(VerificationError):
        d.sites[b].handle(wire.encode(replace(deliveries[b], sealed=deliveries[a].sealed)))


def test_sealed_context_from_another_session_is_refused():
    first, second = HEDeployment(n=3, threshold=2, length=10), HEDeployment(n=3, threshold=2, length=10)
    old = first.to_upload_round()
    new = second.to_upload_round()
    site = second.ids[1]
    with pytest.raises(SessionMismatchError):
        second.sites[site].handle(wire.encode(old[site]))
    forged = replace(new[site], sealed=old[site].sealed, holder_key=old[site].holder_key)
    with pytest.raises(VerificationError):
        second.sites[site].handle(wire.encode(forged))


def test_sealed_context_next_to_another_public_context_is_refused():
    d = HEDeployment(n=3, threshold=2, length=10)
    other = CKKSContext.generate(find_he_parameters(vector_length=10, max_summands=3, resolution=1e-4))
    deliveries = d.to_upload_round()
    site = d.ids[1]
    with pytest.raises(VerificationError):
        d.sites[site].handle(wire.encode(replace(deliveries[site], public_context=other.public_bytes)))


def test_active_mode_refuses_a_substituted_key_holder_key():
    d = HEDeployment(n=3, threshold=2, active=True, length=10)
    deliveries = d.to_upload_round()
    site = d.ids[1]
    mitm = X25519KeyPair.generate()
    signature = deliveries[site].holder_key.signature
    forged = replace(deliveries[site], holder_key=HEAdvertisedKey(mitm.public_key, signature))
    with pytest.raises(VerificationError):
        d.sites[site].handle(wire.encode(forged))


def test_semi_honest_mode_does_not_stop_a_key_substituting_coordinator():
    """Documented limitation: without signatures a coordinator can swap in its own key and decrypt."""
    d = HEDeployment(n=3, threshold=2, length=10)
    directory = d.advertise()
    deliveries = d.exchange(directory)
    site = d.ids[1]
    victim_pk = directory[d.holder].keys[site].public_key  # what the coordinator saw in round 0
    mitm = X25519KeyPair.generate()
    own = CKKSContext.generate(d.params)
    fp = d.config.fingerprint
    key = seal_key(fp, mitm.secret_key, victim_pk, d.holder, site)
    sealed = aead_encrypt(key, own.secret_bytes(),
                          seal_associated_data(fp, d.holder, site, context_id(fp, own.public_bytes)))
    forged = replace(deliveries[site], holder_key=HEAdvertisedKey(mitm.public_key), sealed=sealed,
                     public_context=own.public_bytes)
    upload = d.sites[site].handle(wire.encode(forged))
    vectors = own.load(upload.chunks, d.config.vector_length)
    stolen = own.decrypt_sum(vectors, summands=1, vector_length=d.config.vector_length)
    np.testing.assert_array_equal(stolen, d.encoded[site].view(np.int64))


def test_key_holder_refuses_a_delivery_with_a_sealed_blob_or_foreign_context():
    d = HEDeployment(n=3, threshold=2, length=10)
    deliveries = d.to_upload_round()
    mine = deliveries[d.holder]
    with pytest.raises(UnsafeRequestError):
        d.sites[d.holder].handle(wire.encode(replace(mine, sealed=deliveries[d.ids[1]].sealed)))
    other = CKKSContext.generate(find_he_parameters(vector_length=10, max_summands=3, resolution=1e-4))
    with pytest.raises(VerificationError):
        d.sites[d.holder].handle(wire.encode(replace(mine, public_context=other.public_bytes)))


# -- the key directory (key holder) -----------------------------------------------------


def test_key_holder_checks_the_directory():
    d = HEDeployment(n=4, threshold=3, active=True, length=10)
    directory = d.advertise()[d.holder]
    holder = d.sites[d.holder]
    keys = dict(directory.keys)
    def swap(site):
        return {**keys, site: HEAdvertisedKey(random_bytes(32), keys[site].signature)}

    with pytest.raises(VerificationError):  # own key replaced
        holder.handle(wire.encode(replace(directory, keys=swap(d.holder))))
    with pytest.raises(UnsafeRequestError):  # unknown id
        holder.handle(wire.encode(replace(directory, keys={**keys, 99: keys[d.ids[1]]})))
    with pytest.raises(ThresholdNotMetError):
        holder.handle(wire.encode(replace(directory, keys={k: keys[k] for k in d.ids[:2]})))
    with pytest.raises(VerificationError):  # forged round-0 signature
        holder.handle(wire.encode(replace(directory, keys=swap(d.ids[1]))))
    holder.handle(wire.encode(directory))  # still in its initial state: the honest directory works


# -- the decryption request (key holder) --------------------------------------------------


@pytest.fixture
def active_request():
    d = HEDeployment(n=4, threshold=3, active=True, length=10)
    request = d.to_decrypt_round()[d.holder]
    return d, request


def _refused(d, message, error):
    with pytest.raises(error):
        d.sites[d.holder].handle(wire.encode(message))
    assert d.sites[d.holder].state is HEClientState.UPLOADED


def test_active_key_holder_refuses_fewer_than_t_signed_contributions(active_request):
    d, request = active_request
    keep = d.ids[:2]
    fewer = replace(request, survivors=frozenset(keep), contributions={i: request.contributions[i] for i in keep})
    _refused(d, fewer, UnsafeRequestError)


def test_active_key_holder_refuses_reattributed_and_forged_contributions(active_request):
    d, request = active_request
    a, b = d.ids[1], d.ids[2]
    contributions = dict(request.contributions)
    _refused(d, replace(request, contributions={**contributions, b: contributions[a]}), VerificationError)
    forged = HEContribution(contributions[b].chunks, random_bytes(64))
    _refused(d, replace(request, contributions={**contributions, b: forged}), VerificationError)
    unsigned = HEContribution(contributions[b].chunks, b"")
    _refused(d, replace(request, contributions={**contributions, b: unsigned}), VerificationError)


def test_active_key_holder_refuses_duplicated_contributions(active_request):
    """A colluding site re-signs another site's ciphertexts as its own: counted once, never twice."""
    d, request = active_request
    a, b = d.ids[1], d.ids[2]
    chunks = request.contributions[a].chunks
    cid = request.context_id
    payload = input_payload(d.config.fingerprint, b, cid, ciphertext_digest(chunks))
    copy = HEContribution(chunks, sign(d.identities[b].seed, payload))
    _refused(d, replace(request, contributions={**request.contributions, b: copy}), VerificationError)


def test_active_key_holder_refuses_a_ready_made_sum_or_mismatched_sets(active_request):
    d, request = active_request
    summed = request.contributions[d.ids[1]].chunks
    _refused(d, replace(request, summed=summed), UnsafeRequestError)
    _refused(d, replace(request, survivors=request.survivors | {d.ids[-1] + 1}), UnsafeRequestError)
    fewer = {i: request.contributions[i] for i in d.ids[:3]}
    _refused(d, replace(request, contributions=fewer), UnsafeRequestError)
    _refused(d, replace(request, context_id=random_bytes(32)), SessionMismatchError)


def test_active_key_holder_refuses_contributions_from_another_session(active_request):
    d, request = active_request
    other = HEDeployment(n=4, threshold=3, active=True, length=10, identities=d.identities)  # another session
    foreign = other.to_decrypt_round()[other.holder]
    b = d.ids[2]
    _refused(d, replace(request, contributions={**request.contributions, b: foreign.contributions[b]}),
             VerificationError)


def test_active_honest_request_still_works_after_refusals(active_request):
    d, request = active_request
    _refused(d, replace(request, survivors=frozenset(d.ids[:2])), UnsafeRequestError)
    d.exchange({d.holder: request})
    np.testing.assert_array_equal(d.server.result.ring_sum.view(np.int64), d.integer_sum(d.ids))


def test_key_holder_refuses_sums_naming_sites_it_never_keyed():
    d = HEDeployment(n=4, threshold=2, length=10)
    directory = d.advertise(silent=[d.ids[3]])
    deliveries = d.exchange(directory)
    request = d.exchange(deliveries, silent=[d.ids[3]])[d.holder]
    _refused(d, replace(request, survivors=request.survivors | {d.ids[3]}), UnsafeRequestError)


def test_semi_honest_key_holder_checks_the_claimed_set():
    d = HEDeployment(n=4, threshold=3, length=10)
    request = d.to_decrypt_round()[d.holder]
    _refused(d, replace(request, survivors=frozenset(d.ids[:2])), UnsafeRequestError)
    _refused(d, replace(request, survivors=request.survivors | {77}), UnsafeRequestError)
    contribution = HEContribution(request.summed, b"")
    _refused(d, replace(request, contributions={d.ids[1]: contribution}), UnsafeRequestError)
    _refused(d, replace(request, summed=request.summed + request.summed), MalformedMessageError)


def test_sum_under_another_key_is_refused_and_ends_the_session():
    d = HEDeployment(n=3, threshold=2, length=10)
    other = HEDeployment(n=3, threshold=2, length=10, params=d.params)
    request = d.to_decrypt_round()[d.holder]
    foreign = other.to_decrypt_round()[other.holder]
    with pytest.raises(VerificationError):
        d.sites[d.holder].handle(wire.encode(replace(request, summed=foreign.summed)))
    # One decryption attempt per session: the refused one ends it.
    assert d.sites[d.holder].state is HEClientState.ABORTED
    with pytest.raises(UnexpectedMessageError):
        d.sites[d.holder].handle(wire.encode(request))


# -- the coordinator's checks -------------------------------------------------------------


@pytest.fixture
def upload_stage():
    d = HEDeployment(n=3, threshold=2, length=5000)  # two ciphertexts per upload
    deliveries = d.to_upload_round()
    uploads = {i: d.sites[i].handle(wire.encode(deliveries[i])) for i in d.ids}
    return d, uploads


def _server_refuses(d, message, error):
    with pytest.raises(error):
        d.server.receive(wire.encode(message))


def test_coordinator_refuses_bad_uploads_and_stays_consistent(upload_stage):
    d, uploads = upload_stage
    a, b = d.ids[1], d.ids[2]
    up = uploads[a]
    _server_refuses(d, replace(up, chunks=up.chunks[:1]), MalformedMessageError)  # wrong count
    _server_refuses(d, replace(up, chunks=(up.chunks[0], up.chunks[1][:-16])), MalformedMessageError)
    _server_refuses(d, replace(up, chunks=(up.chunks[0], b"\x00" * 64)), MalformedMessageError)
    _server_refuses(d, replace(up, chunks=(up.chunks[1], up.chunks[0])), MalformedMessageError)  # wrong sizes
    _server_refuses(d, replace(up, context_id=random_bytes(32)), SessionMismatchError)
    _server_refuses(d, replace(up, signature=random_bytes(64)), VerificationError)  # signed in semi-honest mode
    for i in d.ids:
        d.server.receive(wire.encode(uploads[i]))
    _server_refuses(d, uploads[b], UnexpectedMessageError)  # duplicate
    d.exchange(d.server.advance())
    np.testing.assert_array_equal(d.server.result.ring_sum.view(np.int64), d.integer_sum(d.ids))


def test_coordinator_refuses_ciphertexts_of_other_parameters_scale_or_level(upload_stage):
    d, uploads = upload_stage
    up = uploads[d.ids[1]]
    small = CKKSContext.generate(find_he_parameters(vector_length=10, max_summands=3))  # N = 4096
    foreign = small.encrypt(np.zeros(10, dtype=np.int64))[0]
    _server_refuses(d, replace(up, chunks=(foreign, up.chunks[1])), MalformedMessageError)
    holder_ctx = d.sites[d.holder].context.tenseal_context
    wrong_scale = ts.ckks_vector(holder_ctx, [0.0] * 4096, scale=2.0**20).serialize()
    _server_refuses(d, replace(up, chunks=(wrong_scale, up.chunks[1])), MalformedMessageError)


def test_coordinator_refuses_uploads_from_sites_that_got_no_context():
    d = HEDeployment(n=4, threshold=2, length=10)
    directory = d.advertise(silent=[d.ids[3]])
    deliveries = d.exchange(directory)
    uploads = {i: d.sites[i].handle(wire.encode(deliveries[i])) for i in d.ids[:3]}
    late = replace(uploads[d.ids[2]], sender=d.ids[3])
    _server_refuses(d, late, UnexpectedMessageError)


def test_active_coordinator_refuses_unsigned_uploads():
    d = HEDeployment(n=3, threshold=2, active=True, length=10)
    deliveries = d.to_upload_round()
    site = d.ids[1]
    upload = d.sites[site].handle(wire.encode(deliveries[site]))
    _server_refuses(d, replace(upload, signature=b""), VerificationError)
    _server_refuses(d, replace(upload, sender=d.ids[2]), VerificationError)
    d.server.receive(wire.encode(upload))


def test_coordinator_refuses_a_public_context_with_a_secret_key_or_wrong_recipients():
    d = HEDeployment(n=3, threshold=2, length=10)
    directory = d.advertise()
    bundle = d.sites[d.holder].handle(wire.encode(directory[d.holder]))
    secret = d.sites[d.holder].context.secret_bytes()
    _server_refuses(d, replace(bundle, public_context=secret), VerificationError)
    _server_refuses(d, replace(bundle, public_context=b"garbage"), MalformedMessageError)
    _server_refuses(d, replace(bundle, sealed={d.ids[1]: bundle.sealed[d.ids[1]]}), VerificationError)
    _server_refuses(d, replace(bundle, sender=d.ids[1]), UnexpectedMessageError)
    d.server.receive(wire.encode(bundle))
    assert not d.server.context.is_private


def test_coordinator_checks_the_decrypted_sum():
    d = HEDeployment(n=3, threshold=2, active=True, length=10)
    request = d.to_decrypt_round()[d.holder]
    answer = d.sites[d.holder].handle(wire.encode(request))
    _server_refuses(d, replace(answer, survivors=frozenset(d.ids[:2])), VerificationError)
    _server_refuses(d, replace(answer, data=answer.data[:-8]), MalformedMessageError)
    huge = np.full(10, 2**62, dtype="<i8").tobytes()
    _server_refuses(d, replace(answer, data=huge), VerificationError)
    _server_refuses(d, replace(answer, signature=random_bytes(64)), VerificationError)
    d.server.receive(wire.encode(answer))
    d.server.advance()
    assert isinstance(answer, HEDecryptedSum)
    np.testing.assert_array_equal(d.server.result.ring_sum.view(np.int64), d.integer_sum(d.ids))


# -- bad local input ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_updates_are_refused(bad):
    updates = {i: np.zeros(5) for i in range(3)}
    updates[1][2] = bad
    with pytest.raises(InvalidInputError):
        run_local_he(updates, threshold=2)


def test_wrong_lengths_and_encodings_are_refused():
    with pytest.raises(InvalidInputError):
        run_local_he({0: np.zeros(5), 1: np.zeros(6)}, threshold=2)
    d = HEDeployment(n=3, threshold=2, length=10)
    site = d.sites[d.ids[1]]
    with pytest.raises(InvalidInputError):
        site.provide_input(np.zeros(9, dtype=np.uint64))
    with pytest.raises(InvalidInputError):
        site.provide_input(np.zeros(10, dtype=np.float64))
    with pytest.raises(InvalidInputError):  # beyond the bound S: not an encoding of these parameters
        site.provide_input(np.full(10, d.params.bound + 1, dtype=np.int64))
    with pytest.raises(InvalidInputError):  # -2^63: |x| overflows int64, still refused
        site.provide_input(np.full(10, 2**63, dtype=np.uint64))
    holder = d.sites[d.holder]
    d.to_upload_round()
    with pytest.raises(InvalidInputError):
        holder.context.encrypt(np.full(10, -(2**63), dtype=np.int64))


def test_configs_that_would_leak_are_refused():
    params = find_he_parameters(vector_length=10, max_summands=3)
    base = dict(session_id=random_bytes(32), participants=(1, 2, 3), threshold=2, vector_length=10,
                key_holder=1, params=params)
    HESessionConfig(**base)
    with pytest.raises(InvalidInputError):
        HESessionConfig(**{**base, "threshold": 1})
    with pytest.raises(InvalidInputError):
        HESessionConfig(**{**base, "key_holder": 9})
    with pytest.raises(InvalidInputError):
        HESessionConfig(**{**base, "participants": (1, 2, 3, 4, 5)})  # params sized for 3 summands
    with pytest.raises(InvalidInputError):
        HESessionConfig(**{**base, "active": True})  # no verify keys
    assert isinstance(params, HEParameters)


def test_an_he_session_above_the_documented_size_is_refused_before_any_key_exists():
    """secagg/he/config.py: ciphertexts are held whole, so m above 2^24 is refused at configuration."""
    from secagg.he import HE_MAX_VECTOR_LENGTH

    assert HE_MAX_VECTOR_LENGTH == 2**24
    params = find_he_parameters(vector_length=10, max_summands=3)
    base = dict(session_id=random_bytes(32), participants=(1, 2, 3), threshold=2, key_holder=1, params=params)
    assert HESessionConfig(**base, vector_length=HE_MAX_VECTOR_LENGTH).vector_length == 2**24
    with pytest.raises(InvalidInputError, match=r"at most 16,777,216 values.*use the masking path"):
        HESessionConfig(**base, vector_length=50_000_000)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(InvalidInputError):
            HESessionConfig(**base, vector_length=bad)


# -- fuzz: hostile upload bytes never crash the coordinator ------------------------------------


@pytest.fixture(scope="module")
def fuzz_stage():
    d = HEDeployment(n=3, threshold=2, length=10)
    advertised = [wire.encode(d.sites[i].advertise()) for i in d.ids]
    for data in advertised:
        d.server.receive(data)
    directory = d.server.advance()
    bundle = wire.encode(d.sites[d.holder].handle(wire.encode(directory[d.holder])))
    d.server.receive(bundle)
    deliveries = d.server.advance()
    upload = wire.encode(d.sites[d.ids[1]].handle(wire.encode(deliveries[d.ids[1]])))
    return d.config, advertised, bundle, upload


def _fresh_coordinator(config, advertised, bundle):
    server = HEServerSession(config)
    for data in advertised:
        server.receive(data)
    server.advance()
    server.receive(bundle)
    server.advance()
    return server


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_upload_bytes_raise_protocol_errors_only(fuzz_stage, data):
    config, advertised, bundle, encoded = fuzz_stage
    server = _fresh_coordinator(config, advertised, bundle)
    action = data.draw(st.sampled_from(["flip", "truncate", "insert", "flip-ciphertext"]))
    if action != "flip-ciphertext":
        mutated = bytearray(mutated_bytes(encoded, data, action, insert_max=8))
    else:
        mutated = bytearray(encoded)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(120, len(mutated) - 70))
            mutated[i] ^= data.draw(st.integers(1, 255))
    try:
        server.receive(bytes(mutated))
    except ProtocolError:
        assert server.expected_senders == frozenset(config.participants)  # nothing was recorded
        return
    # Accepted (a change that still parses as a valid ciphertext of this session): it was one upload.
    assert isinstance(wire.decode(bytes(mutated)), HEEncryptedInput)
    assert len(server.released) == 1
