"""Optional aggregation path: additively homomorphic encryption with CKKS (TenSEAL).

**Weaker trust model than masking - read :data:`THREAT_MODEL` before offering it.**

One site, the *key holder*, creates a CKKS key for the session and sends the
secret context to every other site, sealed to that site's X25519 key
(X25519 -> HKDF with a label and the session fingerprint -> XChaCha20-Poly1305
whose associated data binds session, key holder, recipient and the public
context), relayed by the coordinator. The coordinator only ever holds the
public context (the parameters, no key of any kind). Each site encrypts its
encoded, pre-weighted update (FedAvg weight in one extra slot), N/2 values per
ciphertext; the coordinator adds the ciphertexts of the sites that arrived
(at least t); the key holder decrypts only that sum, rounds it to the exact
integer sum of the encodings, and returns it. In active mode every key,
context, upload and the sum are Ed25519-signed, and the key holder receives
the individual signed uploads, checks that at least t distinct participants
of this session signed them, and re-sums them itself, so it is never a
decryption oracle for a malicious coordinator.

Sessions are sans-IO and share the masking path's session skeleton
(:mod:`secagg.session`): :class:`HEClientSession` (every site; the key holder
is the site named by ``HESessionConfig.key_holder``), :class:`HEServerSession`
(the coordinator), with every round and transition in one table per role
(:mod:`secagg.he.transitions`), typed frozen messages with a canonical,
versioned wire encoding (:mod:`secagg.he.wire`), and :func:`run_local_he`,
the in-process runner.

TenSEAL is imported lazily: this package imports without it, and anything
that needs CKKS raises :class:`HEUnavailableError` naming ``pip install
'secagg[he]'``.
"""

from .ckks import CKKSContext, require_tenseal, tenseal_available
from .client import HEClientSession, HEClientState
from .config import HE_MAX_VECTOR_LENGTH, HESessionConfig
from .errors import HEUnavailableError, KeyHolderUnavailableError, SecretKeyUnavailableError
from .keyschedule import context_id
from .local import HELocalResult, run_local_he
from .messages import (
    HEAdvertise,
    HEAdvertisedKey,
    HEContextBundle,
    HEContextDelivery,
    HEContribution,
    HEDecryptedSum,
    HEDecryptRequest,
    HEEncryptedInput,
    HEKeyDirectory,
)
from .params import HEParameters, find_he_parameters
from .server import HEServerSession, HEServerStage
from .transitions import HE_ANSWER_STAGE, HE_STAGES
from .wire import decode, encode

#: The HE path's threat model, for the CLI, the README and the DPIA to print verbatim.
THREAT_MODEL = """\
Homomorphic-encryption aggregation (CKKS via TenSEAL) - threat model

What it protects: the coordinator sees only ciphertexts, public CKKS parameters
(it never holds a secret key, so it can add ciphertexts but neither decrypt nor
encrypt) and, at the end, the sum of the updates of at least t sites whose
uploads arrived. Sites and the key holder never see another site's update in
the clear unless they misbehave. The decrypted sum is rounded to the exact
integer sum of the sites' fixed-point encodings, so it carries no CKKS noise
(noise in released decryptions can leak the secret key). A fresh key is made
for every session (every federated round).

What it does NOT protect - weaker than masking (the default secure-aggregation path):
  * All sites share ONE secret key. ANY ONE site colluding with the coordinator
    can decrypt EVERY site's individual update.
  * The key holder is a single point of trust: it creates the key, could decrypt
    every upload it sees, and in active mode it receives every individual upload
    (to verify and re-sum them). It is also a single point of failure: if it drops
    out, the round aborts with no output.
  * Semi-honest mode (no signatures) protects only against an honest-but-curious
    coordinator: an active coordinator could substitute keys, replace the key
    holder's context, or ask the key holder to decrypt a "sum" it forged (for
    example one site's upload plus differences of other uploads, which cancel
    out). Active mode (Ed25519
    signatures under a registry of long-term keys) closes these: the key holder
    decrypts only a sum it recomputed from at least t distinct valid signed
    uploads of this session, once per session.
  * Like masking, HE does not check that an input is well-formed beyond the
    range of the sum: a malicious site can bias the sum within the clipping range,
    or make the round fail by uploading garbage (the key holder then refuses to
    release the sum).
  * Differential privacy is a separate layer: the sum itself is released.

Masking (secagg.ClientSession / secagg.ServerSession, Bonawitz et al. 2017; the default
path) does not have these weaknesses: there is no shared decryption key and no key
holder; a coordinator colluding with sites (up to the corrupt fraction its parameters
were chosen for) learns nothing about an honest site's update beyond the sum. Prefer
masking unless a reason specific to the deployment requires HE.
"""

__all__ = [
    "THREAT_MODEL",
    # sessions
    "HEClientSession", "HEClientState", "HEServerSession", "HEServerStage", "HESessionConfig", "HE_MAX_VECTOR_LENGTH",
    # in-process runner
    "run_local_he", "HELocalResult", "HE_STAGES", "HE_ANSWER_STAGE",
    # parameters and CKKS
    "HEParameters", "find_he_parameters", "CKKSContext", "context_id", "require_tenseal", "tenseal_available",
    # messages and wire
    "HEAdvertise", "HEAdvertisedKey", "HEKeyDirectory", "HEContextBundle", "HEContextDelivery",
    "HEEncryptedInput", "HEContribution", "HEDecryptRequest", "HEDecryptedSum", "encode", "decode",
    # errors
    "HEUnavailableError", "SecretKeyUnavailableError", "KeyHolderUnavailableError",
]
