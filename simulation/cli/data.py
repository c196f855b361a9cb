"""``secagg data synth`` (a synthetic cohort) and ``secagg data prepare`` (raw scans made ready for the models)."""

from __future__ import annotations

import argparse

from .common import Formatter, Parser, bids_flags, positive
from .output import emit

__all__ = ["register", "cmd_data_synth", "cmd_data_prepare"]


def cmd_data_synth(args: argparse.Namespace) -> int:
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
    reused = getattr(manifest, "reused", False)
    emit(args, lambda: {"out": str(args.out), "layout": args.layout, "reused": reused,
                        "seconds": round(time.perf_counter() - start, 2), "manifest": data},
         _synth_lines(args, reused, counts, time.perf_counter() - start), default=str)
    return 0


def _synth_lines(args: argparse.Namespace, reused: bool, counts: dict, seconds: float):
    yield (f"{'reused' if reused else 'wrote'} a synthetic {args.scale} cohort of {args.sites} sites (seed "
           f"{args.seed}) in {args.out} ({seconds:.1f} s)")
    for site in sorted({k[0] for k in counts}):
        yield (f"  {site}: {counts.get((site, 'healthy'), 0)} healthy, {counts.get((site, 'pathology'), 0)} "
               "pathological volumes")
    if args.layout == "bids":
        yield (f"  layout: BIDS {args.out}/sub-*/anat/*_FLAIR.nii.gz, participants.tsv (group, site, lesion_type), "
               f"masks in {args.out}/derivatives/lesions; manifest {args.out}/sourcedata/cohort.json")
    else:
        yield (f"  layout: SITE/healthy/*.nii.gz, SITE/pathology/*.nii.gz with *_mask.nii.gz; manifest "
               f"{args.out}/cohort.json")


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from models.prepare import PrepareOptions, plan_prepare, prepare_dataset

    from ..progress import Progress

    options = PrepareOptions(reorient=not args.no_reorient, n4=not args.no_n4, register=not args.no_register,
                             skull_strip=not args.no_skull_strip, normalise=not args.no_normalise)
    bids = bids_flags(args)
    progress = Progress(enabled=not args.json)
    progress.log(f"preparing {args.input} -> {args.out} ({args.workers} worker(s))")
    todo, _ = plan_prepare(args.input, args.out, options, bids=bids)  # every input checked before any work
    with progress.task("prepare", total=len(todo)) as advance:
        result = prepare_dataset(args.input, args.out, options=options, workers=args.workers,
                                 progress=lambda name: advance(), bids=bids)
    emit(args, lambda: result | {"out": str(args.out)}, _prepare_lines(args, result))
    return 0


def _prepare_lines(args: argparse.Namespace, result: dict):
    yield (f"prepared {len(result['prepared'])} scan(s) and {result['masks']} mask(s), skipped "
           f"{len(result['skipped'])} already done, into {args.out} (one JSON sidecar per scan)")
    for dataset in result["bids_datasets"]:
        yield f"  BIDS dataset: {dataset} (secagg simulate --data {dataset} trains on it)"


def register(sub) -> None:
    """Add ``data`` and its sub-commands ``synth`` and ``prepare``."""
    data = sub.add_parser("data", help="data utilities", formatter_class=Formatter,
                          epilog="Example:\n  secagg data synth --out data/tiny --scale tiny")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    synth = data_sub.add_parser(
        "synth", formatter_class=Formatter,
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
    synth.add_argument("--sites", type=positive(int, "sites"), default=4, help="number of sites")
    synth.add_argument("--scale", choices=("tiny", "small", "paper"), default="tiny", help="cohort size")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--workers", type=positive(int, "workers"), help="rendering processes")
    synth.add_argument("--overwrite", action="store_true", help="replace a different cohort already in --out")
    synth.add_argument("--layout", choices=("site", "bids"), default="site",
                       help="site: SITE/healthy, SITE/pathology; bids: one BIDS dataset (participants.tsv with "
                            "group and site columns, masks in derivatives/lesions)")
    synth.add_argument("--json", action="store_true", help="print one JSON object")
    synth.set_defaults(func=cmd_data_synth)

    prepare = data_sub.add_parser(
        "prepare", formatter_class=Formatter,
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
    prepare.add_argument("--workers", type=positive(int, "workers"), default=1, help="processes (one scan each)")
    for step in ("reorient", "n4", "register", "skull-strip", "normalise"):
        prepare.add_argument(f"--no-{step}", action="store_true", help=f"skip the {step} step")
    prepare.add_argument("--bids-suffix", help="BIDS input: modality suffix of the images prepared (default FLAIR)")
    prepare.add_argument("--bids-group-column",
                         help="BIDS input: participants.tsv column with healthy|control or patient (default group)")
    prepare.add_argument("--bids-site-column", help="BIDS input: participants.tsv site column (default site)")
    prepare.add_argument("--bids-pipeline", help="BIDS input: derivatives/<pipeline> holding the masks (default lesions)")
    prepare.add_argument("--json", action="store_true", help="print one JSON object")
    prepare.set_defaults(func=cmd_data_prepare)
