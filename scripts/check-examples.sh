#!/usr/bin/env bash
# Offline checks for the demo application examples/podinfo/ (issue #12).
#
#   1. every built-in object (Namespace, Deployment, Service, Job) is valid
#      against the Kubernetes schemas with kubernetes-validate --strict, for the
#      oldest and newest versions below; the Istio kinds (Gateway,
#      VirtualService) have no schema there and are checked against Istio's own
#      CRDs by tests/examples.rs (cargo test) instead;
#   2. examples/podinfo/values.yaml, merged over the chart's values.yaml as helm
#      does, is valid against charts/canary-gate/values.schema.json; helm lint
#      --strict and helm template with it succeed, and the rendered chart is
#      valid (kubernetes-validate --strict) and points at the example's
#      Prometheus and policies;
#   3. the manifests fit together (namespace, selector, ports, Job labels);
#   4. scripts/fetch-crds.sh on local file:// URLs: the right sha256 puts the
#      file in place, a wrong one fails with one line and leaves nothing, an
#      unreachable URL fails with one line; the Istio extraction of
#      ../shared/istio/crds.yaml (when present) reproduces the Makefile's pin.
#
# Prints one PASS/FAIL line per check and a closing
# "check-examples: N passed, M failed"; exits 1 if any check failed, 2 if the
# tools are missing. Tools: the kubernetes-validate venv that
# scripts/check-chart.sh installs into .tools (run `make chart` first), and helm
# through scripts/lib/tools.sh. No network, no cluster.
#
# Environment: CHECK_CHART_TOOLS (tools dir, default <repo>/.tools),
# CHECK_EXAMPLES_K8S_VERSIONS (space separated, default "1.26.0 <newest known>").
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
EXAMPLE="$ROOT/examples/podinfo"
CHART="$ROOT/charts/canary-gate"
TOOLS="${CHECK_CHART_TOOLS:-$ROOT/.tools}"
OUT="$TOOLS/check-examples"
KV_VERSION=1.37.0   # what scripts/check-chart.sh installs

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$*"; }
indent() { sed 's/^/    /'; }
die() { printf 'FATAL %s\n' "$*" >&2; exit 2; }

# --- tools: the interpreter check-chart.sh installed kubernetes-validate for ---
PY=("$TOOLS/venv/bin/python")
kv_ok() {
  "${PY[@]}" -c "import sys, yaml, jsonschema, kubernetes_validate.utils, kubernetes_validate.version as v; sys.exit(v.__version__ != '$KV_VERSION')" 2>/dev/null
}
if ! kv_ok; then
  PY=(env "PYTHONPATH=$TOOLS/pylib" python3)   # check-chart's fallback without python3-venv
fi
kv_ok || die "kubernetes-validate $KV_VERSION not found in $TOOLS/venv (or $TOOLS/pylib): run \`make chart\` first, it installs it"
K8S_VERSIONS="${CHECK_EXAMPLES_K8S_VERSIONS:-1.26.0 $("${PY[@]}" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')}"
echo "     kubernetes-validate $KV_VERSION, Kubernetes versions: $K8S_VERSIONS"

rm -rf "$OUT"
mkdir -p "$OUT"

# --- 2. helm with the example values ------------------------------------------
helm() { bash "$SCRIPT_DIR/lib/tools.sh" helm "$@"; }
if out=$(helm lint --strict "$CHART" --namespace canary-gate -f "$EXAMPLE/values.yaml" 2>&1); then
  pass "helm lint --strict -f examples/podinfo/values.yaml"
else
  fail "helm lint --strict -f examples/podinfo/values.yaml"; echo "$out" | indent
fi
RENDERED=""
if helm template canary-gate "$CHART" --namespace canary-gate -f "$EXAMPLE/values.yaml" \
    >"$OUT/chart.yaml" 2>"$OUT/chart.err"; then
  pass "helm template -f examples/podinfo/values.yaml ($(grep -c '^kind:' "$OUT/chart.yaml") objects)"
  RENDERED="$OUT/chart.yaml"
else
  fail "helm template -f examples/podinfo/values.yaml"; indent <"$OUT/chart.err"
fi

