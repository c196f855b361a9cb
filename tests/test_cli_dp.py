"""End-to-end CLI tests of the privacy commands (real subprocesses)."""

import json
import subprocess
import sys

import pytest

from dp import PrivacyEvent, PrivacyLedger


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_epsilon_json():
    code, out, _ = run("epsilon", "--noise-multiplier", "1.1", "--sample-rate", "0.01", "--steps", "500",
                       "--delta", "1e-5", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data["epsilon"]) == {"rdp", "prv", "pld"}
    assert data["bound"] == min(v for v in data["epsilon"].values() if v is not None)


def test_epsilon_single_accountant_text():
    code, out, _ = run("epsilon", "--noise-multiplier", "1.1", "--sample-rate", "0.01", "--steps", "500",
                       "--delta", "1e-5", "--accountant", "rdp")
    assert code == 0 and "rdp" in out and "bound: epsilon <=" in out


def test_noise_json_roundtrip():
    code, out, _ = run("noise", "--target-epsilon", "2", "--delta", "1e-5", "--sample-rate", "0.02",
                       "--steps", "200", "--accountant", "rdp", "--json")
    assert code == 0
    sigma = json.loads(out)["noise_multiplier"]
    code, out, _ = run("epsilon", "--noise-multiplier", str(sigma), "--sample-rate", "0.02", "--steps", "200",
                       "--delta", "1e-5", "--accountant", "rdp", "--json")
    assert json.loads(out)["epsilon"]["rdp"] <= 2.0


@pytest.mark.parametrize("args", [
    ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "10", "--delta", "0"],
    ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "10", "--delta", "1"],
    ["epsilon", "--noise-multiplier", "1", "--sample-rate", "1.5", "--steps", "10", "--delta", "1e-5"],
    ["epsilon", "--noise-multiplier", "-1", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"],
    ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "0", "--delta", "1e-5"],
    ["epsilon", "--noise-multiplier", "x", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"],
    ["noise", "--target-epsilon", "-3", "--delta", "1e-5", "--sample-rate", "0.1", "--steps", "10"],
    ["epsilon", "--sample-rate", "0.1"],
    ["ledger", "show", "/nonexistent/run"],
    ["ledger", "verify", "/nonexistent/run"],
])
def test_bad_input_is_one_line_and_exit_2(args):
    code, out, err = run(*args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_ledger_show_and_verify(tmp_path):
    ledger = PrivacyLedger.create(tmp_path, run_id="cli", delta=1e-5, budgets={"h1": 10.0, "h2": 10.0},
                                  accountants=("rdp", "pld"))
    for r in range(2):
        ledger.commit_round(r, [PrivacyEvent(s, r, 1.0, 0.02, 20, 1e-5) for s in ("h1", "h2")])
    ledger.close()
    code, out, _ = run("ledger", "show", str(tmp_path))
    assert code == 0 and "h1" in out and "pld" in out
    code, out, _ = run("ledger", "show", str(tmp_path), "--json")
    shown = json.loads(out)
    assert code == 0 and len(shown["spends"]) == 4
    assert shown["unit"] == "patient" and shown["adjacency"] == "add/remove one patient"
    assert all(s["unit"] == "patient" and s["adjacency"] == "add/remove one patient" for s in shown["spends"])
    code, out, _ = run("ledger", "verify", str(tmp_path))
    assert code == 0 and "ledger OK" in out
    # No registry anywhere (unsigned spends, as a Flower coordinator's): it says what it did not check.
    assert "registry: none" in out and "site signatures are NOT checked" in out and "0 site signatures" in out

    import sqlite3

    conn = sqlite3.connect(tmp_path / "ledger.sqlite", isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET body = replace(body, '\"steps\":20', '\"steps\":2') WHERE seq = 3")
    code, out, err = run("ledger", "verify", str(tmp_path))
    assert code == 1 and "entry 3" in err


def test_help_has_examples():
    for command in (["epsilon"], ["noise"], ["ledger", "verify"], ["demo"], ["params"]):
        code, out, _ = run(*command, "--help")
        assert code == 0 and "Example" in out
