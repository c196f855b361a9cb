"""CKKS parameters for addition-only aggregation, chosen from the vector length and the precision.

Pure Python (no TenSEAL): the finder runs before any key exists, and every
party re-checks a received parameter set with the same rules.

What is encrypted. Sites encode their (pre-weighted, clipped) update with the
project's fixed-point encoder (:class:`secagg.encoding.FixedPointEncoder`:
clip to [-c, c], scale by S/c, unbiased stochastic rounding from the CSPRNG),
so every slot holds an *integer* k with |k| <= S. CKKS encrypts k at scale Δ.
The coordinator only adds ciphertexts (no multiplication, no rescaling, no
rotation, hence no key-switching keys and a one-prime data level). The key
holder decrypts the sum and **rounds it to the nearest integer**: the result
is then exactly sum_u k_u, the same integer sum the masking path produces,
and it carries no trace of the CKKS noise. (Releasing raw CKKS decryptions
would leak the noise, and with it the secret key: Li & Micciancio,
EUROCRYPT 2021. Rounding to an exact integer result closes that channel.)

Math (n = max_summands, N = ring degree, Δ = scale, q = data prime):

* Noise. A symmetric-key CKKS encryption (TenSEAL ``ENCRYPTION_TYPE.SYMMETRIC``)
  decrypts to m + e with m = round(Δ·σ⁻¹(z)) and e from SEAL's clipped
  normal (σ = 3.2, |e_i| <= 19.2, then converted to an integer). Per
  coefficient, e_i + (rounding of m_i) is sub-Gaussian with parameter at most
  ν = 3.2 + 1 + 1/2 = 4.7 (triangle inequality of the ψ₂ norm). The real part
  of one slot of the decoded error of a sum of n ciphertexts is a sum of nN
  such terms with weights cos(·) whose squares sum to nN/2, hence
  sub-Gaussian with parameter ν·sqrt(nN/2). A union bound over at most
  2^31 slots with failure probability 2^-λ gives the per-slot bound
  ``B = ν·sqrt(nN/2)·sqrt(2·ln(2^(λ+32)))``.
  Measured (N = 8192): the standard deviation of the slot error is 208 (the
  model's sub-Gaussian parameter is 301), independent of the magnitude up to
  |z| = 2^44.
* Floating point. SEAL's encoder and decoder run FFTs in double precision;
  their error was measured below 2^-50 times the slot magnitude. We budget
  ``ε = M·2^-44`` with M = n·S (64x margin) and cap M at 2^40 so ε <= 1/16.
* Exact rounding. We choose the integer scale ``Δ = ceil(B / (1/4 - ε))``, so
  every decrypted slot is within 1/4 of the true integer sum with probability
  >= 1 - 2^-λ. The decryptor refuses any sum with a slot farther than 3/8
  from an integer or outside [-|U|·S, |U|·S]: a ciphertext from another key or
  context, corrupted bytes or an unclipped input show up there.
* Capacity. The plaintext polynomial of the sum has coefficients of magnitude
  at most Δ·M + n·20.7 (|m_i| <= Δ·max|z|, |e_i| <= 20.2 plus 1/2 rounding);
  it decrypts correctly when that is below q/2. SEAL's "b-bit" primes are the
  largest NTT-friendly primes below 2^b, we assume only q >= 2^b·(1 - 2^-8),
  and the context checks the actual prime when it is generated.
* Data prime. SEAL serialises each 64-bit coefficient word with zstd, which
  compresses whole zero bytes; so the finder picks b from (40, 48, 56, 60) - the
  smallest that meets the capacity - because 41..47-bit primes cost about as
  much as 48. The ciphertext at the data level is 2 polynomials x N
  coefficients x one prime, carrying N/2 slots: about 4·b/8 bytes per slot
  before framing; measured 5.8x (40 bits), 6.9x (48), 7.6x (56), 8.0x (60)
  the size of float32.
* Special prime. TenSEAL requires a second prime (it generates
  relinearisation keys); it is never used for data. Its size is
  ``min(b, max_total - b, 60)``.
* Security. Total modulus bits <= the HomomorphicEncryption.org 128-bit
  classical table that SEAL enforces (``CoeffModulus::MaxBitCount(N, tc128)``):
  N = 4096 -> 109 bits, 8192 -> 218, 16384 -> 438, 32768 -> 881. SEAL refuses
  anything larger itself; we check first so the error explains why.
* Ring degree. One ciphertext holds N/2 slots. N = 4096 when the whole
  vector fits in 2048 slots (one small ciphertext), else N = 8192 (fewer,
  larger ciphertexts are faster per parameter in TenSEAL; the padding of the
  last chunk is < 4096 slots).

Default precision: the same number of levels as the masking path's default
32-bit ring, S = floor((2^31 - 1)/n), i.e. resolution c·n/(2^31 - 1). With n
up to ~40 this fits a 48-bit prime (6.9x float32), beyond it a 56-bit one
(7.6x). A coarser ``resolution`` can choose a 40-bit prime (5.8x).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from ..encoding import FixedPointEncoder
from ..errors import InfeasibleParametersError, InvalidInputError

__all__ = [
    "HEParameters",
    "find_he_parameters",
    "SEAL_MAX_COEFF_BITS_128",
    "DATA_PRIME_BITS",
    "INTEGRALITY_WINDOW",
]

#: HomomorphicEncryption.org standard, 128-bit classical security (what SEAL enforces).
SEAL_MAX_COEFF_BITS_128 = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
#: Data-prime sizes the finder considers (zstd compresses whole zero bytes of 64-bit words).
DATA_PRIME_BITS = (40, 48, 56, 60)
#: SEAL's noise standard deviation and clipping bound (``seal::util::global_variables``).
_NOISE_STD = 3.2
_NOISE_MAX = 19.2
#: Sub-Gaussian parameter per coefficient: clipped Gaussian + integer conversion + encoding rounding.
_NOISE_PROXY = _NOISE_STD + 1.0 + 0.5
#: Worst-case |noise| per coefficient per ciphertext (clipped Gaussian, conversion, encoding rounding).
_NOISE_ABS = _NOISE_MAX + 1.0 + 0.5
#: M = n·S is capped here so the double-precision FFTs stay far below one unit.
MAX_LEVELS_LOG2 = 40
_FP_RELATIVE = 2.0**-44
_MAX_SLOTS_LOG2 = 31
#: The decryptor refuses a slot farther than this from an integer (the bound guarantees <= 1/4).
INTEGRALITY_WINDOW = 0.375
_MIN_PRIME_BITS = 20
_MAX_PRIME_BITS = 60
_MAX_FAILURE_LOG2 = 128


def _prime_lower_bound(bits: int) -> int:
    """A lower bound on SEAL's b-bit NTT prime (the largest below 2^b): 2^b·(1 - 2^-8)."""
    return (1 << bits) - (1 << (bits - 8))


