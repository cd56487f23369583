//! Weighted Gateway API routes (HTTPRoute), pure. In each rule that references the
//! Deployment's Service, a backendRef to `<service>-canary` is added right after it with the
//! canary's share of that reference's weight (largest remainder, the rule's total kept);
//! other rules, matches, filters, timeouts, other backendRefs and their weights and the
//! parentRefs are left exactly as they were. The original `rules` are kept on the route
//! (`canary-gate.io/original-rules`) and restored verbatim.
//!
//! Weights: an unset backendRef weight means 1 (the API's default). When *no* backendRef of a
//! rule has a weight, each is written as 100 (the same proportions) so that a 10 % step is
//! expressible; otherwise the weights are used as they are and their sum is kept.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use crate::annotations as ann;
use crate::gateway_api::{HTTPBackendRef, HTTPRoute, HTTPRouteRule, HTTPRouteSpec};
use crate::rollout::twin::{managed_meta, twin_name, SUFFIX};

/// Does this backendRef of a route in namespace `route_ns` point at Service `svc` of `ns`?
pub fn is_service_ref(r: &HTTPBackendRef, svc: &str, ns: &str, route_ns: &str) -> bool {
    r.group.as_deref().unwrap_or("").is_empty()
        && r.kind.as_deref().unwrap_or("Service") == "Service"
        && r.name == svc
        && r.namespace.as_deref().unwrap_or(route_ns) == ns
}

fn route_ns<'a>(route: &'a HTTPRoute, ns: &'a str) -> &'a str {
    route.metadata.namespace.as_deref().unwrap_or(ns)
}

/// Some rule of this HTTPRoute sends traffic to the Service. Only routes of the Service's own
/// namespace are adopted: a route elsewhere (pointing here through a ReferenceGrant) is not.
pub fn routes_to(route: &HTTPRoute, svc: &str, ns: &str) -> bool {
    route_ns(route, ns) == ns
        && route
            .spec
            .rules
            .iter()
            .flat_map(|r| &r.backend_refs)
            .any(|b| is_service_ref(b, svc, ns, ns))
}

/// The route is attached to the Service itself (GAMMA: mesh traffic), not only to Gateways.
pub fn attached_to_service(route: &HTTPRoute, svc: &str, ns: &str) -> bool {
    route.spec.parent_refs.iter().any(|p| {
        p.get("group").and_then(|g| g.as_str()) == Some("")
            && p.get("kind").and_then(|k| k.as_str()) == Some("Service")
            && p.get("name").and_then(|n| n.as_str()) == Some(svc)
            && p.get("namespace")
                .and_then(|n| n.as_str())
                .is_none_or(|n| n == ns)
    })
}

/// Splits every backendRef of `svc` (in routes of namespace `ns`) by `canary_percent`.
pub fn split_rules(
    original: &[HTTPRouteRule],
    svc: &str,
    ns: &str,
    canary_percent: u32,
) -> Vec<HTTPRouteRule> {
    let canary = twin_name(svc);
    original
        .iter()
        .map(|rule| {
            if !rule
                .backend_refs
                .iter()
                .any(|b| is_service_ref(b, svc, ns, ns))
            {
                return rule.clone();
            }
            let all_unset = rule.backend_refs.iter().all(|b| b.weight.is_none());
            let scale = if all_unset { 100 } else { 1 };
            let entries: Vec<(i64, bool)> = rule
                .backend_refs
                .iter()
                .map(|b| {
                    (
                        i64::from(b.weight.unwrap_or(1).max(0)) * scale,
                        is_service_ref(b, svc, ns, ns),
                    )
                })
                .collect();
            let weights = super::split_weights(&entries, canary_percent);
            let mut refs = Vec::new();
            for (b, w) in rule.backend_refs.iter().zip(weights) {
                if let [stable, canary_w] = w[..] {
                    refs.push(HTTPBackendRef {
                        weight: Some(stable as i32),
                        ..b.clone()
                    });
                    refs.push(HTTPBackendRef {
                        name: canary.clone(),
                        weight: Some(canary_w as i32),
                        ..b.clone()
                    });
                } else if all_unset {
                    refs.push(HTTPBackendRef {
                        weight: Some(w[0] as i32),
                        ..b.clone()
                    });
                } else {
                    refs.push(b.clone());
                }
            }
            HTTPRouteRule {
                backend_refs: refs,
                ..rule.clone()
            }
        })
        .collect()
}

