"""Hypothesis strategies for protocol messages (shared by wire and session tests)."""

from hypothesis import strategies as st

from secagg import messages as m
from secagg.shamir import PRIME

ids = st.integers(0, 2**32 - 1)
key32 = st.binary(min_size=32, max_size=32)
signature = st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))
blob = st.binary(min_size=0, max_size=200)
share = st.integers(0, PRIME - 1)
id_sets = st.frozensets(ids, max_size=20)


def id_map(values):
    return st.dictionaries(ids, values, max_size=8)


def vectors():
    return st.one_of(
        st.tuples(st.just(32), st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4])),
        st.tuples(st.just(64), st.binary(max_size=64).map(lambda b: b[: len(b) // 8 * 8])),
    )


messages = st.one_of(
    st.builds(m.AdvertiseKeys, key32, ids, key32, key32, signature),
    st.builds(m.KeyDirectory, key32, ids, id_map(st.builds(m.AdvertisedKeys, key32, key32, signature))),
    st.builds(m.ShareKeys, key32, ids, id_map(blob)),
    st.builds(m.MaskedInputRequest, key32, ids, id_map(blob)),
    st.builds(lambda s, i, v, sig: m.MaskedInput(s, i, v[0], v[1], sig), key32, ids, vectors(), signature),
    st.builds(m.ConsistencyRequest, key32, ids, id_sets),
    st.builds(m.ConsistencySignature, key32, ids, st.binary(min_size=64, max_size=64)),
    st.builds(m.UnmaskRequest, key32, ids, id_sets, id_sets, id_map(st.binary(min_size=64, max_size=64))),
    st.builds(m.UnmaskResponse, key32, ids, id_map(share), id_map(share), signature),
)
