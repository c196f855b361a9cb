"""Data Protection Impact Assessment (GDPR Art. 35) drawn from a run directory.

:func:`build_dpia` reads what the run itself recorded - ``config.json``,
``summary.json``, ``metrics.jsonl``, the privacy ledger (opened with
:meth:`dp.ledger.PrivacyLedger.open` and checked with
:func:`dp.ledger.verify_ledger`), ``plots/*.png`` and, when present, an
empirical audit ``audit.json`` - plus the organisational facts that no run
can know (controller, DPO, purposes, lawful basis, retention, ...) from a
TOML file (:data:`ORG_FIELDS`; a documented example ships as
``simulation/templates/org.example.toml``). Every number in the document
comes from the run; an organisational fact that is missing stays visibly
unfilled as ``[TO BE COMPLETED: <field>]``.

Structure: Art. 35(7)(a) systematic description and purposes, (b) necessity
and proportionality, (c) risks to the rights and freedoms of data subjects,
(d) measures envisaged; screening against the nine criteria of the Article 29
Working Party guidelines WP248 rev.01; roles; a data-flow diagram (inline
SVG); the three risk families of the CNIL PIA method (illegitimate access,
unwanted modification, disappearance of data) and model-specific risks, each
with severity and likelihood on the CNIL four-level scale (negligible,
limited, significant, maximum); residual risk, DPO advice and sign-off.

The risk levels are a documented, rule-based *starting point* derived from the
run's parameters (see :func:`_risks`); the controller and the DPO must review
them - the document says so.

:func:`render_dpia` renders the document to self-contained HTML (inline CSS,
figures embedded as base64 PNG), Markdown, or PDF (headless Chromium, only
when installed). Errors (no ledger, bad org file) raise :class:`DPIAError`,
which the CLI reports in one line with exit code 2.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

from .errors import SimulationInputError

__all__ = ["DPIAError", "ORG_FIELDS", "LEVELS", "PLACEHOLDER", "load_org", "build_dpia", "render_dpia",
           "write_dpia", "find_chromium"]

TEMPLATES = Path(__file__).with_name("templates")
LEVELS = ("negligible", "limited", "significant", "maximum")  # CNIL PIA four-level scale
PLACEHOLDER = "[TO BE COMPLETED: {}]"


class DPIAError(SimulationInputError):
    """The DPIA cannot be produced (no ledger, bad organisation file, no renderer)."""


# Organisational facts: key -> (type, description). Types: "str" or "list" (of strings).
ORG_FIELDS: dict[str, tuple[str, str]] = {
    "controller": ("str", "legal name of the controller (or lead joint controller)"),
    "controller_contact": ("str", "address / e-mail of the controller"),
    "joint_controllers": ("list", "other controllers (the participating hospitals), Art. 26 arrangement"),
    "processors": ("list", "processors (e.g. the party operating the coordinator), Art. 28 contracts"),
    "dpo": ("str", "name of the data protection officer"),
    "dpo_contact": ("str", "contact of the DPO"),
    "project": ("str", "name of the project or study"),
    "purposes": ("list", "specified, explicit purposes (Art. 5(1)(b))"),
    "lawful_basis": ("str", "Art. 6(1) lawful basis, e.g. 'Art. 6(1)(e) public interest task'"),
    "art9_condition": ("str", "Art. 9(2) condition for health data, e.g. 'Art. 9(2)(j) scientific research'"),
    "national_law": ("str", "Member-State law relied on (Art. 9(4), Art. 89 safeguards)"),
    "data_subjects": ("str", "who the data subjects are, e.g. 'adult patients who had a brain MRI'"),
    "data_categories": ("list", "categories of personal data at the sites"),
    "data_sources": ("str", "where the scans come from (PACS, research cohort, ...)"),
    "recipients": ("list", "recipients of the trained model and of results"),
    "retention": ("str", "retention of the scans, the model updates, the model and the run directory"),
    "international_transfers": ("str", "transfers outside the EEA and their Chapter V safeguard, or 'none'"),
    "information_of_subjects": ("str", "how data subjects are informed (Art. 13/14)"),
    "data_subject_rights": ("str", "how rights are exercised (access, objection, erasure: model implications)"),
    "views_of_data_subjects": ("str", "Art. 35(9): views of data subjects or their representatives"),
    "security_measures": ("list", "organisational and site security measures beyond this software"),
    "assessor": ("str", "who carried out this assessment"),
    "dpo_advice": ("str", "the DPO's advice (Art. 35(2)) and whether it was followed"),
    "approver": ("str", "who approves the residual risk on behalf of the controller"),
    "approval_date": ("str", "date of approval"),
    "review_date": ("str", "date of the next review (Art. 35(11))"),
    "prior_consultation": ("str", "Art. 36 prior consultation of the supervisory authority: needed or not, why"),
}


def _todo(name: str) -> str:
    return PLACEHOLDER.format(name)


def load_org(path) -> dict:
    """Read and validate the organisation TOML; unknown keys and wrong types raise :class:`DPIAError`."""
    if path is None:
        return {}
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise DPIAError(f"organisation file {path} is not a regular file")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DPIAError(f"organisation file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DPIAError(f"cannot read organisation file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DPIAError(f"organisation file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(ORG_FIELDS))
    if unknown:
        raise DPIAError(f"organisation file {path}: unknown key(s) {', '.join(unknown)}; "
                        f"known keys: {', '.join(ORG_FIELDS)}")
    out = {}
    for key, value in data.items():
        kind = ORG_FIELDS[key][0]
        if kind == "str":
            if not isinstance(value, str):
                raise DPIAError(f"organisation file {path}: {key} must be a string; got {type(value).__name__}")
            value = value.strip()
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DPIAError(f"organisation file {path}: {key} must be a list of strings; got "
                                f"{type(value).__name__}")
            value = [v.strip() for v in value if v.strip()]
        if value:
            out[key] = value
    return out


# -- reading the run -------------------------------------------------------------------


def _read_json(path: Path, what: str, required: bool):
    if not path.is_file():
        if required:
            raise DPIAError(f"{path} is missing: {what}")
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DPIAError(f"{path} is corrupt ({what})") from None


def _read_run(run_dir: Path) -> dict:
    from dp.errors import LedgerError
    from dp.ledger import LEDGER_FILE, PrivacyLedger

    if not run_dir.is_dir():
        raise DPIAError(f"{run_dir} is not a directory")
    if not (run_dir / LEDGER_FILE).is_file():
        raise DPIAError(f"no privacy ledger in {run_dir} ({LEDGER_FILE} missing): a DPIA needs the run's ledger")
    stored = _read_json(run_dir / "config.json", "the run's configuration", required=True)
    config = stored.get("config", stored)
    summary = _read_json(run_dir / "summary.json", "the run's summary (did the run finish?)", required=False)
    if isinstance(summary, dict) and summary.get("seeded_noise"):
        raise DPIAError(f"{run_dir} is a `secagg experiment` run whose DP noise was seeded (seeded noise: not a "
                        "privacy guarantee); no DPIA can rest on it")
    audit = _read_json(run_dir / "audit.json", "the empirical privacy audit", required=False)
    metrics = []
    if (run_dir / "metrics.jsonl").is_file():
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:
                break
    try:
        with PrivacyLedger.open(run_dir) as ledger:
            genesis = next(e.body for e in ledger.entries() if e.kind == "genesis")
            sites = sorted(ledger.budgets)
            reports = {s: ledger.spent(s) for s in sites}
            spent = {s: (r.to_dict() if r is not None else None) for s, r in reports.items()}
            events = {s: [e.to_dict() for e in ledger.events(s)] for s in sites}
            site_level = {s: ledger.site_level_spent(s) for s in sites} if ledger.site_level else None
            ledger_info = {
                "run_id": ledger.run_id, "delta": ledger.delta, "budgets": dict(ledger.budgets),
                "accountants": list(ledger.accountants), "libraries": dict(genesis.get("libraries", {})),
                "site_level_meta": ledger.site_level, "entries": len(ledger.entries()),
                "spent": spent, "events": events, "site_level": site_level,
            }
    except LedgerError as exc:
        raise DPIAError(str(exc)) from None
    from .ledger_check import verify_run_ledger

    check = verify_run_ledger(run_dir)
    verification = check.report
    ledger_info["verification_scope"] = check.scope
    figures = sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    return {"config": config, "fingerprint": stored.get("fingerprint"), "summary": summary, "audit": audit,
            "metrics": metrics, "ledger": ledger_info, "verification": verification, "figures": figures}


# -- formatting helpers ----------------------------------------------------------------


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{value:.{digits}f}" else f"{value}"


def _eps(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _org(org: dict, key: str) -> str:
    value = org.get(key)
    if value is None:
        return _todo(key)
    return "; ".join(value) if isinstance(value, list) else value


def _org_list(org: dict, key: str) -> list[str]:
    value = org.get(key)
    if value is None:
        return [_todo(key)]
    return list(value) if isinstance(value, list) else [value]


def _level(i: int) -> str:
    return LEVELS[max(0, min(3, i))]


# -- the document ----------------------------------------------------------------------


def _p(text):
    return {"type": "p", "text": text}


def _table(header, rows):
    return {"type": "table", "header": list(header), "rows": [[str(c) for c in r] for r in rows]}


def _list(items):
    return {"type": "list", "items": [str(i) for i in items]}


def _pre(text):
    return {"type": "pre", "text": text}


def _warn(text):
    return {"type": "warn", "text": text}


def _section(sid, title, *blocks):
    return {"id": sid, "title": title, "blocks": [b for b in blocks if b is not None]}


def _protocol_facts(run: dict) -> dict:
    cfg, summary = run["config"], run["summary"] or {}
    mode = cfg.get("mode")
    finder = summary.get("secagg_plus_parameters")
    facts = {
        "mode": mode,
        "active": bool(cfg.get("active")),
        "threshold": summary.get("threshold", cfg.get("threshold")),
        "graph": summary.get("graph", "n/a"),
        "degree": finder.get("degree") if finder else None,
        "complete": (finder.get("complete") if finder else None) or summary.get("graph") == "complete",
        "security_failure": finder.get("security_failure") if finder else None,
        "correctness_failure": finder.get("correctness_failure") if finder else None,
        "corrupt_fraction": cfg.get("corrupt_fraction"),
        "dropout": cfg.get("dropout"),
        "update_clip": cfg.get("update_clip"),
    }
    return facts


def _failure(value, complete: bool) -> str:
    if value is None:
        return "n/a (no SecAgg+ parameter finder in this mode)"
    if value == 0:
        return "0 (SecAgg+ parameter finder" + ("; complete graph)" if complete else ")")
    return f"<= {value:.3g} (SecAgg+ parameter finder)"


def _node_authentication_text(fact) -> str:
    """The run's node-authentication settings as its summary recorded them (``run-config node-auth`` and the
    registry's node keys); the SuperLink's own ``--enable-supernode-auth`` is not visible to the coordinator."""
    if not isinstance(fact, dict):
        return "not recorded for this run"
    checked, unchecked = list(fact.get("sites_checked") or []), list(fact.get("sites_unchecked") or [])
    unseen = ("; whether the SuperLink itself ran with --enable-supernode-auth (which keeps nodes with "
              "unregistered keys out altogether) is not recorded by the coordinator")
    if fact.get("required"):
        return ("ON, required by the run configuration (node-auth = true): every registered site's node had "
                "to be known to the SuperLink under the Flower node key the consortium's registry binds to that "
                f"site ({', '.join(checked)})" + unseen)
    if checked:
        return ("partial, not required by the run configuration (node-auth = false): the Flower node keys of "
                f"{', '.join(checked)} were checked against the registry; "
                + (f"those of {', '.join(unchecked)} were not" if unchecked else "every site had one") + unseen)
    return ("OFF in the run configuration (node-auth = false, and no site's Flower node key was checked at "
            "registration): the coordinator did not check which Flower node a site's name came from" + unseen)


def _mode_text(mode: str, active: bool) -> str:
    adversary = "actively malicious coordinator (signatures + consistency check)" if active else \
        "honest-but-curious coordinator (semi-honest mode)"
    return {
        "secagg": f"secure aggregation by pairwise and self masking (Bonawitz et al. 2017), complete graph; "
                  f"defends against an {adversary}",
        "secagg+": f"secure aggregation by masking over a sparse SecAgg+ graph (Bell et al. 2020); defends "
                   f"against an {adversary}"
                   + ("; a malicious coordinator that claims sites dropped can still learn separate sums of large "
                      "groups of sites, never one site's update (docs/security.md)" if active else ""),
        "he": f"homomorphic encryption (CKKS, TenSEAL) with ONE shared secret key held by the sites; "
              f"{'active' if active else 'semi-honest'} mode - WEAKER trust model, see the threat model below",
        "plain": "PLAIN: NO protection of the updates - the coordinator sees every site's individual update",
    }.get(mode, f"unknown mode {mode!r}")


def _dataflow_svg(mode: str) -> str:
    third = {
        "secagg": ("masked update", "pairwise + self masks"),
        "secagg+": ("masked update", "SecAgg+ sparse masks"),
        "he": ("encrypted update", "CKKS, one shared key"),
        "plain": ("PLAIN update", "NO protection"),
    }.get(mode, ("update", mode))
    boxes = [
        ("Local scans", "stay at each hospital", "#e8f1fb"),
        ("Clipped, noised update", "DP-SGD at the site", "#e8f1fb"),
        (third[0], third[1], "#fdecea" if mode == "plain" else "#eaf7ea"),
        ("Summed aggregate", "coordinator: sum only" if mode != "plain" else "coordinator sees each", "#fff6e0"),
        ("Global model", "sent back to sites", "#f0ecfa"),
    ]
    w, h, gap, x0, y0 = 150, 70, 36, 10, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="data flow" viewBox="0 0 '
             f'{x0 * 2 + 5 * w + 4 * gap} 160" width="100%" font-family="sans-serif" font-size="12">',
             '<defs><marker id="arr" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
             '<path d="M0,0 L10,4 L0,8 z" fill="#333"/></marker></defs>',
             '<text x="10" y="20" font-size="13" font-weight="bold">Site (hospital) boundary</text>',
             f'<rect x="4" y="30" width="{2 * w + gap + 12}" height="{h + 20}" fill="none" stroke="#1f5fa8" '
             'stroke-dasharray="5,4"/>']
    for i, (title, sub, fill) in enumerate(boxes):
        x = x0 + i * (w + gap)
        stroke = "#c0392b" if (mode == "plain" and i == 2) else "#333"
        parts.append(f'<rect x="{x}" y="{y0}" width="{w}" height="{h}" rx="8" fill="{fill}" stroke="{stroke}"/>')
        parts.append(f'<text x="{x + w / 2}" y="{y0 + 28}" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<text x="{x + w / 2}" y="{y0 + 48}" text-anchor="middle">{sub}</text>')
        if i < len(boxes) - 1:
            parts.append(f'<line x1="{x + w}" y1="{y0 + h / 2}" x2="{x + w + gap - 2}" y2="{y0 + h / 2}" '
                         'stroke="#333" stroke-width="2" marker-end="url(#arr)"/>')
    parts.append(f'<text x="10" y="150">Only what crosses the dashed boundary leaves a hospital: '
                 f'{third[0].lower()} ({third[1]}).</text>')
    parts.append("</svg>")
    return "".join(parts)


def _wp248(run: dict) -> list[tuple[str, str, str]]:
    summary = run["summary"] or {}
    sites = summary.get("sites") or {s: {} for s in run["ledger"]["budgets"]}
    # Only declared public sizes are shown: a site's exact record count is not released.
    declared = [v.get("declared_public_size") if isinstance(v, dict) else None for v in sites.values()]
    slices = (f"declared public sizes of {sum(int(d['value']) for d in declared)} {declared[0]['unit']}s in total"
              if declared and all(d is not None for d in declared)
              else "training sets whose sizes stay at the sites (not released)")
    n_sites = len(sites)
    large = ("possibly - controller to confirm", f"{n_sites} sites (hospitals) and {slices} in this "
             "run; WP248 factors are the number of data subjects, volume, duration and geographic extent. A "
             "multi-hospital deployment over real patient cohorts is likely large scale.")
    return [
        ("1. Evaluation or scoring", "possibly",
         "the model is an anomaly detector for brain MRI; training does not score individuals, but its later "
         "clinical use would (assess that use separately)."),
        ("2. Automated decision-making with legal or similarly significant effect", "does not apply",
         "the run trains a model for research; no decision about a person is taken by this processing."),
        ("3. Systematic monitoring", "does not apply", "no observation or monitoring of data subjects."),
        ("4. Sensitive data or data of a highly personal nature", "applies",
         "brain MRI scans are data concerning health (GDPR Art. 9(1)); head MRI can also allow facial "
         "reconstruction."),
        ("5. Data processed on a large scale", *large),
        ("6. Matching or combining datasets", "applies",
         f"data of {n_sites} hospitals are combined into one joint model (through aggregated updates only)."),
        ("7. Data concerning vulnerable data subjects", "applies",
         "patients are named as vulnerable data subjects in WP248 (imbalance of power with the care provider)."),
        ("8. Innovative use or new technological or organisational solutions", "applies",
         "federated learning with secure aggregation"
         + (" / homomorphic encryption" if run["config"].get("mode") == "he" else "")
         + " and differential privacy is a new technological solution."),
        ("9. Prevents data subjects from exercising a right or using a service or contract", "does not apply",
         "participation does not condition care or a contract."),
    ]



def _transport_text(deployment: dict) -> str:
    """The run's transport as recorded (``deployment.tls``, observed by the ServerApp), never assumed."""
    tls = deployment.get("tls", "absent")
    observed = deployment.get("tls_observed")
    if tls is True:
        text = "Transport: TLS ON between the SuperLink and every party (Fleet, Control and runtime APIs over HTTPS)"
    elif tls is False:
        text = ("Transport: TLS OFF - the SuperLink served its APIs in plain HTTP: anyone on the network path reads "
                "and can alter the protocol messages and the run's control traffic. Not acceptable outside loopback")
    elif tls is None:
        text = "Transport: TLS not observed by this run (it did not run under Flower's flwr-serverapp)"
    else:
        text = "Transport: not recorded by this run (a summary from an older secagg)"
    return text + (f" ({observed})." if observed else ".") + " Only protocol messages (wire bytes) travel."