/// [`split_rules`] undone without the saved original: every `<svc>-canary` backendRef beside
/// a `<svc>` one is removed and its weight given back to it. Only when the original is lost.
pub fn unsplit_rules(split: &[HTTPRouteRule]) -> Vec<HTTPRouteRule> {
    split
        .iter()
        .map(|rule| {
            let mut out: Vec<HTTPBackendRef> = Vec::new();
            for b in &rule.backend_refs {
                let base = b.name.strip_suffix(SUFFIX);
                let stable = base.and_then(|base| {
                    out.iter_mut().rev().find(|o| {
                        o.name == base && o.kind == b.kind && o.group == b.group && o.port == b.port
                    })
                });
                match stable {
                    Some(s) => s.weight = Some(s.weight.unwrap_or(1) + b.weight.unwrap_or(0)),
                    None => out.push(b.clone()),
                }
            }
            HTTPRouteRule {
                backend_refs: out,
                ..rule.clone()
            }
        })
        .collect()
}

/// Name of the HTTPRoute canary-gate creates when none routes the Service.
pub fn created_name(svc: &str) -> String {
    format!("{svc}-canary-gate")
}

/// The GAMMA route canary-gate creates under `gateway-api` when none covers the Service: a
/// parentRef to the Service itself (`group: ""`, `kind: Service`), one rule to it.
pub fn created_http_route(
    ns: &str,
    svc: &str,
    port: Option<i32>,
    owner: &str,
    canary_percent: u32,
) -> HTTPRoute {
    let base = vec![HTTPRouteRule {
        backend_refs: vec![HTTPBackendRef {
            name: svc.to_string(),
            port: Some(port.unwrap_or(80)),
            ..Default::default()
        }],
        other: BTreeMap::new(),
    }];
    let mut parent = json!({"group": "", "kind": "Service", "name": svc});
    if let Some(p) = port {
        parent["port"] = json!(p);
    }
    let mut route = HTTPRoute::new(
        &created_name(svc),
        HTTPRouteSpec {
            parent_refs: vec![parent],
            rules: split_rules(&base, svc, ns, canary_percent),
            other: BTreeMap::new(),
        },
    );
    route.metadata = managed_meta(created_name(svc), Some(ns.to_string()), owner, None);
    route
}

/// The canary's share (percent) of the Service's traffic in this route, for status and tests.
pub fn canary_share(route: &HTTPRoute, svc: &str) -> Option<i32> {
    let canary = twin_name(svc);
    route.spec.rules.iter().find_map(|rule| {
        let c = rule.backend_refs.iter().position(|b| b.name == canary)?;
        let cw = i64::from(rule.backend_refs[c].weight.unwrap_or(1));
        let sw: i64 = rule.backend_refs[..c]
            .iter()
            .rev()
            .find(|b| b.name == svc)
            .map_or(0, |b| i64::from(b.weight.unwrap_or(1)));
        if cw + sw == 0 {
            return Some(0);
        }
        Some(((cw * 200 + (cw + sw)) / (2 * (cw + sw))) as i32)
    })
}

/// `ResolvedRefs=False` reported (for the route's current generation) by a parent while the
/// route carries the canary backendRef: the implementation cannot send traffic to it.
pub fn unresolved_canary(route: &HTTPRoute, svc: &str) -> Option<String> {
    let canary = twin_name(svc);
    let has_canary = route
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.backend_refs)
        .any(|b| b.name == canary);
    if !has_canary {
        return None;
    }
    let generation = route.metadata.generation;
    let cond = route
        .status
        .as_ref()?
        .parents
        .iter()
        .flat_map(|p| &p.conditions)
        .find(|c| {
            c.type_ == "ResolvedRefs"
                && c.status == "False"
                && match (c.observed_generation, generation) {
                    (Some(seen), Some(current)) => seen >= current,
                    _ => true,
                }
        })?;
    Some(format!(
        "HTTPRoute {}/{} reports ResolvedRefs=False ({}: {}) with the canary backendRef {canary}: no traffic is sent to the canary",
        route.metadata.namespace.as_deref().unwrap_or_default(),
        route.metadata.name.as_deref().unwrap_or_default(),
        cond.reason.as_deref().unwrap_or("no reason"),
        cond.message.as_deref().unwrap_or("no message"),
    ))
}

