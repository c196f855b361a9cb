"""The only module that touches TenSEAL: CKKS contexts, chunked encryption, sums, exact decryption.

TenSEAL is imported lazily (:func:`require_tenseal`), so ``import secagg`` and
``import secagg.he`` work without it; anything that needs CKKS raises
:class:`~secagg.he.errors.HEUnavailableError` naming ``pip install 'secagg[he]'``.

Every TenSEAL call that parses bytes from another party is wrapped: whatever
TenSEAL/SEAL/protobuf raise on hostile bytes (ValueError, RuntimeError,
TypeError, ...) becomes a typed :class:`~secagg.errors.MalformedMessageError`;
a well-formed ciphertext that was not produced under this session's
parameters (other ring, other level, other scale, extra polynomials) becomes
one as well. Decrypted values are never returned raw: :meth:`CKKSContext.decrypt_sum`
rounds them to the exact integer sum and refuses sums that are not within the
documented error of one (see :mod:`secagg.he.params`).

Contexts. The key holder generates a *symmetric-key* CKKS context
(TenSEAL ``ENCRYPTION_TYPE.SYMMETRIC``): there is no public encryption key at
all. Every site receives the secret context (sealed, see
:mod:`secagg.he.keyschedule`) and encrypts with the secret key; the
coordinator receives the **public context**: the parameters serialised
without any key (``save_secret_key=False``, no public, relinearisation or
Galois keys). With it the coordinator can parse and add ciphertexts, but it can
neither decrypt nor encrypt. Randomness for the CKKS keys and encryptions is
SEAL's own CSPRNG (seeded from ``std::random_device``, i.e. the OS); TenSEAL
offers no way to supply it from :mod:`secrets`.

Known warnings. TenSEAL prints "The input does not fit in a single
ciphertext" (from C++) when a vector exceeds N/2 slots; we never pass more
than N/2 values per ciphertext (explicit chunking), so it cannot occur. Python
warnings raised inside TenSEAL calls are silenced deliberately (they would
concern TenSEAL internals, never the caller's data).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Sequence

import numpy as np

from ..errors import InfeasibleParametersError, InvalidInputError, MalformedMessageError, VerificationError
from .errors import INSTALL_HINT, HEUnavailableError, SecretKeyUnavailableError
from .params import INTEGRALITY_WINDOW, HEParameters

__all__ = ["require_tenseal", "tenseal_available", "CKKSContext"]

_PUBLIC = dict(save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
_SECRET = dict(save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
# What TenSEAL/SEAL/protobuf raise on bytes they cannot parse or ciphertexts they cannot combine.
_TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError, IndexError, OverflowError, MemoryError)


def require_tenseal():
    """Import TenSEAL (and register the SEAL types used to inspect parameters), or explain what to install."""
    try:
        import tenseal
        import tenseal.sealapi  # noqa: F401  (registers seal::Modulus etc. with pybind11)
    except ImportError as exc:
        raise HEUnavailableError(
            f"the homomorphic-encryption path needs TenSEAL, which is not installed: {INSTALL_HINT}"
        ) from exc
    return tenseal


def tenseal_available() -> bool:
    """Whether the HE path can run in this environment."""
    try:
        require_tenseal()
    except HEUnavailableError:
        return False
    return True


@contextlib.contextmanager
def _quiet():
    """Silence Python warnings raised from inside TenSEAL (known and harmless; see module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"tenseal(\.|$)")
        warnings.filterwarnings("ignore", module=r"_tenseal_cpp")
        yield


def _inspect(ts_context) -> tuple:
    """(scheme name, N, key-level prime bit sizes, data prime, global scale) of a TenSEAL context."""
    seal = ts_context.seal_context().data
    parms = seal.key_context_data().parms()
    scheme = parms.scheme()
    scheme = getattr(scheme, "name", str(scheme).rsplit(".", 1)[-1])
    bits = tuple(m.value().bit_length() for m in parms.coeff_modulus())
    data_prime = seal.first_context_data().parms().coeff_modulus()[0].value()
    return scheme, parms.poly_modulus_degree(), bits, data_prime, ts_context.global_scale