def _deployment_fact_lines(deployment: dict) -> list[str]:
    """Active mode, registry and registration, and where the ledgers and keys live, as the run recorded them."""
    if "active_mode" not in deployment:
        return []
    lines = [
        "Active mode (signed keys and the ConsistencyCheck round against a malicious coordinator): "
        + ("ON" if deployment["active_mode"] else "OFF (passive: the coordinator is trusted to follow the protocol)")
        + ".",
        f"Registry of the sites' verify keys at the coordinator: {deployment.get('registry') or 'none'}; "
        f"registration: {deployment.get('registration', 'n/a')}.",
        f"The coordinator's privacy ledger: {deployment.get('coordinator_ledger', 'n/a')}.",
    ]
    for site, node in sorted((deployment.get("nodes") or {}).items()):
        if not node.get("reported"):
            lines.append(f"{site}: its node reported no deployment facts (an older secagg).")
            continue
        key = node.get("signing_key") or "none"
        lines.append(f"{site} (as its node reported at registration): own ledger {node.get('ledger') or 'none'}; "
                     f"signing key {key}"
                     + (" (passphrase-protected)" if node.get("key_protected") else
                        " (not passphrase-protected: a copy of the disk holds the key)" if key != "none" else "")
                     + f"; its own registry copy {node.get('registry') or 'none'}.")
    return lines

