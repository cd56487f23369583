//! Weighted routes, pure: one module per router kind (`istio`: VirtualService, `gateway`:
//! Gateway API HTTPRoute) behind one small interface, [`RouteKind`]. The analyzer's reconcile
//! is written once against it; which kinds a rollout uses is decided here too ([`plan`]).

pub mod gateway;
pub mod istio;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::annotations as ann;

pub use istio::{
    canary_share, created_name, created_virtual_service, hosts_service, is_created_by_us,
    is_service_host, original_http, routes_to, split_http, unsplit_http,
};

/// Which routes carry a rollout's traffic split (annotation `canary-gate.io/router`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Router {
    /// Gateway API when an HTTPRoute in the namespace routes the Service, else Istio.
    #[default]
    Auto,
    Istio,
    GatewayApi,
}

impl Router {
    pub const ALLOWED: &'static str = "must be one of auto, istio, gateway-api";

    pub fn parse(s: &str) -> Option<Router> {
        match s.trim() {
            "auto" => Some(Router::Auto),
            "istio" => Some(Router::Istio),
            "gateway-api" => Some(Router::GatewayApi),
            _ => None,
        }
    }
}

/// For each route kind: `None` = not touched; `Some(create)` = its routes of the Service are
/// adopted and split, and with `create` one is created when none covers the Service itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub istio: Option<bool>,
    pub gateway: Option<bool>,
}

/// The routes a rollout splits. `gateway_routed`: an HTTPRoute in the namespace routes the
/// Service (or was adopted already).
///
/// When both kinds route the Service under `auto`, **both are split** (same weights), so
/// whichever the mesh or gateway uses sends the same share to the canary; a VirtualService is
/// then never *created* (the Gateway API side creates its GAMMA route if none covers the
/// Service). `istio` and `gateway-api` ignore the other kind entirely.
pub fn plan(router: Router, gateway_routed: bool) -> Plan {
    match router {
        Router::Istio => Plan {
            istio: Some(true),
            gateway: None,
        },
        Router::GatewayApi => Plan {
            istio: None,
            gateway: Some(true),
        },
        Router::Auto if gateway_routed => Plan {
            istio: Some(false),
            gateway: Some(true),
        },
        Router::Auto => Plan {
            istio: Some(true),
            gateway: None,
        },
    }
}

/// One kind of weighted route, pure. `Rule` is the unit that is split (an Istio `http` route,
/// a Gateway API rule); the original rules are saved in the `ORIGINAL` annotation on an adopted
/// route and restored verbatim.
pub trait RouteKind {
    type Route: Clone + Send + Sync + 'static;
    type Rule: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// For messages and logs, e.g. `virtualservice`.
    const KIND: &'static str;
    /// Annotation holding the adopted route's original rules.
    const ORIGINAL: &'static str;

    fn meta(route: &Self::Route) -> &ObjectMeta;
    fn rules(route: &Self::Route) -> &[Self::Rule];
    /// Some rule sends traffic to Service `svc` of namespace `ns`.
    fn routes_to(route: &Self::Route, svc: &str, ns: &str) -> bool;
    /// The route answers for the Service itself (mesh traffic), not only at a gateway.
    fn covers(route: &Self::Route, svc: &str, ns: &str) -> bool;
    /// Every reference to `svc` split into stable and `<svc>-canary` by `canary_percent`.
    fn split(original: &[Self::Rule], svc: &str, ns: &str, canary_percent: u32) -> Vec<Self::Rule>;
    /// [`RouteKind::split`] undone without the saved original (when that was mangled).
    fn unsplit(split: &[Self::Rule]) -> Vec<Self::Rule>;
    /// Name of the route canary-gate creates when none covers the Service.
    fn created_name(svc: &str) -> String;
    /// The route canary-gate creates; `port`: the Service's first port.
    fn created(ns: &str, svc: &str, port: Option<i32>, owner: &str, pct: u32) -> Self::Route;
    /// Why the implementation cannot send traffic to the canary backend of this route (read
    /// from its status), if it says so.
    fn unresolved(_route: &Self::Route, _svc: &str) -> Option<String> {
        None
    }

