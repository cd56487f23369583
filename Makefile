# canary-gate — see README.md. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo
# The one version: [package] version in Cargo.toml (image tag, OCI label; the chart follows it).
VERSION := $(shell awk -F'"' '/^\[/ { p = ($$0 == "[package]") } p && /^version *=/ { print $$2; exit }' Cargo.toml)
IMAGE ?= ghcr.io/canary-gate/canary-gate
STATIC_TARGET ?= x86_64-unknown-linux-gnu

.PHONY: test lint fmt chart chart-package demo bench bench-judgement bench-webhook bench-analyzer deps build clean static image static-check examples crds

## Install what the tests need when missing: Prometheus (tests run a real one on loopback) and
## Chromium (tests/browser.rs drives the dashboard headless), both Debian packages.
deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian package prometheus (tests run a real one on loopback)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	    || { echo "could not install prometheus: run 'apt-get install -y prometheus' as root"; exit 1; }; }
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian package chromium (the dashboard's browser test)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || { echo "could not install chromium: run 'apt-get install -y chromium' as root"; exit 1; }; }

build:
	$(CARGO) build --release

## Release binary with glibc linked in statically (no loader, no shared library), for the image.
## --target keeps +crt-static off build scripts and proc-macros. The Dockerfile runs this too.
static:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked --target $(STATIC_TARGET) --bin canary-gate
	@mkdir -p target/static
	cp target/$(STATIC_TARGET)/release/canary-gate target/static/canary-gate

## The container image $(IMAGE):$(VERSION) (Dockerfile; needs a Docker daemon).
image:
	@docker info >/dev/null 2>&1 || { echo "make image: no usable Docker daemon ('docker info' failed); start one or build the Dockerfile elsewhere"; exit 1; }
	docker build \
	  --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
	  -t $(IMAGE):$(VERSION) .

## The static binary: no interpreter, no NEEDED, runs alone in an empty read-only chroot
## (--version, certs, serve, name resolution via /etc/hosts and DNS); the Dockerfile's shape.
static-check:
	bash scripts/check-static.sh

## Unit + integration tests (real TLS, captured reviews, real Prometheus), lint, chart checks.
test: deps crds
	$(CARGO) test --all-targets
	$(MAKE) lint
	$(MAKE) chart
	$(MAKE) examples
	$(MAKE) static-check

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## helm lint + template + offline schema validation of the rendered chart.
chart:
	bash scripts/check-chart.sh

## examples/podinfo: kubernetes-validate of the built-in kinds (the venv `make chart` made),
## the example values against the chart schema, fetch-crds.sh's checksum handling. The Istio
## objects and the webhook's answers: tests/examples.rs (cargo test).
examples: crds
	bash scripts/check-examples.sh

## CRD schemas for the tests (tests/common/crds.rs): ISTIO_CRDS (a file) and GATEWAY_API_CRDS
## (a directory) from the environment, else ../shared beside this checkout, else the pinned
## upstream files below fetched into .tools/crds (scripts/fetch-crds.sh: sha256 checked,
## atomic, one clear line when offline). Exported to every recipe, so `cargo test` sees them.
CRDS_CACHE := $(CURDIR)/.tools/crds
GATEWAY_API_VERSION := v1.6.1
GATEWAY_API_URL := https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/$(GATEWAY_API_VERSION)/config/crd/standard/gateway.networking.k8s.io_
GATEWAY_API_KINDS := gatewayclasses gateways httproutes referencegrants
# sha256 of each upstream file, unchanged (../shared/gateway-api holds the same files).
GATEWAY_API_SHA256_gatewayclasses := 53710048ba26f8620eed59d5e51b157ecf040daf5c6eef31a4b991e0808c4be5
GATEWAY_API_SHA256_gateways := 25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a
GATEWAY_API_SHA256_httproutes := a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852
GATEWAY_API_SHA256_referencegrants := 8c645e9333cfa67790cc2a53e0c00076f88b2bd4230d2b49688c78bc34f9b2c3
ISTIO_API_COMMIT := b8f8791d9653b2edc77a071d48887e582cfe84bf
ISTIO_CRDS_URL := https://raw.githubusercontent.com/istio/api/$(ISTIO_API_COMMIT)/kubernetes/customresourcedefinitions.gen.yaml
# NOT the sha256 of that upstream file (unknown offline): the sha256 of its DestinationRule,
# Gateway and VirtualService documents as `fetch-crds.sh --istio-networking` extracts them,
# computed from ../shared/istio/crds.yaml minus its 2-line header (the same bytes the
# extraction gives for that file: scripts/check-examples.sh checks it). It verifies those three
# CRDs byte for byte; nothing else of the upstream file, and not that the commit still holds
# what ../shared was taken from (a mismatch fails the fetch, loudly).
ISTIO_CRDS_SHA256 := 1768bb66d215e55cbc6ae56a33b9471aafffe012ccc951f7b6c3a8ad8430d7f2
ifeq ($(strip $(ISTIO_CRDS)),)
ISTIO_CRDS := $(firstword $(wildcard $(abspath $(CURDIR)/../shared/istio/crds.yaml)) $(CRDS_CACHE)/istio/crds.yaml)
endif
ifeq ($(strip $(GATEWAY_API_CRDS)),)
GATEWAY_API_CRDS := $(or $(patsubst %/httproutes.yaml,%,$(wildcard $(abspath $(CURDIR)/../shared/gateway-api)/httproutes.yaml)),$(CRDS_CACHE)/gateway-api)
endif
export ISTIO_CRDS GATEWAY_API_CRDS
crds:
	@if [[ -f "$(ISTIO_CRDS)" && "$(ISTIO_CRDS)" != "$(CRDS_CACHE)/istio/crds.yaml" ]]; then \
	  echo "crds: Istio CRDs from $(ISTIO_CRDS)"; \
	elif [[ "$(ISTIO_CRDS)" == "$(CRDS_CACHE)/istio/crds.yaml" ]]; then \
	  bash scripts/fetch-crds.sh --istio-networking \
	    --hint "set ISTIO_CRDS=/path/to/crds.yaml (a local copy of the Istio VirtualService, DestinationRule and Gateway CRDs) and run again" \
	    "$(ISTIO_CRDS_URL)" "$(ISTIO_CRDS_SHA256)" "$(ISTIO_CRDS)"; \
	else \
	  echo "crds: ISTIO_CRDS=$(ISTIO_CRDS) is not a file: set it to a crds.yaml with the Istio networking CRDs, or unset it" >&2; exit 1; \
	fi
	@if [[ -d "$(GATEWAY_API_CRDS)" && "$(GATEWAY_API_CRDS)" != "$(CRDS_CACHE)/gateway-api" ]]; then \
	  echo "crds: Gateway API CRDs from $(GATEWAY_API_CRDS)"; \
	elif [[ "$(GATEWAY_API_CRDS)" == "$(CRDS_CACHE)/gateway-api" ]]; then \
	  $(foreach k,$(GATEWAY_API_KINDS),bash scripts/fetch-crds.sh \
	    --hint "set GATEWAY_API_CRDS=/path/to/dir (gatewayclasses.yaml, gateways.yaml, httproutes.yaml, referencegrants.yaml of gateway-api $(GATEWAY_API_VERSION)) and run again" \
	    "$(GATEWAY_API_URL)$(k).yaml" "$(GATEWAY_API_SHA256_$(k))" "$(GATEWAY_API_CRDS)/$(k).yaml" &&) true; \
	else \
	  echo "crds: GATEWAY_API_CRDS=$(GATEWAY_API_CRDS) is not a directory: set it to one with the Gateway API CRD files, or unset it" >&2; exit 1; \
	fi

## The chart as a Helm repository for any static file host: $(CHART_DIST)/canary-gate-$(VERSION).tgz
## and $(CHART_DIST)/index.yaml, merged with an index.yaml already there so older versions stay
## listed (chart URLs under CHART_REPO_URL; relative when it is empty). Version and appVersion are
## $(VERSION), refused when charts/canary-gate/Chart.yaml says otherwise. Prints the push line for
## an OCI registry and writes it to $(CHART_DIST)/oci-push.txt. helm: scripts/lib/tools.sh.
CHART_DIST ?= dist/charts
CHART_REPO_URL ?= https://canary-gate.github.io/canary-gate
CHART_OCI_REPO ?= oci://ghcr.io/canary-gate/charts
chart-package:
	@bash scripts/lib/tools.sh chart-version-check "$(VERSION)"
	@mkdir -p "$(CHART_DIST)"
	@bash scripts/lib/tools.sh helm package charts/canary-gate --destination "$(CHART_DIST)" \
	  --version "$(VERSION)" --app-version "$(VERSION)"
	@bash scripts/lib/tools.sh helm repo index "$(CHART_DIST)" $(if $(CHART_REPO_URL),--url "$(CHART_REPO_URL)") \
	  $$([[ ! -f "$(CHART_DIST)/index.yaml" ]] || echo --merge "$(CHART_DIST)/index.yaml")
	@echo "Wrote $(CHART_DIST)/index.yaml"
	@echo "helm push $(CHART_DIST)/canary-gate-$(VERSION).tgz $(CHART_OCI_REPO)" | tee "$(CHART_DIST)/oci-push.txt"

## The main job on a machine with no cluster: the webhook answers a captured kubectl apply,
## then a healthy canary is promoted and a broken one rolled back against a real local
## Prometheus fed with SIMULATED mesh traffic.
## DEMO_ARGS="--serve-dashboard 300s" keeps the web dashboard up after the rollouts (its URL
## is printed; --dashboard-listen ADDR, default 127.0.0.1:8080). Without it the demo ends.
DEMO_ARGS ?=
demo: deps
	$(CARGO) run --quiet --example demo -- $(DEMO_ARGS)

## Decision quality of the judgement vs a Flagger-style threshold policy (simulated traffic).
bench-judgement:
	$(CARGO) run --quiet --release --example bench_judgement

## Webhook over real TLS vs a bare axum+rustls server (installs oha into .tools/cargo).
bench-webhook:
	bash scripts/bench-webhook.sh

## The analyzer at scale, against a real Prometheus and the in-memory API server in a child
## process (examples/bench_analyzer.rs). BENCH_ANALYZER_ARGS: --rollouts N (managed, rolling
## out at once), --unmanaged M (other Deployments in the cluster), --interval S, --duration S,
## --kube-qps/--kube-burst/--kube-max-in-flight. The two runs in the README:
##   make bench-analyzer BENCH_ANALYZER_ARGS="--rollouts 1000 --unmanaged 19000"
##   make bench-analyzer BENCH_ANALYZER_ARGS="--rollouts 10000 --duration 300 --kube-qps 1000 --kube-burst 2000 --kube-max-in-flight 64 --list-max-age 5"
BENCH_ANALYZER_ARGS ?= --rollouts 1000 --unmanaged 19000 --interval 30 --duration 60
bench-analyzer: deps
	$(CARGO) run --quiet --release --example bench_analyzer -- $(BENCH_ANALYZER_ARGS)

bench: bench-judgement bench-webhook bench-analyzer

clean:
	$(CARGO) clean
	rm -rf .tools