def _risks(run: dict, proto: dict, max_eps: float | None) -> tuple[list, list]:
    """CNIL risk families and model-specific risks: (name, severity, likelihood, rationale, measures).

    Rules (a starting point for the controller and DPO to review):
    * epsilon level e: <= 1 negligible, <= 4 limited, <= 10 significant, otherwise (or unknown) maximum;
    * PLAIN mode raises the likelihood of illegitimate access and reconstruction by one level (the
      coordinator sees each individual update); HE mode raises coordinator collusion to significant
      (one colluding site suffices); active mode lowers unwanted modification by one level.
    """
    mode, active = proto["mode"], proto["active"]
    e = 3 if max_eps is None else (0 if max_eps <= 1 else 1 if max_eps <= 4 else 2 if max_eps <= 10 else 3)
    plain = mode == "plain"
    unit = _unit(run)
    if unit != "patient":
        e = 3  # a slice-level epsilon does not bound what is learnt about a patient with many slices
    eps_txt = ("unknown" if max_eps is None else f"{max_eps:.4f}") + f" ({_guarantee(unit)})"
    summary = run["summary"] or {}
    aborted = summary.get("rounds_aborted") or []
    families = [
        ("Illegitimate access to data", "maximum", _level(e + (1 if plain else 0)),
         f"health data; raw scans never leave the sites, so access is by inference from released updates, "
         f"bounded by {unit}-level DP (max epsilon {eps_txt})"
         + ("; PLAIN mode shows each update to the coordinator" if plain else
            "; the coordinator sees only sums" + (" (and ciphertexts)" if mode == "he" else "")),
         "DP-SGD (clipping + Gaussian noise), secure aggregation, site IT security"),
        ("Unwanted modification of data", "significant", _level((1 if active else 2)),
         "a corrupted or poisoned model could produce wrong anomaly maps if used clinically; the scans "
         "themselves are read-only for training",
         f"update clipping (L2 {_num(proto['update_clip'])}), {'active-mode signatures and consistency check' if active else 'no signatures (semi-honest mode)'}; "
         "model validation before use"),
        ("Disappearance of data", "limited", _level(1 if aborted else 0),
         "training reads copies of the scans; originals stay in the hospitals' systems; dropouts can abort "
         f"rounds (aborted rounds in this run: {len(aborted)})",
         "scans untouched at the sites; crash-safe run directory with checkpoints; threshold t"),
    ]
    model = [
        ("Membership inference", "significant", _level(e),
         (f"patient-level (epsilon, delta)-DP bounds the advantage of any test of whether a patient's scans "
          f"were used; max epsilon {eps_txt}" if unit == "patient" else
          f"SLICE-level (epsilon, delta)-DP bounds membership of one slice only, not of a patient (group "
          f"privacy over a patient's slices); max epsilon {eps_txt}"),
         "DP-SGD accounted in the hash-chained ledger; per-site budgets enforced before each round"),
        ("Reconstruction of scans from updates or the model", "maximum", _level(e - 1 + (2 if plain else 0)),
         "gradient inversion needs individual updates; " + ("PLAIN mode exposes them" if plain else
                                                            "the coordinator sees only the sum of at least t sites"),
         "clipping, noise, secure aggregation / encryption"),
        ("Coordinator collusion with sites", "maximum",
         _level(3 if plain else 2 if mode == "he" else 1),
         "PLAIN: nothing to collude against" if plain else
         "HE: ANY ONE site colluding with the coordinator decrypts every update" if mode == "he" else
         f"masking: no shared decryption key; a coordinator colluding with sites learns only the sum of the "
         f"honest sites' updates while the colluders stay within what threshold t = {proto['threshold']} "
         f"tolerates (parameter-finder corrupt fraction {_num(proto['corrupt_fraction'])})",
         "threshold t = " + str(proto["threshold"]) + "; DP noise still bounds what a sum reveals"),
        ("Dropouts (availability, smaller sums)", "limited", _level(1 if (proto["dropout"] or aborted) else 0),
         f"a round with fewer than t survivors aborts with no output; dropout probability per stage "
         f"{_num(proto['dropout'])}; aborted rounds {aborted}",
         "threshold t, Shamir recovery of dropped sites' masks, abort without output"),
        ("Poisoning by a malicious site", "significant", _level(2),
         "secure aggregation hides individual updates, so a malicious update cannot be inspected; the "
         "protocol checks only the range of the sum",
         f"per-site update clipping (L2 {_num(proto['update_clip'])}) bounds each site's influence; "
         "contractual vetting of sites; model validation"),
    ]
    return families, model


