//! Reads of Services and routes, one list per namespace and kind per generation, shared by
//! every tick and rollout of that generation and kept current by their own writes.
//!
//! Without it each rollout listed its namespace's Services, HTTPRoutes and VirtualServices
//! itself: 10,000 rollouts in 20 namespaces stepping together made 30,000 lists of ~500
//! objects each per step, the API server's cost growing with the square of the rollouts.
//! A generation is `--list-max-age` of scheduled ticks, run or skipped (`renew`; default
//! 1 s, every tick): wake-up ticks in between read the same Services and VirtualServices
//! (HTTPRoutes, whose status the Gateway implementation writes, are read again), and ticks
//! still in flight never keep a list of their own (at 10,000 rollouts, one per tick in flight
//! held ~460 MiB). What is older than a generation is listed again, so a change by someone
//! else shows within the list age. At 10,000 rollouts in 20 namespaces the lists were most of
//! the API server's work (39 lists of 500 objects a second); a 5 s age cut it to a third.
//! Items are shared (`Arc`), so handing a namespace's list to a reader copies one pointer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;

use crate::cluster::{Cluster, KubeError};
use crate::gateway_api::HTTPRoute;
use crate::istio::VirtualService;

/// A namespace's list as read: shared with its readers, copied only on a write while read.
pub(super) type Listed<T> = Arc<Vec<Arc<T>>>;

/// One namespace's list, once read, and the generation it was read in.
struct Read<T> {
    generation: u64,
    items: Option<Listed<T>>,
}

impl<T> Default for Read<T> {
    fn default() -> Self {
        Read {
            generation: 0,
            items: None,
        }
    }
}

type Slot<T> = Arc<tokio::sync::Mutex<Read<T>>>;

/// One kind's lists by namespace. Errors are not kept: the next reader lists again.
pub(super) struct Memo<T> {
    by_ns: Mutex<HashMap<String, Slot<T>>>,
    /// The current generation of this kind's lists.
    generation: AtomicU64,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            by_ns: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }
}

impl<T> Memo<T> {
    fn cell(&self, ns: &str) -> Slot<T> {
        let mut by_ns = self.by_ns.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up first: every read of every rollout comes here, a new namespace rarely.
        match by_ns.get(ns) {
            Some(slot) => slot.clone(),
            None => by_ns.entry(ns.to_string()).or_default().clone(),
        }
    }

    /// The namespace's list of the current generation: fetched by the first reader
    /// (concurrent readers wait for it), then shared.
    pub(super) async fn get<F, Fut>(&self, ns: &str, fetch: F) -> Result<Listed<T>, KubeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, KubeError>>,
    {
        let generation = self.generation.load(Ordering::Acquire);
        let cell = self.cell(ns);
        let mut slot = cell.lock().await;
        if let Some(items) = slot
            .items
            .as_ref()
            .filter(|_| slot.generation >= generation)
        {
            return Ok(items.clone());
        }
        let items: Listed<T> = Arc::new(fetch().await?.into_iter().map(Arc::new).collect());
        *slot = Read {
            generation,
            items: Some(items.clone()),
        };
        Ok(items)
    }

    /// After a write: `edit` brings the namespace's list (if it was read) in line with it.
    pub(super) async fn update(&self, ns: &str, edit: impl FnOnce(&mut Vec<Arc<T>>)) {
        let cell = self.cell(ns);
        let mut slot = cell.lock().await;
        if let Some(items) = slot.items.as_mut() {
            edit(Arc::make_mut(items));
        }
    }

    /// A new generation: lists read before are read again when next needed. Namespaces not
    /// read in the previous generation are forgotten (their readers are done with them).
    pub(super) fn renew(&self) {
        let now = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.forget_before(now.saturating_sub(1));
    }

    /// Forgets the namespaces not read since `generation`: their lists would be stale anyway.
    fn forget_before(&self, generation: u64) {
        let mut by_ns = self.by_ns.lock().unwrap_or_else(|p| p.into_inner());
        by_ns.retain(|_, slot| {
            slot.try_lock()
                .map_or(true, |read| read.generation >= generation)
        });
    }
}

/// Replaces the object named `name` (or adds it) in a list.
pub(super) fn put<T>(
    items: &mut Vec<Arc<T>>,
    name: &str,
    object: T,
    name_of: impl Fn(&T) -> Option<&str>,
) {
    match items.iter().position(|o| name_of(o) == Some(name)) {
        Some(i) => items[i] = Arc::new(object),
        None => items.push(Arc::new(object)),
    }
}

/// Removes the object named `name` from a list.
pub(super) fn remove<T>(items: &mut Vec<Arc<T>>, name: &str, name_of: impl Fn(&T) -> Option<&str>) {
    items.retain(|o| name_of(o) != Some(name));
}

/// The three kinds the analyzer lists per namespace.
#[derive(Default)]
pub(super) struct Lists {
    pub(super) services: Memo<Service>,
    pub(super) istio: Memo<VirtualService>,
    pub(super) gateway: Memo<HTTPRoute>,
}

impl Lists {
    /// A new generation of every kind (a scheduled tick, run or skipped).
    pub(super) fn renew(&self) {
        self.services.renew();
        self.istio.renew();
        self.gateway.renew();
    }

    /// Before a wake-up tick: HTTPRoutes are read again. Their status is written by the
    /// Gateway implementation (`ResolvedRefs=False` for a canary backend it cannot reach)
    /// after our own write put the route in the list as we sent it, and a twin turning ready
    /// must not take its first weight on a report older than that.
    pub(super) fn renew_reported(&self) {
        self.gateway.renew();
    }

