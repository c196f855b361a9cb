"""Section 6 of the DPIA, Art. 35(7)(d): the measures envisaged, with the exact parameters the run used.

Differential privacy (every value read from the run's privacy ledger, which must verify), the
empirical audit when one was run, distributed DP, the secure-aggregation protocol, the Flower
deployment (:mod:`simulation.reports.dpia.deployment`) and the organisation's own security measures.
"""

from __future__ import annotations

from .dataflow import mode_text
from .deployment import deployment_items
from .document import bullets, eps, num, paragraph, preformatted, section, table, warning
from .facts import RunFacts, guarantee
from .org import org_list

__all__ = ["measures", "epsilon_rows", "dp_rows", "protocol_rows", "audit_blocks"]


def measures(facts: RunFacts, org: dict) -> dict:
    """6. The measures envisaged (Art. 35(7)(d))."""
    ver, unit, mode = facts.verification, facts.unit, facts.mode
    blocks = [
        None if ver.ok else warning(f"The privacy ledger does NOT verify ({ver.reason}); the epsilons below cannot "
                                    "be relied on until `secagg ledger verify` passes."),
        paragraph("Differential privacy (DP-SGD: each privacy unit's gradient clipped, Gaussian noise from a CSPRNG)"
                  " - every value below is read from the run's privacy ledger:"),
        table(("Parameter", "Value"), dp_rows(facts)),
        paragraph(f"Epsilon per site ({guarantee(unit)}):"),
        table(("Site", f"Epsilon spent (bound, {unit}-level)", "Bound accountant", "Per accountant (library)",
               "Budget"), epsilon_rows(facts)),
        *audit_blocks(facts.run["audit"]),
        *distributed_dp_blocks(facts),
        paragraph("Secure aggregation / protocol:"),
        table(("Parameter", "Value"), protocol_rows(facts)),
        *mode_warnings(mode),
    ]
    if facts.flower:
        blocks += [paragraph("Deployment (Flower):"), bullets(deployment_items(facts.deployment))]
    blocks += [paragraph("Organisational and site security measures:"), bullets(org_list(org, "security_measures"))]
    return section("measures", "6. Measures envisaged (Art. 35(7)(d))", *blocks)


def epsilon_rows(facts: RunFacts) -> list[tuple]:
    """Per site: the epsilon bound spent, its accountant, every accountant's value (library), the budget."""
    led = facts.ledger
    eps_rows = []
    for s in facts.sites:
        sp = led["spent"].get(s)
        if sp is None:
            eps_rows.append((s, "no release", "", "", eps(led["budgets"][s])))
            continue
        per = ", ".join(f"{a} {eps(v)} ({led['libraries'].get(a, sp['libraries'].get(a, '?'))})"
                        for a, v in sp["epsilon"].items())
        eps_rows.append((s, eps(sp["bound"]), sp["bound_accountant"], per, eps(led["budgets"][s])))
    return eps_rows


def dp_rows(facts: RunFacts) -> list[tuple]:
    """The DP-SGD parameters, from the ledger's events and the run's privacy summary."""
    cfg, led, ver, privacy, unit, sites = (facts.config, facts.ledger, facts.verification, facts.privacy, facts.unit,
                                           facts.sites)
    total_steps_cfg = (cfg.get("rounds") or 0) * (cfg.get("local_steps") or 0)
    events = [e for s in sites for e in led["events"][s]]
    sigmas = sorted({e["noise_multiplier"] for e in events})
    rates = sorted({e["sample_rate"] for e in events})
    steps = {s: sum(e["steps"] for e in led["events"][s]) for s in sites}
    return [
        ("Guarantee", privacy.get("guarantee", f"{guarantee(unit)} DP of each site's released updates")),
        ("Privacy unit and adjacency", guarantee(unit) + (
            " - epsilon bounds what any recipient learns about one patient (all of their slices)"
            if unit == "patient" else " - NOT one patient: a patient with k slices is protected only by group "
                                      "privacy over k records")),
        ("delta", num(led["delta"])),
        ("Noise multiplier (sigma)", ", ".join(num(x, 6) for x in sigmas) or "n/a"),
        ("Sampling rate (Poisson, q)", ", ".join(num(x, 6) for x in rates) or "n/a"),
        (f"Clipping norm (L2, per {unit}" + ("'s summed gradient)" if unit == "patient" else ")"),
         num(privacy.get("clipping_norm", cfg.get("max_grad_norm")))),
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
        ("Accountants (library versions)",
         ", ".join(f"{a} ({led['libraries'].get(a, '?')})" for a in led["accountants"])),
        ("Ledger", f"{led['entries']} entries, hash chain "
                   + (f"verified ({led.get('verification_scope', 'scope not recorded')})" if ver.ok
                      else f"BROKEN: {ver.reason}")),
        ("CSPRNG noise (secure_rng)", str(cfg.get("secure_rng"))),
    ]


def _failure(value, complete: bool) -> str:
    """A SecAgg+ failure bound in words (none outside SecAgg+, exactly 0 on the complete graph)."""
    if value is None:
        return "n/a (no SecAgg+ parameter finder in this mode)"
    if value == 0:
        return "0 (SecAgg+ parameter finder" + ("; complete graph)" if complete else ")")
    return f"<= {value:.3g} (SecAgg+ parameter finder)"


