# The project's commands. `make run` starts the platform locally;
# `make test` installs what the checks need, then runs every check.

CARGO ?= cargo

.PHONY: run test tools fmt-check clippy rust-test monitoring-check monitoring deploy-check bench catalog

PYTHON ?= .venv/bin/python

## Build (release) and start the whole platform locally, in one process,
## watching and auditing this repository; then `automationctl status`.
run:
	$(CARGO) build --release --locked -p automation-stack -p automation-cli
	./target/release/automation-stack

## Every check: formatting, clippy -D warnings, all tests.
test: tools fmt-check clippy deploy-check monitoring-check rust-test

tools:
	./scripts/install-test-tools.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Every Rust test, the monitoring end to end among them
## (crates/stack/tests/monitoring.rs: the services, the real Prometheus with
## monitoring/'s rules and the real Alertmanager with its routing).
rust-test:
	./scripts/rust-tests.sh

## Rules, alerts, routing and dashboards against the catalog and the real tools.
monitoring-check:
	$(PYTHON) scripts/check-monitoring.py

## Image, manifests and workflows: yamllint, hadolint, Dockerfile.prod
## against its users, kustomize + kubernetes-validate, CRD schemas,
## deployment policy, compose and workflow schemas, rollback script.
deploy-check:
	.venv/bin/yamllint -c .yamllint.yml .
	$(PYTHON) scripts/check_k8s.py
	$(PYTHON) scripts/check_images.py
	./scripts/check_deploy_files.sh

## Prometheus and Alertmanager (Debian packages) against `make run`'s stack.
monitoring: tools
	$(PYTHON) scripts/monitoring_local.py

## Benchmarks that print figures.
bench:
	$(CARGO) bench --locked -p automation-collector --bench collector
	$(CARGO) bench --locked -p automation-async-bridge --bench bridge
	$(CARGO) bench --locked -p automation-test-watcher --bench watcher
	$(CARGO) bench --locked -p automation-audit-agent --bench audit
	$(CARGO) bench --locked -p automation-api-gateway --bench gateway
	$(CARGO) bench --locked -p automation-api-gateway --bench openai_http
	$(CARGO) bench --locked -p automation-stack --bench tracing

## Print the collector's metric catalog (JSON).
catalog:
	@$(CARGO) run --quiet --locked -p automation-collector --bin collector -- catalog
