"""Turn a pytest-benchmark JSON file into a Markdown report, a JSON summary and a scaling plot.

Usage: python -m benchmarks.report results/benchmarks.json results/
Writes report.md, report.json and scaling.png into the output directory.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def fit_exponent(points):
    """Least-squares slope of log(y) against log(x): y ~ x^slope."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return None if sxx == 0 else sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def spread_text(s) -> str:
    """IQR and range of an interleaved (ABAB) measurement's paired ratios; blank for a ratio of two medians."""
    if not s:
        return ""
    return f"IQR {s['q1']:.3f}-{s['q3']:.3f}, range {s['min']:.3f}-{s['max']:.3f}, {s['pairs']} pairs"


def build(bench_json: Path, out: Path) -> dict:
    data = json.loads(bench_json.read_text())
    rows, scaling = [], []
    for b in data["benchmarks"]:
        rows.append({"name": b["name"], "median_s": b["stats"]["median"], "rounds": b["stats"]["rounds"],
                     "extra": b.get("extra_info", {})})
        if b.get("extra_info", {}).get("graph"):
            scaling.append(b["extra_info"] | {"total_s": b["stats"]["median"]})
    ratios_path = out / "ratios.json"
    ratios = json.loads(ratios_path.read_text()) if ratios_path.exists() else {}
    exponents = {}
    for graph in sorted({s["graph"] for s in scaling}):
        for m in sorted({s["m"] for s in scaling if s["graph"] == graph}):
            pts = [s for s in scaling if s["graph"] == graph and s["m"] == m and s["dropout"] == 0.1]
            exponents[f"{graph} m={m}: server time vs n"] = fit_exponent([(s["n"], s["server_s"]) for s in pts])
            exponents[f"{graph} m={m}: client time vs n"] = fit_exponent(
                [(s["n"], s["client_s_per_client"]) for s in pts])
        for n in sorted({s["n"] for s in scaling if s["graph"] == graph}):
            pts = [s for s in scaling if s["graph"] == graph and s["n"] == n and s["dropout"] == 0.1]
            exponents[f"{graph} n={n}: server time vs m"] = fit_exponent([(s["m"], s["server_s"]) for s in pts])
    report = {"machine": data.get("machine_info", {}).get("cpu", {}).get("brand_raw"),
              "datetime": data.get("datetime"), "benchmarks": rows, "ratios": ratios.get("ratios", {}),
              "spread": ratios.get("spread", {}),
              "scaling": scaling, "exponents": exponents}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# secagg benchmarks ({report['datetime']})", "", f"CPU: {report['machine']}", "",
             "## Ratios (measured in the same run)", "", "| ratio | value | spread of paired ratios |",
             "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {spread_text(report['spread'].get(k))} |" for k, v in report["ratios"].items()]
    lines += ["", "## Medians", "", "| benchmark | median |", "|---|---|"]
    lines += [f"| {r['name']} | {r['median_s'] * 1000:.2f} ms |" for r in rows]
    if scaling:
        lines += ["", "## Scaling", "", "| graph | n | m | dropout | k | t | client s/client | server s | "
                  "up B/client | down B/client |", "|---|---|---|---|---|---|---|---|---|---|"]
        for s in sorted(scaling, key=lambda s: (s["graph"], s["m"], s["n"], s["dropout"])):
            lines.append(f"| {s['graph']} | {s['n']} | {s['m']:,} | {s['dropout']:.0%} | {s['degree']} | "
                         f"{s['threshold']} | {s['client_s_per_client']:.3f} | {s['server_s']:.3f} | "
                         f"{s['bytes_up_per_client']:,.0f} | {s['bytes_down_per_client']:,.0f} |")
        lines += ["", "Fitted exponents (time ~ x^e, 10% dropouts):", ""]
        lines += [f"* {k}: {'n/a' if v is None else f'{v:.2f}'}" for k, v in exponents.items()]
        _plot(scaling, out / "scaling.png")
        lines += ["", "![scaling](scaling.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report


def _plot(scaling, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for graph in sorted({s["graph"] for s in scaling}):
        for m in sorted({s["m"] for s in scaling}):
            pts = sorted((s["n"], s["server_s"], s["client_s_per_client"]) for s in scaling
                         if s["graph"] == graph and s["m"] == m and s["dropout"] == 0.1)
            if pts:
                axes[0].loglog([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{graph}, m={m:,}")
                axes[1].loglog([p[0] for p in pts], [p[2] for p in pts], marker="o", label=f"{graph}, m={m:,}")
    axes[0].set(title="server time per round (10% dropped)", xlabel="clients n", ylabel="seconds")
    axes[1].set(title="client time per round", xlabel="clients n", ylabel="seconds")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    build(Path(sys.argv[1] if len(sys.argv) > 1 else out_dir / "benchmarks.json"), out_dir)
    print(f"report written to {out_dir / 'report.md'}")
