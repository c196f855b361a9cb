"""The ``secagg`` command line.

Subcommands: ``demo`` (a protocol demonstration with dropouts and a
malicious-coordinator attack), ``params`` (the SecAgg+ parameter finder),
``epsilon`` and ``noise`` (privacy accounting and calibration), ``ledger show``
and ``ledger verify`` (the run's privacy ledger), ``dpia`` (a Data Protection Impact Assessment
drawn from a run directory), ``audit`` (an empirical lower bound on epsilon),
``keys new`` / ``keys node-auth`` / ``keys register-nodes`` (a site's Ed25519 identity and its Flower
node key; registering the registry's node keys with a SuperLink), ``flower app-path|certs|check``
(the installed Flower app folder, loopback certificates, whether a Flower run finished), ``flower
app-key|sign-app|supernode`` (the consortium's app-signing key, its signature of an app bundle, and a
SuperNode that runs only bundles so signed), ``export`` (a run's model as
one self-describing file), ``detect`` (NIfTI anomaly maps of new scans) and ``experiment`` (a multi-seed
comparison of federated, local, central and non-private training, with seeded - labelled - noise).
Exit codes: 0 success, 2 bad input (a one-line error on stderr), 1 a failed
check (e.g. a ledger that does not verify), 3 an unexpected internal error
(one line on stderr naming a crash report written, mode 0600, in the run
directory, or in a new private temporary directory when there is none),
130 interrupted. No traceback ever reaches the terminal; warnings are one line.
What counts as bad input is :func:`simulation.errors.bad_input_errors`: the one simulation-side
base :class:`~simulation.errors.SimulationInputError` and the bad-input bases of secagg, dp and
models (which cannot derive from a simulation class: they may not import it).
"""

from __future__ import annotations

import argparse
import json
import sys

import secagg

__all__ = ["main", "build_parser", "write_crash_report"]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps description layout; appends a default only where the help does not state one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), as the project promises."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: error: {message}")