# --- 1-3. schemas and properties (python) ---------------------------------------
set +e
"${PY[@]}" - "$EXAMPLE" "$CHART" "$K8S_VERSIONS" "$RENDERED" >"$OUT/checks.log" 2>&1 <<'PY'
import copy, json, sys
import jsonschema, yaml
import kubernetes_validate.utils as kv

example, chart, versions, rendered = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
FILES = ["namespace.yaml", "deployment.yaml", "service.yaml", "gateway.yaml", "loadtest.yaml"]
ISTIO_GROUP = "networking.istio.io"

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def report(ok, what, detail=""):
    print(("PASS " if ok else "FAIL ") + what + ((": " + detail) if detail and not ok else ""), flush=True)

def check(what, fn):
    try:
        fn()
    except AssertionError as e:
        report(False, what, str(e) or "assertion failed")
    except Exception as e:  # a crash in a check is a failure of that check
        report(False, what, "%s: %s" % (type(e).__name__, e))
    else:
        report(True, what)

def eq(actual, expected, what):
    assert actual == expected, "%s: %r != expected %r" % (what, actual, expected)

def validate_docs(label, docs, allowed_missing):
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
                if group in allowed_missing:
                    skipped.append(d["kind"])
                else:
                    errors.append("%s: no schema for %s in Kubernetes %s" % (ident, d.get("apiVersion"), version))
        what = "kubernetes-validate --strict [%s] k8s %s: %d objects valid" % (label, version, validated)
        if skipped:
            what += ", Istio %s checked by tests/examples.rs" % ",".join(sorted(set(skipped)))
        report(not errors, what, "; ".join(errors))

docs = {}
for name in FILES:
    try:
        docs[name] = load("%s/%s" % (example, name))
    except Exception as e:
        report(False, "examples/podinfo/%s parses as YAML" % name, str(e))
        docs[name] = []
for name in FILES:
    if docs[name]:
        validate_docs("examples/podinfo/" + name, docs[name], {ISTIO_GROUP})

def one(name, kind):
    found = [d for d in docs[name] if d.get("kind") == kind]
    assert len(found) == 1, "%s: expected one %s, found %d" % (name, kind, len(found))
    return found[0]

# --- values against the chart schema (merged as helm merges them) ------------
def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out

def values_schema():
    with open(chart + "/values.schema.json") as f:
        schema = json.load(f)
    with open(chart + "/values.yaml") as f:
        defaults = yaml.safe_load(f)
    with open(example + "/values.yaml") as f:
        ours = yaml.safe_load(f)
    assert isinstance(ours, dict) and ours, "examples/podinfo/values.yaml is empty"
    validator = jsonschema.Draft7Validator(schema)
    errs = ["%s: %s" % ("/".join(str(p) for p in e.path) or "<root>", e.message)
            for e in validator.iter_errors(merge(defaults, ours))]
    assert not errs, "; ".join(errs)
    eq(ours["prometheus"]["url"], "http://prometheus.monitoring:9090", "prometheus.url")
    # The checker notices a typo.
    assert list(validator.iter_errors(merge(defaults, {"analysis": {"intreval": "30s"}}))), \
        "a typo in a values key went unnoticed"
check("examples/podinfo/values.yaml merged over the chart's values.yaml is valid against values.schema.json",
      values_schema)

if rendered:
    chart_docs = load(rendered)
    validate_docs("chart -f examples/podinfo/values.yaml", chart_docs, set())

    def chart_env():
        dep = next(d for d in chart_docs if d["kind"] == "Deployment")
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        eq(env.get("CANARY_GATE_PROMETHEUS_URL"), "http://prometheus.monitoring:9090", "CANARY_GATE_PROMETHEUS_URL")
        eq(env.get("CANARY_GATE_POLICY_REQUIRE_RESOURCE_REQUESTS"), "true", "CANARY_GATE_POLICY_REQUIRE_RESOURCE_REQUESTS")
        eq(env.get("CANARY_GATE_DEFAULT_INTERVAL"), "30s", "CANARY_GATE_DEFAULT_INTERVAL")
        assert not [d for d in chart_docs if d["kind"] == "Job"], "the chart's load-test Job is rendered"
    check("the chart rendered with the example values: Prometheus URL, policies, 30s interval, no chart Job",
          chart_env)

