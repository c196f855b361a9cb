"""The resolved configuration of a federated simulation run.

A :class:`SimulationConfig` is built from defaults, an optional TOML file
(``--config``) and command-line flags, validated as a whole (impossible
settings are refused before anything is written), stored as ``config.json``
in the run directory, and fingerprinted: ``--resume`` refuses a run directory
whose configuration differs.

Presets: ``demo`` (the default; what ``make demo`` runs: compact model,
64 x 64 slices, synthetic four-site cohort at the ``tiny`` scale, finishes in
a few minutes on two CPU cores) and ``tiny`` (a smoke-test preset that
finishes well under a minute). ``study`` documents the study-sized
configuration (FedDis-sized model, 128 x 128, ``paper`` scale); it needs a
GPU-class budget and is never run by the test suite.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .errors import SimulationInputError

__all__ = ["SimulationConfig", "SimulationConfigError", "ConfigError", "MODES", "PRESETS", "load_config"]

MODES = ("secagg", "secagg+", "he", "plain")
_SCALES = ("tiny", "small", "paper")
_BASELINES = ("local", "central")
_BUDGET_POLICIES = ("sit-out", "stop")
_ABORT_POLICIES = ("continue", "stop")
_PRIVACY_UNITS = ("patient", "slice")


class SimulationConfigError(SimulationInputError):
    """An invalid run or experiment configuration (reported in one line, exit code 2).

    Not :class:`models.errors.ConfigError`, which is the brain-MRI package's (a bad argument to a
    model, a dataset reader or a figure); see :mod:`simulation.errors` for how the two relate.
    """


#: The old name of :class:`SimulationConfigError` (the same class), kept so that existing
#: ``from simulation.config import ConfigError`` keeps working; new code says SimulationConfigError.
ConfigError = SimulationConfigError


@dataclass(frozen=True)
class SimulationConfig:
    """Every knob of a run. Defaults are the ``demo`` preset.

    Data: ``data`` (a cohort directory in the site layout, or a BIDS dataset
    or folder of them, see :mod:`models.bids`; ``None`` generates
    the synthetic cohort into ``cache_dir``), ``bids`` (the
    :class:`models.BidsOptions` as a mapping; ``None``: defaults), ``sites`` (how many synthetic
    sites), ``scale`` and ``data_seed`` of the synthetic cohort,
    ``image_size`` (slices are image_size^2), ``val_fraction`` (healthy
    subjects per site held out to fix the detection threshold).

    Training: ``model`` (a name from :func:`models.available_models`),
    ``rounds``, ``local_steps`` per round, ``sample_rate`` (Poisson rate q of
    DP-SGD, the same at every site), ``max_grad_norm`` (C), ``learning_rate``.

    Privacy: ``epsilon`` (each site's budget for the whole run) and ``delta``;
    the noise multiplier is calibrated so that rounds x local_steps steps meet
    it (tightest valid bound of RDP, PRV and PLD). ``privacy_unit``:
    ``"patient"`` (the default: DP-SGD samples patients and clips each
    patient's summed gradient, epsilon bounds add/remove of one patient) or
    ``"slice"`` (labelled option: one 2-D slice is the unit, a far weaker
    guarantee per patient). ``public_size``: a declared public number of
    units per site (agreed before training, never measured from the data);
    DP-SGD divides its noisy sum by q * public_size (by 1 when undeclared).
    ``max_slices_per_patient``: a public cap on the slices of a sampled
    patient used in one step (memory; ``None``: all).
    ``site_weights``: the FedAvg weights, public and declared before
    training (site name -> positive number; ``None``: equal weights). They
    are never derived from a site's record count, which stays at the site. ``secure_rng``: CSPRNG
    sampling and noise (off only for reproducible experiments).
    ``budget_policy``: a site that would pass its budget sits out
    (``sit-out``) or the run stops (``stop``).

    Protocol: ``mode`` (``secagg`` complete graph, ``secagg+`` sparse graph
    from the parameter finder, ``he`` CKKS homomorphic encryption with a
    weaker trust model - see :data:`secagg.he.THREAT_MODEL` - and ``plain``
    the unprotected baseline), ``threshold``
    (``None``: the smallest safe t), ``active`` (malicious-server defence),
    ``update_clip`` (per-coordinate clip of the weighted update before
    encoding), ``corrupt_fraction`` (SecAgg+ parameter finder input).

    Dropouts: ``dropout`` (per-stage drop probability of each site),
    ``dropout_schedule`` (a JSON/TOML file, or an inline mapping: round ->
    stage -> site names; used instead of ``dropout`` when set),
    ``dropout_seed``; ``on_abort``: after a round aborts for lack of
    survivors, ``continue`` with the next round or ``stop``. The demo preset
    schedules one dropout at each interesting stage and one aborted round.

    Input files: ``skip_invalid`` (leave out unusable or hostile files of
    ``data`` with a warning, counted in ``summary.json``; default: refuse the
    run naming the file) and ``volume_limits`` (a table overriding fields of
    :class:`models.nifti.VolumeLimits`, e.g. ``{"max_axis": 1024}``; ``None``:
    the defaults, at most 512 voxels per axis, 2^27 voxels, 1 GiB of voxels,
    0.1-10 mm voxels).

    Server optimiser (:mod:`simulation.federation.server_optimizer`; the in-process
    simulation only - Flower runs FedAvg): ``server_optimizer`` (``fedavg``,
    ``momentum`` or ``adam``, applied by the coordinator to the decoded mean:
    public post-processing, no privacy cost), ``server_learning_rate``
    (``None``: 1 for fedavg/momentum, 0.01 for adam), ``server_momentum``.

    ``baselines``: also train ``local`` (each site alone) and/or ``central``
    (pooled data) models with the same privacy budget, for comparison.

    Distributed DP (:mod:`dp.distributed`): ``distributed_dp`` (``"skellam"``
    or ``"ddg"``; ``None`` off) makes every site clip its update to L2 norm
    ``ddp_clip`` and add discrete noise in the integer domain before masking,
    calibrated so that the *site-level* guarantee of the released sums over
    all rounds is ``ddp_epsilon`` at ``delta`` as long as at least t -
    ``ddp_colluding`` sites add honest noise. ``ddp_bits`` forces the ring width.
    """

    preset: str = "demo"
    data: str | None = None
    cache_dir: str = ".cache/secagg"
    sites: int = 4
    scale: str = "tiny"
    data_seed: int = 0
    image_size: int = 64
    val_fraction: float = 0.25
    model: str = "compact-ae"
    rounds: int = 8
    local_steps: int = 10
    sample_rate: float = 0.1
    max_grad_norm: float = 1.0
    learning_rate: float = 2e-3
    epsilon: float = 8.0
    delta: float = 1e-5
    secure_rng: bool = True
    budget_policy: str = "sit-out"
    mode: str = "secagg"
    threshold: int | None = None
    active: bool = False
    update_clip: float = 1.0
    corrupt_fraction: float = 0.0
    dropout: float = 0.0
    dropout_schedule: str | dict | None = None
    dropout_seed: int = 0
    on_abort: str = "continue"
    baselines: tuple = ("local",)
    seed: int = 0
    distributed_dp: str | None = None
    ddp_epsilon: float = 10.0
    ddp_clip: float = 1.0
    ddp_colluding: int = 0
    ddp_bits: int | None = None
    bids: dict | None = None
    privacy_unit: str = "patient"
    public_size: int | None = None
    max_slices_per_patient: int | None = None
    site_weights: dict | None = None
    skip_invalid: bool = False
    volume_limits: dict | None = None
    server_optimizer: str = "fedavg"
    server_learning_rate: float | None = None
    server_momentum: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", tuple(self.baselines))
        self.validate()

    # -- validation ----------------------------------------------------------------

    def validate(self) -> None:
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SimulationConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")

        def number(name, low, high, *, low_open=True, high_open=True):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SimulationConfigError(f"{name} must be a number; got {value!r}")
            if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
                lo, hi = "(" if low_open else "[", ")" if high_open else "]"
                raise SimulationConfigError(f"{name} must be in {lo}{low}, {high}{hi}; got {value}")

        for name in ("sites", "rounds", "local_steps"):
            positive_int(name)
        for name, most in (("sites", 100_000), ("rounds", 100_000), ("local_steps", 10_000_000),
                           ("image_size", 1024)):
            if getattr(self, name) > most:  # past these, calibration and data generation run for days
                raise SimulationConfigError(f"{name} must be at most {most:,}; got {getattr(self, name):,}")
        positive_int("image_size", 16)
        if self.image_size % 8:
            raise SimulationConfigError(f"image_size must be a multiple of 8 (the models downsample 3 times); got {self.image_size}")
        for name in ("data_seed", "dropout_seed", "seed"):
            positive_int(name, 0)
        number("val_fraction", 0, 1)
        number("sample_rate", 0, 1, high_open=False)
        number("max_grad_norm", 0, math.inf)
        number("learning_rate", 0, math.inf)
        number("epsilon", 0, math.inf)
        number("delta", 0, 1)
        number("update_clip", 0, math.inf)
        number("corrupt_fraction", 0, 1, low_open=False)
        number("dropout", 0, 1, low_open=False)
        if self.mode not in MODES:
            raise SimulationConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.scale not in _SCALES:
            raise SimulationConfigError(f"unknown scale {self.scale!r}; choose one of {', '.join(_SCALES)}")
        if self.budget_policy not in _BUDGET_POLICIES:
            raise SimulationConfigError(f"budget_policy must be one of {_BUDGET_POLICIES}; got {self.budget_policy!r}")
        if self.on_abort not in _ABORT_POLICIES:
            raise SimulationConfigError(f"on_abort must be one of {_ABORT_POLICIES}; got {self.on_abort!r}")
        unknown = [b for b in self.baselines if b not in _BASELINES]
        if unknown:
            raise SimulationConfigError(f"unknown baselines {unknown}; choose from {', '.join(_BASELINES)}")
        if self.threshold is not None:
            positive_int("threshold", 1)
        if self.dropout_schedule is not None and not isinstance(self.dropout_schedule, (str, dict)):
            raise SimulationConfigError("dropout_schedule must be a file path or a mapping round -> stage -> [sites]")
        if self.distributed_dp is not None:
            if self.distributed_dp not in ("skellam", "ddg"):
                raise SimulationConfigError(f"distributed_dp must be 'skellam' or 'ddg'; got {self.distributed_dp!r}")
            if self.mode == "he":
                raise SimulationConfigError("distributed DP adds integer noise before masking; it does not apply to --mode he")
            number("ddp_epsilon", 0, math.inf)
            number("ddp_clip", 0, math.inf)
            positive_int("ddp_colluding", 0)
            if self.ddp_bits not in (None, 32, 64):
                raise SimulationConfigError(f"ddp_bits must be 32 or 64; got {self.ddp_bits!r}")
        if self.privacy_unit not in _PRIVACY_UNITS:
            raise SimulationConfigError(f"privacy_unit must be one of {', '.join(_PRIVACY_UNITS)}; got {self.privacy_unit!r}")
        for name in ("public_size", "max_slices_per_patient"):
            if getattr(self, name) is not None:
                positive_int(name, 1)
        if self.site_weights is not None:
            if not isinstance(self.site_weights, dict) or not self.site_weights:
                raise SimulationConfigError("site_weights must be a mapping site name -> positive public weight")
            for site, weight in self.site_weights.items():
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                        math.isfinite(weight) and weight > 0):
                    raise SimulationConfigError(f"site_weights[{site!r}] must be a positive number; got {weight!r}")
            if self.distributed_dp is not None:
                # The distributed-DP path sums unweighted integer updates (each site's noise share is calibrated
                # for one unit contribution), so declared weights would be silently ignored.
                raise SimulationConfigError("site_weights cannot be used with distributed_dp: its sums are unweighted "
                                  "(every site counts once); drop site_weights or distributed_dp")
        if not isinstance(self.skip_invalid, bool):
            raise SimulationConfigError(f"skip_invalid must be true or false; got {self.skip_invalid!r}")
        if self.volume_limits is not None:
            try:
                from models.nifti import VolumeLimits
            except ImportError:  # the mri extra is missing: reported when the run starts
                pass
            else:
                try:
                    VolumeLimits.from_mapping(self.volume_limits)
                except ValueError as exc:
                    raise SimulationConfigError(str(exc)) from None
        try:
            self.server_rule()
        except ValueError as exc:
            raise SimulationConfigError(str(exc)) from None
        if self.active and self.mode == "plain":
            raise SimulationConfigError("active mode needs a masking protocol; it is meaningless with --mode plain")
        if self.bids is not None and not isinstance(self.bids, dict):
            raise SimulationConfigError("bids must be a mapping of BIDS reading options (a [bids] table)")
        try:
            from models import BidsOptions, available_models
            from models.errors import ConfigError as ModelsConfigError
        except ImportError:  # the mri extra is missing: reported when the run starts
            return
        if self.bids is not None:
            try:
                BidsOptions.from_dict(self.bids)
            except ModelsConfigError as exc:
                raise SimulationConfigError(str(exc)) from None
        if self.model not in available_models():
            raise SimulationConfigError(f"unknown model {self.model!r}; choose one of {', '.join(available_models())}")

    # -- serialisation -------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        data["baselines"] = list(self.baselines)
        if data["bids"] is None:  # added later: left out when unset, so older run directories still resume
            del data["bids"]
        else:
            data["bids"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["bids"].items()}
        for name, default in (("server_optimizer", "fedavg"), ("server_learning_rate", None), ("server_momentum", 0.9)):
            if data[name] == default:  # added later too: the default leaves older fingerprints unchanged
                del data[name]
        return data

    def server_rule(self):
        """The coordinator's update rule (:mod:`simulation.federation.server_optimizer`)."""
        from .federation.server_optimizer import ServerRule

        return ServerRule(self.server_optimizer, self.server_learning_rate, momentum=self.server_momentum)

    def public_weights(self, site_names) -> dict:
        """The declared public FedAvg weight of each site (equal weights when none are declared)."""
        names = sorted(site_names)
        if self.site_weights is None:
            return {name: 1.0 for name in names}
        missing, unknown = sorted(set(names) - set(self.site_weights)), sorted(set(self.site_weights) - set(names))
        if missing or unknown:
            raise SimulationConfigError(f"site_weights must name exactly the sites {names}; missing {missing}, unknown {unknown}")
        return {name: float(self.site_weights[name]) for name in names}

    def fingerprint(self) -> str:
        """SHA-256 of the configuration (what ``--resume`` compares)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def with_overrides(self, **overrides) -> "SimulationConfig":
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise SimulationConfigError(f"unknown configuration keys {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **overrides)


#: Named starting points; flags and the TOML file override them.
#: The demo's dropouts: every path of the protocol once (sites are named site-1..site-4).
DEMO_DROPOUTS = {
    "1": {"unmask": ["site-3"]},  # uploaded, then vanished: still in the sum (peers reveal its self-mask shares)
    "3": {"share": ["site-2"]},  # advertised keys, then vanished: excluded, spent nothing
    "5": {"mask": ["site-4"]},  # shared keys, never uploaded: peers reveal its key shares to remove its masks
    "6": {"advertise": ["site-1", "site-2"]},  # two of four gone: fewer than t = 3, the round aborts cleanly
}

PRESETS: dict[str, dict] = {
    "demo": {"dropout_schedule": DEMO_DROPOUTS},
    "tiny": {
        "preset": "tiny", "rounds": 2, "local_steps": 3, "image_size": 32, "sites": 3, "baselines": (),
        "epsilon": 10.0,
    },
    "study": {
        "preset": "study", "model": "feddis", "image_size": 128, "scale": "paper", "rounds": 50,
        "local_steps": 100, "sample_rate": 0.01, "epsilon": 8.0, "baselines": ("local", "central"),
    },
}


def load_config(*, preset: str = "demo", toml_path: str | None = None, **overrides) -> SimulationConfig:
    """Defaults < preset < TOML file < command-line overrides (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise SimulationConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: dict = {"preset": preset, **PRESETS[preset]}
    if toml_path is not None:
        path = Path(toml_path)
        if path.exists() and not path.is_file():  # a FIFO or device would block or never end
            raise SimulationConfigError(f"configuration file {path} is not a regular file")
        try:
            values.update(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise SimulationConfigError(f"configuration file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SimulationConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "dropout" in overrides and "dropout_schedule" not in overrides:
        values["dropout_schedule"] = None  # an explicit --dropout replaces the preset's schedule
    elif values.get("dropout_schedule") is DEMO_DROPOUTS and ({"data", "sites"} & set(overrides)):
        # The scripted demo names site-1..site-4; other cohorts get random dropouts instead.
        values["dropout_schedule"] = None
        values.setdefault("dropout", 0.02)
    if isinstance(overrides.get("bids"), dict) and isinstance(values.get("bids"), dict):
        overrides["bids"] = {**values["bids"], **overrides["bids"]}  # a flag changes one BIDS option, not all
    values.update(overrides)
    known = {f.name for f in fields(SimulationConfig)}
    unknown = set(values) - known
    if unknown:
        raise SimulationConfigError(f"unknown configuration keys {sorted(unknown)}; known: {sorted(known)}")
    try:
        return SimulationConfig(**values)
    except TypeError as exc:
        raise SimulationConfigError(f"invalid configuration: {exc}") from None
