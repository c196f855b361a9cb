"""HE path end to end: exact sums with dropouts, key custody, thresholds, and no leaks to the user."""

import warnings

import numpy as np
import pytest

pytest.importorskip("tenseal")

from secagg.errors import LocalProtocolError, ThresholdNotMetError  # noqa: E402
from secagg.he import (  # noqa: E402
    HE_STAGES,
    THREAT_MODEL,
    HEServerStage,
    KeyHolderUnavailableError,
    SecretKeyUnavailableError,
    run_local_he,
    wire,
)

from .test_he_harness import HEDeployment  # noqa: E402


def _updates(n=5, m=50, seed=1, ids=None):
    rng = np.random.default_rng(seed)
    ids = ids or range(n)
    return {i: rng.uniform(-1.5, 1.5, m) for i in ids}


def _clipped_sum(updates, ids, clip=1.0):
    return np.sum([np.clip(updates[i], -clip, clip) for i in sorted(ids)], axis=0)


@pytest.mark.parametrize("active", [False, True])
def test_integer_sum_is_exact(active):
    d = HEDeployment(n=4, threshold=3, active=active, length=40)
    result = d.run()
    assert result.survivors == frozenset(d.ids)
    assert result.bit_width == 64
    np.testing.assert_array_equal(result.ring_sum.view(np.int64), d.integer_sum(d.ids))
    decoded = d.params.encoder.decode(result.ring_sum)
    exact = np.sum([d.inputs[i] for i in d.ids], axis=0)
    assert np.max(np.abs(decoded - exact)) < len(d.ids) * d.params.resolution


def test_multi_ciphertext_vectors_are_chunked_and_exact():
    # 5000 values need two N = 8192 ciphertexts (4096 slots each).
    d = HEDeployment(n=3, threshold=2, length=5000)
    assert d.params.poly_modulus_degree == 8192 and d.config.chunk_count == 2
    np.testing.assert_array_equal(d.run().ring_sum.view(np.int64), d.integer_sum(d.ids))


@pytest.mark.parametrize("stage", ["advertise", "context", "upload", "decrypt"])
@pytest.mark.parametrize("active", [False, True])
def test_dropouts_of_ordinary_sites(stage, active):
    updates = _updates(n=5)
    result = run_local_he(updates, threshold=3, dropouts={stage: [3, 4]}, active=active)
    expected = {0, 1, 2} if stage in ("advertise", "context", "upload") else set(range(5))
    assert result.survivors == frozenset(expected)
    error = np.max(np.abs(result.aggregate - _clipped_sum(updates, expected)))
    assert error < len(expected) * result.resolution


@pytest.mark.parametrize("stage", HE_STAGES)
def test_key_holder_dropout_aborts_with_no_output(stage):
    with pytest.raises(KeyHolderUnavailableError):
        run_local_he(_updates(n=4), threshold=2, dropouts={stage: [0]})


@pytest.mark.parametrize("stage", ["advertise", "upload"])
def test_threshold_not_met_aborts_with_no_output(stage):
    d = HEDeployment(n=4, threshold=3)
    if stage == "advertise":
        for i in d.ids[:2]:
            d.server.receive(wire.encode(d.sites[i].advertise()))
        with pytest.raises(ThresholdNotMetError):
            d.server.advance()
        assert d.server.released == frozenset()
    else:
        with pytest.raises(ThresholdNotMetError):
            d.to_decrypt_round(silent_upload=d.ids[2:])
        # The two uploads that arrived are recorded as released, though no sum exists.
        assert d.server.released == frozenset(d.ids[:2])
    assert d.server.stage is HEServerStage.ABORTED
    with pytest.raises(LocalProtocolError):
        d.server.result  # noqa: B018


def test_threshold_abort_through_run_local():
    with pytest.raises(ThresholdNotMetError):
        run_local_he(_updates(n=4), threshold=3, dropouts={"upload": [2, 3]})


def test_fedavg_weights_ride_in_one_slot():
    updates = _updates(n=4, m=30)
    weights = {0: 10.0, 1: 20.0, 2: 30.0, 3: 40.0}
    result = run_local_he(updates, threshold=2, weights=weights, dropouts={"upload": [3]})
    assert result.aggregate.shape == (31,)
    survivors = sorted(result.survivors)
    w = np.array([weights[i] / 40.0 for i in survivors])
    expected_mean = np.sum([wi * np.clip(updates[i], -1, 1) for wi, i in zip(w, survivors)], axis=0) / w.sum()
    assert result.weight_sum == pytest.approx(w.sum(), abs=1e-6)
    np.testing.assert_allclose(result.mean, expected_mean, atol=1e-6)


def test_coordinator_holds_only_the_public_context_and_cannot_decrypt():
    d = HEDeployment(n=3, threshold=2, length=20)
    deliveries = d.to_upload_round()
    coordinator = d.server.context
    assert coordinator is not None
    assert not coordinator.is_private and not coordinator.has_secret_key
    ts_context = coordinator.tenseal_context
    assert not ts_context.is_private() and not ts_context.has_secret_key()
    # The public context is the parameters only: no secret, public, relinearisation or Galois key.
    assert len(coordinator.public_bytes) < 200
    # Every delivered secret context stays sealed: the key holder's secret bytes never cross the coordinator.
    secret = d.sites[d.holder].context.secret_bytes()
    assert all(secret not in wire.encode(m) for m in deliveries.values())
    request = d.exchange(deliveries)
    vectors = coordinator.load(request[d.holder].summed, d.config.vector_length)
    with pytest.raises(SecretKeyUnavailableError):
        coordinator.decrypt_sum(vectors, summands=3, vector_length=d.config.vector_length)
    with pytest.raises(SecretKeyUnavailableError):
        coordinator.secret_bytes()
    with pytest.raises(SecretKeyUnavailableError):
        coordinator.encrypt(np.zeros(20, dtype=np.int64))


def test_run_local_reports_the_public_coordinator_context():
    result = run_local_he(_updates(n=3, m=10), threshold=2)
    assert not result.coordinator_context.is_private
    view = b"".join(result.server_view)
    assert b"HE" == result.server_view[0][:2]
    assert len(view) == sum(result.bytes_up.values())


def test_sites_forget_the_secret_key_after_their_last_round():
    d = HEDeployment(n=3, threshold=2, length=10)
    d.run()
    assert all(site.context is None for site in d.sites.values())


def test_key_holder_answers_one_decryption_request_only():
    d = HEDeployment(n=3, threshold=2, length=10)
    request = d.to_decrypt_round()
    d.sites[d.holder].handle(wire.encode(request[d.holder]))
    with pytest.raises(Exception) as info:
        d.sites[d.holder].handle(wire.encode(request[d.holder]))
    assert type(info.value).__name__ == "UnexpectedMessageError"


def test_no_warnings_or_output_reach_the_user(capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_local_he(_updates(n=3, m=9000), threshold=2)  # three ciphertexts per site
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_threat_model_states_the_weaknesses():
    text = THREAT_MODEL.lower()
    assert "any one site colluding with the coordinator" in text
    assert "single point of trust" in text
    assert "masking" in text
