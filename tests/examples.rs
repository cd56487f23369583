//! The demo application in `examples/podinfo/` (plain YAML manifests, issue #12) checked
//! against what it will meet on a cluster:
//!
//! - the Istio `Gateway` and `VirtualService` against Istio's CRD schemas (the shared
//!   validator in `common::schema`), and the VirtualService against canary-gate's own route
//!   code: it is adopted (not duplicated) and split correctly at every step;
//! - the Deployment through the real webhook over TLS (`canary-gate serve` in-process, with
//!   the policy and analysis flags the example `values.yaml` gives the chart), as the UPDATE
//!   AdmissionReviews of `kubectl set image ... 6.0.1` (the envelope of a captured review);
//! - the load-test Job's arguments with the real clap parser, and the example chart values
//!   against the chart's own `values.yaml`.
//!
//! The built-in kinds are validated against the Kubernetes schemas by
//! `scripts/check-examples.sh` (kubernetes-validate), which `make examples` runs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use canary_gate::annotations as ann;
use canary_gate::cli::{Args, Command};
use canary_gate::istio::VirtualService;
use canary_gate::rollout::routes::{
    canary_share, hosts_service, is_created_by_us, routes_to, split_http, unsplit_http,
};
use canary_gate::settings::{Defaults, Settings};
use clap::Parser;
use common::crds::istio_crds_path;
use common::schema::{crd, crd_version, object_errors, open_api_schema};
use common::{base64_decode, TestServer};
use serde::Deserialize;
use serde_json::{json, Value};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/podinfo");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/canary-gate");
/// The captured review whose envelope the example's reviews reuse: `kubectl set image` on a
/// managed Deployment, the same command as step 4 of the walk-through.
const ENVELOPE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/admission/24-managed-update-image-set-image.mutate.json"
);
const MUTATE: &str = "/mutate?timeout=10s";
const VALIDATE: &str = "/validate?timeout=10s";
const OLD_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

// ---------------------------------------------------------------------------------------------
// Reading the example

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// All documents of `examples/podinfo/<file>`.
fn example(file: &str) -> Vec<Value> {
    yaml_docs(&format!("{EXAMPLE}/{file}"))
}

/// The one document of `kind` in `examples/podinfo/<file>`.
fn example_one(file: &str, kind: &str) -> Value {
    let found: Vec<Value> = example(file)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "{file}: expected one {kind}");
    found.into_iter().next().expect("one document")
}

fn deployment() -> Value {
    example_one("deployment.yaml", "Deployment")
}

fn service() -> Value {
    example_one("service.yaml", "Service")
}

fn virtual_service() -> Value {
    example_one("gateway.yaml", "VirtualService")
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn name_ns(obj: &Value) -> (String, String) {
    (
        obj["metadata"]["name"].as_str().unwrap_or_default().into(),
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .into(),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Istio objects: CRD schemas, and canary-gate's route code

#[test]
fn gateway_and_virtual_service_match_the_istio_crd_schemas() {
    let path = istio_crds_path();
    let docs = example("gateway.yaml");
    assert_eq!(
        docs.len(),
        2,
        "gateway.yaml: a Gateway and a VirtualService"
    );
    for doc in &docs {
        let kind = doc["kind"].as_str().expect("kind");
        let plural = match kind {
            "Gateway" => "gateways",
            "VirtualService" => "virtualservices",
            other => panic!("gateway.yaml: unexpected kind {other}"),
        };
        let crd = crd(&path, &format!("{plural}.networking.istio.io"));
        let version = crd_version(&crd, "v1");
        assert_eq!(version["served"], true, "{plural}: v1 not served");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let errs = object_errors(
            &open_api_schema(&crd, "v1"),
            doc,
            "networking.istio.io/v1",
            kind,
        );
        assert!(
            errs.is_empty(),
            "{kind}: schema errors {errs:#?}\nin {doc:#}"
        );
        assert_eq!(doc["metadata"]["namespace"], "shop", "{kind} namespace");
    }
}

#[test]
fn the_virtual_service_is_bound_to_the_gateway_and_the_mesh() {
    let gw = example_one("gateway.yaml", "Gateway");
    let vs = virtual_service();
    assert_eq!(
        str_map(&gw["spec"]["selector"]),
        BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())])
    );
    let servers = gw["spec"]["servers"].as_array().expect("servers");
    let gw_hosts: Vec<String> = servers.iter().flat_map(|s| strings(&s["hosts"])).collect();
    assert!(gw_hosts.contains(&"podinfo.example.com".to_string()));
    assert!(servers
        .iter()
        .any(|s| s["port"]["number"] == 80 && s["port"]["protocol"] == "HTTP"));

    let gateways = strings(&vs["spec"]["gateways"]);
    let gw_name = gw["metadata"]["name"].as_str().expect("Gateway name");
    assert!(
        gateways.iter().any(|g| g == gw_name),
        "VirtualService not bound to Gateway {gw_name}: {gateways:?}"
    );
    assert!(
        gateways.iter().any(|g| g == "mesh"),
        "VirtualService not bound to mesh: {gateways:?}"
    );
    let vs_hosts = strings(&vs["spec"]["hosts"]);
    for h in &gw_hosts {
        assert!(vs_hosts.contains(h), "Gateway host {h} not in {vs_hosts:?}");
    }
}

