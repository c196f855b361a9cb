"""The exported model file (``model.secagg``): weights and everything needed to use them, in one file.

**Format (version 1).** A `safetensors <https://github.com/huggingface/safetensors>`_
file - no pickle, so loading it cannot run code:

* 8 bytes: little-endian length ``n`` of the JSON header;
* ``n`` bytes: JSON header: per tensor its dtype, shape and byte range, and
  ``__metadata__`` (string -> string) with ``"format": "secagg-model"``,
  ``"format_version": "1"`` and ``"manifest"``, a JSON document;
* the tensors' bytes.

The manifest holds ``architecture`` (a :func:`models.available_models` name)
and ``image_size``; ``preprocess`` (the :class:`~models.preprocess.PreprocessConfig`
the model was trained with) and ``modality`` (the BIDS suffix of the training
scans); ``threshold`` (the detection threshold and where it came from) and
``median_size``; ``privacy`` (the guarantee it was trained under: epsilon per
site, delta, unit, accountant); ``source`` (the run it came from); and
``weights_sha256``, the SHA-256 of the tensor bytes.

**Loading** (:func:`load_model_file`) refuses, each with a one-line
:class:`ModelFileError`: a missing file; a file shorter than its header or
its tensors claim (truncated); a header that is not JSON, or a file that is
not a secagg model; a ``format_version`` newer than :data:`FORMAT_VERSION`
(written by a newer secagg: upgrade to read it); tensor bytes whose SHA-256
differs from the manifest's (corrupt); weights that do not fit the named
architecture.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelsError
from .preprocess import PreprocessConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "ModelFile", "save_model_file", "load_model_file"]

FORMAT = "secagg-model"
#: The newest format this code reads and the one it writes.
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class ModelFileError(ModelsError, ValueError):
    """An exported model file that cannot be used (missing, truncated, corrupt, from a newer version)."""


@dataclass(frozen=True)
class ModelFile:
    """An exported model: weights (``state_dict``, name -> CPU tensor) and its manifest fields."""

    architecture: str
    image_size: int
    preprocess: PreprocessConfig
    threshold: dict
    median_size: int
    privacy: dict
    modality: str = "FLAIR"
    source: dict = field(default_factory=dict)
    state_dict: dict = field(default_factory=dict, repr=False)
    path: Path | None = None

    def manifest(self) -> dict:
        return {"architecture": self.architecture, "image_size": self.image_size,
                "preprocess": self.preprocess.as_dict(), "modality": self.modality,
                "threshold": self.threshold, "median_size": self.median_size,
                "privacy": self.privacy, "source": self.source}

    def build_model(self):
        """The named architecture with these weights, in eval mode (strict: every parameter must match)."""
        from .registry import create_model

        model = create_model(self.architecture, image_size=self.image_size)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            where = self.path or "model file"
            raise ModelFileError(f"{where}: weights do not fit architecture {self.architecture!r} "
                                 f"({' '.join(str(exc).split())[:200]})") from None
        return model.eval()


def _payload(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def save_model_file(path: str | Path, model: ModelFile) -> Path:
    """Write ``model`` to ``path`` (format in the module docstring) via a temporary file and rename."""
    import os

    from safetensors.torch import save

    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict.items()}
    if not tensors:
        raise ModelFileError("no weights to export")
    # The tensor bytes do not depend on the metadata: hash them first, then write them with the digest.
    _, data = _payload(save(tensors, metadata={"format": FORMAT}))
    manifest = model.manifest() | {"weights_sha256": hashlib.sha256(data).hexdigest()}
    blob = save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                   "manifest": json.dumps(manifest, sort_keys=True)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_model_file(path: str | Path) -> ModelFile:
    """Read and check an exported model (every refusal is a one-line :class:`ModelFileError`)."""
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file does not exist")
    blob = path.read_bytes()
    if len(blob) < 8:
        raise ModelFileError(f"{path}: truncated ({len(blob)} bytes; not even a header length)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER:
        raise ModelFileError(f"{path}: not a secagg model file (header length {n} is implausible)")
    if 8 + n > len(blob):
        raise ModelFileError(f"{path}: truncated ({len(blob)} bytes; the header alone needs {8 + n})")
    try:
        header = json.loads(blob[8 : 8 + n])
        meta = header.get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise ModelFileError(f"{path}: not a secagg model file (header is not JSON)") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a secagg model file (no '{FORMAT}' format tag)")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ModelFileError(f"{path}: format_version {meta.get('format_version')!r} is not an integer") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer secagg (model format {version}); this one reads format "
                             f"{FORMAT_VERSION} and older: upgrade secagg to use it")
    if version < 1:
        raise ModelFileError(f"{path}: unknown model format version {version}")
    ends = [info["data_offsets"][1] for key, info in header.items()
            if key != "__metadata__" and isinstance(info, dict) and "data_offsets" in info]
    needed = 8 + n + (max(ends) if ends else 0)
    if len(blob) < needed:
        raise ModelFileError(f"{path}: truncated ({len(blob)} of {needed} bytes)")
    try:
        manifest = json.loads(meta["manifest"])
    except (KeyError, ValueError):
        raise ModelFileError(f"{path}: manifest missing or not JSON") from None
    data = blob[8 + n :]
    if hashlib.sha256(data).hexdigest() != manifest.get("weights_sha256"):
        raise ModelFileError(f"{path}: corrupt (the weights' SHA-256 differs from the manifest's)")
    try:
        state = load(blob)
        preprocess = PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in manifest["preprocess"].items()})
        return ModelFile(
            architecture=str(manifest["architecture"]), image_size=int(manifest["image_size"]),
            preprocess=preprocess, threshold=dict(manifest["threshold"]), median_size=int(manifest["median_size"]),
            privacy=dict(manifest["privacy"]), modality=str(manifest.get("modality", "FLAIR")),
            source=dict(manifest.get("source", {})), state_dict=state, path=path,
        )
    except ModelsError as exc:
        raise ModelFileError(f"{path}: invalid manifest ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid manifest or weights ({type(exc).__name__}: {exc})") from None
