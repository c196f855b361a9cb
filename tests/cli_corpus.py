"""A corpus of bad inputs for every ``secagg`` subcommand (issue 18), generated into a directory.

Nothing binary is committed: :class:`Corpus` writes each bad file, configuration,
run directory, ledger, TOML file and registry on demand. :data:`CASES` lists
(case id, subcommand path, argv builder, documented exit code, fragment of the
one-line error). The exit codes are those of :mod:`simulation.cli`: 2 for bad
input, 1 for a failed verification.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.hostile_files import HOSTILE_HEADERS, NON_REGULAR


class Corpus:
    """Builds the bad inputs lazily under ``root`` (one call per artefact, cached)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path] = {}

    def _once(self, name: str, make: Callable[[Path], None]) -> str:
        if name not in self._made:
            path = self.root / name
            make(path)
            self._made[name] = path
        return str(self._made[name])

    # -- plain files -------------------------------------------------------------------
    def missing(self) -> str:
        return str(self.root / "does-not-exist")

    def directory(self) -> str:
        return self._once("a-directory", lambda p: p.mkdir())

    def binary(self) -> str:
        return self._once("binary.bin", lambda p: p.write_bytes(bytes(range(256)) * 8))

    def empty(self) -> str:
        return self._once("empty.txt", lambda p: p.write_bytes(b""))

    def fifo(self) -> str:
        return self._once("a-fifo", lambda p: os.mkfifo(p))

    def text(self, name: str, content: str) -> str:
        return self._once(name, lambda p: p.write_text(content))

    # -- TOML configurations ------------------------------------------------------------
    def toml(self, name: str, content: str) -> str:
        return self.text(f"{name}.toml", content)

    # -- cohorts -------------------------------------------------------------------------
    def cohort(self, kind: str) -> str:
        """A cohort directory whose one site holds one kind of bad file (hostile header or non-regular path)."""
        def make(path: Path) -> None:
            healthy = path / "site-1" / "healthy"
            healthy.mkdir(parents=True)
            generate = {**HOSTILE_HEADERS, **NON_REGULAR}[kind][0]
            generate(healthy)
        return self._once(f"cohort-{kind}", make)

    def cohort_text_nifti(self) -> str:
        def make(path: Path) -> None:
            (path / "site-1" / "healthy").mkdir(parents=True)
            (path / "site-1" / "healthy" / "a.nii.gz").write_text("not a NIfTI file")
        return self._once("cohort-text", make)

    # -- run directories -------------------------------------------------------------------
    def run_dir(self, kind: str) -> str:
        """A run directory damaged in one way (``kind``)."""
        def make(path: Path) -> None:
            path.mkdir()
            if kind == "empty":
                return
            if kind == "config-garbage":
                (path / "config.json").write_bytes(b"\xff\xfe garbage")
            elif kind == "config-list":
                (path / "config.json").write_text("[1, 2, 3]")
            elif kind == "config-wrong-types":
                (path / "config.json").write_text(json.dumps({"fingerprint": "0" * 64,
                                                              "config": {"rounds": "many", "sites": -1}}))
            elif kind == "config-unknown-keys":
                (path / "config.json").write_text(json.dumps({"fingerprint": "0" * 64, "config": {"warp": 9}}))
            elif kind == "config-edited":
                (path / "config.json").write_text(json.dumps({"fingerprint": "0" * 64, "config": {"rounds": 3}}))
            elif kind == "config-directory":
                (path / "config.json").mkdir()
            elif kind == "ledger-garbage":
                (path / "ledger.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
            elif kind == "ledger-text":
                (path / "ledger.sqlite").write_text("not a database at all")
            elif kind == "ledger-empty":
                (path / "ledger.sqlite").write_bytes(b"")
            elif kind == "ledger-foreign-schema":
                with sqlite3.connect(path / "ledger.sqlite") as conn:
                    conn.execute("CREATE TABLE something (x INTEGER)")
                conn.close()
            elif kind == "ledger-directory":
                (path / "ledger.sqlite").mkdir()
            elif kind in ("ledger-tampered", "ledger-head-garbage", "ledger-valid"):
                _valid_ledger(path)
                if kind == "ledger-tampered":
                    with sqlite3.connect(path / "ledger.sqlite") as conn:
                        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
                            conn.execute(f"DROP TRIGGER {trigger}")  # an attacker with file access can
                        table = _entries_table(conn)
                        column = _body_column(conn, table)
                        conn.execute(f"UPDATE {table} SET {column} = replace({column}, '1.0', '9.0')")
                    conn.close()
                if kind == "ledger-head-garbage":
                    (path / "ledger.head.json").write_text("{ not json")
            else:  # pragma: no cover - a typo in the corpus
                raise ValueError(kind)
        return self._once(f"run-{kind}", make)

    def file_as_run_dir(self) -> str:
        return self.text("not-a-run-dir.txt", "a file, not a directory")

    def out_under_a_file(self) -> str:
        return str(Path(self.text("blocker.txt", "x")) / "run")

    # -- registries and keys ------------------------------------------------------------------
    def registry(self, kind: str) -> str:
        content = {
            "garbage": "{ not json",
            "list": "[1, 2]",
            "bad-hex": json.dumps({"site-1": "zz" * 32}),
            "short-key": json.dumps({"site-1": "ab" * 8}),
            "duplicate-key": json.dumps({"site-1": "ab" * 32, "site-2": "ab" * 32}),
            "number": "42",
            "empty": "{}",
        }[kind]
        return self.text(f"registry-{kind}.json", content)

    def identity_dir(self, site: str) -> str:
        """A directory holding a real identity of ``site`` (and no node key yet)."""
        def make(path: Path) -> None:
            from simulation.federation.identity import write_identity

            write_identity(path, site)
        return self._once(f"identity-{site}", make)

    def keys_dir_with(self, site: str) -> str:
        def make(path: Path) -> None:
            path.mkdir()
            (path / f"{site}.ed25519").write_text("x")
        return self._once(f"keys-{site}", make)


def _valid_ledger(path: Path) -> None:
    from dp import PrivacyEvent, PrivacyLedger

    ledger = PrivacyLedger.create(path, run_id="corpus", delta=1e-5, budgets={"a": 1e6}, accountants=("rdp",))
    try:
        ledger.commit_round(0, [PrivacyEvent("a", 0, 1.0, 0.01, 10, 1e-5)])
    finally:
        ledger.close()


def _entries_table(conn) -> str:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return next(n for n in names if "entr" in n)


def _body_column(conn, table: str) -> str:
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    return next(c for c in columns if c in ("body", "payload", "data", "record"))


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv(corpus)`` builds the command line; ``code`` is the documented exit code."""

    id: str
    command: str  # the subcommand path, e.g. "ledger verify"
    argv: Callable[[Corpus], list]
    code: int = 2
    fragment: str = ""


def _sim(*extra):
    """``secagg simulate --tiny`` with a private cache and output under the corpus root."""
    return lambda c: ["simulate", "--tiny", "--cache-dir", str(c.root / "cache"), "--out", str(c.root / "never"),
                      *[e(c) if callable(e) else e for e in extra]]


CASES: list[Case] = [
    # demo
    Case("demo-too-few-sites", "demo", lambda c: ["demo", "--sites", "2"], 2),
    Case("demo-negative-length", "demo", lambda c: ["demo", "--length", "-5"], 2),
    Case("demo-non-number", "demo", lambda c: ["demo", "--sites", "many"], 2, "invalid int"),
    # params
    Case("params-zero-n", "params", lambda c: ["params", "--n", "0"], 2),
    Case("params-corrupt-above-one", "params", lambda c: ["params", "--n", "100", "--corrupt", "2"], 2),
    Case("params-nan-dropout", "params", lambda c: ["params", "--n", "100", "--dropout", "nan"], 2),
    Case("params-negative-bits", "params", lambda c: ["params", "--n", "100", "--security-bits", "-3"], 2),
    Case("params-infeasible", "params", lambda c: ["params", "--n", "5", "--corrupt", "0.6", "--dropout", "0.6"], 2),
    # epsilon / noise
    Case("epsilon-zero-steps", "epsilon", lambda c: ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1",
                                                     "--steps", "0", "--delta", "1e-5"], 2),
    Case("epsilon-inf-sigma", "epsilon", lambda c: ["epsilon", "--noise-multiplier", "inf", "--sample-rate", "0.1",
                                                    "--steps", "10", "--delta", "1e-5"], 2),
    Case("epsilon-delta-above-one", "epsilon", lambda c: ["epsilon", "--noise-multiplier", "1", "--sample-rate",
                                                          "0.1", "--steps", "10", "--delta", "2"], 2),
    Case("epsilon-missing-flag", "epsilon", lambda c: ["epsilon", "--noise-multiplier", "1"], 2, "required"),
    Case("noise-zero-rate", "noise", lambda c: ["noise", "--target-epsilon", "1", "--delta", "1e-5",
                                                "--sample-rate", "0", "--steps", "10"], 2, "sample rate"),
    Case("noise-nan-target", "noise", lambda c: ["noise", "--target-epsilon", "nan", "--delta", "1e-5",
                                                 "--sample-rate", "0.1", "--steps", "10"], 2),
    # simulate: configuration files (TOML)
    Case("simulate-config-missing", "simulate", _sim("--config", lambda c: c.missing()), 2, "does not exist"),
    Case("simulate-config-directory", "simulate", _sim("--config", lambda c: c.directory()), 2),
    Case("simulate-config-binary", "simulate", _sim("--config", lambda c: c.binary()), 2, "not valid TOML"),
    Case("simulate-config-fifo", "simulate", _sim("--config", lambda c: c.fifo()), 2, "not a regular file"),
    Case("simulate-config-bad-toml", "simulate", _sim("--config", lambda c: c.toml("bad", "rounds = = 3")), 2,
         "not valid TOML"),
    Case("simulate-config-unknown-key", "simulate", _sim("--config", lambda c: c.toml("unknown", "warp = 9")), 2,
         "unknown configuration keys"),
    Case("simulate-config-wrong-type", "simulate", _sim("--config", lambda c: c.toml("type", 'rounds = "many"')), 2,
         "rounds"),
    Case("simulate-config-list-value", "simulate", _sim("--config", lambda c: c.toml("list", "epsilon = [1, 2]")),
         2, "epsilon"),
    Case("simulate-config-table-value", "simulate",
         _sim("--config", lambda c: c.toml("table", "[mode]\nx = 1")), 2, "mode"),
    Case("simulate-config-huge-int", "simulate",
         _sim("--config", lambda c: c.toml("huge", "rounds = 99999999999999999")), 2),
    Case("simulate-config-bad-limits", "simulate",
         _sim("--config", lambda c: c.toml("limits", "[volume_limits]\nmax_axis = -1")), 2, "max_axis"),
    Case("simulate-config-unknown-limit", "simulate",
         _sim("--config", lambda c: c.toml("limits2", "[volume_limits]\nmax_axes = 9")), 2, "unknown volume limits"),
    Case("simulate-config-limits-not-table", "simulate",
         _sim("--config", lambda c: c.toml("limits3", "volume_limits = 5")), 2, "volume_limits"),
    Case("simulate-config-skip-invalid-string", "simulate",
         _sim("--config", lambda c: c.toml("skip", 'skip_invalid = "yes"')), 2, "skip_invalid"),
    Case("simulate-config-bad-schedule-type", "simulate",
         _sim("--config", lambda c: c.toml("sched", "dropout_schedule = 5")), 2, "dropout_schedule"),
    # simulate: dropout schedules
    Case("simulate-schedule-missing", "simulate", _sim("--dropout-schedule", lambda c: c.missing()), 2),
    Case("simulate-schedule-binary", "simulate", _sim("--dropout-schedule", lambda c: c.binary()), 2),
    Case("simulate-schedule-wrong-shape", "simulate",
         _sim("--dropout-schedule", lambda c: c.text("sched.json", "[1, 2]")), 2),
    Case("simulate-schedule-unknown-stage", "simulate",
         _sim("--dropout-schedule", lambda c: c.text("stage.json", json.dumps({"0": {"warp": ["site-1"]}}))), 2),
    Case("simulate-schedule-unknown-site", "simulate",
         _sim("--dropout-schedule", lambda c: c.text("site.json", json.dumps({"0": {"mask": ["nobody"]}}))), 2),
    # simulate: data directories and hostile files (strict mode refuses naming the file)
    Case("simulate-data-missing", "simulate", _sim("--data", lambda c: c.missing()), 2, "does not exist"),
    Case("simulate-data-is-a-file", "simulate", _sim("--data", lambda c: c.binary()), 2),
    Case("simulate-data-empty", "simulate", _sim("--data", lambda c: c.directory()), 2, "no site directories"),
    Case("simulate-data-text-nifti", "simulate", _sim("--data", lambda c: c.cohort_text_nifti()), 2,
         "not a readable NIfTI"),
    *[Case(f"simulate-data-{kind}", "simulate", _sim("--data", lambda c, kind=kind: c.cohort(kind)), 2, fragment)
      for kind, (_, fragment) in {**HOSTILE_HEADERS, **NON_REGULAR}.items()],
    Case("simulate-data-only-hostile-skip-invalid", "simulate",
         _sim("--skip-invalid", "--data", lambda c: c.cohort("gzip-bomb")), 2, "no usable volume"),
    # simulate: run directories (--out and --resume)
    Case("simulate-out-is-a-file", "simulate",
         lambda c: ["simulate", "--tiny", "--cache-dir", str(c.root / "cache"), "--out", c.binary()], 2),
    Case("simulate-out-under-a-file", "simulate",
         lambda c: ["simulate", "--tiny", "--cache-dir", str(c.root / "cache"), "--out", c.out_under_a_file()], 2),
    Case("simulate-out-not-empty", "simulate",
         lambda c: ["simulate", "--tiny", "--cache-dir", str(c.root / "cache"), "--out", c.run_dir("ledger-text")],
         2, "not empty"),
    *[Case(f"simulate-resume-{kind}", "simulate", lambda c, kind=kind: ["simulate", "--resume", c.run_dir(kind)], 2)
      for kind in ("empty", "config-garbage", "config-list", "config-wrong-types", "config-unknown-keys",
                   "config-edited", "config-directory")],
    Case("simulate-resume-missing", "simulate", lambda c: ["simulate", "--resume", c.missing()], 2,
         "not a run directory"),
    Case("simulate-resume-a-file", "simulate", lambda c: ["simulate", "--resume", c.file_as_run_dir()], 2),
    Case("simulate-resume-and-out", "simulate",
         lambda c: ["simulate", "--resume", c.run_dir("empty"), "--out", c.missing()], 2, "do not also give --out"),
    # data synth
    Case("data-synth-out-is-a-file", "data synth",
         lambda c: ["data", "synth", "--out", c.binary(), "--scale", "tiny", "--sites", "1"], 2),
    Case("data-synth-out-under-a-file", "data synth",
         lambda c: ["data", "synth", "--out", c.out_under_a_file(), "--scale", "tiny", "--sites", "1"], 2),
    Case("data-synth-bad-scale", "data synth", lambda c: ["data", "synth", "--out", c.missing(), "--scale", "huge"],
         2, "invalid choice"),
    Case("data-synth-zero-sites", "data synth", lambda c: ["data", "synth", "--out", c.missing(), "--sites", "0"], 2),
    # keys new (identities and registries)
    Case("keys-bad-site-name", "keys new", lambda c: ["keys", "new", "--site", "../etc", "--out", c.missing()], 2,
         "site name"),
    Case("keys-empty-site-name", "keys new", lambda c: ["keys", "new", "--site", "", "--out", c.missing()], 2),
    Case("keys-out-is-a-file", "keys new", lambda c: ["keys", "new", "--site", "site-1", "--out", c.binary()], 2),
    Case("keys-already-exists", "keys new",
         lambda c: ["keys", "new", "--site", "site-1", "--out", c.keys_dir_with("site-1")], 2, "already exists"),
    *[Case(f"keys-registry-{kind}", "keys new",
           lambda c, kind=kind: ["keys", "new", "--site", "site-9", "--out", str(c.root / f"keys-out-{kind}"),
                                 "--registry", c.registry(kind)], 2, "registry")
      for kind in ("garbage", "list", "bad-hex", "short-key", "duplicate-key", "number")],
    Case("keys-registry-binary", "keys new",
         lambda c: ["keys", "new", "--site", "site-8", "--out", str(c.root / "keys-bin"), "--registry", c.binary()],
         2, "registry"),
    Case("keys-registry-directory", "keys new",
         lambda c: ["keys", "new", "--site", "site-7", "--out", str(c.root / "keys-dir"), "--registry",
                    c.directory()], 2),
    # keys node-auth / register-nodes (Flower node keys)
    Case("keys-node-auth-bad-site-name", "keys node-auth",
         lambda c: ["keys", "node-auth", "--site", "../etc", "--out", c.missing()], 2, "site name"),
    Case("keys-node-auth-no-identity", "keys node-auth",
         lambda c: ["keys", "node-auth", "--site", "site-1", "--out", c.missing()], 2, "does not exist"),
    Case("keys-node-auth-registry-garbage", "keys node-auth",
         lambda c: ["keys", "node-auth", "--site", "site-1", "--out", c.identity_dir("site-1"), "--registry",
                    c.registry("garbage")], 2, "registry"),
    *[Case(f"keys-register-nodes-{kind}", "keys register-nodes",
           lambda c, kind=kind: ["keys", "register-nodes", "--registry", c.registry(kind)], 2, "registry")
      for kind in ("garbage", "duplicate-key", "empty")],
    Case("keys-register-nodes-missing-registry", "keys register-nodes",
         lambda c: ["keys", "register-nodes", "--registry", c.missing()], 2, "does not exist"),
    Case("keys-passphrase-env-unset", "keys new",
         lambda c: ["keys", "new", "--site", "site-6", "--out", str(c.root / "keys-pw"), "--passphrase-env",
                    "SECAGG_TEST_UNSET_PASSPHRASE_VARIABLE"], 2, "holds no passphrase"),
    # flower app-path / certs / check
    Case("flower-app-path-extra-argument", "flower app-path", lambda c: ["flower", "app-path", "extra"], 2,
         "unrecognized arguments"),
    Case("flower-certs-out-is-a-file", "flower certs", lambda c: ["flower", "certs", "--out", c.binary()], 2),
    Case("flower-certs-zero-days", "flower certs",
         lambda c: ["flower", "certs", "--out", str(c.root / "certs"), "--days", "0"], 2, "days"),
    # flower app-key / sign-app / supernode (only consortium-signed app bundles run on the nodes)
    Case("flower-app-key-out-is-a-file", "flower app-key", lambda c: ["flower", "app-key", "--out", c.binary()], 2),
    Case("flower-app-key-passphrase-env-unset", "flower app-key",
         lambda c: ["flower", "app-key", "--out", str(c.root / "app-key-pw"), "--passphrase-env",
                    "SECAGG_TEST_UNSET_PASSPHRASE_VARIABLE"], 2, "holds no passphrase"),
    Case("flower-sign-app-missing-app", "flower sign-app",
         lambda c: ["flower", "sign-app", c.missing(), "--key", c.missing(), "--out", str(c.root / "sigs")], 2,
         "neither an app folder nor a .fab file"),
    Case("flower-sign-app-not-an-app", "flower sign-app",
         lambda c: ["flower", "sign-app", c.directory(), "--key", c.missing(), "--out", str(c.root / "sigs")], 2,
         "flwr build"),
    Case("flower-sign-app-missing-key", "flower sign-app",
         lambda c: ["flower", "sign-app", c.binary(), "--key", c.missing(), "--out", str(c.root / "sigs")], 2,
         "does not exist"),
    Case("flower-supernode-bad-key", "flower supernode",
         lambda c: ["flower", "supernode", "--app-key", c.binary(), "--trusted-apps", c.directory(), "--"], 2,
         "app verify key"),
    Case("flower-supernode-missing-folder", "flower supernode",
         lambda c: ["flower", "supernode", "--app-key", "ab" * 32, "--trusted-apps", c.missing(), "--"], 2,
         "does not exist"),
    # a run that did not finish is a failed check (1), as documented for `flower check`
    Case("flower-check-missing", "flower check", lambda c: ["flower", "check", c.missing()], 1, "run FAILED"),
    Case("flower-check-a-file", "flower check", lambda c: ["flower", "check", c.binary()], 1, "run FAILED"),
    Case("flower-check-empty-run", "flower check", lambda c: ["flower", "check", c.run_dir("empty")], 1,
         "run FAILED"),
    # ledger show / verify
    # a damaged ledger: bad input to `show` (2), a failed verification for `verify` (1, as documented there)
    *[Case(f"ledger-{sub}-{kind}", f"ledger {sub}", lambda c, sub=sub, kind=kind: ["ledger", sub, c.run_dir(kind)],
           2 if sub == "show" else 1, "ledger" if sub == "show" else "BROKEN")
      for sub in ("show", "verify")
      for kind in ("empty", "ledger-garbage", "ledger-text", "ledger-empty", "ledger-foreign-schema",
                   "ledger-directory")],
    *[Case(f"ledger-verify-registry-{kind}", "ledger verify",
           lambda c, kind=kind: ["ledger", "verify", c.run_dir("ledger-valid"), "--registry", c.registry(kind)],
           2, "registry")
      for kind in ("garbage", "list", "bad-hex", "number")],
    Case("ledger-verify-registry-missing", "ledger verify",
         lambda c: ["ledger", "verify", c.run_dir("ledger-valid"), "--registry", c.missing()], 2, "registry"),
    Case("ledger-verify-anchors-missing", "ledger verify",
         lambda c: ["ledger", "verify", c.run_dir("ledger-valid"), "--registry", c.registry("empty"),
                    "--anchors", c.missing()], 2),
    *[Case(f"ledger-{sub}-missing", f"ledger {sub}", lambda c, sub=sub: ["ledger", sub, c.missing()], 2)
      for sub in ("show", "verify")],
    *[Case(f"ledger-{sub}-a-file", f"ledger {sub}", lambda c, sub=sub: ["ledger", sub, c.file_as_run_dir()], 2)
      for sub in ("show", "verify")],
    Case("ledger-verify-tampered", "ledger verify", lambda c: ["ledger", "verify", c.run_dir("ledger-tampered")], 1,
         "BROKEN"),
    Case("ledger-verify-head-garbage", "ledger verify",
         lambda c: ["ledger", "verify", c.run_dir("ledger-head-garbage")], 1, "BROKEN"),
    # dpia
    Case("dpia-missing-run", "dpia", lambda c: ["dpia", c.missing()], 2),
    Case("dpia-empty-run", "dpia", lambda c: ["dpia", c.run_dir("empty")], 2),
    Case("dpia-garbage-ledger", "dpia", lambda c: ["dpia", c.run_dir("ledger-garbage")], 2),
    Case("dpia-a-file", "dpia", lambda c: ["dpia", c.file_as_run_dir()], 2),
    Case("dpia-org-missing", "dpia", lambda c: ["dpia", c.run_dir("ledger-valid"), "--org", c.missing(),
                                               "-o", str(c.root / "d1.html")], 2),
    Case("dpia-org-bad-toml", "dpia", lambda c: ["dpia", c.run_dir("ledger-valid"), "--org",
                                                c.toml("org-bad", "controller = = 1"), "-o", str(c.root / "d2.html")],
         2),
    Case("dpia-org-binary", "dpia", lambda c: ["dpia", c.run_dir("ledger-valid"), "--org", c.binary(),
                                              "-o", str(c.root / "d3.html")], 2),
    Case("dpia-org-wrong-types", "dpia", lambda c: ["dpia", c.run_dir("ledger-valid"), "--org",
                                                   c.toml("org-types", "controller = [1, 2]\n[purposes]\nx = 1"),
                                                   "-o", str(c.root / "d4.html")], 2),
    Case("dpia-output-is-a-directory", "dpia", lambda c: ["dpia", c.run_dir("ledger-valid"), "-o", c.directory()], 2),
    Case("dpia-bad-format", "dpia", lambda c: ["dpia", c.run_dir("ledger-valid"), "--format", "docx"], 2,
         "invalid choice"),
    # audit
    Case("audit-nothing-given", "audit", lambda c: ["audit"], 2, "--noise-multiplier"),
    Case("audit-missing-run", "audit", lambda c: ["audit", c.missing()], 2),
    Case("audit-garbage-ledger", "audit", lambda c: ["audit", c.run_dir("ledger-garbage")], 2),
    Case("audit-bad-guesses", "audit", lambda c: ["audit", "--noise-multiplier", "1", "--sample-rate", "0.5",
                                                  "--steps", "2", "--canaries", "10", "--guesses", "9"], 2, "guesses"),
    Case("audit-bad-rate", "audit", lambda c: ["audit", "--noise-multiplier", "1", "--sample-rate", "0",
                                               "--steps", "2"], 2),
    Case("audit-bad-canaries", "audit", lambda c: ["audit", "--noise-multiplier", "1", "--sample-rate", "0.5",
                                                   "--steps", "2", "--canaries", "many"], 2, "auto"),
    Case("audit-own-training-no-run", "audit", lambda c: ["audit", "--own-training"], 2, "RUN_DIR"),
    Case("audit-own-training-missing-run", "audit", lambda c: ["audit", c.missing(), "--own-training"], 2),
    Case("audit-own-training-ledger-only", "audit", lambda c: ["audit", c.run_dir("ledger-valid"), "--own-training"],
         2),
    Case("audit-own-training-with-sigma", "audit", lambda c: ["audit", c.run_dir("ledger-valid"), "--own-training",
                                                              "--noise-multiplier", "2"], 2, "drop"),
    # export / detect / data prepare (models and scans)
    Case("export-missing-run", "export", lambda c: ["export", c.missing(), "--out", str(c.root / "m.secagg")], 2),
    Case("export-empty-run", "export", lambda c: ["export", c.run_dir("empty"), "--out", str(c.root / "m2.secagg")],
         2),
    Case("export-garbage-ledger", "export",
         lambda c: ["export", c.run_dir("ledger-garbage"), "--out", str(c.root / "m3.secagg")], 2),
    Case("detect-missing-model", "detect", lambda c: ["detect", c.missing(), c.binary(), "--out",
                                                      str(c.root / "det1")], 2),
    Case("detect-garbage-model", "detect", lambda c: ["detect", c.binary(), c.binary(), "--out",
                                                      str(c.root / "det2")], 2),
    Case("detect-empty-run-as-model", "detect", lambda c: ["detect", c.run_dir("empty"), c.binary(), "--out",
                                                           str(c.root / "det3")], 2),
    Case("data-prepare-missing-input", "data prepare",
         lambda c: ["data", "prepare", c.missing(), "--out", str(c.root / "prep1")], 2),
    Case("data-prepare-input-is-a-file", "data prepare",
         lambda c: ["data", "prepare", c.binary(), "--out", str(c.root / "prep2")], 2),
    Case("data-prepare-hostile-scan", "data prepare",
         lambda c: ["data", "prepare", c.cohort("nifti2-2^31-dims"), "--out", str(c.root / "prep3")], 2),
    # the top level
    Case("experiment-one-seed", "experiment", lambda c: ["experiment", "--tiny", "--seeds", "0", "--out",
                                                          str(c.root / "never-exp")], 2, "at least 2 seeds"),
    Case("experiment-no-federated-arm", "experiment", lambda c: ["experiment", "--tiny", "--arms", "local",
                                                                 "--out", str(c.root / "never-exp")], 2, "federated"),
    Case("experiment-missing-config", "experiment", lambda c: ["experiment", "--config", c.missing()], 2),
    Case("experiment-bad-seeds", "experiment", lambda c: ["experiment", "--seeds", "one,two"], 2),
    Case("no-command", "", lambda c: [], 2),
    Case("unknown-command", "", lambda c: ["frobnicate"], 2, "invalid choice"),
]