def protocol_rows(facts: RunFacts) -> list[tuple]:
    """The secure-aggregation protocol's parameters (the SecAgg+ parameter finder's bounds when it ran)."""
    proto, summary, mode = facts.protocol, facts.summary, facts.mode
    return [
        ("Mode", f"{mode}: {mode_text(mode, proto['active'])}"),
        ("Threshold t", str(proto["threshold"])),
        ("Graph", str(proto["graph"])),
        ("Graph degree k", ("complete graph (every pair of sites)" if proto["degree"] is None else
                            f"{proto['degree']} (complete graph: every pair of sites)") if proto["complete"]
         else str(proto["degree"])),
        ("Security failure bound", _failure(proto["security_failure"], proto["complete"])),
        ("Correctness failure bound", _failure(proto["correctness_failure"], proto["complete"])),
        ("Tolerated corrupt fraction", num(proto["corrupt_fraction"])),
        ("Update clipping before encoding (L2)", num(proto["update_clip"])),
        ("Dropouts survived / aborted rounds", f"{summary.get('dropouts_survived', 'n/a')} / "
                                               f"{summary.get('rounds_aborted', 'n/a')}"),
    ]


def audit_blocks(audit: dict | None) -> list[dict]:
    """The empirical audit (a lower bound on epsilon) beside the accounted upper bound, with its caveats."""
    if not audit:
        return [paragraph("No empirical privacy audit (audit.json) in the run directory: only the accounted upper "
                          "bound is shown.")]
    own = audit.get("mode") == "own-training"
    blocks = [paragraph(
        "Empirical privacy audit (one-run method, Steinke, Nasr and Jagielski 2023): a LOWER bound "
        "on epsilon measured on a training run with canaries, beside the accounted UPPER bound. "
        + ("This audit trained the run's own model architecture on one site's real data with the "
           "run's DP-SGD settings and gradient canaries; it does not attack the secure-aggregation "
           "sum." if own else
           "The audit exercises the run's DP-SGD configuration on canaries and a synthetic model; "
           "it does not attack the run's own model."))]
    if audit.get("epsilon_lower_bound") is not None and audit.get("epsilon_accounted") is not None and \
            audit["epsilon_lower_bound"] > audit["epsilon_accounted"]:
        blocks.append(warning("The audited lower bound EXCEEDS the accounted epsilon: the implementation or the "
                              "accounting is wrong; the stated epsilon cannot be relied on."))
    ceiling = audit.get("ceiling")
    if ceiling is not None and audit.get("epsilon_accounted") is not None and ceiling < audit["epsilon_accounted"]:
        blocks.append(warning(f"This audit cannot detect a violation above epsilon {eps(ceiling)} (its ceiling, "
                              f"the largest lower bound its setting can ever show), below the accounted "
                              f"{eps(audit['epsilon_accounted'])}: its 'consistent' says nothing about epsilons "
                              "in between."))
    blocks.append(table(("Quantity", "Value"), [
        ("Empirical lower bound on epsilon", eps(audit.get("epsilon_lower_bound"))),
        ("Ceiling (largest lower bound this setting can show)", eps(ceiling) if ceiling is not None else
         "not recorded (audit.json from an earlier version)"),
        ("Confidence", num(audit.get("confidence"))),
        ("Accounted epsilon (upper bound)", eps(audit.get("epsilon_accounted"))),
        ("Mode", {"own-training": "own training (the run's model, DP-SGD settings and a site's real data"
                                  + (f", site {audit.get('site')}" if audit.get("site") else "") + ")",
                  "synthetic": "synthetic (the run's DP-SGD settings on a synthetic model)"}.get(
                      audit.get("mode"), "synthetic (not recorded)")),
        ("Canaries / guesses / correct", f"{audit.get('canaries')} / {audit.get('guesses')} / "
                                         f"{audit.get('correct')}"),
        ("Configuration audited", f"sigma {num(audit.get('noise_multiplier'), 6)}, q "
                                  f"{num(audit.get('sample_rate'), 6)}, {audit.get('steps')} steps, C "
                                  f"{num(audit.get('clipping_norm'))}"),
        ("Method", str(audit.get("method", "one-run audit"))),
        ("Consistent (lower <= upper)", str(audit.get("epsilon_lower_bound", 0) <=
                                            (audit.get("epsilon_accounted") or float("inf")) * (1 + 1e-9))),
    ]))
    return blocks


def distributed_dp_blocks(facts: RunFacts) -> list[dict]:
    """The site-level epsilon of the released sums when sites added discrete noise before masking."""
    privacy, led, sites = facts.privacy, facts.ledger, facts.sites
    site_level = privacy.get("site_level")
    if not (site_level or led["site_level"]):
        return []
    sl_rows = [(s, eps((led["site_level"] or {}).get(s))) for s in sites]
    return [
        paragraph("Distributed DP: sites add discrete noise before masking; site-level epsilon of the "
                  "released sums (zero-out adjacency)"
                  + (f", mechanism {site_level.get('mechanism')}, budget {num(site_level.get('budget'))}, "
                     f"delta {num(site_level.get('delta'))}, L2 clip {num(site_level.get('l2_clip'))}, "
                     f"accountant: {site_level.get('accountant')}. Guarantee: {site_level.get('guarantee')}"
                     if site_level else "") + ":"),
        table(("Site", "Site-level epsilon"), sl_rows),
    ]


def mode_warnings(mode: str) -> list[dict]:
    """PLAIN mode protects nothing; HE mode has a weaker trust model: both said in a warning."""
    blocks = []
    if mode == "plain":
        blocks.append(warning("PLAIN mode: NO protection of the updates. The coordinator saw every site's individual "
                              "update; only DP-SGD protects the data subjects. Not acceptable for deployment."))
    if mode == "he":
        from secagg.he import THREAT_MODEL

        blocks.append(warning("HE mode has a WEAKER trust model than masking. The library's threat model:"))
        blocks.append(preformatted(THREAT_MODEL))
    return blocks