# --- the manifests fit together ------------------------------------------------
def fit():
    ns = one("namespace.yaml", "Namespace")
    name = ns["metadata"]["name"]
    eq(ns["metadata"]["labels"].get("canary-gate.io/enabled"), "true", "namespace label canary-gate.io/enabled")
    eq(ns["metadata"]["labels"].get("istio-injection"), "enabled", "namespace label istio-injection")
    for f in FILES[1:]:
        for d in docs[f]:
            eq(d["metadata"].get("namespace"), name, "%s %s namespace" % (f, d["kind"]))
    dep = one("deployment.yaml", "Deployment")
    svc = one("service.yaml", "Service")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    assert all(pod_labels.get(k) == v for k, v in sel.items()), "Deployment selector does not match its pods"
    assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()), \
        "Service selector does not match the podinfo pods"
    ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    sp = svc["spec"]["ports"][0]
    eq((sp["name"], sp["port"]), ("http", 9898), "Service port")
    assert sp["targetPort"] in ports or sp["targetPort"] in ports.values(), "Service targetPort %r" % sp["targetPort"]
    job = one("loadtest.yaml", "Job")
    jl = job["spec"]["template"]["metadata"]["labels"]
    assert not all(jl.get(k) == v for k, v in svc["spec"]["selector"].items()), \
        "load-test pods match the podinfo Service selector"
    for a in job["spec"]["template"]["spec"]["containers"][0]["args"]:
        if a.startswith("http"):
            assert a.startswith("http://%s.%s:%d/" % (svc["metadata"]["name"], name, sp["port"])), \
                "load-test URL %s does not address the podinfo Service" % a
check("the manifests fit together: namespace shop (labels), selectors, Service port http/9898, "
      "load-test URLs and labels", fit)
PY
py_rc=$?
set -e
cat "$OUT/checks.log"
PASSED=$((PASSED + $(grep -c '^PASS ' "$OUT/checks.log" || true)))
FAILED=$((FAILED + $(grep -c '^FAIL ' "$OUT/checks.log" || true)))
[[ $py_rc -eq 0 ]] || fail "python checks exited with status $py_rc"

# --- 4. fetch-crds.sh ------------------------------------------------------------
FETCH="$SCRIPT_DIR/fetch-crds.sh"
tmp="$OUT/fetch"
mkdir -p "$tmp/src"
printf 'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n' >"$tmp/src/crd.yaml"
good=$(sha256sum "$tmp/src/crd.yaml" | cut -d' ' -f1)
bad=$(printf '%064d' 0)
HINT="set TEST_CRDS=/path/to/file"
# leftovers DIR: anything in DIR besides what is expected there
leftovers() { find "$1" -mindepth 1 -print 2>/dev/null | sed "s|^$1/||" | tr '\n' ' '; }

if out=$(bash "$FETCH" --hint "$HINT" "file://$tmp/src/crd.yaml" "$good" "$tmp/ok/sub/crd.yaml" 2>&1) \
  && cmp -s "$tmp/src/crd.yaml" "$tmp/ok/sub/crd.yaml" && [[ "$(leftovers "$tmp/ok/sub")" == "crd.yaml " ]]; then
  pass "fetch-crds.sh: file:// URL with the right sha256 -> file in place, no temporary left"
else
  fail "fetch-crds.sh: file:// URL with the right sha256"; echo "$out" | indent
fi

rc=0; out=$(bash "$FETCH" --hint "$HINT" "file://$tmp/src/crd.yaml" "$bad" "$tmp/bad/crd.yaml" 2>&1 >/dev/null) || rc=$?
if [[ $rc -eq 1 && $(wc -l <<<"$out") -eq 1 && "$out" == *"sha256 mismatch"*"$good"*"$HINT" \
      && -z "$(leftovers "$tmp/bad")" ]]; then
  pass "fetch-crds.sh: wrong sha256 -> exit 1, one line naming both sums and what to set, nothing left behind"
else
  fail "fetch-crds.sh: wrong sha256 (exit $rc, left: $(leftovers "$tmp/bad"))"; echo "$out" | indent
fi

