# The project's commands. `make run` starts the platform locally;
# `make test` installs what the checks need, then runs every check.

CARGO ?= cargo

.PHONY: run test tools fmt-check clippy rust-test bench catalog

## Build (release) and start the whole platform locally, in one process,
## watching and auditing this repository; then `automationctl status`.
run:
	$(CARGO) build --release --locked -p automation-stack -p automation-cli
	./target/release/automation-stack

## Every check: formatting, clippy -D warnings, all tests.
test: tools fmt-check clippy rust-test

tools:
	./scripts/install-test-tools.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

rust-test:
	./scripts/rust-tests.sh

## Benchmarks that print figures.
bench:
	$(CARGO) bench --locked -p automation-collector --bench collector
	$(CARGO) bench --locked -p automation-async-bridge --bench bridge
	$(CARGO) bench --locked -p automation-test-watcher --bench watcher
	$(CARGO) bench --locked -p automation-audit-agent --bench audit
	$(CARGO) bench --locked -p automation-api-gateway --bench gateway

## Print the collector's metric catalog (JSON).
catalog:
	@$(CARGO) run --quiet --locked -p automation-collector --bin collector -- catalog
