//! Checks canary-gate's typed Gateway API HTTPRoute against the Gateway API's own CRD schema
//! (v1.6.1 standard channel, found by `common::crds::gateway_api_crds_dir()`:
//! `GATEWAY_API_CRDS`, `../shared/gateway-api/` or what `make crds` fetched) with the
//! structural validator in `common::schema`: the user's route, the split route at several
//! weights, the route canary-gate creates, and a status as an implementation writes it.

mod common;

use canary_gate::gateway_api::HTTPRoute;
use canary_gate::rollout::routes::gateway::{created_http_route, split_rules, unresolved_canary};
use common::crds::gateway_api_crds_dir;
use common::schema::{crd_version, object_errors, open_api_schema};
use serde_json::{json, Value};

const CRD_NAME: &str = "httproutes.gateway.networking.k8s.io";

fn crd() -> Value {
    common::schema::crd(&gateway_api_crds_dir().join("httproutes.yaml"), CRD_NAME)
}

fn schema() -> Value {
    open_api_schema(&crd(), "v1")
}

/// `spec` strictly; `status` too when present; and the item limits the validator does not
/// check (CEL and `maxItems` are the apiserver's) for the lists canary-gate makes longer.
fn assert_valid(schema: &Value, route: &Value) {
    let mut errs = object_errors(schema, route, "gateway.networking.k8s.io/v1", "HTTPRoute");
    if let Some(status) = route.get("status") {
        errs.extend(common::schema::errors(
            &schema["properties"]["status"],
            status,
            "status",
        ));
    }
    let rules_schema = &schema["properties"]["spec"]["properties"]["rules"];
    let refs_max = rules_schema["items"]["properties"]["backendRefs"]["maxItems"]
        .as_u64()
        .expect("backendRefs maxItems");
    for (i, rule) in route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let refs = rule["backendRefs"].as_array().cloned().unwrap_or_default();
        if refs.len() as u64 > refs_max {
            errs.push(format!("spec.rules[{i}].backendRefs: more than {refs_max}"));
        }
        for (j, b) in refs.iter().enumerate() {
            // CEL: "Must have port for Service reference".
            let service = b.get("kind").is_none_or(|k| k == "Service")
                && b.get("group").is_none_or(|g| g == "");
            if service && b.get("port").is_none() {
                errs.push(format!(
                    "spec.rules[{i}].backendRefs[{j}]: Service without port"
                ));
            }
        }
    }
    assert!(errs.is_empty(), "schema errors: {errs:#?}\nin {route:#}");
}

fn user_route_json() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gateways", "sectionName": "https"},
                {"group": "", "kind": "Service", "name": "podinfo", "port": 9898}
            ],
            "hostnames": ["shop.example.com"],
            "rules": [
                {
                    "name": "api",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET",
                                 "headers": [{"type": "Exact", "name": "x-beta", "value": "1"}]}],
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"set": [{"name": "x-shop", "value": "api"}]}}],
                    "timeouts": {"request": "2s", "backendRequest": "1s"},
                    "backendRefs": [{
                        "group": "", "kind": "Service", "name": "podinfo", "port": 9898,
                        "filters": [{"type": "ResponseHeaderModifier",
                                     "responseHeaderModifier": {"add": [{"name": "x-route", "value": "podinfo"}]}}]
                    }]
                },
                {
                    "name": "split",
                    "backendRefs": [
                        {"name": "podinfo", "port": 9898, "weight": 80},
                        {"name": "legacy", "port": 80, "weight": 20}
                    ]
                },
                {"name": "other", "backendRefs": [{"name": "cart", "port": 80}]}
            ]
        }
    })
}

#[test]
fn split_user_http_route_matches_the_gateway_api_schema_and_keeps_fields() {
    let schema = schema();
    let input = user_route_json();
    assert_valid(&schema, &input);
    let route: HTTPRoute = serde_json::from_value(input.clone()).expect("deserialize");
    // Lossless round trip of everything canary-gate does not type.
    assert_eq!(serde_json::to_value(&route).expect("serialize"), input);
    for pct in [0, 10, 50, 100] {
        let mut split = route.clone();
        split.spec.rules = split_rules(&route.spec.rules, "podinfo", "shop", pct);
        let out = serde_json::to_value(&split).expect("serialize");
        assert_valid(&schema, &out);
        let spec = &out["spec"];
        assert_eq!(spec["parentRefs"], input["spec"]["parentRefs"], "pct {pct}");
        assert_eq!(spec["hostnames"], input["spec"]["hostnames"], "pct {pct}");
        for key in ["name", "matches", "filters", "timeouts"] {
            assert_eq!(
                spec["rules"][0][key], input["spec"]["rules"][0][key],
                "pct {pct}: rules[0].{key} lost"
            );
        }
        assert_eq!(spec["rules"][0]["backendRefs"][1]["name"], "podinfo-canary");
        assert_eq!(
            spec["rules"][0]["backendRefs"][1]["filters"],
            input["spec"]["rules"][0]["backendRefs"][0]["filters"]
        );
        assert_eq!(spec["rules"][2], input["spec"]["rules"][2], "pct {pct}");
        let sum: i64 = spec["rules"][1]["backendRefs"]
            .as_array()
            .expect("refs")
            .iter()
            .map(|b| b["weight"].as_i64().expect("weight"))
            .sum();
        assert_eq!(sum, 100, "pct {pct}");
    }
}

#[test]
fn created_http_route_matches_the_gateway_api_schema() {
    let schema = schema();
    for pct in [0, 30, 100] {
        let route = created_http_route("shop", "podinfo", Some(9898), "podinfo", pct);
        let v = serde_json::to_value(&route).expect("serialize");
        assert_valid(&schema, &v);
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(
            v["spec"]["parentRefs"],
            json!([{"group": "", "kind": "Service", "name": "podinfo", "port": 9898}])
        );
    }
}

#[test]
fn route_status_as_an_implementation_writes_it_is_read() {
    let schema = schema();
    let mut input = user_route_json();
    let route: HTTPRoute = serde_json::from_value(input.clone()).expect("route");
    input["spec"]["rules"] =
        serde_json::to_value(split_rules(&route.spec.rules, "podinfo", "shop", 10)).expect("rules");
    input["metadata"]["generation"] = json!(2);
    input["status"] = json!({"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gateways", "sectionName": "https"},
        "controllerName": "istio.io/gateway-controller",
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Route was valid",
             "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
             "message": "backend(podinfo-canary.shop.svc.cluster.local) not found",
             "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
    }]});
    assert_valid(&schema, &input);
    let route: HTTPRoute = serde_json::from_value(input.clone()).expect("route with status");
    assert_eq!(
        serde_json::to_value(&route).expect("json"),
        input,
        "status kept"
    );
    let why = unresolved_canary(&route, "podinfo").expect("ResolvedRefs=False read");
    assert!(why.contains("BackendNotFound"), "{why}");
}

#[test]
fn crd_identity_matches_kube_resource() {
    use kube::Resource;
    let crd = crd();
    assert_eq!(crd["spec"]["group"], HTTPRoute::group(&()).as_ref());
    assert_eq!(crd["spec"]["names"]["kind"], HTTPRoute::kind(&()).as_ref());
    assert_eq!(
        crd["spec"]["names"]["plural"],
        HTTPRoute::plural(&()).as_ref()
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = crd_version(&crd, "v1");
    assert_eq!(version["name"], HTTPRoute::version(&()).as_ref());
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
}
