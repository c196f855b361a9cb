"""``secagg export`` (a run's model as one self-describing file) and ``secagg detect`` (anomaly maps of new
scans)."""

from __future__ import annotations

import argparse

from .common import Formatter
from .output import emit

__all__ = ["register", "cmd_export", "cmd_detect"]


def cmd_export(args: argparse.Namespace) -> int:
    from ..reports.export import export_run

    path, model = export_run(args.run_dir, args.out)
    info = {"out": str(path), "bytes": path.stat().st_size, "architecture": model.architecture,
            "image_size": model.image_size, "modality": model.modality, "threshold": model.threshold,
            "privacy": model.privacy}
    emit(args, info, _export_lines(path, info, model), default=str)
    return 0


def _export_lines(path, info: dict, model):
    p = model.privacy
    yield (f"wrote {path} ({info['bytes']:,} bytes): {model.architecture} at {model.image_size}x{model.image_size}, "
           f"{model.modality}, threshold {model.threshold['value']:.4g} (healthy validation, target FPR "
           f"{model.threshold['target_fpr']})")
    yield (f"  trained under epsilon <= {p['epsilon_max']:.3f} per site at delta {p['delta']} ({p['accountant']}); "
           f"unit: {p['unit']}")


def _load_detect_model(source: str):
    from pathlib import Path

    if Path(source).is_dir():
        from ..reports.export import model_from_run

        return model_from_run(source)
    from models.modelfile import load_model_file

    return load_model_file(source)


def cmd_detect(args: argparse.Namespace) -> int:
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
    if args.json:  # detections.json itself, as written (not emit: the file's bytes, not a re-encoding)
        print(report.read_text())
        return 0
    print(f"threshold {model.threshold['value']:.4g} from the run's healthy validation; wrote {report}")
    for r in results:
        print(f"  {r.scan.name}: {r.record['lesion_volume_ml']:.2f} mL flagged, max score "
              f"{r.record['score']['max']:.3g} -> {r.anomaly_map.name}, {r.segmentation.name}, {r.montage.name}")
    return 0


def register(sub) -> None:
    """Add ``export`` and ``detect`` to the top-level sub-parsers."""
    export = sub.add_parser(
        "export", help="write a run's federated model as one versioned, self-describing file",
        formatter_class=Formatter,
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
    export.set_defaults(func=cmd_export)

    detect = sub.add_parser(
        "detect", help="apply a model to new scans: anomaly map and segmentation as NIfTI, montage, JSON",
        formatter_class=Formatter,
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
    detect.set_defaults(func=cmd_detect)
