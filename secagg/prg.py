"""Pseudorandom generator: AES-256-CTR keystream from ``cryptography`` (OpenSSL).

Math. For a 32-byte key ``K`` the generator outputs the AES-256-CTR keystream
``AES_K(0) || AES_K(1) || ...`` (counter block starting at zero). Read as
little-endian unsigned b-bit words, with b in {32, 64}, the keystream of a
uniformly random key is computationally indistinguishable from a sequence of
independent uniform elements of Z_{2^b}: b divides the 128-bit block size, so
no modular reduction (and no bias) is involved.

Security notes. The counter always starts at zero, which is safe only because
every key is used for exactly one stream: all keys come from
:func:`secagg.crypto.derive_key` with a domain-separation label that names the
purpose, the session and the parties, so no two streams share a key. The
generator never seeds itself: keys come from the caller, and the caller takes
fresh key material from :mod:`secrets` / :func:`os.urandom`.

Chunks. The keystream of words ``[o, o + c)`` is generated on its own by
starting the counter block at block ``floor(o * w / 16)`` (w = bytes per word)
and dropping the first ``(o * w) mod 16`` bytes: CTR block i is ``AES_K(i)``,
so a chunk equals the same slice of the whole-vector stream, bit for bit.
:func:`apply_masks` uses this to add or subtract many masks to a vector in
chunks of :data:`CHUNK_BYTES`, so no full-length keystream buffer exists
(``tests/test_streaming.py`` checks chunked against whole-vector output).

Performance. The keystream is written with ``update_into`` straight into a
preallocated numpy buffer (no intermediate ``bytes`` object); one million
uint32 words cost about one AES-CTR pass over 4 MB.
"""

from __future__ import annotations

import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import InvalidInputError

__all__ = [
    "KEY_BYTES",
    "keystream_into",
    "keystream_words",
    "add_keystream",
    "apply_masks",
    "CHUNK_BYTES",
    "uniform_floats",
    "DeterministicStream",
]

KEY_BYTES = 32
#: Bytes of one chunk in :func:`apply_masks` (1 MiB: the scratch and zero buffers stay in cache-sized
#: pieces; tests set it to a few bytes to force many chunks with ragged ends).
CHUNK_BYTES = 1 << 20
_BLOCK = 16
_ZERO_COUNTER = bytes(16)
_SUPPORTED_DTYPES = (np.dtype(np.uint32), np.dtype(np.uint64), np.dtype(np.uint8))

# A read-only buffer of zeros that AES-CTR "encrypts" to produce keystream.
# It only grows; it never holds secret data.
_zeros = bytes(0)
_zeros_lock = threading.Lock()


def _zero_bytes(nbytes: int) -> memoryview:
    global _zeros
    if len(_zeros) < nbytes:
        with _zeros_lock:
            if len(_zeros) < nbytes:
                _zeros = bytes(max(nbytes, 2 * len(_zeros)))
    return memoryview(_zeros)[:nbytes]


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise InvalidInputError(
            f"PRG key must be {KEY_BYTES} bytes; got "
            f"{type(key).__name__} of length {len(key) if hasattr(key, '__len__') else '?'}"
        )


def _encryptor(key: bytes, byte_offset: int = 0):
    """An AES-256-CTR encryptor positioned ``byte_offset`` bytes into the stream of ``key``."""
    block, skip = divmod(byte_offset, _BLOCK)
    encryptor = Cipher(algorithms.AES(bytes(key)), modes.CTR(block.to_bytes(_BLOCK, "big"))).encryptor()
    if skip:
        encryptor.update(bytes(skip))  # drop the head of the first block
    return encryptor


def _check_out(out: np.ndarray, what: str) -> None:
    if out.dtype not in _SUPPORTED_DTYPES or not out.flags.c_contiguous:
        raise InvalidInputError(f"{what} needs a C-contiguous uint8/uint32/uint64 array; got {out.dtype}")


def keystream_into(key: bytes, out: np.ndarray, *, offset: int = 0) -> np.ndarray:
    """Fill the contiguous array ``out`` (uint8/uint32/uint64) with keystream of ``key``.

    ``offset`` (in words of ``out``'s dtype) says where in the stream ``out``
    starts: ``keystream_into(key, out[a:b], offset=a)`` writes exactly what
    the whole-vector call writes to ``out[a:b]``. Returns ``out``. Each element
    is a uniform element of Z_{2^b} for b the element width in bits.
    """
    _check_key(key)
    _check_out(out, "keystream_into")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise InvalidInputError(f"keystream offset must be a non-negative integer; got {offset!r}")
    view = memoryview(out).cast("B")
    _encryptor(key, int(offset) * out.itemsize).update_into(_zero_bytes(view.nbytes), view)
    return out


