//! Weighted Istio routes (VirtualService), pure. Only the destinations for the Deployment's Service host are
//! split; every other route, match, retry, timeout and host is left exactly as it was, and
//! the original `http` section is kept on the VirtualService so it can be restored verbatim.

use std::collections::BTreeMap;

use crate::annotations as ann;
use crate::istio::{Destination, HttpRoute, RouteDestination, VirtualService, VirtualServiceSpec};
use crate::rollout::twin::{managed_meta, twin_name};

/// Does an Istio host name refer to Service `svc` in namespace `ns`?
pub fn is_service_host(host: &str, svc: &str, ns: &str) -> bool {
    host == svc
        || host == format!("{svc}.{ns}")
        || host == format!("{svc}.{ns}.svc")
        || host == format!("{svc}.{ns}.svc.cluster.local")
}

/// Any route of this VirtualService sends traffic to the Service.
pub fn routes_to(vs: &VirtualService, svc: &str, ns: &str) -> bool {
    vs.spec
        .http
        .iter()
        .flat_map(|r| &r.route)
        .any(|d| is_service_host(&d.destination.host, svc, ns))
}

/// The VirtualService answers for the Service host itself (mesh traffic), not only for
/// gateway hosts.
pub fn hosts_service(vs: &VirtualService, svc: &str, ns: &str) -> bool {
    vs.spec.hosts.iter().any(|h| is_service_host(h, svc, ns))
}

/// Splits every destination of `svc` into stable and canary by `canary_percent`. Weights of
/// each route keep their sum (largest-remainder rounding), as Istio requires.
pub fn split_http(
    original: &[HttpRoute],
    svc: &str,
    ns: &str,
    canary_percent: u32,
) -> Vec<HttpRoute> {
    let canary_host = twin_name(svc);
    let pct = i64::from(canary_percent.min(100));
    original
        .iter()
        .map(|route| {
            if !route
                .route
                .iter()
                .any(|d| is_service_host(&d.destination.host, svc, ns))
            {
                return route.clone();
            }
            let sole = route.route.len() == 1;
            let mut out: Vec<(RouteDestination, i64, i64)> = Vec::new(); // (dest, floor weight, remainder)
            for d in &route.route {
                let w = i64::from(d.weight.unwrap_or(if sole { 100 } else { 0 }));
                if !is_service_host(&d.destination.host, svc, ns) {
                    out.push((d.clone(), w * 100, 0));
                    continue;
                }
                let canary_exact = w * pct; // in hundredths
                let stable_exact = w * 100 - canary_exact;
                out.push((d.clone(), stable_exact, 0));
                let canary = RouteDestination {
                    destination: Destination {
                        host: canary_host.clone(),
                        // The canary Service has no subsets of its own.
                        subset: None,
                        port: d.destination.port.clone(),
                    },
                    weight: None,
                    other: d.other.clone(),
                };
                out.push((canary, canary_exact, 0));
            }
            let total: i64 = out.iter().map(|(_, w, _)| *w).sum::<i64>() / 100;
            for entry in out.iter_mut() {
                entry.2 = entry.1 % 100;
                entry.1 /= 100;
            }
            let mut missing = total - out.iter().map(|(_, w, _)| *w).sum::<i64>();
            let mut order: Vec<usize> = (0..out.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(out[i].2));
            for i in order {
                if missing <= 0 {
                    break;
                }
                out[i].1 += 1;
                missing -= 1;
            }
            HttpRoute {
                route: out
                    .into_iter()
                    .map(|(mut d, w, _)| {
                        d.weight = Some(w as i32);
                        d
                    })
                    .collect(),
                ..route.clone()
            }
        })
        .collect()
}

/// The inverse of [`split_http`] without the saved original: every `<host>-canary`
/// destination is removed and its weight given back to the first destination of `<host>` in
/// the same route. Used only when the saved original cannot be read.
pub fn unsplit_http(split: &[HttpRoute]) -> Vec<HttpRoute> {
    split
        .iter()
        .map(|route| {
            let mut out: Vec<RouteDestination> = Vec::new();
            let mut returned = Vec::new();
            for d in &route.route {
                let base = d
                    .destination
                    .host
                    .strip_suffix(crate::rollout::twin::SUFFIX);
                let has_stable = base.is_some_and(|b| {
                    route
                        .route
                        .iter()
                        .any(|o| same_service(&o.destination.host, b))
                });
                match base {
                    Some(b) if has_stable => returned.push((b.to_string(), d.weight.unwrap_or(0))),
                    _ => out.push(d.clone()),
                }
            }
            for (host, w) in returned {
                if let Some(stable) = out
                    .iter_mut()
                    .find(|d| same_service(&d.destination.host, &host))
                {
                    stable.weight = Some(stable.weight.unwrap_or(0) + w);
                }
            }
            if out.len() == 1 {
                out[0].weight = None;
            }
            HttpRoute {
                route: out,
                ..route.clone()
            }
        })
        .collect()
}