#[test]
fn canary_gate_adopts_and_splits_the_example_virtual_service() {
    let schema = open_api_schema(
        &crd(&istio_crds_path(), "virtualservices.networking.istio.io"),
        "v1",
    );
    let (svc, ns) = name_ns(&service());
    let port = service()["spec"]["ports"][0]["port"].clone();
    let input = virtual_service();
    let vs: VirtualService = serde_json::from_value(input.clone()).expect("typed VirtualService");
    assert_eq!(
        serde_json::to_value(&vs).expect("serialize"),
        input,
        "the typed VirtualService must carry every field of the example through"
    );
    // What the analyzer's set_routes looks at: the user's own object routes to the Service
    // (so it is adopted and split) and hosts the Service name (so no second VirtualService is
    // created for in-mesh traffic).
    assert!(!is_created_by_us(&vs));
    assert!(routes_to(&vs, &svc, &ns), "does not route to {svc}.{ns}");
    assert!(hosts_service(&vs, &svc, &ns), "does not host {svc}.{ns}");

    let orig_route = &input["spec"]["http"][0];
    for pct in [0, 10, 20, 30, 40, 50, 100] {
        let mut split = vs.clone();
        split.spec.http = split_http(&vs.spec.http, &svc, &ns, pct);
        let out = serde_json::to_value(&split).expect("serialize");
        let errs = object_errors(&schema, &out, "networking.istio.io/v1", "VirtualService");
        assert!(
            errs.is_empty(),
            "{pct} %: schema errors {errs:#?}\nin {out:#}"
        );

        let spec = &out["spec"];
        assert_eq!(spec["hosts"], input["spec"]["hosts"], "{pct} %: hosts");
        assert_eq!(
            spec["gateways"], input["spec"]["gateways"],
            "{pct} %: gateways"
        );
        let route = &spec["http"][0];
        for key in ["name", "match", "retries", "timeout"] {
            assert_eq!(route[key], orig_route[key], "{pct} %: http[0].{key} lost");
        }
        let dests: Vec<(String, i64, Value)> = route["route"]
            .as_array()
            .expect("route")
            .iter()
            .map(|d| {
                (
                    d["destination"]["host"].as_str().unwrap_or_default().into(),
                    d["weight"].as_i64().unwrap_or(-1),
                    d["destination"]["port"]["number"].clone(),
                )
            })
            .collect();
        assert_eq!(
            dests,
            vec![
                (
                    "podinfo.shop.svc.cluster.local".to_string(),
                    100 - i64::from(pct),
                    port.clone()
                ),
                ("podinfo-canary".to_string(), i64::from(pct), port.clone()),
            ],
            "{pct} %"
        );
        assert_eq!(canary_share(&split, &svc), Some(pct as i32));
        // The fallback restore (used only when the saved original is unreadable) also gives
        // back exactly the user's routes.
        assert_eq!(unsplit_http(&split.spec.http), vs.spec.http, "{pct} %");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The Deployment: its settings, and the real webhook over TLS

#[test]
fn the_deployment_carries_the_reference_analysis() {
    let ns = example_one("namespace.yaml", "Namespace");
    let labels = str_map(&ns["metadata"]["labels"]);
    assert_eq!(labels.get(ann::ENABLED).map(String::as_str), Some("true"));
    assert_eq!(
        labels.get("istio-injection").map(String::as_str),
        Some("enabled")
    );

    let dep = deployment();
    assert_eq!(
        name_ns(&dep),
        (
            "podinfo".into(),
            ns["metadata"]["name"].as_str().unwrap_or_default().into()
        )
    );
    let annotations = str_map(&dep["metadata"]["annotations"]);
    for key in annotations.keys().filter(|k| k.starts_with(ann::PREFIX)) {
        assert!(
            ann::SETTINGS.contains(&key.as_str()),
            "{key} is not a settings annotation"
        );
    }
    // Parsed with the chart's defaults cleared to something else, so each value is proven to
    // come from the annotation.
    let other = Defaults {
        interval: Duration::from_secs(7),
        step_weight: 3,
        max_weight: 9,
        min_success_rate: 90.0,
        max_p99_ms: 1.0,
        ..Defaults::default()
    };
    let s = Settings::from_annotations(&other, &annotations).expect("valid annotations");
    assert_eq!(s.interval, Duration::from_secs(30));
    assert_eq!((s.step_weight, s.max_weight), (10, 50));
    assert_eq!(s.min_success_rate, 99.0);
    assert_eq!(s.max_p99_ms, 500.0);

    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["name"], "podinfod",
        "the container `kubectl set image` names"
    );
    assert_eq!(c["image"], OLD_IMAGE);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let selector = str_map(&dep["spec"]["selector"]["matchLabels"]);
    assert_eq!(str_map(&service()["spec"]["selector"]), selector);
}

/// The `serve` flags the chart derives from the example values (the chart passes them as the
/// same settings' `CANARY_GATE_*` environment variables): `policies.<x>` →
/// `--policy-<x>`, `analysis.<x>` → `--default-<x>`, `manageByDefault` →
/// `--manage-by-default`.
fn serve_flags_of_example_values() -> Vec<String> {
    fn kebab(camel: &str) -> String {
        let mut out = String::new();
        for ch in camel.chars() {
            if ch.is_ascii_uppercase() {
                out.push('-');
                out.push(ch.to_ascii_lowercase());
            } else {
                out.push(ch);
            }
        }
        out
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    let values = example_values();
    let mut flags = Vec::new();
    for (section, prefix) in [("policies", "--policy-"), ("analysis", "--default-")] {
        for (k, v) in values[section].as_object().into_iter().flatten() {
            flags.push(format!("{prefix}{}={}", kebab(k), scalar(v)));
        }
    }
    if let Some(v) = values.get("manageByDefault") {
        flags.push(format!("--manage-by-default={}", scalar(v)));
    }
    flags
}

/// An AdmissionReview for the example Deployment: the envelope (uid, kind, resource, user,
/// options, ...) and the server-set metadata of a captured `kubectl set image` review, the
/// objects from the example.
fn review(object: &Value, old_object: &Value) -> Value {
    let mut review: Value = serde_json::from_slice(
        &std::fs::read(ENVELOPE).unwrap_or_else(|e| panic!("{ENVELOPE}: {e}")),
    )
    .expect("captured review");
    let captured = review["request"]["object"]["metadata"].clone();
    let with_server_fields = |obj: &Value| {
        let mut obj = obj.clone();
        for key in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
            obj["metadata"][key] = captured[key].clone();
        }
        obj
    };
    let request = &mut review["request"];
    assert_eq!(request["operation"], "UPDATE");
    request["name"] = object["metadata"]["name"].clone();
    request["namespace"] = object["metadata"]["namespace"].clone();
    request["object"] = with_server_fields(object);
    request["oldObject"] = with_server_fields(old_object);
    review
}

fn with_image(dep: &Value, image: &str) -> Value {
    let mut dep = dep.clone();
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    dep
}

async fn answer(server: &TestServer, path: &str, review: &Value) -> Value {
    let body = serde_json::to_vec(review).expect("serialize review");
    let response = server.post(path, body).await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    let answer = response.json().expect("JSON answer");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    answer["response"].clone()
}

fn warnings(answer: &Value) -> Vec<String> {
    strings(&answer["warnings"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_admits_the_example_and_holds_its_update_as_a_canary() {
    let flags = serve_flags_of_example_values();
    assert!(
        flags.contains(&"--policy-require-resource-requests=true".to_string()),
        "{flags:?}"
    );
    let server = TestServer::start_with_flags(&flags).await;
    let old = deployment();
    let new = with_image(&old, NEW_IMAGE);

    // /validate, as the apiserver calls it for `kubectl set image` (before any mutation).
    let v = answer(&server, VALIDATE, &review(&new, &old)).await;
    assert_eq!(v["allowed"], true, "/validate denied the example: {v}");

    // /mutate: allowed, held with spec.paused, and kubectl prints the plan.
    let m = answer(&server, MUTATE, &review(&new, &old)).await;
    assert_eq!(m["allowed"], true, "/mutate denied the example: {m}");
    assert_eq!(m["patchType"], "JSONPatch", "{m}");
    let raw = base64_decode(m["patch"].as_str().expect("patch is base64")).expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("a JSON Patch");
    let request = review(&new, &old);
    let mut patched = request["request"]["object"].clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the object");
    assert_eq!(
        patched["spec"]["paused"], true,
        "spec.paused after the patch"
    );
    assert_eq!(patched["metadata"]["annotations"][ann::PHASE], "Pending");
    assert_eq!(
        patched["spec"]["template"], request["request"]["object"]["spec"]["template"],
        "the patch must not touch the template (no drift for kubectl / GitOps)"
    );
    let ws = warnings(&m);
    let plan = "podinfo: canary 6.0.0 → 6.0.1, 10 % steps every 30s to 50 %, gates: success ≥ 99 %, p99 ≤ 500 ms; decisive evidence rolls back at any moment";
    assert!(
        ws.iter().any(|w| w == plan),
        "warning {plan:?} not in {ws:?}"
    );

    // /validate again on what the mutation produced (the apiserver validates after mutating).
    let v = answer(&server, VALIDATE, &review(&patched, &old)).await;
    assert_eq!(v["allowed"], true, "/validate denied the held update: {v}");

    // Controls: the policies the example values switch on really run on this object.
    let mut no_probe = new.clone();
    no_probe["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("readinessProbe");
    let v = answer(&server, VALIDATE, &review(&no_probe, &old)).await;
    assert_eq!(
        v["allowed"], false,
        "a template without readinessProbe was allowed"
    );
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("readinessProbe"),
        "{v}"
    );
    let mut no_requests = new.clone();
    no_requests["spec"]["template"]["spec"]["containers"][0]["resources"]
        .as_object_mut()
        .expect("resources")
        .remove("requests");
    let v = answer(&server, VALIDATE, &review(&no_requests, &old)).await;
    assert_eq!(
        v["allowed"], false,
        "a template without requests was allowed"
    );
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("resources.requests"),
        "{v}"
    );

    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Load test and chart values

#[test]
fn the_loadtest_job_runs_a_valid_canary_gate_loadtest_against_the_service() {
    let job = example_one("loadtest.yaml", "Job");
    let (_, job_ns) = name_ns(&job);
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let chart: Value = yaml_docs(&format!("{CHART}/Chart.yaml")).remove(0);
    let chart_values: Value = yaml_docs(&format!("{CHART}/values.yaml")).remove(0);
    assert_eq!(
        c["image"],
        format!(
            "{}:{}",
            chart_values["image"]["repository"]
                .as_str()
                .unwrap_or_default(),
            chart["appVersion"].as_str().unwrap_or_default()
        ),
        "the Job runs the chart's image at its appVersion"
    );

    let args = strings(&c["args"]);
    let parsed = Args::try_parse_from(std::iter::once("canary-gate".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("loadtest.yaml args do not parse: {e}"));
    let Command::Loadtest(lt) = parsed.command else {
        panic!("loadtest.yaml args are not `canary-gate loadtest`");
    };
    let urls = lt.validate().expect("loadtest arguments are valid");
    assert!(urls.len() >= 3, "a few product paths: {urls:?}");
    assert!(
        lt.rate >= 20.0,
        "rate {} (≥ 60 canary requests per 30 s at 10 %)",
        lt.rate
    );
    let deadline = job["spec"]["activeDeadlineSeconds"].as_u64().unwrap_or(0);
    assert!(
        lt.duration > Duration::ZERO && lt.duration.as_secs() < deadline,
        "duration {:?} must end before activeDeadlineSeconds {deadline}",
        lt.duration
    );

    // Every URL reaches the example Service on its port, from inside the mesh.
    let svc = service();
    let (svc_name, svc_ns) = name_ns(&svc);
    let port = svc["spec"]["ports"][0]["port"]
        .as_u64()
        .expect("Service port");
    for url in &urls {
        let host = url.host_str().unwrap_or_default();
        assert!(
            canary_gate::rollout::routes::is_service_host(host, &svc_name, &svc_ns),
            "{url} does not address Service {svc_name}.{svc_ns}"
        );
        assert_eq!(url.port_or_known_default(), Some(port as u16), "{url}");
    }
    assert_eq!(
        job_ns, svc_ns,
        "the Job runs in the app's (injected) namespace"
    );

    // Never selected by the app's Service (or mistaken for podinfo pods).
    let pod_labels = str_map(&job["spec"]["template"]["metadata"]["labels"]);
    let selector = str_map(&svc["spec"]["selector"]);
    assert!(
        !selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "Job pods match the podinfo Service selector"
    );
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].is_string(), "requests.{r}");
    }

    // The second container sends what external users send: through the ingress gateway, to
    // a host the Gateway serves and the VirtualService routes.
    let ext = &pod["containers"][1];
    assert_eq!(ext["name"], "external");
    assert_eq!(ext["image"], c["image"]);
    assert_eq!(ext["securityContext"]["readOnlyRootFilesystem"], true);
    let parsed = Args::try_parse_from(
        std::iter::once("canary-gate".to_string()).chain(strings(&ext["args"])),
    )
    .unwrap_or_else(|e| panic!("external load-test args do not parse: {e}"));
    let Command::Loadtest(ext_lt) = parsed.command else {
        panic!("the external container does not run `canary-gate loadtest`");
    };
    let ext_urls = ext_lt
        .validate()
        .expect("external loadtest arguments are valid");
    let host = ext_lt.host.clone().expect("--host names the external host");
    let gateway_hosts =
        strings(&example_one("gateway.yaml", "Gateway")["spec"]["servers"][0]["hosts"]);
    assert!(
        gateway_hosts.contains(&host),
        "{host} not served by the Gateway: {gateway_hosts:?}"
    );
    assert!(
        strings(&virtual_service()["spec"]["hosts"]).contains(&host),
        "{host} not routed by the VirtualService"
    );
    for url in &ext_urls {
        assert_eq!(
            url.host_str(),
            Some("istio-ingressgateway.istio-system"),
            "{url} does not go through the ingress gateway"
        );
    }
}

fn example_values() -> Value {
    yaml_docs(&format!("{EXAMPLE}/values.yaml")).remove(0)
}

/// Every key path of `example` exists in `chart` with the same shape. Below a chart value
/// that is an empty map (free-form: labels, annotations, issuerRef, ...) anything goes.
fn missing_keys(example: &Value, chart: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = example.as_object() else {
        return;
    };
    let Some(chart_map) = chart.as_object() else {
        out.push(format!(
            "{path}: a map here, but the chart's value is {chart}"
        ));
        return;
    };
    if chart_map.is_empty() {
        return;
    }
    for (k, v) in map {
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match chart_map.get(k) {
            None => out.push(format!("{child}: not in charts/canary-gate/values.yaml")),
            Some(c) if v.is_object() => missing_keys(v, c, &child, out),
            Some(c) if c.is_object() && !c.as_object().is_some_and(|m| m.is_empty()) => {
                out.push(format!("{child}: a scalar here, a map in the chart"))
            }
            Some(_) => {}
        }
    }
}

#[test]
fn the_example_values_use_only_keys_of_the_chart() {
    let values = example_values();
    let chart: Value = yaml_docs(&format!("{CHART}/values.yaml")).remove(0);
    let mut missing = Vec::new();
    missing_keys(&values, &chart, "", &mut missing);
    assert!(missing.is_empty(), "{missing:#?}");
    assert_eq!(
        values["prometheus"]["url"],
        "http://prometheus.monitoring:9090"
    );

    // The checker itself: a typo and a wrong shape are reported.
    let mut found = Vec::new();
    missing_keys(
        &json!({"analysis": {"intreval": "30s"}, "prometheus": "x"}),
        &chart,
        "",
        &mut found,
    );
    assert_eq!(found.len(), 2, "{found:?}");
}