def keystream_words(key: bytes, count: int, dtype=np.uint32) -> np.ndarray:
    """Return ``count`` keystream words of ``dtype`` (a new array)."""
    out = np.empty(int(count), dtype=dtype)
    return keystream_into(key, out)


def add_keystream(acc: np.ndarray, key: bytes, scratch: np.ndarray, *, subtract: bool = False) -> None:
    """``acc += PRG(key)`` (or ``-=``) modulo 2^b, in place, using ``scratch`` as buffer.

    ``acc`` and ``scratch`` must have the same unsigned dtype and length;
    numpy's unsigned arithmetic wraps, which is exactly reduction mod 2^b.
    """
    if scratch.shape != acc.shape or scratch.dtype != acc.dtype:
        raise InvalidInputError(
            f"scratch buffer must match the accumulator: {acc.dtype}{acc.shape} vs "
            f"{scratch.dtype}{scratch.shape}"
        )
    keystream_into(key, scratch)
    if subtract:
        np.subtract(acc, scratch, out=acc)
    else:
        np.add(acc, scratch, out=acc)


def apply_masks(out: np.ndarray, masks, *, base: np.ndarray | None = None,
                chunk_bytes: int | None = None) -> np.ndarray:
    """``out = base + sum_i s_i PRG(k_i)`` modulo 2^b, in chunks; returns ``out``.

    ``masks`` is a sequence of ``(key, subtract)`` pairs (``s_i = -1`` when
    ``subtract``); ``base`` defaults to ``out`` itself (masks added in place)
    and may be any array of the same length (it is read, never written, unless
    it is ``out``). Words are processed ``chunk_bytes`` (default
    :data:`CHUNK_BYTES`) at a time, chunk outermost: the extra memory is one
    chunk of keystream and the zero buffer it is encrypted from, whatever the
    length, and the result equals the whole-vector computation bit for bit
    (module docstring).
    """
    _check_out(out, "apply_masks")
    masks = list(masks)
    for key, _ in masks:
        _check_key(key)
    if base is not None and (base.shape != out.shape or base.dtype != out.dtype):
        raise InvalidInputError(f"base {base.dtype}{base.shape} and output {out.dtype}{out.shape} differ")
    step = max(1, (CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)) // out.itemsize)
    scratch = np.empty(min(step, out.size), dtype=out.dtype)
    for start in range(0, out.size, step):
        stop = min(start + step, out.size)
        target = out[start:stop]
        if base is not None and base is not out:
            np.copyto(target, base[start:stop])
        buffer = scratch[: stop - start]
        for key, subtract in masks:
            keystream_into(key, buffer, offset=start)
            (np.subtract if subtract else np.add)(target, buffer, out=target)
    return out


def uniform_floats(key: bytes, count: int) -> np.ndarray:
    """``count`` floats uniform on the grid {0, 2^-53, ..., 1 - 2^-53} (exactly representable)."""
    words = keystream_words(key, count, np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class DeterministicStream:
    """A byte stream from one key, for public, reproducible choices (graph permutations).

    Not for secrets: its key is derived from public session data so that every
    party computes the same stream. ``randbelow`` uses rejection sampling, so
    each draw is exactly uniform.
    """

    _CHUNK = 4096

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._enc = _encryptor(key)
        self._buf = b""
        self._pos = 0

    def read(self, nbytes: int) -> bytes:
        out = bytearray()
        while len(out) < nbytes:
            if self._pos >= len(self._buf):
                self._buf = self._enc.update(bytes(self._CHUNK))
                self._pos = 0
            take = min(nbytes - len(out), len(self._buf) - self._pos)
            out += self._buf[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)

    def randbelow(self, bound: int) -> int:
        """A uniform integer in ``[0, bound)`` (rejection sampling, no modulo bias)."""
        if bound <= 0:
            raise InvalidInputError(f"randbelow needs a positive bound; got {bound}")
        bits = max(1, (bound - 1).bit_length())
        nbytes = (bits + 7) // 8
        mask = (1 << bits) - 1
        while True:
            candidate = int.from_bytes(self.read(nbytes), "little") & mask
            if candidate < bound:
                return candidate

    def shuffle(self, items: list) -> list:
        """Fisher-Yates shuffle of a copy of ``items``; uniform over permutations."""
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.randbelow(i + 1)
            out[i], out[j] = out[j], out[i]
        return out