/// `podinfo` and `podinfo.shop.svc.cluster.local` name the same Service.
fn same_service(host: &str, short: &str) -> bool {
    host == short
        || host
            .strip_prefix(short)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Name of the VirtualService canary-gate creates when the user has none for the host.
pub fn created_name(svc: &str) -> String {
    format!("{svc}-canary-gate")
}

pub fn created_virtual_service(
    ns: &str,
    svc: &str,
    owner: &str,
    canary_percent: u32,
) -> VirtualService {
    let base = vec![HttpRoute {
        name: Some("canary-gate".into()),
        route: vec![RouteDestination {
            destination: Destination {
                host: svc.to_string(),
                subset: None,
                port: None,
            },
            weight: Some(100),
            other: BTreeMap::new(),
        }],
        other: BTreeMap::new(),
    }];
    let mut vs = VirtualService::new(
        &created_name(svc),
        VirtualServiceSpec {
            hosts: vec![svc.to_string()],
            http: split_http(&base, svc, ns, canary_percent),
            ..Default::default()
        },
    );
    vs.metadata = managed_meta(created_name(svc), Some(ns.to_string()), owner, None);
    vs
}

/// The user's original routes as stored on an adopted VirtualService, if adopted.
pub fn original_http(vs: &VirtualService) -> Option<Vec<HttpRoute>> {
    vs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ann::ORIGINAL_ROUTES))
        .and_then(|raw| serde_json::from_str(raw).ok())
}

pub fn is_created_by_us(vs: &VirtualService) -> bool {
    crate::rollout::twin::created_by_us(&vs.metadata)
}

/// Canary share of the Service's traffic in a VirtualService (for status and tests).
pub fn canary_share(vs: &VirtualService, svc: &str) -> Option<i32> {
    let canary = twin_name(svc);
    vs.spec
        .http
        .iter()
        .flat_map(|r| &r.route)
        .find(|d| d.destination.host == canary)
        .map(|d| d.weight.unwrap_or(0))
}

/// VirtualServices as a [`RouteKind`](super::RouteKind).
pub struct Istio;

impl super::RouteKind for Istio {
    type Route = VirtualService;
    type Rule = HttpRoute;
    const KIND: &'static str = "virtualservice";
    const ORIGINAL: &'static str = ann::ORIGINAL_ROUTES;