    fn name(route: &Self::Route) -> String {
        Self::meta(route).name.clone().unwrap_or_default()
    }
    /// The saved original rules, if the route is adopted.
    fn original(route: &Self::Route) -> Option<Vec<Self::Rule>> {
        Self::meta(route)
            .annotations
            .as_ref()
            .and_then(|a| a.get(Self::ORIGINAL))
            .and_then(|raw| serde_json::from_str(raw).ok())
    }
    fn is_created_by_us(route: &Self::Route) -> bool {
        crate::rollout::twin::created_by_us(Self::meta(route))
    }
    /// The rollout (stable Deployment name) this route is split for.
    fn owner(route: &Self::Route) -> Option<&str> {
        owner_of(Self::meta(route).annotations.as_ref())
    }
}

pub fn owner_of(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations
        .and_then(|a| a.get(ann::OWNER))
        .map(String::as_str)
}

/// Largest-remainder split of integer weights: `entries` are `(weight, is_the_service)`; each
/// entry of the Service becomes `[stable, canary]` with `canary_percent` of its weight, the
/// others stay as they are, and the total is kept exactly.
pub(crate) fn split_weights(entries: &[(i64, bool)], canary_percent: u32) -> Vec<Vec<i64>> {
    let pct = i64::from(canary_percent.min(100));
    // In hundredths, with (entry, part) positions.
    let mut parts: Vec<(usize, i64)> = Vec::new();
    for (i, &(w, service)) in entries.iter().enumerate() {
        if service {
            let canary = w * pct;
            parts.push((i, w * 100 - canary));
            parts.push((i, canary));
        } else {
            parts.push((i, w * 100));
        }
    }
    let total: i64 = entries.iter().map(|(w, _)| *w).sum();
    let mut floors: Vec<i64> = parts.iter().map(|(_, h)| h / 100).collect();
    let mut missing = total - floors.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(parts[k].1 % 100));
    for k in order {
        if missing <= 0 {
            break;
        }
        floors[k] += 1;
        missing -= 1;
    }
    let mut out = vec![Vec::new(); entries.len()];
    for (k, (i, _)) in parts.iter().enumerate() {
        out[*i].push(floors[k]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_values() {
        assert_eq!(Router::parse("auto"), Some(Router::Auto));
        assert_eq!(Router::parse("istio"), Some(Router::Istio));
        assert_eq!(Router::parse("gateway-api"), Some(Router::GatewayApi));
        assert_eq!(Router::parse("gateway"), None);
        assert_eq!(Router::default(), Router::Auto);
    }

    #[test]
    fn plan_per_router() {
        // auto without HTTPRoutes: today's behaviour (adopt or create a VirtualService).
        assert_eq!(
            plan(Router::Auto, false),
            Plan {
                istio: Some(true),
                gateway: None
            }
        );
        // auto with both kinds: both split, no VirtualService created.
        assert_eq!(
            plan(Router::Auto, true),
            Plan {
                istio: Some(false),
                gateway: Some(true)
            }
        );
        assert_eq!(plan(Router::Istio, true).gateway, None);
        assert_eq!(plan(Router::GatewayApi, false).istio, None);
        assert_eq!(plan(Router::GatewayApi, false).gateway, Some(true));
    }

    #[test]
    fn split_weights_keeps_the_total() {
        for pct in 0..=100 {
            for entries in [
                vec![(100, true)],
                vec![(70, true), (30, false)],
                vec![(1, true), (1, false)],
                vec![(3, true), (5, true), (7, false)],
            ] {
                let out = split_weights(&entries, pct);
                let before: i64 = entries.iter().map(|e| e.0).sum();
                let after: i64 = out.iter().flatten().sum();
                assert_eq!(before, after, "{entries:?} at {pct}");
                for (e, o) in entries.iter().zip(&out) {
                    assert_eq!(o.len(), if e.1 { 2 } else { 1 });
                    if !e.1 {
                        assert_eq!(o[0], e.0, "others keep their weight");
                    }
                }
            }
        }
        assert_eq!(
            split_weights(&[(70, true), (30, false)], 30),
            [vec![49, 21], vec![30]]
        );
    }
}