# An existing DEST with another content is never replaced by a mismatching download.
mkdir -p "$tmp/keep" && echo old >"$tmp/keep/crd.yaml"
rc=0; bash "$FETCH" "file://$tmp/src/crd.yaml" "$bad" "$tmp/keep/crd.yaml" >/dev/null 2>&1 || rc=$?
if [[ $rc -eq 1 && "$(cat "$tmp/keep/crd.yaml")" == old && "$(leftovers "$tmp/keep")" == "crd.yaml " ]]; then
  pass "fetch-crds.sh: a mismatching download leaves an existing DEST untouched"
else
  fail "fetch-crds.sh: a mismatching download leaves an existing DEST untouched (exit $rc)"
fi

rc=0; out=$(bash "$FETCH" --hint "$HINT" "file://$tmp/src/no-such-file.yaml" "$good" "$tmp/gone/crd.yaml" 2>&1 >/dev/null) || rc=$?
if [[ $rc -eq 1 && $(wc -l <<<"$out") -eq 1 && "$out" == "fetch-crds: cannot download"*"$HINT" \
      && -z "$(leftovers "$tmp/gone")" ]]; then
  pass "fetch-crds.sh: unreachable URL -> exit 1, one line saying what to set, nothing left behind"
else
  fail "fetch-crds.sh: unreachable URL (exit $rc)"; echo "$out" | indent
fi

rc=0; out=$(bash "$FETCH" --hint "$HINT" "https://127.0.0.1:9/crd.yaml" "$good" "$tmp/refused/crd.yaml" 2>&1 >/dev/null) || rc=$?
if [[ $rc -eq 1 && $(wc -l <<<"$out") -eq 1 && "$out" == "fetch-crds: cannot download"*"$HINT" \
      && -z "$(leftovers "$tmp/refused")" ]]; then
  pass "fetch-crds.sh: connection refused (https://127.0.0.1:9/) -> exit 1, one line, nothing left behind"
else
  fail "fetch-crds.sh: connection refused (exit $rc)"; echo "$out" | indent
fi

# The Istio pin: what --istio-networking extracts from the shared file must be the pinned bytes.
ISTIO_PIN=$(sed -n 's/^ISTIO_CRDS_SHA256[[:space:]]*:\{0,1\}=[[:space:]]*//p' "$ROOT/Makefile" | head -n1)
SHARED_ISTIO="$ROOT/../shared/istio/crds.yaml"
if [[ -f "$SHARED_ISTIO" ]]; then
  header_free=$(tail -n +3 "$SHARED_ISTIO" | sha256sum | cut -d' ' -f1)
  if out=$(bash "$FETCH" --istio-networking "file://$SHARED_ISTIO" "$ISTIO_PIN" "$tmp/istio/crds.yaml" 2>&1) \
      && [[ "$header_free" == "$ISTIO_PIN" ]] && cmp -s <(tail -n +3 "$SHARED_ISTIO") "$tmp/istio/crds.yaml"; then
    pass "fetch-crds.sh --istio-networking on ../shared/istio/crds.yaml reproduces ISTIO_CRDS_SHA256 (= the shared file minus its header)"
  else
    fail "fetch-crds.sh --istio-networking on ../shared/istio/crds.yaml: pin $ISTIO_PIN, shared minus header $header_free"
    echo "$out" | indent
  fi
  # The extraction really selects: an upstream-like file with more CRDs and a leading comment.
  {
    echo "# DO NOT EDIT - Generated"
    printf 'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: envoyfilters.networking.istio.io\nspec: {}\n'
    tail -n +3 "$SHARED_ISTIO"
    printf -- '---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: wasmplugins.extensions.istio.io\nspec: {}\n'
  } >"$tmp/src/istio-all.yaml"
  if out=$(bash "$FETCH" --istio-networking "file://$tmp/src/istio-all.yaml" "$ISTIO_PIN" "$tmp/istio-all/crds.yaml" 2>&1); then
    pass "fetch-crds.sh --istio-networking keeps exactly the three networking CRDs of a larger file"
  else
    fail "fetch-crds.sh --istio-networking keeps exactly the three networking CRDs of a larger file"; echo "$out" | indent
  fi
else
  echo "skip the Istio pin check: no ../shared/istio/crds.yaml beside this checkout"
fi

echo "check-examples: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