    fn meta(route: &VirtualService) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &route.metadata
    }
    fn rules(route: &VirtualService) -> &[HttpRoute] {
        &route.spec.http
    }
    fn routes_to(route: &VirtualService, svc: &str, ns: &str) -> bool {
        routes_to(route, svc, ns)
    }
    fn covers(route: &VirtualService, svc: &str, ns: &str) -> bool {
        hosts_service(route, svc, ns)
    }
    fn split(original: &[HttpRoute], svc: &str, ns: &str, canary_percent: u32) -> Vec<HttpRoute> {
        split_http(original, svc, ns, canary_percent)
    }
    fn unsplit(split: &[HttpRoute]) -> Vec<HttpRoute> {
        unsplit_http(split)
    }
    fn created_name(svc: &str) -> String {
        created_name(svc)
    }
    fn created(ns: &str, svc: &str, _port: Option<i32>, owner: &str, pct: u32) -> VirtualService {
        created_virtual_service(ns, svc, owner, pct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_vs() -> VirtualService {
        serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {
                "hosts": ["podinfo", "shop.example.com"],
                "gateways": ["mesh", "public"],
                "http": [
                    {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "retries": {"attempts": 3}, "timeout": "2s",
                     "route": [{"destination": {"host": "podinfo.shop.svc.cluster.local", "port": {"number": 9898}}}]},
                    {"name": "ab", "route": [
                        {"destination": {"host": "podinfo", "subset": "v1"}, "weight": 70},
                        {"destination": {"host": "legacy"}, "weight": 30}]},
                    {"name": "other", "route": [{"destination": {"host": "cart"}}]}
                ]
            }
        }))
        .expect("vs")
    }

    #[test]
    fn splits_only_the_service_destinations_and_keeps_everything_else() {
        let vs = user_vs();
        let split = split_http(&vs.spec.http, "podinfo", "shop", 30);
        // Route 1: sole destination → 70 / 30, matches/retries/timeout kept.
        assert_eq!(split[0].other, vs.spec.http[0].other);
        let w: Vec<(String, Option<i32>)> = split[0]
            .route
            .iter()
            .map(|d| (d.destination.host.clone(), d.weight))
            .collect();
        assert_eq!(
            w,
            vec![
                ("podinfo.shop.svc.cluster.local".into(), Some(70)),
                ("podinfo-canary".into(), Some(30))
            ]
        );
        assert_eq!(
            split[0].route[1].destination.port,
            vs.spec.http[0].route[0].destination.port
        );
        // Route 2: 70 of 100 to podinfo → 49 stable + 21 canary; legacy keeps 30; sum 100.
        let w: Vec<i32> = split[1]
            .route
            .iter()
            .map(|d| d.weight.unwrap_or(0))
            .collect();
        assert_eq!(w, vec![49, 21, 30]);
        assert_eq!(split[1].route[1].destination.subset, None);
        // Route 3 untouched.
        assert_eq!(split[2], vs.spec.http[2]);
    }

    #[test]
    fn weights_always_sum_to_the_original_total() {
        let vs = user_vs();
        for pct in 0..=100 {
            for (orig, new) in
                vs.spec
                    .http
                    .iter()
                    .zip(split_http(&vs.spec.http, "podinfo", "shop", pct))
            {
                let before: i32 = if orig.route.len() == 1 {
                    100
                } else {
                    orig.route.iter().map(|d| d.weight.unwrap_or(0)).sum()
                };
                let after: i32 = new.route.iter().map(|d| d.weight.unwrap_or(0)).sum();
                if orig
                    .route
                    .iter()
                    .any(|d| is_service_host(&d.destination.host, "podinfo", "shop"))
                {
                    assert_eq!(before, after, "pct {pct}: {new:?}");
                }
            }
        }
    }

    #[test]
    fn created_route_carries_the_weight_and_marks() {
        let vs = created_virtual_service("shop", "podinfo", "podinfo", 20);
        assert_eq!(vs.metadata.name.as_deref(), Some("podinfo-canary-gate"));
        assert_eq!(canary_share(&vs, "podinfo"), Some(20));
        assert!(is_created_by_us(&vs));
        assert!(hosts_service(&vs, "podinfo", "shop") && routes_to(&vs, "podinfo", "shop"));
        assert_eq!(vs.spec.http[0].route[0].weight, Some(80));
    }

    #[test]
    fn unsplitting_gives_the_canary_share_back() {
        let base = vec![HttpRoute {
            route: vec![
                RouteDestination {
                    destination: Destination {
                        host: "podinfo".into(),
                        subset: None,
                        port: None,
                    },
                    weight: Some(80),
                    other: BTreeMap::new(),
                },
                RouteDestination {
                    destination: Destination {
                        host: "legacy".into(),
                        subset: None,
                        port: None,
                    },
                    weight: Some(20),
                    other: BTreeMap::new(),
                },
            ],
            ..Default::default()
        }];
        let split = split_http(&base, "podinfo", "shop", 30);
        assert_eq!(unsplit_http(&split), base);
        let sole = vec![HttpRoute {
            route: vec![RouteDestination {
                destination: Destination {
                    host: "podinfo".into(),
                    subset: None,
                    port: None,
                },
                weight: None,
                other: BTreeMap::new(),
            }],
            ..Default::default()
        }];
        assert_eq!(
            unsplit_http(&split_http(&sole, "podinfo", "shop", 40)),
            sole
        );
    }

    #[test]
    fn host_forms() {
        for h in [
            "podinfo",
            "podinfo.shop",
            "podinfo.shop.svc",
            "podinfo.shop.svc.cluster.local",
        ] {
            assert!(is_service_host(h, "podinfo", "shop"), "{h}");
        }
        assert!(!is_service_host("podinfo.other", "podinfo", "shop"));
        assert!(!is_service_host("podinfo-canary", "podinfo", "shop"));
    }

    #[test]
    fn user_fields_round_trip() {
        let vs = user_vs();
        let back: serde_json::Value = serde_json::to_value(&vs.spec).expect("json");
        assert_eq!(back["http"][0]["retries"]["attempts"], 3);
        assert_eq!(back["gateways"], json!(["mesh", "public"]));
    }
}
