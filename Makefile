# The two quick-start commands:
#   make demo   -- set up .venv and run the default pipeline (dvc repro) on the synthetic data set
#   make test   -- set up .venv and run the test suite (.ci/run calls this)
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup demo test repro metrics clean
setup:
	@bash scripts/setup.sh

demo: setup
	@$(ENV) dvc repro && actparse metrics

repro: setup
	@$(ENV) dvc repro

metrics:
	@$(ENV) actparse metrics

# Two test processes (pytest-xdist), each test file in one of them: many tests wait on subprocesses
# (dvc, the Prefect server, dask workers), so two processes finish the suite well before one would.
# Their torch threads share the cores: OpenMP threads that sleep at barriers instead of spinning keep a
# process from stalling the other (OMP_WAIT_POLICY, see actparse/determinism.py).
test: setup
	@$(ENV) OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf artifacts metrics plots
