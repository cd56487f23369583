//! Checks canary-gate's typed Istio VirtualService against Istio's own CRD schema
//! (`../shared/istio/crds.yaml`, read at test time) with a small structural validator.

use canary_gate::istio::VirtualService;
use canary_gate::rollout::routes::{created_virtual_service, split_http};
use serde::Deserialize;
use serde_json::{json, Value};

const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/istio/crds.yaml");
const CRD_NAME: &str = "virtualservices.networking.istio.io";

/// The VirtualService CRD document as JSON.
fn crd() -> Value {
    let text = std::fs::read_to_string(CRDS).unwrap_or_else(|e| panic!("reading {CRDS}: {e}"));
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).expect("YAML document");
        if v["kind"] == "CustomResourceDefinition" && v["metadata"]["name"] == CRD_NAME {
            return v;
        }
    }
    panic!("{CRD_NAME} not found in {CRDS}");
}

fn v1_version(crd: &Value) -> &Value {
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == "v1")
        .expect("version v1")
}

/// `schema.openAPIV3Schema` of the v1 version.
fn schema() -> Value {
    v1_version(&crd())["schema"]["openAPIV3Schema"].clone()
}

/// Structural check of `v` against schema node `s`; every problem is pushed to `errs`.
fn validate(s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if v.is_null() && s["nullable"] == true {
        return;
    }
    let ok = match s["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(t) => {
            errs.push(format!("{path}: unsupported schema type {t}"));
            return;
        }
    };
    if !ok {
        errs.push(format!("{path}: expected {}, got {v}", s["type"]));
        return;
    }
    if let Some(n) = v.as_i64().or_else(|| v.as_u64().map(|u| u as i64)) {
        let (lo, hi) = if s["format"] == "int32" {
            (i64::from(i32::MIN), i64::from(i32::MAX))
        } else {
            (i64::MIN, i64::MAX)
        };
        let min = s["minimum"].as_i64().unwrap_or(lo).max(lo);
        let max = s["maximum"].as_i64().unwrap_or(hi).min(hi);
        if n < min || n > max || (v.is_u64() && v.as_i64().is_none() && s["format"] == "int32") {
            errs.push(format!("{path}: {n} outside [{min}, {max}]"));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{i}]"), errs);
            }
        }
    }
    let Some(obj) = v.as_object() else { return };
    for req in s["required"].as_array().into_iter().flatten() {
        let req = req.as_str().unwrap_or_default();
        if !obj.contains_key(req) {
            errs.push(format!("{path}: missing required field {req}"));
        }
    }
    let props = s["properties"].as_object();
    let additional = s.get("additionalProperties");
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    for (k, child) in obj {
        let child_path = format!("{path}.{k}");
        match (props.and_then(|p| p.get(k)), additional) {
            (Some(ps), _) => validate(ps, child, &child_path, errs),
            (None, Some(Value::Object(a))) => {
                validate(&Value::Object(a.clone()), child, &child_path, errs)
            }
            (None, Some(Value::Bool(true))) => {}
            _ if preserve => {}
            _ => errs.push(format!("{child_path}: unknown field")),
        }
    }
}

fn errors(spec_schema: &Value, spec: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    validate(spec_schema, spec, "spec", &mut errs);
    errs
}

/// Validates a serialized VirtualService: `spec` strictly, the rest loosely.
fn assert_valid_vs(schema: &Value, vs: &Value) {
    assert_eq!(vs["apiVersion"], "networking.istio.io/v1", "{vs}");
    assert_eq!(vs["kind"], "VirtualService", "{vs}");
    let meta = &vs["metadata"];
    assert!(meta["name"].is_string(), "metadata.name: {meta}");
    for key in ["labels", "annotations"] {
        if let Some(m) = meta.get(key) {
            let m = m
                .as_object()
                .unwrap_or_else(|| panic!("metadata.{key}: {m}"));
            assert!(m.values().all(Value::is_string), "metadata.{key}: {m:?}");
        }
    }
    let errs = errors(&schema["properties"]["spec"], &vs["spec"]);
    assert!(errs.is_empty(), "schema errors: {errs:#?}\nin {vs:#}");
}