def _unit(run: dict) -> str:
    """The run's privacy unit, from its ledger events (events stored without one were slice-level)."""
    units = {e.get("unit", "slice") for events in run["ledger"]["events"].values() for e in events}
    if len(units) == 1:
        return units.pop()
    return (run["summary"] or {}).get("privacy", {}).get("privacy_unit") or run["config"].get("privacy_unit",
                                                                                               "slice")


def _guarantee(unit: str) -> str:
    from dp.events import describe_guarantee

    return describe_guarantee(unit)


def build_dpia(run_dir, org: dict | None = None, *, today: str | None = None) -> dict:
    """The DPIA as a structured document: ``{"title", "meta", "sections", "placeholders", "svg", "figures"}``."""
    run_dir = Path(run_dir)
    org = dict(org or {})
    run = _read_run(run_dir)
    cfg, summary, led, ver = run["config"], run["summary"] or {}, run["ledger"], run["verification"]
    proto = _protocol_facts(run)
    privacy = summary.get("privacy") or {}
    mode = proto["mode"]
    sites = sorted(led["budgets"])
    bounds = [led["spent"][s]["bound"] for s in sites if led["spent"].get(s) and led["spent"][s]["bound"] is not None]
    max_eps = max(bounds) if bounds else None
    total_steps_cfg = (cfg.get("rounds") or 0) * (cfg.get("local_steps") or 0)

    placeholders = sorted(k for k in ORG_FIELDS if k not in org)
    sections = []

    # 0. Summary / roles
    sections.append(_section(
        "overview", "1. Overview and roles",
        _table(("Item", "Value"), [
            ("Project", _org(org, "project")),
            ("Controller", _org(org, "controller") + " - " + _org(org, "controller_contact")),
            ("Joint controllers (Art. 26)", _org(org, "joint_controllers")),
            ("Processors (Art. 28)", _org(org, "processors")),
            ("Data protection officer", _org(org, "dpo") + " - " + _org(org, "dpo_contact")),
            ("Assessor", _org(org, "assessor")),
            ("Run directory", str(run_dir)),
            ("Run id (ledger)", led["run_id"]),
            ("Configuration fingerprint", run["fingerprint"] or "n/a"),
            ("Generated", today or _dt.date.today().isoformat()),
        ]),
        _p("Roles in the processing: each participating hospital (site) holds its patients' scans and trains "
           "locally; the coordinator receives only protected updates and publishes the global model; "
           "the key holder (HE mode only) creates the session key." if mode == "he" else
           "Roles in the processing: each participating hospital (site) holds its patients' scans and trains "
           "locally; the coordinator receives updates (protected unless the mode is PLAIN) and publishes the "
           "global model."),
    ))

    # WP248 screening
    crit = _wp248(run)
    applying = [c for c in crit if c[1] == "applies"]
    sections.append(_section(
        "screening", "2. Screening: the nine WP248 rev.01 criteria",
        _table(("Criterion", "Applies?", "Why (from the run)"), crit),
        _p(f"{len(applying)} criteria apply (and "
           f"{sum(1 for c in crit if c[1].startswith('possibly'))} possibly). WP248 rev.01: processing meeting two "
           f"or more criteria is likely to result in a high risk - a DPIA is "
           f"{'required' if len(applying) >= 2 else 'recommended'}."),
    ))

    # 35(7)(a)
    flower = summary.get("engine") == "flower"

    def _size(site: str) -> str:
        declared = (summary.get("sites") or {}).get(site, {}).get("declared_public_size")
        if declared:
            return f"{declared['value']} {declared['unit']}s (declared public size)"
        return "held at the site (not released)"

    def _weight(site: str) -> str:
        facts = (summary.get("sites") or {}).get(site, {})
        return f"{_num(facts['public_weight'])} ({facts.get('weight_source', 'declared')})" \
            if "public_weight" in facts else "n/a"

    unit = _unit(run)
    site_rows = [(s, _size(s), _weight(s), _num(led["budgets"][s]) + f" ({_guarantee(unit)})") for s in sites]
    sections.append(_section(
        "description", "3. Systematic description of the processing and its purposes (Art. 35(7)(a))",
        _table(("Item", "Value"), [
            ("Purposes", _org(org, "purposes")),
            ("Lawful basis (Art. 6(1))", _org(org, "lawful_basis")),
            ("Condition for health data (Art. 9(2))", _org(org, "art9_condition")),
            ("Member-State law / Art. 89 safeguards", _org(org, "national_law")),
            ("Data subjects", _org(org, "data_subjects")),
            ("Categories of data", _org(org, "data_categories")),
            ("Sources", _org(org, "data_sources")),
            ("Recipients", _org(org, "recipients")),
            ("Retention", _org(org, "retention")),
            ("International transfers", _org(org, "international_transfers")),
            ("Model trained", f"{cfg.get('model')} autoencoder on {cfg.get('image_size')}x{cfg.get('image_size')} "
                              f"brain-MRI slices (anomaly detection)"),
            ("Data used in this run", summary.get("data") if flower else
             summary.get("scale", "n/a") + (" (synthetic cohort)" if cfg.get("data") is None else "")),
            ("Engine", "Flower deployment: a coordinator ServerApp and one SuperNode per site (whether each "
                       "runs on its own machine is not recorded by the run)" if flower
             else "one-machine simulation of all sites (research)"),
            ("Rounds", f"{summary.get('rounds_completed', 'n/a')} completed of {cfg.get('rounds')} planned"),
            ("Aggregation protocol", _mode_text(mode, proto["active"])),
        ]),
        _table(("Site", "Training set size", "Public FedAvg weight", "Epsilon budget"), site_rows),
        {"type": "svg", "svg": _dataflow_svg(mode), "caption": "Data flow: local scans -> clipped, noised update "
                                                               "-> protected update -> summed aggregate -> global model"},
    ))

    # 35(7)(b)
    sections.append(_section(
        "necessity", "4. Necessity and proportionality (Art. 35(7)(b))",
        _list([
            "Data minimisation: scans never leave the hospitals; only model updates do, each clipped to L2 norm "
            f"{_num(privacy.get('clipping_norm', cfg.get('max_grad_norm')))} and noised (DP-SGD) before release.",
            f"Storage limitation: {_org(org, 'retention')}",
            f"Lawfulness: {_org(org, 'lawful_basis')}; {_org(org, 'art9_condition')}",
            f"Information of data subjects: {_org(org, 'information_of_subjects')}",
            f"Data subject rights: {_org(org, 'data_subject_rights')}",
            f"Processors and transfers: {_org(org, 'processors')}; {_org(org, 'international_transfers')}",
            f"Views of data subjects (Art. 35(9)): {_org(org, 'views_of_data_subjects')}",
        ]),
    ))

    # 35(7)(d) measures with exact parameters
    eps_rows = []
    for s in sites:
        sp = led["spent"].get(s)
        if sp is None:
            eps_rows.append((s, "no release", "", "", _eps(led["budgets"][s])))
            continue
        per = ", ".join(f"{a} {_eps(v)} ({led['libraries'].get(a, sp['libraries'].get(a, '?'))})"
                        for a, v in sp["epsilon"].items())
        eps_rows.append((s, _eps(sp["bound"]), sp["bound_accountant"], per, _eps(led["budgets"][s])))
    events = [e for s in sites for e in led["events"][s]]
    sigmas = sorted({e["noise_multiplier"] for e in events})
    rates = sorted({e["sample_rate"] for e in events})
    steps = {s: sum(e["steps"] for e in led["events"][s]) for s in sites}
    dp_rows = [
        ("Guarantee", privacy.get("guarantee", f"{_guarantee(unit)} DP of each site's released updates")),
        ("Privacy unit and adjacency", _guarantee(unit) + (
            " - epsilon bounds what any recipient learns about one patient (all of their slices)"
            if unit == "patient" else " - NOT one patient: a patient with k slices is protected only by group "
                                      "privacy over k records")),
        ("delta", _num(led["delta"])),
        ("Noise multiplier (sigma)", ", ".join(_num(x, 6) for x in sigmas) or "n/a"),
        ("Sampling rate (Poisson, q)", ", ".join(_num(x, 6) for x in rates) or "n/a"),
        (f"Clipping norm (L2, per {unit}" + ("'s summed gradient)" if unit == "patient" else ")"),
         _num(privacy.get("clipping_norm", cfg.get("max_grad_norm")))),
        ("DP-SGD normaliser", privacy.get("public_normaliser", "n/a") + " - a public quantity, never a site's "
                                                                         "private count"),
        ("Released outside the ledger", "from training, nothing: FedAvg weights are public (declared before "
                                        "training); training losses and clip counts stay at the sites; record "
                                        "counts are not published. NOT covered by the ledger: the evaluation "
                                        "(detection threshold, accuracy metrics and figures), computed without DP "
                                        "on the sites' held-out validation and test scans by whoever holds them "
                                        "(in a simulation, the simulator); it holds no counts"),
        ("DP-SGD steps released per site", ", ".join(f"{s}: {steps[s]}" for s in sites)
         + f" (planned {total_steps_cfg})"),
        ("Accountants (library versions)", ", ".join(f"{a} ({led['libraries'].get(a, '?')})" for a in led["accountants"])),
        ("Ledger", f"{led['entries']} entries, hash chain "
                   + (f"verified ({led.get('verification_scope', 'scope not recorded')})" if ver.ok
                      else f"BROKEN: {ver.reason}")),
        ("CSPRNG noise (secure_rng)", str(cfg.get("secure_rng"))),
    ]
    proto_rows = [
        ("Mode", f"{mode}: {_mode_text(mode, proto['active'])}"),
        ("Threshold t", str(proto["threshold"])),
        ("Graph", str(proto["graph"])),
        ("Graph degree k", ("complete graph (every pair of sites)" if proto["degree"] is None else
                            f"{proto['degree']} (complete graph: every pair of sites)") if proto["complete"]
         else str(proto["degree"])),
        ("Security failure bound", _failure(proto["security_failure"], proto["complete"])),
        ("Correctness failure bound", _failure(proto["correctness_failure"], proto["complete"])),
        ("Tolerated corrupt fraction", _num(proto["corrupt_fraction"])),
        ("Update clipping before encoding (L2)", _num(proto["update_clip"])),
        ("Dropouts survived / aborted rounds", f"{summary.get('dropouts_survived', 'n/a')} / "
                                               f"{summary.get('rounds_aborted', 'n/a')}"),
    ]
    blocks = [
        None if ver.ok else _warn(f"The privacy ledger does NOT verify ({ver.reason}); the epsilons below cannot "
                                  "be relied on until `secagg ledger verify` passes."),
        _p("Differential privacy (DP-SGD, Opacus) - every value below is read from the run's privacy ledger:"),
        _table(("Parameter", "Value"), dp_rows),
        _p(f"Epsilon per site ({_guarantee(unit)}):"),
        _table(("Site", f"Epsilon spent (bound, {unit}-level)", "Bound accountant", "Per accountant (library)",
                "Budget"), eps_rows),
    ]
    audit = run["audit"]
    if audit:
        own = audit.get("mode") == "own-training"
        blocks.append(_p("Empirical privacy audit (one-run method, Steinke, Nasr and Jagielski 2023): a LOWER bound "
                         "on epsilon measured on a training run with canaries, beside the accounted UPPER bound. "
                         + ("This audit trained the run's own model architecture on one site's real data with the "
                            "run's DP-SGD settings and gradient canaries; it does not attack the secure-aggregation "
                            "sum." if own else
                            "The audit exercises the run's DP-SGD configuration on canaries and a synthetic model; "
                            "it does not attack the run's own model.")))
        if audit.get("epsilon_lower_bound") is not None and audit.get("epsilon_accounted") is not None and \
                audit["epsilon_lower_bound"] > audit["epsilon_accounted"]:
            blocks.append(_warn("The audited lower bound EXCEEDS the accounted epsilon: the implementation or the "
                                "accounting is wrong; the stated epsilon cannot be relied on."))
        ceiling = audit.get("ceiling")
        if ceiling is not None and audit.get("epsilon_accounted") is not None and ceiling < audit["epsilon_accounted"]:
            blocks.append(_warn(f"This audit cannot detect a violation above epsilon {_eps(ceiling)} (its ceiling, "
                                f"the largest lower bound its setting can ever show), below the accounted "
                                f"{_eps(audit['epsilon_accounted'])}: its 'consistent' says nothing about epsilons "
                                "in between."))
        blocks.append(_table(("Quantity", "Value"), [
            ("Empirical lower bound on epsilon", _eps(audit.get("epsilon_lower_bound"))),
            ("Ceiling (largest lower bound this setting can show)", _eps(ceiling) if ceiling is not None else
             "not recorded (audit.json from an earlier version)"),
            ("Confidence", _num(audit.get("confidence"))),
            ("Accounted epsilon (upper bound)", _eps(audit.get("epsilon_accounted"))),
            ("Mode", {"own-training": "own training (the run's model, DP-SGD settings and a site's real data"
                                      + (f", site {audit.get('site')}" if audit.get("site") else "") + ")",
                      "synthetic": "synthetic (the run's DP-SGD settings on a synthetic model)"}.get(
                          audit.get("mode"), "synthetic (not recorded)")),
            ("Canaries / guesses / correct", f"{audit.get('canaries')} / {audit.get('guesses')} / "
                                             f"{audit.get('correct')}"),
            ("Configuration audited", f"sigma {_num(audit.get('noise_multiplier'), 6)}, q "
                                      f"{_num(audit.get('sample_rate'), 6)}, {audit.get('steps')} steps, C "
                                      f"{_num(audit.get('clipping_norm'))}"),
            ("Method", str(audit.get("method", "one-run audit"))),
            ("Consistent (lower <= upper)", str(audit.get("epsilon_lower_bound", 0) <=
                                                (audit.get("epsilon_accounted") or float("inf")) * (1 + 1e-9))),
        ]))
    else:
        blocks.append(_p("No empirical privacy audit (audit.json) in the run directory: only the accounted upper "
                         "bound is shown."))
    site_level = privacy.get("site_level")
    if site_level or led["site_level"]:
        sl_rows = [(s, _eps((led["site_level"] or {}).get(s))) for s in sites]
        blocks.append(_p("Distributed DP: sites add discrete noise before masking; site-level epsilon of the "
                         "released sums (zero-out adjacency)"
                         + (f", mechanism {site_level.get('mechanism')}, budget {_num(site_level.get('budget'))}, "
                            f"delta {_num(site_level.get('delta'))}, L2 clip {_num(site_level.get('l2_clip'))}, "
                            f"accountant: {site_level.get('accountant')}. Guarantee: {site_level.get('guarantee')}"
                            if site_level else "") + ":"))
        blocks.append(_table(("Site", "Site-level epsilon"), sl_rows))
    blocks.append(_p("Secure aggregation / protocol:"))
    blocks.append(_table(("Parameter", "Value"), proto_rows))
    if mode == "plain":
        blocks.append(_warn("PLAIN mode: NO protection of the updates. The coordinator saw every site's individual "
                            "update; only DP-SGD protects the data subjects. Not acceptable for deployment."))
    if mode == "he":
        from secagg.he import THREAT_MODEL

        blocks.append(_warn("HE mode has a WEAKER trust model than masking. The library's threat model:"))
        blocks.append(_pre(THREAT_MODEL))
    if flower:
        deployment = summary.get("deployment") or {}
        blocks.append(_p("Deployment (Flower):"))
        blocks.append(_list([
            _transport_text(deployment),
            *_deployment_fact_lines(deployment),
            f"Each site's own privacy accounting: {deployment.get('node_ledgers', 'n/a')}.",
            *([f"Site signatures on the coordinator's ledger: {deployment['ledger_signatures']}."]
              if deployment.get("ledger_signatures") else []),
            f"Site identities: {deployment.get('identities', 'n/a')}.",
            f"Node authentication: {_node_authentication_text(deployment.get('node_authentication'))}.",
            "Node state at rest: during a round each node keeps its protocol session (private keys and its "
            "masked update) in Flower's node state sealed with XChaCha20-Poly1305 under a key that stays in the "
            "node's own state directory (STATE_DIR/state.key, 0600). Residual risk: whoever reads that state "
            "directory holds the key as well as the node's ledger and identity; protect the node host.",
        ]))
    blocks.append(_p("Organisational and site security measures:"))
    blocks.append(_list(_org_list(org, "security_measures")))
    measures = _section("measures", "6. Measures envisaged (Art. 35(7)(d))", *blocks)

    # 35(7)(c) risks
    families, model_risks = _risks(run, proto, max_eps)
    header = ("Risk", "Severity", "Likelihood", "Rationale (from the run)", "Measures")
    sections.append(_section(
        "risks", "5. Risks to the rights and freedoms of data subjects (Art. 35(7)(c))",
        _p("Scale (CNIL PIA method): " + ", ".join(LEVELS) + ". Levels below are assessed after the measures of "
           "section 6; they are a rule-based starting point from the run's parameters which the controller and "
           "DPO must review."),
        _p("CNIL risk families:"),
        _table(header, families),
        _p("Model-specific risks:"),
        _table(header, model_risks),
    ))
    measures["title"] = "6. Measures envisaged (Art. 35(7)(d))"
    sections.append(measures)

    worst = max((LEVELS.index(r[1]) + LEVELS.index(r[2]) for r in families + model_risks), default=0)
    high = [r[0] for r in families + model_risks if LEVELS.index(r[1]) >= 2 and LEVELS.index(r[2]) >= 2]
    sections.append(_section(
        "residual", "7. Residual risk",
        _p("Residual risks with both severity and likelihood at least significant: "
           + (", ".join(high) if high else "none") + ". "
           + ("A high residual risk remains: consult the supervisory authority before processing (Art. 36) "
              "unless further measures lower it." if high else
              "No residual risk is both severe and likely on these rules.")),
        _p(f"Prior consultation (Art. 36): {_org(org, 'prior_consultation')}"),
    ))
    sections.append(_section("dpo", "8. Advice of the data protection officer (Art. 35(2))",
                             _p(_org(org, "dpo_advice"))))
    sections.append(_section(
        "signoff", "9. Sign-off",
        _table(("Role", "Name", "Date"), [
            ("Assessor", _org(org, "assessor"), today or _dt.date.today().isoformat()),
            ("Data protection officer", _org(org, "dpo"), _todo("DPO signature date")),
            ("Approver for the controller", _org(org, "approver"), _org(org, "approval_date")),
            ("Next review", "", _org(org, "review_date")),
        ]),
    ))
    figures = [{"name": f.name, "path": str(f), "b64": base64.b64encode(f.read_bytes()).decode()}
               for f in run["figures"]]
    return {
        "title": "Data Protection Impact Assessment - federated training with secure aggregation",
        "sections": sections,
        "placeholders": placeholders,
        "figures": figures,
        "facts": {"mode": mode, "max_epsilon": max_eps, "epsilon": {s: (led["spent"][s] or {}).get("bound")
                                                                     for s in sites},
                  "delta": led["delta"], "ledger_ok": ver.ok, "worst_score": worst},
    }