def _probability(name: str, *, low_open: bool = True, high_closed: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number; got {text!r}") from None
        ok = (0 < value if low_open else 0 <= value) and (value <= 1 if high_closed else value < 1)
        if not ok:
            interval = ("(" if low_open else "[") + "0, 1" + ("]" if high_closed else ")")
            raise argparse.ArgumentTypeError(f"{name} must be in {interval}; got {value}")
        return value

    return parse


def _positive(kind, name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive {'integer' if kind is int else 'number'}; got {text!r}") from None
        if not value > 0 or value != value or value in (float("inf"),):
            raise argparse.ArgumentTypeError(f"{name} must be positive and finite; got {text}")
        return value

    return parse


_ACCOUNTANT_CHOICES = ("rdp", "prv", "pld", "rdp-dpa", "all")


def _accountants(choice: str) -> tuple:
    from dp.accounting import DEFAULT_ACCOUNTANTS

    return DEFAULT_ACCOUNTANTS if choice == "all" else (choice,)


def _fmt(value) -> str:
    return "failed" if value is None else f"{value:.4f}"


def _cmd_epsilon(args: argparse.Namespace) -> int:
    from dp.accounting import epsilon_for

    report = epsilon_for(
        noise_multiplier=args.noise_multiplier, sample_rate=args.sample_rate, steps=args.steps,
        delta=args.delta, accountants=_accountants(args.accountant),
        approximations=("gdp",) if args.show_gdp else (),
        neighbouring=args.neighbouring,
    )
    data = report.to_dict()
    data.update(noise_multiplier=args.noise_multiplier, sample_rate=args.sample_rate, steps=args.steps,
                neighbouring=args.neighbouring)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"DP-SGD: noise multiplier {args.noise_multiplier}, sample rate {args.sample_rate}, {args.steps} steps, "
          f"delta {args.delta}, {'add/remove-one' if args.neighbouring == 'add_remove_one' else 'replace-one'} adjacency")
    for result in report.results:
        suffix = f"  ({result.error})" if not result.ok else ""
        print(f"  {result.accountant:<8} epsilon = {_fmt(result.epsilon)}   [{result.library}]{suffix}")
    for result in report.approximations:
        print(f"  {result.accountant:<8} epsilon = {_fmt(result.epsilon)}   [{result.library}] "
              "APPROXIMATION, not an upper bound; never used as the bound")
    if report.bound is None:
        print("  no accountant produced a valid bound")
        return 1
    print(f"bound: epsilon <= {report.bound:.4f} at delta = {args.delta} (tightest valid upper bound: "
          f"{report.bound_accountant})")
    return 0


def _cmd_noise(args: argparse.Namespace) -> int:
    from dp.calibration import calibrate_noise

    calibration = calibrate_noise(
        target_epsilon=args.target_epsilon, delta=args.delta, sample_rate=args.sample_rate,
        steps=args.steps, accountant=args.accountant,
    )
    if args.json:
        print(json.dumps(calibration.to_dict(), indent=2))
        return 0
    used = "the tightest of rdp, prv, pld" if args.accountant == "all" else args.accountant
    print(f"noise multiplier {calibration.noise_multiplier:.4f} gives epsilon {calibration.epsilon:.4f} "
          f"<= {args.target_epsilon} at delta {args.delta} over {args.steps} steps with sample rate "
          f"{args.sample_rate} (accountant: {used})")
    return 0


def _cmd_ledger_show(args: argparse.Namespace) -> int:
    from dp.ledger import PrivacyLedger, adjacency_of

    with PrivacyLedger.open(args.run_dir) as ledger:
        entries = ledger.entries()
        accountants = ledger.accountants
        delta = ledger.delta
        budgets = ledger.budgets
        unit, adjacency = ledger.unit, ledger.adjacency
    rows = []
    for entry in entries:
        if entry.kind != "spend":
            continue
        event, cumulative = entry.body["event"], entry.body["cumulative"]
        rows.append({
            "seq": entry.seq, "site": event["site"], "round": event["round"],
            "unit": event.get("unit", "slice"), "neighbouring": event.get("neighbouring", "add_remove_one"),
            "noise_multiplier": event["noise_multiplier"], "sample_rate": event["sample_rate"],
            "steps": event["steps"], "epsilon": cumulative["epsilon"], "bound": cumulative["bound"],
            "bound_accountant": cumulative["bound_accountant"],
            "adjacency": adjacency_of(event.get("neighbouring", "add_remove_one"), event.get("unit", unit)),
            "signed": "signature" in entry.body,
        })
    if args.json:
        print(json.dumps({"delta": delta, "budgets": budgets, "accountants": list(accountants), "unit": unit,
                          "adjacency": adjacency, "entries": len(entries), "spends": rows}, indent=2))
        return 0
    print(f"privacy ledger of {args.run_dir}: {len(entries)} entries, delta = {delta}, "
          f"budgets {budgets}; privacy unit: one {unit} ({adjacency}); cumulative epsilon per site after each round")
    header = f"{'seq':>4} {'site':<12} {'round':>5} {'sigma':>7} {'q':>8} {'steps':>6} " + " ".join(
        f"{a:>9}" for a in accountants) + f" {'bound':>9}"
    print(header)
    for r in rows:
        print(f"{r['seq']:>4} {r['site']:<12} {r['round']:>5} {r['noise_multiplier']:>7.3f} {r['sample_rate']:>8.4f} "
              f"{r['steps']:>6} " + " ".join(f"{_fmt(r['epsilon'].get(a)):>9}" for a in accountants)
              + f" {_fmt(r['bound']):>9}")
    return 0


def _cmd_ledger_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the ledger verifies; 1 (one line on stderr naming the entry) when it does not or is damaged."""
    from pathlib import Path

    from dp.errors import LedgerError, LedgerIntegrityError
    from dp.ledger import verify_ledger
    from dp.ledger_signatures import load_anchors, load_releases

    from .identity import REGISTRY_FILE, SITES_DIR, load_registry

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"secagg ledger verify: error: {run_dir} is not a directory (a run directory holds "
                         "ledger.sqlite)")
    if args.registry:
        registry_path, registry_note = Path(args.registry), "given with --registry"
    elif (run_dir / REGISTRY_FILE).is_file():
        registry_path = run_dir / REGISTRY_FILE
        registry_note = ("the copy inside the run directory: only as trustworthy as the directory; pass --registry "
                         "with the consortium's own copy")
    else:
        registry_path, registry_note = None, "none: site signatures are NOT checked"
    registry = load_registry(registry_path) if registry_path is not None else None
    try:
        anchors = load_anchors(args.anchors or [])
        releases = load_releases(args.anchors or [])
    except LedgerIntegrityError as exc:  # a damaged anchor or release record: evidence that fails, not a usage slip
        print(f"ledger BROKEN: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except LedgerError as exc:
        raise UsageError(f"secagg ledger verify: error: {' '.join(str(exc).split())}") from None
    if anchors and registry is None:
        raise UsageError("secagg ledger verify: error: --anchors needs a registry of site verify keys (--registry)")
    try:
        report = verify_ledger(run_dir, registry=registry, anchors=anchors, releases=releases)
    except LedgerError as exc:
        print(f"ledger BROKEN: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    registry_line = f"registry: {registry_path if registry_path else 'none'} ({registry_note})"
    # Signatures and anchors bind a history only against parties that cannot sign: say so when the keys or
    # the anchors sit where the ledger's owner can rewrite them (the in-process simulation keeps them there).
    resolved = run_dir.resolve()
    inside_keys = sorted(str(p.relative_to(run_dir)) for p in (run_dir / SITES_DIR).glob("*/*.ed25519"))
    if report.ok and inside_keys:
        report.warnings.append(
            f"{len(inside_keys)} site signing key(s) are inside the run directory ({inside_keys[0]}, ...): whoever "
            "can write it can re-sign a cheaper history, so these signatures prove nothing against its owner; "
            "they bind only where each site keeps its key on its own machine (the Flower deployment)")
    if report.ok and registry_path is not None and not args.registry and report.signatures_checked:
        report.warnings.append(
            f"the {report.signatures_checked} site signatures were checked against the registry copy inside the run "
            "directory: whoever can write the directory can replace it and re-sign; pass --registry with the "
            "consortium's own copy")
    if report.ok and any(Path(a.source).resolve().is_relative_to(resolved) for a in anchors):
        report.warnings.append("some --anchors lie inside the run directory: its owner can rewrite them; copy "
                               "each site's anchor out of the run directory before auditing it")
    if args.json:
        print(json.dumps(report.to_dict() | {"registry": None if registry_path is None else str(registry_path),
                                             "registry_note": registry_note,
                                             "anchors": [a.source for a in anchors]}, indent=2))
    elif report.ok:
        print(f"ledger OK: {report.entries} entries, hash chain intact, head record matches, epsilons re-derived; "
              f"{report.signatures_checked} site signatures verified; "
              f"{len(report.anchors_checked)} site anchors matched")
        print(registry_line)
        print(f"privacy unit: one {report.unit} ({report.adjacency})")
        for note in report.notes:
            print(f"  note: {note}")
        for warning in report.warnings:
            print(f"  warning: {warning}")
        for site, eps in sorted(report.epsilon.items()):
            print(f"  {site}: epsilon <= {eps['bound']:.4f} ({eps['bound_accountant']}) at delta {eps['delta']}, "
                  f"{report.adjacency}")
    else:
        print(registry_line)
    if not report.ok:
        print(f"ledger BROKEN at {report.where()}: {' '.join(str(report.reason).split())}", file=sys.stderr)
    return 0 if report.ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_report, run_demo

    report = run_demo(sites=args.sites, vector_length=args.length, active=not args.semi_honest)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.exact and report.attack_refused else 1


def _cmd_params(args: argparse.Namespace) -> int:
    params = secagg.find_parameters(
        args.n,
        corrupt_fraction=args.corrupt,
        dropout_fraction=args.dropout,
        security_bits=args.security_bits,
        correctness_bits=args.correctness_bits,
        malicious=args.malicious,
    )
    if args.json:
        print(json.dumps({
            "n": params.n, "degree": params.degree, "threshold": params.threshold,
            "complete": params.complete, "security_failure": params.security_failure,
            "correctness_failure": params.correctness_failure, "malicious": params.malicious,
            "corrupt_fraction": params.corrupt_fraction, "dropout_fraction": params.dropout_fraction,
        }, indent=2))
    else:
        print(params.describe())
    return 0


def _bids_flags(args: argparse.Namespace) -> dict | None:
    """The BIDS reading options given as flags (None when none is given: defaults or the TOML [bids] table)."""
    flags = {"suffix": args.bids_suffix, "group_column": args.bids_group_column,
             "site_column": args.bids_site_column, "pipeline": args.bids_pipeline}
    flags = {k: v for k, v in flags.items() if v is not None}
    return flags or None


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .simulate import format_summary, resume_config, run_simulation

    if args.resume:
        if args.out and args.out != args.resume:
            raise UsageError("secagg simulate: error: --resume RUN_DIR continues RUN_DIR; do not also give --out")
        config = resume_config(args.resume)
        out = args.resume
    else:
        baselines = None
        if args.baselines is not None:
            baselines = tuple(b for b in args.baselines.split(",") if b and b != "none")
        config = load_config(
            preset="tiny" if args.tiny else args.preset,
            toml_path=args.config,
            data=args.data, sites=args.sites, rounds=args.rounds, mode=args.mode, dropout=args.dropout,
            dropout_schedule=args.dropout_schedule, epsilon=args.epsilon, delta=args.delta, model=args.model,
            seed=args.seed, threshold=args.threshold, baselines=baselines, local_steps=args.local_steps,
            image_size=args.image_size, active=True if args.active else None, cache_dir=args.cache_dir,
            distributed_dp=args.distributed_dp, ddp_epsilon=args.ddp_epsilon, ddp_clip=args.ddp_clip,
            ddp_colluding=args.ddp_colluding, corrupt_fraction=args.corrupt_fraction, bids=_bids_flags(args),
            privacy_unit=args.privacy_unit,
            skip_invalid=True if args.skip_invalid else None,
        )
        out = args.out or f"runs/{config.preset}-{config.mode}-{config.fingerprint()[:8]}"
    result = run_simulation(config, out, resume=bool(args.resume), quiet=args.json)
    if args.json:
        print(json.dumps(result.summary | {"run_dir": str(result.run_dir)}, indent=2, default=str))
    else:
        print(format_summary(result.summary))
        print(f"   run directory: {result.run_dir}  (secagg ledger verify {result.run_dir})")
    return 0


def _int_list(name: str):
    def parse(text: str) -> list:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma list of integers; got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name} must not be empty")
        return values

    return parse


def _float_list(name: str):
    def parse(text: str) -> list:
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma list of numbers; got {text!r}") from None

    return parse


def _cmd_experiment(args: argparse.Namespace) -> int:
    import shlex

    from .experiment import load_experiment_config, run_experiment

    simulation = {"preset": "tiny" if args.tiny else None, "scale": args.scale, "model": args.model,
                  "sites": args.sites, "rounds": args.rounds, "local_steps": args.local_steps,
                  "epsilon": args.epsilon, "image_size": args.image_size, "cache_dir": args.cache_dir,
                  "server_optimizer": args.server_optimizer}
    arms = None if args.arms is None else [a for a in args.arms.split(",") if a]
    config = load_experiment_config(args.config, seeds=args.seeds, arms=arms, epsilons=args.epsilons,
                                    vary_data=False if args.same_data else None, simulation=simulation)
    out = args.out or f"experiments/runs/{config.name}-{__import__('time').strftime('%Y%m%d-%H%M%S')}"
    command = "secagg " + " ".join(shlex.quote(a) for a in (args.argv or []))
    result = run_experiment(config, out, log=(lambda text: print(text, file=sys.stderr, flush=True)) if args.json
                            else None, command=command, jobs=args.jobs)
    if args.json:
        stats = result.results["statistics"]
        print(json.dumps({"out_dir": str(result.out_dir), "report": str(result.out_dir / "report.md"),
                          "seeded_noise": result.results["seeded_noise"], "seeds": stats["seeds"],
                          "overall_auprc": stats["metrics"].get("overall/auprc"),
                          "seconds": result.results["seconds"]}, indent=2, default=str))
    else:
        from .experiment.report import headline

        print("\n".join(["", f"== secagg experiment ({result.results['seeded_noise']})", *headline(result.results),
                         f"   report: {result.out_dir / 'report.md'}"]))
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    import time

    import models

    start = time.perf_counter()
    if args.layout == "bids":
        from models.bids_synth import write_bids_cohort

        manifest = write_bids_cohort(args.out, sites=args.sites, scale=args.scale, seed=args.seed,
                                     workers=args.workers, overwrite=args.overwrite)
    else:
        manifest = models.generate_cohort(args.out, sites=args.sites, scale=args.scale, seed=args.seed,
                                          workers=args.workers, overwrite=args.overwrite)
    data = manifest.to_dict() if hasattr(manifest, "to_dict") else {}
    counts = {}
    for subject in getattr(manifest, "subjects", ()):
        key = (subject.site, "pathology" if getattr(subject, "lesion_type", None) else "healthy")
        counts[key] = counts.get(key, 0) + 1
    if args.json:
        print(json.dumps({"out": str(args.out), "layout": args.layout, "reused": getattr(manifest, "reused", False),
                          "seconds": round(time.perf_counter() - start, 2), "manifest": data}, indent=2, default=str))
        return 0
    verb = "reused" if getattr(manifest, "reused", False) else "wrote"
    print(f"{verb} a synthetic {args.scale} cohort of {args.sites} sites (seed {args.seed}) in {args.out} "
          f"({time.perf_counter() - start:.1f} s)")
    for site in sorted({k[0] for k in counts}):
        print(f"  {site}: {counts.get((site, 'healthy'), 0)} healthy, {counts.get((site, 'pathology'), 0)} "
              "pathological volumes")
    if args.layout == "bids":
        print(f"  layout: BIDS {args.out}/sub-*/anat/*_FLAIR.nii.gz, participants.tsv (group, site, lesion_type), "
              f"masks in {args.out}/derivatives/lesions; manifest {args.out}/sourcedata/cohort.json")
    else:
        print(f"  layout: SITE/healthy/*.nii.gz, SITE/pathology/*.nii.gz with *_mask.nii.gz; manifest {args.out}/cohort.json")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    path, model = export_run(args.run_dir, args.out)
    info = {"out": str(path), "bytes": path.stat().st_size, "architecture": model.architecture,
            "image_size": model.image_size, "modality": model.modality, "threshold": model.threshold,
            "privacy": model.privacy}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    p = model.privacy
    print(f"wrote {path} ({info['bytes']:,} bytes): {model.architecture} at {model.image_size}x{model.image_size}, "
          f"{model.modality}, threshold {model.threshold['value']:.4g} (healthy validation, target FPR "
          f"{model.threshold['target_fpr']})")
    print(f"  trained under epsilon <= {p['epsilon_max']:.3f} per site at delta {p['delta']} ({p['accountant']}); "
          f"unit: {p['unit']}")
    return 0


def _load_detect_model(source: str):
    from pathlib import Path

    if Path(source).is_dir():
        from .export import model_from_run

        return model_from_run(source)
    from models.modelfile import load_model_file

    return load_model_file(source)


def _cmd_detect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from models.detect import (check_modality, check_scans, detect_raw_scan, detect_scan, prepare_for_detection,
                               write_report)
    from models.scoring import as_reconstruct_fn

    model = _load_detect_model(args.model)
    scans = [Path(s) for s in args.scans]
    if args.prepare:
        check_scans(model, [], names=scans)  # colliding names are refused before anything is written
        for scan in scans:
            check_modality(scan, model)  # a T1w is refused before minutes of preparation
        prepared = prepare_for_detection(scans, args.out)
        check_scans(model, [p for p, _ in prepared.values()])  # every scan is checked before any map is written
        reconstruct = as_reconstruct_fn(model.build_model())
        results = [detect_raw_scan(model, raw, *prepared[raw], args.out, reconstruct=reconstruct) for raw in scans]
    else:
        check_scans(model, scans)  # every scan is checked before any output is written
        reconstruct = as_reconstruct_fn(model.build_model())
        results = [detect_scan(model, scan, args.out, reconstruct=reconstruct) for scan in scans]
    report = write_report(Path(args.out) / "detections.json", model, results)
    if args.json:
        print(report.read_text())
        return 0
    print(f"threshold {model.threshold['value']:.4g} from the run's healthy validation; wrote {report}")
    for r in results:
        print(f"  {r.scan.name}: {r.record['lesion_volume_ml']:.2f} mL flagged, max score "
              f"{r.record['score']['max']:.3g} -> {r.anomaly_map.name}, {r.segmentation.name}, {r.montage.name}")
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from models.prepare import PrepareOptions, plan_prepare, prepare_dataset

    from .progress import Progress

    options = PrepareOptions(reorient=not args.no_reorient, n4=not args.no_n4, register=not args.no_register,
                             skull_strip=not args.no_skull_strip, normalise=not args.no_normalise)
    bids = _bids_flags(args)
    progress = Progress(enabled=not args.json)
    progress.log(f"preparing {args.input} -> {args.out} ({args.workers} worker(s))")
    todo, _ = plan_prepare(args.input, args.out, options, bids=bids)  # every input checked before any work
    with progress.task("prepare", total=len(todo)) as advance:
        result = prepare_dataset(args.input, args.out, options=options, workers=args.workers,
                                 progress=lambda name: advance(), bids=bids)
    if args.json:
        print(json.dumps(result | {"out": str(args.out)}, indent=2))
        return 0
    print(f"prepared {len(result['prepared'])} scan(s) and {result['masks']} mask(s), skipped "
          f"{len(result['skipped'])} already done, into {args.out} (one JSON sidecar per scan)")
    for dataset in result["bids_datasets"]:
        print(f"  BIDS dataset: {dataset} (secagg simulate --data {dataset} trains on it)")
    return 0


def _passphrase_from_env_option(args: argparse.Namespace, command: str):
    """The passphrase in the environment variable that ``--passphrase-env`` names (None without the option);
    an unset or empty one is a usage error of ``secagg COMMAND`` (a passphrase never travels on the command line)."""
    if not args.passphrase_env:
        return None
    from .passphrase import PassphraseError, passphrase_from_env

    try:
        return passphrase_from_env(args.passphrase_env)
    except PassphraseError as exc:
        raise UsageError(f"secagg {command}: error: {exc}; set it there (never on the command line)") from None


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .identity import add_to_registry, load_registry, write_identity, write_site_node_key

    passphrase = _passphrase_from_env_option(args, "keys new")
    if args.registry and Path(args.registry).exists():
        load_registry(args.registry)  # a broken registry is refused before any key is made
    identity = write_identity(args.out, args.site, passphrase=passphrase)
    node_key = write_site_node_key(args.out, args.site)
    registry = add_to_registry(args.registry, identity, node_key.public_key) if args.registry else None
    if args.json:
        print(json.dumps(identity.to_dict() | node_key.to_dict()
                         | {"registry": args.registry, "registered_sites": sorted(registry) if registry else None},
                         indent=2))
        return 0
    print(f"wrote {identity.signing_key_path} (mode 0600: this site's signing key; it never leaves this machine"
          + (f"; encrypted under the passphrase in ${args.passphrase_env}, which the node needs in the same variable "
             "or the one its --node-config 'passphrase-env' names)" if passphrase else ")"))
    print(f"verify key of {identity.site}: {identity.verify_key.hex()}")
    _print_node_key(node_key)
    if args.registry:
        print(f"added both to {args.registry} ({len(registry)} sites); every site needs an identical copy, "
              "delivered out of band - never from the coordinator alone")
    return 0


def _print_node_key(node_key) -> None:
    print(f"wrote {node_key.private_key_path} (mode 0600: this node's Flower key: "
          f"flower-supernode --auth-supernode-private-key {node_key.private_key_path})")
    print(f"node key of {node_key.site}: {node_key.public_key} (also in {node_key.public_key_path})")


def _cmd_keys_node_auth(args: argparse.Namespace) -> int:
    from .identity import add_node_key

    node_key = add_node_key(args.out, args.site, args.registry)
    if args.json:
        print(json.dumps({"site": args.site, "registry": args.registry} | node_key.to_dict(), indent=2))
        return 0
    _print_node_key(node_key)
    if args.registry:
        print(f"recorded in {args.registry} next to {args.site}'s verify key; deliver the new registry to every "
              "site and to the SuperLink's operator")
    return 0


def _cmd_keys_register_nodes(args: argparse.Namespace) -> int:
    from .flower.node_registration import NodeRegistrationError, register_node_keys
    from .identity import load_node_keys

    node_keys = load_node_keys(args.registry)
    try:
        node_ids = register_node_keys(node_keys, args.superlink)
    except NodeRegistrationError as exc:
        print(f"secagg keys register-nodes: FAILED: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    if args.json:
        print(json.dumps({"registry": args.registry, "superlink": args.superlink,
                          "node_ids": {site: str(node) for site, node in sorted(node_ids.items())}}, indent=2))
        return 0
    for site, node in sorted(node_ids.items()):
        print(f"{site}: node {node}")
    print(f"the SuperLink admits exactly the {len(node_ids)} node key(s) of {args.registry}")
    return 0


def _cmd_flower_app_path(args: argparse.Namespace) -> int:
    from .flower.deploy import app_path

    print(app_path())
    return 0


def _cmd_flower_certs(args: argparse.Namespace) -> int:
    from .flower.tls import write_loopback_certificates

    paths = write_loopback_certificates(args.out, days=args.days)
    if args.json:
        print(json.dumps({"ca_cert": str(paths.ca_cert), "server_cert": str(paths.server_cert),
                          "server_key": str(paths.server_key)}, indent=2))
        return 0
    print(f"wrote {paths.ca_cert}, {paths.server_cert} and {paths.server_key} (mode 0600): a throwaway loopback "
          "CA and server certificate for tests and demos, not a deployment PKI")
    return 0


def _cmd_flower_check(args: argparse.Namespace) -> int:
    """Exit 0 when the Flower run directory holds a finished run, 1 (one line on stderr) when it does not."""
    from .flower.deploy import run_outcome

    outcome = run_outcome(args.run_dir)
    if args.json:
        print(json.dumps({"ok": outcome.ok, "reason": outcome.reason, "rounds_completed": outcome.rounds_completed,
                          "rounds_planned": outcome.rounds_planned, "run_id": outcome.run_id}, indent=2))
    elif args.run_id:
        if outcome.ok:
            print(outcome.run_id)
    elif outcome.ok:
        print(f"run OK: {outcome.reason}; ledger run id {outcome.run_id} (the nodes' anchors: "
              f"STATE_DIR/anchors/{outcome.run_id})")
    if not outcome.ok:
        print(f"run FAILED: {outcome.reason}", file=sys.stderr)
    return 0 if outcome.ok else 1


def _cmd_flower_app_key(args: argparse.Namespace) -> int:
    """The consortium's app-signing key: DIR/consortium-apps.ed25519 (0600) and DIR/consortium-apps.pub."""
    from pathlib import Path

    from .flower.app_trust import APP_KEY_NAME
    from .identity import write_identity

    passphrase = _passphrase_from_env_option(args, "flower app-key")
    key = write_identity(args.out, APP_KEY_NAME, passphrase=passphrase)
    public = Path(args.out) / f"{APP_KEY_NAME}.pub"
    public.write_text(key.verify_key.hex() + "\n")
    if args.json:
        print(json.dumps({"signing_key": str(key.signing_key_path), "verify_key_file": str(public),
                          "verify_key": key.verify_key.hex()}, indent=2))
        return 0
    print(f"wrote {key.signing_key_path} (mode 0600: the consortium's app-signing key; keep it off the SuperLink)")
    print(f"wrote {public}: the app verify key {key.verify_key.hex()}; give it to every node out of band "
          "(secagg flower supernode --app-key)")
    return 0


def _cmd_flower_sign_app(args: argparse.Namespace) -> int:
    """Sign an app folder's bundle (built as `flwr run` builds it) or a .fab file with the consortium's key."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from .flower.app_trust import sign_fab, write_signature
    from .identity import load_signing_key

    app = Path(args.app)
    if app.is_dir():
        flwr = shutil.which("flwr") or str(Path(sys.executable).parent / "flwr")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                built = subprocess.run([flwr, "build", "--app", str(app.resolve())], cwd=tmp, capture_output=True,
                                       text=True, timeout=300)
            except OSError as exc:
                raise UsageError(f"secagg flower sign-app: error: cannot run flwr build ({exc.strerror or exc}); "
                                 "pip install 'secagg[flower]'") from None
            fabs = sorted(Path(tmp).glob("*.fab"))
            if built.returncode != 0 or len(fabs) != 1:
                raise UsageError(f"secagg flower sign-app: error: flwr build --app {app} failed: "
                                 f"{_one_line((built.stderr or built.stdout).strip()[-300:])}")
            content = fabs[0].read_bytes()
    elif app.is_file():
        content = app.read_bytes()
    else:
        raise UsageError(f"secagg flower sign-app: error: {app} is neither an app folder nor a .fab file")
    pair = load_signing_key(args.key, passphrase_env=args.passphrase_env)
    path = write_signature(sign_fab(content, pair.seed), args.out)
    digest = path.stem
    if args.json:
        print(json.dumps({"fab_sha256": digest, "signature_file": str(path), "verify_key": pair.verify_key.hex()},
                         indent=2))
        return 0
    print(f"signed app bundle sha256 {digest} ({app}) with app key {pair.verify_key.hex()[:16]}: wrote {path}; "
          "put it in every node's --trusted-apps folder")
    return 0


def _cmd_flower_supernode(args: argparse.Namespace) -> int:
    from .flower.verified_clientapp import start_supernode

    rest = list(args.supernode_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return start_supernode(args.app_key, args.trusted_apps, rest)


def _cmd_dpia(args: argparse.Namespace) -> int:
    from .dpia import write_dpia

    path, doc = write_dpia(args.run_dir, fmt=args.format, out=args.output, org_path=args.org)
    if args.json:
        print(json.dumps({"output": str(path), "format": args.format, "placeholders": doc["placeholders"],
                          "sections": [s["title"] for s in doc["sections"]], "facts": doc["facts"]}, indent=2))
        return 0
    print(f"wrote the DPIA ({args.format}) of {args.run_dir} to {path}")
    if doc["placeholders"]:
        print(f"  {len(doc['placeholders'])} organisational fact(s) left as [TO BE COMPLETED: ...]: "
              f"{', '.join(doc['placeholders'])}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from dp.audit import audit_dp_sgd, write_audit

    if args.guesses is not None and args.canaries != "auto" and not 1 <= args.guesses <= args.canaries // 2:
        raise UsageError(f"secagg audit: error: --guesses must be in [1, {args.canaries // 2}]; got {args.guesses}")
    if args.own_training:
        if not args.run_dir:
            raise UsageError("secagg audit: error: --own-training needs a RUN_DIR (the run whose training is audited)")
        given = [f"--{n}" for n in ("noise-multiplier", "sample-rate", "steps", "clipping-norm", "canary-kind")
                 if getattr(args, n.replace("-", "_")) is not None]
        if given:
            raise UsageError(f"secagg audit: error: --own-training takes sigma, q, steps and C from the run; "
                             f"drop {', '.join(given)}")
        from .audit_run import audit_own_training

        result = audit_own_training(args.run_dir, site=args.site, canaries=args.canaries,
                                    guesses_per_side=args.guesses, confidence=args.confidence, delta=args.delta,
                                    max_canaries=args.max_canaries)
    else:
        if args.site is not None:
            raise UsageError("secagg audit: error: --site needs --own-training")
        params = {"noise_multiplier": args.noise_multiplier, "sample_rate": args.sample_rate, "steps": args.steps,
                  "delta": args.delta, "clipping_norm": args.clipping_norm}
        if args.run_dir:
            privacy = _run_privacy(args.run_dir)
            for key, value in privacy.items():
                if params.get(key) is None:
                    params[key] = value
        missing = [k.replace("_", "-") for k in ("noise_multiplier", "sample_rate", "steps") if params[k] is None]
        if missing:
            raise UsageError(f"secagg audit: error: give --{', --'.join(missing)} or a RUN_DIR to take them from")
        params["delta"] = params["delta"] if params["delta"] is not None else 1e-5
        params["clipping_norm"] = params["clipping_norm"] if params["clipping_norm"] is not None else 1.0
        result = audit_dp_sgd(**params, canaries=args.canaries, guesses_per_side=args.guesses,
                              confidence=args.confidence, canary_kind=args.canary_kind or "gradient",
                              max_canaries=args.max_canaries)
    warnings_ = _audit_warnings(result)
    written = str(write_audit(args.run_dir, result)) if args.run_dir else None
    if args.json:
        print(json.dumps(result.to_dict() | {"written": written, "warnings": warnings_}, indent=2))
    else:
        where = f", site {result.site}" if result.site else ""
        print(f"one-run audit (Steinke, Nasr, Jagielski 2023), {result.mode} mode{where}: {result.canaries} "
              f"{result.canary_kind} canaries ({result.canaries_chosen}; {result.included} included), "
              f"{result.guesses} guesses, {result.correct} correct")
        print(f"  audits: {result.scope}")
        print(f"  empirical lower bound: epsilon >= {result.epsilon_lower_bound:.4f} at {result.confidence:.0%} "
              f"confidence (delta {result.delta})")
        print(f"  ceiling: this setting can certify at most epsilon >= {result.ceiling:.4f} (every guess right)")
        print(f"  accounted upper bound: epsilon <= {_fmt(result.epsilon_accounted)} ({result.accountant}) for "
              f"sigma {result.noise_multiplier}, q {result.sample_rate}, {result.steps} steps, C {result.clipping_norm}"
              f", {result.privacy_unit} level")
        if written:
            print(f"  wrote {written} (secagg dpia {args.run_dir} shows it)")
        for line in warnings_:
            print(f"  WARNING: {line}", file=sys.stderr)
        if not result.consistent:
            print("  INCONSISTENT: the lower bound exceeds the accounted epsilon - the implementation or the "
                  "accounting is wrong", file=sys.stderr)
    return 0 if result.consistent else 1


def _audit_warnings(result) -> list:
    """Plain statements of what the audit cannot see (it warns and runs; it never refuses for this)."""
    if result.ceiling_reaches_accounted:
        return []
    lines = [f"this audit cannot detect a violation above epsilon {result.ceiling:.4f} (its ceiling), below the "
             f"accounted {result.epsilon_accounted:.4f}: 'consistent' says nothing about epsilons in between"]
    if result.max_ceiling is not None:
        lines.append(f"no number of canaries up to the cap reaches the accounted epsilon at delta {result.delta} and "
                     f"{result.confidence:.0%} confidence: the largest ceiling is {result.max_ceiling:.4f} "
                     f"(m = {result.max_ceiling_canaries}), used here; each tenfold smaller --delta raises the largest "
                     f"ceiling by about 2.30 (ln 10) with about ten times the canaries, while the accounted epsilon "
                     f"at that delta rises too")
    return lines


def _canaries(value: str):
    """``auto`` or a positive int (argparse type)."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"canaries must be 'auto' or a positive integer; got {value!r}") from None
    if number < 2:
        raise argparse.ArgumentTypeError(f"canaries must be 'auto' or an integer >= 2; got {value!r}")
    return number


def _run_privacy(run_dir: str) -> dict:
    """sigma, q, steps per site, delta and clipping norm of a run directory (from its ledger)."""
    from dp.ledger import PrivacyLedger

    with PrivacyLedger.open(run_dir) as ledger:
        events = [e for s in sorted(ledger.budgets) for e in ledger.events(s)]
        delta = ledger.delta
    if not events:
        raise UsageError(f"secagg audit: error: the ledger of {run_dir} records no release to audit")
    sigmas = {e.noise_multiplier for e in events}
    rates = {e.sample_rate for e in events}
    if len(sigmas) > 1 or len(rates) > 1:
        raise UsageError(f"secagg audit: error: {run_dir} used several (sigma, q); pass them explicitly")
    per_site: dict = {}
    for e in events:
        per_site[e.site] = per_site.get(e.site, 0) + e.steps
    return {"noise_multiplier": sigmas.pop(), "sample_rate": rates.pop(), "steps": max(per_site.values()),
            "delta": delta, "clipping_norm": events[0].clipping_norm}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="secagg",
        description="Privacy-hardened secure aggregation for federated learning of brain-MRI autoencoders.",
        formatter_class=_Formatter,
        epilog=(
            "Examples:\n  secagg demo\n  secagg params --n 1000 --corrupt 0.05 --dropout 0.05\n"
            "  secagg epsilon --noise-multiplier 1.1 --sample-rate 0.01 --steps 1000 --delta 1e-5\n"
            "  secagg noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000\n"
            "  secagg ledger verify runs/demo"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="run one secure-aggregation session with dropouts and a malicious-coordinator attack",
        formatter_class=_Formatter,
        description=(
            "Hospitals aggregate synthetic updates through the real client/server sessions and wire\n"
            "encoding. One site drops after advertising keys, one after sharing keys, one after\n"
            "uploading its masked input. Prints what the coordinator saw and learned, then shows\n"
            "honest sites refusing a coordinator that asks for both shares of one site."
        ),
        epilog="Examples:\n  secagg demo\n  secagg demo --sites 12 --length 1000000\n  secagg demo --json",
    )
    demo.add_argument("--sites", type=int, default=8, help="number of hospitals (>= 5)")
    demo.add_argument("--length", type=_positive(int, "length"), default=100_000, help="parameters per update")
    demo.add_argument("--semi-honest", action="store_true",
                      help="skip the consistency-check round and signatures (default: active mode)")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    demo.set_defaults(func=_cmd_demo)

    params = sub.add_parser(
        "params",
        help="choose the SecAgg+ graph degree k and threshold t (Bell et al. 2020)",
        formatter_class=_Formatter,
        description=(
            "Smallest even degree k and a threshold t meeting the security failure bound 2^-S and\n"
            "the correctness failure bound 2^-C for n clients, a corrupt fraction and a dropout\n"
            "fraction. Infeasible settings are refused with the reason (exit code 2)."
        ),
        epilog="Examples:\n  secagg params --n 1000 --corrupt 0.05 --dropout 0.05\n"
               "  secagg params --n 500 --corrupt 0.1 --dropout 0.1 --malicious --json",
    )
    params.add_argument("--n", type=int, required=True, help="number of clients")
    params.add_argument("--corrupt", type=float, default=0.05, help="tolerated corrupt fraction of clients")
    params.add_argument("--dropout", type=float, default=0.05, help="tolerated dropout fraction")
    params.add_argument("--security-bits", type=float, default=40, help="security failure <= 2^-S")
    params.add_argument("--correctness-bits", type=float, default=20, help="correctness failure <= 2^-C")
    params.add_argument("--malicious", action="store_true", help="account for a malicious coordinator")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(func=_cmd_params)

    epsilon = sub.add_parser(
        "epsilon",
        help="epsilon of DP-SGD (Poisson-subsampled Gaussian) under several accountants",
        formatter_class=_Formatter,
        description=(
            "Epsilon at the given delta for STEPS steps of DP-SGD with Poisson sampling, from Opacus RDP,\n"
            "Opacus PRV and dp-accounting PLD side by side. The bound is the tightest of the valid upper\n"
            "bounds; an accountant that fails is reported with its reason. GDP (--show-gdp) is an\n"
            "approximation that can under-estimate epsilon and is never used as the bound."
        ),
        epilog=(
            "Examples:\n  secagg epsilon --noise-multiplier 1.1 --sample-rate 0.01 --steps 1000 --delta 1e-5\n"
            "  secagg epsilon --noise-multiplier 1.0 --sample-rate 0.004 --steps 14000 --delta 1e-5 --json\n"
            "  secagg epsilon --noise-multiplier 0.8 --sample-rate 1 --steps 10 --delta 1e-6 --accountant pld"
        ),
    )
    epsilon.add_argument("--noise-multiplier", required=True, type=_positive(float, "noise multiplier"),
                         help="sigma: noise std divided by the clipping norm")
    epsilon.add_argument("--sample-rate", required=True, type=_probability("sample rate", high_closed=True),
                         help="q: Poisson sampling probability per step, in (0, 1]")
    epsilon.add_argument("--steps", required=True, type=_positive(int, "steps"), help="number of DP-SGD steps")
    epsilon.add_argument("--delta", required=True, type=_probability("delta"), help="target delta, in (0, 1)")
    epsilon.add_argument("--accountant", choices=_ACCOUNTANT_CHOICES, default="all",
                         help="one accountant, or all of rdp, prv, pld")
    epsilon.add_argument("--neighbouring", choices=("add_remove_one", "replace_one"), default="add_remove_one",
                         help="adjacency relation (Opacus accountants support add/remove only)")
    epsilon.add_argument("--show-gdp", action="store_true", help="also show the GDP approximation (labelled)")
    epsilon.add_argument("--json", action="store_true",
                         help='one JSON object with keys "epsilon" (accountant -> value or null) and "bound"')
    epsilon.set_defaults(func=_cmd_epsilon)

    noise = sub.add_parser(
        "noise",
        help="calibrate the noise multiplier for a target epsilon over the whole run",
        formatter_class=_Formatter,
        description=(
            "Smallest noise multiplier whose epsilon after STEPS steps (rounds x local steps: the whole\n"
            "run, not one epoch) is at most the target, under the chosen accountant."
        ),
        epilog=(
            "Examples:\n  secagg noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000\n"
            "  secagg noise --target-epsilon 1 --delta 1e-6 --sample-rate 0.05 --steps 200 --accountant rdp --json"
        ),
    )
    noise.add_argument("--target-epsilon", required=True, type=_positive(float, "target epsilon"))
    noise.add_argument("--delta", required=True, type=_probability("delta"), help="target delta, in (0, 1)")
    noise.add_argument("--sample-rate", required=True, type=_probability("sample rate", high_closed=True),
                       help="q, in (0, 1]")
    noise.add_argument("--steps", required=True, type=_positive(int, "steps"), help="total steps of the run")
    noise.add_argument("--accountant", choices=_ACCOUNTANT_CHOICES, default="all",
                       help="calibrate against one accountant, or the tightest valid bound of all")
    noise.add_argument("--json", action="store_true", help='one JSON object with key "noise_multiplier"')
    noise.set_defaults(func=_cmd_noise)

    from .config import MODES, PRESETS, SimulationConfig

    defaults = SimulationConfig()
    simulate = sub.add_parser(
        "simulate",
        help="federated DP training of a brain-MRI autoencoder with secure aggregation (the main job)",
        formatter_class=_Formatter,
        description=(
            "Several hospitals train an anomaly-detection autoencoder together: local DP-SGD (Opacus),\n"
            "then secure aggregation of the updates (the coordinator sees only the sum), with sites\n"
            "dropping out mid-protocol. Writes one run directory (config, metrics.jsonl, privacy ledger,\n"
            "checkpoints, plots, summary.json) and prints a summary: detection metrics of the\n"
            "federated model vs local-only models, epsilon per site, dropouts survived.\n\n"
            "Without --data it generates the synthetic four-site cohort (cached). Defaults are the\n"
            "'demo' preset (compact model, 64x64 slices, tiny cohort: minutes on 2 CPU cores);\n"
            "--tiny finishes in well under a minute. Modes: secagg (complete graph), secagg+ (sparse\n"
            "graph from the parameter finder), he (CKKS homomorphic encryption, TenSEAL extra: WEAKER\n"
            "trust model - one shared secret key, so any one site colluding with the coordinator can\n"
            "decrypt every update, and the key holder is a single point of trust), plain (NO\n"
            "protection: a labelled baseline).\n"
            "Privacy unit: patient by default - every epsilon printed is patient-level (add/remove one\n"
            "patient); --privacy-unit slice gives the weaker, labelled slice-level guarantee. FedAvg\n"
            "weights are public (declared in the config's site_weights, equal by default); losses and\n"
            "clip counts stay at the sites (RUN_DIR/site-local/, labelled site-local).\n"
            "Every default below is the demo preset's."
        ),
        epilog=(
            "Examples:\n  secagg simulate\n  secagg simulate --tiny --out runs/smoke\n"
            "  secagg simulate --mode secagg+ --dropout 0.1 --rounds 10\n"
            "  secagg simulate --data /data/cohort --model feddis --epsilon 4 --baselines local,central\n"
            "  secagg simulate --data /data/bids --bids-suffix FLAIR --bids-group-column diagnosis --tiny\n"
            "  secagg simulate --preset study --out runs/study\n"
            "  secagg simulate --resume runs/demo-secagg-1a2b3c4d"
        ),
    )
    simulate.add_argument("--data", help="cohort directory in the site layout, or a BIDS dataset (or a folder of BIDS "
                               "datasets, one per site), detected by dataset_description.json (default: synthetic, "
                               "generated and cached)")
    simulate.add_argument("--bids-suffix", help="BIDS: modality suffix of the images read (default FLAIR)")
    simulate.add_argument("--bids-group-column",
                          help="BIDS: participants.tsv column with healthy|control or patient (default group)")
    simulate.add_argument("--bids-site-column",
                          help="BIDS: participants.tsv column naming each subject's site, used when present "
                               "(default site)")
    simulate.add_argument("--bids-pipeline", help="BIDS: derivatives/<pipeline> holding the lesion masks "
                          "(*_desc-lesion_mask.nii.gz or *_<SUFFIX>_mask.nii.gz; default lesions)")
    simulate.add_argument("--sites", type=_positive(int, "sites"), help=f"synthetic sites (default {defaults.sites})")
    simulate.add_argument("--rounds", type=_positive(int, "rounds"), help=f"federated rounds (default {defaults.rounds})")
    simulate.add_argument("--local-steps", type=_positive(int, "local steps"),
                          help=f"DP-SGD steps per site per round (default {defaults.local_steps})")
    simulate.add_argument("--mode", choices=MODES, help=f"aggregation protocol (default {defaults.mode})")
    simulate.add_argument("--active", action="store_true",
                          help="defend against an actively malicious coordinator (signatures + consistency check)")
    simulate.add_argument("--corrupt-fraction", type=_probability("corrupt fraction", low_open=False),
                          help="fraction of sites that may collude with the coordinator: sets the SecAgg+ parameters "
                               "and, with --active, the consistency quorum (default 0)")
    simulate.add_argument("--threshold", type=_positive(int, "threshold"),
                          help="t: minimum sites per protocol round (default: smallest safe value)")
    simulate.add_argument("--dropout", type=_probability("dropout", low_open=False),
                          help="per-stage drop probability of each site (default: the demo preset scripts one dropout at "
                               "each stage and one aborted round; with --data or --sites, 0.02)")
    simulate.add_argument("--dropout-schedule", help="JSON/TOML file: round -> stage -> [sites]")
    simulate.add_argument("--epsilon", type=_positive(float, "epsilon"),
                          help=f"each site's privacy budget for the whole run (default {defaults.epsilon})")
    simulate.add_argument("--delta", type=_probability("delta"), help=f"delta (default {defaults.delta})")
    simulate.add_argument("--model", help=f"model name (default {defaults.model}; see models.available_models())")
    simulate.add_argument("--image-size", type=_positive(int, "image size"),
                          help=f"slice size in pixels (default {defaults.image_size})")
    simulate.add_argument("--distributed-dp", choices=("skellam", "ddg"),
                          help="sites add discrete noise before masking: site-level DP of every released sum "
                               "(default: off)")
    simulate.add_argument("--ddp-epsilon", type=_positive(float, "ddp epsilon"),
                          help=f"site-level budget over the run (default {defaults.ddp_epsilon})")
    simulate.add_argument("--ddp-clip", type=_positive(float, "ddp clip"),
                          help=f"L2 clip of each site's update (default {defaults.ddp_clip})")
    simulate.add_argument("--ddp-colluding", type=int,
                          help=f"sites whose noise may be known to the coordinator (default {defaults.ddp_colluding})")
    simulate.add_argument("--privacy-unit", choices=("patient", "slice"),
                          help="what one epsilon protects: 'patient' (add/remove one patient, all of their "
                               "slices; DP-SGD samples patients and clips each patient's summed gradient) or "
                               "'slice' (one 2-D slice only - a labelled, far weaker option) "
                               f"(default {defaults.privacy_unit})")
    simulate.add_argument("--skip-invalid", action="store_true",
                          help="leave out unusable or hostile input files (not NIfTI, over the volume limits, not a "
                               "regular file) with a warning, counted in summary.json (default: refuse the run naming "
                               "the file); the limits are set by a [volume_limits] table in --config")
    simulate.add_argument("--baselines", help="comma list of local,central (default local; 'none' for none)")
    simulate.add_argument("--seed", type=int, help=f"seed of splits, initialisation and dropouts (default {defaults.seed})")
    simulate.add_argument("--out", help="run directory (default runs/PRESET-MODE-FINGERPRINT)")
    simulate.add_argument("--config", help="TOML file with any configuration keys (flags override it)")
    simulate.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="starting configuration")
    simulate.add_argument("--tiny", action="store_true", help="the smoke-test preset (well under a minute)")
    simulate.add_argument("--cache-dir", help=f"cache of synthetic data and preprocessing (default {defaults.cache_dir})")
    simulate.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last complete round")
    simulate.add_argument("--json", action="store_true", help="print summary.json instead of the text summary")
    simulate.set_defaults(func=_cmd_simulate)

    experiment = sub.add_parser(
        "experiment",
        help="a fair multi-seed comparison: federated vs every local-only model, central and non-private",
        formatter_class=_Formatter,
        description=(
            "For each seed, runs under identical conditions: federated training through the real secure-\n"
            "aggregation path (no protocol dropouts), one local-only model per site, a central model on the\n"
            "pooled data (same sigma, q, maximum steps: the same target epsilon) and a non-private central\n"
            "model (NO DP: no clipping, no noise, calibration skipped). Then writes OUT/report.md and\n"
            "OUT/plots/: per-arm AUPRC/AUROC/Dice overall, per lesion type and per test site beside the\n"
            "intensity baseline, paired differences with 95% t and bootstrap intervals, the privacy of\n"
            "each arm, and with --epsilons a privacy-utility curve. Optional (TOML keys): learning rates\n"
            "tuned per arm on a separate seed by healthy validation loss (lr_grid, tuning_seed), early\n"
            "stopping on that loss, the same rule for every arm (patience, min_improvement), and a\n"
            "held-out site per seed (held_out_site).\n\n"
            "EXPERIMENT MODE: DP sampling and noise come from seeded generators so that a seed repeats\n"
            "exactly. Seeded noise is NOT a privacy guarantee; every output is labelled so. Real runs\n"
            "(`secagg simulate`, Flower) always use the CSPRNG.\n"
            "Settings: a TOML file (--config; see experiments/reference.toml) with top-level keys name,\n"
            "seeds, arms, vary_data, epsilons, lr_grid, tuning_seed, patience, min_improvement,\n"
            "held_out_site and a [simulation] table of `secagg simulate` keys; flags\n"
            "override it."
        ),
        epilog=(
            "Examples:\n  secagg experiment --config experiments/reference.toml\n"
            "  secagg experiment --tiny --seeds 0,1 --out runs/exp-smoke\n"
            "  secagg experiment --config experiments/reference.toml --epsilons 1,4 --json\n"
            "  secagg experiment --tiny --seeds 0,1,2 --arms federated,local --jobs 1"
        ),
    )
    experiment.add_argument("--config", help="experiment TOML file (default: built-in defaults)")
    experiment.add_argument("--seeds", type=_int_list("seeds"), help="comma list of seeds (default 0,1,2,3,4)")
    experiment.add_argument("--arms", help="comma list of federated,local,central,non-private (default all)")
    experiment.add_argument("--epsilons", type=_float_list("epsilons"),
                            help="extra target epsilons for the privacy-utility curve (federated and central)")
    experiment.add_argument("--same-data", action="store_true",
                            help="one cohort for every seed (default: seed s uses data_seed + s)")
    experiment.add_argument("--tiny", action="store_true", help="the tiny simulation preset (a smoke test)")
    experiment.add_argument("--scale", help="synthetic cohort scale")
    experiment.add_argument("--model", help="model name (see models.available_models())")
    experiment.add_argument("--sites", type=_positive(int, "sites"), help="synthetic sites")
    experiment.add_argument("--rounds", type=_positive(int, "rounds"), help="federated rounds")
    experiment.add_argument("--local-steps", type=_positive(int, "local steps"), help="DP-SGD steps per round")
    experiment.add_argument("--epsilon", type=_positive(float, "epsilon"), help="target epsilon of every DP arm")
    experiment.add_argument("--image-size", type=_positive(int, "image size"), help="slice size in pixels")
    experiment.add_argument("--server-optimizer", choices=("fedavg", "momentum", "adam"),
                            help="update rule applied at the coordinator to the decoded sum")
    experiment.add_argument("--cache-dir", help="cache of synthetic data and preprocessing")
    experiment.add_argument("--out", help="output directory, new or empty (default experiments/runs/NAME-TIME)")
    experiment.add_argument("--jobs", type=_positive(int, "jobs"),
                            help="seeds (and tuning rates) trained at once, each in its own process with one torch "
                                 "thread (default: one per CPU); the results do not depend on it")
    experiment.add_argument("--json", action="store_true",
                            help="print one JSON object (out_dir, report, seeds, overall AUPRC statistics); "
                                 "progress goes to stderr")
    experiment.set_defaults(func=_cmd_experiment)

    data = sub.add_parser("data", help="data utilities", formatter_class=_Formatter,
                          epilog="Example:\n  secagg data synth --out data/tiny --scale tiny")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    synth = data_sub.add_parser(
        "synth", formatter_class=_Formatter,
        help="write a synthetic multi-site FLAIR cohort (NIfTI, offline, deterministic for a seed)",
        description=(
            "Subjects from the MNI152 2009 template shipped with nilearn (no download): smooth random\n"
            "deformations, FLAIR-like rendering, per-site scanner effects, MS-like lesions and tumours\n"
            "with voxel masks, written in the site layout or (--layout bids) as a BIDS dataset. Scales: tiny (CI and the\n"
            "CPU demo), small, paper (the FedDis study's size: 1,532 healthy, ~538 pathological)."
        ),
        epilog="Examples:\n  secagg data synth --out data/tiny\n  secagg data synth --out data/bids --layout bids\n"
               "  secagg data synth --out data/paper --scale paper --seed 1",
    )
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--sites", type=_positive(int, "sites"), default=4, help="number of sites")
    synth.add_argument("--scale", choices=("tiny", "small", "paper"), default="tiny", help="cohort size")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--workers", type=_positive(int, "workers"), help="rendering processes")
    synth.add_argument("--overwrite", action="store_true", help="replace a different cohort already in --out")
    synth.add_argument("--layout", choices=("site", "bids"), default="site",
                       help="site: SITE/healthy, SITE/pathology; bids: one BIDS dataset (participants.tsv with "
                            "group and site columns, masks in derivatives/lesions)")
    synth.add_argument("--json", action="store_true", help="print one JSON object")
    synth.set_defaults(func=_cmd_data_synth)

    export = sub.add_parser(
        "export", help="write a run's federated model as one versioned, self-describing file",
        formatter_class=_Formatter,
        description=(
            "Writes the run's federated model as a safetensors file (no pickle) whose header carries the\n"
            "architecture and image size, the preprocessing parameters, the modality, the detection threshold\n"
            "fixed on the run's healthy validation volumes, and the privacy guarantee it was trained under\n"
            "(epsilon per site and the accountant re-derived from the verified ledger, delta, unit). It loads\n"
            "without the run directory (`secagg detect MODEL.secagg ...`); a newer format is refused."
        ),
        epilog="Examples:\n  secagg export runs/demo --out model.secagg\n  secagg export runs/demo --out model.secagg --json",
    )
    export.add_argument("run_dir", help="a finished run directory (summary.json, checkpoints/, ledger.sqlite)")
    export.add_argument("--out", required=True, help="the model file to write (e.g. model.secagg)")
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(func=_cmd_export)

    detect = sub.add_parser(
        "detect", help="apply a model to new scans: anomaly map and segmentation as NIfTI, montage, JSON",
        formatter_class=_Formatter,
        description=(
            "For each scan: checks that it fits the model's preprocessing (modality of a BIDS name, resolution,\n"
            "orientation, raw skull-stripped intensities; a mismatch is refused), scores it, and writes into\n"
            "--out STEM_anomaly.nii.gz (score map) and STEM_segmentation.nii.gz (score > threshold), both with\n"
            "the input's affine, shape and header so they overlay it in any viewer, STEM_montage.png, and one\n"
            "detections.json (per-scan scores, lesion volume in mL, the threshold and where it came from).\n"
            "MODEL is an exported model file or a run directory. With --prepare a raw scan is prepared first\n"
            "and both maps are mapped back onto its own grid (the JSON's `space` names each file's grid)."
        ),
        epilog=("Examples:\n  secagg detect model.secagg scan.nii.gz --out results/\n"
                "  secagg detect model.secagg raw/sub-07_FLAIR.nii.gz --prepare --out results/\n"
                "  secagg detect runs/demo bids/sub-01/anat/sub-01_FLAIR.nii.gz --out results/ --json"),
    )
    detect.add_argument("model", help="an exported model file (secagg export) or a finished run directory")
    detect.add_argument("scans", nargs="+", metavar="SCAN", help="NIfTI scans (.nii or .nii.gz)")
    detect.add_argument("--out", required=True, help="output directory")
    detect.add_argument("--prepare", action="store_true",
                        help="run `secagg data prepare` (RAS, N4, MNI152 registration, skull stripping, "
                             "normalisation) on each raw scan first, into OUT/prepared/ (maps on that grid there "
                             "too); the maps in OUT/ are mapped back onto the raw scan's own grid and header")
    detect.add_argument("--json", action="store_true", help="print detections.json")
    detect.set_defaults(func=_cmd_detect)

    prepare = data_sub.add_parser(
        "prepare", formatter_class=_Formatter,
        help="reorient, N4 bias correction, affine registration to MNI152, skull stripping, normalisation",
        description=(
            "Prepares raw scanner FLAIR for the models: reorientation to RAS, N4 bias-field correction\n"
            "(SimpleITK), affine registration to the MNI152 2009 template that nilearn ships (2 mm, offline),\n"
            "skull stripping by the registered template's brain mask, and division by the brain median. Each\n"
            "step can be switched off; each output gets a JSON sidecar (steps, input SHA-256, the fitted\n"
            "transform, seconds). IN is a scan or a folder (searched recursively; masks and derivatives/ are\n"
            "skipped); outputs keep their relative paths. Resumable: a scan already prepared from the same\n"
            "input with the same options is skipped.\n"
            "A BIDS dataset (or a folder of them) gives a BIDS dataset that `secagg simulate --data` reads:\n"
            "the images of the BIDS suffix at the same paths, their lesion and brain masks from\n"
            "derivatives/<pipeline>/ moved by each image's recorded transform (nearest neighbour, 0/1),\n"
            "participants.tsv and the other top-level files verbatim, and dataset_description.json\n"
            "(DatasetType derivative, GeneratedBy secagg data prepare) written last."
        ),
        epilog=("Examples:\n  secagg data prepare raw/sub-01_FLAIR.nii.gz --out prepared/\n"
                "  secagg data prepare /data/bids --out /data/bids-prepared --workers 4\n"
                "  secagg data prepare raw/ --out prepared/ --no-n4 --json"),
    )
    prepare.add_argument("input", help="a NIfTI scan, a folder of them, or a BIDS dataset (or a folder of them)")
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument("--workers", type=_positive(int, "workers"), default=1, help="processes (one scan each)")
    for step in ("reorient", "n4", "register", "skull-strip", "normalise"):
        prepare.add_argument(f"--no-{step}", action="store_true", help=f"skip the {step} step")
    prepare.add_argument("--bids-suffix", help="BIDS input: modality suffix of the images prepared (default FLAIR)")
    prepare.add_argument("--bids-group-column",
                         help="BIDS input: participants.tsv column with healthy|control or patient (default group)")
    prepare.add_argument("--bids-site-column", help="BIDS input: participants.tsv site column (default site)")
    prepare.add_argument("--bids-pipeline", help="BIDS input: derivatives/<pipeline> holding the masks (default lesions)")
    prepare.add_argument("--json", action="store_true", help="print one JSON object")
    prepare.set_defaults(func=_cmd_data_prepare)

    keys = sub.add_parser("keys", help="site identities and Flower node keys, and their registry",
                          formatter_class=_Formatter,
                          epilog="Example:\n  secagg keys new --site site-1 --out /var/secagg/keys --registry registry.json")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    new_key = keys_sub.add_parser(
        "new", formatter_class=_Formatter,
        help="generate a site's Ed25519 identity and Flower node key (and register both)",
        description=(
            "Writes OUT/SITE.ed25519 (the signing key, mode 0600; never overwritten) and prints the verify key,\n"
            "and the node's Flower authentication key: OUT/SITE.flower-auth (mode 0600; the SuperNode's\n"
            "--auth-supernode-private-key) and OUT/SITE.flower-auth.pub (what the SuperLink registers).\n"
            "Active mode checks every signature against a registry of the sites' verify keys that each site\n"
            "holds itself (JSON: site -> keys); --registry adds this site's two public keys to such a file.\n"
            "Deliver the finished registry to every site out of band: a key list that only the coordinator hands out\n"
            "would let it substitute identities."
        ),
        epilog=("Examples:\n  secagg keys new --site site-1 --out keys/ --registry registry.json\n"
                "  secagg keys new --site site-2 --out keys/ --registry registry.json --json"),
    )
    new_key.add_argument("--site", required=True, help="the site's name (as its node reports it)")
    new_key.add_argument("--out", required=True, help="directory for the signing key and the node key")
    new_key.add_argument("--registry",
                         help="a registry JSON file to add the verify key and node key to (created if missing)")
    new_key.add_argument("--passphrase-env", metavar="VAR",
                         help="encrypt the signing key under the passphrase held by environment variable VAR "
                              "(Argon2id + XSalsa20-Poly1305); a passphrase is never taken on the command line")
    new_key.add_argument("--json", action="store_true", help="print one JSON object")
    new_key.set_defaults(func=_cmd_keys_new)
    node_auth = keys_sub.add_parser(
        "node-auth", formatter_class=_Formatter,
        help="add a Flower node-authentication key to an existing site identity",
        description=(
            "For a site made before node keys existed: writes OUT/SITE.flower-auth (mode 0600) and\n"
            "OUT/SITE.flower-auth.pub beside OUT/SITE.ed25519 (which must exist), and with --registry\n"
            "records the public key next to the site's verify key. `secagg keys new` makes both at once."
        ),
        epilog="Example:\n  secagg keys node-auth --site site-1 --out keys/ --registry registry.json",
    )
    node_auth.add_argument("--site", required=True, help="the site's name")
    node_auth.add_argument("--out", required=True, help="the directory holding SITE.ed25519")
    node_auth.add_argument("--registry", help="the registry JSON file that holds the site's verify key")
    node_auth.add_argument("--json", action="store_true", help="print one JSON object")
    node_auth.set_defaults(func=_cmd_keys_node_auth)
    register_nodes = keys_sub.add_parser(
        "register-nodes", formatter_class=_Formatter,
        help="register the registry's Flower node keys with a SuperLink (run with --enable-supernode-auth)",
        description=(
            "Registers every node key in the registry with the SuperLink's Control API (what `flwr supernode\n"
            "register` does; the connection, TLS root and login come from $FLWR_HOME/config.toml) and checks\n"
            "that the SuperLink then admits exactly those keys. Keys already admitted are kept (it can be run\n"
            "again). Exit 1 when the SuperLink cannot be reached, refuses a key, or admits a node whose key\n"
            "the registry does not name (it removes nothing itself)."
        ),
        epilog="Example:\n  FLWR_HOME=~/flwr-home secagg keys register-nodes --registry registry.json --superlink loop",
    )
    register_nodes.add_argument("--registry", required=True, help="the consortium's registry JSON file")
    register_nodes.add_argument("--superlink", help="the SuperLink connection's name in $FLWR_HOME/config.toml "
                                "(default: its default connection)")
    register_nodes.add_argument("--json", action="store_true", help="print one JSON object")
    register_nodes.set_defaults(func=_cmd_keys_register_nodes)

    flower = sub.add_parser(
        "flower", help="what a Flower deployment needs: the app folder, loopback certificates, the run's outcome",
        formatter_class=_Formatter,
        description=("The Flower engine's app folder ships inside the installed package: `flwr run \"$(secagg flower\n"
                     "app-path)\" ...` needs no source checkout. Its deploy-local.sh runs the whole guide on one\n"
                     "machine."),
        epilog=("Examples:\n  secagg flower app-path\n  secagg flower certs --out ~/secagg/certs\n"
                "  secagg flower check ~/secagg/run"),
    )
    flower_sub = flower.add_subparsers(dest="flower_command", required=True, parser_class=_Parser)
    app_path = flower_sub.add_parser("app-path", formatter_class=_Formatter,
                                     help="print the installed Flower app folder (what `flwr run` takes)")
    app_path.set_defaults(func=_cmd_flower_app_path)
    certs = flower_sub.add_parser(
        "certs", formatter_class=_Formatter,
        help="write a throwaway CA and a loopback server certificate (tests and demos on one machine)",
        description=("Writes OUT/ca.pem, OUT/server.pem and OUT/server.key (0600; OUT created 0700) for a SuperLink\n"
                     "on 127.0.0.1/::1/localhost. The CA's private key is never written. Not a deployment PKI."))
    certs.add_argument("--out", required=True, help="directory for the PEM files")
    certs.add_argument("--days", type=_positive(int, "days"), default=30, help="validity in days")
    certs.add_argument("--json", action="store_true", help="print one JSON object")
    certs.set_defaults(func=_cmd_flower_certs)
    check = flower_sub.add_parser(
        "check", formatter_class=_Formatter,
        help="exit 0 when a Flower run directory holds a finished run, 1 when it does not",
        description=("`flwr run` exits 0 even when the ServerApp failed. The ServerApp writes summary.json last:\n"
                     "this exits 1 (one line naming why) when it is missing or records fewer completed rounds\n"
                     "than planned."))
    check.add_argument("run_dir", help="the run directory (`out` of the run config)")
    check.add_argument("--run-id", action="store_true",
                       help="print only the ledger's run id (the folder of the nodes' anchors) when the run finished")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=_cmd_flower_check)
    app_key = flower_sub.add_parser(
        "app-key", formatter_class=_Formatter,
        help="generate the consortium's app-signing key (nodes run only app bundles it signed)",
        description=("Writes OUT/consortium-apps.ed25519 (Ed25519 signing key, mode 0600; never overwritten) and\n"
                     "OUT/consortium-apps.pub (its verify key, hex), which every node gets out of band as its\n"
                     "`secagg flower supernode --app-key`. Keep the signing key with the consortium, not on the SuperLink."),
        epilog="Example:\n  secagg flower app-key --out ~/consortium --passphrase-env APP_KEY_PASSPHRASE")
    app_key.add_argument("--out", required=True, help="directory for the key files (created 0700)")
    app_key.add_argument("--passphrase-env", metavar="VAR",
                         help="encrypt the signing key under the passphrase held by environment variable VAR")
    app_key.add_argument("--json", action="store_true", help="print one JSON object")
    app_key.set_defaults(func=_cmd_flower_app_key)
    sign_app = flower_sub.add_parser(
        "sign-app", formatter_class=_Formatter,
        help="sign an app bundle (FAB) with the consortium's app-signing key",
        description=("Builds the app folder's bundle exactly as `flwr run APP` does (`flwr build`: reproducible, so\n"
                     "the same folder gives the same SHA-256), or reads a .fab file, and writes OUT/<sha256>.json: an\n"
                     "Ed25519 signature over the bundle's SHA-256. Every node keeps these files in its --trusted-apps\n"
                     "folder and runs a bundle only when one of them verifies under the consortium's app key."),
        epilog=("Example:\n  secagg flower sign-app \"$(secagg flower app-path)\" --key ~/consortium/consortium-apps.ed25519 "
                "--out ~/trusted-apps"))
    sign_app.add_argument("app", help="the app folder (what `flwr run` takes) or a .fab file")
    sign_app.add_argument("--key", required=True, help="the consortium's app-signing key (secagg flower app-key)")
    sign_app.add_argument("--passphrase-env", metavar="VAR",
                          help="the environment variable holding the key's passphrase (default SECAGG_KEY_PASSPHRASE)")
    sign_app.add_argument("--out", required=True, help="folder for the signature file (created if missing)")
    sign_app.add_argument("--json", action="store_true", help="print one JSON object")
    sign_app.set_defaults(func=_cmd_flower_sign_app)
    supernode = flower_sub.add_parser(
        "supernode", formatter_class=_Formatter,
        help="run flower-supernode so that it runs only app bundles the consortium signed",
        description=("Starts `flower-supernode ARGS` (after --) with every ClientApp it starts checked first: the\n"
                     "bundle's SHA-256, computed at the node, must carry a signature of the consortium's app key in\n"
                     "--trusted-apps, and must be the bundle the run names. A refused bundle is never installed or\n"
                     "imported: the round gets an error reply and the node's log one line naming the hash and why.\n"
                     "Exits with flower-supernode's status."),
        epilog=("Example:\n  secagg flower supernode --app-key consortium-apps.pub --trusted-apps ~/trusted-apps -- \\\n"
                "      --root-certificates ca.pem --superlink 10.0.0.1:9092 --node-config 'site=\"site-1\" ...'"))
    from .flower.verified_clientapp import add_trust_arguments

    add_trust_arguments(supernode)
    supernode.add_argument("supernode_args", nargs=argparse.REMAINDER,
                           help="-- then the arguments of flower-supernode")
    supernode.set_defaults(func=_cmd_flower_supernode)

    dpia = sub.add_parser(
        "dpia", help="a Data Protection Impact Assessment (GDPR Art. 35) drawn from a run directory",
        formatter_class=_Formatter,
        description=(
            "Writes a DPIA from what the run recorded (configuration, summary, metrics, the privacy ledger,\n"
            "plots, an empirical audit if present) and the organisational facts of a TOML file (controller,\n"
            "DPO, purposes, lawful basis and Art. 9 condition, retention, ...; a documented example is\n"
            "simulation/templates/org.example.toml). Facts left out stay visibly '[TO BE COMPLETED: key]'.\n"
            "Sections: Art. 35(7)(a)-(d), WP248 screening, roles, data-flow diagram, CNIL risks, measures\n"
            "with the run's exact parameters, residual risk, DPO advice, sign-off. HTML is self-contained;\n"
            "PDF needs headless Chromium (apt-get install chromium)."
        ),
        epilog=("Examples:\n  secagg dpia runs/demo\n  secagg dpia runs/demo --org org.toml -o dpia.html\n"
                "  secagg dpia runs/demo --format md -o DPIA.md\n  secagg dpia runs/demo --format pdf --json"),
    )
    dpia.add_argument("run_dir", help="a run directory (holds ledger.sqlite)")
    dpia.add_argument("--format", choices=("html", "md", "pdf"), default="html", help="output format")
    dpia.add_argument("-o", "--output", help="output file (default: RUN_DIR/dpia.FORMAT)")
    dpia.add_argument("--org", metavar="FILE.toml", help="organisational facts (default: none, all placeholders)")
    dpia.add_argument("--json", action="store_true", help="print one JSON object (output path, placeholders)")
    dpia.set_defaults(func=_cmd_dpia)

    audit = sub.add_parser(
        "audit", help="empirical lower bound on epsilon of DP-SGD with one training run (Steinke et al. 2023)",
        formatter_class=_Formatter,
        description=(
            "Inserts m canaries, each included with probability 1/2, trains once with the project's DP-SGD,\n"
            "guesses membership from the trained weights and turns the number of correct guesses into a\n"
            "LOWER bound on epsilon at the given confidence, printed beside the accounted UPPER bound and\n"
            "the ceiling (the largest bound the setting can ever show; a warning says when it is below the\n"
            "accounted epsilon). Synthetic mode audits (sigma, q, steps, C) on a small linear model;\n"
            "--own-training audits the run's model, hyper-parameters and one site's real data.\n"
            "With RUN_DIR, sigma, q, steps, delta and C default to the run's ledger and the result is written\n"
            "to RUN_DIR/audit.json (shown by `secagg dpia`). Exit code 1 when the lower bound exceeds the\n"
            "accounted epsilon (a privacy bug)."
        ),
        epilog=("Examples:\n  secagg audit --noise-multiplier 1.0 --sample-rate 0.5 --steps 10\n"
                "  secagg audit runs/demo --canaries 400 --confidence 0.99\n"
                "  secagg audit runs/demo --own-training --site site-2\n"
                "  secagg audit runs/demo --json"),
    )
    audit.add_argument("run_dir", nargs="?", help="a run directory: parameters from its ledger; writes audit.json")
    audit.add_argument("--noise-multiplier", type=_positive(float, "noise multiplier"), help="sigma")
    audit.add_argument("--sample-rate", type=_probability("sample rate", high_closed=True), help="q, in (0, 1]")
    audit.add_argument("--steps", type=_positive(int, "steps"), help="DP-SGD steps")
    audit.add_argument("--delta", type=_probability("delta"), help="delta, in (0, 1) (default: the run's, else 1e-5)")
    audit.add_argument("--clipping-norm", type=_positive(float, "clipping norm"),
                       help="per-example L2 clip C (default: the run's, else 1.0)")
    audit.add_argument("--canaries", type=_canaries, default="auto",
                       help="m, number of canaries, or 'auto': the smallest m whose ceiling reaches the accounted "
                            "epsilon (default auto)")
    audit.add_argument("--max-canaries", type=_positive(int, "max canaries"), default=1_000_000,
                       help="cap of --canaries auto (default 1000000)")
    audit.add_argument("--guesses", type=_positive(int, "guesses"),
                       help="k guesses on each side (k in, k out; default: canaries // 4)")
    audit.add_argument("--confidence", type=_probability("confidence"), default=0.95,
                       help="confidence of the lower bound, in (0, 1)")
    audit.add_argument("--own-training", action="store_true",
                       help="audit the run's own DP-SGD: its model, hyper-parameters and a site's real data, with "
                            "gradient canaries (needs RUN_DIR)")
    audit.add_argument("--site", help="--own-training: the site whose training is audited (default: the first)")
    audit.add_argument("--canary-kind", choices=("gradient", "record"),
                       help="synthetic mode: gradient canaries (default) or record canaries (m <= 2000)")
    audit.add_argument("--json", action="store_true", help="print one JSON object")
    audit.set_defaults(func=_cmd_audit)

    ledger = sub.add_parser(
        "ledger", help="show or verify a run's privacy ledger", formatter_class=_Formatter,
        description="The append-only, hash-chained privacy ledger of a run directory.",
        epilog="Examples:\n  secagg ledger show runs/demo\n  secagg ledger verify runs/demo --json",
    )
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)
    show = ledger_sub.add_parser(
        "show", help="per site and round: events and cumulative epsilon per accountant", formatter_class=_Formatter,
        epilog="Example:\n  secagg ledger show runs/demo",
    )
    show.add_argument("run_dir", help="a run directory (holds ledger.sqlite)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=_cmd_ledger_show)
    verify = ledger_sub.add_parser(
        "verify", formatter_class=_Formatter,
        help="check the hash chain, the sites' signatures, their anchors and every epsilon; exit 0 when intact, "
             "1 naming the first broken entry",
        description=(
            "Checks every entry in order (chain link, hash, the signature of the site a spend charges, the\n"
            "re-derived epsilon within budget), then the sites' anchors, then the head record, and names the\n"
            "first entry that fails (sequence number, site, round). Without --anchors, deleting the last\n"
            "round(s) is caught only by the head record, which whoever controls the run directory can rewrite."),
        epilog=("Examples:\n  secagg ledger verify runs/demo\n"
                "  secagg ledger verify runs/demo --registry ~/consortium/registry.json --anchors site-1-state/ "
                "site-2-state/"),
    )
    verify.add_argument("run_dir", help="a run directory (holds ledger.sqlite)")
    verify.add_argument("--registry", metavar="REG",
                        help="JSON registry of the sites' Ed25519 verify keys (default: RUN_DIR/registry.json when "
                             "present - only as trustworthy as the run directory)")
    verify.add_argument("--anchors", nargs="+", metavar="DIR",
                        help="the sites' anchors: files, folders holding ledger.anchor.json, or folders of such "
                             "folders (RUN_DIR/sites in the simulation; a node's state dir)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=_cmd_ledger_verify)
    return parser


#: Exit codes (documented in the module docstring and the README).
EXIT_OK, EXIT_FAILED_CHECK, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr (no source line, no file path of ours)."""
    print(f"secagg: warning: {_one_line(message)}", file=file or sys.stderr)


def _crash_directory(args) -> "Path | None":
    """The run directory of the command, if it has one that exists."""
    from pathlib import Path

    for name in ("run_dir", "resume", "out"):
        value = getattr(args, name, None) if args is not None else None
        if value and Path(value).is_dir() and getattr(args, "command", None) != "data":
            return Path(value)
    return None


def write_crash_report(args, argv, exc: BaseException) -> str:
    """Write the traceback of an unexpected error (mode 0600) into the run directory, else a new
    private temporary directory; returns its path. Locals are never written, only the traceback."""
    import os
    import platform
    import tempfile
    import time
    import traceback
    from pathlib import Path

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    directory = _crash_directory(args)
    text = "".join([
        f"secagg crash report {stamp}\n",
        f"command: secagg {' '.join(argv if argv is not None else sys.argv[1:])}\n",
        f"python {platform.python_version()} on {platform.platform()}\n\n",
        *traceback.format_exception(type(exc), exc, exc.__traceback__),
    ])
    for target in ([directory] if directory is not None else []) + [None]:
        try:
            folder = target if target is not None else Path(tempfile.mkdtemp(prefix="secagg-crash-"))
            path = folder / f"crash-{stamp}-{os.getpid()}.txt"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            return str(path)
        except OSError:
            continue
    return "(could not be written)"


def main(argv: list[str] | None = None) -> int:
    """Run one ``secagg`` command; returns its exit code and never lets a traceback reach the user.

    0 success; 1 a failed check (a ledger that does not verify, an audit above the
    accounted epsilon, a demo that is not exact); 2 bad input (one line naming what
    was wrong: a file, a configuration value, a run directory, a ledger, a registry,
    or an operating-system error on a path the user gave); 3 an unexpected internal
    error (one line naming the crash report: a 0600 file in the run directory, or
    in a new private temporary directory when the command has none); 130 Ctrl-C.
    """
    import warnings

    from dp.errors import LedgerIntegrityError

    from .errors import bad_input_errors

    args = None
    command = "secagg"
    bad_input: tuple = ()
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        bad_input = bad_input_errors()
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(argv if argv is not None else sys.argv[1:])
        command = f"secagg {args.command}"
        return args.func(args)
    except LedgerIntegrityError as exc:  # a damaged ledger: a failed check, not bad input
        print(f"{command}: ledger BROKEN: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    except UsageError as exc:
        print(_one_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except bad_input as exc:
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a path the user gave: missing, a directory, unreadable, full disk
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{command}: error: {_one_line(exc.strerror or exc)}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback on the terminal
        report = write_crash_report(args, argv, exc)
        print(f"{command}: internal error ({type(exc).__name__}: {_one_line(exc)[:200]}); this is a bug - "
              f"crash report: {report}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