fn user_vs_json() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "hosts": ["podinfo", "shop.example.com"],
            "gateways": ["mesh", "public"],
            "exportTo": ["."],
            "http": [
                {
                    "name": "api",
                    "match": [{"uri": {"prefix": "/api"}}],
                    "retries": {"attempts": 3, "perTryTimeout": "500ms"},
                    "timeout": "2s",
                    "headers": {"request": {"set": {"x-shop": "api"}}},
                    "fault": {"delay": {"percentage": {"value": 0.5}, "fixedDelay": "100ms"}},
                    "route": [{
                        "destination": {"host": "podinfo", "subset": "v1", "port": {"number": 9898}},
                        "headers": {"response": {"add": {"x-route": "podinfo"}}}
                    }]
                },
                {
                    "name": "split",
                    "route": [
                        {"destination": {"host": "podinfo.shop.svc.cluster.local"}, "weight": 80},
                        {"destination": {"host": "legacy"}, "weight": 20}
                    ]
                },
                {
                    "name": "other",
                    "route": [{"destination": {"host": "cart"}}]
                }
            ]
        }
    })
}

#[test]
fn created_virtual_service_matches_istio_schema() {
    let schema = schema();
    for pct in [0, 30, 100] {
        let vs = created_virtual_service("shop", "podinfo", "podinfo", pct);
        let v = serde_json::to_value(&vs).expect("serialize");
        assert_valid_vs(&schema, &v);
        assert_eq!(v["metadata"]["namespace"], "shop");
    }
}

#[test]
fn split_user_virtual_service_matches_istio_schema_and_keeps_fields() {
    let schema = schema();
    let input = user_vs_json();
    // The user's own object is valid to begin with.
    assert_valid_vs(&schema, &input);
    let vs: VirtualService = serde_json::from_value(input.clone()).expect("deserialize");
    // Unsplit round trip is lossless.
    assert_eq!(serde_json::to_value(&vs).unwrap(), input);

    for pct in [0, 10, 50, 100] {
        let mut split = vs.clone();
        split.spec.http = split_http(&vs.spec.http, "podinfo", "shop", pct);
        let out = serde_json::to_value(&split).expect("serialize");
        assert_valid_vs(&schema, &out);

        let spec = &out["spec"];
        assert_eq!(spec["hosts"], input["spec"]["hosts"]);
        assert_eq!(spec["gateways"], input["spec"]["gateways"]);
        assert_eq!(spec["exportTo"], json!(["."]));
        let api = &spec["http"][0];
        let orig = &input["spec"]["http"][0];
        for key in ["name", "match", "retries", "timeout", "headers", "fault"] {
            assert_eq!(api[key], orig[key], "pct {pct}: http[0].{key} lost");
        }
        for d in api["route"].as_array().unwrap() {
            assert_eq!(d["destination"]["port"]["number"], 9898, "pct {pct}");
            assert_eq!(d["headers"], orig["route"][0]["headers"], "pct {pct}");
        }
        assert_eq!(spec["http"][2], input["spec"]["http"][2], "pct {pct}");
        for route in spec["http"].as_array().unwrap() {
            let ws: Vec<i64> = route["route"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|d| d["weight"].as_i64())
                .collect();
            if !ws.is_empty() {
                assert_eq!(ws.iter().sum::<i64>(), 100, "pct {pct}: {route}");
            }
        }
    }
}

#[test]
fn validator_rejects_wrong_type_and_unknown_field() {
    let spec_schema = schema()["properties"]["spec"].clone();
    let good =
        json!({"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]});
    assert!(errors(&spec_schema, &good).is_empty());

    let wrong_type = json!({"hosts": "podinfo"});
    let errs = errors(&spec_schema, &wrong_type);
    assert!(errs.iter().any(|e| e.starts_with("spec.hosts")), "{errs:?}");

    let unknown = json!({"hosts": ["podinfo"], "htp": []});
    let errs = errors(&spec_schema, &unknown);
    assert!(
        errs.iter().any(|e| e.contains("spec.htp: unknown field")),
        "{errs:?}"
    );

    let nested = json!({"http": [{"route": [{"destination": {}, "weight": 1_u64 << 40}]}]});
    let errs = errors(&spec_schema, &nested);
    assert!(
        errs.iter()
            .any(|e| e.contains("missing required field host")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.contains("weight")), "{errs:?}");
}

#[test]
fn crd_identity_matches_kube_resource() {
    use kube::Resource;
    let crd = crd();
    assert_eq!(crd["spec"]["group"], VirtualService::group(&()).as_ref());
    assert_eq!(
        crd["spec"]["names"]["kind"],
        VirtualService::kind(&()).as_ref()
    );
    let version = v1_version(&crd);
    assert_eq!(version["name"], VirtualService::version(&()).as_ref());
    assert_eq!(version["served"], true);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(
        crd["spec"]["names"]["plural"],
        VirtualService::plural(&()).as_ref()
    );
}
