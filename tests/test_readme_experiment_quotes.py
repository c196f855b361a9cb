"""The README's scientific claim quotes the reference experiment's report: every report it names exists, and
every interval it quotes ("-0.086 [-0.162, -0.010]") stands in the report it quotes, digit for digit."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README[README.index("**What the reference experiment showed"):README.index("Real data uses the same layout:")]
INTERVAL = re.compile(r"([+−-]?\d+\.\d{3}) \[([+−-]?\d+\.\d{3}), ([+−-]?\d+\.\d{3})\]")


def _ascii(text: str) -> str:
    return text.replace("−", "-")


def _quoted_report() -> Path:
    names = set(re.findall(r"experiments/reports/[\w.-]+\.md", SECTION))
    assert len(names) == 1, f"the README's experiment section should quote one report; it names {sorted(names)}"
    return ROOT / names.pop()


def test_the_quoted_report_exists_and_is_the_newest_reference_report():
    report = _quoted_report()
    assert report.is_file()
    newest = max((ROOT / "experiments" / "reports").glob("reference-*.md"), key=lambda p: p.name)
    assert report == newest


def test_every_interval_the_readme_quotes_stands_in_the_report():
    report = _ascii(_quoted_report().read_text(encoding="utf-8"))
    # The report writes signed means ("+0.016") and unsigned positive bounds; compare numbers, not signs of 0+.
    found = {tuple(float(x) for x in m) for m in INTERVAL.findall(report)}
    quoted = [tuple(float(_ascii(x)) for x in m) for m in INTERVAL.findall(SECTION)]
    assert len(quoted) >= 10, "the README's experiment section quotes its intervals"
    missing = [q for q in quoted if q not in found]
    assert not missing, f"README intervals not in the report: {missing}"
