"""The `make bench` report builder works on a pytest-benchmark JSON file (no benchmark run needed)."""

import json

from benchmarks.report import _fit_exponent, build


def test_fit_exponent_recovers_power_law():
    assert abs(_fit_exponent([(10, 100.0), (100, 10_000.0), (1000, 1_000_000.0)]) - 2.0) < 1e-9
    assert _fit_exponent([(10, 1.0)]) is None


def test_report_from_benchmark_json(tmp_path):
    scaling = [
        {"graph": "secagg+", "n": n, "m": 100_000, "dropout": 0.1, "client_s_per_client": 0.01 * n ** 0.1,
         "server_s": 0.001 * n, "bytes_up_per_client": 400_000, "bytes_down_per_client": 2000, "degree": 30,
         "threshold": 17}
        for n in (50, 100, 1000)
    ]
    data = {"datetime": "2026-11-27", "machine_info": {"cpu": {"brand_raw": "test cpu"}}, "benchmarks": [
        {"name": f"test_scaling[{s['n']}]", "stats": {"median": s["server_s"], "rounds": 1}, "extra_info": s}
        for s in scaling
    ]}
    (tmp_path / "benchmarks.json").write_text(json.dumps(data))
    (tmp_path / "ratios.json").write_text(json.dumps({"ratios": {"client / floor": 1.5}}))
    report = build(tmp_path / "benchmarks.json", tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "client / floor | 1.500" in text and "secagg+" in text
    assert abs(report["exponents"]["secagg+ m=100000: server time vs n"] - 1.0) < 1e-9
    assert (tmp_path / "report.json").exists()