class CKKSContext:
    """A TenSEAL CKKS context checked against :class:`HEParameters`.

    Private contexts (with the secret key) live at the sites; the public one
    (parameters only) at the coordinator. Construct with :meth:`generate`,
    :meth:`from_public_bytes` or :meth:`from_secret_bytes`, never directly.
    """

    def __init__(self, ts_context, params: HEParameters, public_bytes: bytes) -> None:
        self._ctx = ts_context
        self.params = params
        self.public_bytes = public_bytes
        self._first_parms_id = ts_context.seal_context().data.first_parms_id()

    def __repr__(self) -> str:
        kind = "private" if self.is_private else "public"
        return f"CKKSContext({kind}, N={self.params.poly_modulus_degree}, primes={self.params.coeff_mod_bit_sizes})"

    # -- construction ------------------------------------------------------------

    @classmethod
    def generate(cls, params: HEParameters) -> "CKKSContext":
        """A fresh secret key under ``params`` (the key holder, once per session)."""
        ts = require_tenseal()
        try:
            with _quiet():
                ctx = ts.context(
                    ts.SCHEME_TYPE.CKKS,
                    poly_modulus_degree=params.poly_modulus_degree,
                    coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                    encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
                )
                ctx.global_scale = float(params.scale)
                public = ctx.serialize(**_PUBLIC)
        except _TENSEAL_ERRORS as exc:
            raise InfeasibleParametersError(f"TenSEAL refused the CKKS parameters {params}: {exc}") from None
        _, _, _, data_prime, _ = _inspect(ctx)
        if not params.fits(data_prime):
            raise InfeasibleParametersError(
                f"SEAL chose the data prime {data_prime}, too small for sums at scale {params.scale}"
            )
        return cls(ctx, params, public)

    @classmethod
    def from_public_bytes(cls, data: bytes, params: HEParameters) -> "CKKSContext":
        """Load the coordinator's context; refuse anything that is not exactly a key-free context of ``params``."""
        return cls._load(data, params, private=False, public_bytes=data)

    @classmethod
    def from_secret_bytes(cls, data: bytes, params: HEParameters, *, public_bytes: bytes) -> "CKKSContext":
        """Load a site's secret context and check that it matches the public context everyone else holds."""
        return cls._load(data, params, private=True, public_bytes=public_bytes)

    #: private -> (what the context is called, refusal when it holds the wrong kind of key,
    #: refusal when its key-free serialisation is not ``public_bytes``).
    _LOAD_REFUSALS = {
        False: ("public context", "the public context carries a secret key; the coordinator must never hold one",
                "the public context is not the canonical key-free serialisation"),
        True: ("secret context", "the sealed context holds no secret key",
               "the secret context does not match the public context of this session"),
    }

    @classmethod
    def _load(cls, data: bytes, params: HEParameters, *, private: bool, public_bytes: bytes) -> "CKKSContext":
        """Parse ``data`` as a context of ``params`` holding a secret key iff ``private``, whose
        key-free serialisation is exactly ``public_bytes``."""
        what, wrong_kind, mismatch = cls._LOAD_REFUSALS[private]
        ts = require_tenseal()
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise MalformedMessageError(f"{what}: expected non-empty bytes")
        try:
            with _quiet():
                ctx = ts.context_from(bytes(data))
                scheme, degree, bits, data_prime, scale = _inspect(ctx)
        except _TENSEAL_ERRORS as exc:
            raise MalformedMessageError(f"{what} is not a valid TenSEAL context: {exc}") from None
        expected = ("CKKS", params.poly_modulus_degree, params.coeff_mod_bit_sizes, float(params.scale))
        if (scheme, degree, bits, scale) != expected:
            raise VerificationError(
                f"{what} has scheme {scheme}, N = {degree}, primes {bits}, scale {scale}; the session "
                f"agreed on CKKS, N = {expected[1]}, primes {expected[2]}, scale {expected[3]}"
            )
        if not params.fits(data_prime):
            raise VerificationError(f"{what}: data prime {data_prime} too small for the agreed scale")
        if ctx.is_private() != private:
            raise VerificationError(wrong_kind)
        with _quiet():
            public = ctx.serialize(**_PUBLIC)
        if public != bytes(public_bytes):
            raise VerificationError(mismatch)
        return cls(ctx, params, public)

    # -- keys ----------------------------------------------------------------------

    @property
    def is_private(self) -> bool:
        """Whether this context holds the secret key (``False`` at the coordinator)."""
        return bool(self._ctx.is_private())

    @property
    def has_secret_key(self) -> bool:
        return bool(self._ctx.has_secret_key())

    @property
    def tenseal_context(self):
        """The underlying ``tenseal.Context`` (for inspection; do not serialise it with its keys)."""
        return self._ctx

    def secret_bytes(self) -> bytes:
        """The secret context (to be sealed to one recipient; never sent in clear)."""
        self._require_secret("serialise the secret key")
        with _quiet():
            return self._ctx.serialize(**_SECRET)

    def _require_secret(self, what: str) -> None:
        if not self.is_private:
            raise SecretKeyUnavailableError(
                f"cannot {what}: this CKKS context holds no secret key (the coordinator's public context "
                "can only add ciphertexts)"
            )

    # -- encryption ------------------------------------------------------------------

    def encrypt(self, integers: np.ndarray) -> tuple:
        """Encrypt an encoded vector (integers, |k| <= S) as ceil(m / (N/2)) serialised ciphertexts."""
        self._require_secret("encrypt")
        values = np.asarray(integers)
        if values.ndim != 1 or values.dtype != np.int64:
            raise InvalidInputError(f"expected a 1-D int64 vector; got {values.dtype}{values.shape}")
        bound = self.params.bound
        if values.size and (int(values.min()) < -bound or int(values.max()) > bound):
            raise InvalidInputError(f"encoded values exceed the bound S = {bound}")
        ts = require_tenseal()
        floats = values.astype(np.float64)
        chunks, start = [], 0
        with _quiet():
            for length in self.params.chunk_lengths(values.size):
                chunk = floats[start : start + length]
                start += length
                chunks.append(ts.ckks_vector(self._ctx, chunk).serialize())
        return tuple(chunks)

    def load(self, chunks: Sequence[bytes], vector_length: int, *, who: str = "ciphertext") -> list:
        """Parse serialised ciphertexts and check they are fresh-format ciphertexts of this session.

        Raises :class:`MalformedMessageError` for wrong counts, undecodable bytes, another ring,
        level or scale, extra polynomials, or a wrong number of values per chunk.
        """
        ts = require_tenseal()
        lengths = self.params.chunk_lengths(vector_length)
        if len(chunks) != len(lengths):
            raise MalformedMessageError(
                f"{who}: expected {len(lengths)} ciphertexts for {vector_length} values; got {len(chunks)}"
            )
        limit = self.params.max_ciphertext_bytes
        vectors = []
        for index, (blob, length) in enumerate(zip(chunks, lengths)):
            if not isinstance(blob, (bytes, bytearray)) or not 0 < len(blob) <= limit:
                size = len(blob) if isinstance(blob, (bytes, bytearray)) else type(blob).__name__
                raise MalformedMessageError(f"{who}: ciphertext {index} has {size} bytes (limit {limit})")
            try:
                with _quiet():
                    vector = ts.ckks_vector_from(self._ctx, bytes(blob))
                    parts = vector.ciphertext()
                    ok = (
                        vector.size() == length
                        and len(parts) == 1
                        and parts[0].size() == 2
                        and parts[0].is_ntt_form()
                        and not parts[0].is_transparent()
                        and parts[0].parms_id() == self._first_parms_id
                        and parts[0].scale == float(self.params.scale)
                    )
            except _TENSEAL_ERRORS as exc:
                raise MalformedMessageError(f"{who}: ciphertext {index} is not a valid CKKS vector: {exc}") from None
            if not ok:
                raise MalformedMessageError(
                    f"{who}: ciphertext {index} is not a fresh {length}-value ciphertext of this session's "
                    "parameters (wrong size, level, scale or number of polynomials)"
                )
            vectors.append(vector)
        return vectors

    def add(self, total: list | None, vectors: list) -> list:
        """``total + vectors`` chunk by chunk (a new list; ``total`` is not modified)."""
        if total is None:
            return list(vectors)
        if len(total) != len(vectors):
            raise InvalidInputError("cannot add ciphertext vectors with different chunk counts")
        try:
            with _quiet():
                return [a + b for a, b in zip(total, vectors)]
        except _TENSEAL_ERRORS as exc:
            raise MalformedMessageError(f"ciphertexts cannot be added: {exc}") from None

    def serialize(self, vectors: list) -> tuple:
        with _quiet():
            return tuple(v.serialize() for v in vectors)

    # -- decryption ------------------------------------------------------------------

    def decrypt_sum(self, vectors: list, *, summands: int, vector_length: int) -> np.ndarray:
        """Decrypt a sum of ``summands`` encrypted encodings and round it to the exact integer sum.

        Refuses (:class:`VerificationError`) a result that is not a valid sum: a slot
        farther than 3/8 from an integer, outside [-summands·S, summands·S], or not
        finite. That is what a ciphertext under another key, corrupted data or an
        unclipped input produce; a valid sum passes with probability >= 1 - 2^-λ.
        Only the rounded integers leave this method, never the noisy decryption.
        """
        self._require_secret("decrypt")
        lengths = self.params.chunk_lengths(vector_length)
        if len(vectors) != len(lengths):
            raise InvalidInputError(f"expected {len(lengths)} ciphertexts; got {len(vectors)}")
        out = np.empty(vector_length, dtype=np.float64)
        start = 0
        try:
            with _quiet():
                for vector, length in zip(vectors, lengths):
                    out[start : start + length] = vector.decrypt()
                    start += length
        except _TENSEAL_ERRORS as exc:
            raise VerificationError(f"the summed ciphertext cannot be decrypted: {exc}") from None
        limit = summands * self.params.bound
        with np.errstate(invalid="ignore", over="ignore"):
            rounded = np.rint(out)
            finite = bool(np.all(np.isfinite(out)))
            off_grid = not finite or bool(np.any(np.abs(out - rounded) > INTEGRALITY_WINDOW))
            out_of_range = not finite or bool(np.any(np.abs(rounded) > limit))
        out.fill(0.0)  # the noisy decryption never leaves this method
        if off_grid or out_of_range:
            raise VerificationError(
                "the decrypted sum is not a valid sum of encoded inputs (a contribution was encrypted under "
                "another key or context, corrupted, or not clipped); refusing to release it"
            )
        return rounded.astype(np.int64)