    /// Nothing read is kept (a new leader reads the cluster afresh).
    pub(super) fn clear(&self) {
        self.renew();
        self.services.forget_before(u64::MAX);
        self.istio.forget_before(u64::MAX);
        self.gateway.forget_before(u64::MAX);
    }

    pub(super) async fn services<C: Cluster>(
        &self,
        cluster: &C,
        ns: &str,
    ) -> Result<Listed<Service>, KubeError> {
        self.services.get(ns, || cluster.services(ns)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::cluster::memory::MemoryCluster;

    /// The namespace's Services through the memo, counting the lists sent in `sent`.
    async fn listed(
        lists: &Lists,
        cluster: &MemoryCluster,
        ns: &str,
        sent: &AtomicUsize,
    ) -> Listed<Service> {
        let fetch = || {
            sent.fetch_add(1, Ordering::Relaxed);
            cluster.services(ns)
        };
        lists.services.get(ns, fetch).await.expect("listed")
    }

    fn service(ns: &str, name: &str) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        s
    }

    #[tokio::test]
    async fn one_list_per_namespace_shared_and_kept_current_by_writes() {
        let cluster = MemoryCluster::new();
        cluster.put_service(service("a", "one"));
        cluster.put_service(service("b", "two"));
        let lists = Lists::default();
        let sent = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(listed(&lists, &cluster, "a", &sent).await.len(), 1);
        }
        assert_eq!(listed(&lists, &cluster, "b", &sent).await.len(), 1);
        assert_eq!(sent.load(Ordering::Relaxed), 2, "one list per namespace");
        // A write of this tick shows in the shared list without another list.
        lists
            .services
            .update("a", |items| {
                put(items, "one-canary", service("a", "one-canary"), |s| {
                    s.metadata.name.as_deref()
                })
            })
            .await;
        let names = |v: Listed<Service>| -> Vec<String> {
            v.iter().filter_map(|s| s.metadata.name.clone()).collect()
        };
        assert_eq!(
            names(listed(&lists, &cluster, "a", &sent).await),
            ["one", "one-canary"]
        );
        lists
            .services
            .update("a", |items| {
                remove(items, "one", |s| s.metadata.name.as_deref())
            })
            .await;
        assert_eq!(
            names(listed(&lists, &cluster, "a", &sent).await),
            ["one-canary"]
        );
        // A namespace never read is not fetched by an update.
        lists.services.update("c", |_| panic!("not read")).await;
        assert_eq!(sent.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_failed_list_is_not_kept() {
        let cluster = MemoryCluster::new();
        let lists = Lists::default();
        let sent = AtomicUsize::new(0);
        let failing = || {
            sent.fetch_add(1, Ordering::Relaxed);
            async { Err::<Vec<Service>, _>(KubeError::Api("down".into())) }
        };
        assert!(lists.services.get("a", failing).await.is_err());
        assert!(listed(&lists, &cluster, "a", &sent).await.is_empty());
        assert_eq!(sent.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_generation_reads_once_the_next_reads_again_and_unread_namespaces_are_forgotten() {
        let cluster = MemoryCluster::new();
        cluster.put_service(service("a", "one"));
        cluster.put_service(service("b", "two"));
        let lists = Lists::default();
        let sent = AtomicUsize::new(0);
        listed(&lists, &cluster, "a", &sent).await;
        listed(&lists, &cluster, "b", &sent).await;
        // Someone else's change is not seen within the generation...
        cluster.put_service(service("a", "other"));
        assert_eq!(listed(&lists, &cluster, "a", &sent).await.len(), 1);
        assert_eq!(sent.load(Ordering::Relaxed), 2);
        // ...and is from the next one on, which lists again.
        lists.renew();
        assert_eq!(listed(&lists, &cluster, "a", &sent).await.len(), 2);
        assert_eq!(sent.load(Ordering::Relaxed), 3);
        // A reader still holding the old list keeps it; a write does not change it under them.
        let held = listed(&lists, &cluster, "a", &sent).await;
        lists
            .services
            .update("a", |items| {
                remove(items, "one", |s| s.metadata.name.as_deref())
            })
            .await;
        assert_eq!(held.len(), 2);
        assert_eq!(listed(&lists, &cluster, "a", &sent).await.len(), 1);
        // "b" was last read two generations back: its list is dropped, "a"'s is kept.
        lists.renew();
        let kept = |m: &Memo<Service>| {
            let mut k: Vec<String> = m.by_ns.lock().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(kept(&lists.services), ["a"]);
        lists.clear();
        assert!(kept(&lists.services).is_empty());
        // Read afresh: the cluster (this test wrote nothing to it) still holds both.
        assert_eq!(listed(&lists, &cluster, "a", &sent).await.len(), 2);
        assert_eq!(sent.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_wake_up_reads_routes_again_but_not_services() {
        let cluster = MemoryCluster::new();
        cluster.put_service(service("a", "one"));
        let lists = Lists::default();
        let (services, routes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let route_list = || {
            routes.fetch_add(1, Ordering::Relaxed);
            cluster.http_routes("a")
        };
        listed(&lists, &cluster, "a", &services).await;
        lists.gateway.get("a", route_list).await.expect("routes");
        lists.renew_reported();
        listed(&lists, &cluster, "a", &services).await;
        lists.gateway.get("a", route_list).await.expect("routes");
        assert_eq!(services.load(Ordering::Relaxed), 1, "Services kept");
        assert_eq!(routes.load(Ordering::Relaxed), 2, "HTTPRoutes read again");
    }
}