# -- rendering ---------------------------------------------------------------------------


def _environment(autoescape: bool):
    try:
        import jinja2
    except ImportError:  # pragma: no cover
        raise DPIAError("the DPIA needs jinja2: pip install 'secagg[report]'") from None
    from markupsafe import Markup, escape

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    import re

    pattern = re.compile(r"\[TO BE COMPLETED: [^\]]*\]")

    def todo_html(text):
        escaped = str(escape(text))
        return Markup(pattern.sub(lambda m: f'<mark class="todo">{m.group(0)}</mark>', escaped))

    def md_cell(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    env.filters["todo"] = todo_html
    env.filters["md_cell"] = md_cell
    return env


def render_dpia(doc: dict, fmt: str = "html", *, out_path: Path | None = None) -> str:
    """Render ``doc`` (from :func:`build_dpia`) to HTML or Markdown text."""
    if fmt == "html":
        return _environment(True).get_template("dpia.html.j2").render(doc=doc)
    if fmt == "md":
        figs = []
        for f in doc["figures"]:
            rel = os.path.relpath(f["path"], Path(out_path).parent) if out_path else f["path"]
            figs.append({"name": f["name"], "rel": rel})
        return _environment(False).get_template("dpia.md.j2").render(doc=doc, figures=figs)
    raise DPIAError(f"unknown format {fmt!r}; use html, md or pdf")


def find_chromium() -> str | None:
    """The headless browser to use: ``$SECAGG_CHROMIUM`` if set (empty means none), else the first on PATH."""
    override = os.environ.get("SECAGG_CHROMIUM")
    if override is not None:
        return override or None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _chromium(args: list[str], timeout: float = 120) -> None:
    exe = find_chromium()
    if exe is None:
        raise DPIAError("PDF and screenshots need headless Chromium, which is not installed; install it with "
                        "`apt-get install chromium` (Debian/Ubuntu) or use --format html")
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", *args], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise DPIAError(f"chromium failed (exit {proc.returncode}): {' '.join(proc.stderr.split())[:300]}")


def write_dpia(run_dir, *, fmt: str = "html", out=None, org_path=None, today: str | None = None) -> tuple[Path, dict]:
    """Build and write the DPIA; returns (path written, document)."""
    org = load_org(org_path)
    doc = build_dpia(run_dir, org, today=today)
    ext = {"html": ".html", "md": ".md", "pdf": ".pdf"}.get(fmt)
    if ext is None:
        raise DPIAError(f"unknown format {fmt!r}; use html, md or pdf")
    out = Path(out) if out else Path(run_dir) / f"dpia{ext}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pdf":
        html = render_dpia(doc, "html")
        if find_chromium() is None:
            _chromium([])  # raises the install hint
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "dpia.html"
            page.write_text(html)
            _chromium([f"--print-to-pdf={out.resolve()}", "--no-pdf-header-footer", page.as_uri()])
        return out, doc
    from .runstore import atomic_write_bytes

    atomic_write_bytes(out, render_dpia(doc, fmt, out_path=out).encode())
    return out, doc
