//! What `/readyz` reports: the webhook is ready as soon as it can serve TLS; the cluster,
//! Prometheus and leadership are reported so an operator sees what is missing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct Health {
    tls: AtomicBool,
    leader: AtomicBool,
    cluster: RwLock<Option<String>>,
    prometheus: RwLock<Option<String>>,
    analyzer: RwLock<Option<String>>,
}

/// `None` = not checked yet; `Some(Ok)`-like strings are plain text, errors start with "error:".
fn put(slot: &RwLock<Option<String>>, value: String) {
    *slot.write().unwrap_or_else(|p| p.into_inner()) = Some(value);
}

fn get(slot: &RwLock<Option<String>>) -> String {
    slot.read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| "not checked yet".into())
}

impl Health {
    pub fn set_tls(&self, ok: bool) {
        self.tls.store(ok, Ordering::Relaxed);
    }
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
    pub fn set_cluster(&self, status: impl Into<String>) {
        put(&self.cluster, status.into());
    }
    pub fn set_prometheus(&self, status: impl Into<String>) {
        put(&self.prometheus, status.into());
    }
    pub fn set_analyzer(&self, status: impl Into<String>) {
        put(&self.analyzer, status.into());
    }

    /// (ready, report). Only a missing certificate makes the pod unready: without a cluster
    /// or Prometheus the webhook still answers admission requests correctly.
    pub fn report(&self) -> (bool, String) {
        let tls = self.tls.load(Ordering::Relaxed);
        let report = format!(
            "webhook tls: {}\ncluster: {}\nprometheus: {}\nanalyzer: {}\nleader: {}\n",
            if tls {
                "ok"
            } else {
                "error: no valid certificate loaded"
            },
            get(&self.cluster),
            get(&self.prometheus),
            get(&self.analyzer),
            self.leader.load(Ordering::Relaxed),
        );
        (tls, report)
    }
}
