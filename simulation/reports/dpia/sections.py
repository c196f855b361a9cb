"""One function per section of the DPIA (GDPR Art. 35(7) and the CNIL / WP248 method), each from the run's facts.

Order of the document: 1 overview and roles, 2 screening against the nine WP248 rev.01 criteria,
3 systematic description (Art. 35(7)(a)), 4 necessity and proportionality (b), 5 risks (c),
6 measures envisaged (d; :mod:`simulation.reports.dpia.measures`), 7 residual risk, 8 the DPO's advice
(Art. 35(2)), 9 sign-off. Each function returns one section (see :mod:`simulation.reports.dpia.document`);
organisational facts missing from ``org`` appear as placeholders.
"""

from __future__ import annotations

from .dataflow import dataflow_svg, mode_text
from .document import LEVELS, bullets, num, paragraph, section, table, todo
from .facts import RunFacts, guarantee
from .org import org_text
from .risks import high_residual_risks

__all__ = ["overview", "screening", "description", "necessity", "risks", "residual", "dpo_advice", "signoff",
           "wp248_criteria"]


def overview(facts: RunFacts, org: dict, today: str) -> dict:
    """1. Who is who, and which run this document is about."""
    led, mode = facts.ledger, facts.mode
    return section(
        "overview", "1. Overview and roles",
        table(("Item", "Value"), [
            ("Project", org_text(org, "project")),
            ("Controller", org_text(org, "controller") + " - " + org_text(org, "controller_contact")),
            ("Joint controllers (Art. 26)", org_text(org, "joint_controllers")),
            ("Processors (Art. 28)", org_text(org, "processors")),
            ("Data protection officer", org_text(org, "dpo") + " - " + org_text(org, "dpo_contact")),
            ("Assessor", org_text(org, "assessor")),
            ("Run directory", str(facts.run_dir)),
            ("Run id (ledger)", led["run_id"]),
            ("Configuration fingerprint", facts.run["fingerprint"] or "n/a"),
            ("Generated", today),
        ]),
        paragraph("Roles in the processing: each participating hospital (site) holds its patients' scans and trains "
                  "locally; the coordinator receives only protected updates and publishes the global model; "
                  "the key holder (HE mode only) creates the session key." if mode == "he" else
                  "Roles in the processing: each participating hospital (site) holds its patients' scans and trains "
                  "locally; the coordinator receives updates (protected unless the mode is PLAIN) and publishes the "
                  "global model."),
    )


def wp248_criteria(run: dict) -> list[tuple[str, str, str]]:
    """The nine criteria as (criterion, applies?, why), from the run."""
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


def screening(facts: RunFacts) -> dict:
    """2. The nine WP248 rev.01 criteria: two or more make a DPIA required."""
    crit = wp248_criteria(facts.run)
    applying = [c for c in crit if c[1] == "applies"]
    return section(
        "screening", "2. Screening: the nine WP248 rev.01 criteria",
        table(("Criterion", "Applies?", "Why (from the run)"), crit),
        paragraph(f"{len(applying)} criteria apply (and "
                  f"{sum(1 for c in crit if c[1].startswith('possibly'))} possibly). WP248 rev.01: processing meeting "
                  f"two or more criteria is likely to result in a high risk - a DPIA is "
                  f"{'required' if len(applying) >= 2 else 'recommended'}."),
    )


