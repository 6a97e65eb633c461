# dg: `make demo` and `make test` are all a new machine needs (run as root).
# The work is done by scripts/*.sh; see their headers for the environment
# variables they read (ports, DG_RELEASE, DG_FEATURES, DG_LINT, DG_KEEP, ...).

# Extra cargo features for the build that `make test` tests and installs
# (e.g. a fault-injection feature). demo/setup/install use DG_FEATURES from
# the environment, if any.
TEST_FEATURES ?= fault_injection

# PG=NN picks the PostgreSQL major for every target (default 15, Debian's;
# see scripts/pg.sh): make demo PG=18, make test PG=17, make bench PG=16.
ifdef PG
export PG
endif

.PHONY: help demo stop test chaos setup install regress bench bench-long clean-data mutants package test-package test-versions

help:
	@echo "make demo        set up everything, start a coordinator and two peers, run a transfer"
	@echo "make stop        stop every node the scripts started"
	@echo "make test        set up everything, run every test (DG_LINT=1 adds fmt + clippy)"
	@echo "make mutants     remove each promised mechanism in turn (tests/mutants/); every one must be caught"
	@echo "make chaos       the long chaos bank run (>= 1000 faults), with its figures"
	@echo "make setup       install the tools dg needs, build and install dg"
	@echo "make install     build and install dg only (debug; DG_RELEASE=1 for release)"
	@echo "make regress     run the pg_regress suite against the installed dg"
	@echo "make bench       dg against dblink 2PC, postgres_fdw and one node (bench/results/)"
	@echo "make bench-long  dg at 8 clients for 10 minutes, then the decision table's size"
	@echo "make package     per supported major, an installable tarball in dist/ (no Rust needed to install)"
	@echo "make test-package  install the package on a server without dg and run the demo transfer with it"
	@echo "make test-versions  unit, pg_regress and core tests on PostgreSQL 16 and 17, the whole suite on 18, then peers of other majors (mixed)"
	@echo "make clean-data  stop the nodes and delete their data"

demo:
	@bash scripts/demo.sh

stop:
	@bash scripts/stop.sh

test:
	@DG_FEATURES='$(TEST_FEATURES)' bash scripts/test.sh

chaos:
	@bash scripts/chaos.sh

# Takes /tmp/dg-pg15.lock itself around each install and test.
mutants:
	@DG_FEATURES='$(TEST_FEATURES)' bash scripts/mutants.sh

setup:
	@bash scripts/setup.sh

install:
	@bash scripts/setup.sh --install-only

regress:
	@bash scripts/regress.sh

bench:
	@bash bench/run.sh

bench-long:
	@DG_BENCH_LONG=1 bash bench/run.sh

package:
	@bash scripts/package.sh

# Takes /tmp/dg-pg15.lock itself.
test-package:
	@bash scripts/package-test.sh

test-versions:
	@bash scripts/versions.sh

clean-data:
	@bash scripts/stop.sh --clean
