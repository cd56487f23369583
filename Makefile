# canary-gate — see README.md. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test lint fmt chart demo bench bench-judgement bench-webhook bench-analyzer deps build clean

## Install what the tests need (Prometheus from Debian) when missing.
deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian package prometheus (tests run a real one on loopback)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	    || { echo "could not install prometheus: run 'apt-get install -y prometheus' as root"; exit 1; }; }

build:
	$(CARGO) build --release

## Unit + integration tests (real TLS, captured reviews, real Prometheus), lint, chart checks.
test: deps
	$(CARGO) test --all-targets
	$(MAKE) lint
	$(MAKE) chart

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## helm lint + template + offline schema validation of the rendered chart.
chart:
	bash scripts/check-chart.sh

## The main job on a machine with no cluster: the webhook answers a captured kubectl apply,
## then a healthy canary is promoted and a broken one rolled back against a real local
## Prometheus fed with SIMULATED mesh traffic.
demo: deps
	$(CARGO) run --quiet --example demo

## Decision quality of the judgement vs a Flagger-style threshold policy (simulated traffic).
bench-judgement:
	$(CARGO) run --quiet --release --example bench_judgement

## Webhook over real TLS vs a bare axum+rustls server (installs oha into .tools/cargo).
bench-webhook:
	bash scripts/bench-webhook.sh

## 1,000 rollouts in one analyzer against a real Prometheus.
bench-analyzer: deps
	$(CARGO) run --quiet --release --example bench_analyzer -- 1000 30 60

bench: bench-judgement bench-webhook bench-analyzer

clean:
	$(CARGO) clean
	rm -rf .tools