def description(facts: RunFacts, org: dict) -> dict:
    """3. Art. 35(7)(a): the systematic description of the processing and its purposes."""
    cfg, summary, led, mode, unit = facts.config, facts.summary, facts.ledger, facts.mode, facts.unit
    flower = facts.flower

    def size(site: str) -> str:
        declared = (summary.get("sites") or {}).get(site, {}).get("declared_public_size")
        if declared:
            return f"{declared['value']} {declared['unit']}s (declared public size)"
        return "held at the site (not released)"

    def weight(site: str) -> str:
        site_facts = (summary.get("sites") or {}).get(site, {})
        return f"{num(site_facts['public_weight'])} ({site_facts.get('weight_source', 'declared')})" \
            if "public_weight" in site_facts else "n/a"

    site_rows = [(s, size(s), weight(s), num(led["budgets"][s]) + f" ({guarantee(unit)})") for s in facts.sites]
    return section(
        "description", "3. Systematic description of the processing and its purposes (Art. 35(7)(a))",
        table(("Item", "Value"), [
            ("Purposes", org_text(org, "purposes")),
            ("Lawful basis (Art. 6(1))", org_text(org, "lawful_basis")),
            ("Condition for health data (Art. 9(2))", org_text(org, "art9_condition")),
            ("Member-State law / Art. 89 safeguards", org_text(org, "national_law")),
            ("Data subjects", org_text(org, "data_subjects")),
            ("Categories of data", org_text(org, "data_categories")),
            ("Sources", org_text(org, "data_sources")),
            ("Recipients", org_text(org, "recipients")),
            ("Retention", org_text(org, "retention")),
            ("International transfers", org_text(org, "international_transfers")),
            ("Model trained", f"{cfg.get('model')} autoencoder on {cfg.get('image_size')}x{cfg.get('image_size')} "
                              f"brain-MRI slices (anomaly detection)"),
            ("Data used in this run", summary.get("data") if flower else
             summary.get("scale", "n/a") + (" (synthetic cohort)" if cfg.get("data") is None else "")),
            ("Engine", "Flower deployment: a coordinator ServerApp and one SuperNode per site (whether each "
                       "runs on its own machine is not recorded by the run)" if flower
             else "one-machine simulation of all sites (research)"),
            ("Rounds", f"{summary.get('rounds_completed', 'n/a')} completed of {cfg.get('rounds')} planned"),
            ("Aggregation protocol", mode_text(mode, facts.protocol["active"])),
        ]),
        table(("Site", "Training set size", "Public FedAvg weight", "Epsilon budget"), site_rows),
        {"type": "svg", "svg": dataflow_svg(mode),
         "caption": "Data flow: local scans -> clipped, noised update -> protected update -> summed aggregate "
                    "-> global model"},
    )


def necessity(facts: RunFacts, org: dict) -> dict:
    """4. Art. 35(7)(b): necessity and proportionality."""
    cfg, privacy = facts.config, facts.privacy
    return section(
        "necessity", "4. Necessity and proportionality (Art. 35(7)(b))",
        bullets([
            "Data minimisation: scans never leave the hospitals; only model updates do, each clipped to L2 norm "
            f"{num(privacy.get('clipping_norm', cfg.get('max_grad_norm')))} and noised (DP-SGD) before release.",
            f"Storage limitation: {org_text(org, 'retention')}",
            f"Lawfulness: {org_text(org, 'lawful_basis')}; {org_text(org, 'art9_condition')}",
            f"Information of data subjects: {org_text(org, 'information_of_subjects')}",
            f"Data subject rights: {org_text(org, 'data_subject_rights')}",
            f"Processors and transfers: {org_text(org, 'processors')}; {org_text(org, 'international_transfers')}",
            f"Views of data subjects (Art. 35(9)): {org_text(org, 'views_of_data_subjects')}",
        ]),
    )


RISK_HEADER = ("Risk", "Severity", "Likelihood", "Rationale (from the run)", "Measures")


def risks(families: list, model_risks: list) -> dict:
    """5. Art. 35(7)(c): the assessed risks (rows from :func:`simulation.reports.dpia.risks.assess`)."""
    return section(
        "risks", "5. Risks to the rights and freedoms of data subjects (Art. 35(7)(c))",
        paragraph("Scale (CNIL PIA method): " + ", ".join(LEVELS) + ". Levels below are assessed after the measures "
                  "of section 6; they are a rule-based starting point from the run's parameters which the controller "
                  "and DPO must review."),
        paragraph("CNIL risk families:"),
        table(RISK_HEADER, families),
        paragraph("Model-specific risks:"),
        table(RISK_HEADER, model_risks),
    )


def residual(families: list, model_risks: list, org: dict) -> dict:
    """7. Residual risk, and whether Art. 36 prior consultation follows from it."""
    high = high_residual_risks(families, model_risks)
    return section(
        "residual", "7. Residual risk",
        paragraph("Residual risks with both severity and likelihood at least significant: "
                  + (", ".join(high) if high else "none") + ". "
                  + ("A high residual risk remains: consult the supervisory authority before processing (Art. 36) "
                     "unless further measures lower it." if high else
                     "No residual risk is both severe and likely on these rules.")),
        paragraph(f"Prior consultation (Art. 36): {org_text(org, 'prior_consultation')}"),
    )


def dpo_advice(org: dict) -> dict:
    """8. The DPO's advice (Art. 35(2))."""
    return section("dpo", "8. Advice of the data protection officer (Art. 35(2))",
                   paragraph(org_text(org, "dpo_advice")))


def signoff(org: dict, today: str) -> dict:
    """9. Sign-off."""
    return section(
        "signoff", "9. Sign-off",
        table(("Role", "Name", "Date"), [
            ("Assessor", org_text(org, "assessor"), today),
            ("Data protection officer", org_text(org, "dpo"), todo("DPO signature date")),
            ("Approver for the controller", org_text(org, "approver"), org_text(org, "approval_date")),
            ("Next review", "", org_text(org, "review_date")),
        ]),
    )
