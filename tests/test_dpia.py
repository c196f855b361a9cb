"""The DPIA drawn from a run directory (simulation.reports.dpia, `secagg dpia`).

One tiny simulation per test session (~30-60 s on 2 cores); variants (PLAIN, HE,
with an audit) are copies of that run whose config/summary/audit files are edited,
since the DPIA reads the mode from them and the ledger does not depend on them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the DPIA needs the report extra: pip install 'secagg[report]'")

from dp.ledger import PrivacyLedger, verify_ledger
from simulation.reports.dpia import (ORG_FIELDS, PLACEHOLDER, DPIAError, build_dpia, find_chromium, load_org, render_dpia,
                             write_dpia)

ROOT = Path(__file__).resolve().parents[1]
# Every test here reads one simulated run (the session fixture ``run_dir``): a copy of the session's shared
# tiny run (conftest.shared_tiny_run), simulated once per session across xdist workers.
EXAMPLE_ORG = ROOT / "simulation" / "reports" / "templates" / "org.example.toml"

REQUIRED_SECTIONS = (
    "Overview and roles",
    "nine WP248 rev.01 criteria",
    "Art. 35(7)(a)",
    "Art. 35(7)(b)",
    "Art. 35(7)(c)",
    "Art. 35(7)(d)",
    "Residual risk",
    "Advice of the data protection officer",
    "Sign-off",
)
REQUIRED_TEXT = (
    "Illegitimate access to data", "Unwanted modification of data", "Disappearance of data",
    "Membership inference", "Reconstruction", "Coordinator collusion", "Dropouts", "Poisoning",
    "negligible", "limited", "significant", "maximum",
    "Sensitive data", "Data processed on a large scale", "Matching or combining datasets",
    "vulnerable data subjects", "Innovative use", "Evaluation or scoring", "Automated decision-making",
    "Systematic monitoring", "Prevents data subjects",
)


@pytest.fixture(scope="session")
def run_dir(shared_tiny_run, tmp_path_factory):
    """The session's shared ``secagg simulate --tiny`` run (preset tiny, no baselines; tests/shared_runs.py),
    copied: the DPIA tests read it (and open its ledger), never the pristine one."""
    from tests.shared_runs import copy_run

    assert shared_tiny_run.returncode == 0, shared_tiny_run.stderr[-2000:]
    return copy_run(shared_tiny_run, tmp_path_factory.mktemp("dpia") / "run")


def _variant(run_dir: Path, tmp_path: Path, mode: str | None = None, audit: dict | None = None) -> Path:
    copy = tmp_path / "variant"
    shutil.copytree(run_dir, copy)
    if mode is not None:
        stored = json.loads((copy / "config.json").read_text())
        stored["config"]["mode"] = mode
        (copy / "config.json").write_text(json.dumps(stored))
        summary = json.loads((copy / "summary.json").read_text())
        summary["mode"] = mode
        (copy / "summary.json").write_text(json.dumps(summary))
    if audit is not None:
        (copy / "audit.json").write_text(json.dumps(audit))
    return copy


def _cli(*args, cwd=None, **extra_env):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra_env)
    return subprocess.run([sys.executable, "-m", "simulation.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.fixture(scope="session")
def documents(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpia-out")
    html_path, doc = write_dpia(run_dir, fmt="html", out=out / "dpia.html")
    md_path, _ = write_dpia(run_dir, fmt="md", out=out / "dpia.md")
    return doc, html_path.read_text(), md_path.read_text()


def test_every_required_section_in_html_and_md(documents):
    _, html, md = documents
    for text in REQUIRED_SECTIONS + REQUIRED_TEXT:
        assert text in html, text
        assert text in md, text
    assert "<svg" in html and "Local scans" in html and "Global model" in html
    assert "masked update" in html
    assert "data:image/png;base64," in html  # tiny runs write plots/*.png
    assert "<link" not in html and "<script src" not in html and 'src="http' not in html  # self-contained
    assert html.count("<section") == html.count("</section>")


def test_numbers_equal_the_ledger_and_summary(run_dir, documents):
    doc, html, md = documents
    summary = json.loads((run_dir / "summary.json").read_text())
    with PrivacyLedger.open(run_dir) as ledger:
        sites = sorted(ledger.budgets)
        spent = {s: ledger.spent(s) for s in sites}
        events = [e for s in sites for e in ledger.events(s)]
        delta = ledger.delta
    for text in (html, md):
        for site in sites:
            report = spent[site]
            row = re.search(rf"{re.escape(site)}(?:</td><td>| \| )([0-9.]+)", text.split("Epsilon spent")[1])
            assert row and float(row.group(1)) == pytest.approx(report.bound, abs=5e-5)
            for accountant, value in report.to_dict()["epsilon"].items():
                assert f"{accountant} {value:.4f}" in text
        for event in events:
            assert f"{event.noise_multiplier:.6f}".rstrip("0") in text
            assert f"{event.sample_rate:g}" in text
        assert f"{delta:g}" in text
        assert f"threshold t = {summary['threshold']}" in text.replace("Threshold t | ", "threshold t = ") \
            or f"Threshold t</td><td>{summary['threshold']}<" in text
        assert "opacus" in text and "dp-accounting" in text  # library versions from the ledger
        steps = {s: sum(e.steps for e in events if e.site == s) for s in sites}
        for site, n in steps.items():
            assert f"{site}: {n}" in text
    assert doc["facts"]["epsilon"] == {s: spent[s].bound for s in sites}
    assert doc["facts"]["ledger_ok"] is verify_ledger(run_dir).ok is True
    assert summary["privacy"]["clipping_norm"] == 1.0 and "clipped to L2 norm 1 " in md


def test_missing_org_facts_show_the_placeholder(documents):
    doc, html, md = documents
    assert set(doc["placeholders"]) == set(ORG_FIELDS)
    for key in ("controller", "dpo", "lawful_basis", "art9_condition", "retention", "purposes"):
        assert PLACEHOLDER.format(key) in md
        assert f'<mark class="todo">{PLACEHOLDER.format(key)}</mark>' in html


def test_org_facts_fill_the_placeholders(run_dir, tmp_path):
    org = load_org(EXAMPLE_ORG)
    assert set(org) == set(ORG_FIELDS)  # the shipped example documents every key
    doc = build_dpia(run_dir, org)
    md = render_dpia(doc, "md")
    assert "TO BE COMPLETED: controller]" not in md
    assert org["controller"] in md and org["art9_condition"] in md and doc["placeholders"] == []
    partial = tmp_path / "org.toml"
    partial.write_text('controller = "Hospital <A> & Co"\n')
    html = render_dpia(build_dpia(run_dir, load_org(partial)), "html")
    assert "Hospital &lt;A&gt; &amp; Co" in html  # escaped
    assert PLACEHOLDER.format("dpo") in html


@pytest.mark.parametrize("content, message, via_cli", [
    ('controler = "typo"\n', "unknown key", True),
    ("purposes = \"not a list\"\n", "must be a list of strings", True),
    ("controller = 3\n", "must be a string", False),
    ("controller = \n", "not valid TOML", False),
])
def test_bad_org_file_is_refused(run_dir, tmp_path, content, message, via_cli):
    bad = tmp_path / "org.toml"
    bad.write_text(content)
    with pytest.raises(DPIAError, match=message):
        load_org(bad)
    if not via_cli:
        return
    result = _cli("dpia", run_dir, "--org", bad, "-o", tmp_path / "x.html")
    assert result.returncode == 2
    assert result.stderr.startswith("secagg dpia: error:") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def test_run_dir_without_ledger_exits_2(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config": {"mode": "secagg"}, "fingerprint": "x"}))
    result = _cli("dpia", tmp_path)
    assert result.returncode == 2
    assert "no privacy ledger" in result.stderr and result.stderr.count("\n") == 1
    with pytest.raises(DPIAError, match="no privacy ledger"):
        build_dpia(tmp_path)


def test_cli_writes_html_and_md(run_dir, tmp_path):
    result = _cli("dpia", run_dir, "--format", "md", "-o", tmp_path / "d.md", "--org", EXAMPLE_ORG, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["placeholders"] == [] and Path(data["output"]).is_file()
    assert "## 5. Risks" in Path(data["output"]).read_text()
    result = _cli("dpia", run_dir, "-o", tmp_path / "d.html")
    assert result.returncode == 0 and "TO BE COMPLETED" in result.stdout
    assert (tmp_path / "d.html").read_text().startswith("<!DOCTYPE html>")
    help_text = _cli("dpia", "--help").stdout
    assert "Examples:" in help_text and "--org" in help_text


def test_plain_mode_is_flagged_as_no_protection(run_dir, tmp_path):
    md = render_dpia(build_dpia(_variant(run_dir, tmp_path, mode="plain")), "md")
    assert "PLAIN mode: NO protection" in md and "PLAIN update" in md


def test_he_mode_states_the_threat_model(run_dir, tmp_path):
    from secagg.he import THREAT_MODEL

    md = render_dpia(build_dpia(_variant(run_dir, tmp_path, mode="he")), "md")
    assert THREAT_MODEL.strip() in md
    assert "ANY ONE site colluding" in md


def test_audit_result_is_shown_beside_the_accounted_epsilon(run_dir, tmp_path):
    audit = {"epsilon_lower_bound": 0.4321, "confidence": 0.95, "epsilon_accounted": 9.8765, "canaries": 1000,
             "guesses": 100, "correct": 70}
    md = render_dpia(build_dpia(_variant(run_dir, tmp_path, audit=audit)), "md")
    assert "Empirical lower bound on epsilon | 0.4321" in md
    assert "Accounted epsilon (upper bound) | 9.8765" in md


def test_audit_ceiling_and_mode_are_shown(run_dir, tmp_path):
    audit = {"epsilon_lower_bound": 0.4321, "ceiling": 7.5514, "confidence": 0.95, "epsilon_accounted": 9.8765,
             "canaries": 29523, "guesses": 14760, "correct": 7400, "mode": "own-training", "site": "site-2"}
    md = render_dpia(build_dpia(_variant(run_dir, tmp_path, audit=audit)), "md")
    assert "Ceiling (largest lower bound this setting can show) | 7.5514" in md
    assert "cannot detect a violation above epsilon 7.5514" in md
    assert "own training (the run's model, DP-SGD settings and a site's real data, site site-2)" in md
    reached = _variant(run_dir, tmp_path / "reached", audit=audit | {"ceiling": 10.5, "mode": "synthetic"})
    md = render_dpia(build_dpia(reached), "md")
    assert "Ceiling (largest lower bound this setting can show) | 10.5000" in md
    assert "cannot detect a violation" not in md and "synthetic (the run's DP-SGD settings" in md


def test_pdf_without_chromium_says_how_to_install(run_dir, tmp_path):
    # SECAGG_CHROMIUM="" hides any installed browser, so this runs on every machine.
    result = _cli("dpia", run_dir, "--format", "pdf", "-o", tmp_path / "d.pdf", SECAGG_CHROMIUM="")
    assert result.returncode == 2 and "apt-get install chromium" in result.stderr


def test_headless_chromium_screenshot(documents, tmp_path):
    exe = find_chromium()
    if exe is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    _, html, _ = documents
    page = tmp_path / "dpia.html"
    page.write_text(html)
    shot = tmp_path / "shot.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", page.as_uri()], capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_audit_and_a_violated_bound_are_reported(run_dir, tmp_path):
    from dp.audit import audit_dp_sgd, write_audit

    copy = _variant(run_dir, tmp_path)
    result = audit_dp_sgd(noise_multiplier=4.0, sample_rate=0.5, steps=10, canaries=200,
                          effective_noise_multiplier=1e-9)
    write_audit(copy, result)
    md = render_dpia(build_dpia(copy), "md")
    assert f"Empirical lower bound on epsilon | {result.epsilon_lower_bound:.4f}" in md
    assert f"Accounted epsilon (upper bound) | {result.epsilon_accounted:.4f}" in md
    assert "EXCEEDS the accounted epsilon" in md and "Consistent (lower <= upper) | False" in md


def test_pdf_rendered_by_headless_chromium(run_dir, tmp_path):
    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    out = tmp_path / "dpia.pdf"
    result = _cli("dpia", run_dir, "--format", "pdf", "-o", out)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 10_000


def test_chromium_renders_every_section(documents, tmp_path):
    """Not just a PNG: the DOM Chromium builds from the page holds every required section."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    _, html, _ = documents
    page = tmp_path / "dpia.html"
    page.write_text(html)
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for needle in ("Art. 35(7)(a)", "WP248", "CNIL", "Sign-off", "Residual risk", "<svg"):
        assert needle in dom, needle
