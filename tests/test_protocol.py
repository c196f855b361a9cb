"""Correctness of the whole protocol: exact aggregates under dropouts at every stage."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from secagg import STAGES, run_local, wire
from secagg.errors import InvalidInputError, ProtocolError, ThresholdNotMetError
from secagg.messages import MaskedInput

from .harness import Deployment


def _updates(ids, length, seed=0):
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-1.5, 1.5, length) for i in ids}


def _expected(updates, survivors, clip=1.0):
    return sum(np.clip(updates[i], -clip, clip) for i in survivors)


def _check(result, updates, clip=1.0):
    exact = _expected(updates, result.survivors, clip)
    assert np.all(np.abs(result.aggregate - exact) <= len(result.survivors) * result.resolution)


@pytest.mark.parametrize("active", [False, True])
@pytest.mark.parametrize("stage", STAGES)
def test_dropout_at_each_stage(stage, active):
    updates = _updates(range(7), 50)
    result = run_local(updates, threshold=4, dropouts={stage: [2, 5]}, active=active)
    # Clients silent before uploading are excluded; later dropouts stay in the sum.
    in_sum = STAGES.index(stage) > STAGES.index("mask")
    assert result.survivors == (frozenset(range(7)) if in_sum else frozenset(range(7)) - {2, 5})
    _check(result, updates)


def test_exact_ring_sum_equals_plain_sum_of_encoded_inputs():
    d = Deployment(n=7, threshold=4)
    d.advertise()
    d.answer(silent={7})  # 7 advertised but shares nothing
    d.answer(silent={6})  # 6 shared keys but uploads nothing: its masks must be removed
    d.answer(silent={1})  # 1 uploaded but does not help unmask
    assert d.server.stage is secagg.ServerStage.DONE
    result = d.server.result
    assert result.survivors == frozenset({1, 2, 3, 4, 5})
    assert np.array_equal(result.ring_sum, d.exact_ring_sum(result.survivors))


schedules = st.data()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 40),
    sparse=st.booleans(),
    active=st.booleans(),
    data=st.data(),
)
def test_random_dropout_schedules(n, sparse, active, data):
    ids = data.draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    degree = None
    if sparse and n >= 6:
        degree = data.draw(st.sampled_from([d for d in range(2, n - 1, 2)]))
    k = n - 1 if degree is None or degree >= n - 1 else degree
    t = data.draw(st.integers((k + 1) // 2 + 1, k + 1))
    schedule = {stage: [] for stage in STAGES}
    for i in ids:
        stage = data.draw(st.sampled_from(STAGES + (None,) * 6))
        if stage is not None:
            schedule[stage].append(i)
    updates = _updates(ids, 9, seed=n)
    # A drawn session id makes the SecAgg+ graph (seeded by it) reproducible for hypothesis.
    session_id = data.draw(st.binary(min_size=32, max_size=32))
    try:
        result = run_local(updates, threshold=t, neighbors=degree, dropouts=schedule, active=active,
                           session_id=session_id, refusals="drop")
    except ThresholdNotMetError:
        return  # too many dropouts for t: an abort with no output is the correct outcome
    dropped_before_upload = set(schedule["advertise"] + schedule["share"] + schedule["mask"])
    # On a sparse graph a client whose closed neighbourhood falls below t aborts itself
    # (ThresholdNotMetError at the client): it is a dropout too, never a silent corruption.
    self_aborted = set(result.refusals)
    assert all(isinstance(e, ThresholdNotMetError) for e in result.refusals.values()), result.refusals
    if k == n - 1:
        assert not self_aborted  # complete graph: the server's own check comes first
    expected = frozenset(ids) - dropped_before_upload
    assert result.survivors <= expected
    assert expected - result.survivors <= self_aborted
    _check(result, updates)


@pytest.mark.slow
def test_hundred_clients_secagg_plus_with_ten_percent_dropouts():
    params = secagg.find_parameters(100, corrupt_fraction=0.05, dropout_fraction=0.1)
    ids = list(range(100))
    updates = _updates(ids, 200)
    dropouts = {"share": ids[:4], "mask": ids[4:8], "unmask": ids[8:10]}
    result = run_local(updates, threshold=params.threshold, neighbors=params.degree, dropouts=dropouts)
    assert result.survivors == frozenset(ids[8:])
    _check(result, updates)


@pytest.mark.parametrize("stage", STAGES)
def test_too_few_survivors_aborts_with_no_output(stage):
    updates = _updates(range(6), 10)
    with pytest.raises(ThresholdNotMetError):
        run_local(updates, threshold=4, dropouts={stage: [0, 1, 2]}, active=True)


def test_abort_leaves_server_without_result():
    d = Deployment(n=5, threshold=3)
    d.advertise()
    d.answer()
    with pytest.raises(ThresholdNotMetError):
        d.answer(silent={1, 2, 3})
    assert d.server.stage is secagg.ServerStage.ABORTED
    with pytest.raises(secagg.LocalProtocolError):
        d.server.result


@pytest.mark.parametrize("fill", ["zeros", "max"])
def test_masked_inputs_are_uniform_whatever_the_input(fill):
    from scipy.stats import chisquare

    value = 0.0 if fill == "zeros" else 1.0
    updates = {i: np.full(40_000, value) for i in range(6)}
    result = run_local(updates, threshold=4)
    words = np.concatenate([
        m.vector for m in map(wire.decode, result.server_view) if isinstance(m, MaskedInput)
    ])
    for shift in (24, 0, 13):  # top, bottom and middle byte
        byte = ((words >> np.uint32(shift)) & np.uint32(0xFF)).astype(np.int64)
        assert chisquare(np.bincount(byte, minlength=256)).pvalue > 1e-6
    assert abs(words.mean() / 2**32 - 0.5) < 0.005


def test_no_input_bytes_in_server_view():
    d = Deployment(n=5, threshold=3, length=64)
    d.advertise()
    view = []
    original_receive = d.server.receive

    def recording_receive(data):
        view.append(bytes(data))
        return original_receive(data)

    d.server.receive = recording_receive
    d.answer()
    d.answer()
    d.answer()
    blob = b"".join(view)
    for i in d.ids:
        encoded = d.encoded[i].tobytes()
        for start in range(0, len(encoded) - 16, 16):
            assert encoded[start : start + 16] not in blob


def test_run_local_server_view_holds_no_input_bytes():
    updates = _updates(range(5), 64)
    result = run_local(updates, threshold=3)
    blob = b"".join(result.server_view)
    encoder = secagg.FixedPointEncoder.create(clip=1.0, max_summands=5)
    for i in range(5):
        # Stochastic rounding re-encodes differently each time, so check the float bytes too.
        assert np.asarray(updates[i]).tobytes()[:16] not in blob
    assert all(isinstance(wire.decode(m), secagg.messages.__dict__[type(wire.decode(m)).__name__])
               for m in result.server_view)
    assert encoder.bit_width == result.bit_width


def test_sessions_with_the_same_inputs_use_fresh_masks():
    updates = {i: np.zeros(32) for i in range(4)}
    a = run_local(updates, threshold=3)
    b = run_local(updates, threshold=3)
    masked = lambda r: [m.data for m in map(wire.decode, r.server_view) if isinstance(m, MaskedInput)]
    assert set(masked(a)).isdisjoint(masked(b))


@pytest.mark.parametrize("active, signature_bytes", [(False, 1), (True, 1 + 64)])
def test_upload_is_m_times_b_over_8_plus_header(active, signature_bytes):
    """Upload = m*b/8 + header + width/count (5 bytes) + signature flag (+ 64-byte Ed25519 in active mode)."""
    updates = _updates(range(4), 1000)
    result = run_local(updates, threshold=3, active=active)
    uploads = [m for m in result.server_view if isinstance(wire.decode(m), MaskedInput)]
    assert uploads and all(len(m) == 4000 + wire.header_bytes() + 5 + signature_bytes for m in uploads)


def test_fedavg_weights_ride_inside_the_masked_vector():
    ids = range(5)
    rng = np.random.default_rng(3)
    deltas = {i: rng.uniform(-0.5, 0.5, 20) for i in ids}
    counts = {i: float(c) for i, c in zip(ids, (10, 200, 35, 80, 5))}
    packed = {i: secagg.weighted_vector(deltas[i], counts[i], max_weight=1000, clip=1.0) for i in ids}
    result = run_local(packed, threshold=3)
    mean, total_weight = secagg.weighted_mean(result.aggregate, clip=1.0)
    expected = sum(counts[i] * deltas[i] for i in ids) / sum(counts.values())
    assert np.allclose(mean, expected, atol=1e-6)
    assert total_weight == pytest.approx(sum(counts.values()) / 1000, abs=1e-6)


# --- bad local input -------------------------------------------------------------


def test_wrong_lengths_refused():
    with pytest.raises(InvalidInputError, match="shape"):
        run_local({0: np.zeros(3), 1: np.zeros(4), 2: np.zeros(3)}, threshold=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_refused(bad):
    with pytest.raises(InvalidInputError, match="client 1"):
        run_local({0: np.zeros(3), 1: np.array([0.0, bad, 0.0]), 2: np.zeros(3)}, threshold=2)


def test_unknown_ids_and_stages_refused():
    updates = _updates(range(4), 3)
    with pytest.raises(InvalidInputError, match="unknown client ids"):
        run_local(updates, threshold=3, dropouts={"mask": [9]})
    with pytest.raises(InvalidInputError, match="unknown dropout stage"):
        run_local(updates, threshold=3, dropouts={"later": [1]})


def test_duplicate_and_invalid_ids_refused():
    with pytest.raises(InvalidInputError, match="duplicate"):
        secagg.SessionConfig(secagg.new_session_id(), (1, 2, 2, 3), 3, 10)
    with pytest.raises(InvalidInputError, match="ids"):
        secagg.SessionConfig(secagg.new_session_id(), (1, -2, 3), 2, 10)
    with pytest.raises(InvalidInputError, match="ints"):
        run_local({"a": np.zeros(2), "b": np.zeros(2)}, threshold=2)


@pytest.mark.parametrize("threshold", [0, 2, 6])
def test_threshold_out_of_range_refused(threshold):
    with pytest.raises(InvalidInputError, match="threshold"):
        run_local(_updates(range(5), 3), threshold=threshold)


def test_all_errors_are_protocol_errors():
    for error in (InvalidInputError, ThresholdNotMetError, secagg.UnsafeRequestError,
                  secagg.MalformedMessageError, secagg.InfeasibleParametersError):
        assert issubclass(error, ProtocolError)
