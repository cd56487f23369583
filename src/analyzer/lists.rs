//! A tick's reads of Services and routes, one list per namespace and kind, shared by every
//! rollout the tick works on and kept current by the tick's own writes.
//!
//! Without it each rollout listed its namespace's Services, HTTPRoutes and VirtualServices
//! itself: 10,000 rollouts in 20 namespaces stepping together made 30,000 lists of ~500
//! objects each per step, the API server's cost growing with the square of the rollouts.
//! Items are shared (`Arc`), so handing a namespace's list to another rollout copies pointers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;

use crate::cluster::{Cluster, KubeError};
use crate::gateway_api::HTTPRoute;
use crate::istio::VirtualService;

/// One namespace's list, once read.
type Slot<T> = Arc<tokio::sync::Mutex<Option<Vec<Arc<T>>>>>;

/// One kind's lists by namespace. Errors are not kept: the next reader lists again.
pub(super) struct Memo<T> {
    by_ns: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            by_ns: Mutex::default(),
        }
    }
}

impl<T> Memo<T> {
    fn cell(&self, ns: &str) -> Slot<T> {
        let mut by_ns = self.by_ns.lock().unwrap_or_else(|p| p.into_inner());
        by_ns.entry(ns.to_string()).or_default().clone()
    }

    /// The namespace's list: fetched by the first reader (concurrent readers wait for it),
    /// then shared.
    pub(super) async fn get<F, Fut>(&self, ns: &str, fetch: F) -> Result<Vec<Arc<T>>, KubeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, KubeError>>,
    {
        let cell = self.cell(ns);
        let mut slot = cell.lock().await;
        if let Some(items) = slot.as_ref() {
            return Ok(items.clone());
        }
        let items: Vec<Arc<T>> = fetch().await?.into_iter().map(Arc::new).collect();
        *slot = Some(items.clone());
        Ok(items)
    }

    /// After a write: `edit` brings the namespace's list (if it was read) in line with it.
    pub(super) async fn update(&self, ns: &str, edit: impl FnOnce(&mut Vec<Arc<T>>)) {
        let cell = self.cell(ns);
        let mut slot = cell.lock().await;
        if let Some(items) = slot.as_mut() {
            edit(items);
        }
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

/// The three kinds a tick lists per namespace.
#[derive(Default)]
pub(super) struct Lists {
    pub(super) services: Memo<Service>,
    pub(super) istio: Memo<VirtualService>,
    pub(super) gateway: Memo<HTTPRoute>,
}

impl Lists {
    pub(super) async fn services<C: Cluster>(
        &self,
        cluster: &C,
        ns: &str,
    ) -> Result<Vec<Arc<Service>>, KubeError> {
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
    ) -> Vec<Arc<Service>> {
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
        let names = |v: Vec<Arc<Service>>| -> Vec<String> {
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
}