def _noise_bound(degree: int, summands: int, failure_log2: int) -> float:
    """B: |decoded noise of a sum of ``summands`` ciphertexts| per slot, times Δ, w.p. >= 1 - 2^-λ."""
    tail = math.sqrt(2.0 * math.log(2.0) * (failure_log2 + _MAX_SLOTS_LOG2 + 1))
    return _NOISE_PROXY * math.sqrt(summands * degree / 2.0) * tail


@dataclass(frozen=True)
class HEParameters:
    """One CKKS parameter set plus the fixed-point encoding riding on it.

    Attributes:
        poly_modulus_degree: N (a power of two, 4096..32768); one ciphertext holds N/2 slots.
        coeff_mod_bit_sizes: (data prime bits b, special prime bits); ciphertexts live at
            the one-prime data level.
        scale: Δ, the integer CKKS scale.
        bound: S, the largest encoded magnitude of one summand (levels per unit of ``clip``).
        clip: c, inputs are clipped to [-c, c] before encoding.
        max_summands: n, the most contributions a sum may hold (the number of participants).
        failure_log2: λ, the probability that a rounded decryption differs from the exact
            integer sum is below 2^-λ.

    Construction validates every rule of the module docstring, so a parameter set
    received from another party is refused (:class:`InfeasibleParametersError`) if it is
    insecure, overflows or cannot round exactly.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple
    scale: int
    bound: int
    clip: float
    max_summands: int
    failure_log2: int = 40

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))
        n_deg = self.poly_modulus_degree
        for name in ("poly_modulus_degree", "scale", "bound", "max_summands", "failure_log2"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"{name} must be a positive int; got {value!r}")
        if n_deg not in SEAL_MAX_COEFF_BITS_128:
            raise InfeasibleParametersError(
                f"poly_modulus_degree must be one of {sorted(SEAL_MAX_COEFF_BITS_128)}; got {n_deg}"
            )
        bits = self.coeff_mod_bit_sizes
        if len(bits) != 2 or any(not isinstance(b, int) or isinstance(b, bool) for b in bits):
            raise InfeasibleParametersError(
                f"coeff_mod_bit_sizes must be (data prime bits, special prime bits); got {bits!r}"
            )
        if any(not _MIN_PRIME_BITS <= b <= _MAX_PRIME_BITS for b in bits):
            raise InfeasibleParametersError(
                f"each prime must have {_MIN_PRIME_BITS}..{_MAX_PRIME_BITS} bits; got {bits}"
            )
        limit = SEAL_MAX_COEFF_BITS_128[n_deg]
        if sum(bits) > limit:
            raise InfeasibleParametersError(
                f"coefficient modulus of {sum(bits)} bits exceeds {limit} bits, the 128-bit security "
                f"limit for N = {n_deg} (HomomorphicEncryption.org table, enforced by SEAL)"
            )
        clip = self.clip
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0:
            raise InvalidInputError(f"clip must be a positive finite number; got {clip!r}")
        object.__setattr__(self, "clip", float(clip))
        if self.failure_log2 > _MAX_FAILURE_LOG2:
            raise InvalidInputError(f"failure_log2 must be at most {_MAX_FAILURE_LOG2}; got {self.failure_log2}")
        levels = self.max_summands * self.bound
        if levels > 1 << MAX_LEVELS_LOG2:
            raise InfeasibleParametersError(
                f"n·S = {self.max_summands}·{self.bound} exceeds 2^{MAX_LEVELS_LOG2}: beyond that the "
                "double-precision FFTs of CKKS can no longer round sums exactly; ask for a coarser resolution"
            )
        if self.error_bound > 0.25:
            raise InfeasibleParametersError(
                f"scale {self.scale} is too small: CKKS noise of a sum of {self.max_summands} ciphertexts "
                f"can reach {self.error_bound:.3f} units (must stay <= 1/4 to round exactly)"
            )
        if not self.fits(_prime_lower_bound(bits[0])):
            raise InfeasibleParametersError(
                f"a {bits[0]}-bit data prime cannot hold sums of {self.max_summands} values of magnitude "
                f"{self.bound} at scale {self.scale}; use a larger prime or a coarser resolution"
            )

    # -- derived quantities ---------------------------------------------------------

    @property
    def slots(self) -> int:
        """Values per ciphertext (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def data_bits(self) -> int:
        return self.coeff_mod_bit_sizes[0]

    @property
    def noise_bound(self) -> float:
        """B/Δ: bound on the decoded CKKS noise of a full sum, in encoded units."""
        return _noise_bound(self.poly_modulus_degree, self.max_summands, self.failure_log2) / self.scale

    @property
    def error_bound(self) -> float:
        """B/Δ + ε: distance of any decrypted slot from the exact integer sum (w.p. >= 1 - 2^-λ)."""
        return self.noise_bound + self.max_summands * self.bound * _FP_RELATIVE

    @property
    def resolution(self) -> float:
        """One quantisation step in input units: ``|aggregate - exact float sum| < n·resolution``."""
        return self.clip / self.bound

    @property
    def encoder(self) -> FixedPointEncoder:
        """The fixed-point encoder of the sites (64-bit ring words; sums never wrap)."""
        return FixedPointEncoder(clip=self.clip, max_summands=self.max_summands, bit_width=64, bound=self.bound)

    @property
    def raw_ciphertext_bytes(self) -> int:
        """Uncompressed size of one ciphertext at the data level (2 polynomials x N x 8 bytes)."""
        return 2 * self.poly_modulus_degree * 8

    @property
    def max_ciphertext_bytes(self) -> int:
        """Largest serialised ciphertext a party accepts (raw size plus framing slack)."""
        return self.raw_ciphertext_bytes + 4096

    def fits(self, data_prime: int) -> bool:
        """Whether a sum of n encoded inputs decrypts without wrap-around modulo ``data_prime``."""
        worst = self.scale * self.max_summands * self.bound + math.ceil(self.max_summands * _NOISE_ABS) + 1
        return 2 * worst < data_prime

    def chunk_lengths(self, vector_length: int) -> tuple:
        """Values per ciphertext when a vector of ``vector_length`` is packed N/2 at a time."""
        if not isinstance(vector_length, int) or vector_length < 1:
            raise InvalidInputError(f"vector_length must be a positive int; got {vector_length!r}")
        full, rest = divmod(vector_length, self.slots)
        return (self.slots,) * full + ((rest,) if rest else ())

    @property
    def canonical_bytes(self) -> bytes:
        """Canonical encoding (part of the session fingerprint)."""
        return b"secagg/v1/he-params" + struct.pack(
            ">IBBQQdIH", self.poly_modulus_degree, *self.coeff_mod_bit_sizes, self.scale, self.bound,
            self.clip, self.max_summands, self.failure_log2,
        )

    def describe(self) -> dict:
        """Plain-data summary for reports (CLI, DPIA, run summaries)."""
        return {
            "scheme": "CKKS (TenSEAL/SEAL), symmetric-key encryption, addition only",
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "security": "128-bit classical (HomomorphicEncryption.org table, enforced by SEAL)",
            "slots_per_ciphertext": self.slots,
            "scale": self.scale,
            "levels_per_clip": self.bound,
            "clip": self.clip,
            "max_summands": self.max_summands,
            "resolution": self.resolution,
            "decryption_error_bound_units": self.error_bound,
            "exact_rounding_failure_probability": f"<= 2^-{self.failure_log2}",
            "raw_ciphertext_bytes_per_slot": self.raw_ciphertext_bytes / self.slots,
        }


def find_he_parameters(
    *,
    vector_length: int,
    max_summands: int,
    clip: float = 1.0,
    resolution: float | None = None,
    poly_modulus_degree: int | None = None,
    data_bits: int | None = None,
    failure_log2: int = 40,
) -> HEParameters:
    """The most compact CKKS parameters that sum ``max_summands`` vectors exactly.

    Args:
        vector_length: m, values per update (chooses N; see the module docstring).
        max_summands: n, the number of participants.
        clip: c, each value is clipped to [-c, c].
        resolution: the largest acceptable quantisation step (input units). Default: the
            masking path's default, c·n/(2^31 - 1).
        poly_modulus_degree / data_bits: force N or the data prime size.
        failure_log2: λ, exact rounding fails with probability below 2^-λ.

    Raises:
        InfeasibleParametersError: no secure parameter set meets the request (with the reason).
    """
    if not isinstance(vector_length, int) or isinstance(vector_length, bool) or not 1 <= vector_length <= 2**31:
        raise InvalidInputError(f"vector_length must be an int in [1, 2^31]; got {vector_length!r}")
    if not isinstance(max_summands, int) or isinstance(max_summands, bool) or max_summands < 1:
        raise InvalidInputError(f"max_summands must be a positive int; got {max_summands!r}")
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0:
        raise InvalidInputError(f"clip must be a positive finite number; got {clip!r}")
    if not isinstance(failure_log2, int) or not 1 <= failure_log2 <= _MAX_FAILURE_LOG2:
        raise InvalidInputError(f"failure_log2 must be an int in [1, {_MAX_FAILURE_LOG2}]; got {failure_log2!r}")
    n = max_summands
    if resolution is None:
        bound = max(1, ((1 << 31) - 1) // n)
    else:
        if isinstance(resolution, bool) or not isinstance(resolution, (int, float)) or not (
            math.isfinite(resolution) and resolution > 0
        ):
            raise InvalidInputError(f"resolution must be a positive finite number; got {resolution!r}")
        bound = max(1, math.ceil(clip / resolution))
    if n * bound > 1 << MAX_LEVELS_LOG2:
        raise InfeasibleParametersError(
            f"resolution {clip / bound:.3g} for {n} summands needs n·S = {n * bound} > 2^{MAX_LEVELS_LOG2} "
            "levels, more than CKKS decodes exactly in double precision; ask for a coarser resolution"
        )
    if poly_modulus_degree is None:
        degree = 4096 if vector_length <= 2048 else 8192
    else:
        degree = poly_modulus_degree
    if degree not in SEAL_MAX_COEFF_BITS_128:
        raise InfeasibleParametersError(
            f"poly_modulus_degree must be one of {sorted(SEAL_MAX_COEFF_BITS_128)}; got {degree!r}"
        )
    epsilon = n * bound * _FP_RELATIVE
    scale = math.ceil(_noise_bound(degree, n, failure_log2) / (0.25 - epsilon))
    limit = SEAL_MAX_COEFF_BITS_128[degree]
    candidates = DATA_PRIME_BITS if data_bits is None else (data_bits,)
    reasons = []
    for bits in candidates:
        special = min(bits, limit - bits, _MAX_PRIME_BITS)
        if special < _MIN_PRIME_BITS:
            reasons.append(f"{bits}-bit data prime leaves no room for a special prime under {limit} bits")
            continue
        try:
            return HEParameters(
                poly_modulus_degree=degree,
                coeff_mod_bit_sizes=(bits, special),
                scale=scale,
                bound=bound,
                clip=float(clip),
                max_summands=n,
                failure_log2=failure_log2,
            )
        except InfeasibleParametersError as exc:
            reasons.append(str(exc))
    raise InfeasibleParametersError(
        f"no CKKS parameters for n = {n}, resolution {clip / bound:.3g}, N = {degree}: " + "; ".join(reasons)
    )
