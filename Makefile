# civicmeter: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test check lint typecheck proto proto-check unit kafka-start kafka-stop clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml tools/localkafka/pom.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m tools.localkafka fetch
	touch $(STAMP)

install: $(STAMP) ## Install Python packages and the Kafka broker jars (from Maven Central)

demo: $(STAMP) ## Run the demo: a year of the 17 governments' AI use through the whole pipeline
	$(BIN)/python -m loadtests.demo $(DEMO_ARGS)

test: check unit ## Run every check and test (what CI runs)

unit: $(STAMP) ## Run the test suite (starts a real Kafka broker; ClickHouse embedded)
	$(BIN)/pytest $(PYTEST_ARGS)

check: lint typecheck proto-check ## Lint, type-check and check generated stubs for drift

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check services tests loadtests tools
	$(BIN)/ruff format --check services tests loadtests tools

typecheck: $(STAMP) ## mypy --strict over the project's own code
	$(BIN)/mypy services tests loadtests tools

proto: $(STAMP) ## Regenerate the Python stubs from proto/
	PATH=$(BIN):$$PATH bash scripts/gen_proto.sh

proto-check: $(STAMP) ## Fail if the committed stubs differ from proto/
	PATH=$(BIN):$$PATH bash scripts/check_proto.sh

kafka-start: $(STAMP) ## Start a local Kafka broker in .civicmeter/kafka (prints its address)
	$(BIN)/python -m tools.localkafka start --dir .civicmeter/kafka

kafka-stop: ## Stop the local Kafka broker
	$(BIN)/python -m tools.localkafka stop --dir .civicmeter/kafka

clean: ## Remove the virtualenv and local data (the Kafka jar cache is kept)
	rm -rf $(VENV) .civicmeter .mypy_cache .ruff_cache .pytest_cache
