# postdeploy — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)

.PHONY: install binaries testbed-up testbed-down demo test test-unit test-e2e lint typecheck crds bench bench-judge

install:
	$(PYTHON) -m pip install -q -e '.[test]'

binaries:
	./testbed/build-binaries.sh

testbed-up: binaries
	$(PYTHON) -m testbed up

testbed-down:
	$(PYTHON) -m testbed down

crds:
	$(PYTHON) -m postdeploy crds crds/
	$(PYTHON) helm/render_manifests.py

demo: binaries
	$(PYTHON) -m testbed.demo $(DEMO_ARGS)

lint:
	ruff check operator tests testbed bench
	mypy

typecheck: lint

test-unit:
	$(PYTHON) -m pytest -q tests/unit

test-e2e: binaries
	$(PYTHON) -m pytest -q -m e2e tests/e2e

test: binaries lint
	$(PYTHON) -m pytest -q tests

bench: binaries
	$(PYTHON) -m testbed.bench

# The judge's false-failure and detection rates on synthetic streams (docs/judge.md);
# no test bed. BENCH_JUDGE_ARGS=--quick for a smoke run.
bench-judge:
	$(PYTHON) -m bench.judge $(BENCH_JUDGE_ARGS)
