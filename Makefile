# postdeploy — the two commands a newcomer needs are `make demo` and `make test`.
#
# Every target that runs Python first runs the install step (testbed/install.sh):
# Debian packages, a virtual environment in $(VENV) with the project and its test
# dependencies, and the test bed's Go builds. Each part is a quick check when its work
# is done. Everything then runs with the venv's python, and the venv's bin/ comes first
# on PATH, so ruff and mypy come from it and `kubectl postdeploy` finds kubectl-postdeploy.
VENV ?= $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
export VENV
export PATH := $(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)

.PHONY: install venv binaries testbed-up testbed-down demo test test-unit test-e2e lint typecheck crds bench bench-judge bench-judge-looks bench-backtest bench-status bench-argo bench-memory

# All of it: Debian packages, the venv, the Go builds.
install:
	./testbed/install.sh

# The venv only: enough for lint and unit tests.
venv:
	SKIP_APT=1 SKIP_BINARIES=1 ./testbed/install.sh

binaries:
	./testbed/build-binaries.sh

testbed-up: install
	$(PYTHON) -m testbed up

testbed-down: venv
	$(PYTHON) -m testbed down

crds: venv
	$(PYTHON) -m postdeploy crds crds/
	$(PYTHON) helm/render_manifests.py

demo: install
	$(PYTHON) -m testbed.demo $(DEMO_ARGS)

lint: venv
	ruff check operator tests testbed bench
	mypy
	lint-imports

typecheck: lint

test-unit: venv
	$(PYTHON) -m pytest -q tests/unit

test-e2e: install
	$(PYTHON) -m pytest -q -m e2e tests/e2e

# Two workers, a test file each at a time (each worker starts its own test bed on free
# loopback ports); the 25 slowest tests are listed at the end.
TEST_WORKERS ?= 2
test: install lint
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

bench: install
	$(PYTHON) -m testbed.bench

# postdeploy beside Argo Rollouts v1.9.0 on one test bed (docs/benchmarks.md); builds
# Argo's controller into the binary cache on first use. BENCH_ARGO_ARGS=--sizes 100 ...
bench-argo: install
	./testbed/build-argo.sh >/dev/null
	$(PYTHON) -m bench.argo $(BENCH_ARGO_ARGS)

# The operator's memory idle and at 100, 500, 2,000 of bench-argo's reviews, by origin
# (docs/benchmarks.md, "Beside Argo Rollouts"). BENCH_MEMORY_ARGS=--probe --tracemalloc ...
bench-memory: install
	$(PYTHON) -m bench.memory $(BENCH_MEMORY_ARGS)

# The judge's false-failure and detection rates on synthetic streams (docs/judge.md);
# no test bed. BENCH_JUDGE_ARGS=--quick for a smoke run.
bench-judge: venv
	$(PYTHON) -m bench.judge $(BENCH_JUDGE_ARGS)

# CPU of one comparison run late in a review: recomputed vs kept up to date (docs/judge.md).
bench-judge-looks: venv
	$(PYTHON) -m bench.judge_looks

# Backtest speed: 28 releases of the built-in template over the backfilled history
# (docs/backtest.md); Prometheus only, no Kubernetes.
bench-backtest: venv
	$(PYTHON) -m bench.backtest $(BENCH_BACKTEST_ARGS)

# A review's status size over its 72 hours and how often it is written, on the real
# engine with fakes for its inputs (docs/benchmarks.md, "Status size"); seconds, no test bed.
bench-status: venv
	$(PYTHON) -m bench.status_size $(BENCH_STATUS_ARGS)
