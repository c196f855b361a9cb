"""A protocol demonstration: hospitals aggregate synthetic updates with dropouts.

``secagg demo`` (and ``make demo``, until the federated simulation of issue 5
lands) runs one secure-aggregation session in-process, with sites dropping
out at three different stages, then replays the same session against a
malicious coordinator that asks for both kinds of shares of one site. It
reports what the coordinator *saw* (sizes and the statistical look of the
masked vectors) and what it *learned* (the sum over the survivors, and
nothing about any one site). The updates are synthetic random vectors, not
patient data; no individual update or statistic of one is printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

import secagg
from secagg import wire
from secagg.messages import MaskedInput

__all__ = ["DemoReport", "run_demo"]


@dataclass(frozen=True)
class DemoReport:
    """Everything the demo prints, in machine-readable form."""

    sites: int
    threshold: int
    vector_length: int
    bit_width: int
    active: bool
    dropouts: dict
    survivors: list
    bytes_up: dict
    bytes_down: dict
    seconds: dict
    masked_vector_mean_over_modulus: float
    masked_vector_chi_square_p: float
    max_abs_error: float
    error_bound: float
    exact: bool
    attack_refused: bool
    attack_error: str

    def to_dict(self) -> dict:
        return asdict(self)


def _uniformity(server_view: list[bytes], bins: int = 64) -> tuple[float, float]:
    """Mean/2^b and a chi-square p-value of the masked vectors' top bits (should look uniform)."""
    from math import erf, sqrt

    vectors = [m.vector for m in map(wire.decode, server_view) if isinstance(m, MaskedInput)]
    words = np.concatenate(vectors)
    bit_width = 8 * words.dtype.itemsize
    mean = float(words.mean() / 2.0**bit_width)
    counts = np.bincount((words >> np.uint64(bit_width - 6)).astype(np.int64), minlength=bins)
    expected = words.size / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # Wilson-Hilferty normal approximation of the chi-square tail (no scipy needed here).
    dof = bins - 1
    z = ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / sqrt(2 / (9 * dof))
    return mean, float(0.5 * (1 - erf(z / sqrt(2))))


def run_demo(*, sites: int = 8, vector_length: int = 100_000, active: bool = True) -> DemoReport:
    """Run the demonstration and return its report."""
    if sites < 5:
        raise secagg.InvalidInputError(f"the demo needs at least 5 sites to show three dropouts; got {sites}")
    ids = list(range(1, sites + 1))
    # Synthetic stand-ins for model updates (public noise, not secrets and not patient data).
    rng = np.random.default_rng()
    updates = {i: rng.normal(0.0, 0.05, vector_length) for i in ids}
    threshold = sites // 2 + 1
    dropouts = {"share": [ids[0]], "mask": [ids[1]], "unmask": [ids[2]]}
    result = secagg.run_local(updates, threshold=threshold, dropouts=dropouts, active=active, clip=1.0)
    exact = sum(np.clip(updates[i], -1, 1) for i in sorted(result.survivors))
    error = float(np.max(np.abs(result.aggregate - exact)))
    bound = len(result.survivors) * result.resolution
    mean, p_value = _uniformity(result.server_view)

    victim = ids[3]

    def overlap_attack(recipient, message):
        if isinstance(message, secagg.UnmaskRequest):
            return secagg.UnmaskRequest(
                message.session, message.recipient, message.survivors, message.dropped | {victim},
                message.signatures,
            )
        return message

    try:
        secagg.run_local(updates, threshold=threshold, active=active, tamper=overlap_attack)
        refused, attack_error = False, "the clients answered (this would be a bug)"
    except secagg.UnsafeRequestError as exc:
        refused, attack_error = True, f"{type(exc).__name__}: {exc}"

    return DemoReport(
        sites=sites,
        threshold=threshold,
        vector_length=vector_length,
        bit_width=result.bit_width,
        active=active,
        dropouts={stage: list(v) for stage, v in dropouts.items()},
        survivors=sorted(result.survivors),
        bytes_up=dict(result.bytes_up),
        bytes_down=dict(result.bytes_down),
        seconds={k: round(v, 4) for k, v in result.seconds.items()},
        masked_vector_mean_over_modulus=round(mean, 5),
        masked_vector_chi_square_p=round(p_value, 4),
        max_abs_error=error,
        error_bound=bound,
        exact=error <= bound,
        attack_refused=refused,
        attack_error=attack_error,
    )


def format_report(report: DemoReport) -> str:
    """The human-readable story of the demo."""
    mb = 1024 * 1024
    dropped = ", ".join(f"site {v[0]} at '{k}'" for k, v in report.dropouts.items())
    lines = [
        "Secure aggregation demo (Bonawitz et al. 2017, "
        + ("active-adversary mode with consistency check" if report.active else "semi-honest mode") + ")",
        f"  {report.sites} hospitals, threshold t = {report.threshold}, complete graph, "
        f"{report.vector_length:,} parameters each, ring Z_2^{report.bit_width}",
        f"  dropouts: {dropped}",
        "",
        "What the coordinator saw (per stage: bytes up / bytes down / seconds):",
    ]
    for stage in report.bytes_up:
        if report.bytes_up[stage] or report.bytes_down[stage]:
            lines.append(
                f"  {stage:<12} {report.bytes_up[stage] / mb:8.3f} MiB up  {report.bytes_down[stage] / mb:8.3f} MiB down"
                f"  {report.seconds[stage]:6.3f} s"
            )
    lines += [
        f"  masked vectors look uniform: mean/2^{report.bit_width} = {report.masked_vector_mean_over_modulus} "
        f"(0.5 expected), chi-square p = {report.masked_vector_chi_square_p}",
        "",
        "What the coordinator learned:",
        f"  the sum over survivors {report.survivors} (the site that dropped after uploading its masked",
        "  input is still counted; the two that dropped earlier are not), and nothing about any one site.",
        f"  max |secure sum - plain sum| = {report.max_abs_error:.3g} <= bound {report.error_bound:.3g}: "
        + ("exact up to quantisation" if report.exact else "MISMATCH"),
        "",
        "A malicious coordinator asking every site to reveal both shares of one site:",
        "  " + ("refused by the honest sites - " if report.attack_refused else "NOT refused - ") + report.attack_error[:160],
    ]
    return "\n".join(lines)