/// HTTPRoutes as a [`RouteKind`](super::RouteKind).
pub struct Gateway;

impl super::RouteKind for Gateway {
    type Route = HTTPRoute;
    type Rule = HTTPRouteRule;
    const KIND: &'static str = "httproute";
    const ORIGINAL: &'static str = ann::ORIGINAL_RULES;

    fn meta(route: &HTTPRoute) -> &ObjectMeta {
        &route.metadata
    }
    fn rules(route: &HTTPRoute) -> &[HTTPRouteRule] {
        &route.spec.rules
    }
    fn routes_to(route: &HTTPRoute, svc: &str, ns: &str) -> bool {
        routes_to(route, svc, ns)
    }
    fn covers(route: &HTTPRoute, svc: &str, ns: &str) -> bool {
        attached_to_service(route, svc, ns)
    }
    fn split(original: &[HTTPRouteRule], svc: &str, ns: &str, pct: u32) -> Vec<HTTPRouteRule> {
        split_rules(original, svc, ns, pct)
    }
    fn unsplit(split: &[HTTPRouteRule]) -> Vec<HTTPRouteRule> {
        unsplit_rules(split)
    }
    fn created_name(svc: &str) -> String {
        created_name(svc)
    }
    fn created(ns: &str, svc: &str, port: Option<i32>, owner: &str, pct: u32) -> HTTPRoute {
        created_http_route(ns, svc, port, owner, pct)
    }
    fn unresolved(route: &HTTPRoute, svc: &str) -> Option<String> {
        unresolved_canary(route, svc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::routes::RouteKind;

    fn route(ns: &str, spec: serde_json::Value) -> HTTPRoute {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "shop", "namespace": ns},
            "spec": spec,
        }))
        .expect("route")
    }

    fn user_route() -> HTTPRoute {
        route(
            "shop",
            json!({
                "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
                "hostnames": ["shop.example.com"],
                "rules": [
                    {"name": "api",
                     "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-beta", "value": "1"}]}],
                     "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-shop", "value": "api"}]}}],
                     "timeouts": {"request": "2s", "backendRequest": "1s"},
                     "backendRefs": [{"name": "podinfo", "port": 9898,
                                      "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "x-b", "value": "p"}]}}]}]},
                    {"name": "ab", "backendRefs": [
                        {"name": "podinfo", "port": 9898, "weight": 70},
                        {"name": "legacy", "port": 80, "weight": 30}]},
                    {"name": "other", "backendRefs": [{"name": "cart", "port": 80}]},
                    {"name": "redirect", "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}]}
                ]
            }),
        )
    }

    fn weights(rule: &HTTPRouteRule) -> Vec<(String, Option<i32>)> {
        rule.backend_refs
            .iter()
            .map(|b| (b.name.clone(), b.weight))
            .collect()
    }

    fn n(s: &str, w: i32) -> (String, Option<i32>) {
        (s.to_string(), Some(w))
    }

    #[test]
    fn splits_each_rule_of_the_service_beside_its_backend_ref() {
        let r = user_route();
        let split = split_rules(&r.spec.rules, "podinfo", "shop", 30);
        assert_eq!(split.len(), 4);
        // Sole unweighted backendRef: 70 / 30, canary right after it, same port and filters.
        assert_eq!(
            weights(&split[0]),
            vec![n("podinfo", 70), n("podinfo-canary", 30)]
        );
        let canary = &split[0].backend_refs[1];
        assert_eq!(canary.port, Some(9898));
        assert_eq!(
            canary.other, r.spec.rules[0].backend_refs[0].other,
            "filters"
        );
        // Matches, filters, timeouts and the name kept.
        assert_eq!(split[0].other, r.spec.rules[0].other);
        // Several weighted backendRefs: 70 → 49 + 21, legacy keeps 30, the sum stays 100.
        assert_eq!(
            weights(&split[1]),
            vec![n("podinfo", 49), n("podinfo-canary", 21), n("legacy", 30)]
        );
        // Rules without the Service: untouched.
        assert_eq!(split[2], r.spec.rules[2]);
        assert_eq!(split[3], r.spec.rules[3]);
    }

    #[test]
    fn weights_sum_as_before_at_every_percent() {
        let r = route(
            "shop",
            json!({"rules": [{"backendRefs": [
                {"name": "podinfo", "port": 80, "weight": 3},
                {"name": "legacy", "port": 80, "weight": 5},
                {"name": "podinfo", "port": 8080, "weight": 7}]}]}),
        );
        for pct in 0..=100 {
            let split = split_rules(&r.spec.rules, "podinfo", "shop", pct);
            let sum: i32 = split[0]
                .backend_refs
                .iter()
                .map(|b| b.weight.unwrap_or(1))
                .sum();
            assert_eq!(sum, 15, "pct {pct}: {:?}", weights(&split[0]));
            assert_eq!(split[0].backend_refs[2].weight, Some(5), "legacy kept");
        }
    }

    #[test]
    fn a_route_referencing_the_service_twice_gets_a_canary_beside_each() {
        // Two ports of the Service in one rule, and the Service again in a second rule.
        let r = route(
            "shop",
            json!({"rules": [
                {"backendRefs": [{"name": "podinfo", "port": 80, "weight": 50}, {"name": "podinfo", "port": 8080, "weight": 50}]},
                {"matches": [{"path": {"type": "Exact", "value": "/healthz"}}], "backendRefs": [{"name": "podinfo", "port": 80}]}
            ]}),
        );
        let split = split_rules(&r.spec.rules, "podinfo", "shop", 10);
        assert_eq!(
            weights(&split[0]),
            vec![
                n("podinfo", 45),
                n("podinfo-canary", 5),
                n("podinfo", 45),
                n("podinfo-canary", 5)
            ]
        );
        let ports: Vec<Option<i32>> = split[0].backend_refs.iter().map(|b| b.port).collect();
        assert_eq!(ports, [Some(80), Some(80), Some(8080), Some(8080)]);
        assert_eq!(
            weights(&split[1]),
            vec![n("podinfo", 90), n("podinfo-canary", 10)]
        );
        assert_eq!(split[1].other, r.spec.rules[1].other);
        assert_eq!(
            canary_share(&route("shop", json!({"rules": split})), "podinfo"),
            Some(10)
        );
    }

    #[test]
    fn restore_is_byte_for_byte() {
        // What the analyzer saves in the annotation and writes back at the end.
        let r = user_route();
        let before = serde_json::to_string(&r.spec.rules).expect("json");
        let mut adopted = r.clone();
        adopted.spec.rules = split_rules(&r.spec.rules, "podinfo", "shop", 40);
        adopted
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ann::ORIGINAL_RULES.into(), before.clone());
        let restored = Gateway::original(&adopted).expect("saved");
        assert_eq!(serde_json::to_string(&restored).expect("json"), before);
        // And the whole route, parentRefs and hostnames included, is the user's again.
        adopted.spec.rules = restored;
        assert_eq!(
            serde_json::to_value(&adopted.spec).expect("json"),
            serde_json::to_value(&r.spec).expect("json")
        );
        assert_eq!(
            serde_json::to_value(&r).expect("json")["spec"]["parentRefs"][0]["sectionName"],
            "https"
        );
    }

    #[test]
    fn unsplit_gives_the_weight_back_when_the_original_is_lost() {
        let r = user_route();
        let split = split_rules(&r.spec.rules, "podinfo", "shop", 30);
        let back = unsplit_rules(&split);
        assert_eq!(weights(&back[0]), vec![n("podinfo", 100)]);
        assert_eq!(weights(&back[1]), vec![n("podinfo", 70), n("legacy", 30)]);
        assert_eq!(back[2..], r.spec.rules[2..]);
    }

    #[test]
    fn a_route_in_another_namespace_is_not_adopted() {
        // It points at shop/podinfo (through a ReferenceGrant) but lives in `web`.
        let other = route(
            "web",
            json!({"rules": [{"backendRefs": [{"name": "podinfo", "namespace": "shop", "port": 9898}]}]}),
        );
        assert!(!routes_to(&other, "podinfo", "shop"));
        assert!(!Gateway::routes_to(&other, "podinfo", "shop"));
        // Nor is a reference to a Service of the same name in another namespace, or to
        // something that is not a Service.
        let elsewhere = route(
            "shop",
            json!({"rules": [{"backendRefs": [
                {"name": "podinfo", "namespace": "web", "port": 9898},
                {"name": "podinfo", "group": "example.com", "kind": "Backend"}]}]}),
        );
        assert!(!routes_to(&elsewhere, "podinfo", "shop"));
        assert_eq!(
            split_rules(&elsewhere.spec.rules, "podinfo", "shop", 50),
            elsewhere.spec.rules
        );
        assert!(routes_to(&user_route(), "podinfo", "shop"));
        let explicit = route(
            "shop",
            json!({"rules": [{"backendRefs": [{"name": "podinfo", "namespace": "shop", "group": "", "kind": "Service", "port": 1}]}]}),
        );
        assert!(routes_to(&explicit, "podinfo", "shop"));
    }

    #[test]
    fn created_route_is_a_gamma_route_to_the_service() {
        let r = created_http_route("shop", "podinfo", Some(9898), "podinfo", 20);
        assert_eq!(r.metadata.name.as_deref(), Some("podinfo-canary-gate"));
        assert!(Gateway::is_created_by_us(&r));
        assert_eq!(Gateway::owner(&r), Some("podinfo"));
        assert_eq!(
            r.spec.parent_refs,
            vec![json!({"group": "", "kind": "Service", "name": "podinfo", "port": 9898})]
        );
        assert!(attached_to_service(&r, "podinfo", "shop"));
        assert!(!attached_to_service(&user_route(), "podinfo", "shop"));
        assert_eq!(
            weights(&r.spec.rules[0]),
            vec![n("podinfo", 80), n("podinfo-canary", 20)]
        );
        assert_eq!(canary_share(&r, "podinfo"), Some(20));
    }

    #[test]
    fn resolved_refs_false_blocks_the_canary() {
        let mut r = route(
            "shop",
            json!({"rules": [{"backendRefs": [{"name": "podinfo", "port": 80}]}]}),
        );
        r.metadata.generation = Some(3);
        let status = |generation: i64, value: &str| {
            serde_json::from_value(json!({"parents": [{
                "parentRef": {"name": "podinfo", "kind": "Service", "group": ""},
                "controllerName": "istio.io/mesh-controller",
                "conditions": [{"type": "ResolvedRefs", "status": value, "reason": "BackendNotFound",
                                "message": "podinfo-canary not found", "observedGeneration": generation,
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }]}))
            .expect("status")
        };
        r.status = Some(status(3, "False"));
        // Without the canary backendRef in the route it is not ours to report.
        assert_eq!(unresolved_canary(&r, "podinfo"), None);
        r.spec.rules = split_rules(&r.spec.rules, "podinfo", "shop", 0);
        let why = unresolved_canary(&r, "podinfo").expect("blocked");
        assert!(
            why.contains("HTTPRoute shop/shop reports ResolvedRefs=False"),
            "{why}"
        );
        assert!(
            why.contains("BackendNotFound: podinfo-canary not found"),
            "{why}"
        );
        // A status about an older generation is stale; True is fine.
        r.status = Some(status(2, "False"));
        assert_eq!(unresolved_canary(&r, "podinfo"), None);
        r.status = Some(status(3, "True"));
        assert_eq!(unresolved_canary(&r, "podinfo"), None);
    }

    #[test]
    fn unknown_fields_round_trip() {
        let r = user_route();
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["spec"]["hostnames"], json!(["shop.example.com"]));
        assert_eq!(v["spec"]["rules"][0]["timeouts"]["backendRequest"], "1s");
        assert_eq!(
            v["spec"]["rules"][0]["backendRefs"][0]["filters"][0]["type"],
            "ResponseHeaderModifier"
        );
    }
}
