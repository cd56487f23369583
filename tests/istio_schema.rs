//! Checks canary-gate's typed Istio VirtualService against Istio's own CRD schema (found by
//! `common::crds::istio_crds_path()`: `ISTIO_CRDS`, `../shared/istio/crds.yaml` or what
//! `make crds` fetched) with the structural validator in `common::schema`.

mod common;

use canary_gate::istio::VirtualService;
use canary_gate::rollout::routes::{created_virtual_service, split_http};
use common::crds::istio_crds_path;
use common::schema::{crd_version, object_errors, open_api_schema};
use serde_json::{json, Value};

const CRD_NAME: &str = "virtualservices.networking.istio.io";

/// The VirtualService CRD document as JSON.
fn crd() -> Value {
    common::schema::crd(&istio_crds_path(), CRD_NAME)
}

/// `schema.openAPIV3Schema` of the v1 version.
fn schema() -> Value {
    open_api_schema(&crd(), "v1")
}

fn errors(spec_schema: &Value, spec: &Value) -> Vec<String> {
    common::schema::errors(spec_schema, spec, "spec")
}

/// Validates a serialized VirtualService: `spec` strictly, the rest loosely.
fn assert_valid_vs(schema: &Value, vs: &Value) {
    let errs = object_errors(schema, vs, "networking.istio.io/v1", "VirtualService");
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

    let protocol = json!({"type": "string", "enum": ["HTTP", "HTTPS"]});
    assert!(common::schema::errors(&protocol, &json!("HTTP"), "p").is_empty());
    let errs = common::schema::errors(&protocol, &json!("HTPP"), "p");
    assert!(errs.iter().any(|e| e.contains("is not one of")), "{errs:?}");
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
    let version = crd_version(&crd, "v1");
    assert_eq!(version["name"], VirtualService::version(&()).as_ref());
    assert_eq!(version["served"], true);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(
        crd["spec"]["names"]["plural"],
        VirtualService::plural(&()).as_ref()
    );
}

#[test]
fn crd_locations_resolve_env_then_shared_then_fetched() {
    use common::crds::{resolve, ISTIO_CRDS_MISSING};
    use std::path::Path;
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env.yaml");
    let shared = dir.path().join("shared.yaml");
    let fetched = dir.path().join("fetched.yaml");
    let candidates = [shared.clone(), fetched.clone()];
    let run = |env: Option<&Path>| {
        resolve(
            "ISTIO_CRDS",
            env.map(Path::to_path_buf),
            &candidates,
            Path::is_file,
            ISTIO_CRDS_MISSING,
        )
    };

    // Nothing anywhere: the one line that says what to set.
    let err = run(None).expect_err("nothing to find");
    assert_eq!(err, ISTIO_CRDS_MISSING);
    assert!(
        !err.contains('\n') && err.contains("set ISTIO_CRDS="),
        "{err}"
    );
    // A variable naming nothing is an error, not a silent fallback.
    let err = run(Some(&env_file)).expect_err("env names a missing file");
    assert!(
        err.starts_with("ISTIO_CRDS=") && err.contains("set ISTIO_CRDS="),
        "{err}"
    );

    std::fs::write(&fetched, "x").expect("write");
    assert_eq!(
        run(None),
        Ok(fetched.clone()),
        "the fetched copy as the last resort"
    );
    std::fs::write(&shared, "x").expect("write");
    assert_eq!(
        run(None),
        Ok(shared.clone()),
        "../shared before the fetched copy"
    );
    std::fs::write(&env_file, "x").expect("write");
    assert_eq!(
        run(Some(&env_file)),
        Ok(env_file.clone()),
        "the variable first"
    );
}
