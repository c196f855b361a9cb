# Two commands matter: `make demo` and `make test`. Both create .venv if missing
# and install everything they need from the project's own files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# constraints.txt pins torch to the CPU wheel available on the build machines.
INSTALL := $(PIP) install -c constraints.txt
RESULTS ?= results
# `make test` runs pytest-xdist with one worker per core (`-n auto`); PYTEST_WORKERS=1 runs one worker.
# --durations=40 lists the slowest test phases at the end, so every clean run says where the time went.
# (One worker more than cores, to overlap the Flower process files' waits with other files, was measured
# on 2026-11-30 from clean clones: 18 min 02 s of pytest against 17 min 26 s with one per core - the Flower
# files are CPU-bound as much as they wait, each message starting a Python process - so one per core stays
# the default: PYTEST_WORKERS=3 make test tries it.)
# Workers get whole files (--dist loadfile): a file's module and session fixtures (the DPIA's simulated
# run, the simulation tests' cohort) are built once, and a file's Flower federations never overlap.
# tests/conftest.py places the files: the longest left to an idle worker, a short one to a busy one,
# at most two Flower federation files at once.
# (--dist loadgroup would be finer, but with pytest 9.2 xdist 3.8's xdist_group marks have no effect.)
PYTEST_WORKERS ?= auto

.PHONY: demo test bench bench-quick clean chromium experiment

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(VENV)/.stamp-base: $(PY) pyproject.toml constraints.txt
	$(INSTALL) -e .
	touch $@

$(VENV)/.stamp-sim: $(VENV)/.stamp-base
	$(INSTALL) -e ".[sim]"
	touch $@

# The tests also run the Flower engine (SuperLink + SuperNodes on loopback) and the
# benchmarks compare with Flower's own SecAgg+: the dev environment has the flower extra.
$(VENV)/.stamp-dev: $(VENV)/.stamp-sim
	$(INSTALL) -e ".[sim,he,report,dev,flower,bench]"
	touch $@

# The main job: four synthetic hospitals, DP-SGD + secure aggregation with dropouts.
# It prints patient-level epsilon (add/remove one patient), the default privacy unit, and says so.
# Each run gets its own directory under runs/ (nothing is overwritten).
demo: $(VENV)/.stamp-sim
	$(VENV)/bin/secagg simulate --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# The reference experiment (experiments/reference.toml): federated vs every local-only model, central and
# non-private over five seeds with seeded (labelled) DP noise; writes report.md and plots into its directory.
experiment: $(VENV)/.stamp-sim
	$(VENV)/bin/secagg experiment --config experiments/reference.toml --out experiments/runs/reference-$$(date +%Y%m%d-%H%M%S)

# Headless Chromium renders the DPIA to PDF and screenshots it in the tests. Installed
# from Debian's packages when missing and we are root; otherwise those tests skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium missing and not root: DPIA PDF and browser tests will be skipped"; fi; }

test: $(VENV)/.stamp-dev chromium
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --durations=40 tests

bench: $(VENV)/.stamp-dev
	mkdir -p $(RESULTS)
	RESULTS=$(RESULTS) $(PY) -m pytest -q -p no:cacheprovider benchmarks --benchmark-only \
		--benchmark-json=$(RESULTS)/benchmarks.json
	$(PY) -m benchmarks.report $(RESULTS)/benchmarks.json $(RESULTS)

# The headline ratios only (client masking against the AES-CTR floor and Flower's client, server
# unmasking against Flower's server, the DP step against the non-private one, paired), the tests
# marked `quick`, with fewer rounds (BENCH_QUICK=1); same report files, in $(RESULTS)/quick.
bench-quick: $(VENV)/.stamp-dev
	mkdir -p $(RESULTS)/quick
	BENCH_QUICK=1 RESULTS=$(RESULTS)/quick $(PY) -m pytest -q -p no:cacheprovider benchmarks --benchmark-only \
		-m "quick and not slow" --benchmark-json=$(RESULTS)/quick/benchmarks.json
	$(PY) -m benchmarks.report $(RESULTS)/quick/benchmarks.json $(RESULTS)/quick

clean:
	rm -rf $(VENV) $(RESULTS) .pytest_cache .hypothesis .benchmarks
