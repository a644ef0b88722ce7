# civicmeter: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test check lint typecheck proto proto-check unit kafka-start kafka-stop clean \
	chart-tools chart-check bench bench-api bench-billing chaos api-tools proto-lint focus-validator \
	chromium

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml sdk/api/pyproject.toml sdk/client/pyproject.toml sdk/gateway/pyproject.toml \
		tools/localkafka/pom.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e sdk/api -e sdk/client -e sdk/gateway -e '.[dev]'
	$(BIN)/python -m tools.localkafka fetch
	touch $(STAMP)

install: $(STAMP) ## Install Python packages and the Kafka broker jars (from Maven Central)

demo: $(STAMP) ## Run the demo: a year of the 17 governments' AI use through the whole pipeline
	$(BIN)/python -m loadtests.demo $(DEMO_ARGS)

test: check unit ## Run every check and test (what CI runs)

unit: $(STAMP) chart-tools api-tools focus-validator chromium ## Run the test suite (starts a real Kafka broker; ClickHouse embedded)
	$(BIN)/pytest $(PYTEST_ARGS)

check: lint typecheck proto-check proto-lint chart-check ## Lint, types, stubs, buf, the Helm chart

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check services sdk tests loadtests tools deploy
	$(BIN)/ruff format --check services sdk tests loadtests tools deploy

typecheck: $(STAMP) ## mypy --strict over the project's own code
	$(BIN)/mypy services sdk tests loadtests tools deploy

proto: $(STAMP) ## Regenerate the Python stubs from proto/
	PATH=$(BIN):$$PATH bash scripts/gen_proto.sh

proto-check: $(STAMP) ## Fail if the committed stubs differ from proto/
	PATH=$(BIN):$$PATH bash scripts/check_proto.sh

api-tools: ## Install buf (npm) and grpcurl (go install), pinned and cached
	bash scripts/api_tools.sh

chromium: ## Install Debian's chromium, the headless browser the HTML report test uses (once)
	bash scripts/chromium.sh

focus-validator: ## Install the FinOps FOCUS validator in its own virtualenv (pinned, cached)
	bash scripts/focus_validator.sh

proto-lint: $(STAMP) api-tools ## buf lint and breaking-change check of proto/ against the v1 baseline
	bash scripts/buf_check.sh

chart-tools: ## Install helm, kubeconform, Kubernetes schemas and promtool (cached)
	bash deploy/check.sh --install-only

chart-check: ## Lint, render and validate the Helm chart offline (installs the tools first)
	bash deploy/check.sh

BENCH_ARGS ?= --soak-seconds 600
bench: $(STAMP) ## End-to-end benchmark at increasing rates and a 10-minute soak; rewrites loadtests/RESULTS.md
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

bench-api: $(STAMP) ## Query API calls/s, latency and calls per server core; rewrites loadtests/API_RESULTS.md
	$(BIN)/python -m loadtests.api_bench $(API_BENCH_ARGS)

bench-billing: $(STAMP) ## 12-month cost breakdown over gRPC on 10M events; rewrites loadtests/BILLING_RESULTS.md
	$(BIN)/python -m loadtests.billing_bench $(BILLING_BENCH_ARGS)

chaos: $(STAMP) ## SIGKILL broker, processor, storage under 200,000 events; rewrites loadtests/CHAOS_RESULTS.md
	$(BIN)/python -m loadtests.chaos $(CHAOS_ARGS)

kafka-start: $(STAMP) ## Start a local Kafka broker in .civicmeter/kafka (prints its address)
	$(BIN)/python -m tools.localkafka start --dir .civicmeter/kafka

kafka-stop: ## Stop the local Kafka broker
	$(BIN)/python -m tools.localkafka stop --dir .civicmeter/kafka

clean: ## Remove the virtualenv and local data (the Kafka jar cache is kept)
	rm -rf $(VENV) .civicmeter .mypy_cache .ruff_cache .pytest_cache
