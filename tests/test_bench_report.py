"""The `make bench` report builder works on a pytest-benchmark JSON file (no benchmark run needed)."""

import json

from benchmarks.report import fit_exponent, build


def test_fit_exponent_recovers_power_law():
    assert abs(fit_exponent([(10, 100.0), (100, 10_000.0), (1000, 1_000_000.0)]) - 2.0) < 1e-9
    assert fit_exponent([(10, 1.0)]) is None


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


def test_report_shows_the_spread_of_paired_ratios(tmp_path):
    data = {"datetime": "2026-11-29", "machine_info": {}, "benchmarks": [
        {"name": "test_step_dp_vs_non_private_paired[1]", "stats": {"median": 3.0, "rounds": 1}, "extra_info": {}}]}
    (tmp_path / "benchmarks.json").write_text(json.dumps(data))
    spread = {"q1": 1.25, "q3": 1.5, "min": 1.1, "max": 2.0, "pairs": 40}
    (tmp_path / "ratios.json").write_text(json.dumps({"ratios": {"dp / non-private, paired": 1.375, "a / b": 2.0},
                                                      "spread": {"dp / non-private, paired": spread}}))
    report = build(tmp_path / "benchmarks.json", tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| dp / non-private, paired | 1.375 | IQR 1.250-1.500, range 1.100-2.000, 40 pairs |" in text
    assert "| a / b | 2.000 |  |" in text  # a ratio of two medians has no paired spread
    assert report["spread"] == {"dp / non-private, paired": spread}


def test_interleave_alternates_and_pairs_each_a_with_the_next_b():
    from benchmarks.paired import PairedRatio, interleave

    calls = []
    result = interleave(lambda: calls.append("a"), lambda: calls.append("b"), pairs=5, warmup=2)
    assert calls == ["a", "b"] * 7  # two untimed pairs, then five timed ones, never two of a kind in a row
    assert len(result.a_s) == len(result.b_s) == 5

    summary = PairedRatio(a_s=(1.0, 2.0, 1.0, 4.0, 1.0), b_s=(2.0, 3.0, 1.5, 4.0, 5.0)).summary()
    # ratios 2, 1.5, 1.5, 1, 5 -> sorted 1, 1.5, 1.5, 2, 5
    assert summary["median"] == 1.5 and summary["min"] == 1.0 and summary["max"] == 5.0
    assert (summary["q1"], summary["q3"]) == (1.5, 2.0) and summary["pairs"] == 5
    assert summary["a_median_s"] == 1.0 and summary["b_median_s"] == 3.0
