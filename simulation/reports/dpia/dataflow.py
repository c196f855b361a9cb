"""The aggregation mode in words and the data-flow diagram (inline SVG): what leaves a hospital, per mode."""

from __future__ import annotations

__all__ = ["mode_text", "dataflow_svg"]


def mode_text(mode: str, active: bool) -> str:
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


def dataflow_svg(mode: str) -> str:
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
