"""Child process for the SIGKILL test: commits rounds forever, announcing each commit."""

import sys

from dp import PrivacyEvent, PrivacyLedger

run_dir = sys.argv[1]
ledger = PrivacyLedger.create(run_dir, run_id="kill-test", delta=1e-5, budgets={"a": 1e6, "b": 1e6},
                              accountants=("rdp",))
round_index = 0
while True:
    events = [PrivacyEvent(site, round_index, 1.0, 0.01, 10, 1e-5) for site in ("a", "b")]
    ledger.commit_round(round_index, events)
    print(round_index, flush=True)
    round_index += 1
