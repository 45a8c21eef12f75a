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

test: setup
	@$(ENV) python -m pytest -q

clean:
	rm -rf artifacts metrics plots
