# dg: two commands on a new machine, `make demo` and `make test`.
.PHONY: help demo test stop setup regress clean-data

help:
	@echo "make demo        set up everything, start a coordinator and two peers, run a transfer"
	@echo "make test        set up everything, run every test"
	@echo "make stop        stop every node the scripts started"
	@echo "make setup       install dependencies, build and install dg"
	@echo "make regress     run the pg_regress suite against an installed dg"
	@echo "make clean-data  stop the nodes and delete their data"

demo:
	@scripts/demo.sh

test:
	@scripts/test.sh

stop:
	@scripts/stop.sh

setup:
	@scripts/setup.sh

regress:
	@scripts/regress.sh

clean-data: stop
	rm -rf .dg
